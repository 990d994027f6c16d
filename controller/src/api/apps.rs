//! Apps: create, list, update, delete; start, stop and restart; the current droplet;
//! environment variables and the environment an app's instances see.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::usage_events;
use super::{
    cf_time, created, finished_job, href, load_app, load_app_for_write, load_app_secrets,
    load_app_to, load_space_to, metadata, ok, paginated_with, relationship_guid, to_one, ApiResult,
    Ctl, JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{
    self, App, AppState, Arg, Build, BuildState, Droplet, DropletState, Filter, Package, Process,
};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::nsync::{self, AppContext};
use crate::Controller;

/// The stack every app runs on: cells run WebAssembly.
pub const STACK: &str = "wasm";
/// Defaults of a new web process (`MEMORY_LIMIT` 256m, CF's disk quota).
const DEFAULT_MEMORY_MB: i64 = 256;
const DEFAULT_DISK_MB: i64 = 1024;

#[derive(Debug, Deserialize, Default)]
pub struct LifecycleBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    data: LifecycleData,
}

#[derive(Debug, Deserialize, Default)]
pub struct LifecycleData {
    buildpacks: Option<Vec<String>>,
    stack: Option<String>,
}

impl LifecycleBody {
    /// The buildpacks asked for; only the buildpack lifecycle exists here.
    pub fn buildpacks(&self) -> Result<Option<Vec<String>>, ApiError> {
        match self.kind.as_deref() {
            None | Some("buildpack") => {}
            Some(other) => {
                return Err(ApiError::unprocessable(format!(
                    "Lifecycle type '{other}' is not supported: apps run from buildpack-staged WebAssembly droplets."
                )))
            }
        }
        if let Some(stack) = self.data.stack.as_deref().filter(|s| *s != STACK) {
            return Err(ApiError::unprocessable(format!(
                "Stack '{stack}' does not exist (the stack is '{STACK}')."
            )));
        }
        Ok(self.data.buildpacks.clone())
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateApp {
    name: Option<String>,
    #[serde(default)]
    relationships: Value,
    lifecycle: Option<LifecycleBody>,
    environment_variables: Option<Map<String, Value>>,
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct UpdateApp {
    name: Option<String>,
    lifecycle: Option<LifecycleBody>,
    metadata: Option<Value>,
}

pub fn present_app(controller: &Controller, app: &App) -> Value {
    let link = |suffix: &str| href(controller, &format!("/v3/apps/{}{suffix}", app.guid));
    let action = |name: &str| json!({"href": format!("{}/v3/apps/{}/actions/{name}", controller.base_url, app.guid), "method": "POST"});
    json!({
        "guid": app.guid,
        "name": app.name,
        "state": app.state.as_str(),
        "created_at": cf_time(&app.created_at),
        "updated_at": cf_time(&app.updated_at),
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": app.buildpacks, "stack": app.stack}},
        "relationships": {"space": to_one(Some(&app.space_guid))},
        "metadata": metadata(),
        "links": {
            "self": link(""),
            "space": href(controller, &format!("/v3/spaces/{}", app.space_guid)),
            "processes": link("/processes"),
            "packages": link("/packages"),
            "environment_variables": link("/environment_variables"),
            "current_droplet": link("/droplets/current"),
            "droplets": link("/droplets"),
            "routes": link("/routes"),
            "start": action("start"),
            "stop": action("stop"),
        },
    })
}

/// An app as CF shows one, with its labels and annotations.
async fn app_with_metadata(controller: &Controller, app: &App) -> Result<Value, ApiError> {
    Ok(metadata::filled(&controller.db, "apps", present_app(controller, app)).await?)
}

pub fn validate_env(vars: &Map<String, Value>) -> Result<(), ApiError> {
    for name in vars.keys() {
        if name.is_empty() {
            return Err(ApiError::unprocessable(
                "Environment variable names must not be empty",
            ));
        }
        if name.starts_with("VCAP_") || name == "PORT" {
            return Err(ApiError::unprocessable(format!(
                "Environment variable {name} is reserved: names cannot start with VCAP_ or be PORT"
            )));
        }
    }
    Ok(())
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let includes = params.includes(&["space", "space.organization"])?;
    let filter = user.scope_spaces(Filter::new(), "space_guid");
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "space_guids", "space_guid");
    let filter = params.filter_in(
        filter,
        "organization_guids",
        "space_guid",
        "SELECT guid FROM spaces WHERE organization_guid IN ({})",
    );
    let filter = params.label_selector(filter, "apps")?;
    let (total, apps) = controller.db.list::<App>(filter, &params.page).await?;
    let mut resources: Vec<Value> = apps.iter().map(|a| present_app(&controller, a)).collect();
    metadata::fill(&controller.db, "apps", &mut resources).await?;
    let space_guids = apps.into_iter().map(|a| a.space_guid).collect();
    let included = super::orgs::included(&controller, &includes, space_guids).await?;
    Ok(paginated_with(
        &controller,
        &params,
        total,
        resources,
        included,
    ))
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateApp>,
) -> ApiResult {
    let name = body.name.unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    let space_guid = relationship_guid(&json!({"relationships": body.relationships}), "space");
    let space = match space_guid {
        Some(guid) => match load_space_to(&controller, &user, &guid, Access::Develop).await {
            Ok(space) => Some(space),
            Err(e @ ApiError::NotAuthorized(_)) => return Err(e),
            Err(_) => None,
        },
        None => None,
    };
    let Some(space) = space else {
        return Err(ApiError::unprocessable(
            "Invalid space. Ensure that the space exists and you have access to it.",
        ));
    };
    let buildpacks = match &body.lifecycle {
        Some(lifecycle) => lifecycle.buildpacks()?.unwrap_or_default(),
        None => Vec::new(),
    };
    super::buildpacks::check_names(&controller, &buildpacks).await?;
    let env = body.environment_variables.unwrap_or_default();
    validate_env(&env)?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let exists = || ApiError::unprocessable(format!("App with the name '{name}' already exists."));
    let same_name = Filter::new()
        .eq("space_guid", &space.guid)
        .eq("name", &name);
    if !controller.db.find::<App>(same_name).await?.is_empty() {
        return Err(exists());
    }
    let guid = db::new_guid();
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "apps",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.clone().into()),
                ("space_guid", space.guid.clone().into()),
                ("state", AppState::Stopped.into()),
                ("buildpacks", db::to_json_text(&buildpacks)),
                ("stack", STACK.into()),
                ("environment_variables", db::to_json_text(&env)),
                ("droplet_guid", Arg::Null),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => return Err(exists()),
        other => other?,
    }
    labels.apply(&controller.db, "apps", &guid).await?;
    // The web process shares the app's guid, as in CF.
    insert_process(&controller, &guid, &guid, "web").await?;
    controller.emit_log(&guid, "API", &format!("Created app with guid {guid}"));
    let app = load_app(&controller, &user, &guid).await?;
    let request = json!({"name": name, "space_guid": space.guid, "buildpacks": buildpacks});
    audit::record(
        &controller,
        &user,
        "audit.app.create",
        Target::app(&app),
        Some(&space.guid),
        json!({"request": request}),
    )
    .await;
    Ok(created(app_with_metadata(&controller, &app).await?))
}

