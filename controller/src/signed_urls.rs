//! Signed blob URLs for cells: `/internal/v4/packages/{guid}/download`,
//! `/internal/v4/droplets/{guid}/download`, `/internal/v4/droplets/{guid}/upload`,
//! `/internal/v4/buildpacks/{guid}/download` (a custom buildpack's zip) and
//! `/internal/v4/buildpack_cache/{app guid}/download|upload` (the app's buildpack
//! cache) take no token; they carry `expires` (unix seconds) and `signature` (hex
//! HMAC-SHA256 of the path and expiry under the controller's signing secret).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::blobstore::{BlobError, BlobKind};
use crate::db::{
    self, App, Buildpack, BuildpackCache, BuildpackState, Droplet, DropletState, Package,
    PackageState,
};
use crate::error::ApiError;
use crate::Controller;

/// Largest droplet a cell may upload.
const MAX_DROPLET_BYTES: usize = 1 << 30;
/// Largest buildpack cache a cell may upload.
const MAX_BUILDPACK_CACHE_BYTES: usize = 1 << 30;

pub struct UrlSigner {
    base_url: String,
    secret: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the URL is not signed")]
    Missing,
    #[error("the URL signature is invalid")]
    Invalid,
    #[error("the signed URL has expired")]
    Expired,
}

