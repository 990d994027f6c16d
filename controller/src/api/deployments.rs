//! `/v3/deployments`: zero-downtime deploys of an app's droplet, or of one of its
//! revisions (a rollback). Creating one sets the droplet (and, for a rollback, the
//! revision's environment and commands), records the revision, gives the web process a
//! new version whose instances come up `max_in_flight` at a time while the previous
//! version keeps serving (see [`crate::deployments`]), and restarts the other
//! processes. A canary deployment starts one new instance and pauses (PAUSED) until
//! `continue`, then goes on as a rolling one. A new deployment supersedes the app's
//! active one. A stopped app is simply started (the deployment is DEPLOYED at once).
//! Cancelling an active deployment rolls back: the previous droplet is current again
//! and the previous version's LRP gets all the instances back while the new one goes.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::{
    cf_time, created, href, load_app, load_app_to, metadata, ok, paginated, relationship_guid,
    to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::audit;
use crate::auth::{Access, User};
use crate::db::{
    self, AppState, Deployment, DeploymentState, Droplet, DropletState, Filter, Process, Revision,
};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::{deployments, nsync, revisions, Controller};

fn present(controller: &Controller, d: &Deployment, revision: Option<&Revision>) -> Value {
    let link = |suffix: &str| href(controller, &format!("/v3/deployments/{}{suffix}", d.guid));
    json!({
        "guid": d.guid,
        "state": d.state.as_str(),
        "status": {
            "value": d.status_value,
            "reason": d.status_reason,
            "details": {"last_status_change": cf_time(&d.updated_at)},
        },
        "strategy": d.strategy,
        "options": {"max_in_flight": d.max_in_flight},
        "droplet": {"guid": d.droplet_guid},
        "previous_droplet": {"guid": d.previous_droplet_guid},
        "new_processes": [{"guid": d.process_guid, "type": "web"}],
        "revision": revision.map(|r| json!({"guid": r.guid, "version": r.version})),
        "created_at": cf_time(&d.created_at),
        "updated_at": cf_time(&d.updated_at),
        "relationships": {"app": to_one(Some(&d.app_guid))},
        "metadata": metadata(),
        "links": {
            "self": link(""),
            "app": href(controller, &format!("/v3/apps/{}", d.app_guid)),
        },
    })
}

/// Deployments as CF shows them, with their revisions, labels and annotations.
async fn present_all(
    controller: &Controller,
    found: &[Deployment],
) -> Result<Vec<Value>, ApiError> {
    let guids: Vec<String> = found
        .iter()
        .filter_map(|d| d.revision_guid.clone())
        .collect();
    let revisions = controller
        .db
        .find::<Revision>(Filter::new().any_of("guid", &guids))
        .await?;
    let mut resources: Vec<Value> = found
        .iter()
        .map(|d| {
            let revision = revisions
                .iter()
                .find(|r| Some(&r.guid) == d.revision_guid.as_ref());
            present(controller, d, revision)
        })
        .collect();
    metadata::fill(&controller.db, "deployments", &mut resources).await?;
    Ok(resources)
}

/// A deployment as CF shows it.
async fn show_deployment(controller: &Controller, d: &Deployment) -> Result<Value, ApiError> {
    let shown = present_all(controller, std::slice::from_ref(d)).await?;
    Ok(shown.into_iter().next().unwrap_or_default())
}

/// A deployment's strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Rolling,
    Canary,
}

impl Strategy {
    fn parse(body: &Value) -> Result<Strategy, ApiError> {
        match body.get("strategy") {
            None | Some(Value::Null) => Ok(Strategy::Rolling),
            Some(Value::String(s)) if s == "rolling" => Ok(Strategy::Rolling),
            Some(Value::String(s)) if s == "canary" => Ok(Strategy::Canary),
            Some(_) => Err(ApiError::unprocessable(
                "Strategy must be one of ['rolling', 'canary']",
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::Canary => "canary",
        }
    }
}

/// `options.max_in_flight` (CF's default 1).
fn max_in_flight(body: &Value) -> Result<i64, ApiError> {
    match body.pointer("/options/max_in_flight") {
        None | Some(Value::Null) => Ok(1),
        Some(n) => n.as_i64().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::unprocessable("Max in flight must be an integer greater than 0")
        }),
    }
}

