//! Gorouter: the HTTP edge. Route table fed by `router.register`, load balancing, proxying.
//!
//! [`run`] announces the router with `router.start` (so route-emitters re-publish every
//! route at once), answers `router.greet`, keeps the [`table::RouteTable`] current from
//! `router.register`/`router.unregister`, prunes endpoints that stopped re-registering,
//! and serves HTTP/1.1 clients through the [`proxy`](crate::proxy) until cancelled.
//! [`run_with_status`] also serves `/health`, `/routes` and Prometheus `/metrics` on a
//! separate status port.

mod access_log;
pub mod message;
mod metrics;
mod proxy;
mod status;
pub mod table;
mod trace;

pub use message::{RegistryMessage, RouterStart};
pub use status::StatusCredentials;
pub use table::{Endpoint, LoadBalancing, Lookup, RouteTable};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wf_messaging::{Bus, BusError, Subscription};

use access_log::AccessLogger;
use message::{GREET_SUBJECT, REGISTER_SUBJECT, START_SUBJECT, UNREGISTER_SUBJECT};
use metrics::Metrics;
use proxy::Proxy;

/// How long open connections get to finish their requests once the router stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("router bus error: {0}")]
    Bus(String),
}

impl From<BusError> for RouterError {
    fn from(e: BusError) -> Self {
        RouterError::Bus(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Endpoints not re-registered for this long are pruned (CF: 120 s).
    pub prune_threshold: Duration,
    /// Sent in `router.start` as `minimumRegisterIntervalInSeconds` (CF: 20 s).
    pub minimum_register_interval: Duration,
    /// Per-attempt timeout to connect to a backend (Gorouter's dial timeout: 5 s).
    pub backend_connect_timeout: Duration,
    /// How long a backend may take to send its response headers (Gorouter's request
    /// timeout: 900 s). Upgraded connections have no timeout once switched.
    pub backend_response_timeout: Duration,
    /// An endpoint whose connection failed is skipped this long (Gorouter: 30 s, a
    /// quarter of the droplet stale threshold).
    pub endpoint_failure_backoff: Duration,
    /// A client must send a request's headers within this time, and an idle keep-alive
    /// connection is closed after it, so slow clients cannot hold connections (30 s).
    pub client_header_timeout: Duration,
    /// Request line and headers above this size get 431 (Gorouter: 1 MB).
    pub max_header_bytes: usize,
    /// Request bodies above this size get 413; `None`: no limit (Gorouter has none).
    pub max_request_body_bytes: Option<u64>,
    /// Requests in flight per backend (Gorouter's `backends.max_conns`, default 500);
    /// a backend at its limit is skipped, and when all are, the router answers 503
    /// `Connection Limit Reached`. `None`: no limit.
    pub max_conns_per_backend: Option<usize>,
    /// Response cookies that start a sticky session (Gorouter: `JSESSIONID`).
    pub sticky_session_cookie_names: Vec<String>,
    /// Basic auth for `/routes` and `/metrics` on the status port; `None`: open.
    pub status_credentials: Option<StatusCredentials>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            prune_threshold: Duration::from_secs(120),
            minimum_register_interval: Duration::from_secs(20),
            backend_connect_timeout: Duration::from_secs(5),
            backend_response_timeout: Duration::from_secs(900),
            endpoint_failure_backoff: table::DEFAULT_ENDPOINT_BACKOFF,
            client_header_timeout: Duration::from_secs(30),
            max_header_bytes: 1024 * 1024,
            max_request_body_bytes: None,
            max_conns_per_backend: Some(500),
            sticky_session_cookie_names: vec!["JSESSIONID".to_string()],
            status_credentials: None,
        }
    }
}

