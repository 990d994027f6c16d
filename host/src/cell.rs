//! The cell's state: its resources, the containers (ActualLRP instances and Tasks) it
//! holds, and the rep's operations on them (offer work, stop, cancel, bulk sync).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wf_bbs::rep::{CellState, LrpSummary, LrpWork, Work};
use wf_bbs::{
    ActualLrpFilter, ActualLrpInstanceKey, ActualLrpKey, ActualLrpState, BbsClient, CellPresence,
    NetInfo, Resources, Task, TaskFilter, TaskState,
};
use wf_messaging::Bus;

use crate::droplets::DropletCache;
use crate::executor::Executor;
use crate::CellConfig;

/// Time between an evacuating cell's rounds of hand-over calls.
const EVACUATION_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// Below this much free space in its data dir the cell offers no disk to the auction:
/// a full disk fails every staging and instance start there (droplets, packages and
/// instance scratch dirs live on it), so the work must go to other cells until space
/// is freed.
pub const MIN_FREE_DISK_BYTES: u64 = 32 << 20;

/// Where an LRP container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrpPhase {
    /// Resources reserved, ActualLRP not yet claimed.
    Reserved,
    /// Claimed; the instance is being created or is not healthy yet.
    Claimed,
    /// Healthy and reported RUNNING.
    Running,
}

/// The cell's LRP containers by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    pub reserved: u64,
    pub claimed: u64,
    pub running: u64,
}

struct LrpContainer {
    key: ActualLrpKey,
    memory_mb: u64,
    disk_mb: u64,
    phase: LrpPhase,
    net_info: Option<NetInfo>,
    stop: CancellationToken,
}

struct TaskContainer {
    memory_mb: u64,
    disk_mb: u64,
    /// `start_task` succeeded: the BBS knows the task runs here.
    started: bool,
    cancel: CancellationToken,
}

/// One LRP container as a bulk sync or an evacuation sees it: (instance guid, key,
/// phase, net info once running, stop token), read without holding the lock after.
type LrpSnapshot = (
    String,
    ActualLrpKey,
    LrpPhase,
    Option<NetInfo>,
    CancellationToken,
);

fn lrp_snapshot(containers: &Containers) -> Vec<LrpSnapshot> {
    containers
        .lrps
        .iter()
        .map(|(guid, c)| {
            (
                guid.clone(),
                c.key.clone(),
                c.phase,
                c.net_info.clone(),
                c.stop.clone(),
            )
        })
        .collect()
}

/// What `/work` did with one offered LRP or Task.
enum Reservation {
    /// Reserved; the token stops the container.
    New(CancellationToken),
    /// The cell already runs it (the offer was repeated): accepted, not started twice.
    AlreadyHeld,
    /// It does not fit, or the cell is shutting down.
    Refused,
}

#[derive(Default)]
struct Containers {
    /// By instance guid.
    lrps: HashMap<String, LrpContainer>,
    /// By task guid.
    tasks: HashMap<String, TaskContainer>,
}

pub struct Cell {
    pub config: CellConfig,
    pub rep_url: String,
    pub bbs: BbsClient,
    pub bus: Bus,
    pub executor: Executor,
    pub droplets: DropletCache,
    pub http: reqwest::Client,
    pub ports: Arc<crate::instance::PortAllocator>,
    pub metrics: crate::metrics::ContainerMetrics,
    /// App log lines admitted and dropped by the instances' log rate limits.
    pub app_logs: Arc<crate::app_logs::LogCounters>,
    containers: Mutex<Containers>,
    /// Cancelled when the cell shuts down; every container's token is a child.
    shutdown: CancellationToken,
    /// Set by `POST /evacuate`: the cell takes no new work and hands its instances over.
    evacuating: AtomicBool,
    /// Cancelled once an evacuation has handed over or stopped every container.
    pub evacuated: CancellationToken,
    tracker: TaskTracker,
    /// Whether the data dir was found short of [`MIN_FREE_DISK_BYTES`] last time.
    disk_full: AtomicBool,
}

