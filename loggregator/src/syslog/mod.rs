//! Syslog drains, CF's syslog agent: the logs (and, by `drain-type`, metrics) of an app
//! bound to a user-provided service with a `syslog_drain_url` are forwarded to that URL
//! as RFC 5424 messages.
//!
//! One task reads every envelope the log store ingests and hands those whose source id
//! is an app with drains to each of its drains. Each drain has a bounded buffer and its
//! own writer task, so a slow or unreachable destination never holds up ingest or other
//! drains: when the buffer is full the oldest envelope is dropped and counted, and the
//! app is told in its own log stream (`LGR`), at most once an interval, like CF's
//! "N messages lost in user provided syslog drain". Writers reconnect with capped
//! exponential backoff.

mod drain_url;
mod rfc5424;
mod transport;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use wf_metrics::{Exposition, Kind};

pub use drain_url::{DrainScheme, DrainType, DrainUrl, DrainUrlError};
pub use rfc5424::{messages as rfc5424_messages, sanitize_hostname};

use crate::envelope::{Envelope, LogType};
use crate::store::LogStore;
use transport::{Connection, TlsSettings};

/// Source type of the drop notices in the app's log stream (CF's loggregator `LGR`).
pub const DROP_NOTICE_SOURCE_TYPE: &str = "LGR";

/// How drains buffer, retry and time out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Envelopes buffered per drain before the oldest are dropped: 10,000 (CF's syslog
    /// agent keeps a 10,000-envelope diode per drain).
    pub buffer: usize,
    /// First delay before reconnecting: 100 ms, doubled after every failure...
    pub backoff_min: Duration,
    /// ...up to 30 s.
    pub backoff_max: Duration,
    /// Connect and TLS handshake timeout: 5 s.
    pub connect_timeout: Duration,
    /// Timeout of a write or POST: 20 s (CF's syslog I/O timeout).
    pub write_timeout: Duration,
    /// Shortest time between two drop notices of a drain: 5 s.
    pub drop_notice_interval: Duration,
    /// Envelopes written at once: 256.
    pub batch: usize,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            buffer: 10_000,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(20),
            drop_notice_interval: Duration::from_secs(5),
            batch: 256,
        }
    }
}

/// What went wrong configuring the drains.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("the extra CA is not PEM: {0}")]
    InvalidCa(String),
    #[error("the extra CA holds no certificate")]
    EmptyCa,
}

/// One drain, as [`SyslogDrains::stats`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainStats {
    pub app_guid: String,
    /// The drain URL without credentials ([`DrainUrl::redacted`]).
    pub url: String,
    pub drain_type: DrainType,
    /// Syslog messages delivered (written to the connection, or POSTed with a 2xx).
    pub sent: u64,
    /// Envelopes dropped because the buffer was full.
    pub dropped: u64,
    /// Envelopes waiting in the buffer.
    pub queued: usize,
    pub connected: bool,
    /// The last connect or send error, if any.
    pub last_error: Option<String>,
}

/// The syslog drains of every app. See the module docs.
pub struct SyslogDrains {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<LogStore>,
    /// Where drain writers run (`set` may be called from outside the runtime).
    runtime: tokio::runtime::Handle,
    config: SyslogConfig,
    cancel: CancellationToken,
    /// App guid -> its drains.
    apps: RwLock<HashMap<String, Vec<Arc<Drain>>>>,
    tls: TlsSettings,
    /// Envelopes the dispatcher itself lost by falling behind the store's stream.
    lagged: AtomicU64,
}

impl SyslogDrains {
    /// Starts forwarding: subscribes to `store` and runs until `cancel`. Call it within
    /// a Tokio runtime; the drains run there.
    pub fn start(store: &Arc<LogStore>, cancel: CancellationToken) -> Arc<SyslogDrains> {
        SyslogDrains::start_with_config(store, cancel, SyslogConfig::default())
    }

