//! Staging: a build becomes a BBS Task in domain `cf-app-staging` (task guid = build
//! guid) that a cell runs: it downloads the package, runs the buildpacks (built-in ones
//! by name, custom ones from their zips) with the app's buildpack cache, and uploads the
//! droplet and the new cache, all through signed URLs. [`run`] watches the BBS for completed staging
//! tasks (events, plus a rescan every second for events it missed), records the
//! outcome on the build and its droplet, and deletes the task.

use std::collections::BTreeMap;

use wf_bbs::{
    BuildpackRef, EnvVar, StageAction, Task, TaskAction, TaskDefinition, TaskFilter, TaskState,
    CF_STAGING_DOMAIN,
};

use crate::api::isolation_segments;
use crate::blobstore::BlobError;
use crate::db::{self, App, Arg, Build, BuildState, DropletState, Filter};
use crate::error::ApiError;
use crate::signed_urls::{
    self, buildpack_cache_download_path, buildpack_cache_upload_path, buildpack_download_path,
    droplet_upload_path, package_download_path,
};
use crate::task_follower::{TaskFollower, LOST_TASK_GRACE_SECS};
use crate::Controller;

/// How long a staging task's package and upload URLs stay valid.
const STAGING_URL_VALIDITY_SECS: i64 = 24 * 3600;

/// The buildpacks of `build`'s staging (see [`crate::api::buildpacks_for_staging`]) as
/// the cell gets them, and whether detect is skipped.
async fn buildpack_refs(
    controller: &Controller,
    build: &Build,
    expires: i64,
) -> Result<(Vec<BuildpackRef>, bool), ApiError> {
    let (buildpacks, skip_detect) =
        crate::api::buildpacks_for_staging(controller, &build.buildpacks).await?;
    let refs = buildpacks
        .into_iter()
        .map(|buildpack| {
            let url = (!buildpack.is_built_in()).then(|| {
                controller
                    .signer
                    .url(&buildpack_download_path(&buildpack.guid), expires)
            });
            BuildpackRef {
                name: buildpack.name,
                url,
                sha256: buildpack.checksum,
            }
        })
        .collect();
    Ok((refs, skip_detect))
}