/// A new process of `app_guid` with CF's defaults (one instance of the default memory
/// and disk, port health check).
pub async fn insert_process(
    controller: &Controller,
    app_guid: &str,
    guid: &str,
    process_type: &str,
) -> Result<(), ApiError> {
    let now = db::now();
    controller
        .db
        .insert(
            "processes",
            vec![
                ("guid", guid.into()),
                ("app_guid", app_guid.into()),
                ("type", process_type.into()),
                ("command", Arg::Null),
                ("instances", Arg::Int(1)),
                ("memory_in_mb", Arg::Int(DEFAULT_MEMORY_MB)),
                ("disk_in_mb", Arg::Int(DEFAULT_DISK_MB)),
                ("health_check_type", "port".into()),
                ("version", db::new_guid().into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
    Ok(())
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    Ok(ok(app_with_metadata(&controller, &app).await?))
}

pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<UpdateApp>,
) -> ApiResult {
    let app = load_app_to(&controller, &user, &guid, Access::Operate).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let mut changes = Vec::new();
    if let Some(name) = body.name {
        let name = name.trim().to_string();
        if name.is_empty() {
            return Err(ApiError::unprocessable("Name can't be blank"));
        }
        let same_name = Filter::new()
            .eq("space_guid", &app.space_guid)
            .eq("name", &name);
        if controller
            .db
            .find::<App>(same_name)
            .await?
            .iter()
            .any(|a| a.guid != app.guid)
        {
            return Err(ApiError::unprocessable(format!(
                "App with the name '{name}' already exists."
            )));
        }
        changes.push(("name", Arg::from(name)));
    }
    if let Some(lifecycle) = &body.lifecycle {
        if let Some(buildpacks) = lifecycle.buildpacks()? {
            super::buildpacks::check_names(&controller, &buildpacks).await?;
            changes.push(("buildpacks", db::to_json_text(&buildpacks)));
        }
    }
    if !changes.is_empty() {
        let changed: Vec<&str> = changes.iter().map(|(field, _)| *field).collect();
        let request = json!({ "changed": changed });
        controller.db.update("apps", &guid, changes).await?;
        nsync::sync_app(&controller, &guid).await;
        let app = load_app(&controller, &user, &guid).await?;
        audit::record_app(
            &controller,
            &user,
            "audit.app.update",
            &app,
            json!({"request": request}),
        )
        .await;
    }
    labels.apply(&controller.db, "apps", &guid).await?;
    let app = load_app(&controller, &user, &guid).await?;
    Ok(ok(app_with_metadata(&controller, &app).await?))
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let app = load_app_for_write(&controller, &user, &guid).await?;
    delete_app(&controller, &app).await?;
    audit::record_app(
        &controller,
        &user,
        "audit.app.delete-request",
        &app,
        json!({"request": {"recursive": true}}),
    )
    .await;
    finished_job(&controller, "app.delete").await
}

/// Deletes the app with its processes (and their LRPs), route destinations, service
/// bindings (and drains; managed ones are unbound by the broker first), packages,
/// builds, droplets and buildpack cache.
pub async fn delete_app(controller: &Controller, app: &App) -> Result<(), ApiError> {
    if app.state == AppState::Started {
        let sizes = usage_events::sizes(controller, &app.guid).await?;
        let before = Some((AppState::Started, sizes.as_slice()));
        usage_events::record(controller, app, AppState::Stopped, before, None).await;
    }
    let by_app = || Filter::new().eq("app_guid", &app.guid);
    let processes: Vec<Process> = controller.db.find(by_app()).await?;
    for build in controller.db.find::<Build>(by_app()).await? {
        if build.state == BuildState::Staging {
            if let Err(e) = controller.bbs.cancel_task(&build.guid).await {
                tracing::debug!(build = %build.guid, error = %e, "cannot cancel the staging task of a deleted app");
            }
        }
    }
    for package in controller.db.find::<Package>(by_app()).await? {
        controller
            .blobs
            .delete(&controller.blobs.package_key(&package.guid))
            .await?;
    }
    for droplet in controller.db.find::<Droplet>(by_app()).await? {
        controller
            .blobs
            .delete(&controller.blobs.droplet_key(&droplet.guid))
            .await?;
    }
    controller
        .blobs
        .delete(&controller.blobs.buildpack_cache_key(&app.guid, &app.stack))
        .await?;
    controller
        .db
        .delete_where("buildpack_caches", Filter::new().eq("guid", &app.guid))
        .await?;
    controller
        .db
        .delete_where("route_destinations", by_app())
        .await?;
    crate::service_operations::unbind_app(controller, &app.guid).await?;
    for table in [
        "service_credential_bindings",
        "builds",
        "packages",
        "droplets",
        "processes",
        "revisions",
    ] {
        controller.db.delete_resources(table, by_app()).await?;
    }
    controller
        .db
        .delete_resources("apps", Filter::new().eq("guid", &app.guid))
        .await?;
    nsync::sync_processes(controller, processes.into_iter().map(|p| p.guid).collect()).await;
    crate::services::sync_app_drains(controller, &app.guid).await?;
    controller.emit_log(
        &app.guid,
        "API",
        &format!("Deleted app with guid {}", app.guid),
    );
    Ok(())
}

async fn set_state(
    controller: &Controller,
    user: &User,
    guid: &str,
    state: AppState,
    fresh: bool,
) -> ApiResult {
    let app = load_app_to(controller, user, guid, Access::Operate).await?;
    if state == AppState::Started && app.droplet_guid.is_none() {
        return Err(ApiError::unprocessable(
            "Assign a droplet before starting this app.",
        ));
    }
    if state == AppState::Started && app.state != AppState::Started {
        crate::quotas::check_start(controller, &app).await?;
    }
    let sizes_before = usage_events::sizes(controller, guid).await?;
    controller
        .db
        .update("apps", guid, vec![("state", state.into())])
        .await?;
    if fresh || (state == AppState::Started && app.state != AppState::Started) {
        controller.db.renew_process_versions(guid).await?;
    }
    crate::revisions::record(controller, guid).await?;
    nsync::sync_app(controller, guid).await;
    controller.emit_log(
        guid,
        "API",
        &format!(
            "Updated app with guid {guid} ({{\"state\"=>\"{}\"}})",
            state.as_str()
        ),
    );
    let was = app.state;
    let app = load_app(controller, user, guid).await?;
    // Usage: a stop of what ran, then a start (a restart is both).
    if was == AppState::Started && (state == AppState::Stopped || fresh) {
        let before = Some((AppState::Started, sizes_before.as_slice()));
        usage_events::record(controller, &app, AppState::Stopped, before, None).await;
    }
    if state == AppState::Started && (was != AppState::Started || fresh) {
        let before = Some((AppState::Stopped, &[][..]));
        usage_events::record(controller, &app, AppState::Started, before, None).await;
    }
    let event = match (state, fresh) {
        (AppState::Started, true) => "audit.app.restart",
        (AppState::Started, false) => "audit.app.start",
        (AppState::Stopped, _) => "audit.app.stop",
    };
    audit::record_app(controller, user, event, &app, json!({})).await;
    Ok(ok(app_with_metadata(controller, &app).await?))
}

pub async fn start(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    set_state(&controller, &user, &guid, AppState::Started, false).await
}

pub async fn stop(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    set_state(&controller, &user, &guid, AppState::Stopped, false).await
}

pub async fn restart(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    set_state(&controller, &user, &guid, AppState::Started, true).await
}

fn present_current_droplet(controller: &Controller, app: &App) -> Value {
    let link = |suffix: &str| href(controller, &format!("/v3/apps/{}{suffix}", app.guid));
    json!({
        "data": app.droplet_guid.as_ref().map(|guid| json!({"guid": guid})),
        "links": {
            "self": link("/relationships/current_droplet"),
            "related": link("/droplets/current"),
        },
    })
}

pub async fn current_droplet_relationship(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    Ok(ok(present_current_droplet(&controller, &app)))
}

pub async fn set_current_droplet(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let app = load_app_to(&controller, &user, &guid, Access::Operate).await?;
    let droplet_guid = body
        .pointer("/data/guid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let droplet = controller.db.get::<Droplet>(droplet_guid).await?;
    let Some(droplet) =
        droplet.filter(|d| d.app_guid == app.guid && d.state == DropletState::Staged)
    else {
        return Err(ApiError::unprocessable(
            "Unable to assign current droplet. Ensure the droplet exists and belongs to this app.",
        ));
    };
    controller
        .db
        .update(
            "apps",
            &guid,
            vec![("droplet_guid", droplet.guid.clone().into())],
        )
        .await?;
    if app.droplet_guid.as_deref() != Some(droplet.guid.as_str()) {
        controller.db.renew_process_versions(&guid).await?;
        crate::revisions::record(&controller, &guid).await?;
        nsync::sync_app(&controller, &guid).await;
    }
    let app = load_app(&controller, &user, &guid).await?;
    let data = json!({"request": {"droplet_guid": droplet.guid}});
    audit::record_app(&controller, &user, "audit.app.droplet.mapped", &app, data).await;
    Ok(ok(present_current_droplet(&controller, &app)))
}

pub async fn current_droplet(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    let droplet = match &app.droplet_guid {
        Some(droplet_guid) => controller.db.get::<Droplet>(droplet_guid).await?,
        None => None,
    };
    let droplet = droplet.ok_or_else(|| ApiError::not_found("Droplet"))?;
    Ok(ok(super::droplets::show_droplet_value(
        &controller,
        &droplet,
    )
    .await?))
}

pub async fn env(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let app = load_app_secrets(&controller, &user, &guid).await?;
    audit::record_app(
        &controller,
        &user,
        "audit.app.environment.show",
        &app,
        json!({}),
    )
    .await;
    let process = controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", &app.guid).eq("type", "web"))
        .await?
        .into_iter()
        .next();
    let environment_variables = app.environment_variables.clone();
    let context = AppContext::load(&controller, app).await?;
    let staging = super::env_group_variables(&controller, "staging").await?;
    Ok(ok(json!({
        "staging_env_json": staging,
        "running_env_json": context.running_group,
        "environment_variables": environment_variables,
        "system_env_json": {"VCAP_SERVICES": context.vcap_services},
        "application_env_json": {"VCAP_APPLICATION": context.vcap_application(process.as_ref())},
    })))
}

fn present_env_vars(controller: &Controller, app: &App) -> Value {
    json!({
        "var": app.environment_variables,
        "links": {
            "self": href(controller, &format!("/v3/apps/{}/environment_variables", app.guid)),
            "app": href(controller, &format!("/v3/apps/{}", app.guid)),
        },
    })
}

pub async fn environment_variables(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let app = load_app_secrets(&controller, &user, &guid).await?;
    Ok(ok(present_env_vars(&controller, &app)))
}

#[derive(Debug, Deserialize)]
pub struct EnvVarsBody {
    #[serde(default)]
    var: Map<String, Value>,
}

/// Merges `var` into the app's variables; a `null` value removes the variable.
pub async fn update_environment_variables(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<EnvVarsBody>,
) -> ApiResult {
    let app = load_app_for_write(&controller, &user, &guid).await?;
    validate_env(&body.var)?;
    let mut vars = app.environment_variables.clone();
    for (name, value) in body.var {
        if value.is_null() {
            vars.remove(&name);
        } else {
            vars.insert(name, value);
        }
    }
    if vars != app.environment_variables {
        controller
            .db
            .update(
                "apps",
                &guid,
                vec![("environment_variables", db::to_json_text(&vars))],
            )
            .await?;
        controller.db.renew_process_versions(&guid).await?;
        crate::revisions::record(&controller, &guid).await?;
        nsync::sync_app(&controller, &guid).await;
        // CF never writes environment values into events.
        let data = json!({"request": {"environment_variables": "[PRIVATE DATA HIDDEN]"}});
        audit::record_app(&controller, &user, "audit.app.update", &app, data).await;
    }
    let app = load_app(&controller, &user, &guid).await?;
    Ok(ok(present_env_vars(&controller, &app)))
}
