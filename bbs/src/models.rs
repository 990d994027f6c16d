//! The BBS records: DesiredLRP, ActualLRP, Task, cell presence, and the events that
//! report their changes. Field names and semantics follow Diego's `bbs/models`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The domain CC's apps live in (freshness gates destructive convergence).
pub const CF_APPS_DOMAIN: &str = "cf-apps";
/// The domain of staging tasks.
pub const CF_STAGING_DOMAIN: &str = "cf-app-staging";
/// The domain of user tasks (`wf run-task`).
pub const CF_TASKS_DOMAIN: &str = "cf-tasks";

/// Changes with every update of a record; `epoch` changes when the record is recreated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModificationTag {
    pub epoch: String,
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// One entry of the `cf-router` routes of a DesiredLRP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfRoute {
    pub hostnames: Vec<String>,
    /// The container port the route goes to.
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_segment: Option<String>,
}

/// The `routes` of a DesiredLRP, keyed by router kind as in Diego.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Routes {
    #[serde(rename = "cf-router", default, skip_serializing_if = "Vec::is_empty")]
    pub cf_router: Vec<CfRoute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// TCP connect to the port succeeds.
    Port,
    /// HTTP GET of `path` on the port answers 200.
    Http,
    /// The process is alive.
    Process,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDefinition {
    pub kind: CheckKind,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub timeout_ms: u64,
    pub interval_ms: u64,
}

/// What a cell runs for an LRP: the droplet, fetched from `droplet_uri` and checked
/// against `droplet_sha256`, with the given environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAction {
    pub droplet_uri: String,
    pub droplet_sha256: String,
    /// The process type's start command from the droplet (may be empty: the droplet's default).
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Diego's `log_rate_limit`: bytes per second the instance may log (`None`: the
    /// cell's default).
    #[serde(default)]
    pub log_rate_limit_bytes_per_second: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLrp {
    /// `^[a-zA-Z0-9_-]+$`; CC uses `<process guid>-<process version>`.
    pub process_guid: String,
    pub domain: String,
    pub instances: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    /// Container ports the instance listens on (CF: `[8080]`).
    pub ports: Vec<u16>,
    pub routes: Routes,
    pub start_timeout_ms: u64,
    pub check_definition: Option<CheckDefinition>,
    /// The app guid: where the instance's logs go.
    pub log_guid: String,
    /// Source type of the instance's logs (`APP/PROC/WEB`).
    pub log_source: String,
    #[serde(default)]
    pub metric_tags: BTreeMap<String, String>,
    /// Opaque to the BBS; CC keeps a freshness fingerprint here.
    #[serde(default)]
    pub annotation: String,
    #[serde(default)]
    pub placement_tags: Vec<String>,
    pub action: RunAction,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

/// The only fields of a DesiredLRP that may change after it is desired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DesiredLrpUpdate {
    pub instances: Option<u32>,
    pub routes: Option<Routes>,
    pub annotation: Option<String>,
    pub metric_tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActualLrpKey {
    pub process_guid: String,
    pub index: u32,
    pub domain: String,
}

/// Which instance holds an ActualLRP; empty (both fields "") while it is UNCLAIMED or CRASHED.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ActualLrpInstanceKey {
    pub instance_guid: String,
    pub cell_id: String,
}

