//! App usage events (`/v3/app_usage_events`): one per process whenever an app starts,
//! stops, or changes size while started, with its instance count and memory before and
//! after, for billing and capacity reports. Only admins and global readers see them;
//! admins may purge them and reseed one STARTED event per running process.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::{cf_time, href, ok, paginated, ApiResult, Ctl, ListParams};
use crate::auth::User;
use crate::db::{self, App, AppState, AppUsageEvent, Arg, Filter, Process, Space};
use crate::error::ApiError;
use crate::Controller;

/// A process's size: (instances, memory per instance).
pub type Size = (i64, i64);

/// What an app was before a change: its state and, per process guid, the size its
/// processes had (when they were running).
pub type Before<'a> = Option<(AppState, &'a [(String, Size)])>;

/// Records `state` (`STARTED` or `STOPPED`) for the processes of `app` (only
/// `only_process` when given).
pub async fn record(
    controller: &Controller,
    app: &App,
    state: AppState,
    before: Before<'_>,
    only_process: Option<&str>,
) {
    if let Err(e) = insert(controller, app, state, before, only_process).await {
        tracing::error!(app = %app.guid, error = %e, "cannot record an app usage event");
    }
}

async fn insert(
    controller: &Controller,
    app: &App,
    state: AppState,
    previous: Before<'_>,
    only_process: Option<&str>,
) -> Result<(), sqlx::Error> {
    let Some(space) = controller.db.get::<Space>(&app.space_guid).await? else {
        return Ok(());
    };
    let processes = controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", &app.guid))
        .await?;
    for process in processes
        .iter()
        .filter(|p| only_process.is_none_or(|only| p.guid == only))
    {
        let before = previous
            .and_then(|(_, sizes)| sizes.iter().find(|(guid, _)| *guid == process.guid))
            .map(|(_, size)| *size);
        let now = db::now();
        // A typed NULL: PostgreSQL refuses a text NULL for a BIGINT column.
        let opt = |v: Option<i64>| v.map_or(Arg::NullInt, Arg::Int);
        controller
            .db
            .insert(
                "app_usage_events",
                vec![
                    ("guid", db::new_guid().into()),
                    ("state", state.into()),
                    (
                        "previous_state",
                        previous.map_or(Arg::Null, |(s, _)| s.into()),
                    ),
                    ("app_guid", app.guid.clone().into()),
                    ("app_name", app.name.clone().into()),
                    ("process_guid", process.guid.clone().into()),
                    ("process_type", process.process_type.clone().into()),
                    ("instance_count", Arg::Int(process.instances)),
                    ("previous_instance_count", opt(before.map(|b| b.0))),
                    ("memory_in_mb_per_instance", Arg::Int(process.memory_in_mb)),
                    (
                        "previous_memory_in_mb_per_instance",
                        opt(before.map(|b| b.1)),
                    ),
                    ("space_guid", space.guid.clone().into()),
                    ("space_name", space.name.clone().into()),
                    ("organization_guid", space.organization_guid.clone().into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await?;
    }
    Ok(())
}

/// The sizes of `app`'s processes now, to pass as `previous` after a change.
pub async fn sizes(
    controller: &Controller,
    app_guid: &str,
) -> Result<Vec<(String, Size)>, sqlx::Error> {
    Ok(controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", app_guid))
        .await?
        .into_iter()
        .map(|p| (p.guid, (p.instances, p.memory_in_mb)))
        .collect())
}

fn present(controller: &Controller, e: &AppUsageEvent) -> Value {
    json!({
        "guid": e.guid,
        "created_at": cf_time(&e.created_at),
        "updated_at": cf_time(&e.updated_at),
        "state": {"current": e.state, "previous": e.previous_state},
        "app": {"guid": e.app_guid, "name": e.app_name},
        "process": {"guid": e.process_guid, "type": e.process_type},
        "space": {"guid": e.space_guid, "name": e.space_name},
        "organization": {"guid": e.organization_guid},
        "buildpack": {"guid": null, "name": null},
        "task": {"guid": null, "name": null},
        "memory_in_mb_per_instance": {
            "current": e.memory_in_mb_per_instance,
            "previous": e.previous_memory_in_mb_per_instance,
        },
        "instance_count": {"current": e.instance_count, "previous": e.previous_instance_count},
        "links": {"self": href(controller, &format!("/v3/app_usage_events/{}", e.guid))},
    })
}

/// Admins, admin read-only and global auditors only (CF's roles for usage events).
fn require_reader(user: &User) -> Result<(), ApiError> {
    if user.sees_everything() {
        Ok(())
    } else {
        Err(ApiError::not_authorized())
    }
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    require_reader(&user)?;
    let filter = params.filter(Filter::new(), "guids", "guid");
    // `after_guid`: the events recorded after that one (a consumer's bookmark).
    let filter = match params
        .values("after_guid")
        .and_then(|v| v.into_iter().next())
    {
        Some(after) => {
            let bookmark = controller
                .db
                .get::<AppUsageEvent>(&after)
                .await?
                .ok_or_else(|| {
                    ApiError::BadQueryParameter(format!(
                        "After guid filter must be a valid app usage event guid: {after}"
                    ))
                })?;
            filter.clause(
                "(created_at > ? OR (created_at = ? AND guid > ?))",
                vec![
                    bookmark.created_at.clone().into(),
                    bookmark.created_at.into(),
                    bookmark.guid.into(),
                ],
            )
        }
        None => filter,
    };
    let (total, events) = controller
        .db
        .list::<AppUsageEvent>(filter, &params.page)
        .await?;
    let resources = events.iter().map(|e| present(&controller, e)).collect();
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    require_reader(&user)?;
    let event = controller
        .db
        .get::<AppUsageEvent>(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Event"))?;
    Ok(ok(present(&controller, &event)))
}

/// `POST /v3/app_usage_events/actions/destructively_purge_all_and_reseed` (admins): all
/// events go; each started app gets a STARTED event per process.
pub async fn purge_and_reseed(State(controller): Ctl, user: User) -> ApiResult {
    user.require_admin()?;
    controller
        .db
        .delete_where("app_usage_events", Filter::new())
        .await?;
    let started = Filter::new().eq("state", AppState::Started.as_str());
    for app in controller.db.find::<App>(started).await? {
        insert(&controller, &app, AppState::Started, None, None).await?;
    }
    Ok(ok(json!({})))
}