/// Desires the staging task of `build`; if its buildpacks cannot run (changed since the
/// build was made) or the BBS refuses it, the build fails.
pub async fn start(controller: &Controller, app: &App, build: &Build) -> Result<(), ApiError> {
    let expires = signed_urls::now_unix() + STAGING_URL_VALIDITY_SECS;
    let (buildpacks, skip_detect) = match buildpack_refs(controller, build, expires).await {
        Ok(refs) => refs,
        Err(ApiError::Unprocessable(reason)) => {
            fail(controller, build, &format!("StagingError - {reason}")).await?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut env = vec![
        EnvVar {
            name: "CF_APP_GUID".into(),
            value: app.guid.clone(),
        },
        EnvVar {
            name: "CF_BUILD_GUID".into(),
            value: build.guid.clone(),
        },
        EnvVar {
            name: "CF_STACK".into(),
            value: crate::api::STACK.into(),
        },
    ];
    let mut vars = crate::api::env_group_variables(controller, "staging").await?;
    vars.extend(app.environment_variables.clone());
    for (name, value) in &vars {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        env.push(EnvVar {
            name: name.clone(),
            value,
        });
    }
    // As in CF, staging runs on the cells of the app's isolation segment too.
    let segment = isolation_segments::for_space(controller, &app.space_guid).await?;
    let definition = TaskDefinition {
        memory_mb: u32::try_from(build.staging_memory_in_mb).unwrap_or(1024),
        disk_mb: u32::try_from(build.staging_disk_in_mb).unwrap_or(4096),
        action: TaskAction::Stage(StageAction {
            package_uri: controller
                .signer
                .url(&package_download_path(&build.package_guid), expires),
            droplet_upload_uri: controller
                .signer
                .url(&droplet_upload_path(&build.droplet_guid), expires),
            buildpacks,
            skip_detect,
            buildpack_cache_download_uri: Some(
                controller
                    .signer
                    .url(&buildpack_cache_download_path(&app.guid), expires),
            ),
            buildpack_cache_upload_uri: Some(
                controller
                    .signer
                    .url(&buildpack_cache_upload_path(&app.guid), expires),
            ),
            env,
        }),
        log_guid: app.guid.clone(),
        log_source: "STG".into(),
        annotation: serde_json::json!({
            "app_guid": app.guid,
            "build_guid": build.guid,
            "droplet_guid": build.droplet_guid,
        })
        .to_string(),
        placement_tags: isolation_segments::placement_tags(segment.as_ref()),
    };
    if let Err(e) = controller
        .bbs
        .desire_task(&build.guid, CF_STAGING_DOMAIN, definition)
        .await
    {
        tracing::warn!(build = %build.guid, error = %e, "cannot desire the staging task");
        fail(
            controller,
            build,
            &format!("StagingError - staging could not be requested: {e}"),
        )
        .await?;
    }
    Ok(())
}

/// Marks the build and its droplet FAILED with `error` (a `<CF name> - <reason>`).
async fn fail(controller: &Controller, build: &Build, error: &str) -> Result<(), sqlx::Error> {
    let failed = controller
        .db
        .exec(
            "UPDATE builds SET state = $1, error = $2, updated_at = $3 WHERE guid = $4 AND state = $5",
            vec![
                BuildState::Failed.into(),
                error.into(),
                db::now().into(),
                build.guid.clone().into(),
                BuildState::Staging.into(),
            ],
        )
        .await?;
    if failed > 0 {
        controller
            .db
            .update(
                "droplets",
                &build.droplet_guid,
                vec![
                    ("state", DropletState::Failed.into()),
                    ("error", error.into()),
                ],
            )
            .await?;
        let _ = controller
            .blobs
            .delete(&controller.blobs.droplet_key(&build.droplet_guid))
            .await;
        controller.emit_log(&build.app_guid, "STG", &format!("Staging failed: {error}"));
    }
    Ok(())
}

/// The build error of a failed staging task: the cell reports `<CF name> - <reason>`.
fn build_error(failure_reason: &str) -> String {
    let reason = failure_reason.trim();
    if reason.contains(" - ") {
        reason.to_string()
    } else if reason.is_empty() {
        "StagingError - staging failed".to_string()
    } else {
        format!("StagingError - {reason}")
    }
}

/// The droplet's process types from the task result (the droplet metadata JSON).
fn process_types(result: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let metadata: serde_json::Value = serde_json::from_str(result).unwrap_or_default();
    let mut types: BTreeMap<String, String> = metadata
        .get("process_types")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    types.entry("web".to_string()).or_default();
    let buildpacks = metadata
        .get("buildpack")
        .and_then(|b| b.as_str())
        .map(|b| vec![b.to_string()])
        .unwrap_or_default();
    (types, buildpacks)
}

/// The sha256 of the droplet blob `guid`, or `None` when it cannot be read.
async fn droplet_sha256(controller: &Controller, guid: &str) -> Option<String> {
    match controller
        .blobs
        .sha256(&controller.blobs.droplet_key(guid))
        .await
    {
        Ok(checksum) => Some(checksum),
        Err(BlobError::NotFound(_)) => None,
        Err(e) => {
            tracing::warn!(droplet = %guid, error = %e, "cannot read the droplet blob");
            None
        }
    }
}

/// Records a completed staging task on its build, then deletes the task.
async fn complete(controller: &Controller, task: &Task) -> Result<(), sqlx::Error> {
    if let Some(build) = controller.db.get::<Build>(&task.task_guid).await? {
        if build.state == BuildState::Staging {
            if task.failed {
                fail(controller, &build, &build_error(&task.failure_reason)).await?;
            } else {
                succeed(controller, &build, &task.result).await?;
            }
        }
    }
    if task.state == TaskState::Completed {
        if let Err(e) = controller.bbs.resolving_task(&task.task_guid).await {
            tracing::debug!(task = %task.task_guid, error = %e, "cannot resolve the staging task");
        }
    }
    if let Err(e) = controller.bbs.delete_task(&task.task_guid).await {
        tracing::debug!(task = %task.task_guid, error = %e, "cannot delete the staging task");
    }
    Ok(())
}

async fn succeed(controller: &Controller, build: &Build, result: &str) -> Result<(), sqlx::Error> {
    let Some(droplet) = controller
        .db
        .get::<db::Droplet>(&build.droplet_guid)
        .await?
    else {
        return fail(
            controller,
            build,
            "StagingError - the droplet record is gone",
        )
        .await;
    };
    let checksum = match droplet.checksum {
        Some(checksum) => Some(checksum),
        None => droplet_sha256(controller, &droplet.guid).await,
    };
    let Some(checksum) = checksum else {
        return fail(
            controller,
            build,
            "StagingError - the cell did not upload the droplet",
        )
        .await;
    };
    let (types, buildpacks) = process_types(result);
    record_droplet(controller, &droplet.guid, checksum, &types, &buildpacks).await?;
    controller
        .db
        .exec(
            "UPDATE builds SET state = $1, updated_at = $2 WHERE guid = $3 AND state = $4",
            vec![
                BuildState::Staged.into(),
                db::now().into(),
                build.guid.clone().into(),
                BuildState::Staging.into(),
            ],
        )
        .await?;
    controller.emit_log(&build.app_guid, "STG", "Staging complete");
    Ok(())
}

/// Marks droplet `guid` STAGED: its blob's sha256, process types and buildpacks (from
/// a staging, or an uploaded droplet's metadata).
pub async fn record_droplet(
    controller: &Controller,
    guid: &str,
    checksum: String,
    process_types: &BTreeMap<String, String>,
    buildpacks: &[String],
) -> Result<(), sqlx::Error> {
    controller
        .db
        .update(
            "droplets",
            guid,
            vec![
                ("state", DropletState::Staged.into()),
                ("checksum", checksum.into()),
                ("process_types", db::to_json_text(process_types)),
                ("buildpacks", db::to_json_text(&buildpacks)),
            ],
        )
        .await?;
    Ok(())
}

/// Completes every finished staging task, and fails STAGING builds whose task is lost.
async fn rescan(controller: &Controller) -> Result<(), ApiError> {
    let filter = TaskFilter {
        domain: Some(CF_STAGING_DOMAIN.to_string()),
        ..Default::default()
    };
    let tasks = controller.bbs.tasks(&filter).await?;
    for task in tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Completed | TaskState::Resolving))
    {
        complete(controller, task).await?;
    }
    let staging: Vec<Build> = controller
        .db
        .find(Filter::new().eq("state", Arg::from(BuildState::Staging)))
        .await?;
    let now = signed_urls::now_unix();
    for build in staging {
        let known = tasks.iter().any(|t| t.task_guid == build.guid);
        if !known && now - db::unix_seconds(&build.created_at) > LOST_TASK_GRACE_SECS {
            fail(
                controller,
                &build,
                "StagingError - the staging task was lost",
            )
            .await?;
        }
    }
    Ok(())
}

