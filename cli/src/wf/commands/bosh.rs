//! `wf bosh ...`: the bosh CLI's commands against a Wasmfoundry director (`wfd
//! director`), with its environment variables (`BOSH_ENVIRONMENT`, `BOSH_CLIENT`,
//! `BOSH_CLIENT_SECRET`, `BOSH_DEPLOYMENT`). Changes run as director tasks whose log
//! is printed as it grows; a failed task fails the command.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::Value;
use wf_bosh::director::client::{ClientError, DirectorClient};

use crate::wf::output::table;
use crate::wf::Error;

#[derive(Debug, clap::Args)]
pub struct BoshArgs {
    /// The director's URL
    #[arg(
        short = 'e',
        long = "environment",
        env = "BOSH_ENVIRONMENT",
        global = true
    )]
    pub environment: Option<String>,
    /// The director user
    #[arg(long, env = "BOSH_CLIENT", default_value = "admin", global = true)]
    pub client: String,
    /// The director user's password
    #[arg(
        long,
        env = "BOSH_CLIENT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub client_secret: Option<String>,
    /// The deployment to act on
    #[arg(short = 'd', long, env = "BOSH_DEPLOYMENT", global = true)]
    pub deployment: Option<String>,
    #[command(subcommand)]
    pub command: BoshCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BoshCommand {
    /// Build a release tarball from a release directory (jobs/<job>/spec and templates)
    /// with this machine's `wfd` as its package
    CreateRelease(CreateReleaseArgs),
    #[command(flatten)]
    Director(DirectorCommand),
}

#[derive(Debug, clap::Args)]
pub struct CreateReleaseArgs {
    dir: PathBuf,
    /// Release name (default: config/final.yml's)
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "0+dev.1")]
    version: String,
    /// The wfd binary to package (default: the one next to this wf)
    #[arg(long)]
    wfd: Option<PathBuf>,
    /// Where the tarball goes (default: DIR/dev_releases)
    #[arg(long)]
    tarball_dir: Option<PathBuf>,
}

/// The commands that talk to the director.
#[derive(Debug, clap::Subcommand)]
pub enum DirectorCommand {
    /// Upload a release tarball
    UploadRelease { tarball: PathBuf },
    /// Upload a stemcell tarball (stemcell.MF and image)
    UploadStemcell { tarball: PathBuf },
    /// Update the cloud config
    UpdateCloudConfig { file: PathBuf },
    /// Show the current cloud config
    CloudConfig,
    /// List releases
    Releases,
    /// List stemcells
    Stemcells,
    /// Deploy a manifest (rolling update with canaries)
    Deploy {
        manifest: PathBuf,
        /// Recreate every VM
        #[arg(long)]
        recreate: bool,
    },
    /// List deployments
    Deployments,
    /// Delete the deployment, its VMs and disks
    DeleteDeployment,
    /// List the deployment's instances and their process state
    #[command(visible_alias = "is")]
    Instances,
    /// List the deployment's VMs
    Vms,
    /// List recent tasks
    Tasks {
        /// How many
        #[arg(short = 'r', long, default_value_t = 30)]
        recent: i64,
    },
    /// Show a task's log
    Task { id: i64 },
    /// Recreate instances' VMs: GROUP, GROUP/ID or GROUP/INDEX, or all
    Recreate { instance: Option<String> },
    /// Restart instances' jobs
    Restart { instance: Option<String> },
    /// Stop instances' jobs (drained first)
    Stop { instance: Option<String> },
    /// Start instances' jobs
    Start { instance: Option<String> },
    /// Find instances whose agents do not answer; --resolve recreates them
    #[command(visible_alias = "cck")]
    CloudCheck {
        #[arg(long)]
        resolve: bool,
    },
}

fn client(args: &BoshArgs) -> Result<DirectorClient, Error> {
    let url = args
        .environment
        .as_deref()
        .ok_or_else(|| Error::Failed("No director: give -e URL or set BOSH_ENVIRONMENT.".into()))?;
    let password = args.client_secret.as_deref().ok_or_else(|| {
        Error::Failed("No password: give --client-secret or set BOSH_CLIENT_SECRET.".into())
    })?;
    DirectorClient::new(url, &args.client, password).map_err(failed)
}

fn failed(e: ClientError) -> Error {
    Error::Failed(e.to_string())
}

fn deployment(args: &BoshArgs) -> Result<String, Error> {
    args.deployment
        .clone()
        .ok_or_else(|| Error::Failed("No deployment: give -d NAME or set BOSH_DEPLOYMENT.".into()))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Failed(format!("Cannot read {}: {e}", path.display())))
}

