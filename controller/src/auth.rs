//! Who is calling: the bearer token of a request, verified offline against UAA's keys,
//! and the authorization rule the handlers ask before touching a space's resources.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use wf_uaa::{Claims, TokenError, TokenVerifier};

use crate::error::ApiError;
use crate::Controller;

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct User {
    pub claims: Claims,
}

impl User {
    /// Verifies the `Authorization` header value.
    pub fn from_header(verifier: &TokenVerifier, header: Option<&str>) -> Result<User, ApiError> {
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(ApiError::NotAuthenticated);
        };
        match verifier.verify(header) {
            Ok(claims) => Ok(User { claims }),
            Err(TokenError::Missing) => Err(ApiError::NotAuthenticated),
            Err(TokenError::Invalid(_) | TokenError::Expired) => Err(ApiError::InvalidAuthToken),
        }
    }

    /// Whether this user may see and change what lives in `space_guid`.
    ///
    /// Admins may do anything; others need a role in the space or its org.
    pub fn can_access_space(&self, space_guid: &str) -> bool {
        self.claims.is_admin() || self.has_space_role(space_guid)
    }

    /// Org and space roles arrive with issue 7; until then every authenticated user
    /// holds every role.
    fn has_space_role(&self, _space_guid: &str) -> bool {
        true
    }

    /// The `created_by` of builds and audit records.
    pub fn actor(&self) -> serde_json::Value {
        serde_json::json!({
            "guid": self.claims.user_id,
            "name": self.claims.user_name,
            "email": self.claims.email,
        })
    }
}

impl FromRequestParts<Arc<Controller>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        controller: &Arc<Controller>,
    ) -> Result<User, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        User::from_header(&controller.verifier, header)
    }
}
