//! Organization quotas (`/v3/organization_quotas`) and space quotas
//! (`/v3/space_quotas`): CF's named sets of limits on memory, instances, tasks,
//! services, routes and domains (null = unlimited), and applying them to orgs and
//! spaces. Checking usage against them is `crate::quotas`.
//!
//! Who may do what, after CF: every user sees organization quotas (with only the orgs
//! they see in `relationships`); only admins create, update, delete and apply them.
//! Space quotas are seen by the managers of their org and by users of a space they
//! are applied to (and by admins and global readers); the org's managers create,
//! update, delete, apply and remove them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde_json::{json, Map, Value};

use super::{
    cf_time, created, finished_job, guid_list, href, metadata, ok, paginated, relationship,
    relationship_guid, to_many_guids, to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::auth::User;
use crate::db::{self, Arg, Filter, Org, OrgQuota, QuotaLimits, Space, SpaceQuota};
use crate::error::ApiError;
use crate::Controller;

/// CC's largest quota value (its database integers).
const MAX_LIMIT: i64 = i32::MAX as i64;
const MAX_NAME: usize = 250;

/// The limits of a request body: (section, field, how CF names it in errors).
const LIMITS: &[(&str, &str, &str)] = &[
    ("apps", "total_memory_in_mb", "Total memory in mb"),
    (
        "apps",
        "per_process_memory_in_mb",
        "Per process memory in mb",
    ),
    ("apps", "total_instances", "Total instances"),
    ("apps", "per_app_tasks", "Per app tasks"),
    (
        "apps",
        "log_rate_limit_in_bytes_per_second",
        "Log rate limit in bytes per second",
    ),
    (
        "services",
        "total_service_instances",
        "Total service instances",
    ),
    ("services", "total_service_keys", "Total service keys"),
    ("routes", "total_routes", "Total routes"),
    ("routes", "total_reserved_ports", "Total reserved ports"),
    ("domains", "total_domains", "Total domains"),
];

/// Which kind of quota a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Organization,
    Space,
}

impl Kind {
    fn sections(self) -> &'static [&'static str] {
        match self {
            Kind::Organization => &["apps", "services", "routes", "domains"],
            Kind::Space => &["apps", "services", "routes"],
        }
    }

    /// How CF names it in messages.
    fn title(self) -> &'static str {
        match self {
            Kind::Organization => "Organization Quota",
            Kind::Space => "Space Quota",
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn unknown_fields(object: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    let unknown: Vec<String> = object
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "Unknown field(s): {}",
            unknown.join(", ")
        )))
    }
}