impl Cell {
    pub fn new(
        config: CellConfig,
        rep_url: String,
        bbs: BbsClient,
        bus: Bus,
        executor: Executor,
        http: reqwest::Client,
    ) -> Cell {
        let droplets = DropletCache::new(config.data_dir.join("droplets"), http.clone());
        Cell {
            config,
            rep_url,
            bbs,
            bus,
            executor,
            droplets,
            http,
            ports: Arc::new(crate::instance::PortAllocator::default()),
            metrics: crate::metrics::ContainerMetrics::default(),
            app_logs: Arc::default(),
            containers: Mutex::new(Containers::default()),
            shutdown: CancellationToken::new(),
            evacuating: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            evacuated: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, Containers> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn instance_key(&self, instance_guid: &str) -> ActualLrpInstanceKey {
        ActualLrpInstanceKey {
            instance_guid: instance_guid.to_string(),
            cell_id: self.config.cell_id.clone(),
        }
    }

    pub fn total_resources(&self) -> Resources {
        Resources {
            memory_mb: self.config.memory_mb,
            disk_mb: self.config.disk_mb,
            containers: u64::from(self.config.container_capacity()),
        }
    }

    fn available(&self, containers: &Containers) -> Resources {
        let total = self.total_resources();
        let lrps = containers.lrps.values().map(|c| (c.memory_mb, c.disk_mb));
        let tasks = containers.tasks.values().map(|c| (c.memory_mb, c.disk_mb));
        let (memory, disk, count) = lrps
            .chain(tasks)
            .fold((0u64, 0u64, 0u64), |(m, d, n), (cm, cd)| {
                (m + cm, d + cd, n + 1)
            });
        Resources {
            memory_mb: total.memory_mb.saturating_sub(memory),
            disk_mb: total.disk_mb.saturating_sub(disk),
            containers: total.containers.saturating_sub(count),
        }
    }

    pub fn presence(&self) -> CellPresence {
        CellPresence {
            cell_id: self.config.cell_id.clone(),
            rep_url: self.rep_url.clone(),
            zone: self.config.zone.clone(),
            capacity: self.total_resources(),
            placement_tags: self.config.placement_tags.clone(),
        }
    }

    /// Whether the data dir's file system has less than [`MIN_FREE_DISK_BYTES`] free;
    /// says so in the cell's log when that changes.
    fn data_dir_full(&self) -> bool {
        let free = free_disk_bytes(&self.config.data_dir);
        let full = free.is_some_and(|free| free < MIN_FREE_DISK_BYTES);
        if self.disk_full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::error!(
                    data_dir = %self.config.data_dir.display(),
                    free_bytes = free.unwrap_or(0),
                    "the cell's disk is full: it takes no new work until space is freed"
                );
            } else {
                tracing::warn!(
                    data_dir = %self.config.data_dir.display(),
                    free_bytes = free.unwrap_or(0),
                    "the cell's disk has room again: it takes work"
                );
            }
        }
        full
    }

    /// The rep's `GET /state`.
    pub fn state(&self) -> CellState {
        let containers = self.containers();
        let mut lrps: Vec<LrpSummary> = containers
            .lrps
            .iter()
            .map(|(guid, c)| LrpSummary {
                process_guid: c.key.process_guid.clone(),
                index: c.key.index,
                domain: c.key.domain.clone(),
                instance_guid: guid.clone(),
            })
            .collect();
        lrps.sort_by(|a, b| (&a.process_guid, a.index).cmp(&(&b.process_guid, b.index)));
        let mut tasks: Vec<String> = containers.tasks.keys().cloned().collect();
        tasks.sort();
        let starting = containers
            .lrps
            .values()
            .filter(|c| c.phase != LrpPhase::Running)
            .count();
        let mut available = self.available(&containers);
        if self.data_dir_full() {
            available.disk_mb = 0;
        }
        CellState {
            cell_id: self.config.cell_id.clone(),
            rep_url: self.rep_url.clone(),
            zone: self.config.zone.clone(),
            available_resources: available,
            total_resources: self.total_resources(),
            lrps,
            tasks,
            starting_container_count: u32::try_from(starting).unwrap_or(u32::MAX),
            evacuating: self.evacuating.load(Ordering::Relaxed),
            placement_tags: self.config.placement_tags.clone(),
        }
    }

