//! Convergence: every `convergence_interval`, compare what is desired with what runs
//! and heal the difference (Diego's `ConvergeLRPs` and `ConvergeTasks`). The decisions
//! are pure functions ([`plan_lrps`], [`plan_tasks`]); [`Bbs::converge`] applies them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::models::*;
use crate::{
    db, duration_ns, lrp, now_ns, restart, task, ActualLrpFilter, Bbs, BbsError, Changes,
    DesiredLrpFilter, TaskFilter,
};

/// A PENDING task older than this fails.
const PENDING_TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A COMPLETED (or RESOLVING) task older than this is deleted.
const COMPLETED_TASK_TTL: Duration = Duration::from_secs(120);

const TASK_NOT_STARTED: &str = "not started within time limit";
const TASK_CELL_DISAPPEARED: &str = "cell disappeared before completion";

/// How often the BBS looks for a cell whose presence expired.
const CELL_WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Runs a pass at once, then one per interval (counted from the end of the last pass),
/// and one as soon as a cell's presence expires: as Diego's BBS converges when Locket
/// reports a cell gone, so lost instances are replaced within the presence TTL and
/// not a whole interval later.
pub(crate) async fn run(bbs: Arc<Bbs>, cancel: CancellationToken) {
    loop {
        let started = std::time::Instant::now();
        let result = bbs.converge().await;
        bbs.counters.convergence(started.elapsed(), result.is_ok());
        if let Err(e) = result {
            tracing::warn!(error = %e, "convergence failed");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(bbs.config.convergence_interval) => {}
            () = cell_lost(&bbs) => tracing::info!("a cell's presence expired; converging now"),
        }
    }
}

/// Returns once some cell's presence has expired.
async fn cell_lost(bbs: &Bbs) {
    loop {
        tokio::time::sleep(CELL_WATCH_INTERVAL).await;
        let expired = async {
            let mut conn = bbs.pool.acquire().await?;
            db::cell_presence_expired(&mut conn, now_ns()).await
        };
        match expired.await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "cannot check cell presences"),
        }
    }
}

/// One repair convergence decided for an ActualLRP.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LrpFix {
    /// A desired index has no ActualLRP: create it UNCLAIMED.
    Create(ActualLrpKey),
    /// UNCLAIMED for too long: auction it again.
    Auction(ActualLrpKey),
    /// Its cell is gone, or it crashed and may restart now: back to UNCLAIMED.
    Unclaim(ActualLrp),
    /// RUNNING on a cell that is gone: kept as SUSPECT (still routed, in case its cell
    /// is only cut off) while an UNCLAIMED replacement is auctioned.
    Suspect(ActualLrp),
    /// A SUSPECT whose replacement runs or that is no longer desired, or an EVACUATING
    /// copy whose cell is gone: deleted, and stopped if its cell is there.
    Discard(ActualLrp),
    /// A SUSPECT whose cell came back before its replacement ran: ORDINARY again; the
    /// replacement (if claimed on a cell) is stopped.
    Promote {
        suspect: ActualLrp,
        replacement: Option<ActualLrp>,
    },
    /// No longer desired: retire it.
    Retire(ActualLrp),
}

/// One repair convergence decided for a Task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskFix {
    Auction(String),
    Fail(Task, &'static str),
    Delete(Task),
}

