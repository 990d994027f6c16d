//! `/v3/audit_events`: what [`crate::audit`] recorded, filtered by `types`,
//! `target_guids`, `space_guids` and `organization_guids`, oldest first by default.
//! A caller sees the events of the spaces they can see (everything for admins and
//! global auditors).

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::{cf_time, href, ok, paginated, ApiResult, Ctl, ListParams};
use crate::auth::User;
use crate::db::{AuditEvent, Filter};
use crate::error::ApiError;
use crate::Controller;

fn present(controller: &Controller, e: &AuditEvent) -> Value {
    let to_guid = |guid: &Option<String>| guid.as_ref().map(|g| json!({ "guid": g }));
    json!({
        "guid": e.guid,
        "created_at": cf_time(&e.created_at),
        "updated_at": cf_time(&e.updated_at),
        "type": e.event_type,
        "actor": {"guid": e.actor_guid, "type": e.actor_type, "name": e.actor_name},
        "target": {"guid": e.target_guid, "type": e.target_type, "name": e.target_name},
        "data": e.data,
        "space": to_guid(&e.space_guid),
        "organization": to_guid(&e.organization_guid),
        "links": {"self": href(controller, &format!("/v3/audit_events/{}", e.guid))},
    })
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_spaces(Filter::new(), "space_guid");
    let filter = params.filter(filter, "types", "type");
    let filter = params.filter(filter, "target_guids", "target_guid");
    let filter = params.filter(filter, "space_guids", "space_guid");
    let filter = params.filter(filter, "organization_guids", "organization_guid");
    let (total, events) = controller
        .db
        .list::<AuditEvent>(filter, &params.page)
        .await?;
    let resources = events.iter().map(|e| present(&controller, e)).collect();
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let filter = user.scope_spaces(Filter::new().eq("guid", &guid), "space_guid");
    let event = controller
        .db
        .find::<AuditEvent>(filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Event"))?;
    Ok(ok(present(&controller, &event)))
}
