//! `wfd dev`: the whole platform in one process. UAA, the Cloud Controller and the log
//! cache share the API port; the router has its own; one cell serves its rep API on an
//! ephemeral loopback port. State lives under the data dir, so a restart on the same
//! dir brings every org, app and droplet back.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use wf_messaging::Bus;

use super::process::{bind, serve, stop_signal, StopArgs};
use super::secrets::{
    admin_password, admin_password_file, route_services_secret, secret_file, set_private,
};

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where the databases, blobstore and cell state live.
    #[arg(long, default_value = "./.wasmfoundry", env = "WFD_DATA_DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub blobstore: super::components::BlobstoreArgs,
    /// Port of the CC V3 API, UAA and the log cache (0: any free port).
    #[arg(long, default_value_t = 9022)]
    pub api_port: u16,
    /// Port of the router, where apps are served (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub router_port: u16,
    /// Port of the router's status server (`/health`, `/routes`, `/metrics`); off if unset.
    #[arg(long)]
    pub router_status_port: Option<u16>,
    #[command(flatten)]
    pub router_tls: super::components::RouterTlsArgs,
    /// Address the API and the router listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen_address: IpAddr,
    /// The shared domain app routes are made under.
    #[arg(long, default_value = "apps.localhost")]
    pub apps_domain: String,
    /// The admin user's password; else the one stored in the data dir, else a new one.
    #[arg(long, env = "WFD_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// The secret of UAA's `admin` client (client_credentials with uaa.admin,
    /// clients.* and scim.*, for `wf auth admin SECRET --client-credentials`); no such
    /// client unless given.
    #[arg(long, env = "WFD_ADMIN_CLIENT_SECRET", hide_env_values = true)]
    pub admin_client_secret: Option<String>,
    #[command(flatten)]
    pub lockout: super::components::LockoutArgs,
    #[command(flatten)]
    pub log_cache: super::components::LogCacheArgs,
    /// Memory the cell offers to app instances, in MB.
    #[arg(long, default_value_t = 16_384)]
    pub cell_memory_mb: u64,
    /// Disk the cell offers to app instances and stagings, in MB (each staging asks
    /// for 4,096 and each instance for its disk quota, 1,024 by default).
    #[arg(long, default_value_t = 65_536)]
    pub cell_disk_mb: u64,
    /// Seconds between convergence passes and nsync bulk syncs (CF: 30).
    #[arg(long, default_value_t = 30)]
    pub sync_interval: u64,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// Where the in-process components that only this process calls listen.
