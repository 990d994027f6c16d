//! The director (`wfd director`): keeps releases, stemcells, the cloud config and
//! deployments in its database ([`db`]), serves BOSH's HTTP API ([`api`]; `wf bosh`
//! talks to it through [`client`]), runs each change as a task with a log, and deploys
//! ([`deploy`]): VMs through the CPI, specs through the agents over NATS, rolling
//! updates with canaries. Its health monitor ([`crate::hm`]) runs in the same process.

pub mod api;
pub mod client;
pub mod db;
pub mod deploy;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;
use wf_messaging::{Bus, BusError};

use crate::agent::{agent_subject, AgentReply, AgentRequest};
use crate::cpi::{Cpi, CpiError};
use crate::hm::HmConfig;
use crate::manifest::ManifestError;
use crate::release::ReleaseError;

#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    #[error("database: {0}")]
    Database(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Cpi(#[from] CpiError),
    #[error("agent {agent_id} ({method}): {message}")]
    Agent {
        agent_id: String,
        method: String,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A deployment step that did not succeed (an instance not running after update...).
    #[error("{0}")]
    Failed(String),
    #[error("blobstore: {0}")]
    Blobstore(String),
}

/// The director's settings; [`DirectorConfig::default`] documents each default.
#[derive(Debug, Clone)]
pub struct DirectorConfig {
    /// The director's name, in `/info`.
    pub name: String,
    /// `sqlite://path?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// Where package blobs (and uploaded stemcell images) are kept.
    pub blobstore_dir: PathBuf,
    /// The CPI executable and its arguments, run once per call.
    pub cpi: Vec<String>,
    /// The `admin` user's password (HTTP basic auth, BOSH's local user management).
    pub admin_password: String,
    /// How long a new VM's agent has to answer (BOSH: 600 s).
    pub agent_wait: Duration,
    pub hm: HmConfig,
}

impl Default for DirectorConfig {
    fn default() -> Self {
        DirectorConfig {
            name: "wf-director".into(),
            database_url: "sqlite::memory:".into(),
            blobstore_dir: PathBuf::from("./.wasmfoundry-director/blobs"),
            cpi: vec![],
            admin_password: String::new(),
            agent_wait: Duration::from_secs(600),
            hm: HmConfig::default(),
        }
    }
}

/// How long the director waits for an agent's reply, by method.
fn agent_timeout(method: &str) -> Duration {
    match method {
        // Fetching packages, draining a cell.
        "apply" | "drain" => Duration::from_secs(900),
        "stop" => Duration::from_secs(120),
        _ => Duration::from_secs(30),
    }
}

pub struct Director {
    pub config: DirectorConfig,
    pub uuid: String,
    pool: AnyPool,
    cpi: Cpi,
    bus: Bus,
    /// One task at a time per deployment (deploys, recreates, resurrections).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Task ids are `MAX(id) + 1`: one insert at a time.
    new_task: tokio::sync::Mutex<()>,
}

/// A running task: its id, and its log.
#[derive(Clone)]
pub struct TaskLog {
    director: Arc<Director>,
    pub id: i64,
}

impl TaskLog {
    /// Appends a line to the task's log (and the director's own log).
    pub async fn log(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        tracing::info!(task = self.id, "{line}");
        let stamped = format!("{} {line}", timestamp());
        if let Err(e) = db::append_task_log(&self.director.pool, self.id, &stamped).await {
            tracing::warn!(task = self.id, error = %e, "cannot write the task log");
        }
    }
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:02}:{:02}:{:02}", now.hour(), now.minute(), now.second())
}

impl Director {
    /// Opens the database (applying migrations) and the blobstore; tasks a previous
    /// director left unfinished are marked failed.
    pub async fn open(config: DirectorConfig, bus: Bus) -> Result<Arc<Director>, DirectorError> {
        if config.cpi.is_empty() {
            return Err(DirectorError::BadRequest("no CPI configured".into()));
        }
        let pool = wf_db::open(&config.database_url, db::MIGRATIONS)
            .await
            .map_err(|e| DirectorError::Database(e.to_string()))?;
        db::fail_unfinished_tasks(&pool).await?;
        std::fs::create_dir_all(&config.blobstore_dir).map_err(|e| {
            DirectorError::Blobstore(format!("{}: {e}", config.blobstore_dir.display()))
        })?;
        let uuid = uuid::Uuid::new_v4().to_string();
        Ok(Arc::new(Director {
            cpi: Cpi::new(config.cpi.clone(), &uuid),
            uuid,
            config,
            pool,
            bus,
            locks: Mutex::new(HashMap::new()),
            new_task: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs the health monitor until `cancel`.
    pub fn run(self: &Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::hm::run(self.clone(), self.bus.clone(), cancel))
    }

    fn deployment_lock(&self, deployment: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("locks")
            .entry(deployment.to_string())
            .or_default()
            .clone()
    }

    /// Starts `work` as a task and returns its id at once. A task on a deployment waits
    /// for the one before it; its result (or error) ends it as `done` (or `error`).
    pub async fn start_task<F, Fut>(
        self: &Arc<Self>,
        description: &str,
        deployment: Option<&str>,
        work: F,
    ) -> Result<i64, DirectorError>
    where
        F: FnOnce(TaskLog) -> Fut + Send + 'static,
        Fut: Future<Output = Result<String, DirectorError>> + Send + 'static,
    {
        let id = {
            let _one = self.new_task.lock().await;
            db::insert_task(&self.pool, description, deployment).await?
        };
        let task = TaskLog {
            director: self.clone(),
            id,
        };
        let lock = deployment.map(|d| self.deployment_lock(d));
        tokio::spawn(async move {
            let _held = match &lock {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            let outcome = work(task.clone()).await;
            let (state, result) = match outcome {
                Ok(result) => ("done", result),
                Err(e) => {
                    task.log(format!("Error: {e}")).await;
                    ("error", e.to_string())
                }
            };
            if let Err(e) = db::finish_task(&task.director.pool, task.id, state, &result).await {
                tracing::error!(task = task.id, error = %e, "cannot finish the task");
            }
        });
        Ok(id)
    }

    /// Sends `method` to an agent and waits for its value.
    pub async fn agent(
        &self,
        agent_id: &str,
        method: &str,
        arguments: Vec<Value>,
    ) -> Result<Value, DirectorError> {
        self.agent_within(agent_id, method, arguments, agent_timeout(method))
            .await
    }

    pub async fn agent_within(
        &self,
        agent_id: &str,
        method: &str,
        arguments: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value, DirectorError> {
        let failed = |message: String| DirectorError::Agent {
            agent_id: agent_id.to_string(),
            method: method.to_string(),
            message,
        };
        let request = AgentRequest {
            method: method.to_string(),
            arguments,
            reply_to: format!("director.{}", self.uuid),
        };
        let reply = self
            .bus
            .request(
                &agent_subject(agent_id),
                serde_json::to_vec(&request).expect("request JSON"),
                timeout,
            )
            .await
            .map_err(|e| match e {
                BusError::RequestTimeout { .. } => failed(format!("no answer within {timeout:?}")),
                BusError::NoResponders { .. } => failed("the agent is not listening".into()),
                other => failed(other.to_string()),
            })?;
        let reply: AgentReply = serde_json::from_slice(&reply.payload)
            .map_err(|e| failed(format!("invalid reply: {e}")))?;
        match (reply.value, reply.exception) {
            (_, Some(exception)) => Err(failed(exception.message)),
            (Some(value), None) => Ok(value),
            (None, None) => Ok(Value::Null),
        }
    }
}
