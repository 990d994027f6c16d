//! The marketplace: service offerings (`/v3/service_offerings`) and plans
//! (`/v3/service_plans`) from the brokers' catalogs, and who may see and use each plan
//! (`/v3/service_plans/:guid/visibility`: `admin`, `public`, `organization` with its
//! orgs, or `space` for a space-scoped broker's plans). Users see the offerings that
//! have a plan visible to them; admins and global readers see all.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{cf_time, href, metadata, ok, paginated, to_one, ApiResult, Ctl, JsonBody, ListParams};
use crate::auth::User;
use crate::db::{
    self, Arg, Filter, Org, PlanVisibility, ServiceBroker, ServiceOffering, ServicePlan, Space,
};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::Controller;

/// `(a, b, ...)` of `?` marks for `values` (one empty value when there are none, so
/// the SQL stays valid and matches nothing).
fn marks(values: &[String]) -> (String, Vec<Arg>) {
    let values = if values.is_empty() {
        vec![String::new()]
    } else {
        values.to_vec()
    };
    let marks = vec!["?"; values.len()].join(", ");
    (marks, values.iter().map(Arg::from).collect())
}

/// The condition on `service_plans` rows the user may see (none for admins and
/// global readers, who see all).
fn visible_plans(user: &User) -> Option<(String, Vec<Arg>)> {
    if user.sees_everything() {
        return None;
    }
    let (orgs, mut args) = marks(&user.visible_org_guids());
    let (spaces, space_args) = marks(&user.visible_space_guids());
    args.extend(space_args);
    Some((
        format!(
            "(visibility_type = 'public' \
             OR (visibility_type = 'organization' AND guid IN \
                 (SELECT service_plan_guid FROM service_plan_visibilities WHERE organization_guid IN ({orgs}))) \
             OR (visibility_type = 'space' AND service_offering_guid IN \
                 (SELECT guid FROM service_offerings WHERE service_broker_guid IN \
                     (SELECT guid FROM service_brokers WHERE space_guid IN ({spaces})))))"
        ),
        args,
    ))
}

/// Whether the plan may be used in `space` by `user`: admins use every plan, others
/// public ones, those visible in the space's org, and the space's own broker's.
pub async fn usable_in(
    controller: &Controller,
    user: &User,
    plan: &ServicePlan,
    space: &Space,
) -> Result<bool, ApiError> {
    if user.is_admin() {
        return Ok(true);
    }
    Ok(match plan.visibility_type.as_str() {
        "public" => true,
        "organization" => controller
            .db
            .find::<PlanVisibility>(Filter::new().eq("service_plan_guid", &plan.guid))
            .await?
            .iter()
            .any(|v| v.organization_guid == space.organization_guid),
        "space" => {
            let broker: Vec<ServiceBroker> = controller
                .db
                .find(Filter::new().in_select(
                    "guid",
                    "SELECT service_broker_guid FROM service_offerings WHERE guid IN ({})",
                    &[plan.service_offering_guid.clone()],
                ))
                .await?;
            broker
                .first()
                .is_some_and(|b| b.space_guid.as_deref() == Some(space.guid.as_str()))
        }
        _ => false,
    })
}

fn bool_filter(params: &ListParams, filter: Filter, column: &str) -> Result<Filter, ApiError> {
    match params.values("available").as_deref() {
        None => Ok(filter),
        Some([v]) if v == "true" || v == "false" => {
            Ok(filter.eq(column, Arg::Int(i64::from(v == "true"))))
        }
        Some(_) => Err(ApiError::BadQueryParameter(
            "available must be true or false".into(),
        )),
    }
}

