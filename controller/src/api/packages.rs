//! Packages: the app bits a build stages. `bits` packages are uploaded as a zip (or a
//! bare `.wasm`), checked, and kept in the blobstore; they can be downloaded, and
//! copied to another app (`POST /v3/packages?source_guid=`, as `cf copy-source` does).

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cf_time, created, href, load_app, load_app_for_write, metadata, ok, paginated,
    relationship_guid, to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::auth::User;
use crate::blobstore::{self, BitsError};
use crate::db::{self, Arg, Filter, Package, PackageState};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::signed_urls::package_download_path;
use crate::Controller;

pub fn present_package(controller: &Controller, package: &Package) -> Value {
    let link = |suffix: &str| {
        format!(
            "{}/v3/packages/{}{suffix}",
            controller.base_url, package.guid
        )
    };
    json!({
        "guid": package.guid,
        "type": package.package_type,
        "data": {
            "checksum": {"type": "sha256", "value": package.checksum},
            "error": package.error,
        },
        "state": package.state.as_str(),
        "created_at": cf_time(&package.created_at),
        "updated_at": cf_time(&package.updated_at),
        "relationships": {"app": to_one(Some(&package.app_guid))},
        "metadata": metadata(),
        "links": {
            "self": {"href": link("")},
            "upload": {"href": link("/upload"), "method": "POST"},
            "download": {"href": link("/download"), "method": "GET"},
            "app": href(controller, &format!("/v3/apps/{}", package.app_guid)),
        },
    })
}

/// Loads a package the user may see (through its app).
pub async fn load_package(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<Package, ApiError> {
    let package: Package = controller
        .db
        .get(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Package"))?;
    load_app(controller, user, &package.app_guid)
        .await
        .map_err(|_| ApiError::not_found("Package"))?;
    Ok(package)
}

async fn list_filtered(controller: &Controller, params: &ListParams, filter: Filter) -> ApiResult {
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "app_guids", "app_guid");
    let filter = params.filter(filter, "states", "state");
    let filter = params.filter(filter, "types", "type");
    let filter = params.label_selector(filter, "packages")?;
    let (total, packages) = controller.db.list::<Package>(filter, &params.page).await?;
    let mut resources: Vec<Value> = packages
        .iter()
        .map(|p| present_package(controller, p))
        .collect();
    metadata::fill(&controller.db, "packages", &mut resources).await?;
    Ok(paginated(controller, params, total, resources))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    list_filtered(
        &controller,
        &params,
        user.scope_apps(Filter::new(), "app_guid"),
    )
    .await
}

pub async fn list_for_app(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    list_filtered(
        &controller,
        &params,
        Filter::new().eq("app_guid", &app.guid),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct CreatePackage {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    relationships: Value,
    metadata: Option<Value>,
}

/// A package as CF shows it, with its labels and annotations.
async fn show_package(controller: &Controller, package: &Package) -> Result<Value, ApiError> {
    let shown = present_package(controller, package);
    Ok(metadata::filled(&controller.db, "packages", shown).await?)
}

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    source_guid: Option<String>,
}

/// `POST /v3/packages`: a `bits` package AWAITING_UPLOAD, or, with `?source_guid=`, a
/// copy of a ready package for another app.
pub async fn create(
    State(controller): Ctl,
    user: User,
    Query(query): Query<CreateQuery>,
    JsonBody(body): JsonBody<CreatePackage>,
) -> ApiResult {
    let source = match &query.source_guid {
        Some(source_guid) => Some(
            load_package(&controller, &user, source_guid)
                .await
                .ok()
                .filter(|p| p.state == PackageState::Ready)
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "Unable to copy the package: the source package must exist, be ready, and be visible to you.",
                    )
                })?,
        ),
        None => None,
    };
    match body.kind.as_deref() {
        _ if source.is_some() => {}
        Some("bits") => {}
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "Package type '{other}' is not supported: only 'bits' packages are."
            )))
        }
        None => return Err(ApiError::unprocessable("Type must be one of 'bits'")),
    }
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let app_guid = relationship_guid(&json!({"relationships": body.relationships}), "app");
    let app = match app_guid {
        Some(guid) => match load_app_for_write(&controller, &user, &guid).await {
            Ok(app) => Some(app),
            Err(e @ ApiError::NotAuthorized(_)) => return Err(e),
            Err(_) => None,
        },
        None => None,
    };
    let Some(app) = app else {
        return Err(ApiError::unprocessable(
            "App must exist: relationships.app is missing or unknown.",
        ));
    };
    let guid = db::new_guid();
    let now = db::now();
    let (state, checksum) = match &source {
        Some(source) => {
            controller
                .blobs
                .copy(
                    &controller.blobs.package_key(&source.guid),
                    &controller.blobs.package_key(&guid),
                )
                .await?;
            let checksum = source.checksum.clone().map_or(Arg::Null, Arg::from);
            (PackageState::Ready, checksum)
        }
        None => (PackageState::AwaitingUpload, Arg::Null),
    };
    controller
        .db
        .insert(
            "packages",
            vec![
                ("guid", guid.clone().into()),
                ("app_guid", app.guid.into()),
                ("type", "bits".into()),
                ("state", state.into()),
                ("checksum", checksum),
                ("error", Arg::Null),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
    labels.apply(&controller.db, "packages", &guid).await?;
    let package = load_package(&controller, &user, &guid).await?;
    Ok(created(show_package(&controller, &package).await?))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let package = load_package(&controller, &user, &guid).await?;
    Ok(ok(show_package(&controller, &package).await?))
}

/// `PATCH /v3/packages/:guid`: a package's metadata, by those who may push its app.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let package = load_package(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &package.app_guid).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "packages", &guid).await?;
    Ok(ok(show_package(&controller, &package).await?))
}

