//! The life of a Task on the cell: start it in the BBS, run its action (staging, or a
//! droplet run once), and complete it with its result or failure reason.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wf_bbs::{Task, TaskAction};
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
            cell.bbs
                .complete_task(&guid, &cell_id, false, "", &result)
                .await
        }
        Some(Err(reason)) => {
            logs.app(LogType::Err, &reason);
            cell.bbs
                .complete_task(&guid, &cell_id, true, &reason, "")
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
