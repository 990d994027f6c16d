//! Service credential bindings (`/v3/service_credential_bindings`): an app bound to a
//! service instance sees it in `VCAP_SERVICES` from its next start (as in CF: bind,
//! then restart or restage), and its logs go to the instance's syslog drain at once.
//! A binding's credentials (`/details`) are those of its user-provided instance, or
//! those the broker gave a managed instance's binding (`app`) or service key (`key`):
//! those bindings are made and removed by the broker in a job (`service_operations`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::service_instances::{self, instance_credentials, MANAGED};
use super::{
    cf_time, created, href, load_app_to, metadata, ok, paginated, relationship_guid, ApiResult,
    Ctl, JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{self, Arg, Filter, ServiceBinding, ServiceInstance, ServicePlan};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::service_operations::{self, decrypt_object, encrypt_json};
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
        "last_operation": service_instances::last_operation(&binding.operation, &binding.created_at, &binding.updated_at),
        "relationships": relationships,
        "metadata": metadata(),
        "links": links,
    })
}

/// A binding as CF shows it, with its labels and annotations.
async fn show_binding(
    controller: &Controller,
    binding: &ServiceBinding,
) -> Result<Value, ApiError> {
    let shown = present(controller, binding);
    Ok(metadata::filled(&controller.db, "service_credential_bindings", shown).await?)
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
    let filter = params.label_selector(filter, "service_credential_bindings")?;
    let (total, bindings) = controller
        .db
        .list::<ServiceBinding>(filter, &params.page)
        .await?;
    let mut resources: Vec<Value> = bindings.iter().map(|b| present(&controller, b)).collect();
    metadata::fill(
        &controller.db,
        "service_credential_bindings",
        &mut resources,
    )
    .await?;
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (binding, _) = load_to(&controller, &user, &guid, Access::Read).await?;
    Ok(ok(show_binding(&controller, &binding).await?))
}

/// `PATCH /v3/service_credential_bindings/:guid`: a binding's metadata, by those who
/// may bind in its space.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let (binding, _) = load_to(&controller, &user, &guid, Access::Develop).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels
        .apply(&controller.db, "service_credential_bindings", &guid)
        .await?;
    Ok(ok(show_binding(&controller, &binding).await?))
}

/// `GET /v3/service_credential_bindings/:guid/details`: credentials and drain.
pub async fn details(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (binding, instance) = load_to(&controller, &user, &guid, Access::ReadSecrets).await?;
    if instance.kind == MANAGED {
        if binding.operation.state.as_deref() != Some(service_operations::SUCCEEDED) {
            return Err(ApiError::not_found("Service credential binding"));
        }
        return Ok(ok(json!({
            "credentials": decrypt_object(&controller, binding.credentials.as_deref())?.unwrap_or_default(),
            "syslog_drain_url": binding.syslog_drain_url,
            "volume_mounts": [],
        })));
    }
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
    metadata: Option<Value>,
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateBinding>,
) -> ApiResult {
    let key = match body.kind.as_deref() {
        Some("app") => false,
        Some("key") => true,
        _ => return Err(ApiError::unprocessable("Type must be one of 'app', 'key'")),
    };
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let relationships = json!({"relationships": body.relationships});
    let instance_guid = relationship_guid(&relationships, "service_instance").ok_or_else(|| {
        ApiError::unprocessable("Relationships 'relationships' must include service_instance")
    })?;
    let instance = service_instances::load_to(&controller, &user, &instance_guid, Access::Read)
        .await
        .map_err(|_| {
            ApiError::unprocessable(format!(
                "The service instance could not be found: {instance_guid}"
            ))
        })?;
    if key && instance.kind != MANAGED {
        return Err(ApiError::unprocessable(
            "Service credential bindings of type 'key' are not supported for user-provided service instances",
        ));
    }
    let app = match relationship_guid(&relationships, "app") {
        Some(app_guid) if !key => Some(
            load_app_to(&controller, &user, &app_guid, Access::Read)
                .await
                .map_err(|_| {
                    ApiError::unprocessable(format!("The app could not be found: {app_guid}"))
                })?,
        ),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "Relationships 'relationships' of a key must not include app",
            ))
        }
        None if key => None,
        None => {
            return Err(ApiError::unprocessable(
                "Relationships 'relationships' must include app",
            ))
        }
    };
    user.require_in_space(&instance.space_guid, Access::Develop)?;
    if let Some(app) = &app {
        if app.space_guid != instance.space_guid {
            return Err(ApiError::unprocessable(
                "The service instance and the app are in different spaces",
            ));
        }
    }
    if body.parameters.is_some() && instance.kind == service_instances::USER_PROVIDED {
        return Err(ApiError::unprocessable(
            "Binding parameters are not supported for user-provided service instances",
        ));
    }
    if key
        && body
            .name
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .is_empty()
    {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    if instance.kind == MANAGED {
        check_bindable(&controller, &instance).await?;
    }
    let name = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let parameters = match &body.parameters {
        None => Arg::Null,
        Some(p) if p.is_object() => encrypt_json(&controller, p)?,
        Some(_) => return Err(ApiError::unprocessable("Parameters must be an object")),
    };
    if key && name_in_use(&controller, &instance.guid, &name).await? {
        return Err(ApiError::unprocessable(format!(
            "The binding name is invalid. Key binding names must be unique. The service instance already has a key binding with name '{}'.",
            name.unwrap_or_default()
        )));
    }
    let guid = db::new_guid();
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "service_credential_bindings",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.map_or(db::Arg::Null, db::Arg::Text)),
                ("type", (if key { "key" } else { "app" }).into()),
                ("service_instance_guid", instance.guid.clone().into()),
                ("app_guid", app.as_ref().map(|a| a.guid.clone()).into()),
                ("parameters", parameters),
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
    labels
        .apply(&controller.db, "service_credential_bindings", &guid)
        .await?;
    let binding = controller
        .db
        .get::<ServiceBinding>(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Service credential binding"))?;
    record(&controller, &user, "create", &binding, &instance).await;
    if instance.kind == MANAGED {
        let accepted = service_instances::start_operation(
            &controller,
            &user,
            "service_credential_bindings",
            &binding.guid,
            service_operations::CREATE,
            "service_bindings.create",
        )
        .await?;
        return Ok(accepted);
    }
    if let Some(app) = &app {
        crate::services::sync_app_drains(&controller, &app.guid).await?;
    }
    Ok(created(show_binding(&controller, &binding).await?))
}

