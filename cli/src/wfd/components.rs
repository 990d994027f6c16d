//! One component per process, for laying the platform out over machines: `wfd bbs`,
//! `wfd cell`, `wfd controller`, `wfd uaa` and `wfd router`. They meet over the wire
//! only: the BBS API (cells and the controller), NATS (route registrations, log
//! envelopes), UAA's `/token_keys` (the controller) and the controller's blob URLs
//! (cells). With `--mtls-*` (`wfd certs`) the BBS API and the reps' serve mutual TLS
//! only, and the cells and the controller present their certificates to the BBS.
//! State is in the databases (PostgreSQL when several machines share it) and
//! the blobstore; any of these processes can be killed and started again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;

use super::certs::MtlsArgs;
use super::process::{bind, reserve, serve, stop_signal, StopArgs};
use super::secrets;

/// `--fast-failover`: the TTL of cell presences and of the `bbs` lock.
const FAST_TTL: Duration = Duration::from_secs(2);
/// `--fast-failover`: time between convergence passes.
const FAST_CONVERGENCE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS servers, comma-separated (`nats://user:pass@host:4222,...`).
    #[arg(long, env = "WFD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// TLS to NATS: the CA its certificate is signed by (e.g. `ca.pem` of `wfd certs`).
    #[arg(long, env = "WFD_NATS_TLS_CA", value_name = "PEM")]
    pub nats_tls_ca: Option<PathBuf>,
    /// This process's certificate for a NATS server that verifies clients (with
    /// `--nats-tls-key`).
    #[arg(long, env = "WFD_NATS_TLS_CERT", value_name = "PEM",
          requires_all = ["nats_tls_ca", "nats_tls_key"])]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(
        long,
        env = "WFD_NATS_TLS_KEY",
        value_name = "PEM",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
}