/// A validated create or update body: the new name, and the columns to set.
#[derive(Debug, Default, PartialEq)]
struct QuotaBody {
    name: Option<String>,
    columns: Vec<(&'static str, Arg)>,
}

fn parse_body(body: &Value, kind: Kind) -> Result<QuotaBody, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::unprocessable(
            "The request body must be an object",
        ));
    };
    let mut known = vec!["name", "relationships", "metadata"];
    known.extend(kind.sections());
    unknown_fields(object, &known)?;
    let name = match object.get("name") {
        None => None,
        Some(Value::String(name)) if name.trim().is_empty() => {
            return Err(ApiError::unprocessable("Name can't be blank"))
        }
        Some(Value::String(name)) if name.chars().count() > MAX_NAME => {
            return Err(ApiError::unprocessable(format!(
                "Name is too long (maximum is {MAX_NAME} characters)"
            )))
        }
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(ApiError::unprocessable("Name must be a string")),
    };
    let mut columns = Vec::new();
    for section in kind.sections() {
        let Some(value) = object.get(*section) else {
            continue;
        };
        let title = capitalized(section);
        let Some(fields) = value.as_object() else {
            return Err(ApiError::unprocessable(format!(
                "{title} must be an object"
            )));
        };
        let mut known: Vec<&str> = LIMITS
            .iter()
            .filter(|(s, _, _)| s == section)
            .map(|(_, field, _)| *field)
            .collect();
        if *section == "services" {
            known.push("paid_services_allowed");
            match fields.get("paid_services_allowed") {
                None => {}
                Some(Value::Bool(allowed)) => {
                    columns.push(("paid_services_allowed", Arg::Int(i64::from(*allowed))))
                }
                Some(_) => {
                    return Err(ApiError::unprocessable(
                        "Services Paid services allowed must be a boolean",
                    ))
                }
            }
        }
        unknown_fields(fields, &known)
            .map_err(|e| ApiError::unprocessable(format!("{title} {e}")))?;
        for (_, field, label) in LIMITS.iter().filter(|(s, _, _)| s == section) {
            let arg = match fields.get(*field) {
                None => continue,
                Some(Value::Null) => Arg::NullInt,
                Some(value) => match value.as_i64() {
                    Some(n) if n < 0 => {
                        return Err(ApiError::unprocessable(format!(
                            "{title} {label} must be greater than or equal to 0"
                        )))
                    }
                    Some(n) if n > MAX_LIMIT => {
                        return Err(ApiError::unprocessable(format!(
                            "{title} {label} must be less than or equal to {MAX_LIMIT}"
                        )))
                    }
                    Some(n) => Arg::Int(n),
                    None => {
                        return Err(ApiError::unprocessable(format!(
                            "{title} {label} is not a number"
                        )))
                    }
                },
            };
            columns.push((*field, arg));
        }
    }
    Ok(QuotaBody { name, columns })
}

fn limits_json(limits: &QuotaLimits, kind: Kind) -> Value {
    let mut shown = json!({
        "apps": {
            "total_memory_in_mb": limits.total_memory_in_mb,
            "per_process_memory_in_mb": limits.per_process_memory_in_mb,
            "total_instances": limits.total_instances,
            "per_app_tasks": limits.per_app_tasks,
            "log_rate_limit_in_bytes_per_second": limits.log_rate_limit_in_bytes_per_second,
        },
        "services": {
            "paid_services_allowed": limits.paid_services_allowed,
            "total_service_instances": limits.total_service_instances,
            "total_service_keys": limits.total_service_keys,
        },
        "routes": {
            "total_routes": limits.total_routes,
            "total_reserved_ports": limits.total_reserved_ports,
        },
    });
    if kind == Kind::Organization {
        shown["domains"] = json!({"total_domains": limits.total_domains});
    }
    shown
}

/// The orgs on `quota` that `user` can see.
async fn orgs_on(
    controller: &Controller,
    user: &User,
    quota: &str,
) -> Result<Vec<String>, ApiError> {
    let filter = user.scope_orgs(Filter::new().eq("quota_guid", quota), "guid");
    let orgs = controller.db.find::<Org>(filter).await?;
    Ok(orgs.into_iter().map(|o| o.guid).collect())
}

/// The spaces on `quota` that `user` can see.
async fn spaces_on(
    controller: &Controller,
    user: &User,
    quota: &str,
) -> Result<Vec<String>, ApiError> {
    let filter = user.scope_spaces(Filter::new().eq("quota_guid", quota), "guid");
    let spaces = controller.db.find::<Space>(filter).await?;
    Ok(spaces.into_iter().map(|s| s.guid).collect())
}

async fn present_org_quota(
    controller: &Controller,
    user: &User,
    quota: &OrgQuota,
) -> Result<Value, ApiError> {
    let mut shown = json!({
        "guid": quota.guid,
        "created_at": cf_time(&quota.created_at),
        "updated_at": cf_time(&quota.updated_at),
        "name": quota.name,
        "relationships": {
            "organizations": {"data": guid_list(&orgs_on(controller, user, &quota.guid).await?)},
        },
        "metadata": metadata(),
        "links": {"self": href(controller, &format!("/v3/organization_quotas/{}", quota.guid))},
    });
    merge(&mut shown, limits_json(&quota.limits, Kind::Organization));
    Ok(shown)
}

