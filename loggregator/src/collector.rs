//! The metrics collector view: one exposition of the whole platform, made on request by
//! scraping every configured component's `/metrics` concurrently (each within a
//! timeout) and merging them with `component` and `instance` labels on every sample,
//! plus `up{component,instance}` 1 or 0 for each target, as Prometheus reports a scrape.
//! Where the view is served and who may read it is the caller's business.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use wf_metrics::{Exposition, Kind, Merger};

/// How long a target may take by default.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Renders an in-process component's metrics (one that shares a port, so it has no
/// `/metrics` of its own to scrape), or says why it cannot.
pub type LocalMetrics = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// Where a target's exposition comes from.
#[derive(Clone)]
pub enum TargetSource {
    /// `GET` of this URL (a component's `/metrics`).
    Http(url::Url),
    /// A component in this process.
    Local(LocalMetrics),
}

/// One component instance to collect.
#[derive(Clone)]
pub struct MetricsTarget {
    /// The `component` label: `bbs`, `cell`, `router`, `uaa`, `controller`...
    pub component: String,
    /// The `instance` label: the URL's `host:port` for scraped targets.
    pub instance: String,
    pub source: TargetSource,
}

impl std::fmt::Debug for TargetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSource::Http(url) => f.debug_tuple("Http").field(&url.as_str()).finish(),
            TargetSource::Local(_) => f.write_str("Local"),
        }
    }
}

impl std::fmt::Debug for MetricsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsTarget")
            .field("component", &self.component)
            .field("instance", &self.instance)
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("metrics target {0:?} is not NAME=URL")]
    Syntax(String),
    #[error("metrics target {target:?}: {reason}")]
    Url { target: String, reason: String },
}

impl MetricsTarget {
    /// A scraped target.
    pub fn http(component: &str, url: url::Url) -> MetricsTarget {
        let instance = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => url.to_string(),
        };
        MetricsTarget {
            component: component.to_string(),
            instance,
            source: TargetSource::Http(url),
        }
    }

    /// A target in this process.
    pub fn local(component: &str, instance: &str, render: LocalMetrics) -> MetricsTarget {
        MetricsTarget {
            component: component.to_string(),
            instance: instance.to_string(),
            source: TargetSource::Local(render),
        }
    }

    /// Parses `NAME=URL` (`bbs=http://10.0.0.5:8889/metrics`), as `wfd controller
    /// --metrics-target` takes it.
    pub fn parse(spec: &str) -> Result<MetricsTarget, TargetError> {
        let (name, url) = spec
            .split_once('=')
            .filter(|(name, url)| !name.is_empty() && !url.is_empty())
            .ok_or_else(|| TargetError::Syntax(spec.to_string()))?;
        let url = url::Url::parse(url).map_err(|e| TargetError::Url {
            target: spec.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Url {
                target: spec.to_string(),
                reason: "the scheme must be http or https".into(),
            });
        }
        Ok(MetricsTarget::http(name, url))
    }
}

/// Scrapes and merges the targets' metrics.
pub struct Collector {
    targets: Vec<MetricsTarget>,
    client: reqwest::Client,
    timeout: Duration,
}

/// Why one target gave nothing.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Local(String),
}

impl Collector {
    pub fn new(targets: Vec<MetricsTarget>, timeout: Duration) -> Collector {
        Collector::with_client(targets, timeout, reqwest::Client::new())
    }

    /// A collector that scrapes with `client`: e.g. one presenting the platform's
    /// mutual TLS certificate, for a BBS or rep `/metrics` that requires it.
    pub fn with_client(
        targets: Vec<MetricsTarget>,
        timeout: Duration,
        client: reqwest::Client,
    ) -> Collector {
        Collector {
            targets,
            client,
            timeout,
        }
    }

