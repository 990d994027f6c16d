//! Diego's BBS: the DesiredLRP, ActualLRP and Task records, convergence, the auction
//! that places work on cells, cell presence and locks (Locket), and the route-emitter.
//!
//! [`Bbs`] is the service layer over the BBS database; the controller, the cells and
//! the background loops ([`Bbs::run`]) all go through it.

pub mod models;
pub mod rep;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;

pub use models::*;

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
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// BBS settings; defaults are Diego's.
#[derive(Debug, Clone)]
pub struct BbsConfig {
    /// `sqlite://path/bbs.db?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// Time between convergence passes (Diego: 30 s).
    pub convergence_interval: Duration,
    /// An UNCLAIMED ActualLRP older than this is auctioned again (Diego: 30 s).
    pub unclaimed_retry: Duration,
    /// How often the route-emitter re-publishes every route (CF: 20 s).
    pub register_interval: Duration,
    /// Timeout of each call to a rep (Diego: 10 s for state fetches).
    pub rep_timeout: Duration,
}

impl Default for BbsConfig {
    fn default() -> Self {
        BbsConfig {
            database_url: "sqlite::memory:".to_string(),
            convergence_interval: Duration::from_secs(30),
            unclaimed_retry: Duration::from_secs(30),
            register_interval: Duration::from_secs(20),
            rep_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredLrpFilter {
    pub domain: Option<String>,
    pub process_guids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActualLrpFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
    pub process_guid: Option<String>,
    pub index: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
}

/// The BBS service.
pub struct Bbs {
    _private: (),
}

#[allow(unused_variables)]
impl Bbs {
    /// Connects to the database, runs migrations, and returns the service. Background
    /// work starts with [`Bbs::run`].
    pub async fn open(config: BbsConfig, bus: Bus) -> Result<Arc<Bbs>, BbsError> {
        todo!()
    }

    /// Runs convergence, the auctioneer and the route-emitter until `cancel`.
    pub fn run(self: &Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        todo!()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BbsEvent> {
        todo!()
    }

    // --- DesiredLRPs ---

    /// Creates the DesiredLRP and its UNCLAIMED ActualLRPs, and asks for their auction.
    pub async fn desire_lrp(&self, lrp: DesiredLrp) -> Result<(), BbsError> {
        todo!()
    }

    /// Scales (creating or retiring ActualLRPs at once), re-routes or re-annotates.
    pub async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: DesiredLrpUpdate,
    ) -> Result<(), BbsError> {
        todo!()
    }

    /// Removes the DesiredLRP and retires all of its ActualLRPs.
    pub async fn remove_desired_lrp(&self, process_guid: &str) -> Result<(), BbsError> {
        todo!()
    }

    pub async fn desired_lrps(&self, filter: &DesiredLrpFilter) -> Result<Vec<DesiredLrp>, BbsError> {
        todo!()
    }

    pub async fn desired_lrp_by_process_guid(&self, process_guid: &str) -> Result<DesiredLrp, BbsError> {
        todo!()
    }

    // --- ActualLRPs (called by reps) ---

    pub async fn actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>, BbsError> {
        todo!()
    }

    pub async fn claim_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        todo!()
    }

    pub async fn start_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: NetInfo,
    ) -> Result<(), BbsError> {
        todo!()
    }

    /// Records a crash and applies CF's restart rule (immediate restart for the first
    /// crashes, then backoff; never after 200).
    pub async fn crash_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<(), BbsError> {
        todo!()
    }

    /// Removes the ActualLRP held by `instance_key` (the instance stopped on its cell).
    pub async fn remove_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        todo!()
    }

    // --- Tasks ---

    pub async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        definition: TaskDefinition,
    ) -> Result<(), BbsError> {
        todo!()
    }

    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, BbsError> {
        todo!()
    }

    pub async fn task_by_guid(&self, task_guid: &str) -> Result<Task, BbsError> {
        todo!()
    }

    /// PENDING -> RUNNING on `cell_id`; `Ok(false)` if it already runs there.
    pub async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool, BbsError> {
        todo!()
    }

    pub async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<(), BbsError> {
        todo!()
    }

    /// Cancels a task: it completes as failed ("task was cancelled") and its cell stops it.
    pub async fn cancel_task(&self, task_guid: &str) -> Result<(), BbsError> {
        todo!()
    }

    /// COMPLETED -> RESOLVING: the consumer took the result.
    pub async fn resolving_task(&self, task_guid: &str) -> Result<(), BbsError> {
        todo!()
    }

    /// Deletes a RESOLVING task.
    pub async fn delete_task(&self, task_guid: &str) -> Result<(), BbsError> {
        todo!()
    }

    // --- Domains and cells ---

    pub async fn upsert_domain(&self, domain: &str, ttl: Duration) -> Result<(), BbsError> {
        todo!()
    }

    /// The domains that are fresh now.
    pub async fn domains(&self) -> Result<Vec<String>, BbsError> {
        todo!()
    }

    /// Creates or refreshes a cell's presence, which expires after `ttl`.
    pub async fn set_cell_presence(&self, presence: &CellPresence, ttl: Duration) -> Result<(), BbsError> {
        todo!()
    }

    pub async fn remove_cell_presence(&self, cell_id: &str) -> Result<(), BbsError> {
        todo!()
    }

    /// Cells whose presence has not expired.
    pub async fn cells(&self) -> Result<Vec<CellPresence>, BbsError> {
        todo!()
    }

    /// One convergence pass (the loop in [`Bbs::run`] calls it every interval).
    pub async fn converge(&self) -> Result<(), BbsError> {
        todo!()
    }
}
