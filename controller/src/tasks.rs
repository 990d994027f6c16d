//! CF tasks (`cf run-task`): one-off runs of an app's current droplet. A task is a row
//! of the `tasks` table and a BBS Task in domain `cf-tasks` (task guid = CC task guid)
//! whose action runs the droplet with the task's command. [`run`] follows the BBS
//! (events, plus a rescan every second for events it missed): a task the cell starts
//! becomes RUNNING, a completed one SUCCEEDED or FAILED (with the cell's failure
//! reason), and the BBS task is then deleted.

use sqlx::any::AnyRow;
use sqlx::Row as _;
use wf_bbs::{
    EnvVar, RunAction, Task, TaskAction, TaskDefinition, TaskFilter, TaskState, CF_TASKS_DOMAIN,
};

use crate::db::{self, App, Arg, Droplet, Filter, Process, Record};
use crate::error::ApiError;
use crate::nsync::AppContext;
use crate::signed_urls::{self, droplet_download_path};
use crate::task_follower::{TaskFollower, LOST_TASK_GRACE_SECS};
use crate::Controller;

/// How long a task's droplet URL stays valid (a task may wait for a cell a while).
const DROPLET_URL_VALIDITY_SECS: i64 = 24 * 3600;
/// The failure reason of a cancelled task (Diego's).
pub const CANCELLED_REASON: &str = "task was cancelled";
const LOST_REASON: &str = "task was lost";

/// A task's CC state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcTaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceling,
}

impl CcTaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            CcTaskState::Pending => "PENDING",
            CcTaskState::Running => "RUNNING",
            CcTaskState::Succeeded => "SUCCEEDED",
            CcTaskState::Failed => "FAILED",
            CcTaskState::Canceling => "CANCELING",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, CcTaskState::Succeeded | CcTaskState::Failed)
    }
}

impl std::str::FromStr for CcTaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "PENDING" => CcTaskState::Pending,
            "RUNNING" => CcTaskState::Running,
            "SUCCEEDED" => CcTaskState::Succeeded,
            "FAILED" => CcTaskState::Failed,
            "CANCELING" => CcTaskState::Canceling,
            other => return Err(format!("unknown task state {other:?}")),
        })
    }
}

impl From<CcTaskState> for Arg {
    fn from(s: CcTaskState) -> Arg {
        Arg::Text(s.as_str().to_string())
    }
}

