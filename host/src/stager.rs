//! Staging on the cell: download the app package, the custom buildpacks and the app's
//! buildpack cache, run the buildpack lifecycle (on a blocking thread, streaming its
//! output as STG logs), and upload the droplet and the new buildpack cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wf_bbs::StageAction;
use wf_buildpacks::{BuildpackSource, Limits, StageRequest, StagingError};
use wf_loggregator::LogType;

use crate::cell::Cell;
use crate::instance::InstanceLogs;

/// Longest a droplet or cache upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the buildpacks may take (CF's default `staging_timeout_in_seconds`).
const STAGING_TIMEOUT: Duration = Duration::from_secs(900);
/// The largest buildpack cache a cell uploads; a larger one is dropped (with a line in
/// the staging log), and the next staging starts cold.
const MAX_CACHE_BYTES: u64 = 1 << 30;

/// Stages the app; the result is the droplet's metadata (JSON), the error the build's
/// failure reason, `<CF error name> - <message>`.
pub async fn stage(
    cell: &Arc<Cell>,
    task_guid: &str,
    action: &StageAction,
    memory_mb: u32,
    logs: &InstanceLogs,
) -> Result<String, String> {
    let failed = |message: String| format!("StagingError - {message}");
    let staging_dir = cell.config.data_dir.join("staging");
    tokio::fs::create_dir_all(&staging_dir)
        .await
        .map_err(|e| failed(format!("creating the staging directory: {e}")))?;
    let work = tempfile::Builder::new()
        .prefix(task_guid)
        .tempdir_in(&staging_dir)
        .map_err(|e| failed(format!("creating the staging directory: {e}")))?;

    logs.app(LogType::Out, "Downloading app package...");
    let package = work.path().join("package.zip");
    crate::droplets::download(&cell.http, &action.package_uri, &package)
        .await
        .map_err(|e| failed(format!("failed to download the app package: {e}")))?;
    let size = tokio::fs::metadata(&package)
        .await
        .map(|m| m.len())
        .unwrap_or_default();
    logs.app(
        LogType::Out,
        &format!("Downloaded app package ({})", human_size(size)),
    );

    let mut buildpacks = Vec::new();
    for (index, buildpack) in action.buildpacks.iter().enumerate() {
        buildpacks.push(match &buildpack.url {
            None => BuildpackSource::BuiltIn(buildpack.name.clone()),
            Some(url) => {
                let zip = work.path().join(format!("buildpack-{index}.zip"));
                let sha256 = crate::droplets::download(&cell.http, url, &zip)
                    .await
                    .map_err(|e| {
                        failed(format!(
                            "failed to download buildpack {}: {e}",
                            buildpack.name
                        ))
                    })?;
                if buildpack
                    .sha256
                    .as_ref()
                    .is_some_and(|want| *want != sha256)
                {
                    return Err(failed(format!(
                        "buildpack {} does not match its sha256",
                        buildpack.name
                    )));
                }
                BuildpackSource::Custom {
                    name: buildpack.name.clone(),
                    zip,
                }
            }
        });
    }
    let cache_dir = work.path().join("cache");
    if let Some(uri) = &action.buildpack_cache_download_uri {
        restore_cache(cell, uri, &work.path().join("cache.tgz"), &cache_dir, logs).await;
    }

    let work_dir = work.path().join("build");
    let tools_dir = cell
        .config
        .buildpack_tools_dir
        .clone()
        .unwrap_or_else(|| cell.config.data_dir.join("buildpack-tools"));
    let skip_detect = action.skip_detect;
    let env = action
        .env
        .iter()
        .map(|var| (var.name.clone(), var.value.clone()))
        .collect();
    let limits = Limits {
        timeout: STAGING_TIMEOUT,
        memory_bytes: u64::from(memory_mb.max(64)) << 20,
    };
    let build_logs = logs.clone();
    let cache = cache_dir.clone();
    let staged = tokio::task::spawn_blocking(move || {
        wf_buildpacks::stage(
            StageRequest {
                package: &package,
                work_dir: &work_dir,
                buildpacks,
                skip_detect,
                cache_dir: &cache,
                tools_dir: &tools_dir,
                env,
                limits,
            },
            &|line: &str| build_logs.app(LogType::Out, line),
        )
    })
    .await
    .map_err(|e| failed(format!("the buildpack crashed: {e}")))?
    .map_err(|e: StagingError| format!("{} - {e}", e.cf_name()))?;

    logs.app(LogType::Out, "Uploading droplet...");
    let size = upload(
        cell,
        &action.droplet_upload_uri,
        &staged.droplet,
        "application/octet-stream",
    )
    .await
    .map_err(|e| match e {
        UploadError::Read(e) => failed(format!("reading the droplet: {e}")),
        UploadError::Send(e) => failed(format!("failed to upload the droplet: {e}")),
    })?;
    logs.app(
        LogType::Out,
        &format!("Uploaded droplet ({})", human_size(size)),
    );
    if let Some(uri) = &action.buildpack_cache_upload_uri {
        save_cache(
            cell,
            uri,
            &cache_dir,
            &work.path().join("cache-new.tgz"),
            logs,
        )
        .await;
    }
    logs.app(LogType::Out, "Uploading complete");

    serde_json::to_string(&staged.metadata)
        .map_err(|e| failed(format!("encoding the droplet metadata: {e}")))
}

