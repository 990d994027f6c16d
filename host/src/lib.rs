//! The cell: a rep (Diego's cell agent) in front of a wasmtime executor. It keeps its
//! presence in the BBS, answers the auctioneer (`/state`, `/work`), runs ActualLRPs and
//! staging Tasks as wasm instances, health-checks them and reports their lifecycle.
//!
//! - `rep`: the rep's HTTP API;
//! - `cell`: resources, containers, and the bulk sync with the BBS;
//! - `instance`: one ActualLRP instance from claim to crash or removal;
//! - `tasks` and `stager`: Tasks, staging among them;
//! - `executor`: wasmtime (one pooling engine), compiled-component cache, running an
//!   instance; `compiled`: compiled artifacts on disk;
//! - `sandbox`: what an instance may reach (network by security groups, `/app`,
//!   `/tmp`) and its memory and disk quotas; `app_logs`: its log rate limit;
//! - `handler`: `wasi:http` handler apps, served by the cell, an instance per request
//!   (reused across requests only when the app asks for it);
//! - `droplets`: the droplet download cache;
//! - `metrics`: container metrics (cpu, memory, disk) as gauges and `/container_metrics`;
//!   `prometheus`: the rep's `/metrics`, the cell's totals.
//!
//! `executor`, `handler` and `sandbox` are public for the benchmarks in `benches/`.

mod app_logs;
mod cell;
mod compiled;
mod droplets;
pub mod executor;
pub mod handler;
mod instance;
mod metrics;
mod prometheus;
mod rep;
pub mod sandbox;
mod stager;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wf_bbs::BbsClient;
use wf_messaging::Bus;

use crate::cell::Cell;

#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("cell I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("wasm runtime error: {0}")]
    Runtime(String),
    #[error(transparent)]
    Bbs(#[from] wf_bbs::BbsError),
}

#[derive(Debug, Clone)]
pub struct CellConfig {
    pub cell_id: String,
    pub zone: String,
    /// Droplet cache and instance directories.
    pub data_dir: PathBuf,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// A cap on the containers the cell takes; `None` (the default) derives it from
    /// the cell's memory and the pooling allocator's slots
    /// ([`CellConfig::container_capacity`]).
    pub max_containers: Option<u32>,
    /// The address instances are reached at (what goes into `router.register`).
    pub advertise_address: String,
    /// How often the cell refreshes its presence (Locket: 5 s).
    pub presence_interval: Duration,
    /// How long the presence lives without a refresh (Locket: 15 s).
    pub presence_ttl: Duration,
    /// Time between bulk syncs with the BBS (Diego's rep: 30 s).
    pub bulk_sync_interval: Duration,
    /// How long containers get to stop when the cell shuts down.
    pub shutdown_grace: Duration,
    /// How long an evacuation may take before what is left is stopped (Diego: 600 s).
    pub evacuation_timeout: Duration,
    /// How long a stopping instance may take before it is killed (Diego's graceful
    /// shutdown interval, CF's 10 s between SIGTERM and SIGKILL): a handler app's
    /// requests in flight may finish within it.
    pub graceful_shutdown_interval: Duration,
    /// How long a stopping server instance keeps running after its ActualLRP is
    /// removed, so that the route-emitter unregisters it and routers stop sending to
    /// it before it goes (wasm has no SIGTERM to handle); bounded by
    /// `graceful_shutdown_interval`. Default 1 s.
    pub stop_drain: Duration,
    /// How often every instance's container metrics go to loggregator (Diego's rep:
    /// 15 s).
    pub container_metrics_interval: Duration,
    /// Where instances may connect to, until per-app security groups come from the
    /// Cloud Controller: CF's default running groups, `public_networks` and `dns`
    /// ([`sandbox::default_security_groups`]). Loopback, link-local and the cell's own
    /// address stay closed unless a rule names them.
    pub security_groups: Vec<sandbox::SecurityGroupRule>,
    /// The cell's placement tags: only LRPs and Tasks that ask for all of them (an
    /// isolation segment) are placed here.
    pub placement_tags: Vec<String>,
    /// Where buildpacks install their build tools (componentizers, compilers), kept
    /// across stagings; `None` means `data_dir/buildpack-tools`. Default:
    /// `$WF_BUILDPACK_TOOLS_DIR` if set, so that the cells of one machine (a test
    /// platform's) share one install.
    pub buildpack_tools_dir: Option<PathBuf>,
    /// Mutual TLS for the rep API (Diego's reps serve mTLS to the BBS); `None`: plain
    /// HTTP, as in `wfd dev` on loopback.
    pub mutual_tls: Option<wf_bbs::mtls::MutualTls>,
}