impl ActualLrpInstanceKey {
    pub fn is_empty(&self) -> bool {
        self.instance_guid.is_empty() && self.cell_id.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetInfo {
    /// The address routers reach the instance at.
    pub address: String,
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub instance_address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActualLrpState {
    Unclaimed,
    Claimed,
    Running,
    Crashed,
}

impl ActualLrpState {
    /// The state's name as Diego spells it (`UNCLAIMED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ActualLrpState::Unclaimed => "UNCLAIMED",
            ActualLrpState::Claimed => "CLAIMED",
            ActualLrpState::Running => "RUNNING",
            ActualLrpState::Crashed => "CRASHED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Presence {
    Ordinary,
    Evacuating,
    Suspect,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Ordinary => "ORDINARY",
            Presence::Evacuating => "EVACUATING",
            Presence::Suspect => "SUSPECT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualLrp {
    pub key: ActualLrpKey,
    /// Empty (`instance_guid` and `cell_id` "") while UNCLAIMED or CRASHED.
    pub instance_key: ActualLrpInstanceKey,
    pub net_info: NetInfo,
    pub crash_count: u32,
    pub crash_reason: String,
    /// Why the auction could not place it (truncated to 1024 chars).
    pub placement_error: String,
    pub state: ActualLrpState,
    /// Unix ns of the last state change.
    pub since: i64,
    pub modification_tag: ModificationTag,
    pub presence: Presence,
    pub routable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Pending,
    Running,
    Completed,
    Resolving,
}

impl TaskState {
    /// The state's name as Diego spells it (`PENDING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Completed => "COMPLETED",
            TaskState::Resolving => "RESOLVING",
        }
    }
}

/// Stage an app: fetch the package, run the buildpacks, upload the droplet.
/// The task's result is the droplet's metadata as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageAction {
    pub package_uri: String,
    /// Where the droplet is uploaded (HTTP PUT of the droplet file).
    pub droplet_upload_uri: String,
    /// The buildpacks to run, in order: the ones the app names (then `skip_detect`), or
    /// every enabled buildpack by position (then the first whose detect passes runs).
    #[serde(default)]
    pub buildpacks: Vec<BuildpackRef>,
    /// Run the named buildpacks without detect: all but the last supply, the last
    /// finalizes (CF's multi-buildpack).
    #[serde(default)]
    pub skip_detect: bool,
    /// Signed URL of the app's buildpack cache (GET; 404 while there is none).
    #[serde(default)]
    pub buildpack_cache_download_uri: Option<String>,
    /// Signed URL the cell PUTs the new buildpack cache (a tgz) to after staging.
    #[serde(default)]
    pub buildpack_cache_upload_uri: Option<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

/// One buildpack of a staging: a built-in one (no `url`) or a custom one, whose zip
/// the cell downloads from `url` and checks against `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackRef {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    Stage(StageAction),
    /// Run a droplet once (`wf run-task`): its exit status is the task's outcome.
    Run(RunAction),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefinition {
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub action: TaskAction,
    /// Where the task's logs go (the app guid).
    pub log_guid: String,
    /// Source type of its logs (`STG` for staging, `APP/TASK/<name>` for tasks).
    pub log_source: String,
    #[serde(default)]
    pub annotation: String,
    #[serde(default)]
    pub placement_tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub task_guid: String,
    pub domain: String,
    pub definition: TaskDefinition,
    pub state: TaskState,
    /// The cell running it, empty while PENDING.
    pub cell_id: String,
    pub result: String,
    pub failed: bool,
    pub failure_reason: String,
    pub rejection_count: u32,
    /// Unix ns.
    pub created_at: i64,
    pub updated_at: i64,
    pub first_completed_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub containers: u64,
}

/// A cell's presence record (Locket), refreshed by its rep while it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellPresence {
    pub cell_id: String,
    /// Base URL of the rep's API, e.g. `http://127.0.0.1:1800`.
    pub rep_url: String,
    pub zone: String,
    pub capacity: Resources,
    #[serde(default)]
    pub placement_tags: Vec<String>,
}

/// What changed in the BBS, in the order it changed; consumed by the route-emitter,
/// the controller and the auctioneer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BbsEvent {
    DesiredLrpCreated {
        desired_lrp: DesiredLrp,
    },
    DesiredLrpChanged {
        before: DesiredLrp,
        after: DesiredLrp,
    },
    DesiredLrpRemoved {
        desired_lrp: DesiredLrp,
    },
    ActualLrpCreated {
        actual_lrp: ActualLrp,
    },
    ActualLrpChanged {
        before: ActualLrp,
        after: ActualLrp,
    },
    ActualLrpRemoved {
        actual_lrp: ActualLrp,
    },
    ActualLrpCrashed {
        actual_lrp: ActualLrp,
    },
    TaskCreated {
        task: Task,
    },
    TaskChanged {
        before: Task,
        after: Task,
    },
    TaskRemoved {
        task: Task,
    },
}
