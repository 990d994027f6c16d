//! Environment variable groups (`/v3/environment_variable_groups/running|staging`):
//! variables an admin sets for every app's instances (running) or stagings (staging);
//! an app's own variables of the same name win.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{cf_time, href, ok, ApiResult, Ctl, JsonBody};
use crate::auth::User;
use crate::db::{self, EnvVarGroup, Filter};
use crate::error::ApiError;
use crate::Controller;

/// The two groups.
const GROUPS: &[&str] = &["running", "staging"];

/// The variables of group `name` (`running` or `staging`).
pub async fn variables(
    controller: &Controller,
    name: &str,
) -> Result<Map<String, Value>, sqlx::Error> {
    Ok(controller
        .db
        .find::<EnvVarGroup>(Filter::new().eq("name", name))
        .await?
        .into_iter()
        .next()
        .map(|g| g.variables)
        .unwrap_or_default())
}

fn group_name(name: &str) -> Result<&'static str, ApiError> {
    GROUPS
        .iter()
        .find(|g| **g == name)
        .copied()
        .ok_or_else(|| ApiError::not_found("Environment variable group"))
}

async fn present(controller: &Controller, name: &str) -> Result<Value, ApiError> {
    let group = controller
        .db
        .find::<EnvVarGroup>(Filter::new().eq("name", name))
        .await?
        .into_iter()
        .next();
    let (var, updated_at) = match group {
        Some(g) => (g.variables, Some(cf_time(&g.updated_at))),
        None => (Map::new(), None),
    };
    Ok(json!({
        "name": name,
        "var": var,
        "updated_at": updated_at,
        "links": {"self": href(controller, &format!("/v3/environment_variable_groups/{name}"))},
    }))
}

pub async fn show(State(controller): Ctl, _user: User, Path(name): Path<String>) -> ApiResult {
    let name = group_name(&name)?;
    Ok(ok(present(&controller, name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    var: Map<String, Value>,
}

/// `PATCH`: merges `var` into the group (a `null` value removes the variable).
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<GroupUpdate>,
) -> ApiResult {
    let name = group_name(&name)?;
    user.require_admin()?;
    super::apps::validate_env(&body.var)?;
    let mut vars = variables(&controller, name).await?;
    for (key, value) in body.var {
        if value.is_null() {
            vars.remove(&key);
        } else {
            vars.insert(key, value);
        }
    }
    controller
        .db
        .delete_where(
            "environment_variable_groups",
            Filter::new().eq("name", name),
        )
        .await?;
    controller
        .db
        .insert(
            "environment_variable_groups",
            vec![
                ("guid", db::new_guid().into()),
                ("name", name.into()),
                ("variables", db::to_json_text(&vars)),
                ("created_at", db::now().into()),
                ("updated_at", db::now().into()),
            ],
        )
        .await?;
    // Running instances get the group on their next start, as in CF.
    Ok(ok(present(&controller, name).await?))
}
