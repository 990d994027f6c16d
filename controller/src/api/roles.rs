//! Roles and users (`/v3/roles`, `/v3/users`): who holds which org and space role.
//!
//! A user is known to the controller once they have made an authenticated request
//! (their UAA user id is their guid), or once a role names them by guid. Admins and
//! org managers give org roles; admins, org managers and space managers give space
//! roles, and only to users who already hold a role in the space's organization.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cf_time, created, finished_job, href, ok, paginated, to_one, ApiResult, Ctl, JsonBody,
    ListParams,
};
use crate::auth::{Access, User, ORG_ROLES, SPACE_ROLES};
use crate::db::{self, Arg, Filter, Org, Role, Space, UserRecord};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::Controller;

fn present_role(controller: &Controller, role: &Role) -> Value {
    let mut links = json!({
        "self": href(controller, &format!("/v3/roles/{}", role.guid)),
        "user": href(controller, &format!("/v3/users/{}", role.user_guid)),
    });
    if let Some(org) = &role.organization_guid {
        links["organization"] = href(controller, &format!("/v3/organizations/{org}"));
    }
    if let Some(space) = &role.space_guid {
        links["space"] = href(controller, &format!("/v3/spaces/{space}"));
    }
    json!({
        "guid": role.guid,
        "created_at": cf_time(&role.created_at),
        "updated_at": cf_time(&role.updated_at),
        "type": role.role_type,
        "relationships": {
            "user": to_one(Some(&role.user_guid)),
            "organization": to_one(role.organization_guid.as_deref()),
            "space": to_one(role.space_guid.as_deref()),
        },
        "links": links,
    })
}

fn present_user(controller: &Controller, user: &UserRecord) -> Value {
    let name = (!user.username.is_empty()).then_some(user.username.as_str());
    json!({
        "guid": user.guid,
        "created_at": cf_time(&user.created_at),
        "updated_at": cf_time(&user.updated_at),
        "username": name,
        "presentation_name": name.unwrap_or(&user.guid),
        "origin": user.origin,
        "metadata": super::metadata(),
        "links": {"self": href(controller, &format!("/v3/users/{}", user.guid))},
    })
}

/// Whether the user may see `role` (it is in an org or space they can see).
fn can_see_role(user: &User, role: &Role) -> bool {
    role.organization_guid
        .as_deref()
        .is_some_and(|org| user.can_see_org(org))
        || role
            .space_guid
            .as_deref()
            .is_some_and(|space| user.can_access_space(space))
}

async fn load_role(controller: &Controller, user: &User, guid: &str) -> Result<Role, ApiError> {
    controller
        .db
        .get::<Role>(guid)
        .await?
        .filter(|role| can_see_role(user, role))
        .ok_or_else(|| ApiError::not_found("Role"))
}

/// CF-NotAuthorized unless the user may give or take roles where `role` lives.
fn require_role_manager(
    user: &User,
    org_guid: Option<&str>,
    space: Option<&Space>,
) -> Result<(), ApiError> {
    let allowed = match (org_guid, space) {
        (Some(org), _) => user.can_manage_org(org),
        (None, Some(space)) => {
            user.can_in_space(&space.guid, Access::Manage)
                || user.can_manage_org(&space.organization_guid)
        }
        (None, None) => user.is_admin(),
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::not_authorized())
    }
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_roles(Filter::new());
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "types", "type");
    let filter = params.filter(filter, "user_guids", "user_guid");
    let filter = params.filter(filter, "organization_guids", "organization_guid");
    let filter = params.filter(filter, "space_guids", "space_guid");
    let (total, roles) = controller.db.list::<Role>(filter, &params.page).await?;
    let resources = roles.iter().map(|r| present_role(&controller, r)).collect();
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let role = load_role(&controller, &user, &guid).await?;
    Ok(ok(present_role(&controller, &role)))
}

#[derive(Debug, Deserialize)]
pub struct CreateRole {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    relationships: Value,
}

