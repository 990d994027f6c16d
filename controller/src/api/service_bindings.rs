//! Service credential bindings (`/v3/service_credential_bindings`): an app bound to a
//! service instance sees it in `VCAP_SERVICES` from its next start (as in CF: bind,
//! then restart or restage), and its logs go to the instance's syslog drain at once.
//! A binding's credentials (`/details`) are those of its user-provided instance.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::service_instances::{self, instance_credentials};
use super::{
    cf_time, created, href, load_app_to, metadata, ok, paginated, relationship_guid, ApiResult,
    Ctl, JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{self, App, Filter, ServiceBinding, ServiceInstance};
use crate::error::ApiError;
use crate::Controller;

fn present(controller: &Controller, binding: &ServiceBinding) -> Value {
    let mut links = json!({
        "self": href(controller, &format!("/v3/service_credential_bindings/{}", binding.guid)),
        "details": href(controller, &format!("/v3/service_credential_bindings/{}/details", binding.guid)),
        "service_instance": href(controller, &format!("/v3/service_instances/{}", binding.service_instance_guid)),
    });
    let mut relationships = json!({
        "service_instance": {"data": {"guid": binding.service_instance_guid}},
    });
    if let Some(app) = &binding.app_guid {
        links["app"] = href(controller, &format!("/v3/apps/{app}"));
        relationships["app"] = json!({"data": {"guid": app}});
    }
    json!({
        "guid": binding.guid,
        "created_at": cf_time(&binding.created_at),
        "updated_at": cf_time(&binding.updated_at),
        "name": binding.name,
        "type": binding.kind,
        "last_operation": {
            "type": "create",
            "state": "succeeded",
            "description": null,
            "created_at": cf_time(&binding.created_at),
            "updated_at": cf_time(&binding.updated_at),
        },
        "relationships": relationships,
        "metadata": metadata(),
        "links": links,
    })
}

/// Bindings whose instance is in a space the user can see.
fn visible(user: &User, filter: Filter) -> Filter {
    if user.sees_everything() {
        return filter;
    }
    let spaces = user.visible_space_guids();
    filter.in_select(
        "service_instance_guid",
        "SELECT guid FROM service_instances WHERE space_guid IN ({})",
        &spaces,
    )
}

async fn load_to(
    controller: &Controller,
    user: &User,
    guid: &str,
    access: Access,
) -> Result<(ServiceBinding, ServiceInstance), ApiError> {
    let binding = controller
        .db
        .get::<ServiceBinding>(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Service credential binding"))?;
    let instance = service_instances::load_to(
        controller,
        user,
        &binding.service_instance_guid,
        Access::Read,
    )
    .await
    .map_err(|_| ApiError::not_found("Service credential binding"))?;
    user.require_in_space(&instance.space_guid, access)?;
    Ok((binding, instance))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = visible(&user, Filter::new());
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "type", "type");
    let filter = params.filter(filter, "app_guids", "app_guid");
    let filter = params.filter(filter, "service_instance_guids", "service_instance_guid");
    let filter = params.filter_in(
        filter,
        "service_instance_names",
        "service_instance_guid",
        "SELECT guid FROM service_instances WHERE name IN ({})",
    );
    let filter = params.filter_in(
        filter,
        "app_names",
        "app_guid",
        "SELECT guid FROM apps WHERE name IN ({})",
    );
    let (total, bindings) = controller
        .db
        .list::<ServiceBinding>(filter, &params.page)
        .await?;
    let resources = bindings.iter().map(|b| present(&controller, b)).collect();
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (binding, _) = load_to(&controller, &user, &guid, Access::Read).await?;
    Ok(ok(present(&controller, &binding)))
}

/// `GET /v3/service_credential_bindings/:guid/details`: credentials and drain.
pub async fn details(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (_, instance) = load_to(&controller, &user, &guid, Access::ReadSecrets).await?;
    Ok(ok(json!({
        "credentials": instance_credentials(&controller, &instance)?,
        "syslog_drain_url": instance.syslog_drain_url,
        "volume_mounts": [],
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBinding {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    #[serde(default)]
    relationships: Value,
    /// Arbitrary parameters for a broker; user-provided instances take none.
    parameters: Option<Value>,
    /// Accepted as CF clients send it; labels and annotations are not kept yet.
    #[serde(rename = "metadata")]
    _metadata: Option<Value>,
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateBinding>,
) -> ApiResult {
    match body.kind.as_deref() {
        Some("app") => {}
        Some("key") => {
            return Err(ApiError::unprocessable(
                "Service credential bindings of type 'key' are not supported for user-provided service instances",
            ))
        }
        _ => return Err(ApiError::unprocessable("Type must be one of 'app', 'key'")),
    }
    let relationships = json!({"relationships": body.relationships});
    let instance_guid = relationship_guid(&relationships, "service_instance").ok_or_else(|| {
        ApiError::unprocessable("Relationships 'relationships' must include service_instance")
    })?;
    let app_guid = relationship_guid(&relationships, "app")
        .ok_or_else(|| ApiError::unprocessable("Relationships 'relationships' must include app"))?;
    let instance = service_instances::load_to(&controller, &user, &instance_guid, Access::Read)
        .await
        .map_err(|_| {
            ApiError::unprocessable(format!(
                "The service instance could not be found: {instance_guid}"
            ))
        })?;
    let app = load_app_to(&controller, &user, &app_guid, Access::Read)
        .await
        .map_err(|_| ApiError::unprocessable(format!("The app could not be found: {app_guid}")))?;
    user.require_in_space(&app.space_guid, Access::Develop)?;
    if app.space_guid != instance.space_guid {
        return Err(ApiError::unprocessable(
            "The service instance and the app are in different spaces",
        ));
    }
    if body.parameters.is_some() && instance.kind == service_instances::USER_PROVIDED {
        return Err(ApiError::unprocessable(
            "Binding parameters are not supported for user-provided service instances",
        ));
    }
    let name = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let guid = db::new_guid();
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "service_credential_bindings",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.map_or(db::Arg::Null, db::Arg::Text)),
                ("type", "app".into()),
                ("service_instance_guid", instance.guid.clone().into()),
                ("app_guid", app.guid.clone().into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => {
            return Err(ApiError::unprocessable(
                "The app is already bound to the service instance.",
            ))
        }
        other => other?,
    }
    let binding = controller
        .db
        .get::<ServiceBinding>(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Service credential binding"))?;
    crate::services::sync_app_drains(&controller, &app.guid).await?;
    record(
        &controller,
        &user,
        "audit.service_binding.create",
        &binding,
        &app,
    )
    .await;
    Ok(created(present(&controller, &binding)))
}

async fn record(
    controller: &Controller,
    user: &User,
    event: &str,
    binding: &ServiceBinding,
    app: &App,
) {
    let target = Target {
        kind: "service_binding",
        guid: &binding.guid,
        name: binding.name.as_deref().unwrap_or_default(),
    };
    let data = json!({"request": {
        "type": binding.kind,
        "relationships": {
            "app": {"data": {"guid": app.guid}},
            "service_instance": {"data": {"guid": binding.service_instance_guid}},
        },
    }});
    audit::record(controller, user, event, target, Some(&app.space_guid), data).await;
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (binding, _) = load_to(&controller, &user, &guid, Access::Develop).await?;
    remove(&controller, &user, &binding).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes `binding`, stops its drain, and records the event.
pub async fn remove(
    controller: &Controller,
    user: &User,
    binding: &ServiceBinding,
) -> Result<(), ApiError> {
    controller
        .db
        .delete_where(
            "service_credential_bindings",
            Filter::new().eq("guid", &binding.guid),
        )
        .await?;
    if let Some(app_guid) = &binding.app_guid {
        crate::services::sync_app_drains(controller, app_guid).await?;
        if let Some(app) = controller.db.get::<App>(app_guid).await? {
            record(
                controller,
                user,
                "audit.service_binding.delete",
                binding,
                &app,
            )
            .await;
        }
    }
    Ok(())
}