const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Runs the platform until Ctrl-C (or SIGTERM).
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let blobstore_s3 = args.blobstore.s3()?;
    let data_dir = prepare_data_dir(&args.data_dir)?;
    let admin_password = admin_password(&data_dir, args.admin_password.as_deref())?;
    let signing_secret = secret_file(&data_dir.join("blob-signing-secret"))?;

    let api_listener = bind(
        SocketAddr::new(args.listen_address, args.api_port),
        "the API",
    )
    .await?;
    let router_listener = bind(
        SocketAddr::new(args.listen_address, args.router_port),
        "the router",
    )
    .await?;
    // The metrics collector scrapes the router's status port, so there is always one:
    // on loopback unless asked for.
    let router_status_listener = bind(
        match args.router_status_port {
            Some(port) => SocketAddr::new(args.listen_address, port),
            None => LOOPBACK_ANY_PORT,
        },
        "the router status port",
    )
    .await?;
    let (mut router_config, router_tls_listener) = args.router_tls.configure().await?;
    // Route services are on: with the flag's secret, else one kept in the data dir.
    router_config.route_services_secret = Some(route_services_secret(
        &data_dir,
        args.router_tls.route_services_secret.as_deref(),
    )?);
    let router_tls_addr = router_tls_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let rep_listener = bind(LOOPBACK_ANY_PORT, "the rep API").await?;
    let api_url = format!("http://{}", api_listener.local_addr()?);
    let router_addr = router_listener.local_addr()?;
    let router_status_addr = router_status_listener.local_addr()?;
    let rep_addr = rep_listener.local_addr()?;

    let cancel = stop_signal(&args.stop);
    let bus = Bus::in_process();
    let sync_interval = Duration::from_secs(args.sync_interval.max(1));

    let logs = Arc::new(args.log_cache.store());
    let mut tasks = vec![wf_loggregator::spawn_ingest(
        bus.clone(),
        logs.clone(),
        cancel.clone(),
    )];

    let bbs = wf_bbs::Bbs::open(
        wf_bbs::BbsConfig {
            database_url: sqlite_url(&data_dir.join("bbs.db")),
            convergence_interval: sync_interval,
            ..Default::default()
        },
        bus.clone(),
    )
    .await
    .context("opening the BBS")?;
    // The BBS stops last: the cell and the controller call it while they stop.
    let bbs_stop = tokio_util::sync::CancellationToken::new();
    let mut bbs_tasks = vec![bbs.run(bbs_stop.clone())];
    // The cell and the controller reach the BBS over its API, as in distributed mode.
    let bbs_listener = bind(LOOPBACK_ANY_PORT, "the BBS API").await?;
    let bbs_addr = bbs_listener.local_addr()?;
    let bbs_client = wf_bbs::BbsClient::new(vec![format!("http://{bbs_addr}")])?;
    let bbs_cancel = bbs_stop.clone();
    bbs_tasks.push(tokio::spawn(async move {
        if let Err(e) = bbs.serve(bbs_listener, bbs_cancel).await {
            tracing::error!(error = %e, "BBS API server failed");
        }
    }));

    let uaa = wf_uaa::Uaa::open(wf_uaa::UaaConfig {
        database_url: sqlite_url(&data_dir.join("uaa.db")),
        issuer: format!("{api_url}/oauth/token"),
        admin_password: admin_password.clone(),
        signing_key_path: data_dir.join("uaa-signing-key.pem"),
        admin_client_secret: args.admin_client_secret.clone(),
        lockout: args.lockout.policy(),
        ..Default::default()
    })
    .await
    .context("opening UAA")?;

    let controller = wf_controller::Controller::open(
        wf_controller::ControllerConfig {
            database_url: sqlite_url(&data_dir.join("cc.db")),
            blobstore_dir: data_dir.join("blobstore"),
            blobstore_s3,
            orphaned_blobs_interval: args.blobstore.orphaned_blobs().0,
            orphaned_blobs_grace: args.blobstore.orphaned_blobs().1,
            external_url: api_url.clone(),
            uaa_url: api_url.clone(),
            apps_domain: args.apps_domain.clone(),
            signing_secret,
            sync_interval,
            ..Default::default()
        },
        bbs_client.clone(),
        bus.clone(),
        uaa.verifier(),
        logs.clone(),
    )
    .await
    .context("opening the Cloud Controller")?;
    tasks.push(controller.run(cancel.clone()));

    let metrics_targets = metrics_targets(&uaa, &api_url, bbs_addr, rep_addr, router_status_addr)?;
    let api = controller
        .router()
        .merge(controller.platform_metrics_router(
            metrics_targets,
            wf_loggregator::DEFAULT_SCRAPE_TIMEOUT,
            reqwest::Client::new(),
        ))
        .merge(uaa.router());
    tasks.push(tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if let Err(e) = serve(api_listener, api, cancel).await {
                tracing::error!(error = %e, "API server failed");
            }
        }
    }));

    let router_cancel = cancel.clone();
    let router_bus = bus.clone();
    tasks.push(tokio::spawn(async move {
        let listeners = wf_router::Listeners {
            http: router_listener,
            tls: router_tls_listener,
            status: Some(router_status_listener),
        };
        let served = wf_router::serve(router_config, listeners, router_bus, router_cancel);
        if let Err(e) = served.await {
            tracing::error!(error = %e, "router failed");
        }
    }));

    let cell_config = wf_host::CellConfig {
        cell_id: "cell-0".to_string(),
        data_dir: data_dir.join("cell"),
        memory_mb: args.cell_memory_mb,
        disk_mb: args.cell_disk_mb,
        advertise_address: "127.0.0.1".to_string(),
        ..Default::default()
    };
    let cell_cancel = cancel.clone();
    let cell_bbs = bbs_client;
    let cell_bus = bus.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) =
            wf_host::run(cell_config, rep_listener, cell_bbs, cell_bus, cell_cancel).await
        {
            tracing::error!(error = %e, "cell failed");
        }
    }));

    println!("Wasmfoundry is running (data dir {}).", data_dir.display());
    println!("api: {api_url}");
    println!(
        "router: http://{router_addr} (apps at http://<app>.{}:{})",
        args.apps_domain,
        router_addr.port()
    );
    if let Some(addr) = router_tls_addr {
        println!("router TLS: https://{addr}");
    }
    if args.router_status_port.is_some() {
        println!("router status: http://{router_status_addr}/health (also /routes, /metrics)");
    }
    println!("metrics: {api_url}/metrics/platform (admin token)");
    // The password itself stays out of the output, which often ends up in logs.
    let password_file = admin_password_file(&data_dir);
    println!("admin password: in {}", password_file.display());
    println!(
        "Log in with: wf api {api_url} && wf auth admin \"$(cat {})\"",
        password_file.display()
    );

    cancel.cancelled().await;
    join_within(tasks, Duration::from_secs(10)).await;
    bbs_stop.cancel();
    join_within(bbs_tasks, Duration::from_secs(5)).await;
    Ok(())
}

/// What the collector view (`/metrics/platform`) gathers besides the controller: the
/// BBS API, the rep and the router's status port over HTTP, and UAA, which shares the
/// API port, in process.
fn metrics_targets(
    uaa: &Arc<wf_uaa::Uaa>,
    api_url: &str,
    bbs: SocketAddr,
    rep: SocketAddr,
    router_status: SocketAddr,
) -> anyhow::Result<Vec<wf_loggregator::MetricsTarget>> {
    let uaa = Arc::downgrade(uaa);
    let render: wf_loggregator::LocalMetrics = Arc::new(move || {
        let uaa = uaa.clone();
        Box::pin(async move {
            let uaa = uaa.upgrade().ok_or("UAA has stopped")?;
            uaa.metrics().await.map_err(|e| e.to_string())
        })
    });
    let instance = api_url.trim_start_matches("http://");
    let mut targets = vec![wf_loggregator::MetricsTarget::local(
        "uaa", instance, render,
    )];
    for (component, addr) in [("bbs", bbs), ("cell", rep), ("router", router_status)] {
        let target = format!("{component}=http://{addr}/metrics");
        targets.push(wf_loggregator::MetricsTarget::parse(&target)?);
    }
    Ok(targets)
}

async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, within: Duration) {
    let stopped = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(within, stopped).await.is_err() {
        tracing::warn!("some components did not stop within {within:?}");
    }
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data dir {}", dir.display()))?;
    set_private(dir, 0o700)?;
    dir.canonicalize()
        .with_context(|| format!("resolving the data dir {}", dir.display()))
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}
