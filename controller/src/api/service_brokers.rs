//! Service brokers (`/v3/service_brokers`): registering a broker (global, by admins, or
//! space-scoped, by the space's developers), its credentials kept encrypted and never
//! shown, and its catalog: creating or updating a broker fetches `GET /v2/catalog` in
//! a job and stores the offerings and plans (new plans of a global broker are visible
//! to admins only until `enable-service-access`; a space-scoped broker's plans are
//! visible in its space). Deleting a broker with service instances is refused.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cf_time, finished_job, href, load_space_to, metadata, new_job, ok, paginated,
    relationship_guid, to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{
    self, Arg, Filter, JobState, ServiceBroker, ServiceInstance, ServiceOffering, ServicePlan,
};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::osb::{Catalog, CatalogService};
use crate::service_operations::{encrypt_json, BrokerAuth};
use crate::Controller;

fn present(controller: &Controller, broker: &ServiceBroker) -> Value {
    let mut links = json!({
        "self": href(controller, &format!("/v3/service_brokers/{}", broker.guid)),
        "service_offerings": href(controller, &format!("/v3/service_offerings?service_broker_guids={}", broker.guid)),
    });
    let relationships = match &broker.space_guid {
        Some(space) => {
            links["space"] = href(controller, &format!("/v3/spaces/{space}"));
            json!({"space": to_one(Some(space))})
        }
        None => json!({}),
    };
    json!({
        "guid": broker.guid,
        "name": broker.name,
        "url": broker.url,
        "created_at": cf_time(&broker.created_at),
        "updated_at": cf_time(&broker.updated_at),
        "relationships": relationships,
        "metadata": metadata(),
        "links": links,
    })
}

/// Global brokers for admins (and global readers); space-scoped ones for those who
/// see their space.
fn visible(user: &User, filter: Filter) -> Filter {
    if user.sees_everything() {
        return filter;
    }
    filter.any_of("space_guid", &user.visible_space_guids())
}