/// Downloads and unpacks the app's buildpack cache into `dir`; a missing or broken
/// cache only means a cold build.
async fn restore_cache(cell: &Cell, uri: &str, tgz: &Path, dir: &Path, logs: &InstanceLogs) {
    let restored = async {
        let resp = cell.http.get(uri).timeout(UPLOAD_TIMEOUT).send().await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = resp.error_for_status()?.bytes().await?;
        Ok::<_, reqwest::Error>(Some(bytes))
    }
    .await;
    let bytes = match restored {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return,
        Err(e) => {
            logs.app(LogType::Out, &format!("Buildpack cache not restored: {e}"));
            return;
        }
    };
    let (tgz, dir) = (tgz.to_path_buf(), dir.to_path_buf());
    let size = bytes.len() as u64;
    let unpacked = tokio::task::spawn_blocking(move || {
        std::fs::write(&tgz, &bytes).map_err(|e| e.to_string())?;
        wf_buildpacks::unpack_cache(&tgz, &dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            e.to_string()
        })
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match unpacked {
        Ok(()) => logs.app(
            LogType::Out,
            &format!("Restored buildpack cache ({})", human_size(size)),
        ),
        Err(e) => logs.app(LogType::Out, &format!("Buildpack cache not restored: {e}")),
    }
}

/// Packs `dir` and uploads it as the app's new buildpack cache; failing that only
/// costs the next staging its cache.
async fn save_cache(cell: &Cell, uri: &str, dir: &Path, tgz: &Path, logs: &InstanceLogs) {
    let (source, target) = (dir.to_path_buf(), tgz.to_path_buf());
    let packed = tokio::task::spawn_blocking(move || wf_buildpacks::pack_cache(&source, &target))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    let size = match packed {
        Ok(size) if size <= MAX_CACHE_BYTES => size,
        Ok(size) => {
            logs.app(
                LogType::Out,
                &format!(
                    "Buildpack cache not saved: {} is over the {} limit",
                    human_size(size),
                    human_size(MAX_CACHE_BYTES)
                ),
            );
            return;
        }
        Err(e) => {
            logs.app(LogType::Out, &format!("Buildpack cache not saved: {e}"));
            return;
        }
    };
    match upload(cell, uri, tgz, "application/gzip").await {
        Ok(_) => logs.app(
            LogType::Out,
            &format!("Uploaded build artifacts cache ({})", human_size(size)),
        ),
        Err(e) => logs.app(LogType::Out, &format!("Buildpack cache not saved: {e}")),
    }
}

/// Why [`upload`] failed: reading the file, or sending it.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Send(reqwest::Error),
}

/// Streams the file at `path` to `uri` with an HTTP PUT; returns its size.
async fn upload(
    cell: &Cell,
    uri: &str,
    path: &Path,
    content_type: &str,
) -> Result<u64, UploadError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(UploadError::Read)?;
    let size = file.metadata().await.map_err(UploadError::Read)?.len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    cell.http
        .put(uri)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .timeout(UPLOAD_TIMEOUT)
        .body(body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(UploadError::Send)?;
    Ok(size)
}

/// Sizes as CF's staging logs print them (`1.2M`, `340K`, `12B`).
fn human_size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b >= K * K {
        format!("{:.1}M", b / (K * K))
    } else if b >= K {
        format!("{:.0}K", b / K)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_cf_does() {
        assert_eq!(human_size(12), "12B");
        assert_eq!(human_size(340 * 1024), "340K");
        assert_eq!(human_size(2_621_440), "2.5M");
    }
}
