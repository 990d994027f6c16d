//! The router's status port, as Gorouter's: `/health` (200 `ok`, 503 while draining),
//! `/routes` (the route table as JSON, `{uri: [{address, ttl, tags, ...}]}`) and
//! Prometheus `/metrics`, the last two behind basic auth when credentials are set.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::table::RouteTable;

/// User and password for the status port's `/routes` and `/metrics`; `Debug` shows the
/// user only.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for StatusCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl StatusCredentials {
    fn authorization(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

pub(crate) struct StatusState {
    pub(crate) table: Arc<RwLock<RouteTable>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) credentials: Option<StatusCredentials>,
    /// Cancelled when the router stops: `/health` turns 503.
    pub(crate) draining: CancellationToken,
}

/// Serves the status port until cancelled.
pub(crate) async fn serve(listener: TcpListener, state: StatusState, cancel: CancellationToken) {
    let state = Arc::new(state);
    let authorization = state
        .credentials
        .as_ref()
        .map(StatusCredentials::authorization);
    let authorization: Arc<Option<String>> = Arc::new(authorization);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "status accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let authorization = authorization.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let resp = respond(&state, authorization.as_deref(), &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

fn respond(
    state: &StatusState,
    authorization: Option<&str>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let path = req.uri().path();
    if path == "/health" {
        return if state.draining.is_cancelled() {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        } else {
            text(StatusCode::OK, "ok\n")
        };
    }
    if !matches!(path, "/routes" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if let Some(expected) = authorization {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"router status\""),
            );
            return resp;
        }
    }
    let table = || {
        state
            .table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if path == "/routes" {
        let dump = table().dump();
        return match serde_json::to_vec(&dump) {
            Ok(json) => {
                let mut resp = Response::new(Full::new(Bytes::from(json)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        };
    }
    let (routes, endpoints) = {
        let t = table();
        (t.route_count(), t.endpoint_count())
    };
    let mut resp = text(StatusCode::OK, &state.metrics.render(routes, endpoints));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wf_metrics::CONTENT_TYPE),
    );
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