async fn present_space_quota(
    controller: &Controller,
    user: &User,
    quota: &SpaceQuota,
) -> Result<Value, ApiError> {
    let mut shown = json!({
        "guid": quota.guid,
        "created_at": cf_time(&quota.created_at),
        "updated_at": cf_time(&quota.updated_at),
        "name": quota.name,
        "relationships": {
            "organization": to_one(Some(&quota.organization_guid)),
            "spaces": {"data": guid_list(&spaces_on(controller, user, &quota.guid).await?)},
        },
        "metadata": metadata(),
        "links": {
            "self": href(controller, &format!("/v3/space_quotas/{}", quota.guid)),
            "organization": href(controller, &format!("/v3/organizations/{}", quota.organization_guid)),
        },
    });
    merge(&mut shown, limits_json(&quota.limits, Kind::Space));
    Ok(shown)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// Inserts a quota row: `columns` over CF's defaults (unlimited, paid plans allowed).
async fn insert_quota(
    controller: &Controller,
    table: &str,
    mut columns: Vec<(&'static str, Arg)>,
) -> Result<String, sqlx::Error> {
    let guid = db::new_guid();
    let now = db::now();
    if !columns.iter().any(|(c, _)| *c == "paid_services_allowed") {
        columns.push(("paid_services_allowed", Arg::Int(1)));
    }
    columns.extend([
        ("guid", guid.clone().into()),
        ("created_at", now.clone().into()),
        ("updated_at", now.into()),
    ]);
    controller.db.insert(table, columns).await?;
    Ok(guid)
}

/// The 422 of a name taken by another quota (also when the database's UNIQUE says so).
fn name_taken(kind: Kind, name: &str) -> ApiError {
    ApiError::unprocessable(format!("{} '{name}' already exists.", kind.title()))
}

fn map_unique(e: sqlx::Error, kind: Kind, name: &str) -> ApiError {
    if db::is_unique_violation(&e) {
        name_taken(kind, name)
    } else {
        e.into()
    }
}

// --- organization quotas ---

async fn load_org_quota(controller: &Controller, guid: &str) -> Result<OrgQuota, ApiError> {
    controller
        .db
        .get::<OrgQuota>(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Organization quota"))
}

pub async fn list_org_quotas(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = params.filter(Filter::new(), "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter_in(
        filter,
        "organization_guids",
        "guid",
        "SELECT quota_guid FROM organizations WHERE guid IN ({})",
    );
    let (total, quotas) = controller.db.list::<OrgQuota>(filter, &params.page).await?;
    let mut resources = Vec::with_capacity(quotas.len());
    for quota in &quotas {
        resources.push(present_org_quota(&controller, &user, quota).await?);
    }
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show_org_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let quota = load_org_quota(&controller, &guid).await?;
    Ok(ok(present_org_quota(&controller, &user, &quota).await?))
}

pub async fn create_org_quota(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    user.require_admin()?;
    let parsed = parse_body(&body, Kind::Organization)?;
    let Some(name) = parsed.name else {
        return Err(ApiError::unprocessable("Name can't be blank"));
    };
    let orgs = match body.pointer("/relationships/organizations") {
        Some(relationship) => to_many_guids(relationship)?,
        None => Vec::new(),
    };
    if !find_org_quota_named(&controller, &name).await?.is_empty() {
        return Err(name_taken(Kind::Organization, &name));
    }
    let mut columns = parsed.columns;
    columns.push(("name", name.clone().into()));
    let guid = insert_quota(&controller, "organization_quotas", columns)
        .await
        .map_err(|e| map_unique(e, Kind::Organization, &name))?;
    apply_to_orgs(&controller, &guid, &orgs).await?;
    let quota = load_org_quota(&controller, &guid).await?;
    Ok(created(
        present_org_quota(&controller, &user, &quota).await?,
    ))
}

async fn find_org_quota_named(
    controller: &Controller,
    name: &str,
) -> Result<Vec<OrgQuota>, ApiError> {
    Ok(controller
        .db
        .find::<OrgQuota>(Filter::new().eq("name", name))
        .await?)
}

pub async fn update_org_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let quota = load_org_quota(&controller, &guid).await?;
    user.require_admin()?;
    let parsed = parse_body(&body, Kind::Organization)?;
    let mut columns = parsed.columns;
    let name = parsed.name.unwrap_or(quota.name);
    let clash = find_org_quota_named(&controller, &name).await?;
    if clash.iter().any(|q| q.guid != quota.guid) {
        return Err(name_taken(Kind::Organization, &name));
    }
    columns.push(("name", name.clone().into()));
    controller
        .db
        .update("organization_quotas", &quota.guid, columns)
        .await
        .map_err(|e| map_unique(e, Kind::Organization, &name))?;
    let quota = load_org_quota(&controller, &guid).await?;
    Ok(ok(present_org_quota(&controller, &user, &quota).await?))
}

pub async fn delete_org_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let quota = load_org_quota(&controller, &guid).await?;
    user.require_admin()?;
    let applied = controller
        .db
        .find::<Org>(Filter::new().eq("quota_guid", &quota.guid))
        .await?;
    if !applied.is_empty() {
        return Err(ApiError::unprocessable(
            "This quota is applied to one or more organizations. Remove this quota from all organizations before deleting.",
        ));
    }
    controller
        .db
        .delete_where("organization_quotas", Filter::new().eq("guid", &quota.guid))
        .await?;
    finished_job(&controller, "organization_quota.delete").await
}

/// Puts the orgs `guids` on the quota `quota` (every one must exist).
async fn apply_to_orgs(
    controller: &Controller,
    quota: &str,
    guids: &[String],
) -> Result<(), ApiError> {
    if guids.is_empty() {
        return Ok(());
    }
    let found = controller
        .db
        .find::<Org>(Filter::new().any_of("guid", guids))
        .await?;
    let missing: Vec<&String> = guids
        .iter()
        .filter(|g| !found.iter().any(|o| &o.guid == *g))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "Organizations with guids {missing:?} do not exist, or you do not have access to them."
        )));
    }
    for org in found {
        controller
            .db
            .update(
                "organizations",
                &org.guid,
                vec![("quota_guid", quota.into())],
            )
            .await?;
    }
    Ok(())
}