    /// [`SyslogDrains::start`] with other buffer, backoff and timeout settings.
    pub fn start_with_config(
        store: &Arc<LogStore>,
        cancel: CancellationToken,
        config: SyslogConfig,
    ) -> Arc<SyslogDrains> {
        let config = SyslogConfig {
            buffer: config.buffer.max(1),
            batch: config.batch.max(1),
            backoff_max: config.backoff_max.max(config.backoff_min),
            ..config
        };
        let shared = Arc::new(Shared {
            store: store.clone(),
            runtime: tokio::runtime::Handle::current(),
            config,
            cancel,
            apps: RwLock::new(HashMap::new()),
            tls: TlsSettings::default(),
            lagged: AtomicU64::new(0),
        });
        // Subscribed before returning, so nothing ingested after `start` is missed.
        let envelopes = store.subscribe();
        tokio::spawn(dispatch(shared.clone(), envelopes));
        Arc::new(SyslogDrains { shared })
    }

    /// Also trusts the CA certificates in `pem` for `syslog-tls://` and `https://`
    /// drains, from their next connection on.
    pub fn set_extra_ca(&self, pem: &[u8]) -> Result<(), SyslogError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SyslogError::InvalidCa(e.to_string()))?;
        if certs.is_empty() {
            return Err(SyslogError::EmptyCa);
        }
        self.shared.tls.set_extra_roots(certs);
        Ok(())
    }

    /// Replaces the drains of app `app_guid` (empty `urls`: none). `hostname` is CF's
    /// `org.space.app`. Drains whose URL did not change keep their connection and buffer.
    pub fn set(&self, app_guid: &str, hostname: &str, urls: Vec<DrainUrl>) {
        let hostname: Arc<str> = sanitize_hostname(hostname).into();
        let mut apps = self.shared.apps.write().unwrap_or_else(|p| p.into_inner());
        let mut old = apps.remove(app_guid).unwrap_or_default();
        let mut drains: Vec<Arc<Drain>> = Vec::with_capacity(urls.len());
        for url in urls {
            if drains.iter().any(|d| d.url.as_str() == url.as_str()) {
                continue;
            }
            let kept = old
                .iter()
                .position(|d| d.url.as_str() == url.as_str())
                .map(|i| old.swap_remove(i));
            let drain = match kept {
                Some(drain) => {
                    *drain.hostname.write().unwrap_or_else(|p| p.into_inner()) = hostname.clone();
                    drain
                }
                None => {
                    let drain = Arc::new(Drain::new(
                        app_guid,
                        hostname.clone(),
                        url,
                        self.shared.cancel.child_token(),
                    ));
                    self.shared
                        .runtime
                        .spawn(run_drain(drain.clone(), self.shared.clone()));
                    drain
                }
            };
            drains.push(drain);
        }
        for removed in old {
            removed.cancel.cancel();
        }
        if !drains.is_empty() {
            apps.insert(app_guid.to_string(), drains);
        }
    }

    /// Per drain: app guid, url (credentials redacted), sent, dropped, and the last error;
    /// ordered by app guid, then in the order `set` gave the URLs.
    pub fn stats(&self) -> Vec<DrainStats> {
        let apps = self.shared.apps.read().unwrap_or_else(|p| p.into_inner());
        let mut guids: Vec<&String> = apps.keys().collect();
        guids.sort();
        guids
            .into_iter()
            .flat_map(|guid| apps[guid].iter().map(|d| d.stats()))
            .collect()
    }

    /// Envelopes lost before reaching any drain because the dispatcher fell behind the
    /// log store's stream (also counted in the store's `stream_dropped`).
    pub fn lagged(&self) -> u64 {
        self.shared.lagged.load(Ordering::Relaxed)
    }

    /// The drain counters in the Prometheus text format, for a `/metrics` endpoint.
    pub fn prometheus(&self) -> String {
        let mut e = Exposition::new();
        self.write_metrics(&mut e);
        e.finish()
    }

    /// Writes the drain counters into `e` (see [`SyslogDrains::prometheus`]).
    pub fn write_metrics(&self, e: &mut Exposition) {
        let stats = self.stats();
        let families: [Family; 3] = [
            (
                "syslog_drain_messages_sent_total",
                Kind::Counter,
                "Syslog messages delivered to the drain.",
                |s| s.sent,
            ),
            (
                "syslog_drain_messages_dropped_total",
                Kind::Counter,
                "Envelopes dropped because the drain's buffer was full.",
                |s| s.dropped,
            ),
            (
                "syslog_drain_messages_queued",
                Kind::Gauge,
                "Envelopes waiting in the drain's buffer.",
                |s| s.queued as u64,
            ),
        ];
        for (name, kind, help, value) in families {
            e.family(name, kind, help);
            for s in &stats {
                e.sample(
                    name,
                    &[("app_guid", &s.app_guid), ("drain_url", &s.url)],
                    value(s),
                );
            }
        }
        e.single(
            "syslog_drain_dispatch_lagged_total",
            Kind::Counter,
            "Envelopes lost before reaching any drain.",
            self.lagged(),
        );
    }
}

