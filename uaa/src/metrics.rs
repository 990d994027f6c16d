//! UAA's Prometheus metrics: tokens issued by grant type and failed logins, counted in
//! atomics as they happen, and the users locked out now, read from the failed-login
//! table. [`Uaa::metrics_router`] serves them on `GET /metrics` to a token with one of
//! [`METRICS_SCOPES`]: UAA's port is public, and failed logins are a security signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sqlx::Row as _;
use wf_metrics::{Exposition, Kind};

use crate::{users, Uaa, UaaError};

/// Scopes that may read `/metrics` (an operator's, or the firehose's).
pub const METRICS_SCOPES: [&str; 4] = [
    "cloud_controller.admin",
    "cloud_controller.admin_read_only",
    "doppler.firehose",
    "uaa.admin",
];

/// The grant types UAA issues tokens for, in the order of [`Counters::tokens`].
const GRANT_TYPES: [&str; 4] = [
    "authorization_code",
    "client_credentials",
    "password",
    "refresh_token",
];

#[derive(Debug, Default)]
pub(crate) struct Counters {
    tokens: [AtomicU64; GRANT_TYPES.len()],
    failed_logins: AtomicU64,
    locked_attempts: AtomicU64,
}

impl Counters {
    pub(crate) fn token_issued(&self, grant_type: &str) {
        if let Some(i) = GRANT_TYPES.iter().position(|g| *g == grant_type) {
            self.tokens[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn failed_login(&self) {
        self.failed_logins.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn locked_attempt(&self) {
        self.locked_attempts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Uaa {
    /// UAA's metrics in Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, UaaError> {
        let locked = self.locked_users().await?;
        let c = &self.counters;
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut e = Exposition::new();
        e.family(
            "wf_uaa_tokens_issued_total",
            Kind::Counter,
            "Access tokens issued, by grant type.",
        );
        for (grant_type, n) in GRANT_TYPES.iter().zip(&c.tokens) {
            e.sample(
                "wf_uaa_tokens_issued_total",
                &[("grant_type", grant_type)],
                get(n),
            );
        }
        e.single(
            "wf_uaa_failed_logins_total",
            Kind::Counter,
            "Logins refused for a wrong password.",
            get(&c.failed_logins),
        )
        .single(
            "wf_uaa_locked_login_attempts_total",
            Kind::Counter,
            "Logins refused because the account was locked.",
            get(&c.locked_attempts),
        )
        .single(
            "wf_uaa_locked_out_users",
            Kind::Gauge,
            "Users locked out by the lockout policy now.",
            locked,
        );
        Ok(e.finish())
    }

    /// `GET /metrics` (see the module docs). Not part of [`Uaa::router`]: where UAA
    /// shares a port with the Cloud Controller, the controller's `/metrics` is there and
    /// its collector reads [`Uaa::metrics`] in process.
    pub fn metrics_router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/metrics", axum::routing::get(serve_metrics))
            .with_state(self.clone())
    }

    /// Users with enough recent failures to be locked, as `is_locked` decides for one.
    async fn locked_users(&self) -> Result<i64, UaaError> {
        let policy = &self.config.lockout;
        let now = users::unix_now();
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "SELECT COUNT(*) FROM (SELECT user_id FROM failed_logins WHERE at > $1
             GROUP BY user_id HAVING COUNT(*) >= $2 AND MAX(at) > $3) AS locked",
        )
        .bind(policy.counted_since(now))
        .bind(i64::from(policy.lockout_after_failures))
        .bind(now.saturating_sub(secs(policy.lockout_period)))
        .fetch_one(&self.db)
        .await
        .map_err(users::db_error)?;
        row.try_get(0).map_err(users::db_error)
    }
}

async fn serve_metrics(State(uaa): State<Arc<Uaa>>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(claims) = authorization.and_then(|a| uaa.verifier.verify(a).ok()) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !METRICS_SCOPES.iter().any(|s| claims.has_scope(s)) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match uaa.metrics().await {
        Ok(text) => ([(header::CONTENT_TYPE, wf_metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render UAA metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;
    use crate::tests::open_test_uaa;

    #[tokio::test]
    async fn counts_tokens_failed_logins_and_locked_users() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let admin = uaa
            .password_grant("cf", "admin", "s3cret", None)
            .await
            .unwrap();
        for _ in 0..5 {
            assert!(uaa
                .password_grant("cf", "admin", "bad", None)
                .await
                .is_err());
        }
        assert!(uaa
            .password_grant("cf", "admin", "s3cret", None)
            .await
            .is_err());
        let text = uaa.metrics().await.unwrap();
        for line in [
            "wf_uaa_tokens_issued_total{grant_type=\"password\"} 1",
            "wf_uaa_tokens_issued_total{grant_type=\"client_credentials\"} 0",
            "wf_uaa_failed_logins_total 5",
            "wf_uaa_locked_login_attempts_total 1",
            "wf_uaa_locked_out_users 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }

        let get = |auth: Option<String>| {
            let mut req = Request::get("/metrics");
            if let Some(auth) = auth {
                req = req.header(header::AUTHORIZATION, auth);
            }
            uaa.metrics_router()
                .oneshot(req.body(Body::empty()).unwrap())
        };
        assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let ok = get(Some(format!("bearer {}", admin.access_token)))
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], wf_metrics::CONTENT_TYPE);
    }
}
