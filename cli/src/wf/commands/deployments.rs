//! Deployments and revisions, with cf's names and output: `wf revisions`, `wf rollback`
//! (a rolling deployment of an older revision) and `wf continue-deployment` (a paused
//! canary goes on); the deployment `wf push --strategy rolling|canary` creates and
//! follows; and the active deployment `wf app` shows.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::apps::summary;
use super::{app_by_name, confirm, space_target, text};
use crate::wf::client::{Client, Poll};
use crate::wf::output::table;
use crate::wf::Error;

/// How long a deployment (or a canary's first instance) may take.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The deployment and revision commands.
#[derive(Debug, clap::Subcommand)]
pub enum DeploymentCommand {
    /// List an app's revisions
    Revisions { name: String },
    /// Roll an app back to one of its revisions, without downtime
    Rollback {
        name: String,
        /// The revision to roll back to
        #[arg(long = "version")]
        version: u64,
        /// Roll back without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Promote an app's paused canary deployment: it goes on as a rolling deployment
    ContinueDeployment {
        name: String,
        /// Do not wait for the deployment to finish
        #[arg(long)]
        no_wait: bool,
    },
}

pub fn run(c: &mut Client, command: DeploymentCommand) -> Result<(), Error> {
    match command {
        DeploymentCommand::Revisions { name } => revisions(c, &name),
        DeploymentCommand::Rollback {
            name,
            version,
            force,
        } => rollback(c, &name, version, force),
        DeploymentCommand::ContinueDeployment { name, no_wait } => {
            continue_deployment(c, &name, no_wait)
        }
    }
}

/// Creates a deployment of the app `app_guid` with `request` (a droplet or revision,
/// the strategy and options added by the caller) and follows it: to its end, or, for a
/// canary, until it pauses.
pub(crate) fn deploy(
    client: &mut Client,
    app_guid: &str,
    name: &str,
    mut request: Value,
) -> Result<(), Error> {
    request["relationships"] = json!({"app": {"data": {"guid": app_guid}}});
    println!("Creating deployment for app {name}...\n");
    let deployment = client.post("/v3/deployments", &request)?;
    let guid = text(&deployment, "guid").to_string();
    if text(&deployment, "strategy") == "canary" {
        println!("Waiting for app {name} to deploy its canary instance...\n");
    } else {
        println!("Waiting for app {name} to deploy...\n");
    }
    wait(client, &guid, name)
}

/// Follows the deployment `guid` until it is DEPLOYED (an error if it ended otherwise)
/// or PAUSED.
fn wait(client: &mut Client, guid: &str, name: &str) -> Result<(), Error> {
    let path = format!("/v3/deployments/{guid}");
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    let mut poll = Poll::new();
    loop {
        let deployment = client.get(&path)?;
        let reason = deployment["status"]["reason"].as_str();
        if deployment["status"]["value"] == "FINALIZED" {
            return match reason {
                Some("DEPLOYED") => Ok(()),
                reason => Err(Error::Failed(format!(
                    "The deployment of app {name} ended {}.",
                    reason.unwrap_or("without a reason")
                ))),
            };
        }
        if reason == Some("PAUSED") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "Timed out after {} s waiting for app {name} to deploy.",
                DEPLOY_TIMEOUT.as_secs()
            )));
        }
        poll.wait();
    }
}

/// The app's active deployment, if any.
fn active_deployment(client: &mut Client, app_guid: &str) -> Result<Option<Value>, Error> {
    let active = client.list(&format!(
        "/v3/deployments?app_guids={app_guid}&status_values=ACTIVE"
    ))?;
    Ok(active.into_iter().next())
}

