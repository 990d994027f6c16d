//! SCIM over HTTP: `/Users` (create, get, list with filter, PUT, PATCH, delete, change
//! password) and `/Groups` (list, get, create, add and remove members), with UAA's
//! scope rules: `scim.read`/`scim.write` or `uaa.admin`, and users may read themselves
//! and change their own password (`password.write`, old password required).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{caller, insufficient_scope, require_scope, scim_error, ResourceKind};
use crate::{Claims, ScimError, Uaa, UserChanges};

const READ: &[&str] = &["scim.read", "uaa.admin"];
const WRITE: &[&str] = &["scim.write", "uaa.admin"];
const LIST_SCHEMA: &str = "urn:scim:schemas:core:1.0";
/// SCIM's default and UAA's maximum page size.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = 500;

pub(super) fn routes() -> axum::Router<Arc<Uaa>> {
    axum::Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Users/{id}/password", put(change_password))
        .route("/Groups", get(list_groups).post(create_group))
        .route("/Groups/{id}", get(get_group))
        .route("/Groups/{id}/members", get(list_members).post(add_member))
        .route("/Groups/{id}/members/{member}", delete(remove_member))
}

fn error(e: ScimError) -> Response {
    scim_error(e, ResourceKind::Scim)
}

fn invalid(msg: impl Into<String>) -> Response {
    error(ScimError::Invalid(msg.into()))
}

/// The caller, if it holds one of `scopes`.
async fn authorized(uaa: &Uaa, headers: &HeaderMap, scopes: &[&str]) -> Result<Claims, Response> {
    let claims = caller(uaa, headers).await?;
    require_scope(&claims, scopes)?;
    Ok(claims)
}

/// `If-Match: "3"` (or `3`, or `*` for any version).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Response> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    let value = value.strip_prefix("W/").unwrap_or(value).trim_matches('"');
    if value == "*" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| invalid(format!("If-Match must be a version, not {value:?}")))
}

/// A page of resources in SCIM's list shape, honouring `startIndex` (1-based), `count`
/// and `attributes` (top-level names, any case).
fn list_response<T: serde::Serialize>(items: Vec<T>, params: &HashMap<String, String>) -> Response {
    let number = |name: &str, default: usize| -> Result<usize, Response> {
        params.get(name).map_or(Ok(default), |v| {
            v.trim()
                .parse()
                .map_err(|_| invalid(format!("{name} must be a number")))
        })
    };
    let (start, count) = match (number("startIndex", 1), number("count", DEFAULT_COUNT)) {
        (Ok(s), Ok(c)) => (s.max(1), c.min(MAX_COUNT)),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    let attributes: Option<Vec<String>> = params
        .get("attributes")
        .filter(|a| !a.trim().is_empty())
        .map(|a| {
            a.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        });
    let total = items.len();
    let resources: Vec<Value> = items
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|item| {
            let value = serde_json::to_value(item).unwrap_or(Value::Null);
            match (&attributes, value) {
                (Some(keep), Value::Object(map)) => Value::Object(
                    map.into_iter()
                        .filter(|(k, _)| keep.contains(&k.to_ascii_lowercase()))
                        .collect(),
                ),
                (_, value) => value,
            }
        })
        .collect();
    Json(json!({
        "resources": resources,
        "startIndex": start,
        "itemsPerPage": count,
        "totalResults": total,
        "schemas": [LIST_SCHEMA],
    }))
    .into_response()
}

fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, Response> {
    q.map(|Query(q)| q).map_err(|e| invalid(e.body_text()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    user_name: Option<String>,
    password: Option<String>,
    emails: Option<Vec<EmailBody>>,
    name: Option<NameBody>,
    active: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct EmailBody {
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NameBody {
    given_name: Option<String>,
    family_name: Option<String>,
}

impl UserBody {
    /// The attributes a PATCH (or create) sets: only those present.
    fn changes(&self) -> UserChanges {
        UserChanges {
            user_name: self.user_name.clone(),
            email: self
                .emails
                .as_ref()
                .and_then(|e| e.first())
                .map(|e| e.value.clone()),
            given_name: self.name.as_ref().and_then(|n| n.given_name.clone()),
            family_name: self.name.as_ref().and_then(|n| n.family_name.clone()),
            active: self.active,
        }
    }

    /// The attributes a PUT sets: all of them, absent ones to their defaults.
    fn replacement(&self) -> UserChanges {
        let c = self.changes();
        UserChanges {
            email: c.email.or_else(|| c.user_name.clone()),
            given_name: Some(c.given_name.unwrap_or_default()),
            family_name: Some(c.family_name.unwrap_or_default()),
            active: Some(c.active.unwrap_or(true)),
            user_name: c.user_name,
        }
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    b.map(|Json(b)| b).map_err(|e| invalid(e.body_text()))
}

async fn create_user(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    b: Result<Json<UserBody>, JsonRejection>,
) -> Response {
    let scopes = ["scim.write", "scim.create", "uaa.admin"];
    if let Err(resp) = authorized(&uaa, &headers, &scopes).await {
        return resp;
    }
    let b = match body(b) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let password = b.password.clone().unwrap_or_default();
    match uaa.create_scim_user(b.changes(), &password).await {
        Ok(user) => (StatusCode::CREATED, Json(user)).into_response(),
        Err(e) => error(e),
    }
}

async fn list_users(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, READ).await {
        return resp;
    }
    let params = match query(q) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match uaa
        .list_users(params.get("filter").map(String::as_str))
        .await
    {
        Ok(users) => list_response(users, &params),
        Err(e) => error(e),
    }
}

async fn get_user(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let claims = match caller(&uaa, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if claims.user_id != id {
        if let Err(resp) = require_scope(&claims, READ) {
            return resp;
        }
    }
    match uaa.get_user(&id).await {
        Ok(user) => Json(user).into_response(),
        Err(e) => error(e),
    }
}

async fn update_user(uaa: &Uaa, headers: &HeaderMap, id: &str, changes: UserChanges) -> Response {
    if let Err(resp) = authorized(uaa, headers, WRITE).await {
        return resp;
    }
    let version = match if_match(headers) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match uaa.update_user(id, changes, version).await {
        Ok(user) => Json(user).into_response(),
        Err(e) => error(e),
    }
}

async fn replace_user(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<UserBody>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(b) if b.user_name.as_deref().is_some_and(|n| !n.trim().is_empty()) => {
            update_user(&uaa, &headers, &id, b.replacement()).await
        }
        Ok(_) => invalid("userName is required"),
        Err(resp) => resp,
    }
}

async fn patch_user(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<UserBody>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(b) => update_user(&uaa, &headers, &id, b.changes()).await,
        Err(resp) => resp,
    }
}

async fn delete_user(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, WRITE).await {
        return resp;
    }
    let version = match if_match(&headers) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match uaa.delete_user(&id, version).await {
        Ok(user) => Json(user).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordBody {
    old_password: Option<String>,
    password: String,
}

/// Users change their own password with the old one (`password.write`); `uaa.admin`
/// changes anyone's without it.
async fn change_password(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<PasswordBody>, JsonRejection>,
) -> Response {
    let claims = match caller(&uaa, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let b = match body(b) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let old = if claims.user_id == id && claims.has_scope("password.write") {
        match b.old_password.as_deref() {
            Some(old) => Some(old),
            None => return invalid("oldPassword is required"),
        }
    } else if claims.has_scope("uaa.admin") {
        None
    } else {
        return insufficient_scope(&["password.write", "uaa.admin"]);
    };
    match uaa.change_password(&id, old, &b.password).await {
        Ok(()) => Json(json!({ "status": "ok", "message": "password updated" })).into_response(),
        Err(e) => error(e),
    }
}

async fn list_groups(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, READ).await {
        return resp;
    }
    let params = match query(q) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match uaa
        .list_groups(params.get("filter").map(String::as_str))
        .await
    {
        Ok(groups) => list_response(groups, &params),
        Err(e) => error(e),
    }
}

async fn get_group(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, READ).await {
        return resp;
    }
    match uaa.get_group(&id).await {
        Ok(group) => Json(group).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupBody {
    display_name: String,
    #[serde(default)]
    description: String,
}

async fn create_group(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    b: Result<Json<GroupBody>, JsonRejection>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, WRITE).await {
        return resp;
    }
    let b = match body(b) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match uaa.create_group(&b.display_name, &b.description).await {
        Ok(group) => (StatusCode::CREATED, Json(group)).into_response(),
        Err(e) => error(e),
    }
}

async fn list_members(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, READ).await {
        return resp;
    }
    match uaa.get_group(&id).await {
        Ok(group) => Json(group.members).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Debug, Deserialize)]
struct MemberBody {
    value: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

async fn add_member(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<MemberBody>, JsonRejection>,
) -> Response {
    if let Err(resp) = authorized(
        &uaa,
        &headers,
        &["scim.write", "groups.update", "uaa.admin"],
    )
    .await
    {
        return resp;
    }
    let b = match body(b) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if b.kind
        .as_deref()
        .is_some_and(|k| !k.eq_ignore_ascii_case("USER"))
    {
        return invalid("only users can be group members");
    }
    match uaa.add_member(&id, &b.value).await {
        Ok(member) => (StatusCode::CREATED, Json(member)).into_response(),
        Err(e) => error(e),
    }
}

async fn remove_member(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path((id, member)): Path<(String, String)>,
) -> Response {
    if let Err(resp) = authorized(
        &uaa,
        &headers,
        &["scim.write", "groups.update", "uaa.admin"],
    )
    .await
    {
        return resp;
    }
    match uaa.remove_member(&id, &member).await {
        Ok(member) => Json(member).into_response(),
        Err(e) => error(e),
    }
}
