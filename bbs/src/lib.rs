//! Diego's BBS: the DesiredLRP, ActualLRP and Task records, convergence, the auction
//! that places work on cells, cell presence and domains, and the route-emitter.
//!
//! [`Bbs`] is the service layer over the BBS database; the controller, the cells and
//! the background loops ([`Bbs::run`]) all go through it. Records live in SQLite or
//! PostgreSQL through sqlx's `Any` driver ([`schema`] creates the tables); every change
//! is announced on [`Bbs::subscribe`].
//!
//! Writes run one at a time, through [`writer`]'s group commit: a BBS process is the
//! only writer of its database (the holder of the `bbs` lock, as Diego elects a single
//! active BBS), and SQLite cannot upgrade a read transaction to a write one while
//! another connection writes. The reps' claims and starts, the bulk of the writes at
//! scale, are applied in batches ([`claims`]).

pub mod api;
mod auction;
mod claims;
mod client;
mod convergence;
mod db;
pub mod locket;
mod lrp;
mod metrics;
pub mod models;
pub mod mtls;
mod presence;
pub mod rep;
pub mod restart;
mod route_emitter;
mod task;
mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;

pub use client::BbsClient;
pub use locket::{Lock, LockLost};
pub use models::*;
use rep::RepClient;

/// The BBS schema, `bbs/migrations/*.sql`.
const MIGRATIONS: &[wf_db::EmbeddedMigration] =
    wf_db::embed_migrations!(1 => "0001_initial", 2 => "0002_locks");

/// How many events a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_BUFFER: usize = 16_384;

/// Longest `placement_error` / `crash_reason` kept, as in Diego.
const MAX_REASON_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BbsError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("{record} already exists")]
    AlreadyExists { record: String },
    #[error("cannot move {record} from {from} to {to}")]
    InvalidTransition {
        record: String,
        from: String,
        to: String,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Open(#[from] wf_db::DbError),
    /// The transaction that held a write did not commit.
    #[error("database commit: {0}")]
    Commit(String),
    /// The BBS could not be reached over its API (a [`BbsClient`] error).
    #[error("BBS unavailable: {0}")]
    Unavailable(String),
    /// The BBS answered that it failed (its database, most likely).
    #[error("BBS failed: {0}")]
    Remote(String),
}

/// BBS settings; defaults are Diego's. `Debug` hides the database URL's password.
#[derive(Clone)]
pub struct BbsConfig {
    /// `sqlite://path/bbs.db?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// Time between convergence passes (Diego: 30 s).
    pub convergence_interval: Duration,
    /// An UNCLAIMED ActualLRP (or PENDING Task) older than this is auctioned again (Diego: 30 s).
    pub unclaimed_retry: Duration,
    /// How often the route-emitter re-publishes every route (CF: 20 s).
    pub register_interval: Duration,
    /// Timeout of each call to a rep (Diego: 10 s for state fetches).
    pub rep_timeout: Duration,
    /// Mutual TLS for the BBS API and the calls to reps (Diego's `require_ssl`); `None`:
    /// plain HTTP, as `wfd dev` uses on loopback.
    pub mutual_tls: Option<mtls::MutualTls>,
}

impl std::fmt::Debug for BbsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BbsConfig")
            .field("database_url", &wf_db::redacted_url(&self.database_url))
            .field("convergence_interval", &self.convergence_interval)
            .field("unclaimed_retry", &self.unclaimed_retry)
            .field("register_interval", &self.register_interval)
            .field("rep_timeout", &self.rep_timeout)
            .field("mutual_tls", &self.mutual_tls)
            .finish()
    }
}