/// Follows task `id`, printing its log.
fn follow(client: &DirectorClient, id: i64) -> Result<(), Error> {
    println!("Task {id}\n");
    client
        .wait_for_task(id, &mut std::io::stdout())
        .map_err(failed)?;
    println!("\nTask {id} done\n\nSucceeded");
    Ok(())
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn run(args: BoshArgs) -> Result<(), Error> {
    match &args.command {
        BoshCommand::CreateRelease(release) => create_release(release),
        BoshCommand::Director(command) => director(&args, command),
    }
}

/// `wf bosh create-release`: builds the tarball here, no director needed.
fn create_release(args: &CreateReleaseArgs) -> Result<(), Error> {
    let wfd = match &args.wfd {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::Failed(format!("Cannot find wf's directory: {e}")))?
            .with_file_name("wfd"),
    };
    let out = args
        .tarball_dir
        .clone()
        .unwrap_or_else(|| args.dir.join("dev_releases"));
    let tarball = wf_bosh::release::create_release(
        &args.dir,
        args.name.as_deref(),
        &args.version,
        &wfd,
        &out,
    )
    .map_err(|e| Error::Failed(e.to_string()))?;
    println!("Release tarball: {}", tarball.display());
    Ok(())
}

fn director(args: &BoshArgs, command: &DirectorCommand) -> Result<(), Error> {
    let c = client(args)?;
    match command {
        DirectorCommand::UploadRelease { tarball } => {
            let answer = c
                .send_body(
                    Method::POST,
                    "/releases",
                    "application/x-compressed",
                    read(tarball)?,
                )
                .map_err(failed)?;
            let state = if answer["created"] == Value::Bool(false) {
                "already uploaded"
            } else {
                "uploaded"
            };
            println!(
                "Release '{}/{}' {state}\n\nSucceeded",
                text(&answer, "name"),
                text(&answer, "version")
            );
        }
        DirectorCommand::UploadStemcell { tarball } => {
            let answer = c
                .send_body(
                    Method::POST,
                    "/stemcells",
                    "application/x-compressed",
                    read(tarball)?,
                )
                .map_err(failed)?;
            println!(
                "Stemcell '{}/{}' uploaded\n\nSucceeded",
                text(&answer, "name"),
                text(&answer, "version")
            );
        }
        DirectorCommand::UpdateCloudConfig { file } => {
            c.send_body(Method::POST, "/cloud_configs", "text/yaml", read(file)?)
                .map_err(failed)?;
            println!("Succeeded");
        }
        DirectorCommand::CloudConfig => {
            let configs = c.get("/cloud_configs").map_err(failed)?;
            println!("{}", text(&configs[0], "properties"));
        }
        DirectorCommand::Releases => {
            let releases = c.get("/releases").map_err(failed)?;
            let mut rows = Vec::new();
            for release in releases.as_array().into_iter().flatten() {
                for version in release["release_versions"].as_array().into_iter().flatten() {
                    rows.push(vec![text(release, "name"), text(version, "version")]);
                }
            }
            print!("{}", table(&["Name", "Version"], &rows));
        }
        DirectorCommand::Stemcells => {
            let stemcells = c.get("/stemcells").map_err(failed)?;
            let rows: Vec<Vec<String>> = stemcells
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    vec![
                        text(s, "name"),
                        text(s, "version"),
                        text(s, "operating_system"),
                        text(s, "cid"),
                    ]
                })
                .collect();
            print!("{}", table(&["Name", "Version", "OS", "CID"], &rows));
        }
        DirectorCommand::Deploy { manifest, recreate } => {
            let path = format!("/deployments?recreate={recreate}");
            let id = c
                .start_task(Method::POST, &path, Some(("text/yaml", read(manifest)?)))
                .map_err(failed)?;
            follow(&c, id)?;
        }
        DirectorCommand::Deployments => {
            let deployments = c.get("/deployments").map_err(failed)?;
            let rows: Vec<Vec<String>> = deployments
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let releases: Vec<String> = d["releases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| format!("{}/{}", text(r, "name"), text(r, "version")))
                        .collect();
                    vec![text(d, "name"), releases.join(", ")]
                })
                .collect();
            print!("{}", table(&["Name", "Release(s)"], &rows));
        }
        DirectorCommand::DeleteDeployment => {
            let name = deployment(args)?;
            let id = c
                .start_task(Method::DELETE, &format!("/deployments/{name}"), None)
                .map_err(failed)?;
            follow(&c, id)?;
        }
        DirectorCommand::Instances | DirectorCommand::Vms => {
            let vms = matches!(command, DirectorCommand::Vms);
            let name = deployment(args)?;
            let path = format!(
                "/deployments/{name}/{}",
                if vms { "vms" } else { "instances" }
            );
            let list = c.get(&path).map_err(failed)?;
            let rows: Vec<Vec<String>> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    let mut row = vec![
                        format!("{}/{}", text(i, "group"), text(i, "id")),
                        text(i, "process_state"),
                        text(i, "az"),
                        text(i, "ip"),
                    ];
                    if vms {
                        row.push(text(i, "vm_cid"));
                        row.push(text(i, "agent_id"));
                    } else {
                        row.push(text(i, "index"));
                        row.push(text(i, "disk_cid"));
                    }
                    row
                })
                .collect();
            let headers: &[&str] = if vms {
                &[
                    "Instance",
                    "Process State",
                    "AZ",
                    "IPs",
                    "VM CID",
                    "Agent ID",
                ]
            } else {
                &[
                    "Instance",
                    "Process State",
                    "AZ",
                    "IPs",
                    "Index",
                    "Disk CID",
                ]
            };
            println!("Deployment '{name}'\n");
            print!("{}", table(headers, &rows));
        }
        DirectorCommand::Tasks { recent } => {
            let tasks = c.get(&format!("/tasks?limit={recent}")).map_err(failed)?;
            let rows: Vec<Vec<String>> = tasks
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        text(t, "id"),
                        text(t, "state"),
                        text(t, "deployment"),
                        text(t, "description"),
                        text(t, "result"),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "State", "Deployment", "Description", "Result"],
                    &rows
                )
            );
        }
        DirectorCommand::Task { id } => follow(&c, *id)?,
        DirectorCommand::Recreate { instance }
        | DirectorCommand::Restart { instance }
        | DirectorCommand::Stop { instance }
        | DirectorCommand::Start { instance } => {
            let state = match command {
                DirectorCommand::Recreate { .. } => "recreate",
                DirectorCommand::Restart { .. } => "restart",
                DirectorCommand::Stop { .. } => "stopped",
                _ => "started",
            };
            let name = deployment(args)?;
            let target = match instance.as_deref() {
                None => "*".to_string(),
                Some(target) => target.to_string(),
            };
            let path = format!("/deployments/{name}/jobs/{target}?state={state}");
            let id = c.start_task(Method::PUT, &path, None).map_err(failed)?;
            follow(&c, id)?;
        }
        DirectorCommand::CloudCheck { resolve } => {
            let name = deployment(args)?;
            let path = format!("/deployments/{name}/cloud_check?resolve={resolve}");
            let id = c.start_task(Method::POST, &path, None).map_err(failed)?;
            println!("Task {id}\n");
            let task = c
                .wait_for_task(id, &mut std::io::stdout())
                .map_err(failed)?;
            let problems: Vec<Value> =
                serde_json::from_str(task.result.as_deref().unwrap_or("[]")).unwrap_or_default();
            let rows: Vec<Vec<String>> = problems
                .iter()
                .map(|p| vec![text(p, "instance"), text(p, "kind"), text(p, "vm_cid")])
                .collect();
            println!();
            print!("{}", table(&["Instance", "Problem", "VM CID"], &rows));
            println!("\n{} problems\n\nSucceeded", problems.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::wf::{Cli, Command};

    fn bosh(args: &[&str]) -> BoshArgs {
        let all = ["wf", "bosh"].iter().chain(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Bosh(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_bosh_cli_style_commands() {
        let args = bosh(&["-e", "http://d:25555", "-d", "cf", "recreate", "cell/1"]);
        assert_eq!(args.environment.as_deref(), Some("http://d:25555"));
        assert_eq!(args.deployment.as_deref(), Some("cf"));
        assert!(matches!(
            args.command,
            BoshCommand::Director(DirectorCommand::Recreate { instance: Some(ref i) }) if i == "cell/1"
        ));
        // Global flags go after the command too, and `cck` is cloud-check.
        let args = bosh(&["cck", "--resolve", "-d", "cf"]);
        assert!(matches!(
            args.command,
            BoshCommand::Director(DirectorCommand::CloudCheck { resolve: true })
        ));
        let args = bosh(&["create-release", "bosh/release", "--version", "3"]);
        assert!(matches!(
            args.command,
            BoshCommand::CreateRelease(CreateReleaseArgs { ref version, .. }) if version == "3"
        ));
    }
}