impl NatsArgs {
    pub(super) async fn connect(&self) -> anyhow::Result<Bus> {
        let tls = self.nats_tls_ca.as_ref().map(|ca| wf_messaging::NatsTls {
            ca: ca.clone(),
            client_certificate: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
        });
        Bus::nats_with_tls(&self.nats_url, tls.as_ref())
            .await
            .context("connecting to NATS")
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BbsArgs {
    /// `postgres://...` (or `sqlite://path?mode=rwc` for one machine).
    #[arg(long, env = "WFD_BBS_DATABASE_URL")]
    pub database_url: String,
    /// Where the BBS API listens once this BBS holds the `bbs` lock.
    #[arg(long, default_value = "127.0.0.1:8889")]
    pub listen: SocketAddr,
    /// Seconds between convergence passes (Diego: 30).
    #[arg(long, default_value_t = 30)]
    pub convergence_interval: u64,
    /// Seconds the `bbs` lock lives without a refresh (Locket: 15).
    #[arg(long, default_value_t = 15)]
    pub lock_ttl: u64,
    /// Short timers for fast failover: convergence every second and a 2 s lock TTL
    /// (pair with `wfd cell --fast-failover`). Costs more database work.
    #[arg(long)]
    pub fast_failover: bool,
    #[command(flatten)]
    pub mtls: MtlsArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// The BBS: waits for the `bbs` lock, then serves the API and runs convergence, the
/// auctioneer and the route-emitter until stopped or the lock is lost.
pub async fn bbs(args: BbsArgs) -> anyhow::Result<()> {
    let cancel = stop_signal(&args.stop);
    let mutual_tls = args.mtls.load()?;
    let bus = args.nats.connect().await?;
    let (convergence_interval, lock_ttl) = if args.fast_failover {
        (FAST_CONVERGENCE_INTERVAL, FAST_TTL)
    } else {
        (
            Duration::from_secs(args.convergence_interval.max(1)),
            Duration::from_secs(args.lock_ttl.max(1)),
        )
    };
    let bbs = wf_bbs::Bbs::open(
        wf_bbs::BbsConfig {
            database_url: args.database_url.clone(),
            convergence_interval,
            mutual_tls: mutual_tls.clone(),
            ..Default::default()
        },
        bus,
    )
    .await
    .context("opening the BBS database")?;
    // The address is taken now, so that nothing else takes it while this BBS stands by,
    // but it listens only once it holds the lock: until then connections are refused
    // and clients go on to the active BBS.
    let socket = reserve(args.listen, "the BBS API")?;
    let owner = format!("bbs-{}-{}", std::process::id(), uuid::Uuid::new_v4());
    let lock = bbs.lock("bbs", &owner, lock_ttl);
    if !lock.acquire(&cancel).await {
        return Ok(());
    }
    let listener = socket
        .listen(1024)
        .with_context(|| format!("listening for the BBS API on {}", args.listen))?;
    println!(
        "bbs: {}://{} (holding the bbs lock as {owner})",
        wf_bbs::mtls::scheme(mutual_tls.as_ref()),
        listener.local_addr()?
    );

    // Everything below stops when the lock is lost: another BBS may act then.
    let active = cancel.child_token();
    let loops = bbs.run(active.clone());
    let api = {
        let (bbs, active) = (bbs.clone(), active.clone());
        tokio::spawn(async move { bbs.serve(listener, active).await })
    };
    let held = lock.hold(&active).await;
    active.cancel();
    let _ = tokio::join!(loops, api);
    held.map_err(|lost| anyhow::anyhow!("stopped acting as the BBS: {lost}"))
}

#[derive(Debug, Clone, clap::Args)]
pub struct CellArgs {
    /// The BBS API, comma-separated URLs of every BBS (the one holding the lock answers).
    #[arg(long, env = "WFD_BBS_URL", value_delimiter = ',', required = true)]
    pub bbs_url: Vec<String>,
    /// Where the rep API listens.
    #[arg(long, default_value = "127.0.0.1:1800")]
    pub listen: SocketAddr,
    /// The address routers and the BBS reach this cell at (its instances and its rep).
    #[arg(long, default_value = "127.0.0.1")]
    pub advertise_address: String,
    /// Unique among cells; default `cell-<pid>`.
    #[arg(long)]
    pub cell_id: Option<String>,
    #[arg(long, default_value = "z1")]
    pub zone: String,
    /// Memory offered to instances, in MB.
    #[arg(long, default_value_t = 16_384)]
    pub memory_mb: u64,
    /// Disk offered to instances, in MB.
    #[arg(long, default_value_t = 65_536)]
    pub disk_mb: u64,
    /// Placement tags: the isolation segments this cell belongs to (repeatable, or
    /// comma-separated). An untagged cell is in the shared segment.
    #[arg(long, visible_alias = "placement-tag", value_delimiter = ',')]
    pub placement_tags: Vec<String>,
    /// Droplet cache, compiled artifacts and instance scratch space.
    #[arg(long, default_value = "./.wasmfoundry-cell", env = "WFD_CELL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Short timers for fast failover: a 2 s presence TTL refreshed three times in it (pair
    /// with `wfd bbs --fast-failover`), instead of Locket's 15 s and 5 s.
    #[arg(long)]
    pub fast_failover: bool,
    #[command(flatten)]
    pub mtls: MtlsArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// A cell: the rep and its wasmtime executor.
pub async fn cell(args: CellArgs) -> anyhow::Result<()> {
    let cancel = stop_signal(&args.stop);
    let mutual_tls = args.mtls.load()?;
    let bus = args.nats.connect().await?;
    let bbs = wf_bbs::BbsClient::with_tls(args.bbs_url.clone(), mutual_tls.as_ref())?;
    let listener = bind(args.listen, "the rep API").await?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let config = wf_host::CellConfig {
        cell_id: args
            .cell_id
            .clone()
            .unwrap_or_else(|| format!("cell-{}", std::process::id())),
        zone: args.zone.clone(),
        data_dir: args.data_dir.canonicalize()?,
        memory_mb: args.memory_mb,
        disk_mb: args.disk_mb,
        advertise_address: args.advertise_address.clone(),
        placement_tags: args.placement_tags.clone(),
        mutual_tls: mutual_tls.clone(),
        ..Default::default()
    };
    let config = if args.fast_failover {
        wf_host::CellConfig {
            presence_interval: FAST_TTL / 3,
            presence_ttl: FAST_TTL,
            ..config
        }
    } else {
        config
    };
    println!(
        "cell {}: rep {}://{}",
        config.cell_id,
        wf_bbs::mtls::scheme(mutual_tls.as_ref()),
        listener.local_addr()?
    );
    wf_host::run(config, listener, bbs, bus, cancel).await?;
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct UaaArgs {
    /// `postgres://...` or `sqlite://path?mode=rwc`.
    #[arg(long, env = "WFD_UAA_DATABASE_URL")]
    pub database_url: String,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The URL clients reach UAA at; tokens are issued by `<url>/oauth/token`.
    #[arg(long)]
    pub url: String,
    /// The admin user's password.
    #[arg(long, env = "WFD_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: String,
    /// The secret of UAA's `admin` client; no such client unless given.
    #[arg(long, env = "WFD_ADMIN_CLIENT_SECRET", hide_env_values = true)]
    pub admin_client_secret: Option<String>,
    /// PEM of the token signing key; generated there if missing.
    #[arg(long)]
    pub signing_key: PathBuf,
    #[command(flatten)]
    pub lockout: LockoutArgs,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// UAA's lockout policy (`authentication.policy.*`), for `wfd uaa` and `wfd dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct LockoutArgs {
    /// Failed logins of a user that lock it out (UAA's `lockoutAfterFailures`).
    #[arg(long, default_value_t = wf_uaa::LockoutPolicy::default().lockout_after_failures)]
    pub lockout_after_failures: u32,
    /// Seconds in which those failures count (UAA's `countFailuresWithinSeconds`).
    #[arg(long, value_name = "SECONDS",
          default_value_t = wf_uaa::LockoutPolicy::default().count_failures_within.as_secs())]
    pub count_failures_within: u64,
    /// Seconds a lock lasts after the last failure (UAA's `lockoutPeriodSeconds`).
    #[arg(long, value_name = "SECONDS",
          default_value_t = wf_uaa::LockoutPolicy::default().lockout_period.as_secs())]
    pub lockout_period: u64,
}

impl LockoutArgs {
    pub fn policy(&self) -> wf_uaa::LockoutPolicy {
        wf_uaa::LockoutPolicy {
            lockout_after_failures: self.lockout_after_failures,
            count_failures_within: Duration::from_secs(self.count_failures_within),
            lockout_period: Duration::from_secs(self.lockout_period),
        }
    }
}

/// The log cache's memory bound, for `wfd controller` and `wfd dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogCacheArgs {
    /// Bytes the log cache may hold, all sources together (the envelopes' approximate
    /// size; `KiB`, `MiB` and `GiB` suffixes). Over it the oldest envelopes are dropped
    /// down to 90% of it, as Log Cache does over its `MEMORY_LIMIT_PERCENT`.
    #[arg(long, env = "WFD_LOG_CACHE_MAX_BYTES", value_name = "BYTES",
          default_value_t = wf_loggregator::LogStoreConfig::default().max_bytes,
          value_parser = parse_bytes)]
    pub log_cache_max_bytes: usize,
}

