//! Droplets: listing and showing what builds staged, uploading a droplet made elsewhere
//! (`POST /v3/droplets`, then `/upload`, as `cf push --droplet` does), downloading one,
//! and copying one to another app (`POST /v3/droplets?source_guid=`).

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::STACK;
use super::{
    accepted_with, cf_time, created, href, load_app, load_app_for_write, metadata, ok, paginated,
    relationship_guid, to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::auth::User;
use crate::db::{self, Arg, Droplet, DropletState, Filter};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::signed_urls::droplet_download_path;
use crate::Controller;

/// Most bytes an uploaded droplet may unpack to: what a cell gives an instance's disk
/// at most.
pub(crate) const MAX_UNPACKED_DROPLET_BYTES: u64 = 4 << 30;

pub fn present_droplet(controller: &Controller, droplet: &Droplet) -> Value {
    let checksum = droplet
        .checksum
        .as_ref()
        .filter(|_| droplet.state == DropletState::Staged);
    let buildpacks: Vec<Value> = droplet
        .buildpacks
        .iter()
        .map(|name| json!({"name": name, "buildpack_name": name, "detect_output": null, "version": null}))
        .collect();
    let mut shown = json!({
        "guid": droplet.guid,
        "state": droplet.state.as_str(),
        "error": droplet.error,
        "lifecycle": {"type": "buildpack", "data": {}},
        "execution_metadata": "",
        "process_types": droplet.process_types,
        "checksum": checksum.map(|value| json!({"type": "sha256", "value": value})),
        "buildpacks": buildpacks,
        "stack": droplet.stack,
        "image": null,
        "created_at": cf_time(&droplet.created_at),
        "updated_at": cf_time(&droplet.updated_at),
        "relationships": {"app": to_one(Some(&droplet.app_guid))},
        "metadata": metadata(),
        "links": {
            "self": href(controller, &format!("/v3/droplets/{}", droplet.guid)),
            "app": href(controller, &format!("/v3/apps/{}", droplet.app_guid)),
            "assign_current_droplet": {
                "href": format!("{}/v3/apps/{}/relationships/current_droplet", controller.base_url, droplet.app_guid),
                "method": "PATCH",
            },
        },
    });
    if !droplet.package_guid.is_empty() {
        shown["links"]["package"] = href(
            controller,
            &format!("/v3/packages/{}", droplet.package_guid),
        );
    }
    if droplet.state == DropletState::Staged {
        shown["links"]["download"] = href(
            controller,
            &format!("/v3/droplets/{}/download", droplet.guid),
        );
    }
    if droplet.state == DropletState::AwaitingUpload {
        shown["links"]["upload"] = json!({
            "href": format!("{}/v3/droplets/{}/upload", controller.base_url, droplet.guid),
            "method": "POST",
        });
    }
    shown
}

/// A droplet as CF shows it, with its labels and annotations.
pub async fn show_droplet_value(
    controller: &Controller,
    droplet: &Droplet,
) -> Result<Value, ApiError> {
    let shown = present_droplet(controller, droplet);
    Ok(metadata::filled(&controller.db, "droplets", shown).await?)
}

async fn list_droplets_filtered(
    controller: &Controller,
    params: &ListParams,
    filter: Filter,
) -> ApiResult {
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "app_guids", "app_guid");
    let filter = params.filter(filter, "package_guids", "package_guid");
    let filter = params.filter(filter, "states", "state");
    let filter = params.label_selector(filter, "droplets")?;
    let (total, droplets) = controller.db.list::<Droplet>(filter, &params.page).await?;
    let mut resources: Vec<Value> = droplets
        .iter()
        .map(|d| present_droplet(controller, d))
        .collect();
    metadata::fill(&controller.db, "droplets", &mut resources).await?;
    Ok(paginated(controller, params, total, resources))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_apps(Filter::new(), "app_guid");
    list_droplets_filtered(&controller, &params, filter).await
}

pub async fn list_for_app(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    list_droplets_filtered(
        &controller,
        &params,
        Filter::new().eq("app_guid", &app.guid),
    )
    .await
}

