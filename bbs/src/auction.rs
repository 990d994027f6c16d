//! The auctioneer: batches the ActualLRPs and Tasks waiting for a cell, fetches every
//! present cell's state from its rep, scores the cells as Diego does, sends each cell
//! its [`Work`], and records what could not be placed (`placement_error` on the
//! ActualLRP; a rejection for a Task).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::models::*;
use crate::rep::{CellState, LrpWork, Work};
use crate::{db, new_guid, now_ns, task, truncate_reason, Bbs, BbsError, Changes};

/// Requests arriving this close together go into one auction.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Weight of a cell's starting containers in an LRP's score.
const STARTING_CONTAINER_WEIGHT: f64 = 0.25;
/// Penalty per instance of the same process (or per task) already on a cell.
const SAME_WORK_PENALTY: f64 = 1000.0;
/// A task rejected this many times fails.
pub(crate) const MAX_TASK_REJECTIONS: u32 = 3;

const NO_CELL: &str = "found no compatible cell";
const CELL_COMMUNICATION: &str = "unable to communicate to compatible cells";

/// What waits for the next auction; filled by writers, drained by [`run`].
#[derive(Default)]
pub(crate) struct Queue {
    batch: Mutex<Batch>,
    notify: Notify,
}

#[derive(Default)]
pub(crate) struct Batch {
    lrps: HashSet<ActualLrpKey>,
    tasks: HashSet<String>,
}

impl Queue {
    pub(crate) fn push(
        &self,
        lrps: impl IntoIterator<Item = ActualLrpKey>,
        tasks: impl IntoIterator<Item = String>,
    ) {
        let mut added = false;
        {
            let mut batch = self.lock();
            for key in lrps {
                added |= batch.lrps.insert(key);
            }
            for guid in tasks {
                added |= batch.tasks.insert(guid);
            }
        }
        if added {
            self.notify.notify_one();
        }
    }

    fn take(&self) -> Batch {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The auction loop: one auction per batch until `cancel`.
pub(crate) async fn run(bbs: Arc<Bbs>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = bbs.auction.notify.notified() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(BATCH_WINDOW) => {}
        }
        let batch = bbs.auction.take();
        if let Err(e) = bbs.auction_batch(batch).await {
            tracing::warn!(error = %e, "auction failed; convergence retries it");
        }
    }
}

/// An UNCLAIMED ActualLRP to place, with its DesiredLRP.
#[derive(Debug, Clone)]
pub(crate) struct LrpRequest {
    pub key: ActualLrpKey,
    pub desired: Arc<DesiredLrp>,
}

/// The outcome of scheduling: the work for each cell (same order as the cells) and what
/// found no cell, with why.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    pub work: Vec<Work>,
    pub failed_lrps: Vec<(ActualLrpKey, String)>,
    pub failed_tasks: Vec<(String, String)>,
}

impl Bbs {
    async fn auction_batch(&self, batch: Batch) -> Result<(), BbsError> {
        let (lrps, tasks) = self.waiting_work(batch).await?;
        if lrps.is_empty() && tasks.is_empty() {
            return Ok(());
        }
        self.counters.auction(lrps.len(), tasks.len());
        let presences = self.cells().await?;
        let states =
            futures::future::join_all(presences.iter().map(|cell| self.rep.state(&cell.rep_url)))
                .await;
        let mut cells = Vec::new();
        for (presence, state) in presences.iter().zip(states) {
            match state {
                Ok(state) if state.evacuating => {}
                Ok(mut state) => {
                    state.rep_url = presence.rep_url.clone();
                    cells.push(state);
                }
                Err(e) => {
                    tracing::warn!(cell_id = %presence.cell_id, error = %e, "cell state unavailable")
                }
            }
        }
        let schedule = if cells.is_empty() {
            let reason = if presences.is_empty() {
                NO_CELL
            } else {
                CELL_COMMUNICATION
            };
            all_failed(lrps, tasks, reason)
        } else {
            schedule(&mut cells, lrps, tasks)
        };
        let Schedule {
            work,
            mut failed_lrps,
            mut failed_tasks,
        } = schedule;

        let sends = cells
            .iter()
            .zip(&work)
            .filter(|(_, work)| !work.is_empty())
            .map(|(cell, work)| async move {
                (cell, work, self.rep.perform(&cell.rep_url, work).await)
            });
        for (cell, work, result) in futures::future::join_all(sends).await {
            let (refused, reason) = match result {
                Ok(refused) => (refused, format!("cell {} refused the work", cell.cell_id)),
                Err(e) => {
                    tracing::warn!(cell_id = %cell.cell_id, error = %e, "cannot send work to the cell");
                    (work.clone(), CELL_COMMUNICATION.to_string())
                }
            };
            failed_lrps.extend(refused.lrps.into_iter().map(|l| (l.key, reason.clone())));
            failed_tasks.extend(
                refused
                    .tasks
                    .into_iter()
                    .map(|t| (t.task_guid, reason.clone())),
            );
        }
        self.counters
            .placement_failures(failed_lrps.len(), failed_tasks.len());
        self.record_placement_failures(failed_lrps, failed_tasks)
            .await
    }