impl LogCacheArgs {
    pub fn store(&self) -> wf_loggregator::LogStore {
        wf_loggregator::LogStore::with_config(wf_loggregator::LogStoreConfig {
            max_bytes: self.log_cache_max_bytes,
            ..Default::default()
        })
    }
}

/// A size in bytes: `536870912`, `512MiB`, `512 MiB`, `1GiB`, `64k`. Every unit is a
/// power of 1,024 (`MB` and `M` mean MiB).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit {other:?} (KiB, MiB or GiB)")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// UAA on its own port.
pub async fn uaa(args: UaaArgs) -> anyhow::Result<()> {
    let cancel = stop_signal(&args.stop);
    anyhow::ensure!(
        !args.admin_password.is_empty(),
        "--admin-password must not be empty"
    );
    let url = args.url.trim_end_matches('/');
    let uaa = wf_uaa::Uaa::open(wf_uaa::UaaConfig {
        database_url: args.database_url.clone(),
        issuer: format!("{url}/oauth/token"),
        admin_password: args.admin_password.clone(),
        signing_key_path: args.signing_key.clone(),
        admin_client_secret: args.admin_client_secret.clone(),
        lockout: args.lockout.policy(),
        ..Default::default()
    })
    .await
    .context("opening UAA")?;
    let listener = bind(args.listen, "UAA").await?;
    println!("uaa: http://{} ({url})", listener.local_addr()?);
    serve(listener, uaa.router().merge(uaa.metrics_router()), cancel).await
}

/// An S3-compatible blobstore for the Cloud Controller (`wfd controller`, `wfd dev`).
#[derive(Debug, Clone, clap::Args)]
pub struct BlobstoreArgs {
    /// `s3://BUCKET`: keep blobs in an S3-compatible bucket rather than a local
    /// directory, with the keys in WFD_BLOBSTORE_ACCESS_KEY_ID and
    /// WFD_BLOBSTORE_SECRET_ACCESS_KEY.
    #[arg(long, value_name = "s3://BUCKET")]
    pub blobstore: Option<String>,
    /// The S3 server's URL, e.g. `http://minio.example:9000` (path-style addressing);
    /// unset: AWS S3 itself.
    #[arg(long, value_name = "URL", requires = "blobstore")]
    pub blobstore_endpoint: Option<String>,
    /// The bucket's region.
    #[arg(long, default_value = "us-east-1")]
    pub blobstore_region: String,
    /// Seconds between orphaned blob cleanups (deleting blobs no record points to).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub orphaned_blobs_interval: u64,
    /// Seconds a blob stays orphaned, and unwritten, before the cleanup deletes it.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub orphaned_blobs_grace: u64,
}

