//! Feature flags (`/v3/feature_flags`): CF's platform switches with their defaults,
//! changed by admins, and [`require`], which refuses a disabled feature to non-admins
//! with CF-FeatureDisabled. Enforced here: `app_scaling`, `task_creation`,
//! `route_creation`, `app_bits_upload`, and `user_org_creation` (users may create orgs,
//! becoming their managers); the others are kept for CF clients that read them.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{cf_time, href, ok, paginated, ApiResult, Ctl, JsonBody, ListParams};
use crate::auth::User;
use crate::db::{self, Arg, FeatureFlag, Filter};
use crate::error::ApiError;
use crate::Controller;

/// CF's feature flags and their defaults.
pub const FLAGS: &[(&str, bool)] = &[
    ("app_bits_upload", true),
    ("app_scaling", true),
    ("diego_docker", false),
    ("env_var_visibility", true),
    ("hide_marketplace_from_unauthenticated_users", false),
    ("private_domain_creation", true),
    ("resource_matching", true),
    ("route_creation", true),
    ("route_sharing", false),
    ("service_instance_creation", true),
    ("service_instance_sharing", false),
    ("set_roles_by_username", true),
    ("space_developer_env_var_visibility", true),
    ("space_scoped_private_broker_creation", true),
    ("task_creation", true),
    ("unset_roles_by_username", true),
    ("user_org_creation", false),
];

/// A flag's state: enabled, its custom error message, when it changed.
struct Flag {
    name: &'static str,
    enabled: bool,
    custom_error_message: Option<String>,
    updated_at: Option<String>,
}

/// A flag's state: what an admin set, else CF's default.
fn flag(name: &'static str, default: bool, set: Option<FeatureFlag>) -> Flag {
    match set {
        Some(set) => Flag {
            name,
            enabled: set.enabled,
            custom_error_message: set.custom_error_message,
            updated_at: Some(set.updated_at),
        },
        None => Flag {
            name,
            enabled: default,
            custom_error_message: None,
            updated_at: None,
        },
    }
}

async fn load(controller: &Controller, name: &str) -> Result<Flag, ApiError> {
    let Some(&(name, default)) = FLAGS.iter().find(|(n, _)| *n == name) else {
        return Err(ApiError::not_found("Feature flag"));
    };
    let set = controller
        .db
        .find::<FeatureFlag>(Filter::new().eq("name", name))
        .await?
        .into_iter()
        .next();
    Ok(flag(name, default, set))
}

/// Whether flag `name` is enabled.
pub async fn enabled(controller: &Controller, name: &str) -> Result<bool, ApiError> {
    Ok(load(controller, name).await?.enabled)
}

/// `Ok` when `name` is enabled or the user is an admin; else CF-FeatureDisabled.
pub async fn require(controller: &Controller, user: &User, name: &str) -> Result<(), ApiError> {
    if user.is_admin() {
        return Ok(());
    }
    let flag = load(controller, name).await?;
    if flag.enabled {
        Ok(())
    } else {
        Err(ApiError::FeatureDisabled(
            flag.custom_error_message
                .unwrap_or_else(|| format!("Feature Disabled: {name}")),
        ))
    }
}

fn present(controller: &Controller, flag: &Flag) -> Value {
    json!({
        "name": flag.name,
        "enabled": flag.enabled,
        "updated_at": flag.updated_at.as_deref().map(cf_time),
        "custom_error_message": flag.custom_error_message,
        "links": {"self": href(controller, &format!("/v3/feature_flags/{}", flag.name))},
    })
}

pub async fn list(State(controller): Ctl, _user: User, params: ListParams) -> ApiResult {
    let mut set = controller.db.find::<FeatureFlag>(Filter::new()).await?;
    let resources: Vec<Value> = FLAGS
        .iter()
        .map(|&(name, default)| {
            let found = set
                .iter()
                .position(|f| f.name == name)
                .map(|i| set.swap_remove(i));
            present(&controller, &flag(name, default, found))
        })
        .collect();
    let total = u64::try_from(resources.len()).unwrap_or(0);
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, _user: User, Path(name): Path<String>) -> ApiResult {
    Ok(ok(present(&controller, &load(&controller, &name).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagUpdate {
    enabled: Option<bool>,
    custom_error_message: Option<String>,
}

pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<FlagUpdate>,
) -> ApiResult {
    let flag = load(&controller, &name).await?;
    user.require_admin()?;
    let enabled = body.enabled.unwrap_or(flag.enabled);
    let message = body.custom_error_message.or(flag.custom_error_message);
    controller
        .db
        .delete_where("feature_flags", Filter::new().eq("name", flag.name))
        .await?;
    controller
        .db
        .insert(
            "feature_flags",
            vec![
                ("guid", db::new_guid().into()),
                ("name", flag.name.into()),
                ("enabled", Arg::Int(i64::from(enabled))),
                ("custom_error_message", message.map_or(Arg::Null, Arg::Text)),
                ("created_at", db::now().into()),
                ("updated_at", db::now().into()),
            ],
        )
        .await?;
    Ok(ok(present(&controller, &load(&controller, &name).await?)))
}