    /// The batch's ActualLRPs that are still UNCLAIMED and desired, and its Tasks that are
    /// still PENDING. LRPs are looked up per process: its DesiredLRP and its UNCLAIMED
    /// indices, one statement each.
    async fn waiting_work(&self, batch: Batch) -> Result<(Vec<LrpRequest>, Vec<Task>), BbsError> {
        let mut conn = self.pool.acquire().await?;
        let mut by_process: HashMap<String, Vec<ActualLrpKey>> = HashMap::new();
        for key in batch.lrps {
            by_process
                .entry(key.process_guid.clone())
                .or_default()
                .push(key);
        }
        let mut lrps = Vec::new();
        for (process_guid, keys) in by_process {
            let Some(desired) = db::desired_lrp(&mut conn, &process_guid).await? else {
                continue;
            };
            let unclaimed: HashSet<ActualLrpKey> =
                db::unclaimed_actual_lrp_keys(&mut conn, Some(&process_guid))
                    .await?
                    .into_iter()
                    .collect();
            let desired = Arc::new(desired);
            lrps.extend(
                keys.into_iter()
                    .filter(|key| key.index < desired.instances && unclaimed.contains(key))
                    .map(|key| LrpRequest {
                        key,
                        desired: desired.clone(),
                    }),
            );
        }
        let mut tasks = Vec::new();
        for guid in batch.tasks {
            if let Some(task) = db::task(&mut conn, &guid).await? {
                if task.state == TaskState::Pending {
                    tasks.push(task);
                }
            }
        }
        Ok((lrps, tasks))
    }

    /// Sets `placement_error` on ActualLRPs still UNCLAIMED; rejects Tasks still PENDING
    /// (a Task rejected [`MAX_TASK_REJECTIONS`] times fails with the reason).
    async fn record_placement_failures(
        &self,
        lrps: Vec<(ActualLrpKey, String)>,
        tasks: Vec<(String, String)>,
    ) -> Result<(), BbsError> {
        if lrps.is_empty() && tasks.is_empty() {
            return Ok(());
        }
        let now = now_ns();
        let mut changes = Changes::default();
        {
            let mut tx = self.writer.begin().await?;
            for (key, reason) in lrps {
                tracing::info!(process_guid = %key.process_guid, index = key.index, %reason, "ActualLRP not placed");
                let Some(mut actual) = db::actual_lrp(&mut tx, &key).await? else {
                    continue;
                };
                let reason = truncate_reason(&reason);
                if actual.state != ActualLrpState::Unclaimed || actual.placement_error == reason {
                    continue;
                }
                let before = actual.clone();
                actual.placement_error = reason;
                actual.modification_tag.index += 1;
                db::put_actual_lrp(&mut tx, &actual).await?;
                changes.events.push(BbsEvent::ActualLrpChanged {
                    before,
                    after: actual,
                });
            }
            for (guid, reason) in tasks {
                tracing::info!(task_guid = %guid, %reason, "Task not placed");
                let Some(mut task) = db::task(&mut tx, &guid).await? else {
                    continue;
                };
                if task.state != TaskState::Pending {
                    continue;
                }
                let before = task.clone();
                task.rejection_count += 1;
                task.updated_at = now;
                if task.rejection_count >= MAX_TASK_REJECTIONS {
                    task::complete(&mut task, true, &reason, now);
                }
                db::put_task(&mut tx, &task).await?;
                changes.events.push(BbsEvent::TaskChanged {
                    before,
                    after: task,
                });
            }
            tx.commit().await?;
        }
        self.apply(changes);
        Ok(())
    }
}