    /// How many LRP containers are in each phase.
    pub fn phase_counts(&self) -> PhaseCounts {
        self.containers()
            .lrps
            .values()
            .fold(PhaseCounts::default(), |mut counts, c| {
                match c.phase {
                    LrpPhase::Reserved => counts.reserved += 1,
                    LrpPhase::Claimed => counts.claimed += 1,
                    LrpPhase::Running => counts.running += 1,
                }
                counts
            })
    }

    /// The rep's `POST /work`: reserves and starts what fits; answers what did not.
    pub fn perform(self: &Arc<Self>, work: Work) -> Work {
        let mut refused = Work::default();
        for lrp in work.lrps {
            match self.reserve_lrp(&lrp) {
                Reservation::New(stop) => {
                    let cell = self.clone();
                    self.tracker
                        .spawn(crate::instance::run_lrp(cell, lrp, stop));
                }
                Reservation::AlreadyHeld => {}
                Reservation::Refused => refused.lrps.push(lrp),
            }
        }
        for task in work.tasks {
            match self.reserve_task(&task) {
                Reservation::New(cancel) => {
                    let cell = self.clone();
                    self.tracker
                        .spawn(crate::tasks::run_task(cell, task, cancel));
                }
                Reservation::AlreadyHeld => {}
                Reservation::Refused => refused.tasks.push(task),
            }
        }
        refused
    }

    /// Reserves a container for `lrp` unless it does not fit or the cell is stopping
    /// or evacuating.
    fn reserve_lrp(&self, lrp: &LrpWork) -> Reservation {
        if self.shutdown.is_cancelled() || self.evacuating.load(Ordering::Relaxed) {
            return Reservation::Refused;
        }
        let mut containers = self.containers();
        if containers.lrps.contains_key(&lrp.instance_guid) {
            return Reservation::AlreadyHeld;
        }
        let (memory_mb, disk_mb) = (
            u64::from(lrp.desired.memory_mb),
            u64::from(lrp.desired.disk_mb),
        );
        if !fits(&self.available(&containers), memory_mb, disk_mb)
            || (disk_mb > 0 && self.data_dir_full())
        {
            return Reservation::Refused;
        }
        let stop = self.shutdown.child_token();
        containers.lrps.insert(
            lrp.instance_guid.clone(),
            LrpContainer {
                key: lrp.key.clone(),
                memory_mb,
                disk_mb,
                phase: LrpPhase::Reserved,
                net_info: None,
                stop: stop.clone(),
            },
        );
        Reservation::New(stop)
    }

    fn reserve_task(&self, task: &Task) -> Reservation {
        if self.shutdown.is_cancelled() {
            return Reservation::Refused;
        }
        let mut containers = self.containers();
        if containers.tasks.contains_key(&task.task_guid) {
            return Reservation::AlreadyHeld;
        }
        let (memory_mb, disk_mb) = (
            u64::from(task.definition.memory_mb),
            u64::from(task.definition.disk_mb),
        );
        if !fits(&self.available(&containers), memory_mb, disk_mb)
            || (disk_mb > 0 && self.data_dir_full())
        {
            return Reservation::Refused;
        }
        let cancel = self.shutdown.child_token();
        containers.tasks.insert(
            task.task_guid.clone(),
            TaskContainer {
                memory_mb,
                disk_mb,
                started: false,
                cancel: cancel.clone(),
            },
        );
        Reservation::New(cancel)
    }

    pub fn set_lrp_phase(&self, instance_guid: &str, phase: LrpPhase, net_info: Option<NetInfo>) {
        if let Some(c) = self.containers().lrps.get_mut(instance_guid) {
            c.phase = phase;
            c.net_info = net_info;
        }
    }