/// A Prometheus metric family: name, type, help, and its value for one drain.
type Family = (&'static str, Kind, &'static str, fn(&DrainStats) -> u64);

/// Hands every ingested envelope to the drains of its source id until cancelled.
async fn dispatch(shared: Arc<Shared>, mut envelopes: broadcast::Receiver<Arc<Envelope>>) {
    loop {
        let received = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            received = envelopes.recv() => received,
        };
        match received {
            Ok(envelope) => {
                let drains: Vec<Arc<Drain>> = {
                    let apps = shared.apps.read().unwrap_or_else(|p| p.into_inner());
                    match apps.get(&envelope.source_id) {
                        Some(drains) => drains.clone(),
                        None => continue,
                    }
                };
                for drain in drains {
                    if drain.push(&envelope, shared.config.buffer) {
                        drain.notice_drops(&shared);
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                shared.lagged.fetch_add(n, Ordering::Relaxed);
                shared.store.count_stream_drops(n);
                tracing::warn!(
                    lost = n,
                    "syslog drains fell behind the log stream and lost envelopes"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

struct Drain {
    app_guid: String,
    url: DrainUrl,
    /// Sanitized `org.space.app`; `set` updates it when the app is renamed.
    hostname: RwLock<Arc<str>>,
    queue: Mutex<VecDeque<Arc<Envelope>>>,
    /// Wakes the writer when envelopes arrive.
    arrived: Notify,
    cancel: CancellationToken,
    sent: AtomicU64,
    dropped: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    notices: Mutex<NoticeState>,
}

#[derive(Default)]
struct NoticeState {
    /// Drops already reported in the app's log stream.
    reported: u64,
    last: Option<Instant>,
}

impl Drain {
    fn new(app_guid: &str, hostname: Arc<str>, url: DrainUrl, cancel: CancellationToken) -> Drain {
        Drain {
            app_guid: app_guid.to_string(),
            url,
            hostname: RwLock::new(hostname),
            queue: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            cancel,
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            notices: Mutex::new(NoticeState::default()),
        }
    }

    /// Buffers `envelope` if the drain takes its kind, dropping the oldest when full.
    /// Whether one was dropped.
    fn push(&self, envelope: &Arc<Envelope>, capacity: usize) -> bool {
        if rfc5424::wanted(envelope, self.url.drain_type()) {
            let dropped = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let dropped = queue.len() >= capacity && queue.pop_front().is_some();
                queue.push_back(envelope.clone());
                dropped
            };
            if dropped {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.arrived.notify_one();
            dropped
        } else {
            false
        }
    }

    fn pop_batch(&self, max: usize) -> Vec<Arc<Envelope>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn set_error(&self, error: String) {
        tracing::debug!(app_guid = %self.app_guid, url = %self.url, %error, "syslog drain error");
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// Tells the app, in its own log stream, how many envelopes this drain lost since the
    /// last notice, unless a notice went out less than an interval ago.
    fn notice_drops(&self, shared: &Shared) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let count = {
            let mut notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
            let due = notices
                .last
                .is_none_or(|t| t.elapsed() >= shared.config.drop_notice_interval);
            if dropped <= notices.reported || !due {
                return;
            }
            let count = dropped - notices.reported;
            notices.reported = dropped;
            notices.last = Some(Instant::now());
            count
        };
        tracing::info!(app_guid = %self.app_guid, url = %self.url, lost = count, "syslog drain dropped envelopes");
        shared.store.ingest(Envelope::log(
            &self.app_guid,
            "",
            DROP_NOTICE_SOURCE_TYPE,
            LogType::Err,
            format!(
                "{count} messages lost in user provided syslog drain {}",
                self.url
            ),
        ));
    }

    /// When unreported drops may be reported next.
    fn notice_due(&self, interval: Duration) -> Option<Instant> {
        let notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        (self.dropped.load(Ordering::Relaxed) > notices.reported)
            .then(|| notices.last.map_or_else(Instant::now, |t| t + interval))
    }

    fn stats(&self) -> DrainStats {
        DrainStats {
            app_guid: self.app_guid.clone(),
            url: self.url.redacted(),
            drain_type: self.url.drain_type(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            queued: self.queued(),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// A drain's writer: connects when there is something to send, sends in batches,
/// reconnects with backoff, until the drain is removed or the drains stop.
///
/// While disconnected nothing leaves the buffer, so what a slow or dead destination
/// costs is exactly what overflows the buffer (counted). A batch taken from the buffer
/// is retried until it is sent (a connection that breaks mid-batch may deliver part of
/// it twice).
async fn run_drain(drain: Arc<Drain>, shared: Arc<Shared>) {
    let config = &shared.config;
    let mut connection: Option<Connection> = None;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut backoff = config.backoff_min;
    loop {
        drain.notice_drops(&shared);
        if pending.is_empty() && drain.queued() == 0 {
            let notice_due = drain.notice_due(config.drop_notice_interval);
            tokio::select! {
                _ = drain.cancel.cancelled() => return,
                _ = drain.arrived.notified() => {}
                _ = sleep_until_or_forever(notice_due) => {}
            }
            continue;
        }
        let Some(open) = connection.as_mut() else {
            let opened = tokio::select! {
                _ = drain.cancel.cancelled() => return,
                opened = Connection::open(&drain.url, &shared.tls, config) => opened,
            };
            match opened {
                Ok(open) => {
                    drain.connected.store(true, Ordering::Relaxed);
                    connection = Some(open);
                }
                Err(error) => {
                    drain.set_error(error);
                    if !pause(&drain, &shared, &mut backoff).await {
                        return;
                    }
                }
            }
            continue;
        };
        if pending.is_empty() {
            let hostname = drain
                .hostname
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            pending = drain
                .pop_batch(config.batch)
                .iter()
                .flat_map(|e| rfc5424::messages(e, &hostname, drain.url.drain_type()))
                .collect();
            if pending.is_empty() {
                continue;
            }
        }
        if open.closed_by_peer() {
            drain.set_error("the drain closed the connection".to_string());
            connection = None;
            if !pause(&drain, &shared, &mut backoff).await {
                return;
            }
            continue;
        }
        let sent = tokio::select! {
            _ = drain.cancel.cancelled() => return,
            sent = open.send(&pending, config.write_timeout) => sent,
        };
        match sent {
            Ok(()) => {
                drain
                    .sent
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                pending.clear();
                backoff = config.backoff_min;
            }
            Err((delivered, error)) => {
                drain.sent.fetch_add(delivered as u64, Ordering::Relaxed);
                pending.drain(..delivered);
                drain.set_error(error);
                connection = None;
                if !pause(&drain, &shared, &mut backoff).await {
                    return;
                }
            }
        }
    }
}

/// Waits out `backoff` (reporting drops meanwhile) and doubles it up to the cap; false
/// when the drain was removed meanwhile.
async fn pause(drain: &Drain, shared: &Shared, backoff: &mut Duration) -> bool {
    let until = tokio::time::Instant::now() + *backoff;
    *backoff = (*backoff * 2).min(shared.config.backoff_max);
    loop {
        let notice_due = drain
            .notice_due(shared.config.drop_notice_interval)
            .map(tokio::time::Instant::from_std)
            .filter(|due| *due < until);
        let wake = notice_due.unwrap_or(until);
        tokio::select! {
            _ = drain.cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if notice_due.is_none() {
            return true;
        }
        drain.notice_drops(shared);
    }
}

async fn sleep_until_or_forever(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}
