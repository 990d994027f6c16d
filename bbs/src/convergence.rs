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

/// Runs a pass at once, then one per interval (counted from the end of the last pass).
pub(crate) async fn run(bbs: Arc<Bbs>, cancel: CancellationToken) {
    loop {
        if let Err(e) = bbs.converge().await {
            tracing::warn!(error = %e, "convergence failed");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(bbs.config.convergence_interval) => {}
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
    let mut present: HashSet<(&str, u32)> = HashSet::new();
    let mut fixes = Vec::new();
    for actual in actuals {
        present.insert((actual.key.process_guid.as_str(), actual.key.index));
        let wanted = desired_by_guid
            .get(actual.key.process_guid.as_str())
            .is_some_and(|d| actual.key.index < d.instances);
        if !wanted {
            if fresh_domains.contains(&actual.key.domain) {
                fixes.push(LrpFix::Retire(actual.clone()));
            }
            continue;
        }
        match actual.state {
            ActualLrpState::Unclaimed
                if now.saturating_sub(actual.since) >= duration_ns(unclaimed_retry) =>
            {
                fixes.push(LrpFix::Auction(actual.key.clone()));
            }
            ActualLrpState::Claimed | ActualLrpState::Running
                if !cells.contains_key(&actual.instance_key.cell_id) =>
            {
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
    for lrp in desired {
        for index in 0..lrp.instances {
            if !present.contains(&(lrp.process_guid.as_str(), index)) {
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
            let _write = self.write.lock().await;
            let mut tx = self.pool.begin().await?;
            db::delete_expired(&mut tx, now).await?;
            let fresh: HashSet<String> =
                db::fresh_domains(&mut tx, now).await?.into_iter().collect();
            let cells = db::rep_urls(&mut tx, now).await?;
            let desired = db::desired_lrps(&mut tx, &DesiredLrpFilter::default()).await?;
            let actuals = db::actual_lrps(&mut tx, &ActualLrpFilter::default()).await?;
            let tasks = db::tasks(&mut tx, &TaskFilter::default()).await?;

            for fix in plan_lrps(
                &desired,
                &actuals,
                &cells,
                &fresh,
                now,
                self.config.unclaimed_retry,
            ) {
                match fix {
                    LrpFix::Create(key) => {
                        lrp::create_unclaimed(&mut tx, key, now, &mut changes).await?
                    }
                    LrpFix::Auction(key) => changes.auction_lrps.push(key),
                    LrpFix::Unclaim(mut actual) => {
                        let before = actual.clone();
                        lrp::unclaim(&mut actual, now);
                        db::put_actual_lrp(&mut tx, &actual).await?;
                        changes.auction_lrps.push(actual.key.clone());
                        changes.events.push(BbsEvent::ActualLrpChanged {
                            before,
                            after: actual,
                        });
                    }
                    LrpFix::Retire(actual) => {
                        lrp::retire(&mut tx, actual, &cells, &mut changes).await?
                    }
                }
            }
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
    fn instances_on_missing_cells_and_due_crashes_are_unclaimed() {
        let desired = vec![desired("web", 3)];
        let lost = running("web", 0, "gone");
        let mut due = lrp::unclaimed(key("web", 1), 0);
        due.state = ActualLrpState::Crashed;
        due.crash_count = 3;
        let mut waiting = due.clone();
        waiting.key.index = 2;
        waiting.crash_count = 4;
        let fixes = plan_lrps(
            &desired,
            &[lost.clone(), due.clone(), waiting],
            &cells(),
            &HashSet::new(),
            45 * SEC,
            RETRY,
        );
        assert_eq!(fixes, vec![LrpFix::Unclaim(lost), LrpFix::Unclaim(due)]);
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
    async fn convergence_unclaims_instances_of_vanished_cells() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_lrp(desired("web", 1)).await.unwrap();
            let ik = instance("i-0", "cell-gone");
            bbs.claim_actual_lrp(&key("web", 0), &ik).await.unwrap();
            bbs.start_actual_lrp(&key("web", 0), &ik, net_info(61000))
                .await
                .unwrap();
            bbs.converge().await.unwrap();
            let actual = actual(&bbs, "web", 0).await.unwrap();
            assert_eq!(actual.state, ActualLrpState::Unclaimed);
            assert!(actual.instance_key.is_empty());
        }
    }
}