    pub fn release_lrp(&self, instance_guid: &str) {
        self.containers().lrps.remove(instance_guid);
    }

    pub fn set_task_started(&self, task_guid: &str) {
        if let Some(t) = self.containers().tasks.get_mut(task_guid) {
            t.started = true;
        }
    }

    pub fn release_task(&self, task_guid: &str) {
        self.containers().tasks.remove(task_guid);
    }

    /// The rep's stop: `false` if the cell does not hold that instance.
    pub fn stop_lrp(&self, process_guid: &str, instance_guid: &str) -> bool {
        match self.containers().lrps.get(instance_guid) {
            Some(c) if c.key.process_guid == process_guid => {
                c.stop.cancel();
                true
            }
            _ => false,
        }
    }

    /// The rep's `POST /evacuate` (Diego's drain): from now on the cell takes no new
    /// work, and each instance is handed over through the BBS: a running one keeps
    /// serving as EVACUATING until its replacement runs elsewhere, then stops. Tasks
    /// run to their end. When nothing is left, or after `evacuation_timeout`,
    /// [`Cell::evacuated`] is cancelled (`wfd cell` then exits). Asking again while an
    /// evacuation is under way changes nothing.
    pub fn evacuate(self: &Arc<Self>) {
        if self.evacuating.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::info!(cell_id = %self.config.cell_id, "evacuating");
        let cell = self.clone();
        self.tracker.spawn(async move {
            cell.hand_over_all().await;
            tracing::info!(cell_id = %cell.config.cell_id, "evacuation done");
            cell.evacuated.cancel();
        });
    }