impl BlobstoreArgs {
    /// How often orphaned blob cleanup runs, and its grace period.
    pub fn orphaned_blobs(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.orphaned_blobs_interval.max(1)),
            Duration::from_secs(self.orphaned_blobs_grace),
        )
    }

    /// The bucket `--blobstore` names, with its keys from the environment (never from
    /// flags, which `ps` shows); `None` without `--blobstore`.
    pub fn s3(&self) -> anyhow::Result<Option<wf_controller::S3Config>> {
        let Some(url) = &self.blobstore else {
            return Ok(None);
        };
        let bucket = wf_controller::blobstore::s3_bucket(url)?;
        if let Some(endpoint) = &self.blobstore_endpoint {
            let parsed = reqwest::Url::parse(endpoint)
                .with_context(|| format!("--blobstore-endpoint '{endpoint}' is not a URL"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(),
                "--blobstore-endpoint '{endpoint}' is not an http(s) URL"
            );
        }
        let key = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("--blobstore {url} needs {name} in the environment"))
        };
        Ok(Some(wf_controller::S3Config {
            bucket,
            endpoint: self.blobstore_endpoint.clone(),
            region: self.blobstore_region.clone(),
            access_key_id: key("WFD_BLOBSTORE_ACCESS_KEY_ID")?,
            secret_access_key: key("WFD_BLOBSTORE_SECRET_ACCESS_KEY")?,
        }))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// `postgres://...` or `sqlite://path?mode=rwc`.
    #[arg(long, env = "WFD_CC_DATABASE_URL")]
    pub database_url: String,
    #[arg(long, default_value = "127.0.0.1:9022")]
    pub listen: SocketAddr,
    /// The URL clients and cells reach this API at.
    #[arg(long)]
    pub external_url: String,
    /// UAA's URL; its `/token_keys` verify every request's token.
    #[arg(long)]
    pub uaa_url: String,
    /// The BBS API, comma-separated URLs.
    #[arg(long, env = "WFD_BBS_URL", value_delimiter = ',', required = true)]
    pub bbs_url: Vec<String>,
    /// Local blobstore root; with `--blobstore s3://...` it only holds uploads in progress.
    #[arg(long, default_value = "./.wasmfoundry-blobstore")]
    pub blobstore_dir: PathBuf,
    #[command(flatten)]
    pub blobstore: BlobstoreArgs,
    /// Holds the key of signed blob URLs; generated there if missing.
    #[arg(long, default_value = "./.wasmfoundry-blob-signing-secret")]
    pub signing_secret_file: PathBuf,
    /// A key for the secrets in the CC database (service credentials): LABEL=FILE, the
    /// secret in FILE. Repeat it to rotate: the first is current, the others still
    /// decrypt, and values under them are re-encrypted at start. Default: one key
    /// derived from the signing secret.
    #[arg(long = "encryption-key", value_name = "LABEL=FILE")]
    pub encryption_keys: Vec<String>,
    #[arg(long, default_value = "apps.localhost")]
    pub apps_domain: String,
    /// Seconds between nsync bulk syncs (CF: 30).
    #[arg(long, default_value_t = 30)]
    pub sync_interval: u64,
    /// A component for the metrics collector view (`/metrics/platform`): NAME=URL of its
    /// `/metrics`, e.g. `bbs=http://10.0.0.5:8889/metrics`. Repeat it per component.
    /// With `--mtls-*` the scrapes present the controller's certificate and trust the
    /// platform CA (`bbs=https://...`).
    #[arg(long = "metrics-target", value_name = "NAME=URL", value_parser = wf_loggregator::MetricsTarget::parse)]
    pub metrics_targets: Vec<wf_loggregator::MetricsTarget>,
    #[command(flatten)]
    pub log_cache: LogCacheArgs,
    /// The controller's certificate for the BBS API.
    #[command(flatten)]
    pub mtls: MtlsArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// The Cloud Controller with the log cache (fed from NATS).
