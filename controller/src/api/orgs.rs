//! Organizations and spaces. Deleting one deletes everything in it (spaces, apps and
//! their LRPs, routes, roles). Only admins create and delete orgs; org managers manage
//! their org's spaces; users see only the orgs and spaces they have a role in.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cf_time, created, finished_job, href, load_space, load_space_to, metadata, ok, paginated,
    paginated_with, relationship_guid, to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{self, App, Arg, Filter, Org, Route, Space};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::Controller;

#[derive(Debug, Deserialize)]
pub struct NameBody {
    name: Option<String>,
    metadata: Option<Value>,
}

fn valid_name(name: Option<String>, what: &str) -> Result<String, ApiError> {
    let name = name.unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    if name.len() > 255 {
        return Err(ApiError::unprocessable(format!(
            "{what} name is too long (maximum is 255 characters)"
        )));
    }
    Ok(name)
}

fn present_org(controller: &Controller, org: &Org) -> Value {
    let link = |suffix: &str| {
        href(
            controller,
            &format!("/v3/organizations/{}{suffix}", org.guid),
        )
    };
    json!({
        "guid": org.guid,
        "created_at": cf_time(&org.created_at),
        "updated_at": cf_time(&org.updated_at),
        "name": org.name,
        "suspended": org.suspended,
        "relationships": {"quota": to_one(org.quota_guid.as_deref())},
        "metadata": metadata(),
        "links": {
            "self": link(""),
            "domains": link("/domains"),
            "default_domain": link("/domains/default"),
            "quota": org.quota_guid.as_ref().map(|quota| {
                href(controller, &format!("/v3/organization_quotas/{quota}"))
            }),
        },
    })
}

fn present_space(controller: &Controller, space: &Space) -> Value {
    json!({
        "guid": space.guid,
        "created_at": cf_time(&space.created_at),
        "updated_at": cf_time(&space.updated_at),
        "name": space.name,
        "relationships": {
            "organization": to_one(Some(&space.organization_guid)),
            "quota": to_one(space.quota_guid.as_deref()),
        },
        "metadata": metadata(),
        "links": {
            "self": href(controller, &format!("/v3/spaces/{}", space.guid)),
            "organization": href(controller, &format!("/v3/organizations/{}", space.organization_guid)),
            "features": href(controller, &format!("/v3/spaces/{}/features", space.guid)),
            "apply_manifest": {
                "href": format!("{}/v3/spaces/{}/actions/apply_manifest", controller.base_url, space.guid),
                "method": "POST",
            },
        },
    })
}

/// An org the user can see (else 404).
async fn load_org(controller: &Controller, user: &User, guid: &str) -> Result<Org, ApiError> {
    controller
        .db
        .get::<Org>(guid)
        .await?
        .filter(|org| user.can_see_org(&org.guid))
        .ok_or_else(|| ApiError::not_found("Organization"))
}

