//! Cloud Controller: the CF V3 API (orgs, spaces, apps, packages, builds, droplets,
//! processes, routes, buildpacks), the blobstore, and the bridge to Diego: staging tasks, and
//! desired LRPs kept in sync with the apps (nsync), and tasks (`cf run-task`).

mod api;
mod audit;
mod auth;
pub mod blobstore;
mod crypto;
mod db;
mod deployments;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod logs;
pub mod manifest;
mod metadata;
pub mod metrics;
mod nsync;
mod orphaned_blobs;
mod osb;
mod quotas;
mod resource_cache;
mod revisions;
mod service_operations;
mod services;
mod signed_urls;
mod staging;
mod task_follower;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wf_bbs::BbsClient;
use wf_loggregator::{Envelope, LogStore, LogType};
use wf_messaging::Bus;
use wf_uaa::TokenVerifier;

pub use blobstore::S3Config;
pub use service_operations::BrokerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("controller database error: {0}")]
    Database(String),
    #[error("blobstore error: {0}")]
    Blobstore(String),
}

/// `Debug` shows no secret: not the signing secret nor the encryption keys (only their
/// labels), nor a database URL's password.
#[derive(Clone)]
pub struct ControllerConfig {
    pub database_url: String,
    /// Local blobstore root (packages, droplets, ...); with `blobstore_s3` it only holds
    /// uploads in progress (under its `tmp`).
    pub blobstore_dir: PathBuf,
    /// Keep blobs in this S3-compatible bucket rather than in `blobstore_dir`.
    pub blobstore_s3: Option<S3Config>,
    /// How cells reach this API (signed blob URLs are made under it).
    pub external_url: String,
    /// The shared domain app routes go under.
    pub apps_domain: String,
    pub uaa_url: String,
    /// Key for signed blob URLs.
    pub signing_secret: Vec<u8>,
    /// nsync bulk sync / staging scan interval (CF: 30 s).
    pub sync_interval: Duration,
    /// How often orphaned blob cleanup runs (see `orphaned_blobs`).
    pub orphaned_blobs_interval: Duration,
    /// How long a blob stays orphaned, and unwritten, before cleanup deletes it.
    pub orphaned_blobs_grace: Duration,
    /// Keys for secrets in the database (service credentials): (label, secret), the
    /// first one current; empty means one key derived from `signing_secret`.
    pub encryption_keys: Vec<(String, Vec<u8>)>,
    /// Service broker calls: timeouts and `last_operation` polling.
    pub brokers: BrokerConfig,
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key_labels: Vec<&str> = self
            .encryption_keys
            .iter()
            .map(|(l, _)| l.as_str())
            .collect();
        f.debug_struct("ControllerConfig")
            .field("database_url", &wf_db::redacted_url(&self.database_url))
            .field("blobstore_dir", &self.blobstore_dir)
            .field("blobstore_s3", &self.blobstore_s3)
            .field("external_url", &self.external_url)
            .field("apps_domain", &self.apps_domain)
            .field("uaa_url", &self.uaa_url)
            .field("sync_interval", &self.sync_interval)
            .field("orphaned_blobs_interval", &self.orphaned_blobs_interval)
            .field("orphaned_blobs_grace", &self.orphaned_blobs_grace)
            .field("encryption_keys", &key_labels)
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            database_url: "sqlite::memory:".into(),
            blobstore_dir: PathBuf::from("blobstore"),
            blobstore_s3: None,
            external_url: "http://127.0.0.1:9022".into(),
            apps_domain: "apps.localhost".into(),
            uaa_url: "http://127.0.0.1:9022".into(),
            signing_secret: b"change-me".to_vec(),
            sync_interval: Duration::from_secs(30),
            orphaned_blobs_interval: Duration::from_secs(3600),
            orphaned_blobs_grace: Duration::from_secs(3600),
            encryption_keys: Vec::new(),
            brokers: BrokerConfig::default(),
        }
    }
}

pub struct Controller {
    config: ControllerConfig,
    /// `external_url` without a trailing slash: the base of every link.
    base_url: String,
    db: db::Db,
    blobs: blobstore::Blobstore,
    signer: signed_urls::UrlSigner,
    bbs: BbsClient,
    bus: Bus,
    verifier: TokenVerifier,
    logs: Arc<LogStore>,
    /// nsync passes (per app and bulk) run one at a time, so that a bulk pass working
    /// from an older read of the database cannot undo a newer per-app change.
    nsync_lock: tokio::sync::Mutex<()>,
    /// Buildpack creates, moves and deletes run one at a time, so positions stay 1..n.
    buildpack_positions: tokio::sync::Mutex<()>,
    /// Encrypts the secrets kept in the database.
    crypto: crypto::Encryptor,
    /// Forwards bound apps' logs to their syslog drains (see `services`).
    drains: Arc<wf_loggregator::SyslogDrains>,
    /// Stops `drains` when `run` is cancelled.
    drains_cancel: CancellationToken,
    /// Carries out service broker operations (see `service_operations`).
    operations: service_operations::Runner,
}

