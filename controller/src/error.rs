//! The CF V3 error shape: every API failure becomes `{"errors": [{"code", "title",
//! "detail"}]}` here and nowhere else. Codes and titles are cloud_controller_ng's
//! (`vendor/errors/v2.yml`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// CF-ResourceNotFound: detail like "App not found".
    #[error("{0}")]
    NotFound(String),
    /// CF-UnprocessableEntity: well-formed request the controller cannot act on.
    #[error("{0}")]
    Unprocessable(String),
    /// CF-MessageParseError: the body is not JSON.
    #[error("Request invalid due to parse error: {0}")]
    MessageParse(String),
    /// CF-BadQueryParameter.
    #[error("The query parameter is invalid: {0}")]
    BadQueryParameter(String),
    /// CF-InvalidAuthToken: a token was given but it does not verify.
    #[error("Invalid Auth Token")]
    InvalidAuthToken,
    /// CF-NotAuthenticated: no token at all.
    #[error("Authentication error")]
    NotAuthenticated,
    /// CF-NotAuthorized.
    #[error("{0}")]
    NotAuthorized(String),
    /// CF-FeatureDisabled: a feature flag forbids the action (its message).
    #[error("{0}")]
    FeatureDisabled(String),
    /// CF-BadRequest.
    #[error("Bad request: {0}")]
    BadRequest(String),
    /// CF-ServiceInstanceAlreadyBoundToSameRoute (answered 422, as the V3 API does).
    #[error("The route and service instance are already bound.")]
    AlreadyBoundToSameRoute,
    /// CF-RunnerUnavailable: the BBS (Diego) cannot be reached.
    #[error("Runner is unavailable: {0}")]
    RunnerUnavailable(String),
    /// CF-BlobstoreUnavailable: the blobstore cannot be read or written (its directory
    /// or bucket is gone or does not answer); the cause is logged, not shown.
    #[error("Failed to perform operation due to blobstore unavailability.")]
    BlobstoreUnavailable(String),
    /// CF-ServerError; the cause is logged, not shown.
    #[error("An unknown error occurred.")]
    Internal(String),
}

impl ApiError {
    /// (HTTP status, CF code, CF title).
    fn cf(&self) -> (StatusCode, u32, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, 10010, "CF-ResourceNotFound"),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                10008,
                "CF-UnprocessableEntity",
            ),
            ApiError::MessageParse(_) => (StatusCode::BAD_REQUEST, 1001, "CF-MessageParseError"),
            ApiError::BadQueryParameter(_) => {
                (StatusCode::BAD_REQUEST, 10005, "CF-BadQueryParameter")
            }
            ApiError::InvalidAuthToken => (StatusCode::UNAUTHORIZED, 1000, "CF-InvalidAuthToken"),
            ApiError::NotAuthenticated => (StatusCode::UNAUTHORIZED, 10002, "CF-NotAuthenticated"),
            ApiError::NotAuthorized(_) => (StatusCode::FORBIDDEN, 10003, "CF-NotAuthorized"),
            ApiError::FeatureDisabled(_) => (StatusCode::FORBIDDEN, 330002, "CF-FeatureDisabled"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, 1004, "CF-BadRequest"),
            ApiError::AlreadyBoundToSameRoute => (
                StatusCode::UNPROCESSABLE_ENTITY,
                130008,
                "CF-ServiceInstanceAlreadyBoundToSameRoute",
            ),
            ApiError::RunnerUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                170015,
                "CF-RunnerUnavailable",
            ),
            ApiError::BlobstoreUnavailable(_) => {
                (StatusCode::BAD_GATEWAY, 150007, "CF-BlobstoreUnavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, 10001, "CF-ServerError"),
        }
    }

    pub fn not_found(resource: &str) -> ApiError {
        ApiError::NotFound(format!("{resource} not found"))
    }

    /// CF-NotAuthorized with CF's detail.
    pub fn not_authorized() -> ApiError {
        ApiError::NotAuthorized("You are not authorized to perform the requested action".into())
    }

    pub fn unprocessable(detail: impl Into<String>) -> ApiError {
        ApiError::Unprocessable(detail.into())
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        let (_, code, title) = self.cf();
        json!({"errors": [{"code": code, "title": title, "detail": self.to_string()}]})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) | ApiError::BlobstoreUnavailable(cause) = &self {
            tracing::error!(%cause, "API request failed");
        }
        let (status, _, _) = self.cf();
        (status, Json(self.body())).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<wf_bbs::BbsError> for ApiError {
    fn from(e: wf_bbs::BbsError) -> Self {
        match e {
            wf_bbs::BbsError::Unavailable(cause) => ApiError::RunnerUnavailable(cause),
            other => ApiError::Internal(format!("BBS: {other}")),
        }
    }
}

impl From<crate::blobstore::BlobError> for ApiError {
    fn from(e: crate::blobstore::BlobError) -> Self {
        use crate::blobstore::BlobError;
        match e {
            BlobError::Store(_) | BlobError::Bucket { .. } | BlobError::Io(_) => {
                ApiError::BlobstoreUnavailable(format!("blobstore: {e}"))
            }
            other => ApiError::Internal(format!("blobstore: {other}")),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(format!("blobstore: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_cf_shape() {
        let body = ApiError::not_found("App").body();
        assert_eq!(
            body,
            json!({"errors": [{"code": 10010, "title": "CF-ResourceNotFound", "detail": "App not found"}]})
        );
        let body = ApiError::unprocessable("App with the name 'x' already exists.").body();
        assert_eq!(body["errors"][0]["code"], 10008);
        assert_eq!(body["errors"][0]["title"], "CF-UnprocessableEntity");
        assert_eq!(ApiError::InvalidAuthToken.body()["errors"][0]["code"], 1000);
        // A blobstore that cannot be reached is CF's BlobstoreUnavailable (502), not an
        // unknown error; a blob that is missing stays a server error.
        let gone = ApiError::from(crate::blobstore::BlobError::Io(std::io::Error::other(
            "Not a directory",
        )));
        assert_eq!(gone.cf().0, StatusCode::BAD_GATEWAY);
        assert_eq!(
            gone.body(),
            json!({"errors": [{"code": 150007, "title": "CF-BlobstoreUnavailable",
                "detail": "Failed to perform operation due to blobstore unavailability."}]})
        );
        let missing = ApiError::from(crate::blobstore::BlobError::NotFound("d1".into()));
        assert_eq!(missing.cf().1, 10001);
        assert_eq!(
            ApiError::NotAuthenticated.body()["errors"][0]["title"],
            "CF-NotAuthenticated"
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal("database: disk I/O error".into());
        assert_eq!(
            err.body()["errors"][0]["detail"],
            "An unknown error occurred."
        );
        assert_eq!(
            err.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