fn present_offering(controller: &Controller, offering: &ServiceOffering) -> Value {
    json!({
        "guid": offering.guid,
        "name": offering.name,
        "description": offering.description,
        "available": offering.available,
        "tags": offering.tags,
        "requires": offering.requires,
        "created_at": cf_time(&offering.created_at),
        "updated_at": cf_time(&offering.updated_at),
        "shareable": false,
        "documentation_url": null,
        "broker_catalog": {
            "id": offering.broker_id,
            "metadata": offering.metadata,
            "features": {
                "plan_updateable": offering.plan_updateable,
                "bindable": offering.bindable,
                "instances_retrievable": offering.instances_retrievable,
                "bindings_retrievable": offering.bindings_retrievable,
                "allow_context_updates": false,
            },
        },
        "relationships": {"service_broker": to_one(Some(&offering.service_broker_guid))},
        "metadata": metadata(),
        "links": {
            "self": href(controller, &format!("/v3/service_offerings/{}", offering.guid)),
            "service_plans": href(controller, &format!("/v3/service_plans?service_offering_guids={}", offering.guid)),
            "service_broker": href(controller, &format!("/v3/service_brokers/{}", offering.service_broker_guid)),
        },
    })
}

fn offerings_filter(user: &User, params: &ListParams) -> Result<Filter, ApiError> {
    let mut filter = Filter::new();
    if let Some((plans, args)) = visible_plans(user) {
        filter = filter.clause(
            &format!("guid IN (SELECT service_offering_guid FROM service_plans WHERE {plans})"),
            args,
        );
    }
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "service_broker_guids", "service_broker_guid");
    let filter = params.filter_in(
        filter,
        "service_broker_names",
        "service_broker_guid",
        "SELECT guid FROM service_brokers WHERE name IN ({})",
    );
    let filter = params.label_selector(filter, "service_offerings")?;
    bool_filter(params, filter, "available")
}

