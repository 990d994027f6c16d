//! BOSH's processes: `wfd director` (the director with its health monitor),
//! `wfd agent` (the agent on each VM, started by a CPI) and `wfd cpi local|netns` (the
//! built-in CPI executables the director runs once per call).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::components::NatsArgs;
use super::process::{bind, serve, stop_signal, StopArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct DirectorArgs {
    /// State (database, blobstore, the local CPI's VMs and disks) unless given apart.
    #[arg(
        long,
        default_value = "./.wasmfoundry-director",
        env = "WFD_DIRECTOR_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// `postgres://...` or `sqlite://path?mode=rwc`; default: SQLite in the data dir.
    #[arg(long, env = "WFD_DIRECTOR_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1:25555")]
    pub listen: SocketAddr,
    /// The URL agents reach the director at (they fetch packages from `<url>/blobs`);
    /// default: `http://<listen address>`.
    #[arg(long)]
    pub url: Option<String>,
    /// The `admin` user's password.
    #[arg(long, env = "WFD_DIRECTOR_PASSWORD", hide_env_values = true)]
    pub admin_password: String,
    /// The CPI command line, run once per call (e.g. `/usr/bin/my-cpi --config c.json`);
    /// default: this wfd's built-in CPI (`--builtin-cpi`) under the data dir.
    #[arg(long)]
    pub cpi: Option<String>,
    /// The built-in CPI used without `--cpi`: `local` (VMs are process trees) or `netns`
    /// (each also in a network namespace on `--netns-bridge`; needs root).
    #[arg(long, default_value = "local", value_parser = ["local", "netns"])]
    pub builtin_cpi: String,
    /// The host bridge of the `netns` CPI's VMs.
    #[arg(long, default_value = "wfbr0")]
    pub netns_bridge: String,
    /// The NATS URL agents connect to, when they reach NATS at another address than
    /// the director does (`netns` VMs: the bridge's gateway address); default
    /// `--nats-url`.
    #[arg(long)]
    pub agent_nats_url: Option<String>,
    /// Seconds between agent heartbeats, for the built-in local CPI's agents (BOSH: ~20).
    #[arg(long, default_value_t = 20.0)]
    pub agent_heartbeat_interval: f64,
    /// Seconds a new VM's agent has to answer (BOSH: 600).
    #[arg(long, default_value_t = 600)]
    pub agent_wait: u64,
    /// Seconds without a heartbeat after which an agent is unresponsive (BOSH: 60).
    #[arg(long, default_value_t = 60.0)]
    pub hm_unresponsive_after: f64,
    /// Seconds between the health monitor's checks.
    #[arg(long, default_value_t = 5.0)]
    pub hm_check_interval: f64,
    /// Report unresponsive instances only, never recreate them.
    #[arg(long)]
    pub no_resurrector: bool,
    /// Meltdown: at least this many instances of a deployment down at once (bosh-monitor: 5)...
    #[arg(long, default_value_t = 5)]
    pub meltdown_minimum_down: usize,
    /// ...and at least this percentage of it (bosh-monitor: 20).
    #[arg(long, default_value_t = 20)]
    pub meltdown_percent: usize,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// The director: its API, tasks, and health monitor.
pub async fn director(args: DirectorArgs) -> anyhow::Result<()> {
    let cancel = stop_signal(&args.stop);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let listener = bind(args.listen, "the director API").await?;
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", listener.local_addr().expect("bound")));
    let cpi = match &args.cpi {
        Some(command) => command.split_whitespace().map(str::to_string).collect(),
        None => {
            let wfd = std::env::current_exe().context("finding the wfd executable")?;
            let mut cpi = vec![
                wfd.display().to_string(),
                "cpi".into(),
                args.builtin_cpi.clone(),
                "--state-dir".into(),
                data_dir.join("cpi").display().to_string(),
                "--mbus".into(),
                args.agent_nats_url
                    .clone()
                    .unwrap_or_else(|| args.nats.nats_url.clone()),
                "--blobstore".into(),
                format!("{url}/blobs"),
                "--heartbeat-interval".into(),
                args.agent_heartbeat_interval.to_string(),
            ];
            if args.builtin_cpi == "netns" {
                cpi.extend(["--bridge".into(), args.netns_bridge.clone()]);
            }
            cpi
        }
    };
    let bus = args.nats.connect().await?;
    let config = wf_bosh::director::DirectorConfig {
        database_url: args.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("director.db").display()
            )
        }),
        blobstore_dir: data_dir.join("blobs"),
        cpi,
        admin_password: args.admin_password.clone(),
        agent_wait: Duration::from_secs(args.agent_wait.max(1)),
        hm: wf_bosh::hm::HmConfig {
            unresponsive_after: Duration::from_secs_f64(args.hm_unresponsive_after.max(0.1)),
            check_interval: Duration::from_secs_f64(args.hm_check_interval.max(0.1)),
            resurrector: !args.no_resurrector,
            minimum_down: args.meltdown_minimum_down,
            percent_threshold: args.meltdown_percent,
        },
        ..Default::default()
    };
    anyhow::ensure!(
        !config.admin_password.is_empty(),
        "--admin-password must not be empty"
    );
    let director = wf_bosh::director::Director::open(config, bus)
        .await
        .context("opening the director")?;
    let hm = director.run(cancel.clone());
    println!("director: {url} ({})", listener.local_addr()?);
    let served = serve(
        listener,
        wf_bosh::director::api::router(director),
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    let _ = hm.await;
    served
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The VM's base directory (BOSH's /var/vcap): `bosh/settings.json` is read from it.
    #[arg(long)]
    pub base_dir: PathBuf,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// The agent of one VM.
pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let cancel = stop_signal(&args.stop);
    wf_bosh::agent::run(&args.base_dir, cancel).await?;
    Ok(())
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CpiCommand {
    /// VMs as process trees on this machine: reads one CPI request on standard input
    /// and prints the response.
    Local(LocalCpiArgs),
    /// VMs as process trees in network namespaces of their own, on a bridge (root).
    Netns {
        #[command(flatten)]
        local: LocalCpiArgs,
        /// The host bridge VMs are plugged into (created if missing; it gets the
        /// gateway address of the VMs' subnet).
        #[arg(long, default_value = "wfbr0")]
        bridge: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct LocalCpiArgs {
    /// Where VMs, disks and stemcells are kept.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The NATS URL agents connect to.
    #[arg(long)]
    pub mbus: String,
    /// The blobstore URL agents fetch packages from (the director's `/blobs`).
    #[arg(long)]
    pub blobstore: String,
    /// Seconds between agent heartbeats.
    #[arg(long, default_value_t = 20.0)]
    pub heartbeat_interval: f64,
}

/// A CPI call.
pub async fn cpi(command: CpiCommand) -> anyhow::Result<()> {
    let (args, netns) = match command {
        CpiCommand::Local(args) => (args, None),
        CpiCommand::Netns { local, bridge } => (local, Some(wf_bosh::cpi::netns::Netns { bridge })),
    };
    let cpi = wf_bosh::cpi::local::LocalCpi {
        state_dir: args.state_dir,
        mbus: args.mbus,
        blobstore: args.blobstore,
        heartbeat_interval: args.heartbeat_interval,
        agent_program: std::env::current_exe().context("finding the wfd executable")?,
        netns,
    };
    tokio::task::spawn_blocking(move || wf_bosh::cpi::serve_stdio(|request| cpi.handle(request)))
        .await?
        .context("answering the CPI request")
}