/// A droplet the user may see (through its app).
async fn load_droplet(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<Droplet, ApiError> {
    let droplet: Droplet = controller
        .db
        .get(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Droplet"))?;
    load_app(controller, user, &droplet.app_guid)
        .await
        .map_err(|_| ApiError::not_found("Droplet"))?;
    Ok(droplet)
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let droplet = load_droplet(&controller, &user, &guid).await?;
    Ok(ok(show_droplet_value(&controller, &droplet).await?))
}

/// `PATCH /v3/droplets/:guid`: a droplet's metadata, by those who may push its app.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let droplet = load_droplet(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &droplet.app_guid).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "droplets", &guid).await?;
    Ok(ok(show_droplet_value(&controller, &droplet).await?))
}

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    source_guid: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CreateDroplet {
    #[serde(default)]
    relationships: Value,
    process_types: Option<std::collections::BTreeMap<String, String>>,
    metadata: Option<Value>,
}

/// `POST /v3/droplets`: a droplet AWAITING_UPLOAD for an app (its bits come with
/// `/upload`), or, with `?source_guid=`, a copy of a staged droplet for another app.
pub async fn create(
    State(controller): Ctl,
    user: User,
    Query(query): Query<CreateQuery>,
    JsonBody(body): JsonBody<CreateDroplet>,
) -> ApiResult {
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let app_guid = relationship_guid(&json!({"relationships": body.relationships}), "app");
    let app = match app_guid {
        Some(guid) => match load_app_for_write(&controller, &user, &guid).await {
            Ok(app) => app,
            Err(e @ ApiError::NotAuthorized(_)) => return Err(e),
            Err(_) => return Err(app_must_exist()),
        },
        None => return Err(app_must_exist()),
    };
    let guid = db::new_guid();
    let now = db::now();
    let row = |state: DropletState, checksum: Arg, types: Arg, buildpacks: Arg| {
        vec![
            ("guid", guid.clone().into()),
            ("app_guid", app.guid.clone().into()),
            ("package_guid", "".into()),
            ("build_guid", "".into()),
            ("state", state.into()),
            ("error", Arg::Null),
            ("checksum", checksum),
            ("process_types", types),
            ("buildpacks", buildpacks),
            ("stack", STACK.into()),
            ("created_at", now.clone().into()),
            ("updated_at", now.clone().into()),
        ]
    };
    match query.source_guid {
        Some(source_guid) => {
            let source = load_droplet(&controller, &user, &source_guid)
                .await
                .ok()
                .filter(|d| d.state == DropletState::Staged)
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "Unable to copy the droplet: the source droplet must exist, be staged, and be visible to you.",
                    )
                })?;
            let checksum = source.checksum.clone().unwrap_or_default();
            controller
                .blobs
                .copy(
                    &controller.blobs.droplet_key(&source.guid),
                    &controller.blobs.droplet_key(&guid),
                )
                .await?;
            let types = body.process_types.unwrap_or(source.process_types);
            controller
                .db
                .insert(
                    "droplets",
                    row(
                        DropletState::Staged,
                        checksum.into(),
                        db::to_json_text(&types),
                        db::to_json_text(&source.buildpacks),
                    ),
                )
                .await?;
        }
        None => {
            let types = body.process_types.unwrap_or_default();
            controller
                .db
                .insert(
                    "droplets",
                    row(
                        DropletState::AwaitingUpload,
                        Arg::Null,
                        db::to_json_text(&types),
                        "[]".into(),
                    ),
                )
                .await?;
        }
    }
    labels.apply(&controller.db, "droplets", &guid).await?;
    let droplet = load_droplet(&controller, &user, &guid).await?;
    Ok(created(show_droplet_value(&controller, &droplet).await?))
}

fn app_must_exist() -> ApiError {
    ApiError::unprocessable("App must exist: relationships.app is missing or unknown.")
}

/// `POST /v3/droplets/:guid/upload`: multipart `bits`, a droplet tgz (as `wf
/// download-droplet` saves one). It is checked as a cell will unpack it; the droplet
/// is then STAGED, with the process types it was created with, else its own.
pub async fn upload(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let droplet = load_droplet(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &droplet.app_guid).await?;
    if droplet.state != DropletState::AwaitingUpload {
        return Err(ApiError::unprocessable(format!(
            "Droplet may be uploaded only while AWAITING_UPLOAD; it is {}.",
            droplet.state.as_str()
        )));
    }
    let mut multipart = multipart.map_err(|e| ApiError::MessageParse(e.body_text()))?;
    let tmp = controller.blobs.temp_path();
    let received = super::packages::receive_bits(&controller, &mut multipart, &tmp).await;
    let result = match received {
        Ok(Some((_, sha256))) => store(&controller, &droplet, &tmp, sha256).await,
        Ok(None) => Err(ApiError::unprocessable(
            "Upload must include bits: the 'bits' field is missing.",
        )),
        Err(e) => Err(e),
    };
    if let Err(e) = controller.blobs.remove_temp(&tmp).await {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove an upload's scratch file");
    }
    result?;
    let droplet = load_droplet(&controller, &user, &guid).await?;
    accepted_with(
        &controller,
        "droplet.upload",
        show_droplet_value(&controller, &droplet).await?,
    )
    .await
}

/// Checks the droplet tgz at `upload`, puts it under the droplet's key, and marks the
/// droplet STAGED.
async fn store(
    controller: &Controller,
    droplet: &Droplet,
    upload: &std::path::Path,
    sha256: String,
) -> Result<(), ApiError> {
    let path = upload.to_path_buf();
    let inspected = tokio::task::spawn_blocking(move || {
        wf_buildpacks::inspect_droplet(&path, MAX_UNPACKED_DROPLET_BYTES)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("droplet check: {e}")))?
    .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    controller
        .blobs
        .put_file(
            upload,
            &controller.blobs.droplet_key(&droplet.guid),
            &sha256,
        )
        .await?;
    let mut types = if droplet.process_types.is_empty() {
        inspected.process_types
    } else {
        droplet.process_types.clone()
    };
    types.entry("web".to_string()).or_default();
    let buildpacks = if inspected.buildpacks.is_empty() {
        vec![inspected.buildpack]
    } else {
        inspected.buildpacks
    };
    crate::staging::record_droplet(controller, &droplet.guid, sha256, &types, &buildpacks).await?;
    Ok(())
}

/// `GET /v3/droplets/:guid/download`: a redirect to the droplet's bits (a signed
/// link, valid for an hour), for those who may push its app.
pub async fn download(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    let droplet = load_droplet(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &droplet.app_guid).await?;
    if droplet.state != DropletState::Staged {
        return Err(ApiError::unprocessable(
            "Only staged droplets can be downloaded.",
        ));
    }
    Ok(super::redirect_to_blob(
        &controller,
        &droplet_download_path(&droplet.guid),
    ))
}