/// `GET /v3/packages/:guid/download`: a redirect to the package's bits (a signed link,
/// valid for an hour), for those who may push its app.
pub async fn download(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    let package = load_package(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &package.app_guid).await?;
    if package.state != PackageState::Ready {
        return Err(ApiError::unprocessable(
            "Package has no bits to download: upload them first.",
        ));
    }
    Ok(super::redirect_to_blob(
        &controller,
        &package_download_path(&package.guid),
    ))
}

/// `POST /v3/packages/:guid/upload`: multipart with `bits` (a zip, or a bare wasm) and
/// `resources` (the files the resource cache holds, as `/v3/resource_matches` answered,
/// with their paths and modes), at least one of the two. Bad bits leave the package
/// AWAITING_UPLOAD.
pub async fn upload(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let package = load_package(&controller, &user, &guid).await?;
    load_app_for_write(&controller, &user, &package.app_guid).await?;
    super::feature_flags::require(&controller, &user, "app_bits_upload").await?;
    let mut multipart = multipart.map_err(|e| ApiError::MessageParse(e.body_text()))?;
    let tmp = controller.blobs.temp_path();
    let result = match receive_upload(&controller, &mut multipart, &tmp).await {
        Ok(upload) => store_package(&controller, &package, &tmp, upload).await,
        Err(e) => Err(e),
    };
    if let Err(e) = controller.blobs.remove_temp(&tmp).await {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove an upload's scratch file");
    }
    result?;
    let package = load_package(&controller, &user, &guid).await?;
    Ok(ok(show_package(&controller, &package).await?))
}

/// Most bytes of an upload's `resources` field (5,000 resources fit with room to spare).
const MAX_RESOURCES_FIELD: usize = 4 << 20;

/// What a multipart upload carried: the `bits` field (streamed to a scratch file; its
/// file name and sha256) and the `resources` field.
pub(super) struct Upload {
    pub bits: Option<(String, String)>,
    pub resources: Vec<crate::resource_cache::Resource>,
}

/// Streams the `bits` field to `tmp`; returns its file name and sha256, or `None`
/// without one.
pub(super) async fn receive_bits(
    controller: &Controller,
    multipart: &mut Multipart,
    tmp: &std::path::Path,
) -> Result<Option<(String, String)>, ApiError> {
    Ok(receive_upload(controller, multipart, tmp).await?.bits)
}