impl UrlSigner {
    pub fn new(base_url: &str, secret: &[u8]) -> UrlSigner {
        UrlSigner {
            base_url: base_url.to_string(),
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, path: &str, expires: i64) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The full URL of `path` (which starts with `/`), valid until `expires`.
    pub fn url(&self, path: &str, expires: i64) -> String {
        let signature = hex::encode(self.mac(path, expires).finalize().into_bytes());
        format!(
            "{}{path}?expires={expires}&signature={signature}",
            self.base_url
        )
    }

    pub fn verify(
        &self,
        path: &str,
        expires: Option<i64>,
        signature: Option<&str>,
        now: i64,
    ) -> Result<(), SignatureError> {
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(SignatureError::Missing);
        };
        let signature = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        self.mac(path, expires)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::Invalid)?;
        if expires < now {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

pub fn package_download_path(guid: &str) -> String {
    format!("/internal/v4/packages/{guid}/download")
}

pub fn droplet_download_path(guid: &str) -> String {
    format!("/internal/v4/droplets/{guid}/download")
}

pub fn droplet_upload_path(guid: &str) -> String {
    format!("/internal/v4/droplets/{guid}/upload")
}

pub fn buildpack_download_path(guid: &str) -> String {
    format!("/internal/v4/buildpacks/{guid}/download")
}

pub fn buildpack_cache_download_path(app_guid: &str) -> String {
    format!("/internal/v4/buildpack_cache/{app_guid}/download")
}

pub fn buildpack_cache_upload_path(app_guid: &str) -> String {
    format!("/internal/v4/buildpack_cache/{app_guid}/upload")
}

/// The package, droplet or buildpack a URL made from the paths above names, with its
/// guid (for a buildpack cache: the app's guid).
pub fn blob_of_url(url: &str) -> Option<(BlobKind, &str)> {
    const PREFIX: &str = "/internal/v4/";
    let path = &url[url.find(PREFIX)? + PREFIX.len()..];
    let mut parts = path.split(['?', '#']).next()?.split('/');
    let kind = match parts.next()? {
        "packages" => BlobKind::Package,
        "droplets" => BlobKind::Droplet,
        "buildpacks" => BlobKind::Buildpack,
        "buildpack_cache" => BlobKind::BuildpackCache,
        _ => return None,
    };
    let guid = parts.next().filter(|guid| !guid.is_empty())?;
    let action = parts.next()?;
    (matches!(action, "download" | "upload") && parts.next().is_none()).then_some((kind, guid))
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn router(controller: Arc<Controller>) -> axum::Router {
    axum::Router::new()
        .route(
            "/internal/v4/packages/{guid}/download",
            get(download_package),
        )
        .route(
            "/internal/v4/droplets/{guid}/download",
            get(download_droplet),
        )
        .route(
            "/internal/v4/droplets/{guid}/upload",
            put(upload_droplet)
                .post(upload_droplet)
                .layer(DefaultBodyLimit::max(MAX_DROPLET_BYTES)),
        )
        .route(
            "/internal/v4/buildpacks/{guid}/download",
            get(download_buildpack),
        )
        .route(
            "/internal/v4/buildpack_cache/{guid}/download",
            get(download_buildpack_cache),
        )
        .route(
            "/internal/v4/buildpack_cache/{guid}/upload",
            put(upload_buildpack_cache).post(upload_buildpack_cache),
        )
        .with_state(controller)
}

#[derive(Debug, Deserialize)]
struct Signed {
    expires: Option<i64>,
    signature: Option<String>,
}

fn check(controller: &Controller, uri: &Uri, signed: &Signed) -> Result<(), ApiError> {
    controller
        .signer
        .verify(
            uri.path(),
            signed.expires,
            signed.signature.as_deref(),
            now_unix(),
        )
        .map_err(|e| ApiError::NotAuthorized(format!("Signature verification failed: {e}")))
}

/// Streams the blob under `key` as the response, checked against its recorded
/// `sha256` (no checksum: not uploaded yet); a 404 naming `what` when it is missing.
async fn serve_blob(
    controller: &Controller,
    key: object_store::path::Path,
    sha256: Option<&str>,
    content_type: &'static str,
    what: &str,
) -> Result<Response, ApiError> {
    let sha256 = sha256.ok_or_else(|| ApiError::not_found(what))?;
    let blob = match controller.blobs.get(&key, sha256).await {
        Ok(blob) => blob,
        Err(BlobError::NotFound(_)) => return Err(ApiError::not_found(what)),
        Err(e) => return Err(e.into()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, blob.size.to_string()),
        ],
        Body::from_stream(blob.chunks),
    )
        .into_response())
}

async fn download_package(
    State(controller): State<Arc<Controller>>,
    Path(guid): Path<String>,
    Query(signed): Query<Signed>,
    uri: Uri,
) -> Result<Response, ApiError> {
    check(&controller, &uri, &signed)?;
    let package: Package = controller
        .db
        .get(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Package"))?;
    if package.state != PackageState::Ready {
        return Err(ApiError::not_found("Package bits"));
    }
    let key = controller.blobs.package_key(&guid);
    let sha256 = package.checksum.as_deref();
    serve_blob(&controller, key, sha256, "application/zip", "Package bits").await
}

async fn download_droplet(
    State(controller): State<Arc<Controller>>,
    Path(guid): Path<String>,
    Query(signed): Query<Signed>,
    uri: Uri,
) -> Result<Response, ApiError> {
    check(&controller, &uri, &signed)?;
    let droplet: Droplet = controller
        .db
        .get(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Droplet"))?;
    let key = controller.blobs.droplet_key(&guid);
    let sha256 = droplet.checksum.as_deref();
    serve_blob(&controller, key, sha256, "application/gzip", "Droplet bits").await
}

/// The cell's upload of a staged droplet; accepted while its build is staging.
async fn upload_droplet(
    State(controller): State<Arc<Controller>>,
    Path(guid): Path<String>,
    Query(signed): Query<Signed>,
    uri: Uri,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check(&controller, &uri, &signed)?;
    let droplet: Droplet = controller
        .db
        .get(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Droplet"))?;
    if droplet.state != DropletState::Staging {
        return Err(ApiError::unprocessable(
            "The droplet is not staging: it takes no upload.",
        ));
    }
    let key = controller.blobs.droplet_key(&guid);
    let checksum = store_upload(&controller, body, &key, "Droplet").await?;
    controller
        .db
        .update(
            "droplets",
            &guid,
            vec![("checksum", db::Arg::Text(checksum))],
        )
        .await?;
    Ok(StatusCode::CREATED)
}

/// Streams an uploaded `body` to a scratch file and then under `key`; returns its
/// sha256. `what` names the blob in errors.
async fn store_upload(
    controller: &Controller,
    body: Body,
    key: &object_store::path::Path,
    what: &str,
) -> Result<String, ApiError> {
    let tmp = controller.blobs.temp_path();
    let written = controller
        .blobs
        .write_stream(&tmp, body.into_data_stream())
        .await;
    let stored = match written {
        Ok(checksum) => controller
            .blobs
            .put_file(&tmp, key, &checksum)
            .await
            .map(|_| checksum)
            .map_err(ApiError::from),
        Err(e) => Err(ApiError::unprocessable(format!(
            "{what} upload failed: {e}"
        ))),
    };
    if let Err(e) = controller.blobs.remove_temp(&tmp).await {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove an upload's scratch file");
    }
    stored
}

/// A custom buildpack's zip, for the cells that stage with it.
async fn download_buildpack(
    State(controller): State<Arc<Controller>>,
    Path(guid): Path<String>,
    Query(signed): Query<Signed>,
    uri: Uri,
) -> Result<Response, ApiError> {
    check(&controller, &uri, &signed)?;
    let buildpack: Buildpack = controller
        .db
        .get(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Buildpack"))?;
    if buildpack.state != BuildpackState::Ready {
        return Err(ApiError::not_found("Buildpack bits"));
    }
    let key = controller.blobs.buildpack_key(&guid);
    let sha256 = buildpack.checksum.as_deref();
    serve_blob(
        &controller,
        key,
        sha256,
        "application/zip",
        "Buildpack bits",
    )
    .await
}

/// The app's buildpack cache; 404 while it has none.
async fn download_buildpack_cache(
    State(controller): State<Arc<Controller>>,
    Path(app_guid): Path<String>,
    Query(signed): Query<Signed>,
    uri: Uri,
) -> Result<Response, ApiError> {
    check(&controller, &uri, &signed)?;
    let cache: Option<BuildpackCache> = controller.db.get(&app_guid).await?;
    let key = controller
        .blobs
        .buildpack_cache_key(&app_guid, crate::api::STACK);
    let sha256 = cache.as_ref().map(|c| c.checksum.as_str());
    serve_blob(
        &controller,
        key,
        sha256,
        "application/gzip",
        "Buildpack cache",
    )
    .await
}

/// A cell's upload of the app's new buildpack cache (a tgz, at most
/// [`MAX_BUILDPACK_CACHE_BYTES`]); replaces the previous one.
async fn upload_buildpack_cache(
    State(controller): State<Arc<Controller>>,
    Path(app_guid): Path<String>,
    Query(signed): Query<Signed>,
    uri: Uri,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check(&controller, &uri, &signed)?;
    if controller.db.get::<App>(&app_guid).await?.is_none() {
        return Err(ApiError::not_found("App"));
    }
    let key = controller
        .blobs
        .buildpack_cache_key(&app_guid, crate::api::STACK);
    let limited = Body::new(http_body_util::Limited::new(
        body,
        MAX_BUILDPACK_CACHE_BYTES,
    ));
    let checksum = store_upload(&controller, limited, &key, "Buildpack cache").await?;
    let recorded = vec![("checksum", db::Arg::Text(checksum.clone()))];
    if !controller
        .db
        .update("buildpack_caches", &app_guid, recorded)
        .await?
    {
        let now = db::now();
        let inserted = controller
            .db
            .insert(
                "buildpack_caches",
                vec![
                    ("guid", app_guid.clone().into()),
                    ("checksum", checksum.clone().into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await;
        match inserted {
            // Another upload recorded it first: this one's blob is what is stored now.
            Err(e) if db::is_unique_violation(&e) => {
                controller
                    .db
                    .update(
                        "buildpack_caches",
                        &app_guid,
                        vec![("checksum", db::Arg::Text(checksum))],
                    )
                    .await?;
            }
            other => other?,
        }
    }
    Ok(StatusCode::CREATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_verify_until_they_expire() {
        let signer = UrlSigner::new("http://cc.example", b"secret");
        let path = droplet_download_path("d1");
        let url = signer.url(&path, 2_000);
        assert!(url.starts_with(
            "http://cc.example/internal/v4/droplets/d1/download?expires=2000&signature="
        ));
        let signature = url.rsplit("signature=").next().unwrap();

        assert_eq!(
            signer.verify(&path, Some(2_000), Some(signature), 1_000),
            Ok(())
        );
        assert_eq!(
            signer.verify(&path, Some(2_000), Some(signature), 2_001),
            Err(SignatureError::Expired)
        );
        // The signature binds path and expiry.
        assert_eq!(
            signer.verify(&path, Some(3_000), Some(signature), 1_000),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify(
                &droplet_upload_path("d1"),
                Some(2_000),
                Some(signature),
                1_000
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify(&path, Some(2_000), Some("zz"), 1_000),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify(&path, None, Some(signature), 1_000),
            Err(SignatureError::Missing)
        );
        // Another secret does not verify.
        let other = UrlSigner::new("http://cc.example", b"other");
        assert_eq!(
            other.verify(&path, Some(2_000), Some(signature), 1_000),
            Err(SignatureError::Invalid)
        );
    }
}
