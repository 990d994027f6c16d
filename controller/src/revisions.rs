//! App revisions (CF's `revisions_enabled`, on for every app): a revision records what
//! a started app runs (its droplet, its own environment variables, encrypted, and each
//! process type's custom start command), numbered 1, 2, ... per app. A new one is
//! recorded when the app starts, restarts or is deployed with something that differs
//! from its latest revision, described with CF's reasons ("New droplet deployed.",
//! ...); a rollback re-applies an older revision as a new one. Each process records the
//! revision its current version runs, which is how `/revisions/deployed` is answered.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::db::{
    self, App, AppState, DeploymentState, Droplet, DropletState, Filter, Process, Revision,
};
use crate::error::ApiError;
use crate::service_operations::{decrypt_object, encrypt_json};
use crate::Controller;

/// How many times a revision number taken by a concurrent request is tried again.
const VERSION_ATTEMPTS: usize = 5;

/// The first revision's description.
const INITIAL: &str = "Initial revision.";

/// What an app runs, as a revision records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Runs {
    pub droplet_guid: String,
    pub environment_variables: Map<String, Value>,
    pub commands: BTreeMap<String, Option<String>>,
}

/// CF's reasons for a revision that runs `next` after `latest`, sorted as CF sorts them.
pub fn reasons(latest: &Runs, next: &Runs) -> Vec<String> {
    let mut reasons = Vec::new();
    if latest.droplet_guid != next.droplet_guid {
        reasons.push("New droplet deployed.".to_string());
    }
    if latest.environment_variables != next.environment_variables {
        reasons.push("New environment variables deployed.".to_string());
    }
    let types: std::collections::BTreeSet<&String> =
        latest.commands.keys().chain(next.commands.keys()).collect();
    for process_type in types {
        let reason = match (
            latest.commands.get(process_type),
            next.commands.get(process_type),
        ) {
            (None, Some(_)) => format!("New process type '{process_type}' added."),
            (Some(_), None) => format!("Process type '{process_type}' removed."),
            (Some(before), Some(after)) if before == after => continue,
            (Some(None), Some(Some(_))) => {
                format!("Custom start command added for '{process_type}' process.")
            }
            (Some(Some(_)), Some(None)) => {
                format!("Custom start command removed for '{process_type}' process.")
            }
            _ => format!("Custom start command updated for '{process_type}' process."),
        };
        reasons.push(reason);
    }
    reasons.sort();
    reasons
}

/// What `app` (with its `processes`) runs now, if it has a current droplet.
fn runs_of(app: &App, processes: &[Process]) -> Option<Runs> {
    Some(Runs {
        droplet_guid: app.droplet_guid.clone()?,
        environment_variables: app.environment_variables.clone(),
        commands: processes
            .iter()
            .map(|p| (p.process_type.clone(), p.command.clone()))
            .collect(),
    })
}

/// What `revision` records, its environment decrypted.
pub fn runs_of_revision(controller: &Controller, revision: &Revision) -> Result<Runs, ApiError> {
    Ok(Runs {
        droplet_guid: revision.droplet_guid.clone(),
        environment_variables: decrypt_object(controller, Some(&revision.environment_variables))?
            .unwrap_or_default(),
        commands: revision.commands.clone(),
    })
}

/// The app's newest revision.
pub async fn latest(controller: &Controller, app_guid: &str) -> Result<Option<Revision>, ApiError> {
    let filter = Filter::new().eq("app_guid", app_guid).clause(
        "version = (SELECT MAX(version) FROM revisions WHERE app_guid = ?)",
        vec![app_guid.into()],
    );
    Ok(controller.db.find::<Revision>(filter).await?.pop())
}

/// The revision the process `process_guid` runs, if any.
pub async fn of_process(
    controller: &Controller,
    process_guid: &str,
) -> Result<Option<Revision>, ApiError> {
    let filter = Filter::new().clause(
        "guid IN (SELECT revision_guid FROM processes WHERE guid = ?)",
        vec![process_guid.into()],
    );
    Ok(controller.db.find::<Revision>(filter).await?.pop())
}