/// A row of `tasks`.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub guid: String,
    pub app_guid: String,
    pub name: String,
    pub command: String,
    pub state: CcTaskState,
    pub failure_reason: Option<String>,
    pub sequence_id: i64,
    pub memory_in_mb: i64,
    pub disk_in_mb: i64,
    pub droplet_guid: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for TaskRecord {
    const TABLE: &'static str = "tasks";
    const COLUMNS: &'static str = "guid, app_guid, name, command, state, failure_reason, \
        sequence_id, memory_in_mb, disk_in_mb, droplet_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] =
        &["created_at", "updated_at", "name", "state", "sequence_id"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let state: String = row.try_get("state")?;
        Ok(TaskRecord {
            guid: row.try_get("guid")?,
            app_guid: row.try_get("app_guid")?,
            name: row.try_get("name")?,
            command: row.try_get("command")?,
            state: state
                .parse()
                .map_err(|e: String| sqlx::Error::ColumnDecode {
                    index: "state".into(),
                    source: e.into(),
                })?,
            failure_reason: row.try_get("failure_reason")?,
            sequence_id: row.try_get("sequence_id")?,
            memory_in_mb: row.try_get("memory_in_mb")?,
            disk_in_mb: row.try_get("disk_in_mb")?,
            droplet_guid: row.try_get("droplet_guid")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// The log source type of task `name`'s output.
pub fn log_source(name: &str) -> String {
    format!("APP/TASK/{name}")
}

/// The app's environment as its LRPs get it (`VCAP_APPLICATION`, `VCAP_SERVICES`, the
/// app's variables), and the placement tags of its isolation segment.
async fn task_env(
    controller: &Controller,
    app: &App,
) -> Result<(Vec<EnvVar>, Vec<String>), sqlx::Error> {
    let web: Option<Process> = controller
        .db
        .find(Filter::new().eq("app_guid", &app.guid).eq("type", "web"))
        .await?
        .into_iter()
        .next();
    let context = AppContext::load(controller, app.clone()).await?;
    Ok((context.running_env(web.as_ref()), context.placement_tags()))
}

/// Desires the BBS task of `task` (running `droplet`, whose checksum is `checksum`); if
/// the BBS refuses it, the task fails.
pub async fn start(
    controller: &Controller,
    app: &App,
    droplet: &Droplet,
    checksum: &str,
    task: &TaskRecord,
) -> Result<(), ApiError> {
    let expires = signed_urls::now_unix() + DROPLET_URL_VALIDITY_SECS;
    let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let (env, placement_tags) = task_env(controller, app).await?;
    let definition = TaskDefinition {
        memory_mb: clamp(task.memory_in_mb),
        disk_mb: clamp(task.disk_in_mb),
        action: TaskAction::Run(RunAction {
            droplet_uri: controller
                .signer
                .url(&droplet_download_path(&droplet.guid), expires),
            droplet_sha256: checksum.to_string(),
            command: task.command.clone(),
            env,
            log_rate_limit_bytes_per_second: None,
        }),
        log_guid: app.guid.clone(),
        log_source: log_source(&task.name),
        annotation: serde_json::json!({"app_guid": app.guid, "task_guid": task.guid}).to_string(),
        placement_tags,
    };
    if let Err(e) = controller
        .bbs
        .desire_task(&task.guid, CF_TASKS_DOMAIN, definition)
        .await
    {
        tracing::warn!(task = %task.guid, error = %e, "cannot desire the task");
        finish(
            controller,
            &task.guid,
            CcTaskState::Failed,
            Some(&format!("task could not be requested: {e}")),
        )
        .await?;
    }
    Ok(())
}

/// Moves an unfinished task to `state`; returns whether it was unfinished.
async fn finish(
    controller: &Controller,
    guid: &str,
    state: CcTaskState,
    failure_reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let changed = controller
        .db
        .exec(
            "UPDATE tasks SET state = $1, failure_reason = $2, updated_at = $3 \
             WHERE guid = $4 AND state IN ($5, $6, $7)",
            vec![
                state.into(),
                failure_reason.map(str::to_string).into(),
                db::now().into(),
                guid.into(),
                CcTaskState::Pending.into(),
                CcTaskState::Running.into(),
                CcTaskState::Canceling.into(),
            ],
        )
        .await?;
    Ok(changed > 0)
}

/// Marks a task CANCELING and cancels its BBS task; [`run`] records it FAILED.
pub async fn cancel(controller: &Controller, task: &TaskRecord) -> Result<(), ApiError> {
    controller
        .db
        .exec(
            "UPDATE tasks SET state = $1, updated_at = $2 WHERE guid = $3 AND state IN ($4, $5)",
            vec![
                CcTaskState::Canceling.into(),
                db::now().into(),
                task.guid.clone().into(),
                CcTaskState::Pending.into(),
                CcTaskState::Running.into(),
            ],
        )
        .await?;
    match controller.bbs.cancel_task(&task.guid).await {
        Ok(()) => {}
        // Already completed (its result wins) or gone: the rescan settles it.
        Err(e) => tracing::debug!(task = %task.guid, error = %e, "cannot cancel the BBS task"),
    }
    match controller.bbs.task_by_guid(&task.guid).await {
        Ok(bbs_task)
            if bbs_task.state != TaskState::Pending && bbs_task.state != TaskState::Running =>
        {
            complete(controller, &bbs_task).await?;
        }
        Ok(_) => {}
        Err(_) => {
            finish(
                controller,
                &task.guid,
                CcTaskState::Failed,
                Some(CANCELLED_REASON),
            )
            .await?;
        }
    }
    Ok(())
}

/// Records a RUNNING BBS task on its CC task.
async fn started(controller: &Controller, task: &Task) -> Result<(), sqlx::Error> {
    controller
        .db
        .exec(
            "UPDATE tasks SET state = $1, updated_at = $2 WHERE guid = $3 AND state = $4",
            vec![
                CcTaskState::Running.into(),
                db::now().into(),
                task.task_guid.clone().into(),
                CcTaskState::Pending.into(),
            ],
        )
        .await?;
    Ok(())
}

/// Records a completed BBS task on its CC task, then deletes the BBS task.
async fn complete(controller: &Controller, task: &Task) -> Result<(), sqlx::Error> {
    if let Some(record) = controller.db.get::<TaskRecord>(&task.task_guid).await? {
        let changed = if record.state == CcTaskState::Canceling {
            finish(
                controller,
                &record.guid,
                CcTaskState::Failed,
                Some(CANCELLED_REASON),
            )
            .await?
        } else if task.failed {
            let reason = if task.failure_reason.is_empty() {
                "task failed"
            } else {
                task.failure_reason.as_str()
            };
            finish(controller, &record.guid, CcTaskState::Failed, Some(reason)).await?
        } else {
            finish(controller, &record.guid, CcTaskState::Succeeded, None).await?
        };
        if changed {
            let outcome = if task.failed { "failed" } else { "succeeded" };
            controller.emit_log(
                &record.app_guid,
                "API",
                &format!("Task {} ({}) {outcome}", record.name, record.guid),
            );
        }
    }
    if task.state == TaskState::Completed {
        if let Err(e) = controller.bbs.resolving_task(&task.task_guid).await {
            tracing::debug!(task = %task.task_guid, error = %e, "cannot resolve the task");
        }
    }
    if let Err(e) = controller.bbs.delete_task(&task.task_guid).await {
        tracing::debug!(task = %task.task_guid, error = %e, "cannot delete the task");
    }
    Ok(())
}

/// Follows every BBS task of the domain, and fails unfinished tasks whose BBS task is gone.
async fn rescan(controller: &Controller) -> Result<(), ApiError> {
    let filter = TaskFilter {
        domain: Some(CF_TASKS_DOMAIN.to_string()),
        ..Default::default()
    };
    let tasks = controller.bbs.tasks(&filter).await?;
    for task in &tasks {
        match task.state {
            TaskState::Running => started(controller, task).await?,
            TaskState::Completed | TaskState::Resolving => complete(controller, task).await?,
            TaskState::Pending => {}
        }
    }
    let unfinished: Vec<TaskRecord> = controller
        .db
        .find(Filter::new().clause(
            "state IN (?, ?, ?)",
            vec![
                CcTaskState::Pending.into(),
                CcTaskState::Running.into(),
                CcTaskState::Canceling.into(),
            ],
        ))
        .await?;
    let now = signed_urls::now_unix();
    for record in unfinished {
        if tasks.iter().any(|t| t.task_guid == record.guid) {
            continue;
        }
        if record.state == CcTaskState::Canceling {
            finish(
                controller,
                &record.guid,
                CcTaskState::Failed,
                Some(CANCELLED_REASON),
            )
            .await?;
        } else if now - db::unix_seconds(&record.created_at) > LOST_TASK_GRACE_SECS {
            finish(
                controller,
                &record.guid,
                CcTaskState::Failed,
                Some(LOST_REASON),
            )
            .await?;
        }
    }
    Ok(())
}

/// CF tasks: a CC task follows its BBS Task in `cf-tasks`.
pub(crate) struct CfTasks;

impl TaskFollower for CfTasks {
    const DOMAIN: &'static str = CF_TASKS_DOMAIN;
    const WHAT: &'static str = "task";

    async fn rescan(controller: &Controller) -> Result<(), ApiError> {
        rescan(controller).await
    }

    async fn changed(controller: &Controller, task: &Task) -> Result<(), sqlx::Error> {
        match task.state {
            TaskState::Running => started(controller, task).await,
            TaskState::Completed => complete(controller, task).await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for state in [
            CcTaskState::Pending,
            CcTaskState::Running,
            CcTaskState::Succeeded,
            CcTaskState::Failed,
            CcTaskState::Canceling,
        ] {
            assert_eq!(state.as_str().parse::<CcTaskState>(), Ok(state));
        }
        assert!("DONE".parse::<CcTaskState>().is_err());
        assert!(CcTaskState::Failed.is_final() && !CcTaskState::Canceling.is_final());
        assert_eq!(log_source("t1"), "APP/TASK/t1");
    }
}
