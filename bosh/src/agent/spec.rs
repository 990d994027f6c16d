//! What the director and an agent say to each other: the agent's settings (written by
//! the CPI), the apply spec (an instance's rendered jobs, packages, networks and disk),
//! the request/reply envelopes on `agent.<agent_id>`, the state `get_state` reports and
//! the heartbeat on `hm.agent.heartbeat.<agent_id>`. Shapes follow bosh-agent's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the settings file lives under an agent's base directory.
pub const SETTINGS_PATH: &str = "bosh/settings.json";

/// The agent's settings, as a CPI writes them for a new VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub agent_id: String,
    /// `{"name": <vm cid>}`.
    #[serde(default)]
    pub vm: Value,
    /// The director's NATS URL.
    pub mbus: String,
    #[serde(default)]
    pub blobstores: Vec<Blobstore>,
    #[serde(default)]
    pub networks: Value,
    #[serde(default)]
    pub disks: Disks,
    #[serde(default)]
    pub env: Value,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval: f64,
    /// A directory the VMs of one machine share packages through (the local CPI's): a
    /// package is unpacked there once and linked into each VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_cache: Option<std::path::PathBuf>,
}

fn default_heartbeat_interval() -> f64 {
    20.0
}

/// A blobstore the agent fetches packages from; `dav`: `options.endpoint` is a URL that
/// `GET <endpoint>/<blobstore_id>` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blobstore {
    pub provider: String,
    #[serde(default)]
    pub options: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disks {
    #[serde(default)]
    pub system: String,
    #[serde(default)]
    pub ephemeral: Value,
    /// Disk cid -> where the VM sees it.
    #[serde(default)]
    pub persistent: BTreeMap<String, Value>,
}

/// An instance's desired state, as `apply` hands it over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplySpec {
    pub deployment: String,
    /// The instance group.
    pub name: String,
    pub index: u32,
    /// The instance's id (a uuid).
    pub id: String,
    #[serde(default)]
    pub az: Option<String>,
    #[serde(default)]
    pub networks: Value,
    pub jobs: Vec<JobSpec>,
    #[serde(default)]
    pub packages: BTreeMap<String, PackageSpec>,
    /// MiB; 0 when the instance has no persistent disk.
    #[serde(default)]
    pub persistent_disk: u64,
    /// A digest of everything above that the director rendered: a changed hash means
    /// the instance must be updated.
    pub configuration_hash: String,
}

/// One job of an instance, rendered: the process it runs and its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub release: String,
    /// The job's process: argv, run in the job's directory (which holds `files` and a
    /// `store` link to the persistent disk). A first word without `/` names a file of
    /// one of the packages (`wfd`).
    pub command: Vec<String>,
    /// The process's environment, added to the agent's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Relative path -> rendered content.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub drain: Option<Drain>,
}

/// How a job drains before it stops (bosh's drain script, for `wfd` jobs: an HTTP call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    /// POSTed to start draining, e.g. a cell's `/evacuate`.
    pub post: String,
    /// Seconds the job may take to exit by itself after the POST before it is stopped.
    #[serde(default = "default_drain_timeout")]
    pub timeout: u64,
}

fn default_drain_timeout() -> u64 {
    600
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSpec {
    pub name: String,
    pub version: String,
    /// Of the blob (a gzipped tarball of the package's files).
    pub sha1: String,
    pub blobstore_id: String,
}

/// A director request on `agent.<agent_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRequest {
    pub method: String,
    #[serde(default)]
    pub arguments: Vec<Value>,
    #[serde(default)]
    pub reply_to: String,
}

/// The agent's reply: `{"value": ...}` or `{"exception": {"message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<AgentException>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentException {
    pub message: String,
}

/// The state of an instance's jobs, as bosh reports `job_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Every job's process has been up for a moment.
    Running,
    /// Some job's process has just been (re)started.
    Starting,
    /// Some job's process died and waits to be restarted.
    Failing,
    /// Nothing is supposed to run.
    Stopped,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Starting => "starting",
            JobState::Failing => "failing",
            JobState::Stopped => "stopped",
        }
    }
}

/// What `get_state` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub agent_id: String,
    pub job_state: JobState,
    #[serde(default)]
    pub deployment: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub configuration_hash: String,
    #[serde(default)]
    pub processes: Vec<ProcessState>,
    #[serde(default)]
    pub vm: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    pub name: String,
    pub state: JobState,
    /// Times the process was restarted after dying.
    pub restarts: u32,
}

/// `hm.agent.heartbeat.<agent_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default)]
    pub deployment: Option<String>,
    /// The instance group.
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub index: Option<u32>,
    pub job_state: JobState,
    #[serde(default)]
    pub vitals: Value,
    /// The instance id.
    #[serde(default)]
    pub node_id: Option<String>,
}

/// The subject an agent listens on.
pub fn agent_subject(agent_id: &str) -> String {
    format!("agent.{agent_id}")
}

/// The prefix of heartbeat subjects (the health monitor subscribes to `<prefix>*`).
pub const HEARTBEAT_PREFIX: &str = "hm.agent.heartbeat.";
