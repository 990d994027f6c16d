//! Service instances (`/v3/service_instances`). User-provided ones (`wf cups`):
//! credentials the developer gives (stored encrypted, shown only to those who may read
//! secrets, through `/credentials`), a `syslog_drain_url` that the app's logs are
//! forwarded to once bound, and a `route_service_url` (a new one reaches the routes
//! bound to it at once); deleting one deletes its bindings and route bindings. Managed ones, of a broker's plan the user may use in the space: creating,
//! updating (new parameters) and deleting them answer a job and leave the broker calls
//! to `service_operations`, with `last_operation` showing where they stand.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    cf_time, created, href, load_space_to, metadata, ok, paginated, relationship_guid, ApiResult,
    Ctl, JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{
    self, Arg, Filter, JobState, RouteBinding, ServiceBinding, ServiceInstance, ServicePlan,
};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::service_operations::{self, encrypt_json};
use crate::Controller;

/// What audit events and logs show instead of credentials.
pub const PRIVATE: &str = "[PRIVATE DATA HIDDEN]";
pub const USER_PROVIDED: &str = "user-provided";
pub const MANAGED: &str = "managed";

/// CF's `last_operation`: a user-provided instance's is its creation.
pub fn last_operation(operation: &db::Operation, created_at: &str, updated_at: &str) -> Value {
    json!({
        "type": operation.kind.as_deref().unwrap_or("create"),
        "state": operation.state.as_deref().unwrap_or(service_operations::SUCCEEDED),
        "description": operation.description.as_deref().unwrap_or("Operation succeeded"),
        "created_at": cf_time(operation.started_at.as_deref().unwrap_or(created_at)),
        "updated_at": cf_time(updated_at),
    })
}

fn present(controller: &Controller, instance: &ServiceInstance) -> Value {
    let link = |suffix: &str| {
        href(
            controller,
            &format!("/v3/service_instances/{}{suffix}", instance.guid),
        )
    };
    let mut body = json!({
        "guid": instance.guid,
        "created_at": cf_time(&instance.created_at),
        "updated_at": cf_time(&instance.updated_at),
        "name": instance.name,
        "type": instance.kind,
        "tags": instance.tags,
        "syslog_drain_url": instance.syslog_drain_url,
        "route_service_url": instance.route_service_url,
        "last_operation": last_operation(&instance.operation, &instance.created_at, &instance.updated_at),
        "relationships": {"space": {"data": {"guid": instance.space_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(""),
            "space": href(controller, &format!("/v3/spaces/{}", instance.space_guid)),
            "credentials": link("/credentials"),
            "service_credential_bindings": href(
                controller,
                &format!("/v3/service_credential_bindings?service_instance_guids={}", instance.guid),
            ),
            "service_route_bindings": href(
                controller,
                &format!("/v3/service_route_bindings?service_instance_guids={}", instance.guid),
            ),
        },
    });
    if let Some(plan) = &instance.service_plan_guid {
        body["dashboard_url"] = json!(instance.dashboard_url);
        body["relationships"]["service_plan"] = json!({"data": {"guid": plan}});
        body["links"]["service_plan"] = href(controller, &format!("/v3/service_plans/{plan}"));
        body["links"]
            .as_object_mut()
            .expect("an object")
            .remove("credentials");
    }
    body
}

/// A service instance as CF shows it, with its labels and annotations.
async fn show_instance(
    controller: &Controller,
    instance: &ServiceInstance,
) -> Result<Value, ApiError> {
    let shown = present(controller, instance);
    Ok(metadata::filled(&controller.db, "service_instances", shown).await?)
}

/// A service instance the user can see (else 404), and may do `access` to (else 403).
pub async fn load_to(
    controller: &Controller,
    user: &User,
    guid: &str,
    access: Access,
) -> Result<ServiceInstance, ApiError> {
    match controller.db.get::<ServiceInstance>(guid).await? {
        Some(instance) if user.can_access_space(&instance.space_guid) => {
            user.require_in_space(&instance.space_guid, access)?;
            Ok(instance)
        }
        _ => Err(ApiError::not_found("Service instance")),
    }
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_spaces(Filter::new(), "space_guid");
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "space_guids", "space_guid");
    let filter = params.filter(filter, "type", "type");
    let filter = params.label_selector(filter, "service_instances")?;
    let (total, instances) = controller
        .db
        .list::<ServiceInstance>(filter, &params.page)
        .await?;
    let resources = present_instances(&controller, &instances).await?;
    Ok(paginated(&controller, &params, total, resources))
}

/// Service instances as CF shows them, with their labels and annotations.
pub(super) async fn present_instances(
    controller: &Controller,
    instances: &[ServiceInstance],
) -> Result<Vec<Value>, ApiError> {
    let mut resources: Vec<Value> = instances.iter().map(|i| present(controller, i)).collect();
    metadata::fill(&controller.db, "service_instances", &mut resources).await?;
    Ok(resources)
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let instance = load_to(&controller, &user, &guid, Access::Read).await?;
    Ok(ok(show_instance(&controller, &instance).await?))
}

/// `GET /v3/service_instances/:guid/credentials` (user-provided instances only).
pub async fn credentials(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let instance = load_to(&controller, &user, &guid, Access::ReadSecrets).await?;
    if instance.kind != USER_PROVIDED {
        return Err(ApiError::not_found("Service instance"));
    }
    Ok(ok(Value::Object(instance_credentials(
        &controller,
        &instance,
    )?)))
}

/// The decrypted credentials of `instance` (an empty object when it has none).
pub fn instance_credentials(
    controller: &Controller,
    instance: &ServiceInstance,
) -> Result<Map<String, Value>, ApiError> {
    let Some(stored) = &instance.credentials else {
        return Ok(Map::new());
    };
    let plain = controller.crypto.decrypt(stored).map_err(|e| {
        ApiError::Internal(format!(
            "credentials of service instance {}: {e}",
            instance.guid
        ))
    })?;
    serde_json::from_str(&plain)
        .map_err(|e| ApiError::Internal(format!("credentials of {}: {e}", instance.guid)))
}

/// The fields a create or update may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    credentials: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    syslog_drain_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    route_service_url: Option<Option<String>>,
    tags: Option<Vec<String>>,
    relationships: Option<Value>,
    /// For the broker (managed instances).
    parameters: Option<Value>,
    metadata: Option<Value>,
}

