//! Builds: staging a package into a droplet on a cell.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::{LifecycleBody, STACK};
use super::packages::load_package;
use super::{
    cf_time, created, href, load_app, load_app_for_write, metadata, ok, paginated, to_one,
    ApiResult, Ctl, JsonBody, ListParams,
};
use crate::auth::User;
use crate::db::{self, Arg, Build, BuildState, DropletState, Filter, PackageState};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::Controller;

/// CF's default staging resources.
const STAGING_MEMORY_MB: i64 = 1024;
const STAGING_DISK_MB: i64 = 4096;

pub fn present_build(controller: &Controller, build: &Build) -> Value {
    let staged = build.state == BuildState::Staged;
    let droplet = staged.then(|| json!({"guid": build.droplet_guid}));
    let mut links = json!({
        "self": href(controller, &format!("/v3/builds/{}", build.guid)),
        "app": href(controller, &format!("/v3/apps/{}", build.app_guid)),
    });
    if staged {
        links["droplet"] = href(controller, &format!("/v3/droplets/{}", build.droplet_guid));
    }
    json!({
        "guid": build.guid,
        "created_at": cf_time(&build.created_at),
        "updated_at": cf_time(&build.updated_at),
        "state": build.state.as_str(),
        "staging_memory_in_mb": build.staging_memory_in_mb,
        "staging_disk_in_mb": build.staging_disk_in_mb,
        "staging_log_rate_limit_bytes_per_second": -1,
        "error": build.error,
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": build.buildpacks, "stack": STACK}},
        "package": {"guid": build.package_guid},
        "droplet": droplet,
        "created_by": build.created_by,
        "relationships": {"app": to_one(Some(&build.app_guid))},
        "metadata": metadata(),
        "links": links,
    })
}

/// A build as CF shows it, with its labels and annotations.
async fn show_build_value(controller: &Controller, build: &Build) -> Result<Value, ApiError> {
    let shown = present_build(controller, build);
    Ok(metadata::filled(&controller.db, "builds", shown).await?)
}

async fn list_builds_filtered(
    controller: &Controller,
    params: &ListParams,
    filter: Filter,
) -> ApiResult {
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "app_guids", "app_guid");
    let filter = params.filter(filter, "package_guids", "package_guid");
    let filter = params.filter(filter, "states", "state");
    let filter = params.label_selector(filter, "builds")?;
    let (total, builds) = controller.db.list::<Build>(filter, &params.page).await?;
    let mut resources: Vec<Value> = builds
        .iter()
        .map(|b| present_build(controller, b))
        .collect();
    metadata::fill(&controller.db, "builds", &mut resources).await?;
    Ok(paginated(controller, params, total, resources))
}

pub async fn list_builds(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_apps(Filter::new(), "app_guid");
    list_builds_filtered(&controller, &params, filter).await
}

pub async fn list_builds_for_app(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    list_builds_filtered(
        &controller,
        &params,
        Filter::new().eq("app_guid", &app.guid),
    )
    .await
}

/// A build the user may see (through its app).
async fn load_build(controller: &Controller, user: &User, guid: &str) -> Result<Build, ApiError> {
    let build: Build = controller
        .db
        .get(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Build"))?;
    load_app(controller, user, &build.app_guid)
        .await
        .map_err(|_| ApiError::not_found("Build"))?;
    Ok(build)
}

pub async fn show_build(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let build = load_build(&controller, &user, &guid).await?;
    Ok(ok(show_build_value(&controller, &build).await?))
}

/// `PATCH /v3/builds/:guid`: a build's metadata, by those who may push its app.
pub async fn update_build(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let build = load_build(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &build.app_guid).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "builds", &guid).await?;
    Ok(ok(show_build_value(&controller, &build).await?))
}

#[derive(Debug, Deserialize)]
pub struct CreateBuild {
    #[serde(default)]
    package: Value,
    lifecycle: Option<LifecycleBody>,
    staging_memory_in_mb: Option<i64>,
    staging_disk_in_mb: Option<i64>,
    metadata: Option<Value>,
}

/// `POST /v3/builds`: records the build and its droplet (both STAGING) and desires the
/// staging task on the BBS; [`crate::staging`] completes them.
pub async fn create_build(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateBuild>,
) -> ApiResult {
    let package_guid = body
        .package
        .get("guid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let package = load_package(&controller, &user, package_guid)
        .await
        .map_err(|_| {
            ApiError::unprocessable(
                "Unable to use package. Ensure that the package exists and you have access to it.",
            )
        })?;
    if package.state != PackageState::Ready {
        return Err(ApiError::unprocessable(format!(
            "The package is not ready to stage (its state is {}): upload its bits first.",
            package.state.as_str()
        )));
    }
    let app = load_app_for_write(&controller, &user, &package.app_guid).await?;
    let buildpacks = match &body.lifecycle {
        Some(lifecycle) => lifecycle
            .buildpacks()?
            .unwrap_or_else(|| app.buildpacks.clone()),
        None => app.buildpacks.clone(),
    };
    // Refuse now, not at staging, a build whose buildpacks cannot run.
    super::buildpacks::for_staging(&controller, &buildpacks).await?;
    let memory = body.staging_memory_in_mb.unwrap_or(STAGING_MEMORY_MB);
    let disk = body.staging_disk_in_mb.unwrap_or(STAGING_DISK_MB);
    if memory <= 0 || disk <= 0 {
        return Err(ApiError::unprocessable(
            "Staging memory and disk must be greater than 0",
        ));
    }
    let guid = db::new_guid();
    let droplet_guid = db::new_guid();
    let now = db::now();
    controller
        .db
        .insert(
            "droplets",
            vec![
                ("guid", droplet_guid.clone().into()),
                ("app_guid", app.guid.clone().into()),
                ("package_guid", package.guid.clone().into()),
                ("build_guid", guid.clone().into()),
                ("state", DropletState::Staging.into()),
                ("error", Arg::Null),
                ("checksum", Arg::Null),
                ("process_types", "{}".into()),
                ("buildpacks", "[]".into()),
                ("stack", STACK.into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.clone().into()),
            ],
        )
        .await?;
    controller
        .db
        .insert(
            "builds",
            vec![
                ("guid", guid.clone().into()),
                ("app_guid", app.guid.clone().into()),
                ("package_guid", package.guid.clone().into()),
                ("droplet_guid", droplet_guid.into()),
                ("state", BuildState::Staging.into()),
                ("error", Arg::Null),
                ("buildpacks", db::to_json_text(&buildpacks)),
                ("staging_memory_in_mb", Arg::Int(memory)),
                ("staging_disk_in_mb", Arg::Int(disk)),
                ("created_by", db::to_json_text(&user.actor())),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
    labels.apply(&controller.db, "builds", &guid).await?;
    let build: Build = controller
        .db
        .get(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Build"))?;
    controller.emit_log(
        &app.guid,
        "API",
        &format!("Creating build for app with guid {}", app.guid),
    );
    crate::staging::start(&controller, &app, &build).await?;
    let build: Build = controller
        .db
        .get(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Build"))?;
    Ok(created(show_build_value(&controller, &build).await?))
}