pub async fn apply_org_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let quota = load_org_quota(&controller, &guid).await?;
    user.require_admin()?;
    apply_to_orgs(&controller, &quota.guid, &to_many_guids(&body)?).await?;
    let orgs = orgs_on(&controller, &user, &quota.guid).await?;
    let path = format!(
        "/v3/organization_quotas/{}/relationships/organizations",
        quota.guid
    );
    Ok(ok(relationship(&controller, &path, &orgs)))
}

// --- space quotas ---

/// A space quota the user can see (else 404).
async fn load_space_quota(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<SpaceQuota, ApiError> {
    let filter = user.scope_space_quotas(Filter::new().eq("guid", guid));
    controller
        .db
        .find::<SpaceQuota>(filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Space quota"))
}

/// A space quota the user may change (its org's managers): 404 if they cannot see it,
/// 403 if they see it but may not.
async fn load_space_quota_to_manage(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<SpaceQuota, ApiError> {
    let quota = load_space_quota(controller, user, guid).await?;
    if !user.can_manage_org(&quota.organization_guid) {
        return Err(ApiError::not_authorized());
    }
    Ok(quota)
}

pub async fn list_space_quotas(
    State(controller): Ctl,
    user: User,
    params: ListParams,
) -> ApiResult {
    let filter = user.scope_space_quotas(Filter::new());
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "organization_guids", "organization_guid");
    let filter = params.filter_in(
        filter,
        "space_guids",
        "guid",
        "SELECT quota_guid FROM spaces WHERE guid IN ({})",
    );
    let (total, quotas) = controller
        .db
        .list::<SpaceQuota>(filter, &params.page)
        .await?;
    let mut resources = Vec::with_capacity(quotas.len());
    for quota in &quotas {
        resources.push(present_space_quota(&controller, &user, quota).await?);
    }
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show_space_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let quota = load_space_quota(&controller, &user, &guid).await?;
    Ok(ok(present_space_quota(&controller, &user, &quota).await?))
}

async fn find_space_quota_named(
    controller: &Controller,
    org: &str,
    name: &str,
) -> Result<Vec<SpaceQuota>, ApiError> {
    let filter = Filter::new().eq("organization_guid", org).eq("name", name);
    Ok(controller.db.find::<SpaceQuota>(filter).await?)
}

pub async fn create_space_quota(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let parsed = parse_body(&body, Kind::Space)?;
    let Some(name) = parsed.name else {
        return Err(ApiError::unprocessable("Name can't be blank"));
    };
    let org_guid = relationship_guid(&body, "organization").unwrap_or_default();
    let org = controller
        .db
        .get::<Org>(&org_guid)
        .await?
        .filter(|org| user.can_see_org(&org.guid))
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "Organization with guid '{org_guid}' does not exist, or you do not have access to it."
            ))
        })?;
    if !user.can_manage_org(&org.guid) {
        return Err(ApiError::not_authorized());
    }
    let spaces = match body.pointer("/relationships/spaces") {
        Some(relationship) => to_many_guids(relationship)?,
        None => Vec::new(),
    };
    if !find_space_quota_named(&controller, &org.guid, &name)
        .await?
        .is_empty()
    {
        return Err(name_taken(Kind::Space, &name));
    }
    let mut columns = parsed.columns;
    columns.push(("name", name.clone().into()));
    columns.push(("organization_guid", org.guid.clone().into()));
    let guid = insert_quota(&controller, "space_quotas", columns)
        .await
        .map_err(|e| map_unique(e, Kind::Space, &name))?;
    let quota = load_space_quota(&controller, &user, &guid).await?;
    apply_to_spaces(&controller, &user, &quota, &spaces).await?;
    Ok(created(
        present_space_quota(&controller, &user, &quota).await?,
    ))
}

