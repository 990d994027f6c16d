//! `/v3/deployments`: zero-downtime (rolling) deploys of an app's droplet. Creating one
//! sets the droplet, gives the web process a new version whose instances come up one
//! at a time while the previous version keeps serving (see [`crate::deployments`]), and
//! restarts the other processes. A new deployment supersedes the app's active one. A
//! stopped app is simply started on the droplet (the deployment is DEPLOYED at once).
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
    self, AppState, Deployment, DeploymentState, Droplet, DropletState, Filter, Process,
};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::{deployments, nsync, Controller};

fn present(controller: &Controller, d: &Deployment) -> Value {
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
        "options": {"max_in_flight": 1},
        "droplet": {"guid": d.droplet_guid},
        "previous_droplet": {"guid": d.previous_droplet_guid},
        "new_processes": [{"guid": d.process_guid, "type": "web"}],
        "revision": null,
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

/// A deployment as CF shows it, with its labels and annotations.
async fn show_deployment(controller: &Controller, d: &Deployment) -> Result<Value, ApiError> {
    let shown = present(controller, d);
    Ok(metadata::filled(&controller.db, "deployments", shown).await?)
}

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
    match body.get("strategy").and_then(Value::as_str) {
        None | Some("rolling") => {}
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "Strategy '{other}' is not supported: use 'rolling'."
            )))
        }
    }
    let droplet_guid = body
        .pointer("/droplet/guid")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| app.droplet_guid.clone())
        .ok_or_else(|| ApiError::unprocessable("Invalid droplet. Please specify a droplet in the request or set a current droplet for the app."))?;
    let droplet = controller
        .db
        .get::<Droplet>(&droplet_guid)
        .await?
        .filter(|d| d.app_guid == app.guid && d.state == DropletState::Staged)
        .ok_or_else(|| {
            ApiError::unprocessable("The droplet must be staged and belong to the app.")
        })?;
    let web = controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", &app.guid).eq("type", "web"))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unprocessable("The app has no web process."))?;
    let rolling = app.state == AppState::Started;
    let old_lrp_guid = nsync::lrp_guid(&web);

    let active = Filter::new()
        .eq("app_guid", &app.guid)
        .eq("state", DeploymentState::Deploying.as_str());
    for superseded in controller.db.find::<Deployment>(active).await? {
        deployments::finish(&controller, &superseded, "SUPERSEDED").await?;
    }
    controller
        .db
        .update(
            "apps",
            &app.guid,
            vec![
                ("droplet_guid", droplet.guid.clone().into()),
                ("state", AppState::Started.into()),
            ],
        )
        .await?;
    controller.db.renew_process_versions(&app.guid).await?;
    let guid = db::new_guid();
    let now = db::now();
    let (state, value, reason) = if rolling {
        (DeploymentState::Deploying, "ACTIVE", "DEPLOYING")
    } else {
        (DeploymentState::Deployed, "FINALIZED", "DEPLOYED")
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
                ("strategy", "rolling".into()),
                ("droplet_guid", droplet.guid.clone().into()),
                (
                    "previous_droplet_guid",
                    app.droplet_guid
                        .clone()
                        .map_or(db::Arg::Null, db::Arg::Text),
                ),
                ("old_lrp_guid", old_lrp_guid.into()),
                ("new_instances", db::Arg::Int(web.instances.min(1))),
                (
                    "old_instances",
                    db::Arg::Int(if rolling { web.instances } else { 0 }),
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
    let data =
        json!({"deployment_guid": guid, "droplet_guid": droplet.guid, "strategy": "rolling"});
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

/// `POST /v3/deployments/:guid/actions/cancel`: back to the previous droplet and version.
pub async fn cancel(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let deployment = load(&controller, &user, &guid).await?;
    let app = load_app_to(&controller, &user, &deployment.app_guid, Access::Operate).await?;
    if deployment.state != DeploymentState::Deploying {
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
    let mut resources: Vec<Value> = found.iter().map(|d| present(&controller, d)).collect();
    metadata::fill(&controller.db, "deployments", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}
