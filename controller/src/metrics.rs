//! The API port's metrics: `GET /metrics`, the controller's own (the log cache's
//! sizes and loss counters, the syslog drains'), and `GET /metrics/platform`, the
//! metrics collector view over every component ([`wf_loggregator::Collector`]: the
//! configured targets scraped concurrently, each sample labelled with its `component`
//! and `instance`, `up` per target). The API port is public and these reveal app guids
//! (log sources, drains) and the platform's shape, so both need a token with one of
//! [`METRICS_SCOPES`]; the BBS, rep and router status ports are internal and serve
//! theirs to whoever reaches them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use wf_loggregator::{Collector, LocalMetrics, MetricsTarget};
use wf_metrics::Exposition;

use crate::auth::User;
use crate::error::ApiError;
use crate::Controller;

/// Scopes that may read the metrics: admins, read-only admins, and the firehose.
pub const METRICS_SCOPES: [&str; 3] = [
    "cloud_controller.admin",
    "cloud_controller.admin_read_only",
    "doppler.firehose",
];

/// `GET /metrics`, merged into [`Controller::router`].
pub(crate) fn router(controller: Arc<Controller>) -> Router {
    Router::new()
        .route("/metrics", get(own_metrics))
        .with_state(controller)
}

struct Platform {
    controller: Arc<Controller>,
    collector: Collector,
}

impl Controller {
    /// The controller's metrics in Prometheus' text format.
    pub fn metrics(&self) -> String {
        let mut e = Exposition::new();
        self.logs.stats().write_metrics(&mut e);
        self.drains.write_metrics(&mut e);
        e.finish()
    }

    /// `GET /metrics/platform`: this controller's metrics and `targets`' (each scrape
    /// bounded by `timeout`, through `client`), merged. The controller itself is a
    /// target (`component` `controller`), read in process.
    pub fn platform_metrics_router(
        self: &Arc<Self>,
        mut targets: Vec<MetricsTarget>,
        timeout: Duration,
        client: reqwest::Client,
    ) -> Router {
        let instance = url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| self.base_url.clone());
        let me = Arc::downgrade(self);
        let render: LocalMetrics = Arc::new(move || {
            let me = me.clone();
            Box::pin(async move {
                let controller = me.upgrade().ok_or("the controller has stopped")?;
                Ok(controller.metrics())
            })
        });
        targets.insert(0, MetricsTarget::local("controller", &instance, render));
        let platform = Arc::new(Platform {
            controller: self.clone(),
            collector: Collector::with_client(targets, timeout, client),
        });
        Router::new()
            .route("/metrics/platform", get(platform_metrics))
            .with_state(platform)
    }
}

/// Checks that the caller's token carries one of [`METRICS_SCOPES`].
fn authorize(controller: &Controller, headers: &HeaderMap) -> Result<(), ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = User::verify(&controller.verifier, authorization)?;
    if METRICS_SCOPES.iter().any(|s| claims.has_scope(s)) {
        Ok(())
    } else {
        Err(ApiError::not_authorized())
    }
}

fn exposition(text: String) -> Response {
    ([(header::CONTENT_TYPE, wf_metrics::CONTENT_TYPE)], text).into_response()
}

async fn own_metrics(State(controller): State<Arc<Controller>>, headers: HeaderMap) -> Response {
    match authorize(&controller, &headers) {
        Ok(()) => exposition(controller.metrics()),
        Err(e) => e.into_response(),
    }
}

async fn platform_metrics(State(platform): State<Arc<Platform>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&platform.controller, &headers) {
        return e.into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    exposition(platform.collector.collect(authorization).await)
}