pub async fn list_offerings(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = offerings_filter(&user, &params)?;
    let (total, offerings) = controller
        .db
        .list::<ServiceOffering>(filter, &params.page)
        .await?;
    let mut resources: Vec<Value> = offerings
        .iter()
        .map(|o| present_offering(&controller, o))
        .collect();
    metadata::fill(&controller.db, "service_offerings", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show_offering(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let filter = offerings_filter(&user, &params)?.eq("guid", &guid);
    let offering = controller
        .db
        .find::<ServiceOffering>(filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Service offering"))?;
    let shown = present_offering(&controller, &offering);
    Ok(ok(metadata::filled(
        &controller.db,
        "service_offerings",
        shown,
    )
    .await?))
}

/// `PATCH /v3/service_offerings/:guid`: an offering's metadata, by those who may
/// change its broker.
pub async fn update_offering(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let filter = offerings_filter(&user, &params)?.eq("guid", &guid);
    let offering = controller
        .db
        .find::<ServiceOffering>(filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Service offering"))?;
    super::service_brokers::load_to(&controller, &user, &offering.service_broker_guid, true)
        .await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels
        .apply(&controller.db, "service_offerings", &guid)
        .await?;
    let shown = present_offering(&controller, &offering);
    Ok(ok(metadata::filled(
        &controller.db,
        "service_offerings",
        shown,
    )
    .await?))
}

fn present_plan(controller: &Controller, plan: &ServicePlan) -> Value {
    json!({
        "guid": plan.guid,
        "name": plan.name,
        "description": plan.description,
        "visibility_type": plan.visibility_type,
        "available": plan.available,
        "free": plan.free,
        "costs": [],
        "created_at": cf_time(&plan.created_at),
        "updated_at": cf_time(&plan.updated_at),
        "maintenance_info": {},
        "broker_catalog": {
            "id": plan.broker_id,
            "metadata": plan.metadata,
            "maximum_polling_duration": null,
            "features": {"plan_updateable": plan.plan_updateable, "bindable": plan.bindable},
        },
        "schemas": {
            "service_instance": {"create": {"parameters": {}}, "update": {"parameters": {}}},
            "service_binding": {"create": {"parameters": {}}},
        },
        "relationships": {"service_offering": to_one(Some(&plan.service_offering_guid))},
        "metadata": metadata(),
        "links": {
            "self": href(controller, &format!("/v3/service_plans/{}", plan.guid)),
            "service_offering": href(controller, &format!("/v3/service_offerings/{}", plan.service_offering_guid)),
            "visibility": href(controller, &format!("/v3/service_plans/{}/visibility", plan.guid)),
        },
    })
}

fn plans_filter(user: &User, params: &ListParams) -> Result<Filter, ApiError> {
    let mut filter = Filter::new();
    if let Some((plans, args)) = visible_plans(user) {
        filter = filter.clause(&plans, args);
    }
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "service_offering_guids", "service_offering_guid");
    let filter = params.filter_in(
        filter,
        "service_offering_names",
        "service_offering_guid",
        "SELECT guid FROM service_offerings WHERE name IN ({})",
    );
    let filter = params.filter_in(
        filter,
        "service_broker_guids",
        "service_offering_guid",
        "SELECT guid FROM service_offerings WHERE service_broker_guid IN ({})",
    );
    let filter = params.filter_in(
        filter,
        "service_broker_names",
        "service_offering_guid",
        "SELECT guid FROM service_offerings WHERE service_broker_guid IN \
         (SELECT guid FROM service_brokers WHERE name IN ({}))",
    );
    let filter = params.label_selector(filter, "service_plans")?;
    bool_filter(params, filter, "available")
}

pub async fn list_plans(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = plans_filter(&user, &params)?;
    let (total, plans) = controller
        .db
        .list::<ServicePlan>(filter, &params.page)
        .await?;
    let mut resources: Vec<Value> = plans.iter().map(|p| present_plan(&controller, p)).collect();
    metadata::fill(&controller.db, "service_plans", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

async fn load_plan(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<ServicePlan, ApiError> {
    let mut filter = Filter::new().eq("guid", guid);
    if let Some((plans, args)) = visible_plans(user) {
        filter = filter.clause(&plans, args);
    }
    controller
        .db
        .find::<ServicePlan>(filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Service plan"))
}

pub async fn show_plan(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let plan = load_plan(&controller, &user, &guid).await?;
    let shown = present_plan(&controller, &plan);
    Ok(ok(
        metadata::filled(&controller.db, "service_plans", shown).await?
    ))
}

/// `PATCH /v3/service_plans/:guid`: a plan's metadata, by those who may change its
/// broker.
pub async fn update_plan(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let plan = load_plan(&controller, &user, &guid).await?;
    let offering = controller
        .db
        .get::<ServiceOffering>(&plan.service_offering_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Service plan"))?;
    super::service_brokers::load_to(&controller, &user, &offering.service_broker_guid, true)
        .await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "service_plans", &guid).await?;
    let shown = present_plan(&controller, &plan);
    Ok(ok(
        metadata::filled(&controller.db, "service_plans", shown).await?
    ))
}

async fn present_visibility(controller: &Controller, user: &User, plan: &ServicePlan) -> ApiResult {
    let mut body = json!({"type": plan.visibility_type});
    if plan.visibility_type == "organization" {
        let orgs: Vec<Org> = controller
            .db
            .find(user.scope_orgs(
                Filter::new().in_select(
                    "guid",
                    "SELECT organization_guid FROM service_plan_visibilities WHERE service_plan_guid IN ({})",
                    &[plan.guid.clone()],
                ),
                "guid",
            ))
            .await?;
        body["organizations"] = orgs
            .iter()
            .map(|o| json!({"guid": o.guid, "name": o.name}))
            .collect();
    }
    Ok(ok(body))
}

pub async fn visibility(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let plan = load_plan(&controller, &user, &guid).await?;
    present_visibility(&controller, &user, &plan).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisibilityBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    organizations: Vec<OrgRef>,
}

#[derive(Debug, Deserialize)]
pub struct OrgRef {
    guid: String,
}

/// Checks a visibility change by an admin; the orgs it names.
async fn checked(
    controller: &Controller,
    user: &User,
    plan: &ServicePlan,
    body: &VisibilityBody,
) -> Result<Vec<String>, ApiError> {
    user.require_admin()?;
    if plan.visibility_type == "space" {
        return Err(ApiError::unprocessable(
            "Cannot update visibility of a plan of a space-scoped broker",
        ));
    }
    if !matches!(body.kind.as_str(), "public" | "admin" | "organization") {
        return Err(ApiError::unprocessable(
            "Type must be one of 'public', 'admin', 'organization'",
        ));
    }
    if body.kind != "organization" && !body.organizations.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "Organizations can only be given for type 'organization', not '{}'",
            body.kind
        )));
    }
    let guids: Vec<String> = body.organizations.iter().map(|o| o.guid.clone()).collect();
    let found: Vec<Org> = controller
        .db
        .find(Filter::new().any_of("guid", &guids))
        .await?;
    if let Some(missing) = guids.iter().find(|g| !found.iter().any(|o| &o.guid == *g)) {
        return Err(ApiError::unprocessable(format!(
            "Could not find organization with guid: {missing}"
        )));
    }
    Ok(guids)
}

async fn add_orgs(
    controller: &Controller,
    plan: &ServicePlan,
    orgs: &[String],
) -> Result<(), ApiError> {
    for org in orgs {
        let now = db::now();
        let inserted = controller
            .db
            .insert(
                "service_plan_visibilities",
                vec![
                    ("guid", db::new_guid().into()),
                    ("service_plan_guid", plan.guid.clone().into()),
                    ("organization_guid", org.into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await;
        match inserted {
            Err(e) if db::is_unique_violation(&e) => {}
            other => other?,
        }
    }
    Ok(())
}

/// `PATCH .../visibility`: replaces the type and the orgs.
pub async fn replace_visibility(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> ApiResult {
    let plan = load_plan(&controller, &user, &guid).await?;
    let orgs = checked(&controller, &user, &plan, &body).await?;
    controller
        .db
        .delete_where(
            "service_plan_visibilities",
            Filter::new().eq("service_plan_guid", &guid),
        )
        .await?;
    add_orgs(&controller, &plan, &orgs).await?;
    controller
        .db
        .update(
            "service_plans",
            &guid,
            vec![("visibility_type", body.kind.clone().into())],
        )
        .await?;
    let plan = load_plan(&controller, &user, &guid).await?;
    present_visibility(&controller, &user, &plan).await
}

/// `POST .../visibility`: adds orgs (the type becomes `organization` if it was
/// `admin`).
pub async fn append_visibility(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> ApiResult {
    let plan = load_plan(&controller, &user, &guid).await?;
    let orgs = checked(&controller, &user, &plan, &body).await?;
    if body.kind == "organization" && plan.visibility_type == "public" {
        return Err(ApiError::unprocessable(
            "Cannot append organizations to a public plan",
        ));
    }
    add_orgs(&controller, &plan, &orgs).await?;
    controller
        .db
        .update(
            "service_plans",
            &guid,
            vec![("visibility_type", body.kind.clone().into())],
        )
        .await?;
    let plan = load_plan(&controller, &user, &guid).await?;
    present_visibility(&controller, &user, &plan).await
}

/// `DELETE .../visibility/:org_guid`.
pub async fn remove_visibility(
    State(controller): Ctl,
    user: User,
    Path((guid, org)): Path<(String, String)>,
) -> ApiResult {
    let plan = load_plan(&controller, &user, &guid).await?;
    user.require_admin()?;
    if plan.visibility_type != "organization" {
        return Err(ApiError::unprocessable(
            "Organizations can only be removed from plans of type 'organization'",
        ));
    }
    controller
        .db
        .delete_where(
            "service_plan_visibilities",
            Filter::new()
                .eq("service_plan_guid", &guid)
                .eq("organization_guid", &org),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