pub(super) async fn load_to(
    controller: &Controller,
    user: &User,
    guid: &str,
    write: bool,
) -> Result<ServiceBroker, ApiError> {
    let broker = controller
        .db
        .find::<ServiceBroker>(visible(user, Filter::new().eq("guid", guid)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Service broker"))?;
    if write {
        match &broker.space_guid {
            Some(space) => user.require_in_space(space, Access::Develop)?,
            None => user.require_admin()?,
        }
    }
    Ok(broker)
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = visible(&user, Filter::new());
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "space_guids", "space_guid");
    let filter = params.label_selector(filter, "service_brokers")?;
    let (total, brokers) = controller
        .db
        .list::<ServiceBroker>(filter, &params.page)
        .await?;
    let mut resources: Vec<Value> = brokers.iter().map(|b| present(&controller, b)).collect();
    metadata::fill(&controller.db, "service_brokers", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let broker = load_to(&controller, &user, &guid, false).await?;
    let shown = present(&controller, &broker);
    Ok(ok(metadata::filled(
        &controller.db,
        "service_brokers",
        shown,
    )
    .await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerFields {
    name: Option<String>,
    url: Option<String>,
    authentication: Option<Authentication>,
    relationships: Option<Value>,
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    #[serde(rename = "type")]
    kind: String,
    credentials: BasicCredentials,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicCredentials {
    username: String,
    password: String,
}

/// The checked columns of the fields given.
fn columns(
    controller: &Controller,
    fields: &BrokerFields,
) -> Result<Vec<(&'static str, Arg)>, ApiError> {
    let mut values = Vec::new();
    if let Some(name) = &fields.name {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(ApiError::unprocessable(
                "Name must be between 1 and 255 characters",
            ));
        }
        values.push(("name", name.into()));
    }
    if let Some(url) = &fields.url {
        let valid = url::Url::parse(url.trim()).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if !valid {
            return Err(ApiError::unprocessable("Url must be a valid url"));
        }
        values.push(("url", url.trim().into()));
    }
    if let Some(authentication) = &fields.authentication {
        if authentication.kind != "basic" {
            return Err(ApiError::unprocessable(
                "Authentication type must be one of 'basic'",
            ));
        }
        let credentials = &authentication.credentials;
        if credentials.username.is_empty() || credentials.password.is_empty() {
            return Err(ApiError::unprocessable(
                "Authentication credentials username and password can't be blank",
            ));
        }
        let sealed = encrypt_json(
            controller,
            &json!({"username": credentials.username, "password": credentials.password}),
        )?;
        values.push(("authentication", sealed));
    }
    Ok(values)
}

fn name_taken(name: &str) -> ApiError {
    ApiError::unprocessable(format!("Name must be unique: {name}"))
}

/// What audit events record of a request: never the credentials.
fn audit_request(fields: &BrokerFields) -> Value {
    let mut request = json!({});
    if let Some(name) = &fields.name {
        request["name"] = json!(name);
    }
    if let Some(url) = &fields.url {
        request["url"] = json!(url);
    }
    if fields.authentication.is_some() {
        request["authentication"] = json!(super::service_instances::PRIVATE);
    }
    json!({"request": request})
}

async fn record(
    controller: &Controller,
    user: &User,
    event: &str,
    broker: &ServiceBroker,
    data: Value,
) {
    let target = Target {
        kind: "service_broker",
        guid: &broker.guid,
        name: &broker.name,
    };
    audit::record(
        controller,
        user,
        event,
        target,
        broker.space_guid.as_deref(),
        data,
    )
    .await;
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(fields): JsonBody<BrokerFields>,
) -> ApiResult {
    if fields.name.is_none() || fields.url.is_none() || fields.authentication.is_none() {
        return Err(ApiError::unprocessable(
            "Name, url and authentication are required",
        ));
    }
    let labels = MetadataUpdate::parse(fields.metadata.as_ref())?;
    let body = json!({"relationships": fields.relationships.clone().unwrap_or_default()});
    let space_guid = relationship_guid(&body, "space");
    match &space_guid {
        Some(space) => {
            load_space_to(&controller, &user, space, Access::Read)
                .await
                .map_err(|_| {
                    ApiError::unprocessable(
                        "Invalid space. Ensure that the space exists and you have access to it.",
                    )
                })?;
            user.require_in_space(space, Access::Develop)?;
        }
        None => user.require_admin()?,
    }
    let guid = db::new_guid();
    let now = db::now();
    let mut values = vec![
        ("guid", guid.clone().into()),
        ("space_guid", space_guid.into()),
        ("created_at", now.clone().into()),
        ("updated_at", now.into()),
    ];
    values.extend(columns(&controller, &fields)?);
    let name = fields.name.clone().unwrap_or_default();
    match controller.db.insert("service_brokers", values).await {
        Err(e) if db::is_unique_violation(&e) => return Err(name_taken(name.trim())),
        other => other?,
    }
    labels
        .apply(&controller.db, "service_brokers", &guid)
        .await?;
    let broker = load_to(&controller, &user, &guid, false).await?;
    record(
        &controller,
        &user,
        "audit.service_broker.create",
        &broker,
        audit_request(&fields),
    )
    .await;
    synchronize(
        &controller,
        broker,
        "service_broker.catalog.synchronize",
        true,
    )
    .await
}

pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(fields): JsonBody<BrokerFields>,
) -> ApiResult {
    load_to(&controller, &user, &guid, true).await?;
    if fields.relationships.is_some() {
        return Err(ApiError::unprocessable("Relationships cannot be changed"));
    }
    let labels = MetadataUpdate::parse(fields.metadata.as_ref())?;
    let values = columns(&controller, &fields)?;
    let only_metadata = values.is_empty() && fields.metadata.is_some();
    if !values.is_empty() {
        let name = fields.name.clone().unwrap_or_default();
        match controller.db.update("service_brokers", &guid, values).await {
            Err(e) if db::is_unique_violation(&e) => return Err(name_taken(name.trim())),
            other => {
                other?;
            }
        }
    }
    labels
        .apply(&controller.db, "service_brokers", &guid)
        .await?;
    let broker = load_to(&controller, &user, &guid, false).await?;
    if only_metadata {
        // Labels and annotations alone: CF answers at once, without fetching the catalog.
        let shown = present(&controller, &broker);
        return Ok(ok(metadata::filled(
            &controller.db,
            "service_brokers",
            shown,
        )
        .await?));
    }
    record(
        &controller,
        &user,
        "audit.service_broker.update",
        &broker,
        audit_request(&fields),
    )
    .await;
    synchronize(&controller, broker, "service_broker.update", false).await
}

/// Starts a job that fetches the broker's catalog and stores it; a new broker whose
/// catalog cannot be had is removed again (the job fails with the reason).
async fn synchronize(
    controller: &std::sync::Arc<Controller>,
    broker: ServiceBroker,
    operation: &str,
    new: bool,
) -> ApiResult {
    let (job, accepted) = new_job(controller, operation, JobState::Processing).await?;
    let controller = controller.clone();
    tokio::spawn(async move {
        let outcome = fetch_and_store(&controller, &broker).await;
        let (state, errors) = match outcome {
            Ok(()) => (JobState::Complete, json!([])),
            Err(e) => {
                if new {
                    let removed = controller
                        .db
                        .delete_resources("service_brokers", Filter::new().eq("guid", &broker.guid))
                        .await;
                    if let Err(e) = removed {
                        tracing::error!(broker = %broker.guid, error = %e, "removing a broker without a catalog");
                    }
                }
                (JobState::Failed, e.body()["errors"].clone())
            }
        };
        let changes = vec![
            ("state", state.into()),
            ("errors", errors.to_string().into()),
        ];
        if let Err(e) = controller.db.update("jobs", &job, changes).await {
            tracing::error!(job, error = %e, "recording a catalog synchronization");
        }
    });
    Ok(accepted)
}

async fn fetch_and_store(controller: &Controller, broker: &ServiceBroker) -> Result<(), ApiError> {
    let auth = BrokerAuth::of(controller, broker)?;
    let catalog = auth
        .client(controller, &broker.url)
        .catalog()
        .await
        .map_err(|e| ApiError::unprocessable(format!("Service broker catalog is invalid: {e}")))?;
    check_catalog(&catalog)?;
    store_catalog(controller, broker, &catalog).await
}

/// CF's catalog checks: ids and names present and unique.
pub(crate) fn check_catalog(catalog: &Catalog) -> Result<(), ApiError> {
    let invalid = |detail: String| {
        ApiError::unprocessable(format!("Service broker catalog is invalid: {detail}"))
    };
    let mut ids = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for service in &catalog.services {
        if service.id.is_empty() || service.name.is_empty() {
            return Err(invalid("a service has no id or name".into()));
        }
        if !ids.insert(service.id.clone()) || !names.insert(service.name.clone()) {
            return Err(invalid(format!("service {} is not unique", service.name)));
        }
        if service.plans.is_empty() {
            return Err(invalid(format!("service {} has no plans", service.name)));
        }
        let mut plan_names = std::collections::HashSet::new();
        for plan in &service.plans {
            if plan.id.is_empty() || plan.name.is_empty() {
                return Err(invalid(format!(
                    "a plan of {} has no id or name",
                    service.name
                )));
            }
            if !ids.insert(plan.id.clone()) || !plan_names.insert(plan.name.clone()) {
                return Err(invalid(format!(
                    "plan {} of {} is not unique",
                    plan.name, service.name
                )));
            }
        }
    }
    Ok(())
}

fn flag(value: bool) -> Arg {
    Arg::Int(i64::from(value))
}

/// Upserts the catalog's offerings and plans; what left the catalog is deleted, or
/// marked unavailable while instances still use it.
async fn store_catalog(
    controller: &Controller,
    broker: &ServiceBroker,
    catalog: &Catalog,
) -> Result<(), ApiError> {
    let existing: Vec<ServiceOffering> = controller
        .db
        .find(Filter::new().eq("service_broker_guid", &broker.guid))
        .await?;
    let mut kept_offerings = Vec::new();
    for service in &catalog.services {
        let offering_guid = match existing.iter().find(|o| o.broker_id == service.id) {
            Some(offering) => {
                controller
                    .db
                    .update(
                        "service_offerings",
                        &offering.guid,
                        offering_values(service),
                    )
                    .await?;
                offering.guid.clone()
            }
            None => {
                let guid = db::new_guid();
                let now = db::now();
                let mut values = vec![
                    ("guid", guid.clone().into()),
                    ("service_broker_guid", broker.guid.clone().into()),
                    ("broker_id", service.id.clone().into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ];
                values.extend(offering_values(service));
                controller.db.insert("service_offerings", values).await?;
                guid
            }
        };
        store_plans(controller, broker, service, &offering_guid).await?;
        kept_offerings.push(offering_guid);
    }
    for offering in existing
        .iter()
        .filter(|o| !kept_offerings.contains(&o.guid))
    {
        let plans: Vec<ServicePlan> = controller
            .db
            .find(Filter::new().eq("service_offering_guid", &offering.guid))
            .await?;
        let mut in_use = false;
        for plan in &plans {
            in_use |= retire_plan(controller, plan).await?;
        }
        if in_use {
            controller
                .db
                .update(
                    "service_offerings",
                    &offering.guid,
                    vec![("available", flag(false))],
                )
                .await?;
        } else {
            controller
                .db
                .delete_resources(
                    "service_offerings",
                    Filter::new().eq("guid", &offering.guid),
                )
                .await?;
        }
    }
    Ok(())
}

fn offering_values(service: &CatalogService) -> Vec<(&'static str, Arg)> {
    vec![
        ("name", service.name.clone().into()),
        ("description", service.description.clone().into()),
        ("available", flag(true)),
        ("bindable", flag(service.bindable)),
        ("plan_updateable", flag(service.plan_updateable)),
        ("instances_retrievable", flag(service.instances_retrievable)),
        ("bindings_retrievable", flag(service.bindings_retrievable)),
        ("tags", db::to_json_text(&service.tags)),
        ("requires", db::to_json_text(&service.requires)),
        (
            "metadata",
            db::to_json_text(&service.metadata.clone().unwrap_or_else(|| json!({}))),
        ),
    ]
}

async fn store_plans(
    controller: &Controller,
    broker: &ServiceBroker,
    service: &CatalogService,
    offering_guid: &str,
) -> Result<(), ApiError> {
    let existing: Vec<ServicePlan> = controller
        .db
        .find(Filter::new().eq("service_offering_guid", offering_guid))
        .await?;
    for plan in &service.plans {
        let values = vec![
            ("name", plan.name.clone().into()),
            ("description", plan.description.clone().into()),
            ("available", flag(true)),
            ("free", flag(plan.free.unwrap_or(true))),
            ("bindable", flag(plan.bindable.unwrap_or(service.bindable))),
            (
                "plan_updateable",
                flag(plan.plan_updateable.unwrap_or(service.plan_updateable)),
            ),
            (
                "metadata",
                db::to_json_text(&plan.metadata.clone().unwrap_or_else(|| json!({}))),
            ),
        ];
        match existing.iter().find(|p| p.broker_id == plan.id) {
            Some(known) => {
                controller
                    .db
                    .update("service_plans", &known.guid, values)
                    .await?;
            }
            None => {
                let now = db::now();
                let visibility = if broker.space_guid.is_some() {
                    "space"
                } else {
                    "admin"
                };
                let mut all = vec![
                    ("guid", db::new_guid().into()),
                    ("service_offering_guid", offering_guid.into()),
                    ("broker_id", plan.id.clone().into()),
                    ("visibility_type", visibility.into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ];
                all.extend(values);
                controller.db.insert("service_plans", all).await?;
            }
        }
    }
    for plan in existing
        .iter()
        .filter(|p| !service.plans.iter().any(|c| c.id == p.broker_id))
    {
        retire_plan(controller, plan).await?;
    }
    Ok(())
}

/// A plan that left the catalog: deleted, or unavailable while instances use it
/// (returns whether they do).
async fn retire_plan(controller: &Controller, plan: &ServicePlan) -> Result<bool, ApiError> {
    let used = !controller
        .db
        .find::<ServiceInstance>(Filter::new().eq("service_plan_guid", &plan.guid))
        .await?
        .is_empty();
    if used {
        controller
            .db
            .update(
                "service_plans",
                &plan.guid,
                vec![("available", flag(false))],
            )
            .await?;
    } else {
        controller
            .db
            .delete_where(
                "service_plan_visibilities",
                Filter::new().eq("service_plan_guid", &plan.guid),
            )
            .await?;
        controller
            .db
            .delete_resources("service_plans", Filter::new().eq("guid", &plan.guid))
            .await?;
    }
    Ok(used)
}

/// Rows whose `service_plan_guid` is a plan of the broker.
fn plans_of_broker(broker_guid: &str) -> Filter {
    Filter::new().in_select(
        "service_plan_guid",
        "SELECT guid FROM service_plans WHERE service_offering_guid IN \
         (SELECT guid FROM service_offerings WHERE service_broker_guid IN ({}))",
        &[broker_guid.to_string()],
    )
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let broker = load_to(&controller, &user, &guid, true).await?;
    let instances: Vec<ServiceInstance> = controller.db.find(plans_of_broker(&guid)).await?;
    if !instances.is_empty() {
        let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        return Err(ApiError::unprocessable(format!(
            "Can not remove brokers that have associated service instances: {}",
            names.join(", ")
        )));
    }
    controller
        .db
        .delete_where("service_plan_visibilities", plans_of_broker(&guid))
        .await?;
    controller
        .db
        .delete_resources(
            "service_plans",
            Filter::new().in_select(
                "service_offering_guid",
                "SELECT guid FROM service_offerings WHERE service_broker_guid IN ({})",
                &[guid.clone()],
            ),
        )
        .await?;
    controller
        .db
        .delete_resources(
            "service_offerings",
            Filter::new().eq("service_broker_guid", &guid),
        )
        .await?;
    controller
        .db
        .delete_resources("service_brokers", Filter::new().eq("guid", &guid))
        .await?;
    record(
        &controller,
        &user,
        "audit.service_broker.delete",
        &broker,
        json!({}),
    )
    .await;
    finished_job(&controller, "service_broker.delete").await
}