/// What `wf app` shows of an active deployment, as cf does (nothing without one).
pub(crate) fn active_deployment_lines(
    client: &mut Client,
    app_guid: &str,
    name: &str,
) -> Result<String, Error> {
    let Some(deployment) = active_deployment(client, app_guid)? else {
        return Ok(String::new());
    };
    let reason = deployment["status"]["reason"].as_str().unwrap_or_default();
    let mut out = format!(
        "\nActive deployment with status {reason} (since {})\n",
        deployment["status"]["details"]["last_status_change"]
            .as_str()
            .unwrap_or_default()
    );
    out.push_str(&crate::wf::output::key_values(&[
        ("strategy", text(&deployment, "strategy").to_string()),
        (
            "max-in-flight",
            deployment["options"]["max_in_flight"].to_string(),
        ),
    ]));
    if reason == "PAUSED" {
        out.push_str(&format!(
            "Please run `wf continue-deployment {name}` to promote the canary deployment, \
             or `wf cancel-deployment {name}` to rollback to the previous version.\n"
        ));
    }
    Ok(out)
}

/// `wf revisions APP`: newest first, the deployed ones marked.
fn revisions(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Getting revisions for app {name} in {}...\n",
        target.describe()
    );
    let app = app_by_name(client, &target, name)?;
    let guid = text(&app, "guid").to_string();
    let revisions = client.list(&format!("/v3/apps/{guid}/revisions?order_by=-created_at"))?;
    let deployed: Vec<String> = client
        .list(&format!("/v3/apps/{guid}/revisions/deployed"))?
        .iter()
        .map(|r| text(r, "guid").to_string())
        .collect();
    if deployed.len() > 1 {
        println!(
            "Info: this app is in the middle of a deployment. More than one revision is deployed.\n"
        );
    }
    if revisions.is_empty() {
        println!("No revisions found");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            let mut version = r["version"].to_string();
            if deployed.iter().any(|d| d == text(r, "guid")) {
                version.push_str("(deployed)");
            }
            vec![
                version,
                text(r, "description").to_string(),
                r["deployable"].to_string(),
                text(r, "guid").to_string(),
                text(r, "created_at").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "revision",
                "description",
                "deployable",
                "revision guid",
                "created at"
            ],
            &rows
        )
    );
    Ok(())
}

/// `wf rollback APP --version N [-f]`: a rolling deployment of revision N.
fn rollback(client: &mut Client, name: &str, version: u64, force: bool) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    let guid = text(&app, "guid").to_string();
    let found = client.list(&format!("/v3/apps/{guid}/revisions?versions={version}"))?;
    let Some(revision) = found.first() else {
        return Err(Error::Failed(format!("Revision '{version}' not found")));
    };
    if !force
        && !confirm(&format!(
            "Rolling '{name}' back to revision '{version}' will create a new revision. \
             The new revision will use the settings from revision '{version}'.\n\
             Are you sure you want to continue?"
        ))
    {
        println!("App '{name}' has not been rolled back to revision '{version}'.");
        return Ok(());
    }
    println!(
        "Rolling back to revision {version} for app {name} in {}...\n",
        target.describe()
    );
    let request = json!({"revision": {"guid": text(revision, "guid")}, "strategy": "rolling"});
    deploy(client, &guid, name, request)?;
    println!("OK");
    Ok(())
}

/// `wf continue-deployment APP`: the paused canary goes on, followed to its end.
fn continue_deployment(client: &mut Client, name: &str, no_wait: bool) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Continuing deployment for app {name} in {}...\n",
        target.describe()
    );
    let app = app_by_name(client, &target, name)?;
    let guid = text(&app, "guid").to_string();
    let Some(deployment) = active_deployment(client, &guid)? else {
        return Err(Error::Failed(format!(
            "No active deployment found for app {name}."
        )));
    };
    let deployment_guid = text(&deployment, "guid").to_string();
    client.post(
        &format!("/v3/deployments/{deployment_guid}/actions/continue"),
        &json!({}),
    )?;
    if !no_wait {
        println!("Waiting for app {name} to deploy...\n");
        wait(client, &deployment_guid, name)?;
        let app = client.get(&format!("/v3/apps/{guid}"))?;
        print!("{}", summary(client, &app)?);
    }
    println!("\nTIP: Run 'wf app {name}' to view app status.");
    Ok(())
}