/// An org the user may manage: 404 if they cannot see it, 403 if they may not.
async fn load_org_to_manage(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<Org, ApiError> {
    let org = load_org(controller, user, guid).await?;
    if !user.can_manage_org(&org.guid) {
        return Err(ApiError::not_authorized());
    }
    Ok(org)
}

pub async fn list_orgs(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    orgs_page(&controller, &user, &params, Filter::new()).await
}

/// A page of the orgs matching `filter` that the user sees, with the orgs list's
/// filters (`names`, `guids`, `label_selector`).
pub(super) async fn orgs_page(
    controller: &Controller,
    user: &User,
    params: &ListParams,
    filter: Filter,
) -> ApiResult {
    let filter = user.scope_orgs(filter, "guid");
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.label_selector(filter, "organizations")?;
    let (total, orgs) = controller.db.list::<Org>(filter, &params.page).await?;
    let mut resources: Vec<Value> = orgs.iter().map(|o| present_org(controller, o)).collect();
    metadata::fill(&controller.db, "organizations", &mut resources).await?;
    Ok(paginated(controller, params, total, resources))
}

pub async fn create_org(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<NameBody>,
) -> ApiResult {
    // With user_org_creation, users create orgs and become their managers.
    let by_user = !user.is_admin();
    if by_user
        && !(user.claims.is_user()
            && super::feature_flags::enabled(&controller, "user_org_creation").await?)
    {
        return Err(ApiError::not_authorized());
    }
    let name = valid_name(body.name, "Organization")?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let exists = |name: &str| format!("Organization '{name}' already exists.");
    if !controller
        .db
        .find::<Org>(Filter::new().eq("name", &name))
        .await?
        .is_empty()
    {
        return Err(ApiError::unprocessable(exists(&name)));
    }
    let guid = db::new_guid();
    let now = db::now();
    let quota = crate::quotas::default_org_quota(&controller).await?;
    let inserted = controller
        .db
        .insert(
            "organizations",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.clone().into()),
                ("suspended", Arg::Int(0)),
                ("quota_guid", quota.into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => {
            return Err(ApiError::unprocessable(exists(&name)))
        }
        other => other?,
    }
    labels.apply(&controller.db, "organizations", &guid).await?;
    if by_user {
        for kind in ["organization_user", "organization_manager"] {
            let now = db::now();
            controller
                .db
                .insert(
                    "roles",
                    vec![
                        ("guid", db::new_guid().into()),
                        ("type", kind.into()),
                        ("user_guid", user.claims.user_id.clone().into()),
                        ("organization_guid", guid.clone().into()),
                        ("space_guid", Arg::Null),
                        ("created_at", now.clone().into()),
                        ("updated_at", now.into()),
                    ],
                )
                .await?;
        }
    }
    // The caller's roles were loaded before the org existed.
    let perms = crate::auth::Permissions::load(&controller.db, &user.claims).await?;
    let user = User { perms, ..user };
    let org = load_org(&controller, &user, &guid).await?;
    let target = Target {
        kind: "organization",
        guid: &org.guid,
        name: &org.name,
    };
    audit::record(
        &controller,
        &user,
        "audit.organization.create",
        target,
        None,
        json!({}),
    )
    .await;
    Ok(created(org_with_metadata(&controller, &org).await?))
}

async fn org_with_metadata(controller: &Controller, org: &Org) -> Result<Value, ApiError> {
    let org = present_org(controller, org);
    Ok(metadata::filled(&controller.db, "organizations", org).await?)
}

pub async fn show_org(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let org = load_org(&controller, &user, &guid).await?;
    Ok(ok(org_with_metadata(&controller, &org).await?))
}

pub async fn update_org(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<NameBody>,
) -> ApiResult {
    let org = load_org_to_manage(&controller, &user, &guid).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    if body.name.is_some() {
        let name = valid_name(body.name, "Organization")?;
        let clash = controller
            .db
            .find::<Org>(Filter::new().eq("name", &name))
            .await?;
        if clash.iter().any(|o| o.guid != org.guid) {
            return Err(ApiError::unprocessable(format!(
                "Organization '{name}' already exists."
            )));
        }
        controller
            .db
            .update("organizations", &guid, vec![("name", name.into())])
            .await?;
    }
    labels.apply(&controller.db, "organizations", &guid).await?;
    let org = load_org(&controller, &user, &guid).await?;
    Ok(ok(org_with_metadata(&controller, &org).await?))
}

pub async fn delete_org(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let org = load_org(&controller, &user, &guid).await?;
    user.require_admin()?;
    for space in controller
        .db
        .find::<Space>(Filter::new().eq("organization_guid", &org.guid))
        .await?
    {
        delete_space_contents(&controller, &space).await?;
    }
    controller
        .db
        .delete_where("roles", Filter::new().eq("organization_guid", &org.guid))
        .await?;
    controller
        .db
        .delete_where(
            "isolation_segment_organizations",
            Filter::new().eq("organization_guid", &org.guid),
        )
        .await?;
    controller
        .db
        .delete_resources("organizations", Filter::new().eq("guid", &org.guid))
        .await?;
    let target = Target {
        kind: "organization",
        guid: &org.guid,
        name: &org.name,
    };
    audit::record(
        &controller,
        &user,
        "audit.organization.delete-request",
        target,
        None,
        json!({}),
    )
    .await;
    finished_job(&controller, "organization.delete").await
}

#[derive(Debug, Deserialize)]
pub struct CreateSpace {
    name: Option<String>,
    #[serde(default)]
    relationships: Value,
    metadata: Option<Value>,
}

/// The `included` object of a list whose resources live in `space_guids`: the spaces
/// (`space`) and their orgs (`organization` or `space.organization`) as `include` asks.
pub(super) async fn included(
    controller: &Controller,
    includes: &[String],
    space_guids: Vec<String>,
) -> Result<Option<Value>, ApiError> {
    if includes.is_empty() {
        return Ok(None);
    }
    let mut guids = space_guids;
    guids.sort();
    guids.dedup();
    let spaces = controller
        .db
        .find::<Space>(Filter::new().any_of("guid", &guids))
        .await?;
    let mut included = serde_json::Map::new();
    if includes.iter().any(|i| i == "space") {
        let mut list: Vec<Value> = spaces
            .iter()
            .map(|s| present_space(controller, s))
            .collect();
        metadata::fill(&controller.db, "spaces", &mut list).await?;
        included.insert("spaces".into(), Value::Array(list));
    }
    if includes
        .iter()
        .any(|i| i == "organization" || i == "space.organization")
    {
        let mut org_guids: Vec<String> =
            spaces.iter().map(|s| s.organization_guid.clone()).collect();
        org_guids.sort();
        org_guids.dedup();
        let orgs = controller
            .db
            .find::<Org>(Filter::new().any_of("guid", &org_guids))
            .await?;
        let mut list: Vec<Value> = orgs.iter().map(|o| present_org(controller, o)).collect();
        metadata::fill(&controller.db, "organizations", &mut list).await?;
        included.insert("organizations".into(), Value::Array(list));
    }
    Ok(Some(Value::Object(included)))
}

pub async fn list_spaces(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let includes = params.includes(&["organization"])?;
    let filter = user.scope_spaces(Filter::new(), "guid");
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "organization_guids", "organization_guid");
    let filter = params.label_selector(filter, "spaces")?;
    let (total, spaces) = controller.db.list::<Space>(filter, &params.page).await?;
    let mut resources: Vec<Value> = spaces
        .iter()
        .map(|s| present_space(&controller, s))
        .collect();
    metadata::fill(&controller.db, "spaces", &mut resources).await?;
    let space_guids = spaces.into_iter().map(|s| s.guid).collect();
    let included = included(&controller, &includes, space_guids).await?;
    Ok(paginated_with(
        &controller,
        &params,
        total,
        resources,
        included,
    ))
}