pub async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let blobstore_s3 = args.blobstore.s3()?;
    let cancel = stop_signal(&args.stop);
    let mutual_tls = args.mtls.load()?;
    let bus = args.nats.connect().await?;
    let bbs = wf_bbs::BbsClient::with_tls(args.bbs_url.clone(), mutual_tls.as_ref())?;
    let verifier = fetch_verifier(&args.uaa_url, &cancel).await?;
    let logs = Arc::new(args.log_cache.store());
    let ingest = wf_loggregator::spawn_ingest(bus.clone(), logs.clone(), cancel.clone());
    let controller = wf_controller::Controller::open(
        wf_controller::ControllerConfig {
            database_url: args.database_url.clone(),
            blobstore_dir: args.blobstore_dir.clone(),
            blobstore_s3,
            external_url: args.external_url.clone(),
            uaa_url: args.uaa_url.clone(),
            apps_domain: args.apps_domain.clone(),
            signing_secret: secrets::secret_file(&args.signing_secret_file)?,
            sync_interval: Duration::from_secs(args.sync_interval.max(1)),
            orphaned_blobs_interval: args.blobstore.orphaned_blobs().0,
            orphaned_blobs_grace: args.blobstore.orphaned_blobs().1,
            encryption_keys: encryption_keys(&args.encryption_keys)?,
            brokers: Default::default(),
        },
        bbs,
        bus,
        verifier,
        logs,
    )
    .await
    .context("opening the Cloud Controller")?;
    let background = controller.run(cancel.clone());
    let listener = bind(args.listen, "the API").await?;
    println!(
        "api: http://{} ({})",
        listener.local_addr()?,
        args.external_url
    );
    // Under mutual TLS the BBS's and the reps' `/metrics` want the controller's
    // certificate (and https targets are then the platform CA's).
    let scrapes = match &mutual_tls {
        Some(tls) => tls.client_builder().build()?,
        None => reqwest::Client::new(),
    };
    let api = controller
        .router()
        .merge(controller.platform_metrics_router(
            args.metrics_targets.clone(),
            wf_loggregator::DEFAULT_SCRAPE_TIMEOUT,
            scrapes,
        ));
    let served = serve(listener, api, cancel.clone()).await;
    cancel.cancel();
    let _ = tokio::join!(background, ingest);
    served
}

/// UAA's verification keys and issuer, waiting for UAA to answer.
/// The `--encryption-key LABEL=FILE` keys, read.
fn encryption_keys(args: &[String]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    args.iter()
        .map(|arg| {
            let (label, file) = arg
                .split_once('=')
                .filter(|(label, file)| {
                    !label.is_empty() && !label.contains(':') && !file.is_empty()
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--encryption-key {arg:?}: expected LABEL=FILE (a label without ':')"
                    )
                })?;
            let secret = std::fs::read_to_string(file)
                .with_context(|| format!("--encryption-key {label}: reading {file}"))?;
            let secret = secret.trim();
            anyhow::ensure!(
                !secret.is_empty(),
                "--encryption-key {label}: {file} is empty"
            );
            Ok((label.to_string(), secret.as_bytes().to_vec()))
        })
        .collect()
}