/// A field that was given, possibly as `null` (which clears it): `Some(None)`.
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The checked column values of `fields` (only those given).
fn columns(
    controller: &Controller,
    fields: &InstanceFields,
) -> Result<Vec<(&'static str, Arg)>, ApiError> {
    let mut values = Vec::new();
    if let Some(name) = &fields.name {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(ApiError::unprocessable(
                "Name must be between 1 and 255 characters",
            ));
        }
        values.push(("name", Arg::Text(name.to_string())));
    }
    if let Some(credentials) = &fields.credentials {
        if !credentials.is_object() {
            return Err(ApiError::unprocessable("Credentials must be an object"));
        }
        let sealed = controller
            .crypto
            .encrypt(&credentials.to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        values.push(("credentials", Arg::Text(sealed)));
    }
    if let Some(url) = &fields.syslog_drain_url {
        let url = url.as_deref().map(str::trim).filter(|u| !u.is_empty());
        if let Some(url) = url {
            url.parse::<wf_loggregator::DrainUrl>().map_err(|e| {
                ApiError::unprocessable(format!("Syslog drain url is invalid: {e}"))
            })?;
        }
        values.push((
            "syslog_drain_url",
            url.map_or(Arg::Null, |u| Arg::Text(u.into())),
        ));
    }
    if let Some(url) = &fields.route_service_url {
        let url = url.as_deref().map(str::trim).filter(|u| !u.is_empty());
        if let Some(url) = url {
            let valid = url::Url::parse(url).is_ok_and(|u| {
                u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !valid {
                return Err(ApiError::unprocessable("Route service url must be https"));
            }
        }
        values.push((
            "route_service_url",
            url.map_or(Arg::Null, |u| Arg::Text(u.into())),
        ));
    }
    if let Some(tags) = &fields.tags {
        if tags.iter().map(String::len).sum::<usize>() > 2048 {
            return Err(ApiError::unprocessable(
                "Tags are limited to 2048 characters",
            ));
        }
        values.push(("tags", db::to_json_text(tags)));
    }
    Ok(values)
}

fn name_taken(name: &str) -> ApiError {
    ApiError::unprocessable(format!("The service instance name is taken: {name}."))
}

/// What audit events record of a request: everything but the credentials.
fn audit_request(fields: &InstanceFields) -> Value {
    let mut request = Map::new();
    if let Some(name) = &fields.name {
        request.insert("name".into(), json!(name));
    }
    if fields.credentials.is_some() {
        request.insert("credentials".into(), json!(PRIVATE));
    }
    if let Some(url) = &fields.syslog_drain_url {
        request.insert("syslog_drain_url".into(), json!(url));
    }
    if let Some(url) = &fields.route_service_url {
        request.insert("route_service_url".into(), json!(url));
    }
    if let Some(tags) = &fields.tags {
        request.insert("tags".into(), json!(tags));
    }
    if fields.parameters.is_some() {
        request.insert("parameters".into(), json!(PRIVATE));
    }
    if let Some(relationships) = &fields.relationships {
        request.insert("relationships".into(), relationships.clone());
    }
    json!({"request": request})
}

async fn record(
    controller: &Controller,
    user: &User,
    event: &str,
    instance: &ServiceInstance,
    data: Value,
) {
    let kind = if instance.kind == MANAGED {
        "service_instance"
    } else {
        "user_provided_service_instance"
    };
    let target = Target {
        kind,
        guid: &instance.guid,
        name: &instance.name,
    };
    audit::record(
        controller,
        user,
        event,
        target,
        Some(&instance.space_guid),
        data,
    )
    .await;
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(fields): JsonBody<InstanceFields>,
) -> ApiResult {
    let labels = MetadataUpdate::parse(fields.metadata.as_ref())?;
    match fields.kind.as_deref() {
        Some(USER_PROVIDED) if fields.parameters.is_some() => {
            return Err(ApiError::unprocessable(
                "Parameters are not supported for user-provided service instances",
            ))
        }
        Some(USER_PROVIDED) => {}
        Some(MANAGED) => return create_managed(&controller, &user, &fields, &labels).await,
        _ => {
            return Err(ApiError::unprocessable(
                "Type must be one of 'managed', 'user-provided'",
            ))
        }
    }
    let name = fields
        .name
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    let body = json!({"relationships": fields.relationships.clone().unwrap_or_default()});
    let space_guid = relationship_guid(&body, "space").ok_or_else(|| {
        ApiError::unprocessable("Relationships 'relationships' must include space")
    })?;
    let space = load_space_to(&controller, &user, &space_guid, Access::Read)
        .await
        .map_err(|_| {
            ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            )
        })?;
    user.require_in_space(&space.guid, Access::Develop)?;
    let guid = db::new_guid();
    let now = db::now();
    let mut values = vec![
        ("guid", guid.clone().into()),
        ("type", USER_PROVIDED.into()),
        ("space_guid", space.guid.clone().into()),
        ("created_at", now.clone().into()),
        ("updated_at", now.into()),
    ];
    values.extend(columns(&controller, &fields)?);
    match controller.db.insert("service_instances", values).await {
        Err(e) if db::is_unique_violation(&e) => return Err(name_taken(&name)),
        other => other?,
    }
    labels
        .apply(&controller.db, "service_instances", &guid)
        .await?;
    let instance = controller
        .db
        .get::<ServiceInstance>(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Service instance"))?;
    record(
        &controller,
        &user,
        "audit.user_provided_service_instance.create",
        &instance,
        audit_request(&fields),
    )
    .await;
    Ok(created(show_instance(&controller, &instance).await?))
}

pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(fields): JsonBody<InstanceFields>,
) -> ApiResult {
    let instance = load_to(&controller, &user, &guid, Access::Develop).await?;
    let labels = MetadataUpdate::parse(fields.metadata.as_ref())?;
    if fields.kind.is_some() || fields.relationships.is_some() {
        return Err(ApiError::unprocessable(
            "Type and relationships cannot be changed",
        ));
    }
    if instance.kind == MANAGED {
        check_managed_fields(&fields)?;
        if instance.operation.in_progress() {
            return Err(operation_in_progress(&instance));
        }
    } else if fields.parameters.is_some() {
        return Err(ApiError::unprocessable(
            "Parameters are not supported for user-provided service instances",
        ));
    }
    let mut values = columns(&controller, &fields)?;
    if let Some(parameters) = &fields.parameters {
        if !parameters.is_object() {
            return Err(ApiError::unprocessable("Parameters must be an object"));
        }
        values.push(("parameters", encrypt_json(&controller, parameters)?));
    }
    if !values.is_empty() {
        let name = fields.name.clone().unwrap_or_default();
        match controller
            .db
            .update("service_instances", &guid, values)
            .await
        {
            Err(e) if db::is_unique_violation(&e) => return Err(name_taken(name.trim())),
            other => {
                other?;
            }
        }
    }
    labels
        .apply(&controller.db, "service_instances", &guid)
        .await?;
    let updated = load_to(&controller, &user, &guid, Access::Read).await?;
    if updated.syslog_drain_url != instance.syslog_drain_url {
        crate::services::sync_instance_drains(&controller, &guid).await?;
    }
    if updated.route_service_url != instance.route_service_url {
        super::service_route_bindings::follow_route_service_url(&controller, &updated).await?;
    }
    record(
        &controller,
        &user,
        if updated.kind == MANAGED {
            "audit.service_instance.update"
        } else {
            "audit.user_provided_service_instance.update"
        },
        &updated,
        audit_request(&fields),
    )
    .await;
    if fields.parameters.is_some() {
        // New parameters go to the broker (same plan); the job ends with its answer.
        let accepted = start_operation(
            &controller,
            &user,
            "service_instances",
            &guid,
            service_operations::UPDATE,
            "service_instance.update",
        )
        .await?;
        return Ok(accepted);
    }
    Ok(ok(show_instance(&controller, &updated).await?))
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let instance = load_to(&controller, &user, &guid, Access::Develop).await?;
    if instance.kind == MANAGED {
        return delete_managed(&controller, &user, &instance).await;
    }
    let bindings: Vec<ServiceBinding> = controller
        .db
        .find(Filter::new().eq("service_instance_guid", &guid))
        .await?;
    for binding in &bindings {
        super::service_bindings::remove(&controller, &user, binding, &instance).await?;
    }
    let route_bindings: Vec<RouteBinding> = controller
        .db
        .find(Filter::new().eq("service_instance_guid", &guid))
        .await?;
    for binding in &route_bindings {
        super::service_route_bindings::remove(&controller, &user, binding, &instance).await?;
    }
    controller
        .db
        .delete_resources("service_instances", Filter::new().eq("guid", &guid))
        .await?;
    record(
        &controller,
        &user,
        "audit.user_provided_service_instance.delete",
        &instance,
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What only user-provided instances have.
fn check_managed_fields(fields: &InstanceFields) -> Result<(), ApiError> {
    if fields.credentials.is_some()
        || fields.syslog_drain_url.is_some()
        || fields.route_service_url.is_some()
    {
        return Err(ApiError::unprocessable(
            "Credentials, syslog_drain_url and route_service_url are for user-provided service instances",
        ));
    }
    Ok(())
}

/// CF-AsyncServiceInstanceOperationInProgress's message.
pub fn operation_in_progress(instance: &ServiceInstance) -> ApiError {
    ApiError::unprocessable(format!(
        "An operation for service instance {} is in progress.",
        instance.name
    ))
}

/// Starts the operation (`create`, `update` or `delete`) of row `guid` of `table` (a
/// managed instance, or a binding of one) with a job, and wakes the runner, which makes
/// the broker calls; the `202 Accepted` pointing at the job.
pub(super) async fn start_operation(
    controller: &Controller,
    user: &User,
    table: &str,
    guid: &str,
    kind: &str,
    job_operation: &str,
) -> Result<axum::response::Response, ApiError> {
    let (job, accepted) = super::new_job(controller, job_operation, JobState::Processing).await?;
    let values = service_operations::start_values(kind, Some(&job), Some(&user.claims.user_id));
    controller.db.update(table, guid, values).await?;
    controller.operations.wake();
    Ok(accepted)
}

async fn create_managed(
    controller: &std::sync::Arc<Controller>,
    user: &User,
    fields: &InstanceFields,
    labels: &MetadataUpdate,
) -> ApiResult {
    check_managed_fields(fields)?;
    let name = fields
        .name
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    let body = json!({"relationships": fields.relationships.clone().unwrap_or_default()});
    let space_guid = relationship_guid(&body, "space").ok_or_else(|| {
        ApiError::unprocessable("Relationships 'relationships' must include space")
    })?;
    let plan_guid = relationship_guid(&body, "service_plan").ok_or_else(|| {
        ApiError::unprocessable("Relationships 'relationships' must include service_plan")
    })?;
    let space = load_space_to(controller, user, &space_guid, Access::Read)
        .await
        .map_err(|_| {
            ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            )
        })?;
    user.require_in_space(&space.guid, Access::Develop)?;
    let invalid_plan = || {
        ApiError::unprocessable(
            "Invalid service plan. Ensure that the service plan exists, is available, and you have access to it.",
        )
    };
    let plan = controller
        .db
        .get::<ServicePlan>(&plan_guid)
        .await?
        .ok_or_else(invalid_plan)?;
    if !plan.available
        || !super::service_offerings::usable_in(controller, user, &plan, &space).await?
    {
        return Err(invalid_plan());
    }
    let parameters = match &fields.parameters {
        None => Arg::Null,
        Some(p) if p.is_object() => encrypt_json(controller, p)?,
        Some(_) => return Err(ApiError::unprocessable("Parameters must be an object")),
    };
    let guid = db::new_guid();
    let now = db::now();
    let mut values = vec![
        ("guid", guid.clone().into()),
        ("type", MANAGED.into()),
        ("space_guid", space.guid.clone().into()),
        ("service_plan_guid", plan.guid.clone().into()),
        ("parameters", parameters),
        ("created_at", now.clone().into()),
        ("updated_at", now.into()),
    ];
    values.extend(columns(controller, fields)?);
    match controller.db.insert("service_instances", values).await {
        Err(e) if db::is_unique_violation(&e) => return Err(name_taken(&name)),
        other => other?,
    }
    labels
        .apply(&controller.db, "service_instances", &guid)
        .await?;
    let accepted = start_operation(
        controller,
        user,
        "service_instances",
        &guid,
        service_operations::CREATE,
        "service_instance.create",
    )
    .await?;
    let instance = load_to(controller, user, &guid, Access::Read).await?;
    record(
        controller,
        user,
        "audit.service_instance.create",
        &instance,
        audit_request(fields),
    )
    .await;
    Ok(accepted)
}

/// Deprovisions a managed instance (refused while it has bindings, keys or route
/// bindings).
async fn delete_managed(
    controller: &Controller,
    user: &User,
    instance: &ServiceInstance,
) -> ApiResult {
    if instance.operation.in_progress() {
        return Err(operation_in_progress(instance));
    }
    let bindings: Vec<ServiceBinding> = controller
        .db
        .find(Filter::new().eq("service_instance_guid", &instance.guid))
        .await?;
    let route_bindings: Vec<RouteBinding> = controller
        .db
        .find(Filter::new().eq("service_instance_guid", &instance.guid))
        .await?;
    if !bindings.is_empty() || !route_bindings.is_empty() {
        return Err(ApiError::unprocessable(
            "Cannot delete service instance. Service keys, bindings, and shares must first be deleted.",
        ));
    }
    let accepted = start_operation(
        controller,
        user,
        "service_instances",
        &instance.guid,
        service_operations::DELETE,
        "service_instance.delete",
    )
    .await?;
    record(
        controller,
        user,
        "audit.service_instance.delete",
        instance,
        json!({}),
    )
    .await;
    Ok(accepted)
}