    async fn hand_over_all(&self) {
        let deadline = tokio::time::Instant::now() + self.config.evacuation_timeout;
        loop {
            let (lrps, tasks_left) = {
                let containers = self.containers();
                (lrp_snapshot(&containers), !containers.tasks.is_empty())
            };
            if lrps.is_empty() && !tasks_left {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    instances = lrps.len(),
                    "evacuation timed out; stopping what is left"
                );
                for (_, _, _, _, stop) in lrps {
                    stop.cancel();
                }
                return;
            }
            for (guid, key, phase, net_info, stop) in lrps {
                if phase == LrpPhase::Reserved {
                    // Not claimed yet: convergence auctions it again.
                    stop.cancel();
                    continue;
                }
                let instance_key = self.instance_key(&guid);
                let net_info = net_info.unwrap_or_default();
                match self
                    .bbs
                    .evacuate_actual_lrp(&key, &instance_key, net_info)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(process_guid = %key.process_guid, index = key.index, "handed over; stopping");
                        stop.cancel();
                    }
                    Err(e) => tracing::warn!(error = %e, "evacuating an instance failed; retrying"),
                }
            }
            tokio::time::sleep(EVACUATION_POLL).await;
        }
    }

    /// The rep's task cancel: `false` if the cell does not hold that task.
    pub fn cancel_task(&self, task_guid: &str) -> bool {
        match self.containers().tasks.get(task_guid) {
            Some(t) => {
                t.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Reconciles the cell with the BBS (Diego's rep bulker): records of instances the
    /// cell no longer runs are removed, instances the BBS no longer has are stopped,
    /// running instances the BBS still has as CLAIMED are reported again; likewise
    /// for tasks.
    pub async fn bulk_sync(&self) {
        // Local state first: what the cell had claimed or started before the listings
        // below is what the BBS must know; anything newer may not be listed yet.
        let (local_lrps, local_tasks) = {
            let containers = self.containers();
            let lrps = lrp_snapshot(&containers);
            let tasks: Vec<(String, bool, CancellationToken)> = containers
                .tasks
                .iter()
                .map(|(g, t)| (g.clone(), t.started, t.cancel.clone()))
                .collect();
            (lrps, tasks)
        };
        let cell_id = self.config.cell_id.clone();
        let filter = ActualLrpFilter {
            cell_id: Some(cell_id.clone()),
            ..Default::default()
        };
        match self.bbs.actual_lrps(&filter).await {
            Ok(actuals) => {
                // What the BBS lists as ours is judged against the containers as they
                // are now, not the snapshot: the cell reserves a container before it
                // claims it, so one claimed since the snapshot is listed but missing
                // from it, and would be removed.
                let local: HashSet<String> = self.containers().lrps.keys().cloned().collect();
                for actual in &actuals {
                    let ours = actual.instance_key.cell_id == cell_id;
                    let live = matches!(
                        actual.state,
                        ActualLrpState::Claimed | ActualLrpState::Running
                    );
                    if ours && live && !local.contains(actual.instance_key.instance_guid.as_str()) {
                        tracing::info!(process_guid = %actual.key.process_guid, index = actual.key.index,
                            "removing ActualLRP whose instance is gone from this cell");
                        if let Err(e) = self
                            .bbs
                            .remove_actual_lrp(&actual.key, &actual.instance_key)
                            .await
                        {
                            tracing::warn!(error = %e, "bulk sync: removing ActualLRP failed");
                        }
                    }
                }
                for (guid, key, phase, net_info, stop) in &local_lrps {
                    if *phase == LrpPhase::Reserved {
                        continue;
                    }
                    let record = actuals.iter().find(|a| {
                        a.instance_key.instance_guid == *guid && a.instance_key.cell_id == cell_id
                    });
                    match (record, net_info) {
                        (None, _) => {
                            tracing::info!(%guid, "stopping instance the BBS no longer has");
                            stop.cancel();
                        }
                        (Some(a), Some(net_info))
                            if *phase == LrpPhase::Running
                                && a.state == ActualLrpState::Claimed =>
                        {
                            let ik = self.instance_key(guid);
                            if let Err(e) =
                                self.bbs.start_actual_lrp(key, &ik, net_info.clone()).await
                            {
                                tracing::warn!(error = %e, "bulk sync: reporting a running instance failed");
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "bulk sync: listing ActualLRPs failed"),
        }

        let filter = TaskFilter {
            cell_id: Some(cell_id.clone()),
            ..Default::default()
        };
        match self.bbs.tasks(&filter).await {
            Ok(tasks) => self.sync_tasks(&tasks, &local_tasks).await,
            Err(e) => tracing::warn!(error = %e, "bulk sync: listing tasks failed"),
        }
    }

    /// The tasks half of a bulk sync: `tasks` as the BBS listed them for this cell, and
    /// `snapshot` the cell's own from before that listing.
    async fn sync_tasks(&self, tasks: &[Task], snapshot: &[(String, bool, CancellationToken)]) {
        let cell_id = &self.config.cell_id;
        // A task the BBS runs here but the cell does not hold is lost: judged against
        // the tasks the cell holds now, after the listing. The cell reserves a task
        // before it starts it in the BBS, so one started since the snapshot is here now
        // (against the snapshot it looked lost, and a staging under load failed with
        // "cell no longer runs the task" as it began).
        let local: HashSet<String> = self.containers().tasks.keys().cloned().collect();
        for task in tasks
            .iter()
            .filter(|t| t.state == TaskState::Running && t.cell_id == *cell_id)
        {
            if !local.contains(task.task_guid.as_str()) {
                let failed = self
                    .bbs
                    .complete_task(
                        &task.task_guid,
                        cell_id,
                        true,
                        "cell no longer runs the task",
                        "",
                    )
                    .await;
                if let Err(e) = failed {
                    tracing::warn!(error = %e, "bulk sync: failing a lost task failed");
                }
            }
        }
        // A task the cell had started before the listing but the BBS no longer runs
        // here is cancelled: judged against the snapshot, since one started after it
        // may not be in the listing yet.
        for (guid, started, cancel) in snapshot {
            let running_here = tasks
                .iter()
                .any(|t| t.task_guid == *guid && t.state == TaskState::Running);
            if *started && !running_here {
                tracing::info!(task_guid = %guid, "cancelling task the BBS no longer runs here");
                cancel.cancel();
            }
        }
    }

    /// Stops every container, waits for them (bounded), and closes the task tracker.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("cell containers did not stop within {grace:?}");
        }
    }
}

fn fits(available: &Resources, memory_mb: u64, disk_mb: u64) -> bool {
    available.containers >= 1 && available.memory_mb >= memory_mb && available.disk_mb >= disk_mb
}

/// The bytes an unprivileged process may still write on `dir`'s file system; `None` if
/// it cannot be told.
pub fn free_disk_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct it is given and reads the C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_space_of_a_data_dir_is_known() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_disk_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(free_disk_bytes(&dir.path().join("missing")), None);
    }

    #[test]
    fn work_fits_only_within_every_resource() {
        let available = Resources {
            memory_mb: 512,
            disk_mb: 1024,
            containers: 1,
        };
        assert!(fits(&available, 512, 1024));
        assert!(!fits(&available, 513, 1));
        assert!(!fits(&available, 1, 1025));
        assert!(!fits(
            &Resources {
                containers: 0,
                ..available
            },
            1,
            1
        ));
    }

    /// A bulk sync whose snapshot predates a task's start (the task was reserved and
    /// started in the BBS between the snapshot and the listing, as under load) leaves
    /// the task running instead of failing it as lost.
    #[tokio::test]
    async fn a_task_started_after_the_sync_snapshot_is_not_failed_as_lost() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bus = Bus::in_process();
        let config = wf_bbs::BbsConfig {
            database_url: format!("sqlite://{}?mode=rwc", dir.path().join("bbs.db").display()),
            ..Default::default()
        };
        let bbs = wf_bbs::Bbs::open(config, bus.clone()).await.expect("BBS");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let served = tokio::spawn({
            let (bbs, stop) = (bbs.clone(), stop.clone());
            async move { bbs.serve(listener, stop).await }
        });
        let client = BbsClient::new(vec![url]).expect("client");
        let config = CellConfig {
            cell_id: "cell-sync".into(),
            data_dir: dir.path().join("cell"),
            ..Default::default()
        };
        let executor = Executor::new().expect("executor");
        let cell = Cell::new(
            config,
            "http://127.0.0.1:9".into(),
            client.clone(),
            bus,
            executor,
            reqwest::Client::new(),
        );
        let definition = wf_bbs::TaskDefinition {
            memory_mb: 64,
            disk_mb: 64,
            action: wf_bbs::TaskAction::Run(wf_bbs::RunAction {
                droplet_uri: "http://127.0.0.1:9/droplet".into(),
                droplet_sha256: "0".repeat(64),
                command: String::new(),
                env: Vec::new(),
                log_rate_limit_bytes_per_second: None,
            }),
            log_guid: "app".into(),
            log_source: "APP/TASK/t".into(),
            annotation: String::new(),
            placement_tags: Vec::new(),
        };
        client
            .desire_task("task-1", "cf-tasks", definition)
            .await
            .expect("desire");

        // The snapshot, then the task's reservation and start, then the listing.
        let snapshot = Vec::new();
        let task = client.task_by_guid("task-1").await.expect("task");
        assert!(matches!(cell.reserve_task(&task), Reservation::New(_)));
        assert!(client
            .start_task("task-1", "cell-sync")
            .await
            .expect("start"));
        cell.set_task_started("task-1");
        let filter = TaskFilter {
            cell_id: Some("cell-sync".into()),
            ..Default::default()
        };
        let listed = client.tasks(&filter).await.expect("list");
        cell.sync_tasks(&listed, &snapshot).await;
        let task = client.task_by_guid("task-1").await.expect("task");
        assert_eq!(task.state, TaskState::Running, "{task:?}");

        // Once the cell no longer holds it, it is lost indeed.
        cell.release_task("task-1");
        cell.sync_tasks(&listed, &snapshot).await;
        let task = client.task_by_guid("task-1").await.expect("task");
        assert!(task.failed, "{task:?}");
        assert_eq!(task.failure_reason, "cell no longer runs the task");
        stop.cancel();
        let _ = served.await;
    }
}