/// Address space one pool slot reserves: a 4 GiB linear memory (so bounds checks stay
/// elided) and wasmtime's 32 MiB guard.
const SLOT_ADDRESS_SPACE: u64 = (4 << 30) + (32 << 20);
/// The part of the 47-bit (128 TiB) user address space the pool may reserve: half,
/// leaving the rest to the heap, stacks, compiled code and the kernel's mappings.
const POOL_ADDRESS_SPACE: u64 = 64 << 40;
/// Pool slots the address space allows ([`POOL_ADDRESS_SPACE`] / [`SLOT_ADDRESS_SPACE`]).
pub const MAX_INSTANCE_SLOTS: u32 = (POOL_ADDRESS_SPACE / SLOT_ADDRESS_SPACE) as u32;
/// Pool slots kept beyond the containers for handler requests in flight (each holds
/// a slot for its duration; a server or task holds one for its life).
pub const REQUEST_SLOTS: u32 = 1_000;
/// The least memory a container counts for in the cell's container capacity: about
/// what an idle server instance keeps resident (its touched linear memory, its WASI
/// context and task); an idle handler app costs far less.
pub const MIN_CONTAINER_MEMORY_MB: u64 = 2;

impl CellConfig {
    /// How many containers (LRP instances and tasks) the cell takes: `max_containers`
    /// if set, else as many as its memory holds at [`MIN_CONTAINER_MEMORY_MB`] each,
    /// within the pool slots left after [`REQUEST_SLOTS`]. Every container also needs
    /// its memory quota from `memory_mb`, which the auction checks on its own.
    pub fn container_capacity(&self) -> u32 {
        self.max_containers.unwrap_or_else(|| {
            let by_memory = self.memory_mb / MIN_CONTAINER_MEMORY_MB;
            let by_slots = MAX_INSTANCE_SLOTS - REQUEST_SLOTS;
            u32::try_from(by_memory).unwrap_or(u32::MAX).min(by_slots)
        })
    }

    /// The executor's pool slots: one per container, plus [`REQUEST_SLOTS`] for
    /// handler requests in flight, within what the address space allows.
    pub fn instance_slots(&self) -> u32 {
        self.container_capacity()
            .saturating_add(REQUEST_SLOTS)
            .min(MAX_INSTANCE_SLOTS)
    }
}

impl Default for CellConfig {
    fn default() -> Self {
        CellConfig {
            cell_id: "cell-0".into(),
            zone: "z1".into(),
            data_dir: PathBuf::from("cell"),
            memory_mb: 16_384,
            disk_mb: 65_536,
            max_containers: None,
            advertise_address: "127.0.0.1".into(),
            presence_interval: Duration::from_secs(5),
            presence_ttl: Duration::from_secs(15),
            bulk_sync_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            evacuation_timeout: Duration::from_secs(600),
            graceful_shutdown_interval: Duration::from_secs(10),
            stop_drain: Duration::from_secs(1),
            container_metrics_interval: Duration::from_secs(15),
            security_groups: sandbox::default_security_groups(),
            placement_tags: Vec::new(),
            buildpack_tools_dir: std::env::var_os("WF_BUILDPACK_TOOLS_DIR").map(PathBuf::from),
            mutual_tls: None,
        }
    }
}