/// The LRP repairs, in Diego's order of concerns. `cells` holds the present cells;
/// retiring waits for a fresh domain, so a CC that stopped syncing retires nothing.
pub(crate) fn plan_lrps(
    desired: &[DesiredLrp],
    actuals: &[ActualLrp],
    cells: &HashMap<String, String>,
    fresh_domains: &HashSet<String>,
    now: i64,
    unclaimed_retry: Duration,
) -> Vec<LrpFix> {
    let desired_by_guid: HashMap<&str, &DesiredLrp> = desired
        .iter()
        .map(|d| (d.process_guid.as_str(), d))
        .collect();
    let wanted = |key: &ActualLrpKey| {
        desired_by_guid
            .get(key.process_guid.as_str())
            .is_some_and(|d| key.index < d.instances)
    };
    let slot = |a: &ActualLrp| (a.key.process_guid.clone(), a.key.index);
    let ordinaries: HashMap<(String, u32), &ActualLrp> = actuals
        .iter()
        .filter(|a| a.presence == Presence::Ordinary)
        .map(|a| (slot(a), a))
        .collect();
    let suspects: HashMap<(String, u32), &ActualLrp> = actuals
        .iter()
        .filter(|a| a.presence == Presence::Suspect)
        .map(|a| (slot(a), a))
        .collect();
    let mut fixes = Vec::new();
    for actual in actuals.iter().filter(|a| a.presence == Presence::Ordinary) {
        if !wanted(&actual.key) {
            if fresh_domains.contains(&actual.key.domain) {
                fixes.push(LrpFix::Retire(actual.clone()));
            }
            continue;
        }
        let cell_gone = !cells.contains_key(&actual.instance_key.cell_id);
        match actual.state {
            ActualLrpState::Unclaimed
                if now.saturating_sub(actual.since) >= duration_ns(unclaimed_retry) =>
            {
                fixes.push(LrpFix::Auction(actual.key.clone()));
            }
            ActualLrpState::Running if cell_gone && !suspects.contains_key(&slot(actual)) => {
                fixes.push(LrpFix::Suspect(actual.clone()));
            }
            ActualLrpState::Claimed | ActualLrpState::Running if cell_gone => {
                fixes.push(LrpFix::Unclaim(actual.clone()));
            }
            ActualLrpState::Crashed
                if restart::should_restart(actual.crash_count, actual.since, now) =>
            {
                fixes.push(LrpFix::Unclaim(actual.clone()));
            }
            _ => {}
        }
    }
    for suspect in actuals.iter().filter(|a| a.presence == Presence::Suspect) {
        let ordinary = ordinaries.get(&slot(suspect)).copied();
        let replaced = ordinary.is_some_and(|o| {
            o.state == ActualLrpState::Running && cells.contains_key(&o.instance_key.cell_id)
        });
        if !wanted(&suspect.key) || replaced {
            fixes.push(LrpFix::Discard(suspect.clone()));
        } else if cells.contains_key(&suspect.instance_key.cell_id) {
            fixes.push(LrpFix::Promote {
                suspect: suspect.clone(),
                replacement: ordinary.cloned(),
            });
        }
    }
    for evacuating in actuals
        .iter()
        .filter(|a| a.presence == Presence::Evacuating)
    {
        if !cells.contains_key(&evacuating.instance_key.cell_id) {
            fixes.push(LrpFix::Discard(evacuating.clone()));
        }
    }
    for lrp in desired {
        for index in 0..lrp.instances {
            if !ordinaries.contains_key(&(lrp.process_guid.clone(), index)) {
                fixes.push(LrpFix::Create(ActualLrpKey {
                    process_guid: lrp.process_guid.clone(),
                    index,
                    domain: lrp.domain.clone(),
                }));
            }
        }
    }
    fixes
}

/// The Task repairs: PENDING ones are auctioned again (and fail when too old), RUNNING
/// ones on a vanished cell fail, old COMPLETED ones are deleted.
pub(crate) fn plan_tasks(
    tasks: &[Task],
    cells: &HashMap<String, String>,
    now: i64,
    pending_retry: Duration,
) -> Vec<TaskFix> {
    let older = |at: i64, age: Duration| now.saturating_sub(at) >= duration_ns(age);
    tasks
        .iter()
        .filter_map(|task| match task.state {
            TaskState::Pending if older(task.created_at, PENDING_TASK_TIMEOUT) => {
                Some(TaskFix::Fail(task.clone(), TASK_NOT_STARTED))
            }
            TaskState::Pending if older(task.updated_at, pending_retry) => {
                Some(TaskFix::Auction(task.task_guid.clone()))
            }
            TaskState::Running if !cells.contains_key(&task.cell_id) => {
                Some(TaskFix::Fail(task.clone(), TASK_CELL_DISAPPEARED))
            }
            TaskState::Completed | TaskState::Resolving
                if older(task.first_completed_at, COMPLETED_TASK_TTL) =>
            {
                Some(TaskFix::Delete(task.clone()))
            }
            _ => None,
        })
        .collect()
}

