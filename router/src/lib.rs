//! Gorouter: the HTTP edge. Route table fed by `router.register`, load balancing, proxying.
//!
//! [`run`] announces the router with `router.start` (so route-emitters re-publish every
//! route at once), answers `router.greet`, keeps the [`table::RouteTable`] current from
//! `router.register`/`router.unregister`, prunes endpoints that stopped re-registering,
//! and serves HTTP/1.1 clients through the [`proxy`](crate::proxy) until cancelled.
//! [`serve`] also terminates TLS (certificates by SNI, HTTP/2 or HTTP/1.1 by ALPN) on a
//! second listener, and serves `/health`, `/routes` and Prometheus `/metrics` on a
//! separate status port.

mod access_log;
mod backend;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
mod metrics;
mod proxy;
mod route_service;
mod status;
pub mod table;
mod tls;
mod trace;

pub use message::{RegistryMessage, RouterStart};
pub use route_service::RouteServiceError;
pub use status::StatusCredentials;
pub use table::{Endpoint, LoadBalancing, Lookup, RouteTable};
pub use tls::{certificates_from_pem, certificates_from_pem_file, TlsCertificate, TlsError};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wf_messaging::{Bus, BusError, Subscription};

use access_log::AccessLogger;
use message::{GREET_SUBJECT, REGISTER_SUBJECT, START_SUBJECT, UNREGISTER_SUBJECT};
use metrics::Metrics;
use proxy::{ClientConn, Proxy, Scheme};

/// How long open connections get to finish their requests once the router stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("router bus error: {0}")]
    Bus(String),
    #[error("router TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    RouteServices(#[from] RouteServiceError),
}

impl From<BusError> for RouterError {
    fn from(e: BusError) -> Self {
        RouterError::Bus(e.to_string())
    }
}

/// `Debug` hides the route services secrets (and the status port's password).
#[derive(Clone)]
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
    /// The certificates the TLS listener serves, chosen by SNI; the one without a
    /// domain (else the first) answers clients with no or an unknown server name.
    pub tls_certificates: Vec<TlsCertificate>,
    /// A client must finish its TLS handshake within this time (Gorouter: 10 s); the
    /// same bound applies to handshakes with TLS backends.
    pub tls_handshake_timeout: Duration,
    /// The CAs trusted for TLS to backends (registered with `tls_port`) and to
    /// `https` route services.
    pub backend_ca_certificates: Vec<CertificateDer<'static>>,
    /// The secret route service signatures are encrypted with (Gorouter's
    /// `route_services_secret`); `None`: route services are disabled and routes bound
    /// to one get 502.
    pub route_services_secret: Option<String>,
    /// The previous secret, still accepted for signatures while secrets rotate
    /// (Gorouter's `route_services_secret_decrypt_only`).
    pub route_services_secret_decrypt_only: Option<String>,
    /// How long a route service has to send the request back (Gorouter: 60 s).
    pub route_services_timeout: Duration,
}

/// Shows whether the route services secrets are set, never them.
impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConfig")
            .field("prune_threshold", &self.prune_threshold)
            .field("minimum_register_interval", &self.minimum_register_interval)
            .field("backend_connect_timeout", &self.backend_connect_timeout)
            .field("backend_response_timeout", &self.backend_response_timeout)
            .field("endpoint_failure_backoff", &self.endpoint_failure_backoff)
            .field("client_header_timeout", &self.client_header_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_request_body_bytes", &self.max_request_body_bytes)
            .field("max_conns_per_backend", &self.max_conns_per_backend)
            .field(
                "sticky_session_cookie_names",
                &self.sticky_session_cookie_names,
            )
            .field("status_credentials", &self.status_credentials)
            .field("tls_certificates", &self.tls_certificates)
            .field("tls_handshake_timeout", &self.tls_handshake_timeout)
            .field("backend_ca_certificates", &self.backend_ca_certificates)
            .field(
                "route_services_secret",
                &self.route_services_secret.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "route_services_secret_decrypt_only",
                &self
                    .route_services_secret_decrypt_only
                    .as_ref()
                    .map(|_| "REDACTED"),
            )
            .field("route_services_timeout", &self.route_services_timeout)
            .finish()
    }
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
            tls_certificates: Vec::new(),
            tls_handshake_timeout: Duration::from_secs(10),
            backend_ca_certificates: Vec::new(),
            route_services_secret: None,
            route_services_secret_decrypt_only: None,
            route_services_timeout: Duration::from_secs(60),
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

/// The sockets the router serves.
#[derive(Debug)]
pub struct Listeners {
    /// Plain HTTP/1.1 clients.
    pub http: TcpListener,
    /// TLS clients (HTTP/2 or HTTP/1.1 by ALPN), with [`RouterConfig::tls_certificates`].
    pub tls: Option<TcpListener>,
    /// `/health`, `/routes` and `/metrics`.
    pub status: Option<TcpListener>,
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
    let listeners = Listeners {
        http: listener,
        tls: None,
        status: status_listener,
    };
    serve(config, listeners, bus, cancel).await
}