impl RouterConfig {
    /// How often stale endpoints are looked for: a quarter of the threshold, between
    /// 100 ms and Gorouter's 30 s.
    fn prune_interval(&self) -> Duration {
        (self.prune_threshold / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}

struct RegistrySubscriptions {
    register: Subscription,
    unregister: Subscription,
    greet: Subscription,
}

/// Serves HTTP on `listener`, routing by the table built from the bus, until cancelled.
pub async fn run(
    config: RouterConfig,
    listener: TcpListener,
    bus: Bus,
    cancel: CancellationToken,
) -> Result<(), RouterError> {
    run_with_status(config, listener, None, bus, cancel).await
}

/// [`run`], plus the status server (`/health`, `/routes`, `/metrics`) on
/// `status_listener` when given.
pub async fn run_with_status(
    config: RouterConfig,
    listener: TcpListener,
    status_listener: Option<TcpListener>,
    bus: Bus,
    cancel: CancellationToken,
) -> Result<(), RouterError> {
    let local = listener.local_addr()?;
    let mut table = RouteTable::new(config.prune_threshold);
    table.set_endpoint_backoff(config.endpoint_failure_backoff);
    let table = Arc::new(RwLock::new(table));
    // Subscribed before announcing, so the answers to router.start are not missed.
    let subscriptions = RegistrySubscriptions {
        register: bus.subscribe(REGISTER_SUBJECT).await?,
        unregister: bus.subscribe(UNREGISTER_SUBJECT).await?,
        greet: bus.subscribe(GREET_SUBJECT).await?,
    };
    let start = RouterStart {
        id: uuid::Uuid::new_v4().to_string(),
        hosts: vec![local.ip().to_string()],
        minimum_register_interval_in_seconds: config.minimum_register_interval.as_secs(),
        prune_threshold_in_seconds: config.prune_threshold.as_secs(),
    };
    let start = serde_json::to_vec(&start).map_err(|e| RouterError::Bus(e.to_string()))?;
    bus.publish(START_SUBJECT, start.clone()).await?;
    tracing::info!(address = %local, "router started");

    let tracker = TaskTracker::new();
    tracker.spawn(maintain_table(
        table.clone(),
        subscriptions,
        bus.clone(),
        start,
        config.prune_interval(),
        cancel.clone(),
    ));
    let metrics = Arc::new(Metrics::default());
    let (logger, publish_access_log) = AccessLogger::new(bus.clone(), metrics.clone());
    // Not tracked: it ends by itself once the proxy and its responses are gone.
    let access_log_task = tokio::spawn(publish_access_log);
    if let Some(status_listener) = status_listener {
        let state = status::StatusState {
            table: table.clone(),
            metrics: metrics.clone(),
            credentials: config.status_credentials.clone(),
            draining: cancel.clone(),
        };
        tracker.spawn(status::serve(status_listener, state, cancel.clone()));
    }
    let proxy = Arc::new(Proxy::new(
        table,
        logger,
        metrics,
        &config,
        tracker.clone(),
        cancel.clone(),
    ));
    let limits = ConnectionLimits::from(&config);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    tracker.spawn(serve_connection(proxy.clone(), stream, remote, limits, cancel.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "router accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    drop(proxy);
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("router connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, access_log_task)
        .await
        .is_err()
    {
        tracing::warn!("router access log did not drain within {DRAIN_TIMEOUT:?}");
    }
    tracing::info!("router stopped");
    Ok(())
}

/// Applies registrations, answers greetings and prunes stale endpoints until cancelled.
async fn maintain_table(
    table: Arc<RwLock<RouteTable>>,
    mut subs: RegistrySubscriptions,
    bus: Bus,
    start: Vec<u8>,
    prune_interval: Duration,
    cancel: CancellationToken,
) {
    let mut prune = tokio::time::interval(prune_interval);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // As Gorouter, announce again after every reconnect to NATS: route-emitters then
    // re-publish at once what may have been missed.
    let mut reconnects = bus.on_reconnect();
    let write = || {
        table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            msg = subs.register.next() => {
                let Some(msg) = msg else { return };
                if let Some(reg) = parse_registration(&msg.payload) {
                    write().register(&reg, Instant::now());
                }
            }
            msg = subs.unregister.next() => {
                let Some(msg) = msg else { return };
                if let Some(reg) = parse_registration(&msg.payload) {
                    write().unregister(&reg);
                }
            }
            msg = subs.greet.next() => {
                let Some(msg) = msg else { return };
                if let Some(reply) = msg.reply.as_deref() {
                    if let Err(e) = bus.publish(reply, start.clone()).await {
                        tracing::warn!(error = %e, "cannot answer router.greet");
                    }
                }
            }
            changed = reconnects.changed() => {
                if changed.is_err() {
                    // The bus is gone; registrations stop with it.
                    return;
                }
                tracing::info!("reconnected to the message bus; announcing router.start");
                if let Err(e) = bus.publish(START_SUBJECT, start.clone()).await {
                    tracing::warn!(error = %e, "cannot announce router.start");
                }
            }
            _ = prune.tick() => {
                let pruned = write().prune(Instant::now());
                if pruned > 0 {
                    tracing::info!(pruned, "pruned stale route endpoints");
                }
            }
        }
    }
}

fn parse_registration(payload: &[u8]) -> Option<RegistryMessage> {
    match serde_json::from_slice(payload) {
        Ok(reg) => Some(reg),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a malformed route registration");
            None
        }
    }
}

/// The client connection settings taken from [`RouterConfig`].
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_timeout: Duration,
    max_header_bytes: usize,
}

impl From<&RouterConfig> for ConnectionLimits {
    fn from(config: &RouterConfig) -> Self {
        ConnectionLimits {
            header_timeout: config.client_header_timeout,
            max_header_bytes: config.max_header_bytes,
        }
    }
}

/// Serves one client connection (HTTP/1.1, keep-alive, upgrades) until it closes, or
/// finishes its in-flight request and closes it when the router stops. Malformed
/// requests get 400 and oversized headers 431 from hyper's parser.
async fn serve_connection(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    remote: SocketAddr,
    limits: ConnectionLimits,
    cancel: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        // Boxed: the request future is large, and hyper would otherwise move it.
        let handling = Box::pin(async move { proxy.handle(req, remote).await });
        async move { Ok::<_, Infallible>(handling.await) }
    });
    // hyper's read buffer must hold the largest header block it accepts.
    let max_header_bytes = limits.max_header_bytes.max(1024);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_timeout)
        .max_header_size(max_header_bytes)
        .max_buf_size(max_header_bytes.max(8192) + 8192)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %remote, error = %e, "client connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_interval_follows_the_threshold() {
        let config = |secs| RouterConfig {
            prune_threshold: Duration::from_secs(secs),
            ..Default::default()
        };
        assert_eq!(config(120).prune_interval(), Duration::from_secs(30));
        assert_eq!(config(8).prune_interval(), Duration::from_secs(2));
        assert_eq!(config(0).prune_interval(), Duration::from_millis(100));
    }
}