    /// Every target's metrics labelled with its component and instance, and `up` and
    /// `scrape_duration_seconds` per target. `authorization` (the caller's) is passed
    /// to the scraped targets, for those that check tokens themselves (a standalone
    /// UAA); the targets are the operator's, so the token goes nowhere unexpected. A
    /// target URL with `user:password@` gets basic auth instead (a router status port
    /// with credentials), and its `instance` label never shows them.
    pub async fn collect(&self, authorization: Option<&str>) -> String {
        let scrapes = self.targets.iter().map(|target| async move {
            let started = Instant::now();
            let result = self.scrape(target, authorization).await;
            (target, result, started.elapsed())
        });
        let results = futures::future::join_all(scrapes).await;
        let mut merger = Merger::new();
        let mut health = Exposition::new();
        health.family(
            "up",
            Kind::Gauge,
            "Whether the target answered its last scrape (1) or not (0).",
        );
        for (target, result, _) in &results {
            let labels = [
                ("component", target.component.as_str()),
                ("instance", target.instance.as_str()),
            ];
            match result {
                Ok(text) => {
                    health.sample("up", &labels, 1u64);
                    merger.add(text, &labels);
                }
                Err(e) => {
                    tracing::warn!(component = %target.component, instance = %target.instance,
                        error = %e, "metrics target failed");
                    health.sample("up", &labels, 0u64);
                }
            }
        }
        health.family(
            "scrape_duration_seconds",
            Kind::Gauge,
            "How long the target's scrape took.",
        );
        for (target, _, elapsed) in &results {
            let labels = [
                ("component", target.component.as_str()),
                ("instance", target.instance.as_str()),
            ];
            health.sample("scrape_duration_seconds", &labels, elapsed.as_secs_f64());
        }
        let mut out = health.finish();
        out.push_str(&merger.finish());
        out
    }

    async fn scrape(
        &self,
        target: &MetricsTarget,
        authorization: Option<&str>,
    ) -> Result<String, ScrapeError> {
        let scrape = async {
            match &target.source {
                TargetSource::Local(render) => render().await.map_err(ScrapeError::Local),
                TargetSource::Http(url) => {
                    let mut request = self.client.get(url.clone());
                    if !url.username().is_empty() {
                        // `user:password@` in the URL: basic auth (a router status
                        // port's credentials) rather than the caller's token.
                        request = request.basic_auth(url.username(), url.password());
                    } else if let Some(authorization) = authorization {
                        request = request.header(reqwest::header::AUTHORIZATION, authorization);
                    }
                    let response = request.send().await?;
                    if !response.status().is_success() {
                        return Err(ScrapeError::Status(response.status()));
                    }
                    Ok(response.text().await?)
                }
            }
        };
        tokio::time::timeout(self.timeout, scrape)
            .await
            .map_err(|_| ScrapeError::Timeout(self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_name_equals_url() {
        let t = MetricsTarget::parse("bbs=http://10.0.0.5:8889/metrics").unwrap();
        assert_eq!(
            (t.component.as_str(), t.instance.as_str()),
            ("bbs", "10.0.0.5:8889")
        );
        for bad in [
            "bbs",
            "=http://x/",
            "bbs=",
            "bbs=not a url",
            "bbs=ftp://x/metrics",
        ] {
            assert!(MetricsTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn collect_labels_samples_and_reports_down_targets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(|| async { "# TYPE cells gauge\ncells 2\n" }),
            )
            .route(
                "/status/metrics",
                axum::routing::get(|headers: axum::http::HeaderMap| async move {
                    // `user:pw`, as the router's status port checks it.
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some("Basic dXNlcjpwdw==")
                    {
                        Ok("routes 7\n")
                    } else {
                        Err(axum::http::StatusCode::UNAUTHORIZED)
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        // Bound and dropped: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let local: LocalMetrics =
            Arc::new(|| Box::pin(async { Ok("tokens_total 3\n".to_string()) }));
        let collector = Collector::new(
            vec![
                MetricsTarget::parse(&format!("bbs=http://{addr}/metrics")).unwrap(),
                MetricsTarget::parse(&format!("rep=http://{closed}/metrics")).unwrap(),
                MetricsTarget::local("uaa", "in-process", local),
                MetricsTarget::parse(&format!("router=http://user:pw@{addr}/status/metrics"))
                    .unwrap(),
            ],
            Duration::from_secs(2),
        );
        let text = collector.collect(Some("bearer caller-token")).await;
        for line in [
            format!("up{{component=\"bbs\",instance=\"{addr}\"}} 1"),
            format!("up{{component=\"rep\",instance=\"{closed}\"}} 0"),
            "up{component=\"uaa\",instance=\"in-process\"} 1".to_string(),
            format!("cells{{component=\"bbs\",instance=\"{addr}\"}} 2"),
            "tokens_total{component=\"uaa\",instance=\"in-process\"} 3".to_string(),
            format!("routes{{component=\"router\",instance=\"{addr}\"}} 7"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
