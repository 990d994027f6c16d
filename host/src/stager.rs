//! Staging on the cell: download the app package, run the buildpacks (on a blocking
//! thread, streaming their output as STG logs), and upload the droplet.

use std::sync::Arc;
use std::time::Duration;

use wf_bbs::StageAction;
use wf_buildpacks::StagingError;
use wf_loggregator::LogType;

use crate::cell::Cell;
use crate::instance::InstanceLogs;

/// Longest a droplet upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Stages the app; the result is the droplet's metadata (JSON), the error the build's
/// failure reason, `<CF error name> - <message>`.
pub async fn stage(
    cell: &Arc<Cell>,
    task_guid: &str,
    action: &StageAction,
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

    let buildpacks = action.buildpacks.clone();
    let work_dir = work.path().join("build");
    let build_logs = logs.clone();
    let staged = tokio::task::spawn_blocking(move || {
        wf_buildpacks::stage(&package, &work_dir, &buildpacks, &mut |line| {
            build_logs.app(LogType::Out, line)
        })
    })
    .await
    .map_err(|e| failed(format!("the buildpack crashed: {e}")))?
    .map_err(|e: StagingError| format!("{} - {e}", e.cf_name()))?;

    logs.app(LogType::Out, "Uploading droplet...");
    let file = tokio::fs::File::open(&staged.droplet)
        .await
        .map_err(|e| failed(format!("reading the droplet: {e}")))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    cell.http
        .put(&action.droplet_upload_uri)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .timeout(UPLOAD_TIMEOUT)
        .body(body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed(format!("failed to upload the droplet: {e}")))?;
    logs.app(
        LogType::Out,
        &format!("Uploaded droplet ({})", human_size(size)),
    );
    logs.app(LogType::Out, "Uploading complete");

    serde_json::to_string(&staged.metadata)
        .map_err(|e| failed(format!("encoding the droplet metadata: {e}")))
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
