//! The life of a Task on the cell: start it in the BBS, run its action (staging, or a
//! droplet run once), and complete it with its result or failure reason.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wf_bbs::{BbsError, Task, TaskAction};
use wf_loggregator::LogType;

use crate::cell::Cell;
use crate::instance::InstanceLogs;

/// Runs `task` to completion unless `cancel` fires (the BBS has then completed it).
pub async fn run_task(cell: Arc<Cell>, task: Task, cancel: CancellationToken) {
    let guid = task.task_guid.clone();
    let cell_id = cell.config.cell_id.clone();
    match cell.bbs.start_task(&guid, &cell_id).await {
        Ok(true) => cell.set_task_started(&guid),
        Ok(false) => {
            tracing::debug!(task_guid = %guid, "task already started on this cell");
            cell.release_task(&guid);
            return;
        }
        Err(e) => {
            tracing::warn!(task_guid = %guid, error = %e, "starting task failed");
            cell.release_task(&guid);
            return;
        }
    }
    let logs = task_logs(&cell, &task);
    logs.cell(
        LogType::Out,
        &format!("Cell {cell_id} creating container for instance {guid}"),
    );
    let outcome = tokio::select! {
        _ = cancel.cancelled() => None,
        outcome = perform(&cell, &task, &logs) => Some(outcome),
    };
    let completed = match outcome {
        None => {
            logs.cell(
                LogType::Out,
                &format!("Cell {cell_id} stopping instance {guid}"),
            );
            Ok(())
        }
        Some(Ok(result)) => {
            complete_with_retry(&cancel, COMPLETE_BACKOFF, || {
                cell.bbs.complete_task(&guid, &cell_id, false, "", &result)
            })
            .await
        }
        Some(Err(reason)) => {
            logs.app(LogType::Err, &reason);
            complete_with_retry(&cancel, COMPLETE_BACKOFF, || {
                cell.bbs.complete_task(&guid, &cell_id, true, &reason, "")
            })
            .await
        }
    };
    if let Err(e) = completed {
        tracing::warn!(task_guid = %guid, error = %e, "completing task failed");
    }
    logs.cell(
        LogType::Out,
        &format!("Cell {cell_id} destroying container for instance {guid}"),
    );
    cell.release_task(&guid);
}

/// Waits between attempts to complete a task while the BBS cannot take it: the first
/// wait, the longest, and how long to keep trying in all.
const COMPLETE_BACKOFF: (Duration, Duration, Duration) = (
    Duration::from_millis(250),
    Duration::from_secs(5),
    Duration::from_secs(300),
);

/// Completes a task with `complete`, again and again while the BBS is unreachable or
/// failing (a BBS failover, its database restarting), as Diego's rep keeps a completed
/// container until the BBS has its result; until `cancel` fires (the BBS completed or
/// cancelled the task meanwhile) or `backoff.2` has passed. Giving up at the first
/// failure would lose the result (a staged droplet): the cell's bulk sync would then
/// find the task RUNNING with no container and fail it.
async fn complete_with_retry<F, Fut>(
    cancel: &CancellationToken,
    backoff: (Duration, Duration, Duration),
    mut complete: F,
) -> Result<(), BbsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BbsError>>,
{
    let (mut wait, longest, total) = backoff;
    let deadline = tokio::time::Instant::now() + total;
    loop {
        match complete().await {
            Err(BbsError::Unavailable(e) | BbsError::Remote(e))
                if tokio::time::Instant::now() + wait < deadline =>
            {
                tracing::info!(error = %e, retry_in = ?wait, "the BBS cannot take the task's result yet");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(longest);
            }
            other => return other,
        }
    }
}

/// The task's result, or its failure reason.
async fn perform(cell: &Arc<Cell>, task: &Task, logs: &InstanceLogs) -> Result<String, String> {
    match &task.definition.action {
        TaskAction::Stage(action) => {
            crate::stager::stage(
                cell,
                &task.task_guid,
                action,
                task.definition.memory_mb,
                logs,
            )
            .await
        }
        TaskAction::Run(action) => {
            let exit = crate::instance::run_once(
                cell,
                action,
                task.definition.memory_mb,
                task.definition.disk_mb,
                logs,
            )
            .await?;
            if exit.status() == 0 {
                Ok(String::new())
            } else {
                Err(format!("{}: {}", logs.source_type, exit.describe()))
            }
        }
    }
}

/// Logs go to the task's log guid; staging tasks from older records may carry the app
/// guid only in `CF_APP_GUID`.
fn task_logs(cell: &Cell, task: &Task) -> InstanceLogs {
    let definition = &task.definition;
    let source_id = match &definition.action {
        TaskAction::Stage(stage) if definition.log_guid.is_empty() => stage
            .env
            .iter()
            .find(|v| v.name == "CF_APP_GUID")
            .map(|v| v.value.clone())
            .unwrap_or_default(),
        _ => definition.log_guid.clone(),
    };
    let source_type = match (&definition.action, definition.log_source.is_empty()) {
        (TaskAction::Stage(_), true) => "STG",
        (TaskAction::Run(_), true) => "APP/TASK",
        (_, false) => definition.log_source.as_str(),
    };
    InstanceLogs::for_task(cell, &source_id, source_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FAST: (Duration, Duration, Duration) = (
        Duration::from_millis(1),
        Duration::from_millis(4),
        Duration::from_secs(10),
    );

    #[tokio::test]
    async fn a_task_result_is_retried_while_the_bbs_is_unavailable() {
        let calls = AtomicU32::new(0);
        let done = complete_with_retry(&CancellationToken::new(), FAST, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(BbsError::Unavailable("failing over".into())),
                    1 => Err(BbsError::Remote("database restarting".into())),
                    _ => Ok(()),
                }
            }
        })
        .await;
        assert!(done.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_result_is_not_retried_and_cancel_stops_retrying() {
        let calls = AtomicU32::new(0);
        let refused = complete_with_retry(&CancellationToken::new(), FAST, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(BbsError::NotFound("task".into())) }
        })
        .await;
        assert!(matches!(refused, Err(BbsError::NotFound(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let cancel = CancellationToken::new();
        cancel.cancel();
        let cancelled = complete_with_retry(&cancel, FAST, || async {
            Err(BbsError::Unavailable("down".into()))
        })
        .await;
        assert!(cancelled.is_ok());
    }

    #[tokio::test]
    async fn retrying_gives_up_after_its_total() {
        let short = (
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_millis(20),
        );
        let gave_up = complete_with_retry(&CancellationToken::new(), short, || async {
            Err(BbsError::Unavailable("gone".into()))
        })
        .await;
        assert!(matches!(gave_up, Err(BbsError::Unavailable(_))));
    }
}