/// Runs the cell until cancelled: rep API on `rep_listener`, presence, bulk sync.
/// On cancel it stops every instance (removing its ActualLRP) and its presence.
pub async fn run(
    config: CellConfig,
    rep_listener: TcpListener,
    bbs: BbsClient,
    bus: Bus,
    cancel: CancellationToken,
) -> Result<(), CellError> {
    let addr = rep_listener.local_addr()?;
    let scheme = wf_bbs::mtls::scheme(config.mutual_tls.as_ref());
    let rep_url = if addr.ip().is_unspecified() {
        format!("{scheme}://{}:{}", config.advertise_address, addr.port())
    } else {
        format!("{scheme}://{addr}")
    };
    // Instance and staging scratch space from a previous run is garbage now.
    for scratch in ["instances", "staging"] {
        let dir = config.data_dir.join(scratch);
        if tokio::fs::try_exists(&dir).await? {
            tokio::fs::remove_dir_all(&dir).await?;
        }
    }
    tokio::fs::create_dir_all(&config.data_dir).await?;
    let executor = executor::Executor::with_config(executor::ExecutorConfig {
        compiled_dir: Some(config.data_dir.join("compiled")),
        instance_slots: config.instance_slots(),
        ..executor::ExecutorConfig::default()
    })
    .map_err(|e| CellError::Runtime(e.to_string()))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CellError::Runtime(format!("creating the HTTP client: {e}")))?;
    let cell = Arc::new(Cell::new(config, rep_url, bbs, bus, executor, http));
    tracing::info!(cell_id = %cell.config.cell_id, rep_url = %cell.rep_url, "cell started");

    // Stops the loops when the rep server ends, whether cancelled or failed.
    let stopping = cancel.child_token();
    let presence = tokio::spawn(presence_loop(cell.clone(), stopping.clone()));
    let sync = tokio::spawn(bulk_sync_loop(cell.clone(), stopping.clone()));
    let metrics = tokio::spawn(metrics::emit_loop(cell.clone(), stopping.clone()));
    // An evacuated cell stops as a cancelled one does: its work is elsewhere now.
    let (shutdown, evacuated) = (stopping.clone(), cell.evacuated.clone());
    let tls = cell.config.mutual_tls.clone();
    let served = wf_bbs::mtls::serve(
        rep_listener,
        rep::router(cell.clone()),
        tls.as_ref(),
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = evacuated.cancelled() => {}
            }
        },
    )
    .await;
    stopping.cancel();
    let _ = tokio::join!(presence, sync, metrics);

    cell.shutdown(cell.config.shutdown_grace).await;
    if let Err(e) = cell.bbs.remove_cell_presence(&cell.config.cell_id).await {
        tracing::warn!(error = %e, "removing cell presence failed");
    }
    tracing::info!(cell_id = %cell.config.cell_id, "cell stopped");
    served.map_err(CellError::Io)
}

/// Keeps the cell's presence fresh until `stop`.
async fn presence_loop(cell: Arc<Cell>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(cell.config.presence_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let presence = cell.presence();
        let refreshed = tokio::time::timeout(
            cell.config.presence_interval,
            cell.bbs
                .set_cell_presence(&presence, cell.config.presence_ttl),
        );
        match refreshed.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "refreshing cell presence failed"),
            Err(_) => tracing::warn!("refreshing cell presence timed out"),
        }
    }
}

/// Bulk-syncs with the BBS at start and every interval until `stop`.
async fn bulk_sync_loop(cell: Arc<Cell>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(cell.config.bulk_sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = cell.bulk_sync() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_capacity_comes_from_memory_and_pool_slots_unless_capped() {
        // 16,256 slots of 4 GiB + 32 MiB in 64 TiB.
        assert_eq!(MAX_INSTANCE_SLOTS, 16_256);
        let small = CellConfig {
            memory_mb: 4_096,
            ..CellConfig::default()
        };
        assert_eq!(small.container_capacity(), 2_048);
        assert_eq!(small.instance_slots(), 2_048 + REQUEST_SLOTS);
        let this_machine = CellConfig {
            memory_mb: 24 * 1_024,
            ..CellConfig::default()
        };
        assert_eq!(this_machine.container_capacity(), 12_288);
        // 64 GiB: the pool's slots bound it, with room left for requests in flight.
        let large = CellConfig {
            memory_mb: 64 * 1_024,
            ..CellConfig::default()
        };
        assert_eq!(
            large.container_capacity(),
            MAX_INSTANCE_SLOTS - REQUEST_SLOTS
        );
        assert_eq!(large.instance_slots(), MAX_INSTANCE_SLOTS);
        let capped = CellConfig {
            max_containers: Some(250),
            ..large
        };
        assert_eq!(capped.container_capacity(), 250);
        assert_eq!(capped.instance_slots(), 250 + REQUEST_SLOTS);
    }
}
