//! Tasks (`cf run-task`): create one on an app's current droplet, list and show them,
//! cancel one. The BBS side lives in [`crate::tasks`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cf_time, created, href, load_app, load_app_for_write, metadata, ok, paginated, to_one,
    ApiResult, Ctl, JsonBody, ListParams,
};
use crate::audit;
use crate::auth::User;
use crate::db::{self, Arg, Droplet, DropletState, Filter, Process};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::tasks::{CcTaskState, TaskRecord};
use crate::Controller;

/// Resources of a task when neither the request nor the web process say.
const DEFAULT_MEMORY_MB: i64 = 256;
const DEFAULT_DISK_MB: i64 = 1024;
/// Longest task name and command accepted.
const MAX_NAME_LEN: usize = 255;
const MAX_COMMAND_LEN: usize = 4096;

pub fn present_task(controller: &Controller, task: &TaskRecord) -> Value {
    json!({
        "guid": task.guid,
        "sequence_id": task.sequence_id,
        "name": task.name,
        "command": task.command,
        "state": task.state.as_str(),
        "memory_in_mb": task.memory_in_mb,
        "disk_in_mb": task.disk_in_mb,
        "log_rate_limit_in_bytes_per_second": -1,
        "result": {"failure_reason": task.failure_reason},
        "droplet_guid": task.droplet_guid,
        "relationships": {"app": to_one(Some(&task.app_guid))},
        "metadata": metadata(),
        "created_at": cf_time(&task.created_at),
        "updated_at": cf_time(&task.updated_at),
        "links": {
            "self": href(controller, &format!("/v3/tasks/{}", task.guid)),
            "app": href(controller, &format!("/v3/apps/{}", task.app_guid)),
            "cancel": {
                "href": format!("{}/v3/tasks/{}/actions/cancel", controller.base_url, task.guid),
                "method": "POST",
            },
            "droplet": href(controller, &format!("/v3/droplets/{}", task.droplet_guid)),
        },
    })
}

/// A task as CF shows it, with its labels and annotations.
async fn show_task(controller: &Controller, task: &TaskRecord) -> Result<Value, ApiError> {
    let shown = present_task(controller, task);
    Ok(metadata::filled(&controller.db, "tasks", shown).await?)
}

async fn list_filtered(controller: &Controller, params: &ListParams, filter: Filter) -> ApiResult {
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "states", "state");
    let filter = params.filter(filter, "app_guids", "app_guid");
    let filter = params.filter_in(
        filter,
        "space_guids",
        "app_guid",
        "SELECT guid FROM apps WHERE space_guid IN ({})",
    );
    let filter = params.label_selector(filter, "tasks")?;
    let (total, tasks) = controller
        .db
        .list::<TaskRecord>(filter, &params.page)
        .await?;
    let mut resources: Vec<Value> = tasks.iter().map(|t| present_task(controller, t)).collect();
    metadata::fill(&controller.db, "tasks", &mut resources).await?;
    Ok(paginated(controller, params, total, resources))
}

/// `GET /v3/tasks`.
pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_apps(Filter::new(), "app_guid");
    list_filtered(&controller, &params, filter).await
}

/// `GET /v3/apps/:guid/tasks`.
pub async fn list_for_app(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    list_filtered(
        &controller,
        &params,
        Filter::new().eq("app_guid", &app.guid),
    )
    .await
}

async fn load_task(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<TaskRecord, ApiError> {
    let task: TaskRecord = controller
        .db
        .get(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Task"))?;
    load_app(controller, user, &task.app_guid)
        .await
        .map_err(|_| ApiError::not_found("Task"))?;
    Ok(task)
}

/// `GET /v3/tasks/:guid`.
pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let task = load_task(&controller, &user, &guid).await?;
    Ok(ok(show_task(&controller, &task).await?))
}

/// `PATCH /v3/tasks/:guid`: a task's metadata, by those who may run tasks of its app.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let task = load_task(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &task.app_guid).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "tasks", &guid).await?;
    Ok(ok(show_task(&controller, &task).await?))
}

#[derive(Debug, Deserialize)]
pub struct CreateTask {
    command: Option<String>,
    name: Option<String>,
    memory_in_mb: Option<i64>,
    disk_in_mb: Option<i64>,
    droplet_guid: Option<String>,
    metadata: Option<Value>,
}