fn all_failed(lrps: Vec<LrpRequest>, tasks: Vec<Task>, reason: &str) -> Schedule {
    Schedule {
        work: Vec::new(),
        failed_lrps: lrps
            .into_iter()
            .map(|l| (l.key, reason.to_string()))
            .collect(),
        failed_tasks: tasks
            .into_iter()
            .map(|t| (t.task_guid, reason.to_string()))
            .collect(),
    }
}

/// Places the batch on `cells`, updating their state as it goes so later placements see
/// earlier ones. Order as Diego: index-0 LRPs, then tasks by memory (largest first),
/// then the other LRPs.
pub(crate) fn schedule(
    cells: &mut [CellState],
    lrps: Vec<LrpRequest>,
    mut tasks: Vec<Task>,
) -> Schedule {
    let mut out = Schedule {
        work: vec![Work::default(); cells.len()],
        ..Default::default()
    };
    let mut placements = Placements::new(cells);
    let (first, mut rest): (Vec<_>, Vec<_>) = lrps.into_iter().partition(|l| l.key.index == 0);
    rest.sort_by(|a, b| {
        (a.key.index, &a.key.process_guid).cmp(&(b.key.index, &b.key.process_guid))
    });
    tasks.sort_by(|a, b| b.definition.memory_mb.cmp(&a.definition.memory_mb));

    let place_lrp = |cells: &mut [CellState],
                     placements: &mut Placements,
                     lrp: LrpRequest,
                     out: &mut Schedule| {
        match pick_cell_for_lrp(cells, placements, &lrp.desired) {
            Ok(i) => {
                reserve(&mut cells[i], lrp.desired.memory_mb, lrp.desired.disk_mb);
                placements.placed(&lrp.key.process_guid, i, cells.len());
                out.work[i].lrps.push(LrpWork {
                    key: lrp.key,
                    instance_guid: new_guid(),
                    desired: (*lrp.desired).clone(),
                });
            }
            Err(reason) => out.failed_lrps.push((lrp.key, reason)),
        }
    };
    for lrp in first {
        place_lrp(cells, &mut placements, lrp, &mut out);
    }
    for task in tasks {
        match pick_cell_for_task(cells, &task.definition) {
            Ok(i) => {
                reserve(
                    &mut cells[i],
                    task.definition.memory_mb,
                    task.definition.disk_mb,
                );
                cells[i].tasks.push(task.task_guid.clone());
                out.work[i].tasks.push(task);
            }
            Err(reason) => out.failed_tasks.push((task.task_guid, reason)),
        }
    }
    for lrp in rest {
        place_lrp(cells, &mut placements, lrp, &mut out);
    }
    out
}

fn reserve(cell: &mut CellState, memory_mb: u32, disk_mb: u32) {
    let available = &mut cell.available_resources;
    available.memory_mb = available.memory_mb.saturating_sub(u64::from(memory_mb));
    available.disk_mb = available.disk_mb.saturating_sub(u64::from(disk_mb));
    available.containers = available.containers.saturating_sub(1);
    cell.starting_container_count = cell.starting_container_count.saturating_add(1);
}

/// Diego's placement-tag rule without optional tags: the cell's tags are exactly the
/// work's.
fn tags_match(cell: &[String], work: &[String]) -> bool {
    let cell: BTreeSet<&String> = cell.iter().collect();
    let work: BTreeSet<&String> = work.iter().collect();
    cell == work
}

fn no_compatible_cell(tags: &[String]) -> String {
    if tags.is_empty() {
        NO_CELL.to_string()
    } else {
        format!("{NO_CELL} with placement tag \"{}\"", tags.join(", "))
    }
}

/// What `cell` lacks to take the work, by CF's names.
fn missing_resources(cell: &CellState, memory_mb: u32, disk_mb: u32) -> BTreeSet<&'static str> {
    let available = &cell.available_resources;
    let mut missing = BTreeSet::new();
    if available.containers < 1 {
        missing.insert("containers");
    }
    if available.disk_mb < u64::from(disk_mb) {
        missing.insert("disk");
    }
    if available.memory_mb < u64::from(memory_mb) {
        missing.insert("memory");
    }
    missing
}

