//! Service route bindings (`/v3/service_route_bindings`): a route bound to a service
//! instance has its requests sent through the instance's route service first (CF's
//! route services). A user-provided instance's route service is its
//! `route_service_url`, bound at once; a managed instance's (its offering `requires`
//! `route_forwarding`) is the URL its broker gives the binding, made and removed in a
//! job (`service_operations`). A route has at most one route binding; a binding reaches
//! the running apps of its route at once (nsync), without a restart.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::service_instances::{self, MANAGED, USER_PROVIDED};
use super::{
    cf_time, created, href, metadata, ok, paginated_with, relationship_guid, ApiResult, Ctl,
    JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{self, Arg, Domain, Filter, Route, RouteBinding, ServiceInstance};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::service_operations::{self, encrypt_json, BrokerAuth, PlanContext};
use crate::Controller;

const RESOURCE: &str = "service_route_bindings";

fn present(controller: &Controller, binding: &RouteBinding, instance: &ServiceInstance) -> Value {
    let mut links = json!({
        "self": href(controller, &format!("/v3/service_route_bindings/{}", binding.guid)),
        "service_instance": href(controller, &format!("/v3/service_instances/{}", binding.service_instance_guid)),
        "route": href(controller, &format!("/v3/routes/{}", binding.route_guid)),
    });
    if instance.kind == MANAGED {
        links["parameters"] = href(
            controller,
            &format!("/v3/service_route_bindings/{}/parameters", binding.guid),
        );
    }
    json!({
        "guid": binding.guid,
        "route_service_url": binding.route_service_url,
        "created_at": cf_time(&binding.created_at),
        "updated_at": cf_time(&binding.updated_at),
        "last_operation": service_instances::last_operation(&binding.operation, &binding.created_at, &binding.updated_at),
        "relationships": {
            "service_instance": {"data": {"guid": binding.service_instance_guid}},
            "route": {"data": {"guid": binding.route_guid}},
        },
        "metadata": metadata(),
        "links": links,
    })
}

/// A route binding as CF shows it, with its labels and annotations.
async fn show_binding(
    controller: &Controller,
    binding: &RouteBinding,
    instance: &ServiceInstance,
) -> Result<Value, ApiError> {
    let shown = present(controller, binding, instance);
    Ok(metadata::filled(&controller.db, RESOURCE, shown).await?)
}

/// A route binding the user can see (else 404), and may do `access` to (else 403),
/// with its instance.
async fn load_to(
    controller: &Controller,
    user: &User,
    guid: &str,
    access: Access,
) -> Result<(RouteBinding, ServiceInstance), ApiError> {
    let not_found = || ApiError::not_found("Service route binding");
    let binding = controller
        .db
        .get::<RouteBinding>(guid)
        .await?
        .ok_or_else(not_found)?;
    let instance = controller
        .db
        .get::<ServiceInstance>(&binding.service_instance_guid)
        .await?
        .filter(|i| user.can_access_space(&i.space_guid))
        .ok_or_else(not_found)?;
    user.require_in_space(&instance.space_guid, access)?;
    Ok((binding, instance))
}

/// What `include` may ask for.
const INCLUDES: &[&str] = &["route", "service_instance"];

/// The routes and service instances of `bindings` that `includes` asks for
/// (`included.routes`, `included.service_instances`).
async fn included(
    controller: &Controller,
    includes: &[String],
    bindings: &[RouteBinding],
    instances: &[ServiceInstance],
) -> Result<Option<Value>, ApiError> {
    if includes.is_empty() {
        return Ok(None);
    }
    let mut included = serde_json::Map::new();
    if includes.iter().any(|i| i == "route") {
        let guids: Vec<String> = bindings.iter().map(|b| b.route_guid.clone()).collect();
        let routes: Vec<Route> = controller
            .db
            .find(Filter::new().any_of("guid", &guids))
            .await?;
        let routes = super::routes::present_routes(controller, &routes).await?;
        included.insert("routes".into(), Value::Array(routes));
    }
    if includes.iter().any(|i| i == "service_instance") {
        let instances = service_instances::present_instances(controller, instances).await?;
        included.insert("service_instances".into(), Value::Array(instances));
    }
    Ok(Some(Value::Object(included)))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let includes = params.includes(INCLUDES)?;
    let mut filter = Filter::new();
    if !user.sees_everything() {
        filter = filter.in_select(
            "service_instance_guid",
            "SELECT guid FROM service_instances WHERE space_guid IN ({})",
            &user.visible_space_guids(),
        );
    }
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "route_guids", "route_guid");
    let filter = params.filter(filter, "service_instance_guids", "service_instance_guid");
    let filter = params.filter_in(
        filter,
        "service_instance_names",
        "service_instance_guid",
        "SELECT guid FROM service_instances WHERE name IN ({})",
    );
    let filter = params.label_selector(filter, RESOURCE)?;
    let (total, bindings) = controller
        .db
        .list::<RouteBinding>(filter, &params.page)
        .await?;
    let guids: Vec<String> = bindings
        .iter()
        .map(|b| b.service_instance_guid.clone())
        .collect();
    let instances: Vec<ServiceInstance> = controller
        .db
        .find(Filter::new().any_of("guid", &guids))
        .await?;
    let mut resources = Vec::with_capacity(bindings.len());
    for binding in &bindings {
        if let Some(instance) = instances
            .iter()
            .find(|i| i.guid == binding.service_instance_guid)
        {
            resources.push(present(&controller, binding, instance));
        }
    }
    metadata::fill(&controller.db, RESOURCE, &mut resources).await?;
    let included = included(&controller, &includes, &bindings, &instances).await?;
    Ok(paginated_with(
        &controller,
        &params,
        total,
        resources,
        included,
    ))
}