/// `POST /v3/deployments`: deploys a droplet (the request's, else the app's current
/// one) or, with `revision`, rolls the app back to that revision.
pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let labels = MetadataUpdate::parse(body.get("metadata"))?;
    let Some(app_guid) = relationship_guid(&body, "app") else {
        return Err(ApiError::unprocessable(
            "Relationships 'app' must include an app guid.",
        ));
    };
    let app = load_app_to(&controller, &user, &app_guid, Access::Operate).await?;
    let strategy = Strategy::parse(&body)?;
    let max_in_flight = max_in_flight(&body)?;
    let requested_droplet = body.pointer("/droplet/guid").and_then(Value::as_str);
    let rollback_to = match body.pointer("/revision/guid").and_then(Value::as_str) {
        Some(_) if requested_droplet.is_some() => {
            return Err(ApiError::unprocessable(
                "Cannot set both fields 'droplet' and 'revision'",
            ))
        }
        Some(guid) => Some(
            controller
                .db
                .get::<Revision>(guid)
                .await?
                .filter(|r| r.app_guid == app.guid)
                .ok_or_else(|| ApiError::unprocessable("The revision does not exist"))?,
        ),
        None => None,
    };
    let web = controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", &app.guid).eq("type", "web"))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unprocessable("The app has no web process."))?;
    let previous_revision = revisions::of_process(&controller, &web.guid).await?;
    let droplet = match &rollback_to {
        Some(revision) => {
            revisions::roll_back(&controller, &app, revision).await?;
            revision.droplet_guid.clone()
        }
        None => {
            let guid = requested_droplet
                .map(str::to_string)
                .or_else(|| app.droplet_guid.clone())
                .ok_or_else(|| ApiError::unprocessable("Invalid droplet. Please specify a droplet in the request or set a current droplet for the app."))?;
            controller
                .db
                .get::<Droplet>(&guid)
                .await?
                .filter(|d| d.app_guid == app.guid && d.state == DropletState::Staged)
                .ok_or_else(|| {
                    ApiError::unprocessable("The droplet must be staged and belong to the app.")
                })?
                .guid
        }
    };
    let rolling = app.state == AppState::Started;
    let old_lrp_guid = nsync::lrp_guid(&web);

    let active = Filter::new()
        .eq("app_guid", &app.guid)
        .any_of("state", &active_states());
    for superseded in controller.db.find::<Deployment>(active).await? {
        deployments::finish(&controller, &superseded, "SUPERSEDED").await?;
    }
    controller
        .db
        .update(
            "apps",
            &app.guid,
            vec![
                ("droplet_guid", droplet.clone().into()),
                ("state", AppState::Started.into()),
            ],
        )
        .await?;
    controller.db.renew_process_versions(&app.guid).await?;
    let revision = revisions::record(&controller, &app.guid).await?;
    let guid = db::new_guid();
    let now = db::now();
    let (state, value, reason) = match (rolling, strategy) {
        (false, _) => (DeploymentState::Deployed, "FINALIZED", "DEPLOYED"),
        (true, Strategy::Rolling) => (DeploymentState::Deploying, "ACTIVE", "DEPLOYING"),
        (true, Strategy::Canary) => (DeploymentState::Prepaused, "ACTIVE", "DEPLOYING"),
    };
    // A canary is one instance; a rolling deployment starts `max_in_flight` at once.
    let first = match strategy {
        Strategy::Rolling => max_in_flight,
        Strategy::Canary => 1,
    };
    controller
        .db
        .insert(
            "deployments",
            vec![
                ("guid", guid.clone().into()),
                ("app_guid", app.guid.clone().into()),
                ("process_guid", web.guid.clone().into()),
                ("state", state.into()),
                ("status_value", value.into()),
                ("status_reason", reason.into()),
                ("strategy", strategy.as_str().into()),
                ("droplet_guid", droplet.clone().into()),
                (
                    "previous_droplet_guid",
                    app.droplet_guid
                        .clone()
                        .map_or(db::Arg::Null, db::Arg::Text),
                ),
                ("old_lrp_guid", old_lrp_guid.into()),
                ("new_instances", db::Arg::Int(web.instances.min(first))),
                (
                    "old_instances",
                    db::Arg::Int(if rolling { web.instances } else { 0 }),
                ),
                ("max_in_flight", db::Arg::Int(max_in_flight)),
                (
                    "revision_guid",
                    revision.as_ref().map(|r| r.guid.clone()).into(),
                ),
                (
                    "previous_revision_guid",
                    previous_revision.map(|r| r.guid).into(),
                ),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
    nsync::sync_app(&controller, &app.guid).await;
    if !rolling {
        let before = Some((AppState::Stopped, &[][..]));
        super::usage_events::record(&controller, &app, AppState::Started, before, None).await;
    }
    let mut data =
        json!({"deployment_guid": guid, "droplet_guid": droplet, "strategy": strategy.as_str()});
    if rollback_to.is_some() {
        data["type"] = json!("rollback");
        data["revision_guid"] = json!(revision.as_ref().map(|r| &r.guid));
    }
    audit::record_app(
        &controller,
        &user,
        "audit.app.deployment.create",
        &app,
        data,
    )
    .await;
    labels.apply(&controller.db, "deployments", &guid).await?;
    let deployment = load(&controller, &user, &guid).await?;
    Ok(created(show_deployment(&controller, &deployment).await?))
}

/// The states of deployments under way, as filter values.
fn active_states() -> Vec<String> {
    DeploymentState::ACTIVE
        .iter()
        .map(|s| s.as_str().to_string())
        .collect()
}

/// `POST /v3/deployments/:guid/actions/cancel`: back to the previous droplet and version.
pub async fn cancel(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let deployment = load(&controller, &user, &guid).await?;
    let app = load_app_to(&controller, &user, &deployment.app_guid, Access::Operate).await?;
    if !DeploymentState::ACTIVE.contains(&deployment.state) {
        return Err(ApiError::unprocessable(format!(
            "Cannot cancel a {} deployment",
            deployment.state.as_str()
        )));
    }
    let previous_version = deployment
        .old_lrp_guid
        .strip_prefix(&format!("{}-", deployment.process_guid))
        .unwrap_or_default()
        .to_string();
    let mut app_changes = Vec::new();
    if let Some(previous) = &deployment.previous_droplet_guid {
        app_changes.push(("droplet_guid", db::Arg::Text(previous.clone())));
    }
    if !app_changes.is_empty() {
        controller.db.update("apps", &app.guid, app_changes).await?;
    }
    if !previous_version.is_empty() {
        controller
            .db
            .update(
                "processes",
                &deployment.process_guid,
                vec![("version", previous_version.into())],
            )
            .await?;
    }
    revisions::set_running(
        &controller,
        &app.guid,
        deployment.previous_revision_guid.as_deref(),
    )
    .await?;
    controller
        .db
        .update(
            "deployments",
            &deployment.guid,
            vec![
                ("state", DeploymentState::Canceled.into()),
                ("status_value", "FINALIZED".into()),
                ("status_reason", "CANCELED".into()),
                ("old_instances", db::Arg::Int(0)),
            ],
        )
        .await?;
    nsync::sync_app(&controller, &app.guid).await;
    let data = json!({"deployment_guid": deployment.guid});
    audit::record_app(
        &controller,
        &user,
        "audit.app.deployment.cancel",
        &app,
        data,
    )
    .await;
    let deployment = load(&controller, &user, &guid).await?;
    Ok(ok(show_deployment(&controller, &deployment).await?))
}

/// `POST /v3/deployments/:guid/actions/continue`: a PAUSED canary goes on as a rolling
/// deployment.
pub async fn continue_deployment(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let deployment = load(&controller, &user, &guid).await?;
    let app = load_app_to(&controller, &user, &deployment.app_guid, Access::Operate).await?;
    if deployment.state != DeploymentState::Paused {
        return Err(ApiError::unprocessable(format!(
            "Cannot continue a deployment with status: {} and reason: {}",
            deployment.status_value, deployment.status_reason
        )));
    }
    deployments::resume(&controller, &deployment).await?;
    let data = json!({"deployment_guid": deployment.guid, "droplet_guid": deployment.droplet_guid});
    audit::record_app(
        &controller,
        &user,
        "audit.app.deployment.continue",
        &app,
        data,
    )
    .await;
    let deployment = load(&controller, &user, &guid).await?;
    Ok(ok(show_deployment(&controller, &deployment).await?))
}

async fn load(controller: &Controller, user: &User, guid: &str) -> Result<Deployment, ApiError> {
    let deployment = controller
        .db
        .get::<Deployment>(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Deployment"))?;
    // Visible with its app.
    load_app(controller, user, &deployment.app_guid)
        .await
        .map_err(|_| ApiError::not_found("Deployment"))?;
    Ok(deployment)
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let deployment = load(&controller, &user, &guid).await?;
    Ok(ok(show_deployment(&controller, &deployment).await?))
}

/// `PATCH /v3/deployments/:guid`: a deployment's metadata, by those who may deploy its app.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let deployment = load(&controller, &user, &guid).await?;
    load_app_to(&controller, &user, &deployment.app_guid, Access::Operate).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "deployments", &guid).await?;
    Ok(ok(show_deployment(&controller, &deployment).await?))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_apps(Filter::new(), "app_guid");
    let filter = params.filter(filter, "app_guids", "app_guid");
    let filter = params.filter(filter, "states", "state");
    let filter = params.filter(filter, "status_values", "status_value");
    let filter = params.filter(filter, "status_reasons", "status_reason");
    let filter = params.label_selector(filter, "deployments")?;
    let (total, found) = controller
        .db
        .list::<Deployment>(filter, &params.page)
        .await?;
    let resources = present_all(&controller, &found).await?;
    Ok(paginated(&controller, &params, total, resources))
}