pub async fn update_space_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let quota = load_space_quota_to_manage(&controller, &user, &guid).await?;
    let parsed = parse_body(&body, Kind::Space)?;
    let mut columns = parsed.columns;
    let name = parsed.name.unwrap_or(quota.name);
    let clash = find_space_quota_named(&controller, &quota.organization_guid, &name).await?;
    if clash.iter().any(|q| q.guid != quota.guid) {
        return Err(name_taken(Kind::Space, &name));
    }
    columns.push(("name", name.clone().into()));
    controller
        .db
        .update("space_quotas", &quota.guid, columns)
        .await
        .map_err(|e| map_unique(e, Kind::Space, &name))?;
    let quota = load_space_quota(&controller, &user, &guid).await?;
    Ok(ok(present_space_quota(&controller, &user, &quota).await?))
}

pub async fn delete_space_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let quota = load_space_quota_to_manage(&controller, &user, &guid).await?;
    let applied = controller
        .db
        .find::<Space>(Filter::new().eq("quota_guid", &quota.guid))
        .await?;
    if !applied.is_empty() {
        return Err(ApiError::unprocessable(
            "This quota is applied to one or more spaces. Remove this quota from all spaces before deleting.",
        ));
    }
    controller
        .db
        .delete_where("space_quotas", Filter::new().eq("guid", &quota.guid))
        .await?;
    finished_job(&controller, "space_quota.delete").await
}

