//! The resource cache (CF's resource pool): app files by sha1 in the blobstore, so that
//! a push uploads only the files the platform does not have yet.
//! `POST /v3/resource_matches` answers which of a client's files the cache holds; the
//! package upload lists those in its `resources` field and they are copied from the
//! cache into the package; the files an upload carries go into the cache. Only files
//! of [`MIN_SIZE`] to [`MAX_SIZE`] bytes take part, as in CF (a smaller file costs less
//! to send than to match).

use std::path::Path;

use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use crate::blobstore::{self, BlobError, CachedFile};
use crate::error::ApiError;
use crate::Controller;

/// Smallest file the cache keeps (CF's `resource_pool.minimum_size`).
pub const MIN_SIZE: u64 = 4096;
/// Largest file the cache keeps (CF's `resource_pool.maximum_size`).
pub const MAX_SIZE: u64 = 512 << 20;
/// Most resources one request may name.
const MAX_RESOURCES: usize = 5000;
/// Cache lookups and fetches in flight at once.
const CONCURRENCY: usize = 16;

/// A file as the V3 API names it: `{"checksum": {"value": sha1}, "size_in_bytes",
/// "path", "mode"}` (path and mode only in package uploads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub checksum: Checksum,
    pub size_in_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checksum {
    pub value: String,
}

impl Resource {
    fn cacheable(&self) -> bool {
        (MIN_SIZE..=MAX_SIZE).contains(&self.size_in_bytes)
    }

    /// The unix mode of a package file: octal text, default `0644`.
    fn unix_mode(&self) -> Result<u32, ApiError> {
        match self.mode.as_deref() {
            None | Some("") => Ok(0o644),
            Some(mode) => u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    ApiError::unprocessable(format!("Resource mode '{mode}' is not an octal mode"))
                }),
        }
    }
}

/// Parses and checks a resource list (a request body's `resources`, or an upload's
/// `resources` field).
pub fn parse(value: serde_json::Value) -> Result<Vec<Resource>, ApiError> {
    let resources: Vec<Resource> = serde_json::from_value(value).map_err(|e| {
        ApiError::unprocessable(format!(
            "Resources must be a list of {{checksum: {{value}}, size_in_bytes}}: {e}"
        ))
    })?;
    if resources.len() > MAX_RESOURCES {
        return Err(ApiError::unprocessable(format!(
            "Resources array must have at most {MAX_RESOURCES} resources"
        )));
    }
    for resource in &resources {
        let sha1 = &resource.checksum.value;
        if sha1.len() != 40 || !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::unprocessable(format!(
                "Resource checksum '{sha1}' is not a sha1"
            )));
        }
    }
    Ok(resources)
}

/// The resources the cache holds, in the order asked.
pub async fn matches(
    controller: &Controller,
    resources: Vec<Resource>,
) -> Result<Vec<Resource>, ApiError> {
    let lookups: Vec<_> = resources
        .into_iter()
        .map(|resource| held(controller, resource))
        .collect();
    let held: Vec<Option<Resource>> = futures::stream::iter(lookups)
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(held.into_iter().flatten().collect())
}

/// `resource` if the cache holds it.
async fn held(controller: &Controller, resource: Resource) -> Result<Option<Resource>, BlobError> {
    if !resource.cacheable() {
        return Ok(None);
    }
    let key = controller.blobs.resource_key(&resource.checksum.value)?;
    Ok(controller.blobs.has(&key).await?.then_some(resource))
}

/// Fetches the package files `resources` names from the cache into `scratch` (a
/// directory); a file the cache does not hold is an error the client can act on.
pub async fn fetch(
    controller: &Controller,
    resources: &[Resource],
    scratch: &Path,
) -> Result<Vec<CachedFile>, ApiError> {
    let mut fetches = Vec::with_capacity(resources.len());
    for (i, resource) in resources.iter().enumerate() {
        let path = resource
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ApiError::unprocessable("Each resource of a package upload must have a path")
            })?;
        let file = CachedFile {
            path,
            mode: resource.unix_mode()?,
            file: scratch.join(i.to_string()),
        };
        fetches.push(fetch_one(controller, &resource.checksum.value, file));
    }
    futures::stream::iter(fetches)
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

async fn fetch_one(
    controller: &Controller,
    sha1: &str,
    file: CachedFile,
) -> Result<CachedFile, ApiError> {
    match controller.blobs.fetch_resource(sha1, &file.file).await {
        Ok(()) => Ok(file),
        Err(BlobError::NotFound(_)) => Err(ApiError::unprocessable(format!(
            "The resource cache does not hold {} ({sha1}): upload the file itself",
            file.path
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Puts the files of the package zip `package` that the cache should keep and does
/// not hold yet into it. Best effort: a failure is logged, the upload stands.
pub async fn remember(controller: &Controller, package: &Path) {
    let scratch = controller.blobs.temp_path();
    if let Err(e) = remember_files(controller, package, &scratch).await {
        tracing::warn!(error = %e, "cannot add a package's files to the resource cache");
    }
    if let Err(e) = tokio::fs::remove_dir_all(&scratch).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %scratch.display(), error = %e, "cannot remove scratch files");
        }
    }
}

async fn remember_files(
    controller: &Controller,
    package: &Path,
    scratch: &Path,
) -> Result<(), ApiError> {
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|e| ApiError::Internal(format!("resource cache scratch: {e}")))?;
    let (package, dir) = (package.to_path_buf(), scratch.to_path_buf());
    let files = tokio::task::spawn_blocking(move || {
        blobstore::cacheable_files(&package, MIN_SIZE..=MAX_SIZE, &dir)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("resource cache: {e}")))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let puts: Vec<_> = files
        .into_iter()
        .map(|file| keep(controller, file))
        .collect();
    futures::stream::iter(puts)
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Puts `file` into the cache unless it is there.
async fn keep(controller: &Controller, file: blobstore::CacheableFile) -> Result<(), BlobError> {
    let key = controller.blobs.resource_key(&file.sha1)?;
    if !controller.blobs.has(&key).await? {
        controller
            .blobs
            .put_file(&file.file, &key, &file.sha256)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn resources_are_checked() {
        let sha1 = "a".repeat(40);
        let ok = parse(json!([{"checksum": {"value": sha1}, "size_in_bytes": 5000, "path": "a", "mode": "755"}]))
            .unwrap();
        assert_eq!(ok[0].unix_mode().unwrap(), 0o755);
        assert!(ok[0].cacheable());
        let small = Resource {
            size_in_bytes: 10,
            ..ok[0].clone()
        };
        assert!(!small.cacheable());
        let err = parse(json!([{"checksum": {"value": "nope"}, "size_in_bytes": 1}])).unwrap_err();
        assert!(err.to_string().contains("not a sha1"), "{err}");
        let err = parse(json!([{"size_in_bytes": 1}])).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = parse(json!({"not": "a list"})).unwrap_err();
        assert!(
            err.to_string().contains("Resources must be a list"),
            "{err}"
        );
        let bad_mode = Resource {
            mode: Some("rwx".into()),
            ..ok[0].clone()
        };
        assert!(bad_mode.unix_mode().is_err());
    }
}