/// The user a new role is for: by guid (recorded if the controller has not seen them
/// yet) or by username (and origin) of a user the controller knows.
async fn role_user(controller: &Controller, relationships: &Value) -> Result<UserRecord, ApiError> {
    let data = relationships.pointer("/user/data");
    let guid = data.and_then(|d| d.get("guid")).and_then(Value::as_str);
    let username = data.and_then(|d| d.get("username")).and_then(Value::as_str);
    if let Some(guid) = guid.filter(|g| !g.is_empty()) {
        if let Some(user) = controller.db.get::<UserRecord>(guid).await? {
            return Ok(user);
        }
        let now = db::now();
        let inserted = controller
            .db
            .insert(
                "users",
                vec![
                    ("guid", guid.into()),
                    ("username", "".into()),
                    ("origin", "uaa".into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await;
        match inserted {
            Err(e) if db::is_unique_violation(&e) => {}
            other => other?,
        }
        return controller
            .db
            .get::<UserRecord>(guid)
            .await?
            .ok_or_else(|| ApiError::unprocessable("Invalid user. Ensure that the user exists."));
    }
    if let Some(username) = username.filter(|u| !u.is_empty()) {
        let origin = data
            .and_then(|d| d.get("origin"))
            .and_then(Value::as_str)
            .unwrap_or("uaa");
        let found = controller
            .db
            .find::<UserRecord>(Filter::new().eq("username", username).eq("origin", origin))
            .await?;
        return found.into_iter().next().ok_or_else(|| {
            ApiError::unprocessable(format!(
                "No user exists with the username '{username}' and origin '{origin}'."
            ))
        });
    }
    Err(ApiError::unprocessable(
        "Relationships 'user' must include a user guid or username.",
    ))
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateRole>,
) -> ApiResult {
    let kind = body.kind.unwrap_or_default();
    let is_org_role = ORG_ROLES.contains(&kind.as_str());
    if !is_org_role && !SPACE_ROLES.contains(&kind.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "Type must be one of the allowed types [{}]",
            ORG_ROLES
                .iter()
                .chain(SPACE_ROLES)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let relationships = &body.relationships;
    let target = |name: &str| {
        relationships
            .pointer(&format!("/{name}/data/guid"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (org, space) = if is_org_role {
        let org = match target("organization") {
            Some(guid) => controller.db.get::<Org>(&guid).await?,
            None => None,
        };
        let Some(org) = org.filter(|o| user.can_see_org(&o.guid)) else {
            return Err(ApiError::unprocessable(
                "Invalid organization. Ensure that the organization exists and you have access to it.",
            ));
        };
        require_role_manager(&user, Some(&org.guid), None)?;
        (org, None)
    } else {
        let space = match target("space") {
            Some(guid) => controller.db.get::<Space>(&guid).await?,
            None => None,
        };
        let Some(space) = space.filter(|s| user.can_access_space(&s.guid)) else {
            return Err(ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            ));
        };
        require_role_manager(&user, None, Some(&space))?;
        let org = controller
            .db
            .get::<Org>(&space.organization_guid)
            .await?
            .ok_or_else(|| ApiError::not_found("Organization"))?;
        (org, Some(space))
    };
    let role_user = role_user(&controller, relationships).await?;
    let name = if role_user.username.is_empty() {
        role_user.guid.clone()
    } else {
        role_user.username.clone()
    };
    if let Some(space) = &space {
        let in_org = controller
            .db
            .find::<Role>(
                Filter::new()
                    .eq("user_guid", &role_user.guid)
                    .eq("organization_guid", &org.guid),
            )
            .await?;
        if in_org.is_empty() {
            return Err(ApiError::unprocessable(
                "Users cannot be assigned roles in a space if they do not have a role in that space's organization.",
            ));
        }
        let same = Filter::new()
            .eq("user_guid", &role_user.guid)
            .eq("type", &kind)
            .eq("space_guid", &space.guid);
        if !controller.db.find::<Role>(same).await?.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "User '{name}' already has '{kind}' role in space '{}'.",
                space.name
            )));
        }
    } else {
        let same = Filter::new()
            .eq("user_guid", &role_user.guid)
            .eq("type", &kind)
            .eq("organization_guid", &org.guid);
        if !controller.db.find::<Role>(same).await?.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "User '{name}' already has '{kind}' role in organization '{}'.",
                org.name
            )));
        }
    }
    let guid = db::new_guid();
    let now = db::now();
    let (org_guid, space_guid) = match &space {
        Some(space) => (Arg::Null, Arg::from(&space.guid)),
        None => (Arg::from(&org.guid), Arg::Null),
    };
    controller
        .db
        .insert(
            "roles",
            vec![
                ("guid", guid.clone().into()),
                ("type", kind.into()),
                ("user_guid", role_user.guid.into()),
                ("organization_guid", org_guid),
                ("space_guid", space_guid),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
    let role = controller
        .db
        .get::<Role>(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Role"))?;
    Ok(created(present_role(&controller, &role)))
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let role = load_role(&controller, &user, &guid).await?;
    let space = match &role.space_guid {
        Some(space) => controller.db.get::<Space>(space).await?,
        None => None,
    };
    require_role_manager(&user, role.organization_guid.as_deref(), space.as_ref())?;
    controller
        .db
        .delete_where("roles", Filter::new().eq("guid", &role.guid))
        .await?;
    finished_job(&controller, "role.delete").await
}

pub async fn list_users(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_users(Filter::new());
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "usernames", "username");
    let filter = params.filter(filter, "origins", "origin");
    let filter = params.label_selector(filter, "users")?;
    let (total, users) = controller
        .db
        .list::<UserRecord>(filter, &params.page)
        .await?;
    let mut resources: Vec<Value> = users.iter().map(|u| present_user(&controller, u)).collect();
    metadata::fill(&controller.db, "users", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

/// `DELETE /v3/users/:guid` (admins): the user's roles and record go; their UAA
/// account is UAA's business (`wf delete-user` removes both, as `cf delete-user` does).
pub async fn delete_user(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let visible = user.scope_users(Filter::new().eq("guid", &guid));
    if controller.db.find::<UserRecord>(visible).await?.is_empty() {
        return Err(ApiError::not_found("User"));
    }
    user.require_admin()?;
    controller
        .db
        .delete_where("roles", Filter::new().eq("user_guid", &guid))
        .await?;
    controller
        .db
        .delete_resources("users", Filter::new().eq("guid", &guid))
        .await?;
    finished_job(&controller, "user.delete").await
}

/// User `guid` as CF shows them, with their labels and annotations (404 unless visible).
async fn show_user_value(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<Value, ApiError> {
    let filter = user.scope_users(Filter::new().eq("guid", guid));
    let found = controller.db.find::<UserRecord>(filter).await?;
    let record = found
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("User"))?;
    let shown = present_user(controller, &record);
    Ok(metadata::filled(&controller.db, "users", shown).await?)
}

pub async fn show_user(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    Ok(ok(show_user_value(&controller, &user, &guid).await?))
}

/// `PATCH /v3/users/:guid` (admins): a user's metadata.
pub async fn update_user(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    show_user_value(&controller, &user, &guid).await?;
    user.require_admin()?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "users", &guid).await?;
    Ok(ok(show_user_value(&controller, &user, &guid).await?))
}
