//! The Log Cache HTTP API: `/api/v1/read/{source_id}`, `/api/v1/meta`, `/api/v1/info`,
//! in Log Cache's JSON shapes. Who may read what is decided by a [`SourceAuthorizer`]
//! (the Cloud Controller knows which apps a token may see).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use futures::future::BoxFuture;
use serde_json::json;

use crate::store::SourceMeta;
use crate::{LogStore, ReadQuery};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDecision {
    Allowed,
    /// No or an invalid token: 401.
    Unauthenticated,
    /// A valid token that may not read this source: 404 (as log cache does).
    Denied,
}

/// Decides whether the bearer of `authorization` (the raw header) may read `source_id`.
pub trait SourceAuthorizer: Send + Sync + 'static {
    fn can_read<'a>(
        &'a self,
        authorization: Option<&'a str>,
        source_id: &'a str,
    ) -> BoxFuture<'a, AccessDecision>;
}

struct ApiState {
    store: Arc<LogStore>,
    auth: Arc<dyn SourceAuthorizer>,
}

pub fn log_cache_router(store: Arc<LogStore>, auth: Arc<dyn SourceAuthorizer>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/read/{source_id}", get(read))
        .route("/api/v1/meta", get(meta))
        .route("/api/v1/info", get(info))
        .with_state(Arc::new(ApiState { store, auth }))
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(crate) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Parses the read parameters; `envelope_types` may repeat (Log Cache) or hold a
/// comma-separated list.
fn parse_read_query(params: &[(String, String)]) -> Result<ReadQuery, String> {
    fn int<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("{name} must be an integer, got {value:?}"))
    }
    let mut query = ReadQuery::default();
    for (name, value) in params {
        match name.as_str() {
            "start_time" => query.start_time = Some(int(name, value)?),
            "end_time" => query.end_time = Some(int(name, value)?),
            "limit" => query.limit = Some(int(name, value)?),
            "descending" => {
                query.descending = matches!(value.as_str(), "true" | "1" | "True" | "TRUE")
            }
            "envelope_types" => {
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !["LOG", "COUNTER", "GAUGE", "TIMER", "EVENT", "ANY"]
                        .iter()
                        .any(|known| known.eq_ignore_ascii_case(t))
                    {
                        return Err(format!("unknown envelope type {t:?}"));
                    }
                    if !t.eq_ignore_ascii_case("ANY") {
                        query.envelope_types.push(t.to_ascii_uppercase());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(query)
}

async fn read(
    State(state): State<Arc<ApiState>>,
    Path(source_id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    match state
        .auth
        .can_read(authorization(&headers), &source_id)
        .await
    {
        AccessDecision::Allowed => {}
        AccessDecision::Unauthenticated => return error(StatusCode::UNAUTHORIZED, "unauthorized"),
        AccessDecision::Denied => return error(StatusCode::NOT_FOUND, "not found"),
    }
    let query = match parse_read_query(&params) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let batch = state.store.read(&source_id, &query);
    Json(json!({ "envelopes": { "batch": batch } })).into_response()
}

/// The sources this token may read, with their counts.
async fn meta(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let auth = authorization(&headers);
    if auth.is_none() {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut readable: BTreeMap<String, SourceMeta> = BTreeMap::new();
    for (source_id, meta) in state.store.meta() {
        match state.auth.can_read(auth, &source_id).await {
            AccessDecision::Allowed => {
                readable.insert(source_id, meta);
            }
            AccessDecision::Unauthenticated => {
                return error(StatusCode::UNAUTHORIZED, "unauthorized");
            }
            AccessDecision::Denied => {}
        }
    }
    Json(json!({ "meta": readable })).into_response()
}

async fn info(State(state): State<Arc<ApiState>>) -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "vm_uptime": state.store.uptime_secs().to_string(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use futures::FutureExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::envelope::LogType;
    use crate::Envelope;

    /// `bearer admin` reads everything, `bearer dev` only `app-1`, anything else is
    /// unauthenticated.
    struct FakeAuth;

    impl SourceAuthorizer for FakeAuth {
        fn can_read<'a>(
            &'a self,
            authorization: Option<&'a str>,
            source_id: &'a str,
        ) -> BoxFuture<'a, AccessDecision> {
            let decision = match authorization {
                Some("bearer admin") => AccessDecision::Allowed,
                Some("bearer dev") if source_id == "app-1" => AccessDecision::Allowed,
                Some("bearer dev") => AccessDecision::Denied,
                _ => AccessDecision::Unauthenticated,
            };
            async move { decision }.boxed()
        }
    }

    fn router() -> axum::Router {
        let store = Arc::new(LogStore::new(100));
        for (i, source) in ["app-1", "app-1", "app-2"].iter().enumerate() {
            let mut e = Envelope::log(
                source,
                "0",
                "APP/PROC/WEB",
                LogType::Out,
                format!("line {i}"),
            );
            e.timestamp = i as i64 + 1;
            store.ingest(e);
        }
        log_cache_router(store, Arc::new(FakeAuth))
    }

    async fn get_json(uri: &str, token: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut req = Request::get(uri);
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let resp = router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn read_returns_the_log_cache_batch() {
        let (status, body) = get_json(
            "/api/v1/read/app-1?envelope_types=LOG&limit=1000&descending=true",
            Some("bearer dev"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let batch = body["envelopes"]["batch"].as_array().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0]["timestamp"], "2");
        assert_eq!(batch[0]["source_id"], "app-1");

        let (_, body) = get_json("/api/v1/read/app-1?start_time=2", Some("bearer dev")).await;
        assert_eq!(body["envelopes"]["batch"].as_array().unwrap().len(), 1);
        let (status, _) = get_json("/api/v1/read/app-1?limit=x", Some("bearer dev")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get_json(
            "/api/v1/read/app-1?envelope_types=BOGUS",
            Some("bearer dev"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn unauthorized_reads_get_401_and_forbidden_ones_404() {
        let (status, body) = get_json("/api/v1/read/app-1", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].is_string());
        let (status, _) = get_json("/api/v1/read/app-2", Some("bearer dev")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn meta_lists_only_readable_sources() {
        let (status, body) = get_json("/api/v1/meta", Some("bearer dev")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["meta"]["app-1"]["count"], "2");
        assert!(body["meta"].get("app-2").is_none());
        let (_, body) = get_json("/api/v1/meta", Some("bearer admin")).await;
        assert_eq!(body["meta"]["app-2"]["count"], "1");
        let (status, _) = get_json("/api/v1/meta", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn info_reports_the_version() {
        let (status, body) = get_json("/api/v1/info", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    }
}