impl Controller {
    pub async fn open(
        config: ControllerConfig,
        bbs: BbsClient,
        bus: Bus,
        verifier: TokenVerifier,
        logs: Arc<LogStore>,
    ) -> Result<Arc<Controller>, ControllerError> {
        let db = db::Db::connect(&config.database_url)
            .await
            .map_err(|e| ControllerError::Database(e.to_string()))?;
        db.ensure_shared_domain(&config.apps_domain)
            .await
            .map_err(|e| ControllerError::Database(e.to_string()))?;
        db.ensure_built_in_buildpacks(wf_buildpacks::BUILT_IN)
            .await
            .map_err(|e| ControllerError::Database(e.to_string()))?;
        let blobs = blobstore::Blobstore::open(&config.blobstore_dir, config.blobstore_s3.as_ref())
            .await
            .map_err(|e| ControllerError::Blobstore(e.to_string()))?;
        let base_url = config.external_url.trim_end_matches('/').to_string();
        let signer = signed_urls::UrlSigner::new(&base_url, &config.signing_secret);
        let crypto = if config.encryption_keys.is_empty() {
            let mut derived = config.signing_secret.clone();
            derived.extend_from_slice(b"/database-encryption");
            crypto::Encryptor::new(&[("default".to_string(), derived)])
        } else {
            crypto::Encryptor::new(&config.encryption_keys)
        };
        let drains_cancel = CancellationToken::new();
        let drains = wf_loggregator::SyslogDrains::start(&logs, drains_cancel.clone());
        let controller = Arc::new(Controller {
            base_url,
            db,
            blobs,
            signer,
            bbs,
            bus,
            verifier,
            logs,
            nsync_lock: tokio::sync::Mutex::new(()),
            buildpack_positions: tokio::sync::Mutex::new(()),
            crypto,
            drains,
            drains_cancel,
            operations: service_operations::Runner::default(),
            config,
        });
        services::sync_all_drains(&controller)
            .await
            .map_err(|e| ControllerError::Database(format!("{e:?}")))?;
        services::rotate_credentials(&controller)
            .await
            .map_err(|e| ControllerError::Database(format!("{e:?}")))?;
        Ok(controller)
    }

    /// The V3 API, the internal blob URLs and the log cache API.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let authorizer = Arc::new(logs::LogAccess::new(self.clone()));
        api::router(self.clone())
            .merge(signed_urls::router(self.clone()))
            .merge(wf_loggregator::rlp_router(
                self.logs.clone(),
                authorizer.clone(),
            ))
            .merge(wf_loggregator::log_cache_router(
                self.logs.clone(),
                authorizer,
            ))
            .merge(metrics::router(self.clone()))
    }

    /// Staging completion, task state tracking, nsync bulk sync, orphaned blob
    /// cleanup, service broker operations and syslog drains, until cancelled.
    pub fn run(self: &Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let staging = tokio::spawn(task_follower::follow::<staging::Staging>(
            self.clone(),
            cancel.clone(),
        ));
        let tasks = tokio::spawn(task_follower::follow::<tasks::CfTasks>(
            self.clone(),
            cancel.clone(),
        ));
        let nsync = tokio::spawn(nsync::run(self.clone(), cancel.clone()));
        let crashes = tokio::spawn(audit::watch_crashes(self.clone(), cancel.clone()));
        let deployments = tokio::spawn(deployments::run(self.clone(), cancel.clone()));
        let orphaned_blobs = tokio::spawn(orphaned_blobs::run(self.clone(), cancel.clone()));
        let broker_operations = tokio::spawn(service_operations::run(self.clone(), cancel.clone()));
        let drains_cancel = self.drains_cancel.clone();
        tokio::spawn(async move {
            let _ = tokio::join!(
                staging,
                tasks,
                nsync,
                crashes,
                deployments,
                orphaned_blobs,
                broker_operations
            );
            cancel.cancelled().await;
            drains_cancel.cancel();
        })
    }

    /// Publishes one log line of `app_guid` (source type `API`, `STG`, ...).
    fn emit_log(&self, app_guid: &str, source_type: &str, line: &str) {
        let envelope = Envelope::log(app_guid, "0", source_type, LogType::Out, line);
        wf_loggregator::emit(&self.bus, &envelope);
    }
}