/// Puts the spaces `guids` (which the user must see, in the quota's org) on `quota`.
async fn apply_to_spaces(
    controller: &Controller,
    user: &User,
    quota: &SpaceQuota,
    guids: &[String],
) -> Result<(), ApiError> {
    if guids.is_empty() {
        return Ok(());
    }
    let found = controller
        .db
        .find::<Space>(user.scope_spaces(Filter::new().any_of("guid", guids), "guid"))
        .await?;
    let missing: Vec<&String> = guids
        .iter()
        .filter(|g| !found.iter().any(|s| &s.guid == *g))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "Spaces with guids {missing:?} do not exist, or you do not have access to them."
        )));
    }
    if found
        .iter()
        .any(|s| s.organization_guid != quota.organization_guid)
    {
        return Err(ApiError::unprocessable(
            "Space quotas cannot be applied outside of their owning organization.",
        ));
    }
    for space in found {
        controller
            .db
            .update(
                "spaces",
                &space.guid,
                vec![("quota_guid", quota.guid.clone().into())],
            )
            .await?;
    }
    Ok(())
}

pub async fn apply_space_quota(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let quota = load_space_quota_to_manage(&controller, &user, &guid).await?;
    apply_to_spaces(&controller, &user, &quota, &to_many_guids(&body)?).await?;
    let spaces = spaces_on(&controller, &user, &quota.guid).await?;
    let path = format!("/v3/space_quotas/{}/relationships/spaces", quota.guid);
    Ok(ok(relationship(&controller, &path, &spaces)))
}

pub async fn remove_space_quota(
    State(controller): Ctl,
    user: User,
    Path((guid, space_guid)): Path<(String, String)>,
) -> ApiResult {
    let quota = load_space_quota_to_manage(&controller, &user, &guid).await?;
    let space = controller
        .db
        .get::<Space>(&space_guid)
        .await?
        .filter(|s| s.quota_guid.as_deref() == Some(quota.guid.as_str()));
    if space.is_none() {
        return Err(ApiError::unprocessable(format!(
            "Unable to remove quota from space with guid '{space_guid}'. Ensure the space quota is applied to this space."
        )));
    }
    controller
        .db
        .update("spaces", &space_guid, vec![("quota_guid", Arg::Null)])
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_columns() {
        let body = json!({
            "name": "small",
            "apps": {"total_memory_in_mb": 1024, "total_instances": null},
            "services": {"paid_services_allowed": false},
            "domains": {"total_domains": 2},
        });
        let parsed = parse_body(&body, Kind::Organization).unwrap();
        assert_eq!(parsed.name.as_deref(), Some("small"));
        assert_eq!(
            parsed.columns,
            vec![
                ("total_memory_in_mb", Arg::Int(1024)),
                ("total_instances", Arg::NullInt),
                ("paid_services_allowed", Arg::Int(0)),
                ("total_domains", Arg::Int(2)),
            ]
        );
    }

    #[test]
    fn bad_bodies_are_cf_errors() {
        let detail = |body: Value, kind: Kind| parse_body(&body, kind).unwrap_err().to_string();
        assert_eq!(
            detail(json!({"apps": {"total_instances": -1}}), Kind::Organization),
            "Apps Total instances must be greater than or equal to 0"
        );
        assert_eq!(
            detail(json!({"routes": {"total_routes": "x"}}), Kind::Space),
            "Routes Total routes is not a number"
        );
        assert_eq!(
            detail(json!({"domains": {}}), Kind::Space),
            "Unknown field(s): 'domains'"
        );
        assert_eq!(
            detail(json!({"apps": {"bogus": 1}}), Kind::Space),
            "Apps Unknown field(s): 'bogus'"
        );
        assert_eq!(
            detail(json!({"name": " "}), Kind::Space),
            "Name can't be blank"
        );
        assert!(to_many_guids(&json!({"data": [{"guid": "a"}, {}]})).is_err());
        assert_eq!(
            to_many_guids(&json!({"data": [{"guid": "a"}]})).unwrap(),
            ["a"]
        );
    }
}