pub async fn show(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let includes = params.includes(INCLUDES)?;
    let (binding, instance) = load_to(&controller, &user, &guid, Access::Read).await?;
    let mut shown = show_binding(&controller, &binding, &instance).await?;
    let bindings = std::slice::from_ref(&binding);
    let instances = std::slice::from_ref(&instance);
    if let Some(included) = included(&controller, &includes, bindings, instances).await? {
        shown["included"] = included;
    }
    Ok(ok(shown))
}

/// `PATCH /v3/service_route_bindings/:guid`: a binding's metadata, by those who may bind
/// in its space.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let (binding, instance) = load_to(&controller, &user, &guid, Access::Develop).await?;
    if binding.operation.in_progress() && binding.operation.kind.as_deref() == Some("delete") {
        return Err(ApiError::unprocessable(
            "The service route binding is being deleted",
        ));
    }
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, RESOURCE, &guid).await?;
    record(&controller, &user, "update", &binding, &instance).await;
    Ok(ok(show_binding(&controller, &binding, &instance).await?))
}

/// `GET /v3/service_route_bindings/:guid/parameters`: what the broker says the binding
/// was made with, when its offering lets bindings be fetched.
pub async fn parameters(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (binding, instance) = load_to(&controller, &user, &guid, Access::Develop).await?;
    let Some(plan_guid) = instance.service_plan_guid.as_deref() else {
        return Err(ApiError::BadRequest(
            "user provided service instances do not support fetching route bindings parameters."
                .into(),
        ));
    };
    let plan = PlanContext::load(&controller, plan_guid).await?;
    if !plan.offering.bindings_retrievable {
        return Err(ApiError::BadRequest(
            "this service does not support fetching route bindings parameters.".into(),
        ));
    }
    if binding.operation.in_progress() {
        return Err(ApiError::unprocessable(
            "There is an operation in progress for the service route binding.",
        ));
    }
    let auth = BrokerAuth::of(&controller, &plan.broker)?;
    let broker = auth.client(&controller, &plan.broker.url);
    let fetched = broker
        .fetch_binding(&instance.guid, &binding.guid, plan.ids())
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(ok(Value::Object(fetched.parameters)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBinding {
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
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let relationships = json!({"relationships": body.relationships});
    let instance_guid = relationship_guid(&relationships, "service_instance").ok_or_else(|| {
        ApiError::unprocessable("Relationships 'relationships' must include service_instance")
    })?;
    let route_guid = relationship_guid(&relationships, "route").ok_or_else(|| {
        ApiError::unprocessable("Relationships 'relationships' must include route")
    })?;
    let instance = controller
        .db
        .get::<ServiceInstance>(&instance_guid)
        .await?
        .filter(|i| user.can_access_space(&i.space_guid))
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "The service instance could not be found: {instance_guid}"
            ))
        })?;
    user.require_in_space(&instance.space_guid, Access::Develop)?;
    let route = controller
        .db
        .get::<Route>(&route_guid)
        .await?
        .filter(|r| user.can_access_space(&r.space_guid))
        .ok_or_else(|| {
            ApiError::unprocessable(format!("The route could not be found: {route_guid}"))
        })?;
    if body.parameters.is_some() && instance.kind == USER_PROVIDED {
        return Err(ApiError::unprocessable(
            "Binding parameters are not supported for user-provided service instances",
        ));
    }
    check_bindable(&controller, &instance, &route).await?;
    let parameters = match &body.parameters {
        None => Arg::Null,
        Some(p) if p.is_object() => encrypt_json(&controller, p)?,
        Some(_) => return Err(ApiError::unprocessable("Parameters must be an object")),
    };
    let guid = db::new_guid();
    let now = db::now();
    let route_service_url = if instance.kind == USER_PROVIDED {
        instance.route_service_url.clone()
    } else {
        None
    };
    let inserted = controller
        .db
        .insert(
            RESOURCE,
            vec![
                ("guid", guid.clone().into()),
                ("route_guid", route.guid.clone().into()),
                ("service_instance_guid", instance.guid.clone().into()),
                ("route_service_url", route_service_url.into()),
                ("parameters", parameters),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => return Err(already_bound()),
        other => other?,
    }
    labels.apply(&controller.db, RESOURCE, &guid).await?;
    let binding = controller
        .db
        .get::<RouteBinding>(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Service route binding"))?;
    if instance.kind == MANAGED {
        let accepted = service_instances::start_operation(
            &controller,
            &user,
            RESOURCE,
            &binding.guid,
            service_operations::CREATE,
            "service_route_bindings.create",
        )
        .await?;
        record(&controller, &user, "start_create", &binding, &instance).await;
        return Ok(accepted);
    }
    crate::api::sync_route_apps(&controller, &route.guid).await?;
    record(&controller, &user, "create", &binding, &instance).await;
    Ok(created(
        show_binding(&controller, &binding, &instance).await?,
    ))
}

fn already_bound() -> ApiError {
    ApiError::unprocessable("A route may only be bound to a single service instance")
}

/// CF's checks of a new route binding: the instance offers a route service and can be
/// bound, the route is not internal, is in its space and is not bound yet.
async fn check_bindable(
    controller: &Controller,
    instance: &ServiceInstance,
    route: &Route,
) -> Result<(), ApiError> {
    let route_service = match &instance.service_plan_guid {
        None => instance
            .route_service_url
            .as_deref()
            .is_some_and(|u| !u.is_empty()),
        Some(plan_guid) => {
            let plan = PlanContext::load(controller, plan_guid).await?;
            if !plan
                .offering
                .requires
                .iter()
                .any(|r| r == "route_forwarding")
            {
                false
            } else if !plan.offering.bindable || !plan.plan.bindable {
                return Err(ApiError::unprocessable(
                    "This service instance does not support binding",
                ));
            } else {
                true
            }
        }
    };
    if !route_service {
        return Err(ApiError::unprocessable(
            "This service instance does not support route binding",
        ));
    }
    let internal = controller
        .db
        .get::<Domain>(&route.domain_guid)
        .await?
        .is_some_and(|d| d.internal);
    if internal {
        return Err(ApiError::unprocessable(
            "Route services cannot be bound to internal routes",
        ));
    }
    if route.space_guid != instance.space_guid {
        return Err(ApiError::unprocessable(
            "The service instance and the route are in different spaces",
        ));
    }
    let existing: Vec<RouteBinding> = controller
        .db
        .find(Filter::new().eq("route_guid", &route.guid))
        .await?;
    if let Some(existing) = existing.first() {
        if existing.service_instance_guid == instance.guid {
            return Err(ApiError::AlreadyBoundToSameRoute);
        }
        return Err(already_bound());
    }
    if instance.operation.in_progress() {
        return Err(ApiError::unprocessable(
            "There is an operation in progress for the service instance",
        ));
    }
    Ok(())
}

/// Records `audit.service_route_binding.<action>`.
async fn record(
    controller: &Controller,
    user: &User,
    action: &str,
    binding: &RouteBinding,
    instance: &ServiceInstance,
) {
    let target = Target {
        kind: "service_route_binding",
        guid: &binding.guid,
        name: "",
    };
    let mut request = json!({
        "relationships": {
            "service_instance": {"data": {"guid": binding.service_instance_guid}},
            "route": {"data": {"guid": binding.route_guid}},
        },
    });
    if binding.parameters.is_some() {
        request["parameters"] = json!(service_instances::PRIVATE);
    }
    audit::record(
        controller,
        user,
        &format!("audit.service_route_binding.{action}"),
        target,
        Some(&instance.space_guid),
        json!({"request": request}),
    )
    .await;
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (binding, instance) = load_to(&controller, &user, &guid, Access::Develop).await?;
    if binding.operation.in_progress() {
        return Err(ApiError::unprocessable(
            "There is an operation in progress for the service binding.",
        ));
    }
    if instance.operation.in_progress() {
        return Err(ApiError::unprocessable(
            "There is an operation in progress for the service instance.",
        ));
    }
    if instance.kind == MANAGED {
        let accepted = service_instances::start_operation(
            &controller,
            &user,
            RESOURCE,
            &binding.guid,
            service_operations::DELETE,
            "service_route_bindings.delete",
        )
        .await?;
        record(&controller, &user, "start_delete", &binding, &instance).await;
        return Ok(accepted);
    }
    remove(&controller, &user, &binding, &instance).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a user-provided instance's `binding`, takes its route service off the
/// route's apps, and records the event.
pub async fn remove(
    controller: &Controller,
    user: &User,
    binding: &RouteBinding,
    instance: &ServiceInstance,
) -> Result<(), ApiError> {
    service_operations::remove_route_binding(controller, binding).await?;
    record(controller, user, "delete", binding, instance).await;
    Ok(())
}

/// Points the route bindings of a user-provided instance at its new route service URL
/// (`None`: it has none any more), and re-routes their routes' apps.
pub async fn follow_route_service_url(
    controller: &Controller,
    instance: &ServiceInstance,
) -> Result<(), ApiError> {
    let bindings: Vec<RouteBinding> = controller
        .db
        .find(Filter::new().eq("service_instance_guid", &instance.guid))
        .await?;
    for binding in bindings {
        controller
            .db
            .update(
                RESOURCE,
                &binding.guid,
                vec![(
                    "route_service_url",
                    instance.route_service_url.clone().into(),
                )],
            )
            .await?;
        crate::api::sync_route_apps(controller, &binding.route_guid).await?;
    }
    Ok(())
}
