//! Gorouter: the HTTP edge. Route table fed by `router.register`, load balancing, proxying.
//!
//! [`run`] announces the router with `router.start` (so route-emitters re-publish every
//! route at once), answers `router.greet`, keeps the [`table::RouteTable`] current from
//! `router.register`/`router.unregister`, prunes endpoints that stopped re-registering,
//! and serves HTTP/1.1 clients through the [`proxy`](crate::proxy) until cancelled.

mod access_log;
pub mod message;
mod proxy;
pub mod table;

pub use message::{RegistryMessage, RouterStart};
pub use table::{Endpoint, Lookup, RouteTable};

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

use message::{GREET_SUBJECT, REGISTER_SUBJECT, START_SUBJECT, UNREGISTER_SUBJECT};
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
    /// Per-attempt timeout to connect to a backend.
    pub backend_connect_timeout: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            prune_threshold: Duration::from_secs(120),
            minimum_register_interval: Duration::from_secs(20),
            backend_connect_timeout: Duration::from_secs(5),
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
    let local = listener.local_addr()?;
    let table = Arc::new(RwLock::new(RouteTable::new(config.prune_threshold)));
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
    let proxy = Arc::new(Proxy::new(table, bus, &config));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    tracker.spawn(serve_connection(proxy.clone(), stream, remote, cancel.clone()));
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
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("router connections did not finish within {DRAIN_TIMEOUT:?}");
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

/// Serves one client connection (HTTP/1.1, keep-alive) until it closes, or finishes
/// its in-flight request and closes it when the router stops.
async fn serve_connection(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    remote: SocketAddr,
    cancel: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, remote).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
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