async fn fetch_verifier(
    uaa_url: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<wf_uaa::TokenVerifier> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
    }
    #[derive(serde::Deserialize)]
    struct Keys {
        keys: Vec<wf_uaa::TokenKey>,
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let uaa_url = uaa_url.trim_end_matches('/');
    let fetch = || async {
        let discovery: Discovery = http
            .get(format!("{uaa_url}/.well-known/openid-configuration"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let keys: Keys = http
            .get(format!("{uaa_url}/token_keys"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::Ok((discovery, keys))
    };
    loop {
        match fetch().await {
            Ok((discovery, keys)) => {
                return wf_uaa::TokenVerifier::from_keys(&discovery.issuer, &keys.keys)
                    .context("UAA's token keys");
            }
            Err(e) => tracing::warn!(error = %e, %uaa_url, "UAA not answering yet; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => anyhow::bail!("stopped while waiting for UAA"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RouterArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The status server (`/health`, `/routes`, `/metrics`); off if unset.
    #[arg(long)]
    pub status_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: RouterTlsArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// The router's TLS and route services, for `wfd router` and `wfd dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct RouterTlsArgs {
    /// Address of the router's TLS listener (HTTP/2 and HTTP/1.1); off if unset.
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// A certificate for the TLS listener, chosen by SNI: `DOMAIN:CERT.pem:KEY.pem`, with
    /// DOMAIN a host, `*.domain`, or `default` (for clients naming no known host; else
    /// the first certificate is). Repeatable.
    #[arg(long = "tls-cert", value_name = "DOMAIN:CERT:KEY")]
    pub tls_certs: Vec<String>,
    /// PEM file of the CAs trusted for TLS to backends (registered with `tls_port`) and
    /// to https route services.
    #[arg(long, value_name = "PEM")]
    pub backend_ca: Option<PathBuf>,
    /// The secret route service signatures are encrypted with. `wfd router` has route
    /// services off without it (give every router of a platform the same one); `wfd dev`
    /// keeps one in its data dir unless given.
    #[arg(long, env = "WFD_ROUTE_SERVICES_SECRET", hide_env_values = true)]
    pub route_services_secret: Option<String>,
}

impl RouterTlsArgs {
    /// The router's configuration with these settings, and its TLS listener.
    pub async fn configure(
        &self,
    ) -> anyhow::Result<(wf_router::RouterConfig, Option<tokio::net::TcpListener>)> {
        let mut config = wf_router::RouterConfig {
            route_services_secret: self.route_services_secret.clone(),
            ..Default::default()
        };
        for spec in &self.tls_certs {
            config.tls_certificates.push(tls_certificate(spec)?);
        }
        if let Some(path) = &self.backend_ca {
            config.backend_ca_certificates = wf_router::certificates_from_pem_file(path)
                .with_context(|| format!("--backend-ca {}", path.display()))?;
        }
        let listener = match self.tls_listen {
            Some(_) if config.tls_certificates.is_empty() => {
                anyhow::bail!("--tls-listen needs at least one --tls-cert")
            }
            Some(addr) => Some(bind(addr, "the router TLS port").await?),
            None if !config.tls_certificates.is_empty() => {
                anyhow::bail!("--tls-cert needs --tls-listen")
            }
            None => None,
        };
        Ok((config, listener))
    }
}

/// `DOMAIN:CERT.pem:KEY.pem` of `--tls-cert`.
fn tls_certificate(spec: &str) -> anyhow::Result<wf_router::TlsCertificate> {
    let mut parts = spec.splitn(3, ':');
    let (Some(domain), Some(cert), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("--tls-cert {spec:?}: expected DOMAIN:CERT.pem:KEY.pem");
    };
    let domain = (domain != "default").then_some(domain);
    wf_router::TlsCertificate::from_pem_files(domain, cert.as_ref(), key.as_ref())
        .with_context(|| format!("--tls-cert {spec}"))
}

/// The router, fed by `router.register` on NATS.
pub async fn router(args: RouterArgs) -> anyhow::Result<()> {
    let cancel = stop_signal(&args.stop);
    let (config, tls) = args.tls.configure().await?;
    let bus = args.nats.connect().await?;
    let listener = bind(args.listen, "the router").await?;
    let status = match args.status_listen {
        Some(addr) => Some(bind(addr, "the router status port").await?),
        None => None,
    };
    println!("router: http://{}", listener.local_addr()?);
    if let Some(tls) = &tls {
        println!("router TLS: https://{}", tls.local_addr()?);
    }
    let listeners = wf_router::Listeners {
        http: listener,
        tls,
        status,
    };
    wf_router::serve(config, listeners, bus, cancel).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::parse_bytes;

    #[derive(clap::Parser)]
    struct Controller {
        #[command(flatten)]
        args: super::ControllerArgs,
    }

    #[derive(clap::Parser)]
    struct Dev {
        #[command(flatten)]
        args: super::super::dev::DevArgs,
    }

    #[test]
    fn the_log_cache_budget_is_a_flag_of_the_controller_and_dev() {
        Controller::command().debug_assert();
        Dev::command().debug_assert();
        let dev = Dev::try_parse_from(["wfd", "--log-cache-max-bytes", "256MiB"]).unwrap();
        assert_eq!(dev.args.log_cache.log_cache_max_bytes, 256 << 20);
        let dev = Dev::try_parse_from(["wfd"]).unwrap();
        assert_eq!(
            dev.args.log_cache.store().config().max_bytes,
            wf_loggregator::LogStoreConfig::default().max_bytes
        );
        assert!(Dev::try_parse_from(["wfd", "--log-cache-max-bytes", "lots"]).is_err());
    }

    #[test]
    fn byte_sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("536870912"), Ok(512 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        for bad in [
            "",
            "MiB",
            "0",
            "12 parsecs",
            "-1",
            "99999999999999999999GiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