/// "insufficient resources: ..." naming what every candidate cell lacks.
fn insufficient_resources(lacking: Option<BTreeSet<&'static str>>) -> String {
    match lacking {
        Some(lacking) if !lacking.is_empty() => format!(
            "insufficient resources: {}",
            lacking.into_iter().collect::<Vec<_>>().join(", ")
        ),
        _ => "insufficient resources".to_string(),
    }
}

fn intersect(lacking: &mut Option<BTreeSet<&'static str>>, missing: BTreeSet<&'static str>) {
    *lacking = Some(match lacking.take() {
        None => missing,
        Some(l) => l.intersection(&missing).copied().collect(),
    });
}

/// The mean over memory, disk and containers of the fraction used once the work is
/// placed: lower means emptier.
pub(crate) fn resource_score(cell: &CellState, memory_mb: u32, disk_mb: u32) -> f64 {
    let used = |available: u64, need: u64, total: u64| {
        if total == 0 {
            1.0
        } else {
            1.0 - available.saturating_sub(need) as f64 / total as f64
        }
    };
    let (a, t) = (&cell.available_resources, &cell.total_resources);
    (used(a.memory_mb, u64::from(memory_mb), t.memory_mb)
        + used(a.disk_mb, u64::from(disk_mb), t.disk_mb)
        + used(a.containers, 1, t.containers))
        / 3.0
}

/// Where the cells stand during one auction, for scoring LRPs: the cells of each zone,
/// and how many instances of each process every cell holds, so that a placement looks
/// its process up once rather than once per cell.
pub(crate) struct Placements {
    /// Cell indices by zone, zones in name order.
    zones: Vec<Vec<usize>>,
    /// By process guid, the instances on each cell (indexed as the cells).
    counts: HashMap<String, Vec<u32>>,
}

impl Placements {
    pub(crate) fn new(cells: &[CellState]) -> Placements {
        let mut zones: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut placements = Placements {
            zones: Vec::new(),
            counts: HashMap::new(),
        };
        for (i, cell) in cells.iter().enumerate() {
            zones.entry(cell.zone.as_str()).or_default().push(i);
            for lrp in &cell.lrps {
                placements.placed(&lrp.process_guid, i, cells.len());
            }
        }
        placements.zones = zones.into_values().collect();
        placements
    }

    /// Counts one more instance of `process_guid` on cell `i` (of `cells`).
    fn placed(&mut self, process_guid: &str, i: usize, cells: usize) {
        match self.counts.get_mut(process_guid) {
            Some(counts) => counts[i] += 1,
            None => {
                let mut counts = vec![0; cells];
                counts[i] = 1;
                self.counts.insert(process_guid.to_string(), counts);
            }
        }
    }
}

/// The cell for one LRP instance: among compatible cells, zones holding the fewest
/// instances of the process first; in a zone group, the lowest score wins.
pub(crate) fn pick_cell_for_lrp(
    cells: &[CellState],
    placements: &Placements,
    desired: &DesiredLrp,
) -> Result<usize, String> {
    let counts = placements.counts.get(&desired.process_guid);
    let instances_on = |i: usize| counts.map_or(0, |c| c[i] as usize);
    let compatible = |i: usize| tags_match(&cells[i].placement_tags, &desired.placement_tags);
    // (instances of the process in the zone, zone), for zones with a compatible cell.
    let mut zones: Vec<(usize, usize)> = Vec::with_capacity(placements.zones.len());
    for (z, members) in placements.zones.iter().enumerate() {
        let mut members = members
            .iter()
            .copied()
            .filter(|&i| compatible(i))
            .peekable();
        if members.peek().is_some() {
            zones.push((members.map(instances_on).sum(), z));
        }
    }
    if zones.is_empty() {
        return Err(no_compatible_cell(&desired.placement_tags));
    }
    zones.sort_by_key(|zone| zone.0);

    let mut lacking = None;
    let mut winner: Option<(f64, usize)> = None;
    for (g, &(instances, z)) in zones.iter().enumerate() {
        for &i in placements.zones[z].iter().filter(|&&i| compatible(i)) {
            let cell = &cells[i];
            let missing = missing_resources(cell, desired.memory_mb, desired.disk_mb);
            if !missing.is_empty() {
                intersect(&mut lacking, missing);
                continue;
            }
            let score = resource_score(cell, desired.memory_mb, desired.disk_mb)
                + STARTING_CONTAINER_WEIGHT * f64::from(cell.starting_container_count)
                + SAME_WORK_PENALTY * instances_on(i) as f64;
            if winner.is_none_or(|(best, _)| score < best) {
                winner = Some((score, i));
            }
        }
        let next_in_group = zones.get(g + 1).is_some_and(|next| next.0 == instances);
        if next_in_group {
            continue;
        }
        if let Some((_, i)) = winner {
            return Ok(i);
        }
    }
    Err(insufficient_resources(lacking))
}

