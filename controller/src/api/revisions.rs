//! `/v3/revisions` and `/v3/apps/:guid/revisions`: an app's revisions (see
//! [`crate::revisions`]) as CF shows them, the ones deployed now, their labels and
//! annotations, and their environment variables for those who may read the app's.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::{
    cf_time, href, load_app, load_app_secrets, load_app_to, metadata, ok, paginated, to_one,
    ApiResult, Ctl, JsonBody, ListParams,
};
use crate::auth::{Access, User};
use crate::db::{Filter, Revision};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::{revisions, Controller};

fn present(controller: &Controller, revision: &Revision, deployable: bool) -> Value {
    let link = |suffix: &str| {
        href(
            controller,
            &format!("/v3/revisions/{}{suffix}", revision.guid),
        )
    };
    let processes: serde_json::Map<String, Value> = revision
        .commands
        .iter()
        .map(|(process_type, command)| (process_type.clone(), json!({"command": command})))
        .collect();
    json!({
        "guid": revision.guid,
        "version": revision.version,
        "droplet": {"guid": revision.droplet_guid},
        "processes": processes,
        "sidecars": [],
        "description": revision.description,
        "deployable": deployable,
        "relationships": {"app": to_one(Some(&revision.app_guid))},
        "created_at": cf_time(&revision.created_at),
        "updated_at": cf_time(&revision.updated_at),
        "metadata": metadata(),
        "links": {
            "self": link(""),
            "app": href(controller, &format!("/v3/apps/{}", revision.app_guid)),
            "environment_variables": link("/environment_variables"),
        },
    })
}

/// Revisions as CF shows them, with their labels and annotations.
async fn present_all(controller: &Controller, found: &[Revision]) -> Result<Vec<Value>, ApiError> {
    let deployable = revisions::deployable(controller, found).await?;
    let mut resources: Vec<Value> = found
        .iter()
        .map(|r| {
            present(
                controller,
                r,
                deployable.get(&r.guid).copied().unwrap_or(false),
            )
        })
        .collect();
    metadata::fill(&controller.db, "revisions", &mut resources).await?;
    Ok(resources)
}

async fn show_revision(controller: &Controller, revision: Revision) -> ApiResult {
    let mut shown = present_all(controller, &[revision]).await?;
    Ok(ok(shown.pop().unwrap_or_default()))
}

/// A revision the user can see with its app (else 404), and the app.
async fn load(
    controller: &Controller,
    user: &User,
    guid: &str,
    access: Access,
) -> Result<Revision, ApiError> {
    let revision = controller
        .db
        .get::<Revision>(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Revision"))?;
    match load_app_to(controller, user, &revision.app_guid, access).await {
        Ok(_) => Ok(revision),
        Err(ApiError::NotFound(_)) => Err(ApiError::not_found("Revision")),
        Err(e) => Err(e),
    }
}

/// `GET /v3/apps/:guid/revisions` (`versions`, `deployable`, `label_selector`).
pub async fn list_for_app(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    let filter = Filter::new().eq("app_guid", &app.guid);
    let filter = params.filter(filter, "versions", "CAST(version AS TEXT)");
    let filter = match params.values("deployable").as_deref() {
        None => filter,
        Some([value]) if value == "true" || value == "false" => {
            let staged = "droplet_guid IN (SELECT guid FROM droplets WHERE state = 'STAGED')";
            if value == "true" {
                filter.clause(staged, vec![])
            } else {
                filter.clause(&format!("NOT ({staged})"), vec![])
            }
        }
        Some(_) => {
            return Err(ApiError::BadQueryParameter(
                "Deployable must be a boolean".into(),
            ))
        }
    };
    list(&controller, &params, filter).await
}

/// `GET /v3/apps/:guid/revisions/deployed`: what the app's instances run now.
pub async fn deployed(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    list(&controller, &params, revisions::deployed(&app)).await
}

async fn list(controller: &Controller, params: &ListParams, filter: Filter) -> ApiResult {
    let filter = params.label_selector(filter, "revisions")?;
    let (total, found) = controller.db.list::<Revision>(filter, &params.page).await?;
    let resources = present_all(controller, &found).await?;
    Ok(paginated(controller, params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let revision = load(&controller, &user, &guid, Access::Read).await?;
    show_revision(&controller, revision).await
}

/// `PATCH /v3/revisions/:guid`: its labels and annotations, by the app's developers.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let revision = load(&controller, &user, &guid, Access::Develop).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "revisions", &guid).await?;
    show_revision(&controller, revision).await
}

/// `GET /v3/revisions/:guid/environment_variables`: for those who may read the app's.
pub async fn environment_variables(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let revision = load(&controller, &user, &guid, Access::Read).await?;
    load_app_secrets(&controller, &user, &revision.app_guid).await?;
    let runs = revisions::runs_of_revision(&controller, &revision)?;
    Ok(ok(json!({
        "var": runs.environment_variables,
        "links": {
            "self": href(&controller, &format!("/v3/revisions/{guid}/environment_variables")),
            "revision": href(&controller, &format!("/v3/revisions/{guid}")),
        },
    })))
}