/// The revisions `app` runs now: those of its processes' versions and, while a
/// deployment is under way, the one its old version runs. None while it is stopped.
pub fn deployed(app: &App) -> Filter {
    if app.state != AppState::Started {
        return Filter::new().clause("1 = 0", vec![]);
    }
    let active: Vec<db::Arg> = DeploymentState::ACTIVE
        .iter()
        .map(|s| (*s).into())
        .collect();
    let mut args = vec![app.guid.clone().into(), app.guid.clone().into()];
    args.extend(active);
    Filter::new().eq("app_guid", &app.guid).clause(
        "(guid IN (SELECT revision_guid FROM processes WHERE app_guid = ?) \
         OR guid IN (SELECT previous_revision_guid FROM deployments \
         WHERE app_guid = ? AND state IN (?, ?, ?)))",
        args,
    )
}

/// Whether each of `revisions` may be deployed: its droplet is still there, staged.
pub async fn deployable(
    controller: &Controller,
    revisions: &[Revision],
) -> Result<BTreeMap<String, bool>, ApiError> {
    let droplet_guids: Vec<String> = revisions.iter().map(|r| r.droplet_guid.clone()).collect();
    let staged: std::collections::BTreeSet<String> = controller
        .db
        .find::<Droplet>(Filter::new().any_of("guid", &droplet_guids))
        .await?
        .into_iter()
        .filter(|d| d.state == DropletState::Staged)
        .map(|d| d.guid)
        .collect();
    Ok(revisions
        .iter()
        .map(|r| (r.guid.clone(), staged.contains(&r.droplet_guid)))
        .collect())
}

/// Records what the app `app_guid` runs as a revision, if it is started with a
/// droplet: a new one when that differs from its latest revision (or it has none),
/// else the latest. Its processes' current versions are marked as running it.
pub async fn record(controller: &Controller, app_guid: &str) -> Result<Option<Revision>, ApiError> {
    let Some(app) = controller.db.get::<App>(app_guid).await? else {
        return Ok(None);
    };
    if app.state != AppState::Started {
        return Ok(None);
    }
    let processes = processes_of(controller, app_guid).await?;
    let Some(runs) = runs_of(&app, &processes) else {
        return Ok(None);
    };
    let revision = match latest(controller, app_guid).await? {
        None => create(controller, app_guid, &runs, INITIAL.to_string()).await?,
        Some(latest) => {
            let reasons = reasons(&runs_of_revision(controller, &latest)?, &runs);
            if reasons.is_empty() {
                latest
            } else {
                create(controller, app_guid, &runs, reasons.join(" ")).await?
            }
        }
    };
    mark_running(controller, &processes, Some(&revision.guid)).await?;
    Ok(Some(revision))
}

/// Gives the app `app` what `target` (one of its revisions) records (droplet,
/// environment variables, start commands) and records that as a new revision, "Rolled
/// back to revision N.". The droplet must still be there and something must change
/// (CF's errors otherwise). The caller restarts or deploys the app.
pub async fn roll_back(
    controller: &Controller,
    app: &App,
    target: &Revision,
) -> Result<Revision, ApiError> {
    let droplet = controller.db.get::<Droplet>(&target.droplet_guid).await?;
    if !droplet.is_some_and(|d| d.state == DropletState::Staged) {
        return Err(ApiError::unprocessable(
            "Unable to deploy this revision, the droplet for this revision no longer exists.",
        ));
    }
    let runs = runs_of_revision(controller, target)?;
    let mut reasons = match latest(controller, &app.guid).await? {
        Some(latest) => reasons(&runs_of_revision(controller, &latest)?, &runs),
        None => vec![INITIAL.to_string()],
    };
    if reasons.is_empty() {
        return Err(ApiError::unprocessable(
            "Unable to rollback. The code and configuration you are rolling back to is the same as the deployed revision.",
        ));
    }
    reasons.push(format!("Rolled back to revision {}.", target.version));
    controller
        .db
        .update(
            "apps",
            &app.guid,
            vec![
                ("droplet_guid", runs.droplet_guid.clone().into()),
                (
                    "environment_variables",
                    db::to_json_text(&runs.environment_variables),
                ),
            ],
        )
        .await?;
    let processes = processes_of(controller, &app.guid).await?;
    for process in &processes {
        let command = runs.commands.get(&process.process_type).cloned().flatten();
        if command != process.command {
            controller
                .db
                .update(
                    "processes",
                    &process.guid,
                    vec![("command", command.into())],
                )
                .await?;
        }
    }
    let revision = create(controller, &app.guid, &runs, reasons.join(" ")).await?;
    mark_running(controller, &processes, Some(&revision.guid)).await?;
    Ok(revision)
}