/// The cell for one task: the lowest resource score, penalized per task already there.
pub(crate) fn pick_cell_for_task(
    cells: &[CellState],
    definition: &TaskDefinition,
) -> Result<usize, String> {
    let mut compatible = false;
    let mut lacking = None;
    let mut winner: Option<(f64, usize)> = None;
    for (i, cell) in cells.iter().enumerate() {
        if !tags_match(&cell.placement_tags, &definition.placement_tags) {
            continue;
        }
        compatible = true;
        let missing = missing_resources(cell, definition.memory_mb, definition.disk_mb);
        if !missing.is_empty() {
            intersect(&mut lacking, missing);
            continue;
        }
        let score = resource_score(cell, definition.memory_mb, definition.disk_mb)
            + SAME_WORK_PENALTY * cell.tasks.len() as f64;
        if winner.is_none_or(|(best, _)| score < best) {
            winner = Some((score, i));
        }
    }
    match winner {
        Some((_, i)) => Ok(i),
        None if !compatible => Err(no_compatible_cell(&definition.placement_tags)),
        None => Err(insufficient_resources(lacking)),
    }
}

#[cfg(test)]
mod tests {
    use wf_messaging::Bus;

    use super::*;
    use crate::rep::LrpSummary;
    use crate::task::tests::staging;
    use crate::testing::*;

    fn cell(id: &str, zone: &str, memory_mb: u64) -> CellState {
        let total = Resources {
            memory_mb,
            disk_mb: 100_000,
            containers: 100,
        };
        CellState {
            cell_id: id.into(),
            rep_url: format!("http://{id}"),
            zone: zone.into(),
            available_resources: total,
            total_resources: total,
            lrps: vec![],
            tasks: vec![],
            starting_container_count: 0,
            evacuating: false,
            placement_tags: vec![],
        }
    }

    fn requests(guid: &str, instances: u32) -> Vec<LrpRequest> {
        let desired = Arc::new(desired(guid, instances));
        (0..instances)
            .map(|i| LrpRequest {
                key: key(guid, i),
                desired: desired.clone(),
            })
            .collect()
    }

    fn placed_on(schedule: &Schedule) -> Vec<usize> {
        schedule.work.iter().map(|w| w.lrps.len()).collect()
    }

    #[test]
    fn instances_of_one_process_spread_over_cells() {
        let mut cells = vec![
            cell("a", "z1", 4096),
            cell("b", "z1", 4096),
            cell("c", "z1", 4096),
        ];
        let schedule = schedule(&mut cells, requests("web", 3), vec![]);
        assert_eq!(placed_on(&schedule), vec![1, 1, 1]);
        assert!(schedule.failed_lrps.is_empty());
    }

    #[test]
    fn emptier_cell_wins() {
        let mut cells = vec![cell("a", "z1", 4096), cell("b", "z1", 4096)];
        cells[0].available_resources.memory_mb = 1024;
        let schedule = schedule(&mut cells, requests("web", 1), vec![]);
        assert_eq!(placed_on(&schedule), vec![0, 1]);
    }

    #[test]
    fn zones_balance_before_scores() {
        // z1 already holds an instance of "web": the next goes to z2 even though z1 has
        // an empty cell and the z2 cell is busier.
        let mut cells = vec![
            cell("a", "z1", 4096),
            cell("b", "z1", 4096),
            cell("c", "z2", 4096),
        ];
        cells[0].lrps.push(LrpSummary {
            process_guid: "web".into(),
            index: 0,
            domain: CF_APPS_DOMAIN.into(),
            instance_guid: "i0".into(),
        });
        cells[2].available_resources.memory_mb = 1024;
        let i = pick_cell_for_lrp(&cells, &Placements::new(&cells), &desired("web", 2)).unwrap();
        assert_eq!(cells[i].cell_id, "c");
    }