/// Streams the `bits` field to `tmp`, and reads the `resources` field.
async fn receive_upload(
    controller: &Controller,
    multipart: &mut Multipart,
    tmp: &std::path::Path,
) -> Result<Upload, ApiError> {
    let parse = |e: axum::extract::multipart::MultipartError| ApiError::MessageParse(e.body_text());
    let mut upload = Upload {
        bits: None,
        resources: Vec::new(),
    };
    while let Some(mut field) = multipart.next_field().await.map_err(parse)? {
        match field.name() {
            Some("bits") => {
                let name = field.file_name().unwrap_or("bits").to_string();
                let chunks = futures::stream::unfold(field, |mut field| async move {
                    match field.chunk().await {
                        Ok(Some(chunk)) => Some((Ok(chunk), field)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), field)),
                    }
                });
                let sha256 = controller
                    .blobs
                    .write_stream(tmp, Box::pin(chunks))
                    .await
                    .map_err(|e| {
                        ApiError::unprocessable(format!("Uploading {name} failed: {e}"))
                    })?;
                upload.bits = Some((name, sha256));
            }
            Some("resources") => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(parse)? {
                    text.extend_from_slice(&chunk);
                    if text.len() > MAX_RESOURCES_FIELD {
                        return Err(ApiError::unprocessable("The resources field is too large"));
                    }
                }
                let value: Value = serde_json::from_slice(&text).map_err(|e| {
                    ApiError::MessageParse(format!("The resources field is not JSON: {e}"))
                })?;
                upload.resources = crate::resource_cache::parse(value)?;
            }
            _ => {}
        }
    }
    Ok(upload)
}

async fn store_package(
    controller: &Controller,
    package: &Package,
    upload: &std::path::Path,
    received: Upload,
) -> Result<(), ApiError> {
    let filename = match received.bits {
        Some((filename, _)) => filename,
        None if !received.resources.is_empty() => {
            // Every file is in the resource cache: the bits are an empty zip.
            let empty = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()))
                .finish()
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .into_inner();
            tokio::fs::write(upload, empty)
                .await
                .map_err(|e| ApiError::Internal(format!("scratch file: {e}")))?;
            "bits".to_string()
        }
        None => {
            return Err(ApiError::unprocessable(
                "Upload must include bits or resources: both fields are missing.",
            ))
        }
    };
    let staged = controller.blobs.temp_path();
    let scratch = controller.blobs.temp_path();
    let stored = put_package(
        controller,
        package,
        upload,
        &received.resources,
        (&scratch, &staged),
        filename,
    )
    .await;
    if let Err(e) = controller.blobs.remove_temp(&staged).await {
        tracing::warn!(path = %staged.display(), error = %e, "cannot remove a package's scratch file");
    }
    if let Err(e) = tokio::fs::remove_dir_all(&scratch).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %scratch.display(), error = %e, "cannot remove scratch files");
        }
    }
    let checksum = stored?;
    controller
        .db
        .update(
            "packages",
            &package.guid,
            vec![
                ("state", PackageState::Ready.into()),
                ("checksum", checksum.into()),
                ("error", Arg::Null),
            ],
        )
        .await?;
    Ok(())
}

/// Fetches the package's `resources` from the cache into the scratch directory
/// `scratch`, checks the bits at `upload`, writes the package zip (the bits and those
/// files) to the scratch file `staged`, puts it in the blobstore, and adds its files to
/// the resource cache; returns its sha256.
async fn put_package(
    controller: &Controller,
    package: &Package,
    upload: &std::path::Path,
    resources: &[crate::resource_cache::Resource],
    (scratch, staged): (&std::path::Path, &std::path::Path),
    filename: String,
) -> Result<String, ApiError> {
    let cached = if resources.is_empty() {
        Vec::new()
    } else {
        tokio::fs::create_dir_all(scratch)
            .await
            .map_err(|e| ApiError::Internal(format!("scratch directory: {e}")))?;
        crate::resource_cache::fetch(controller, resources, scratch).await?
    };
    let (upload_path, staged_path) = (upload.to_path_buf(), staged.to_path_buf());
    let checksum = tokio::task::spawn_blocking(move || {
        blobstore::prepare_package(&upload_path, &cached, &staged_path, &filename)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("package check: {e}")))?
    .map_err(|e| match e {
        BitsError::Io(cause) => ApiError::Internal(cause),
        refused => ApiError::unprocessable(refused.to_string()),
    })?;
    controller
        .blobs
        .put_file(
            staged,
            &controller.blobs.package_key(&package.guid),
            &checksum,
        )
        .await?;
    crate::resource_cache::remember(controller, staged).await;
    Ok(checksum)
}