/// Marks the processes of the app `app_guid` as running `revision_guid` (a cancelled
/// deployment's app goes back to the revision it ran).
pub async fn set_running(
    controller: &Controller,
    app_guid: &str,
    revision_guid: Option<&str>,
) -> Result<(), ApiError> {
    let processes = processes_of(controller, app_guid).await?;
    mark_running(controller, &processes, revision_guid).await
}

async fn processes_of(controller: &Controller, app_guid: &str) -> Result<Vec<Process>, ApiError> {
    Ok(controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", app_guid))
        .await?)
}

async fn mark_running(
    controller: &Controller,
    processes: &[Process],
    revision_guid: Option<&str>,
) -> Result<(), ApiError> {
    for process in processes {
        let revision = revision_guid.map(str::to_string);
        controller
            .db
            .update(
                "processes",
                &process.guid,
                vec![("revision_guid", revision.into())],
            )
            .await?;
    }
    Ok(())
}

/// Inserts the app's next revision; a number taken meanwhile by a concurrent request
/// is followed by the next one.
async fn create(
    controller: &Controller,
    app_guid: &str,
    runs: &Runs,
    description: String,
) -> Result<Revision, ApiError> {
    let environment = encrypt_json(
        controller,
        &Value::Object(runs.environment_variables.clone()),
    )?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let version = latest(controller, app_guid)
            .await?
            .map_or(1, |r| r.version + 1);
        let guid = db::new_guid();
        let now = db::now();
        let inserted = controller
            .db
            .insert(
                "revisions",
                vec![
                    ("guid", guid.clone().into()),
                    ("app_guid", app_guid.into()),
                    ("version", db::Arg::Int(version)),
                    ("droplet_guid", runs.droplet_guid.clone().into()),
                    ("environment_variables", environment.clone()),
                    ("commands", db::to_json_text(&runs.commands)),
                    ("description", description.clone().into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await;
        match inserted {
            Err(e) if db::is_unique_violation(&e) && attempt < VERSION_ATTEMPTS => continue,
            other => other?,
        }
        return controller
            .db
            .get::<Revision>(&guid)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("revision {guid} vanished")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(droplet: &str, env: &[(&str, &str)], commands: &[(&str, Option<&str>)]) -> Runs {
        Runs {
            droplet_guid: droplet.into(),
            environment_variables: env
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect(),
            commands: commands
                .iter()
                .map(|(t, c)| (t.to_string(), c.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn reasons_are_cfs_sorted() {
        let before = runs("d1", &[("A", "1")], &[("web", None), ("worker", Some("w"))]);
        assert!(reasons(&before, &before).is_empty());
        let after = runs("d2", &[("A", "2")], &[("web", Some("x")), ("clock", None)]);
        assert_eq!(
            reasons(&before, &after),
            [
                "Custom start command added for 'web' process.",
                "New droplet deployed.",
                "New environment variables deployed.",
                "New process type 'clock' added.",
                "Process type 'worker' removed.",
            ]
        );
        let changed = runs("d1", &[("A", "1")], &[("web", None), ("worker", Some("v"))]);
        assert_eq!(
            reasons(&before, &changed),
            ["Custom start command updated for 'worker' process."]
        );
        let removed = runs("d1", &[("A", "1")], &[("web", None), ("worker", None)]);
        assert_eq!(
            reasons(&before, &removed),
            ["Custom start command removed for 'worker' process."]
        );
    }
}