/// Staging: a build follows its staging task in `cf-app-staging`.
pub(crate) struct Staging;

impl TaskFollower for Staging {
    const DOMAIN: &'static str = CF_STAGING_DOMAIN;
    const WHAT: &'static str = "staging";

    async fn rescan(controller: &Controller) -> Result<(), ApiError> {
        rescan(controller).await
    }

    async fn changed(controller: &Controller, task: &Task) -> Result<(), sqlx::Error> {
        if task.state == TaskState::Completed {
            complete(controller, task).await
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_become_build_errors() {
        assert_eq!(
            build_error("StagingError - app.wasm is not a valid WebAssembly module"),
            "StagingError - app.wasm is not a valid WebAssembly module"
        );
        assert_eq!(
            build_error("task was cancelled"),
            "StagingError - task was cancelled"
        );
        assert_eq!(build_error(""), "StagingError - staging failed");
    }

    #[test]
    fn process_types_come_from_the_droplet_metadata() {
        let result = r#"{"kind":"server","wasm":"app.wasm","wasm_sha256":"ab","buildpack":"wasm_buildpack","process_types":{"web":"app.wasm"}}"#;
        let (types, buildpacks) = process_types(result);
        assert_eq!(types.get("web").map(String::as_str), Some("app.wasm"));
        assert_eq!(buildpacks, vec!["wasm_buildpack".to_string()]);
        let (types, buildpacks) = process_types("not json");
        assert_eq!(types.get("web").map(String::as_str), Some(""));
        assert!(buildpacks.is_empty());
    }
}