pub async fn create_space(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateSpace>,
) -> ApiResult {
    let name = valid_name(body.name, "Space")?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let org_guid = relationship_guid(
        &json!({"relationships": body.relationships}),
        "organization",
    );
    let org = match org_guid {
        Some(guid) => controller.db.get::<Org>(&guid).await?,
        None => None,
    };
    let Some(org) = org.filter(|org| user.can_see_org(&org.guid)) else {
        return Err(ApiError::unprocessable(
            "Invalid organization. Ensure the organization exists and you have access to it.",
        ));
    };
    if !user.can_manage_org(&org.guid) {
        return Err(ApiError::not_authorized());
    }
    let exists = |name: &str| format!("Space '{name}' already exists.");
    let same_name = Filter::new()
        .eq("organization_guid", &org.guid)
        .eq("name", &name);
    if !controller.db.find::<Space>(same_name).await?.is_empty() {
        return Err(ApiError::unprocessable(exists(&name)));
    }
    let guid = db::new_guid();
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "spaces",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.clone().into()),
                ("organization_guid", org.guid.into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => {
            return Err(ApiError::unprocessable(exists(&name)))
        }
        other => other?,
    }
    labels.apply(&controller.db, "spaces", &guid).await?;
    let space = controller
        .db
        .get::<Space>(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Space"))?;
    audit::record_space_event(&controller, &user, "audit.space.create", &space).await;
    Ok(created(space_with_metadata(&controller, &space).await?))
}

async fn space_with_metadata(controller: &Controller, space: &Space) -> Result<Value, ApiError> {
    let space = present_space(controller, space);
    Ok(metadata::filled(&controller.db, "spaces", space).await?)
}

pub async fn show_space(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let space = load_space(&controller, &user, &guid).await?;
    Ok(ok(space_with_metadata(&controller, &space).await?))
}

pub async fn update_space(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<NameBody>,
) -> ApiResult {
    let space = load_space_to(&controller, &user, &guid, Access::Manage).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    if body.name.is_some() {
        let name = valid_name(body.name, "Space")?;
        let same_name = Filter::new()
            .eq("organization_guid", &space.organization_guid)
            .eq("name", &name);
        let clash = controller.db.find::<Space>(same_name).await?;
        if clash.iter().any(|s| s.guid != space.guid) {
            return Err(ApiError::unprocessable(format!(
                "Space '{name}' already exists."
            )));
        }
        controller
            .db
            .update("spaces", &guid, vec![("name", name.into())])
            .await?;
    }
    labels.apply(&controller.db, "spaces", &guid).await?;
    let space = load_space(&controller, &user, &guid).await?;
    audit::record_space_event(&controller, &user, "audit.space.update", &space).await;
    Ok(ok(space_with_metadata(&controller, &space).await?))
}

pub async fn delete_space(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let space = load_space(&controller, &user, &guid).await?;
    if !user.can_manage_org(&space.organization_guid) {
        return Err(ApiError::not_authorized());
    }
    delete_space_contents(&controller, &space).await?;
    audit::record_space_event(&controller, &user, "audit.space.delete-request", &space).await;
    finished_job(&controller, "space.delete").await
}

/// Deletes the space's apps (and their LRPs) and routes, then the space.
async fn delete_space_contents(controller: &Controller, space: &Space) -> Result<(), ApiError> {
    for app in controller
        .db
        .find::<App>(Filter::new().eq("space_guid", &space.guid))
        .await?
    {
        super::apps::delete_app(controller, &app).await?;
    }
    for route in controller
        .db
        .find::<Route>(Filter::new().eq("space_guid", &space.guid))
        .await?
    {
        super::routes::delete_route(controller, &route).await?;
    }
    crate::service_operations::delete_space_instances(controller, &space.guid).await?;
    controller
        .db
        .delete_where("roles", Filter::new().eq("space_guid", &space.guid))
        .await?;
    controller
        .db
        .delete_resources("spaces", Filter::new().eq("guid", &space.guid))
        .await?;
    Ok(())
}