/// Serves every listener of `listeners`, routing by the table built from the bus,
/// until cancelled; then lets open connections finish their requests.
pub async fn serve(
    config: RouterConfig,
    listeners: Listeners,
    bus: Bus,
    cancel: CancellationToken,
) -> Result<(), RouterError> {
    let Listeners {
        http: listener,
        tls: tls_listener,
        status: status_listener,
    } = listeners;
    // TLS settings are checked before the router announces itself.
    let acceptor = match &tls_listener {
        Some(_) => Some(TlsAcceptor::from(tls::server_config(
            &config.tls_certificates,
        )?)),
        None => None,
    };
    let backend_tls = tls::client_config(&config.backend_ca_certificates)?;
    let route_services = config
        .route_services_secret
        .as_deref()
        .map(|secret| {
            route_service::RouteServiceKeys::new(
                secret,
                config.route_services_secret_decrypt_only.as_deref(),
                config.route_services_timeout,
            )
        })
        .transpose()?;
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
        backend_tls,
        route_services,
        tracker.clone(),
        cancel.clone(),
    ));
    let limits = ConnectionLimits::from(&config);
    if let (Some(tls_listener), Some(acceptor)) = (tls_listener, acceptor) {
        tracing::info!(address = %tls_listener.local_addr()?, "router serving TLS");
        let proxy = proxy.clone();
        let connections = tracker.clone();
        let stop = cancel.clone();
        tracker.spawn(accept_loop(
            tls_listener,
            cancel.clone(),
            move |stream, remote| {
                connections.spawn(serve_tls_connection(
                    proxy.clone(),
                    acceptor.clone(),
                    stream,
                    remote,
                    limits,
                    stop.clone(),
                ));
            },
        ));
    }
    let connections = tracker.clone();
    let plain_proxy = proxy.clone();
    let stop = cancel.clone();
    accept_loop(listener, cancel.clone(), move |stream, remote| {
        connections.spawn(serve_connection(
            plain_proxy.clone(),
            stream,
            remote,
            limits,
            stop.clone(),
        ));
    })
    .await;
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

/// Accepts connections on `listener` and hands each to `serve` until cancelled; the
/// listener is closed on return.
async fn accept_loop(
    listener: TcpListener,
    cancel: CancellationToken,
    serve: impl Fn(TcpStream, SocketAddr),
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => serve(stream, remote),
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "router accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
}

/// The client connection settings taken from [`RouterConfig`].
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_timeout: Duration,
    max_header_bytes: usize,
    tls_handshake_timeout: Duration,
}

impl ConnectionLimits {
    /// hyper's read buffer must hold the largest header block it accepts.
    fn read_buffer_bytes(&self) -> usize {
        self.max_header_bytes.max(1024).max(8192) + 8192
    }
}

impl From<&RouterConfig> for ConnectionLimits {
    fn from(config: &RouterConfig) -> Self {
        ConnectionLimits {
            header_timeout: config.client_header_timeout,
            max_header_bytes: config.max_header_bytes,
            tls_handshake_timeout: config.tls_handshake_timeout,
        }
    }
}

/// The proxy as a hyper service for one client connection.
fn proxy_service(
    proxy: Arc<Proxy>,
    remote: SocketAddr,
    scheme: Scheme,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<proxy::ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<proxy::ResponseBody>, Infallible>> + Send,
> + Clone {
    let client = Arc::new(ClientConn::new(remote, scheme));
    service_fn(move |req| {
        let (proxy, client) = (proxy.clone(), client.clone());
        // Boxed: the request future is large, and hyper would otherwise move it.
        let handling = Box::pin(async move { proxy.handle(req, &client).await });
        async move { Ok::<_, Infallible>(handling.await) }
    })
}

/// Drives a client connection to its end; once the router stops, asks it to finish
/// its in-flight requests and close, and gives it [`DRAIN_TIMEOUT`] for that.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    remote: SocketAddr,
    cancel: CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = cancel.cancelled() => {
            graceful_shutdown(conn.as_mut());
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
    let service = proxy_service(proxy, remote, Scheme::Http);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes.max(1024))
        .max_buf_size(limits.read_buffer_bytes())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    drive(conn, |c| c.graceful_shutdown(), remote, cancel).await;
}

/// Serves one TLS client connection: the handshake (bounded by the handshake
/// timeout), then HTTP/2 or HTTP/1.1 as the client chose by ALPN, as
/// [`serve_connection`] does for plain clients.
async fn serve_tls_connection(
    proxy: Arc<Proxy>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    limits: ConnectionLimits,
    cancel: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let stream = tokio::select! {
        _ = cancel.cancelled() => return,
        accepted = tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)) => match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(client = %remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %remote, "TLS handshake timed out");
                return;
            }
        },
    };
    let service = proxy_service(proxy, remote, Scheme::Https);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.read_buffer_bytes());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    drive(conn, |c| c.graceful_shutdown(), remote, cancel).await;
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

    #[test]
    fn debug_hides_the_secrets() {
        let config = RouterConfig {
            route_services_secret: Some("rs-s3cret".into()),
            route_services_secret_decrypt_only: Some("old-s3cret".into()),
            status_credentials: Some(StatusCredentials {
                user: "status".into(),
                password: "status-s3cret".into(),
            }),
            ..RouterConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("REDACTED") && shown.contains("status"),
            "{shown}"
        );
    }
}