    #[test]
    fn placement_errors_use_cf_wording() {
        let mut cells = vec![cell("a", "z1", 128), cell("b", "z2", 200)];
        assert_eq!(
            pick_cell_for_lrp(&cells, &Placements::new(&cells), &desired("web", 1)),
            Err("insufficient resources: memory".to_string())
        );
        cells[0].available_resources.containers = 0;
        cells[1].available_resources.containers = 0;
        assert_eq!(
            pick_cell_for_task(&cells, &staging(4096)),
            Err("insufficient resources: containers, memory".to_string())
        );
        let mut tagged = desired("web", 1);
        tagged.placement_tags = vec!["gpu".into()];
        assert_eq!(
            pick_cell_for_lrp(&cells, &Placements::new(&cells), &tagged),
            Err("found no compatible cell with placement tag \"gpu\"".to_string())
        );
    }

    #[test]
    fn tasks_go_first_by_size_after_index_zero() {
        let mut cells = vec![cell("a", "z1", 1024)];
        let mut small = crate::testing::desired("web", 2);
        small.memory_mb = 512;
        let small = Arc::new(small);
        let lrps = vec![
            LrpRequest {
                key: key("web", 1),
                desired: small.clone(),
            },
            LrpRequest {
                key: key("web", 0),
                desired: small,
            },
        ];
        let task = |guid: &str, memory| Task {
            task_guid: guid.into(),
            domain: CF_STAGING_DOMAIN.into(),
            definition: staging(memory),
            state: TaskState::Pending,
            cell_id: String::new(),
            result: String::new(),
            failed: false,
            failure_reason: String::new(),
            rejection_count: 0,
            created_at: 0,
            updated_at: 0,
            first_completed_at: 0,
        };
        let schedule = schedule(&mut cells, lrps, vec![task("small", 128), task("big", 512)]);
        // index 0 (512) + big (512) fill the cell; small and index 1 find no room.
        assert_eq!(schedule.work[0].lrps[0].key.index, 0);
        assert_eq!(schedule.work[0].tasks[0].task_guid, "big");
        assert_eq!(schedule.failed_tasks[0].0, "small");
        assert_eq!(schedule.failed_lrps[0].0.index, 1);
    }

    #[tokio::test]
    async fn auction_sends_work_to_the_reps() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let cancel = CancellationToken::new();
            let running = bbs.run(cancel.clone());
            let a = FakeRep::start("cell-a", "z1", 4096).await;
            let b = FakeRep::start("cell-b", "z2", 4096).await;
            for rep in [&a, &b] {
                bbs.set_cell_presence(&rep.presence(), Duration::from_secs(60))
                    .await
                    .unwrap();
            }
            bbs.desire_lrp(desired("web", 2)).await.unwrap();
            bbs.desire_task("build-1", CF_STAGING_DOMAIN, staging(256))
                .await
                .unwrap();

            eventually("both instances and the task to be placed", || async {
                let lrps = a.lrp_work().len() + b.lrp_work().len();
                let tasks: usize = [&a, &b]
                    .iter()
                    .flat_map(|r| r.work.lock().unwrap().clone())
                    .map(|w| w.tasks.len())
                    .sum();
                lrps == 2 && tasks == 1
            })
            .await;
            // One instance per zone.
            assert_eq!(a.lrp_work().len(), 1);
            assert_eq!(b.lrp_work().len(), 1);
            let work = a.lrp_work().remove(0);
            assert_eq!(work.desired.process_guid, "web");
            assert!(!work.instance_guid.is_empty());

            cancel.cancel();
            running.await.unwrap();
        }
    }

    #[tokio::test]
    async fn unplaceable_instances_get_a_placement_error() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let cancel = CancellationToken::new();
            let running = bbs.run(cancel.clone());
            let small = FakeRep::start("cell-a", "z1", 128).await;
            bbs.set_cell_presence(&small.presence(), Duration::from_secs(60))
                .await
                .unwrap();
            bbs.desire_lrp(desired("web", 1)).await.unwrap();
            eventually("the placement error", || async {
                actual(&bbs, "web", 0).await.unwrap().placement_error
                    == "insufficient resources: memory"
            })
            .await;
            cancel.cancel();
            running.await.unwrap();
        }
    }
}