/// A random task name: 8 hex digits, as CF makes them.
fn random_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn validate(body: &CreateTask) -> Result<(), ApiError> {
    if let Some(name) = &body.name {
        if name.trim().is_empty() {
            return Err(ApiError::unprocessable("Name can't be blank"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ApiError::unprocessable(format!(
                "Name is too long (maximum is {MAX_NAME_LEN} characters)"
            )));
        }
        if name.chars().any(|c| c.is_control() || c == '/') {
            return Err(ApiError::unprocessable(
                "Name must not contain control characters or '/'",
            ));
        }
    }
    if let Some(command) = &body.command {
        if command.trim().is_empty() {
            return Err(ApiError::unprocessable("Command can't be blank"));
        }
        if command.len() > MAX_COMMAND_LEN {
            return Err(ApiError::unprocessable(format!(
                "Command is too long (maximum is {MAX_COMMAND_LEN} characters)"
            )));
        }
    }
    for (field, value) in [
        ("Memory in mb", body.memory_in_mb),
        ("Disk in mb", body.disk_in_mb),
    ] {
        if matches!(value, Some(n) if n <= 0 || n > i64::from(u32::MAX)) {
            return Err(ApiError::unprocessable(format!(
                "{field} must be greater than 0"
            )));
        }
    }
    Ok(())
}

/// `POST /v3/apps/:guid/tasks`: records the task (PENDING, next sequence id of the
/// app) and desires its BBS task.
pub async fn create(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<CreateTask>,
) -> ApiResult {
    validate(&body)?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let app = load_app_for_write(&controller, &user, &guid).await?;
    super::feature_flags::require(&controller, &user, "task_creation").await?;
    let droplet_guid = body
        .droplet_guid
        .clone()
        .or_else(|| app.droplet_guid.clone())
        .ok_or_else(|| {
            ApiError::unprocessable("Task must have a droplet. Assign current droplet to app.")
        })?;
    let droplet = controller
        .db
        .get::<Droplet>(&droplet_guid)
        .await?
        .filter(|d| d.app_guid == app.guid)
        .ok_or_else(|| {
            ApiError::unprocessable("Task must have a droplet. Assign current droplet to app.")
        })?;
    let checksum = match (&droplet.state, &droplet.checksum) {
        (DropletState::Staged, Some(checksum)) => checksum.clone(),
        _ => {
            return Err(ApiError::unprocessable(
                "Task must have a droplet. Assign current droplet to app.",
            ))
        }
    };
    let web: Option<Process> = controller
        .db
        .find(Filter::new().eq("app_guid", &app.guid).eq("type", "web"))
        .await?
        .into_iter()
        .next();
    let command = match &body.command {
        Some(command) => command.trim().to_string(),
        None => web
            .as_ref()
            .and_then(|p| p.command.clone())
            .or_else(|| droplet.process_types.get("web").cloned())
            .unwrap_or_default(),
    };
    let memory = body
        .memory_in_mb
        .or_else(|| web.as_ref().map(|p| p.memory_in_mb))
        .unwrap_or(DEFAULT_MEMORY_MB);
    let disk = body
        .disk_in_mb
        .or_else(|| web.as_ref().map(|p| p.disk_in_mb))
        .unwrap_or(DEFAULT_DISK_MB);
    crate::quotas::check_task(&controller, &app, memory).await?;
    let name = body.name.clone().unwrap_or_else(random_name);

    let task_guid = db::new_guid();
    let mut attempts = 0;
    loop {
        let sequence_id = controller
            .db
            .find::<TaskRecord>(Filter::new().eq("app_guid", &app.guid))
            .await?
            .iter()
            .map(|t| t.sequence_id)
            .max()
            .unwrap_or(0)
            + 1;
        let now = db::now();
        let inserted = controller
            .db
            .insert(
                "tasks",
                vec![
                    ("guid", task_guid.clone().into()),
                    ("app_guid", app.guid.clone().into()),
                    ("name", name.clone().into()),
                    ("command", command.clone().into()),
                    ("state", CcTaskState::Pending.into()),
                    ("failure_reason", Arg::Null),
                    ("sequence_id", Arg::Int(sequence_id)),
                    ("memory_in_mb", Arg::Int(memory)),
                    ("disk_in_mb", Arg::Int(disk)),
                    ("droplet_guid", droplet.guid.clone().into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await;
        match inserted {
            Ok(()) => break,
            // Another task of the app took this sequence id: take the next one.
            Err(e) if db::is_unique_violation(&e) && attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
    labels.apply(&controller.db, "tasks", &task_guid).await?;
    let task: TaskRecord = controller
        .db
        .get(&task_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Task"))?;
    controller.emit_log(
        &app.guid,
        "API",
        &format!(
            "Creating task {} ({}) for app with guid {}",
            task.name, task.guid, app.guid
        ),
    );
    crate::tasks::start(&controller, &app, &droplet, &checksum, &task).await?;
    let task: TaskRecord = controller
        .db
        .get(&task_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Task"))?;
    let data = json!({"task_guid": task.guid, "request": {"name": task.name, "command": "[PRIVATE DATA HIDDEN]"}});
    audit::record_app(&controller, &user, "audit.app.task.create", &app, data).await;
    Ok(created(show_task(&controller, &task).await?))
}

/// `POST /v3/tasks/:guid/actions/cancel`: CANCELING, then FAILED ("task was cancelled").
pub async fn cancel(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let task = load_task(&controller, &user, &guid).await?;
    let app = load_app_for_write(&controller, &user, &task.app_guid).await?;
    if task.state.is_final() {
        return Err(ApiError::unprocessable(format!(
            "Task state is {} and therefore cannot be canceled",
            task.state.as_str()
        )));
    }
    crate::tasks::cancel(&controller, &task).await?;
    let data = json!({"task_guid": task.guid, "request": {"name": task.name}});
    audit::record_app(&controller, &user, "audit.app.task.cancel", &app, data).await;
    let task = load_task(&controller, &user, &guid).await?;
    let shown = show_task(&controller, &task).await?;
    Ok((StatusCode::ACCEPTED, Json(shown)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: Value) -> CreateTask {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn bad_task_requests_are_unprocessable() {
        assert!(validate(&body(json!({}))).is_ok());
        assert!(validate(&body(json!({"command": "app.wasm task", "name": "t1"}))).is_ok());
        for bad in [
            json!({"name": ""}),
            json!({"name": "a/b"}),
            json!({"command": "  "}),
            json!({"memory_in_mb": 0}),
            json!({"disk_in_mb": -5}),
        ] {
            let err = validate(&body(bad.clone())).unwrap_err();
            assert!(matches!(err, ApiError::Unprocessable(_)), "{bad}: {err:?}");
        }
        assert_eq!(random_name().len(), 8);
    }
}