impl Default for BbsConfig {
    fn default() -> Self {
        BbsConfig {
            database_url: "sqlite::memory:".to_string(),
            convergence_interval: Duration::from_secs(30),
            unclaimed_retry: Duration::from_secs(30),
            register_interval: Duration::from_secs(20),
            rep_timeout: Duration::from_secs(10),
            mutual_tls: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DesiredLrpFilter {
    pub domain: Option<String>,
    pub process_guids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ActualLrpFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
    pub process_guid: Option<String>,
    pub index: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TaskFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
}

/// The BBS service. The record operations live beside their records: DesiredLRPs and
/// ActualLRPs in `lrp`, Tasks in `task`, domains and cells in `presence`.
pub struct Bbs {
    config: BbsConfig,
    pool: AnyPool,
    bus: Bus,
    rep: RepClient,
    events: broadcast::Sender<BbsEvent>,
    /// Every write goes through it, see the module docs.
    writer: writer::Writer,
    /// The reps' claims and starts, applied in batches by [`claims::run`].
    claims: claims::Requests,
    auction: auction::Queue,
    /// What convergence and the auction count, for `/metrics`.
    counters: metrics::Counters,
}

impl Bbs {
    /// Connects to the database, applies the migrations, and returns the service. Background
    /// work starts with [`Bbs::run`].
    pub async fn open(config: BbsConfig, bus: Bus) -> Result<Arc<Bbs>, BbsError> {
        let pool = wf_db::open(&config.database_url, MIGRATIONS).await?;
        let writer = writer::Writer::new(pool.clone());
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (claims, requests) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new_cyclic(|bbs| {
            tokio::spawn(claims::run(bbs.clone(), requests));
            Bbs {
                rep: RepClient::new(config.rep_timeout, config.mutual_tls.as_ref()),
                config,
                pool,
                bus,
                events,
                writer,
                claims,
                auction: auction::Queue::default(),
                counters: metrics::Counters::default(),
            }
        }))
    }

    /// Runs convergence, the auctioneer and the route-emitter until `cancel`.
    pub fn run(self: &Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let bbs = self.clone();
        tokio::spawn(async move {
            // Whatever waited for placement while no auctioneer ran goes first.
            if let Err(e) = bbs.auction_all_waiting().await {
                tracing::warn!(error = %e, "cannot queue waiting work for the auction");
            }
            let loops = [
                tokio::spawn(convergence::run(bbs.clone(), cancel.clone())),
                tokio::spawn(auction::run(bbs.clone(), cancel.clone())),
                tokio::spawn(route_emitter::run(bbs.clone(), cancel.clone())),
            ];
            for result in futures::future::join_all(loops).await {
                if let Err(e) = result {
                    tracing::error!(error = %e, "a BBS loop panicked");
                }
            }
        })
    }

    /// Serves the BBS API ([`api`]) on `listener` until `cancel`, under the configured
    /// mutual TLS if any.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let router = api::router(self.clone(), cancel.clone());
        let tls = self.config.mutual_tls.as_ref();
        mtls::serve(
            listener,
            router,
            tls,
            async move { cancel.cancelled().await },
        )
        .await
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BbsEvent> {
        self.events.subscribe()
    }

    /// Publishes the events of a committed change, queues its auctions and sends its rep
    /// calls. Rep calls run in their own tasks: a rep may call back into the BBS before
    /// it answers.
    fn apply(&self, changes: Changes) {
        for event in changes.events {
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
        self.auction
            .push(changes.auction_lrps, changes.auction_tasks);
        for call in changes.rep_calls {
            let rep = self.rep.clone();
            tokio::spawn(async move { call.send(&rep).await });
        }
    }
}

/// What one write did, applied by [`Bbs::apply`] once it is committed.
#[derive(Default)]
struct Changes {
    events: Vec<BbsEvent>,
    auction_lrps: Vec<ActualLrpKey>,
    auction_tasks: Vec<String>,
    rep_calls: Vec<RepCall>,
}

enum RepCall {
    StopLrp {
        rep_url: String,
        process_guid: String,
        instance_guid: String,
    },
    CancelTask {
        rep_url: String,
        task_guid: String,
    },
}

impl RepCall {
    async fn send(self, rep: &RepClient) {
        let result = match &self {
            RepCall::StopLrp {
                rep_url,
                process_guid,
                instance_guid,
            } => {
                rep.stop_lrp_instance(rep_url, process_guid, instance_guid)
                    .await
            }
            RepCall::CancelTask { rep_url, task_guid } => rep.cancel_task(rep_url, task_guid).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "rep call failed");
        }
    }
}

/// Unix time in nanoseconds, the unit of `since`, `created_at` and friends.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| duration_ns(d))
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Diego's guid rule: `^[a-zA-Z0-9_-]+$`.
fn validate_guid(field: &str, guid: &str) -> Result<(), BbsError> {
    let valid = !guid.is_empty()
        && guid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(BbsError::InvalidRecord(format!(
            "{field} {guid:?} must match ^[a-zA-Z0-9_-]+$"
        )))
    }
}

fn truncate_reason(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON_LEN) {
        Some((end, _)) => reason[..end].to_string(),
        None => reason.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared fixtures for the unit tests: a BBS on each test database (SQLite, and
    //! PostgreSQL when `WF_TEST_POSTGRES_URL` is set), DesiredLRPs, and a fake rep
    //! served over real HTTP.

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    use axum::{Json, Router};

    pub use wf_db::testing::{databases, TestDatabase};

    use super::*;
    use crate::rep::{CellState, LrpSummary, Work};

    /// A BBS on `db`, which the caller keeps for as long as the BBS is used.
    pub async fn open(db: &TestDatabase, bus: Bus) -> Arc<Bbs> {
        let config = BbsConfig {
            database_url: db.url().to_string(),
            ..Default::default()
        };
        Bbs::open(config, bus)
            .await
            .unwrap_or_else(|e| panic!("opening a BBS on {db}: {e}"))
    }

    pub fn desired(guid: &str, instances: u32) -> DesiredLrp {
        DesiredLrp {
            process_guid: guid.into(),
            domain: CF_APPS_DOMAIN.into(),
            instances,
            memory_mb: 256,
            disk_mb: 1024,
            ports: vec![8080],
            routes: Routes {
                cf_router: vec![CfRoute {
                    hostnames: vec![format!("{guid}.apps.localhost")],
                    port: 8080,
                    route_service_url: None,
                    isolation_segment: None,
                }],
            },
            start_timeout_ms: 60_000,
            check_definition: None,
            log_guid: "app-guid".into(),
            log_source: "APP/PROC/WEB".into(),
            metric_tags: [("app_name".to_string(), "hello".to_string())].into(),
            annotation: String::new(),
            placement_tags: vec![],
            action: RunAction {
                droplet_uri: "http://blobstore/droplet".into(),
                droplet_sha256: "abc".into(),
                command: String::new(),
                env: vec![],
                log_rate_limit_bytes_per_second: None,
            },
            modification_tag: ModificationTag::default(),
        }
    }

    pub fn key(guid: &str, index: u32) -> ActualLrpKey {
        ActualLrpKey {
            process_guid: guid.into(),
            index,
            domain: CF_APPS_DOMAIN.into(),
        }
    }

    pub fn instance(guid: &str, cell: &str) -> ActualLrpInstanceKey {
        ActualLrpInstanceKey {
            instance_guid: guid.into(),
            cell_id: cell.into(),
        }
    }

    pub fn net_info(host_port: u16) -> NetInfo {
        NetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port,
            }],
            instance_address: "127.0.0.1".into(),
        }
    }

    pub async fn actual(bbs: &Bbs, guid: &str, index: u32) -> Option<ActualLrp> {
        let filter = ActualLrpFilter {
            process_guid: Some(guid.into()),
            index: Some(index),
            ..Default::default()
        };
        bbs.actual_lrps(&filter)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.presence == Presence::Ordinary)
    }

    /// Polls `check` until it holds, failing the test after 5 s.
    pub async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A rep that accepts all work and records what it was asked to do.
    #[derive(Clone)]
    pub struct FakeRep {
        pub url: String,
        pub state: Arc<Mutex<CellState>>,
        pub work: Arc<Mutex<Vec<Work>>>,
        pub stops: Arc<Mutex<Vec<(String, String)>>>,
    }

    impl FakeRep {
        pub async fn start(cell_id: &str, zone: &str, memory_mb: u64) -> FakeRep {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let total = Resources {
                memory_mb,
                disk_mb: 100_000,
                containers: 100,
            };
            let rep = FakeRep {
                url: url.clone(),
                state: Arc::new(Mutex::new(CellState {
                    cell_id: cell_id.into(),
                    rep_url: url,
                    zone: zone.into(),
                    available_resources: total,
                    total_resources: total,
                    lrps: vec![],
                    tasks: vec![],
                    starting_container_count: 0,
                    evacuating: false,
                    placement_tags: vec![],
                })),
                work: Arc::default(),
                stops: Arc::default(),
            };
            let app = Router::new()
                .route("/state", get(state))
                .route("/work", post(work))
                .route("/v1/lrps/{pg}/instances/{ig}/stop", post(stop))
                .with_state(rep.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            rep
        }

        pub fn presence(&self) -> CellPresence {
            let state = self.state.lock().unwrap();
            CellPresence {
                cell_id: state.cell_id.clone(),
                rep_url: self.url.clone(),
                zone: state.zone.clone(),
                capacity: state.total_resources,
                placement_tags: vec![],
            }
        }

        pub fn lrp_work(&self) -> Vec<crate::rep::LrpWork> {
            let work = self.work.lock().unwrap();
            work.iter().flat_map(|w| w.lrps.clone()).collect()
        }
    }

    async fn state(State(rep): State<FakeRep>) -> Json<CellState> {
        Json(rep.state.lock().unwrap().clone())
    }

    async fn work(State(rep): State<FakeRep>, Json(work): Json<Work>) -> Json<Work> {
        {
            let mut state = rep.state.lock().unwrap();
            for lrp in &work.lrps {
                state.available_resources.memory_mb -= u64::from(lrp.desired.memory_mb);
                state.lrps.push(LrpSummary {
                    process_guid: lrp.key.process_guid.clone(),
                    index: lrp.key.index,
                    domain: lrp.key.domain.clone(),
                    instance_guid: lrp.instance_guid.clone(),
                });
            }
            state
                .tasks
                .extend(work.tasks.iter().map(|t| t.task_guid.clone()));
        }
        rep.work.lock().unwrap().push(work);
        Json(Work::default())
    }

    async fn stop(State(rep): State<FakeRep>, Path((pg, ig)): Path<(String, String)>) {
        rep.stops.lock().unwrap().push((pg, ig));
    }
}