impl Bbs {
    /// One convergence pass (the loop in [`Bbs::run`] calls it every interval).
    pub async fn converge(&self) -> Result<(), BbsError> {
        let now = now_ns();
        let mut changes = Changes::default();
        {
            let mut tx = self.writer.begin().await?;
            db::delete_expired(&mut tx, now).await?;
            let fresh: HashSet<String> =
                db::fresh_domains(&mut tx, now).await?.into_iter().collect();
            let cells = db::rep_urls(&mut tx, now).await?;
            let desired = db::desired_lrps(&mut tx, &DesiredLrpFilter::default()).await?;
            let actuals = db::actual_lrps(&mut tx, &ActualLrpFilter::default()).await?;
            let tasks = db::tasks(&mut tx, &TaskFilter::default()).await?;
            // The ActualLRPs the fixes create or change, written together at the end (no
            // fix deletes a row another one writes).
            let mut rows = Vec::new();

            for fix in plan_lrps(
                &desired,
                &actuals,
                &cells,
                &fresh,
                now,
                self.config.unclaimed_retry,
            ) {
                match fix {
                    LrpFix::Create(key) => lrp::create_unclaimed(key, now, &mut rows, &mut changes),
                    LrpFix::Auction(key) => changes.auction_lrps.push(key),
                    LrpFix::Unclaim(actual) => lrp::reauction(actual, now, &mut rows, &mut changes),
                    LrpFix::Suspect(running) => {
                        tracing::info!(process_guid = %running.key.process_guid, index = running.key.index,
                            cell_id = %running.instance_key.cell_id, "cell missing: instance is SUSPECT, replacing it");
                        lrp::put_copy(running.clone(), Presence::Suspect, &mut rows, &mut changes);
                        lrp::reauction(running, now, &mut rows, &mut changes);
                    }
                    LrpFix::Discard(copy) => {
                        db::delete_actual_lrp_with_presence(&mut tx, &copy.key, copy.presence)
                            .await?;
                        lrp::stop_on_cell(&copy, &cells, &mut changes);
                        changes
                            .events
                            .push(BbsEvent::ActualLrpRemoved { actual_lrp: copy });
                    }
                    LrpFix::Promote {
                        suspect,
                        replacement,
                    } => {
                        db::delete_actual_lrp_with_presence(
                            &mut tx,
                            &suspect.key,
                            Presence::Suspect,
                        )
                        .await?;
                        let mut promoted = suspect.clone();
                        promoted.presence = Presence::Ordinary;
                        promoted.modification_tag.index += 1;
                        rows.push(promoted.clone());
                        tracing::info!(process_guid = %promoted.key.process_guid, index = promoted.key.index,
                            cell_id = %promoted.instance_key.cell_id, "suspect's cell is back: promoting it");
                        changes.events.push(BbsEvent::ActualLrpRemoved {
                            actual_lrp: suspect,
                        });
                        match replacement {
                            Some(replacement) => {
                                lrp::stop_on_cell(&replacement, &cells, &mut changes);
                                changes.events.push(BbsEvent::ActualLrpChanged {
                                    before: replacement,
                                    after: promoted,
                                });
                            }
                            None => changes.events.push(BbsEvent::ActualLrpCreated {
                                actual_lrp: promoted,
                            }),
                        }
                    }
                    LrpFix::Retire(actual) => {
                        lrp::retire(&mut tx, actual, &cells, &mut changes).await?
                    }
                }
            }
            db::put_actual_lrps(&mut tx, &rows).await?;
            for fix in plan_tasks(&tasks, &cells, now, self.config.unclaimed_retry) {
                match fix {
                    TaskFix::Auction(guid) => changes.auction_tasks.push(guid),
                    TaskFix::Fail(mut failed, reason) => {
                        let before = failed.clone();
                        task::complete(&mut failed, true, reason, now);
                        failed.updated_at = now;
                        db::put_task(&mut tx, &failed).await?;
                        changes.events.push(BbsEvent::TaskChanged {
                            before,
                            after: failed,
                        });
                    }
                    TaskFix::Delete(old) => {
                        db::delete_task(&mut tx, &old.task_guid).await?;
                        changes.events.push(BbsEvent::TaskRemoved { task: old });
                    }
                }
            }
            tx.commit().await?;
        }
        self.apply(changes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wf_messaging::Bus;

    use super::*;
    use crate::testing::*;

    const SEC: i64 = 1_000_000_000;
    const RETRY: Duration = Duration::from_secs(30);

    fn cells() -> HashMap<String, String> {
        [("cell-0".to_string(), "http://cell-0".to_string())].into()
    }

    fn running(guid: &str, index: u32, cell: &str) -> ActualLrp {
        let mut actual = lrp::unclaimed(key(guid, index), 0);
        actual.state = ActualLrpState::Running;
        actual.instance_key = instance(&format!("i-{index}"), cell);
        actual
    }

    #[test]
    fn missing_indices_are_created_and_stale_unclaimed_reauctioned() {
        let desired = vec![desired("web", 3)];
        let stale = lrp::unclaimed(key("web", 0), 0);
        let fresh_unclaimed = lrp::unclaimed(key("web", 1), 100 * SEC);
        let fixes = plan_lrps(
            &desired,
            &[stale, fresh_unclaimed],
            &cells(),
            &HashSet::new(),
            100 * SEC,
            RETRY,
        );
        assert_eq!(
            fixes,
            vec![
                LrpFix::Auction(key("web", 0)),
                LrpFix::Create(key("web", 2))
            ]
        );
    }

    #[test]
    fn running_instances_on_missing_cells_become_suspect_and_claimed_ones_unclaimed() {
        let desired = vec![desired("web", 3)];
        let running_lost = running("web", 0, "gone");
        let mut claimed_lost = running("web", 1, "gone");
        claimed_lost.state = ActualLrpState::Claimed;
        // A replacement is being placed already for index 2: unclaim, do not suspect twice.
        let mut old_suspect = running("web", 2, "gone");
        old_suspect.presence = Presence::Suspect;
        let running_again = running("web", 2, "gone-too");
        let fixes = plan_lrps(
            &desired,
            &[
                running_lost.clone(),
                claimed_lost.clone(),
                running_again.clone(),
                old_suspect,
            ],
            &cells(),
            &HashSet::new(),
            0,
            RETRY,
        );
        assert_eq!(
            fixes,
            vec![
                LrpFix::Suspect(running_lost),
                LrpFix::Unclaim(claimed_lost),
                LrpFix::Unclaim(running_again),
            ]
        );
    }

    #[test]
    fn suspects_are_dropped_once_replaced_and_promoted_when_their_cell_returns() {
        let desired = vec![desired("web", 3)];
        let suspect = |index: u32, cell: &str| {
            let mut s = running("web", index, cell);
            s.presence = Presence::Suspect;
            s
        };
        // 0: replacement runs -> drop. 1: cell back, replacement unclaimed -> promote.
        // 2: cell still gone, replacement unclaimed -> wait.
        let replaced = suspect(0, "gone");
        let back = suspect(1, "cell-0");
        let waiting = suspect(2, "gone");
        let replacement_0 = running("web", 0, "cell-0");
        let replacement_1 = lrp::unclaimed(key("web", 1), 0);
        let replacement_2 = lrp::unclaimed(key("web", 2), 0);
        let fixes = plan_lrps(
            &desired,
            &[
                replacement_0,
                replacement_1.clone(),
                replacement_2,
                replaced.clone(),
                back.clone(),
                waiting,
            ],
            &cells(),
            &HashSet::new(),
            0,
            RETRY,
        );
        assert_eq!(
            fixes,
            vec![
                LrpFix::Discard(replaced),
                LrpFix::Promote {
                    suspect: back,
                    replacement: Some(replacement_1),
                },
            ]
        );
        // A suspect that is no longer desired goes too, and so does an EVACUATING copy
        // whose cell is gone (not one whose cell is there).
        let extra = suspect(5, "gone");
        let mut evacuating_gone = running("web", 0, "gone");
        evacuating_gone.presence = Presence::Evacuating;
        let mut evacuating_here = running("web", 1, "cell-0");
        evacuating_here.presence = Presence::Evacuating;
        let fixes = plan_lrps(
            &desired,
            &[extra.clone(), evacuating_gone.clone(), evacuating_here],
            &cells(),
            &HashSet::new(),
            0,
            RETRY,
        );
        assert!(fixes.contains(&LrpFix::Discard(extra)));
        assert!(fixes.contains(&LrpFix::Discard(evacuating_gone)));
        assert_eq!(
            fixes
                .iter()
                .filter(|f| matches!(f, LrpFix::Discard(_)))
                .count(),
            2
        );
    }

    #[test]
    fn due_crashes_are_unclaimed() {
        let desired = vec![desired("web", 3)];
        let mut due = lrp::unclaimed(key("web", 1), 0);
        due.state = ActualLrpState::Crashed;
        due.crash_count = 3;
        let mut waiting = due.clone();
        waiting.key.index = 2;
        waiting.crash_count = 4;
        let fixes = plan_lrps(
            &desired,
            &[running("web", 0, "cell-0"), due.clone(), waiting],
            &cells(),
            &HashSet::new(),
            45 * SEC,
            RETRY,
        );
        assert_eq!(fixes, vec![LrpFix::Unclaim(due)]);
    }

    #[test]
    fn extra_instances_retire_only_in_fresh_domains() {
        let desired = vec![desired("web", 1)];
        let actuals = [
            running("web", 0, "cell-0"),
            running("web", 1, "cell-0"),
            running("old", 0, "cell-0"),
        ];
        assert!(plan_lrps(&desired, &actuals, &cells(), &HashSet::new(), 0, RETRY).is_empty());
        let fresh: HashSet<String> = [CF_APPS_DOMAIN.to_string()].into();
        let fixes = plan_lrps(&desired, &actuals, &cells(), &fresh, 0, RETRY);
        assert_eq!(
            fixes,
            vec![
                LrpFix::Retire(actuals[1].clone()),
                LrpFix::Retire(actuals[2].clone())
            ]
        );
    }

    #[test]
    fn task_convergence() {
        let definition = crate::task::tests::staging(64);
        let task = |guid: &str, state, cell: &str, at: i64| Task {
            task_guid: guid.into(),
            domain: CF_STAGING_DOMAIN.into(),
            definition: definition.clone(),
            state,
            cell_id: cell.into(),
            result: String::new(),
            failed: false,
            failure_reason: String::new(),
            rejection_count: 0,
            created_at: at,
            updated_at: at,
            first_completed_at: at,
        };
        let now = 3600 * SEC;
        let tasks = [
            task("ancient", TaskState::Pending, "", 0),
            task("stale", TaskState::Pending, "", now - 31 * SEC),
            task("new", TaskState::Pending, "", now),
            task("orphan", TaskState::Running, "gone", now),
            task("done", TaskState::Completed, "cell-0", now - 121 * SEC),
            task("recent", TaskState::Completed, "cell-0", now),
        ];
        let fixes = plan_tasks(&tasks, &cells(), now, RETRY);
        assert_eq!(
            fixes,
            vec![
                TaskFix::Fail(tasks[0].clone(), TASK_NOT_STARTED),
                TaskFix::Auction("stale".into()),
                TaskFix::Fail(tasks[3].clone(), TASK_CELL_DISAPPEARED),
                TaskFix::Delete(tasks[4].clone()),
            ]
        );
    }

    #[tokio::test]
    async fn convergence_recreates_missing_indices() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_lrp(desired("web", 2)).await.unwrap();
            // The rep reports index 1 gone.
            bbs.remove_actual_lrp(&key("web", 1), &ActualLrpInstanceKey::default())
                .await
                .unwrap();
            assert!(actual(&bbs, "web", 1).await.is_none());
            bbs.converge().await.unwrap();
            let recreated = actual(&bbs, "web", 1).await.unwrap();
            assert_eq!(recreated.state, ActualLrpState::Unclaimed);
        }
    }

