//! Tasks: one-off work such as staging. PENDING -> RUNNING -> COMPLETED -> RESOLVING,
//! then deleted; failing or cancelling completes a task with `failed` set.

use crate::models::{BbsEvent, Task, TaskDefinition, TaskState};
use crate::{db, now_ns, validate_guid, Bbs, BbsError, Changes, RepCall, TaskFilter};

/// The failure reason of a cancelled task.
pub const CANCELLED_REASON: &str = "task was cancelled";

impl Bbs {
    pub async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        definition: TaskDefinition,
    ) -> Result<(), BbsError> {
        validate_guid("task_guid", task_guid)?;
        if domain.is_empty() {
            return Err(BbsError::InvalidRecord("domain is empty".into()));
        }
        let now = now_ns();
        let task = Task {
            task_guid: task_guid.to_string(),
            domain: domain.to_string(),
            definition,
            state: TaskState::Pending,
            cell_id: String::new(),
            result: String::new(),
            failed: false,
            failure_reason: String::new(),
            rejection_count: 0,
            created_at: now,
            updated_at: now,
            first_completed_at: 0,
        };
        {
            let mut tx = self.writer.begin().await?;
            if db::task(&mut tx, task_guid).await?.is_some() {
                return Err(BbsError::AlreadyExists {
                    record: format!("Task {task_guid}"),
                });
            }
            db::put_task(&mut tx, &task).await?;
            tx.commit().await?;
        }
        self.apply(Changes {
            auction_tasks: vec![task.task_guid.clone()],
            events: vec![BbsEvent::TaskCreated { task }],
            ..Default::default()
        });
        Ok(())
    }

    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, BbsError> {
        let mut conn = self.pool.acquire().await?;
        db::tasks(&mut conn, filter).await
    }

    pub async fn task_by_guid(&self, task_guid: &str) -> Result<Task, BbsError> {
        let mut conn = self.pool.acquire().await?;
        db::task(&mut conn, task_guid)
            .await?
            .ok_or_else(|| task_not_found(task_guid))
    }

    /// PENDING -> RUNNING on `cell_id`; `Ok(false)` if it already runs there.
    pub async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool, BbsError> {
        if cell_id.is_empty() {
            return Err(BbsError::InvalidRecord("cell_id is empty".into()));
        }
        let changed = self
            .change_task(task_guid, |task, _| match task.state {
                TaskState::Running if task.cell_id == cell_id => Ok(false),
                TaskState::Pending => {
                    task.state = TaskState::Running;
                    task.cell_id = cell_id.to_string();
                    Ok(true)
                }
                _ => Err(transition_error(task, TaskState::Running)),
            })
            .await?;
        Ok(changed.is_some())
    }

    /// Completes a task the cell ran (a PENDING one too: a fast cell may finish before
    /// it reports the start).
    pub async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<(), BbsError> {
        self.change_task(task_guid, |task, now| {
            match task.state {
                TaskState::Running if task.cell_id == cell_id => {}
                TaskState::Pending => task.cell_id = cell_id.to_string(),
                _ => return Err(transition_error(task, TaskState::Completed)),
            }
            complete(task, failed, failure_reason, now);
            task.result = if failed {
                String::new()
            } else {
                result.to_string()
            };
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// Cancels a task: it completes as failed ("task was cancelled") and its cell stops it.
    pub async fn cancel_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let before = self
            .change_task(task_guid, |task, now| match task.state {
                TaskState::Pending | TaskState::Running => {
                    complete(task, true, CANCELLED_REASON, now);
                    Ok(true)
                }
                _ => Err(transition_error(task, TaskState::Completed)),
            })
            .await?;
        if let Some(before) = before.filter(|t| t.state == TaskState::Running) {
            let cell = self
                .cells()
                .await?
                .into_iter()
                .find(|c| c.cell_id == before.cell_id);
            if let Some(cell) = cell {
                self.apply(Changes {
                    rep_calls: vec![RepCall::CancelTask {
                        rep_url: cell.rep_url,
                        task_guid: task_guid.to_string(),
                    }],
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    /// COMPLETED -> RESOLVING: the consumer took the result.
    pub async fn resolving_task(&self, task_guid: &str) -> Result<(), BbsError> {
        self.change_task(task_guid, |task, _| match task.state {
            TaskState::Completed => {
                task.state = TaskState::Resolving;
                Ok(true)
            }
            _ => Err(transition_error(task, TaskState::Resolving)),
        })
        .await?;
        Ok(())
    }

    /// Deletes a RESOLVING task (or a COMPLETED one whose consumer skips RESOLVING).
    pub async fn delete_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let task = {
            let mut tx = self.writer.begin().await?;
            let task = db::task(&mut tx, task_guid)
                .await?
                .ok_or_else(|| task_not_found(task_guid))?;
            if !matches!(task.state, TaskState::Completed | TaskState::Resolving) {
                return Err(BbsError::InvalidTransition {
                    record: format!("Task {task_guid}"),
                    from: task.state.as_str().to_string(),
                    to: "deleted".to_string(),
                });
            }
            db::delete_task(&mut tx, task_guid).await?;
            tx.commit().await?;
            task
        };
        self.apply(Changes {
            events: vec![BbsEvent::TaskRemoved { task }],
            ..Default::default()
        });
        Ok(())
    }

    /// Reads the task, applies `change` (which says whether it changed anything), and
    /// stores and announces the result; answers the task as it was if it changed.
    pub(crate) async fn change_task<F>(
        &self,
        task_guid: &str,
        change: F,
    ) -> Result<Option<Task>, BbsError>
    where
        F: FnOnce(&mut Task, i64) -> Result<bool, BbsError>,
    {
        let now = now_ns();
        let (before, after) = {
            let mut tx = self.writer.begin().await?;
            let mut task = db::task(&mut tx, task_guid)
                .await?
                .ok_or_else(|| task_not_found(task_guid))?;
            let before = task.clone();
            if !change(&mut task, now)? {
                return Ok(None);
            }
            task.updated_at = now;
            db::put_task(&mut tx, &task).await?;
            tx.commit().await?;
            (before, task)
        };
        self.apply(Changes {
            events: vec![BbsEvent::TaskChanged {
                before: before.clone(),
                after,
            }],
            ..Default::default()
        });
        Ok(Some(before))
    }
}

/// Moves a task to COMPLETED.
pub(crate) fn complete(task: &mut Task, failed: bool, failure_reason: &str, now: i64) {
    task.state = TaskState::Completed;
    task.failed = failed;
    task.failure_reason = if failed {
        crate::truncate_reason(failure_reason)
    } else {
        String::new()
    };
    task.first_completed_at = now;
}

fn task_not_found(task_guid: &str) -> BbsError {
    BbsError::NotFound(format!("Task {task_guid}"))
}

fn transition_error(task: &Task, to: TaskState) -> BbsError {
    BbsError::InvalidTransition {
        record: format!("Task {}", task.task_guid),
        from: task.state.as_str().to_string(),
        to: to.as_str().to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use wf_messaging::Bus;

    use super::*;
    use crate::models::{StageAction, TaskAction, CF_STAGING_DOMAIN};
    use crate::testing::{databases, open};

    pub fn staging(memory_mb: u32) -> TaskDefinition {
        TaskDefinition {
            memory_mb,
            disk_mb: 1024,
            action: TaskAction::Stage(StageAction {
                package_uri: "http://cc/package".into(),
                droplet_upload_uri: "http://cc/droplet".into(),
                buildpacks: vec![],
                skip_detect: false,
                buildpack_cache_download_uri: None,
                buildpack_cache_upload_uri: None,
                env: vec![],
            }),
            log_guid: "app-guid".into(),
            log_source: "STG".into(),
            annotation: String::new(),
            placement_tags: vec![],
        }
    }

    #[tokio::test]
    async fn task_lifecycle() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_task("build-1", CF_STAGING_DOMAIN, staging(1024))
                .await
                .unwrap();
            assert_eq!(
                bbs.task_by_guid("build-1").await.unwrap().state,
                TaskState::Pending
            );

            assert!(bbs.start_task("build-1", "cell-0").await.unwrap());
            assert!(!bbs.start_task("build-1", "cell-0").await.unwrap());
            assert!(matches!(
                bbs.start_task("build-1", "cell-1").await,
                Err(BbsError::InvalidTransition { .. })
            ));
            assert!(matches!(
                bbs.complete_task("build-1", "cell-1", false, "", "{}")
                    .await,
                Err(BbsError::InvalidTransition { .. })
            ));
            bbs.complete_task("build-1", "cell-0", false, "", r#"{"kind":"server"}"#)
                .await
                .unwrap();
            let task = bbs.task_by_guid("build-1").await.unwrap();
            assert_eq!(task.state, TaskState::Completed);
            assert_eq!(task.result, r#"{"kind":"server"}"#);
            assert!(!task.failed);
            assert!(task.first_completed_at > 0);

            bbs.resolving_task("build-1").await.unwrap();
            bbs.delete_task("build-1").await.unwrap();
            assert!(matches!(
                bbs.task_by_guid("build-1").await,
                Err(BbsError::NotFound(_))
            ));
        }
    }

    #[tokio::test]
    async fn cancelled_task_completes_as_failed() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_task("t1", CF_STAGING_DOMAIN, staging(64))
                .await
                .unwrap();
            bbs.cancel_task("t1").await.unwrap();
            let task = bbs.task_by_guid("t1").await.unwrap();
            assert!(task.failed);
            assert_eq!(task.failure_reason, CANCELLED_REASON);
            assert!(bbs.cancel_task("t1").await.is_err());
            assert!(matches!(
                bbs.desire_task("t1", CF_STAGING_DOMAIN, staging(64)).await,
                Err(BbsError::AlreadyExists { .. })
            ));
        }
    }
}