#[cfg(test)]
mod tests {
    use super::testing::desired;
    use super::*;

    #[tokio::test]
    async fn records_persist_in_a_sqlite_file() {
        let path = std::env::temp_dir().join(format!("wf-bbs-{}.db", new_guid()));
        records_persist_across_reopens(format!("sqlite://{}?mode=rwc", path.display())).await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn records_persist_in_postgres() {
        if let Some(db) = wf_db::testing::postgres().await {
            records_persist_across_reopens(db.url().to_string()).await;
        }
    }

    async fn records_persist_across_reopens(database_url: String) {
        let config = BbsConfig {
            database_url,
            ..Default::default()
        };
        let bbs = Bbs::open(config.clone(), Bus::in_process()).await.unwrap();
        bbs.desire_lrp(desired("web", 2)).await.unwrap();
        drop(bbs);

        let reopened = Bbs::open(config, Bus::in_process()).await.unwrap();
        let lrp = reopened.desired_lrp_by_process_guid("web").await.unwrap();
        assert_eq!(lrp.instances, 2);
        let actuals = reopened
            .actual_lrps(&ActualLrpFilter::default())
            .await
            .unwrap();
        assert_eq!(actuals.len(), 2);
    }

    #[test]
    fn guids_follow_diego_rules() {
        assert!(validate_guid("process_guid", "abc-123_x").is_ok());
        assert!(validate_guid("process_guid", "").is_err());
        assert!(validate_guid("process_guid", "a/b").is_err());
        assert_eq!(truncate_reason(&"x".repeat(2000)).len(), MAX_REASON_LEN);
    }
}