    #[tokio::test]
    async fn a_vanished_cells_instance_is_suspect_until_replaced_or_back() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let cell_0 = FakeRep::start("cell-0", "z1", 4096).await;
            bbs.set_cell_presence(&cell_0.presence(), Duration::from_secs(60))
                .await
                .unwrap();
            bbs.desire_lrp(desired("web", 1)).await.unwrap();
            let lost = instance("i-0", "cell-gone");
            bbs.claim_actual_lrp(&key("web", 0), &lost).await.unwrap();
            bbs.start_actual_lrp(&key("web", 0), &lost, net_info(61000))
                .await
                .unwrap();
            let rows = || async {
                let mut rows: Vec<(Presence, ActualLrpState, String)> = bbs
                    .actual_lrps(&ActualLrpFilter::default())
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| (a.presence, a.state, a.instance_key.instance_guid))
                    .collect();
                rows.sort_by_key(|r| r.0.as_str());
                rows
            };

            bbs.converge().await.unwrap();
            assert_eq!(
                rows().await,
                [
                    (Presence::Ordinary, ActualLrpState::Unclaimed, String::new()),
                    (Presence::Suspect, ActualLrpState::Running, "i-0".into()),
                ],
                "{db}"
            );
            // Its replacement starts: the suspect goes at once.
            let replacement = instance("i-1", "cell-0");
            bbs.claim_actual_lrp(&key("web", 0), &replacement)
                .await
                .unwrap();
            bbs.start_actual_lrp(&key("web", 0), &replacement, net_info(61001))
                .await
                .unwrap();
            assert_eq!(
                rows().await,
                [(Presence::Ordinary, ActualLrpState::Running, "i-1".into())],
                "{db}"
            );

            // Another loss, and this time the cell comes back before the replacement
            // runs: the suspect is promoted, the replacement left to be stopped.
            let back = FakeRep::start("cell-back", "z1", 4096).await;
            let on_back = instance("i-2", "cell-back");
            bbs.remove_actual_lrp(&key("web", 0), &replacement)
                .await
                .unwrap();
            bbs.converge().await.unwrap();
            bbs.claim_actual_lrp(&key("web", 0), &on_back)
                .await
                .unwrap();
            bbs.start_actual_lrp(&key("web", 0), &on_back, net_info(61002))
                .await
                .unwrap();
            bbs.converge().await.unwrap();
            assert_eq!(rows().await[1].0, Presence::Suspect, "{db}");
            bbs.set_cell_presence(&back.presence(), Duration::from_secs(60))
                .await
                .unwrap();
            bbs.converge().await.unwrap();
            let now = rows().await;
            assert_eq!(
                now,
                [(Presence::Ordinary, ActualLrpState::Running, "i-2".into())],
                "{db}"
            );
            // A suspect's crash or removal by its cell removes only the suspect row.
            bbs.remove_actual_lrp(&key("web", 0), &instance("nobody", "x"))
                .await
                .unwrap_err();
        }
    }
}