/// Whether the instance already has a key named `name`.
async fn name_in_use(
    controller: &Controller,
    instance_guid: &str,
    name: &Option<String>,
) -> Result<bool, ApiError> {
    let Some(name) = name else {
        return Ok(false);
    };
    let found: Vec<ServiceBinding> = controller
        .db
        .find(
            Filter::new()
                .eq("service_instance_guid", instance_guid)
                .eq("name", name),
        )
        .await?;
    Ok(!found.is_empty())
}

/// A managed instance can be bound once created, when its plan is bindable.
async fn check_bindable(
    controller: &Controller,
    instance: &ServiceInstance,
) -> Result<(), ApiError> {
    let op = &instance.operation;
    if op.in_progress() {
        return Err(service_instances::operation_in_progress(instance));
    }
    if op.state.as_deref() != Some(service_operations::SUCCEEDED) {
        return Err(ApiError::unprocessable(format!(
            "Service instance {} was not created successfully.",
            instance.name
        )));
    }
    let bindable = match &instance.service_plan_guid {
        Some(plan) => controller
            .db
            .get::<ServicePlan>(plan)
            .await?
            .is_some_and(|p| p.bindable),
        None => false,
    };
    if !bindable {
        return Err(ApiError::unprocessable(
            "Service plan does not allow bindings.",
        ));
    }
    Ok(())
}

/// Records `audit.service_binding.<action>` (or `audit.service_key.<action>`).
async fn record(
    controller: &Controller,
    user: &User,
    action: &str,
    binding: &ServiceBinding,
    instance: &ServiceInstance,
) {
    let (kind, event) = if binding.kind == "key" {
        ("service_key", format!("audit.service_key.{action}"))
    } else {
        ("service_binding", format!("audit.service_binding.{action}"))
    };
    let target = Target {
        kind,
        guid: &binding.guid,
        name: binding.name.as_deref().unwrap_or_default(),
    };
    let mut relationships = json!({
        "service_instance": {"data": {"guid": binding.service_instance_guid}},
    });
    if let Some(app) = &binding.app_guid {
        relationships["app"] = json!({"data": {"guid": app}});
    }
    let mut request = json!({"type": binding.kind, "relationships": relationships});
    if binding.parameters.is_some() {
        request["parameters"] = json!(service_instances::PRIVATE);
    }
    let data = json!({"request": request});
    audit::record(
        controller,
        user,
        &event,
        target,
        Some(&instance.space_guid),
        data,
    )
    .await;
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (binding, instance) = load_to(&controller, &user, &guid, Access::Develop).await?;
    if instance.kind == MANAGED {
        if binding.operation.in_progress() {
            return Err(ApiError::unprocessable(
                "There is an operation in progress for the service binding.",
            ));
        }
        let accepted = service_instances::start_operation(
            &controller,
            &user,
            "service_credential_bindings",
            &binding.guid,
            service_operations::DELETE,
            "service_bindings.delete",
        )
        .await?;
        record(&controller, &user, "delete", &binding, &instance).await;
        return Ok(accepted);
    }
    remove(&controller, &user, &binding, &instance).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes `binding`, stops its drain, and records the event.
pub async fn remove(
    controller: &Controller,
    user: &User,
    binding: &ServiceBinding,
    instance: &ServiceInstance,
) -> Result<(), ApiError> {
    controller
        .db
        .delete_resources(
            "service_credential_bindings",
            Filter::new().eq("guid", &binding.guid),
        )
        .await?;
    if let Some(app_guid) = &binding.app_guid {
        crate::services::sync_app_drains(controller, app_guid).await?;
    }
    record(controller, user, "delete", binding, instance).await;
    Ok(())
}
