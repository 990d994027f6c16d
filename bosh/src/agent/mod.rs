//! The BOSH agent (`wfd agent`), one per VM: reads the settings its CPI wrote, connects
//! to the director's NATS, answers the director on `agent.<agent_id>` (`ping`,
//! `get_state`, `apply`, `start`, `stop`, `drain`, `mount_disk`), supervises the jobs of
//! the spec it was given ([`jobs`]) and heartbeats on `hm.agent.heartbeat.<agent_id>`.
//!
//! Its base directory is the VM's `/var/vcap`: `bosh/settings.json`, `data/` (packages,
//! jobs, the applied spec), `store` (the persistent disk, when one is attached) and
//! `sys/log/<job>.log`.

pub mod jobs;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha1::Digest as _;
use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;

pub use spec::{
    agent_subject, AgentReply, AgentRequest, AgentState, ApplySpec, Blobstore, Disks, Drain,
    Heartbeat, JobSpec, JobState, PackageSpec, Settings, HEARTBEAT_PREFIX, SETTINGS_PATH,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("reading the agent settings {path}: {reason}")]
    Settings { path: PathBuf, reason: String },
    #[error(transparent)]
    Bus(#[from] wf_messaging::BusError),
}

/// Runs the agent of the VM whose base directory is `base_dir` until `cancel`, then
/// stops its jobs.
pub async fn run(base_dir: &Path, cancel: CancellationToken) -> Result<(), AgentError> {
    let settings_path = base_dir.join(SETTINGS_PATH);
    let settings: Settings = std::fs::read_to_string(&settings_path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        .map_err(|reason| AgentError::Settings {
            path: settings_path.clone(),
            reason,
        })?;
    let bus = connect(&settings.mbus, &cancel).await?;
    let Some(bus) = bus else { return Ok(()) };
    let agent = Arc::new(Agent {
        base: base_dir.to_path_buf(),
        spec: Mutex::new(read_json(&base_dir.join("data/spec.json"))),
        supervisor: jobs::Supervisor::default(),
        http: reqwest::Client::new(),
        settings,
    });
    let mut requests = bus
        .subscribe(&agent_subject(&agent.settings.agent_id))
        .await?;
    println!("agent {}: listening", agent.settings.agent_id);
    // A rebooted VM starts the jobs it ran.
    if agent.base.join("data/started").exists() {
        if let Err(e) = agent.start_jobs() {
            tracing::warn!(error = %e, "cannot start the jobs after a reboot");
        }
    }
    let heartbeats = tokio::spawn(heartbeat(agent.clone(), bus.clone(), cancel.clone()));
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => break,
            message = requests.next() => message,
        };
        let Some(message) = message else { break };
        let (agent, bus) = (agent.clone(), bus.clone());
        // Each request on its own: a long drain must not hold up pings.
        tokio::spawn(async move {
            let reply = match serde_json::from_slice::<AgentRequest>(&message.payload) {
                Ok(request) => agent.handle(request).await,
                Err(e) => Err(format!("invalid request: {e}")),
            };
            let reply = match reply {
                Ok(value) => AgentReply {
                    value: Some(value),
                    exception: None,
                },
                Err(message) => AgentReply {
                    value: None,
                    exception: Some(spec::AgentException { message }),
                },
            };
            if let Some(to) = message.reply {
                let payload = serde_json::to_vec(&reply).expect("reply JSON");
                if let Err(e) = bus.publish(&to, payload).await {
                    tracing::warn!(error = %e, "cannot reply to the director");
                }
            }
        });
    }
    agent.supervisor.stop().await;
    heartbeats.abort();
    Ok(())
}

/// Connects to NATS, retrying until it answers; `None` when cancelled first.
async fn connect(url: &str, cancel: &CancellationToken) -> Result<Option<Bus>, AgentError> {
    loop {
        match Bus::nats(url).await {
            Ok(bus) => return Ok(Some(bus)),
            Err(e @ wf_messaging::BusError::InvalidUrl { .. }) => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, "NATS not reachable yet"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct Agent {
    settings: Settings,
    base: PathBuf,
    spec: Mutex<Option<ApplySpec>>,
    supervisor: jobs::Supervisor,
    http: reqwest::Client,
}

impl Agent {
    async fn handle(&self, request: AgentRequest) -> Result<Value, String> {
        match request.method.as_str() {
            "ping" => Ok(json!("pong")),
            "get_state" => Ok(serde_json::to_value(self.state()).expect("state JSON")),
            "apply" => {
                let spec: ApplySpec = request
                    .arguments
                    .first()
                    .cloned()
                    .ok_or("apply needs a spec")
                    .and_then(|v| serde_json::from_value(v).map_err(|_| "invalid apply spec"))
                    .map_err(str::to_string)?;
                self.apply(spec).await?;
                Ok(json!("applied"))
            }
            "start" => {
                self.start_jobs()?;
                std::fs::write(self.base.join("data/started"), "")
                    .map_err(|e| format!("recording the start: {e}"))?;
                Ok(json!("started"))
            }
            "stop" => {
                let _ = std::fs::remove_file(self.base.join("data/started"));
                self.supervisor.stop().await;
                Ok(json!("stopped"))
            }
            "drain" => {
                self.supervisor.drain(&self.http).await?;
                Ok(json!(0))
            }
            "mount_disk" | "unmount_disk" => {
                // The CPI attached the disk where the jobs' `store` links point.
                Ok(json!({}))
            }
            other => Err(format!("unknown message {other}")),
        }
    }

    fn state(&self) -> AgentState {
        let spec = self
            .spec
            .lock()
            .expect("spec lock")
            .clone()
            .unwrap_or_default();
        let (job_state, processes) = self.supervisor.state();
        AgentState {
            agent_id: self.settings.agent_id.clone(),
            job_state,
            deployment: spec.deployment,
            name: spec.name,
            index: spec.index,
            id: spec.id,
            configuration_hash: spec.configuration_hash,
            processes,
            vm: self.settings.vm.clone(),
        }
    }

    /// Fetches the spec's packages and lays out its jobs' directories; the jobs run from
    /// there at the next `start`.
    async fn apply(&self, spec: ApplySpec) -> Result<(), String> {
        for package in spec.packages.values() {
            self.fetch_package(package).await?;
        }
        let (base, laid_out) = (self.base.clone(), spec.clone());
        tokio::task::spawn_blocking(move || lay_out(&base, &laid_out))
            .await
            .map_err(|e| e.to_string())??;
        *self.spec.lock().expect("spec lock") = Some(spec);
        Ok(())
    }

    fn package_dir(&self, package: &PackageSpec) -> PathBuf {
        self.base
            .join("data/packages")
            .join(&package.name)
            .join(&package.sha1)
    }

    /// Downloads and unpacks a package unless this VM has it already; with a package
    /// cache, into the cache (unless it is there already) and links it into the VM.
    async fn fetch_package(&self, package: &PackageSpec) -> Result<(), String> {
        let dir = self.package_dir(package);
        if dir.is_dir() {
            return Ok(());
        }
        let unpacked = match &self.settings.package_cache {
            Some(cache) => cache.join(&package.name).join(&package.sha1),
            None => dir.clone(),
        };
        if !unpacked.is_dir() {
            self.download(package, &unpacked).await?;
        }
        if unpacked != dir {
            let link = |()| std::os::unix::fs::symlink(&unpacked, &dir);
            dir.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(link)
                .map_err(|e| format!("linking package {}: {e}", package.name))?;
        }
        Ok(())
    }

    /// Downloads `package`, checks its sha1 and unpacks it at `target`.
    async fn download(&self, package: &PackageSpec, target: &Path) -> Result<(), String> {
        let endpoint = self
            .settings
            .blobstores
            .first()
            .and_then(|b| b.options["endpoint"].as_str())
            .ok_or("no blobstore in the agent settings")?;
        let url = format!(
            "{}/{}",
            endpoint.trim_end_matches('/'),
            package.blobstore_id
        );
        let failed = |e: &dyn std::fmt::Display| format!("fetching package {}: {e}", package.name);
        let bytes = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| failed(&e))?
            .bytes()
            .await
            .map_err(|e| failed(&e))?;
        let sha1 = hex::encode(sha1::Sha1::digest(&bytes));
        if sha1 != package.sha1 {
            return Err(failed(&format!(
                "sha1 {sha1} does not match the expected {}",
                package.sha1
            )));
        }
        // Unpacked aside and renamed into place: another VM may unpack the same package
        // into a shared cache at the same time, and the first one there wins.
        let staging = target.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&staging)?;
            tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..])).unpack(&staging)?;
            match std::fs::rename(&staging, &target) {
                Err(_) if target.is_dir() => std::fs::remove_dir_all(&staging),
                renamed => renamed,
            }
        })
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))
    }

    /// Starts supervising the applied spec's jobs.
    fn start_jobs(&self) -> Result<(), String> {
        let spec = self
            .spec
            .lock()
            .expect("spec lock")
            .clone()
            .ok_or("nothing applied yet")?;
        let log_dir = self.base.join("sys/log");
        std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
        let mut jobs = Vec::new();
        for job in &spec.jobs {
            let (first, args) = job
                .command
                .split_first()
                .ok_or_else(|| format!("job {} has no command", job.name))?;
            let program = if first.contains('/') {
                PathBuf::from(first)
            } else {
                spec.packages
                    .values()
                    .map(|p| self.package_dir(p).join(first))
                    .find(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from(first))
            };
            jobs.push(jobs::Job {
                name: job.name.clone(),
                program,
                args: args.to_vec(),
                env: job.env.clone(),
                dir: self.base.join("data/jobs").join(&job.name),
                log: log_dir.join(format!("{}.log", job.name)),
                drain: job.drain.clone(),
            });
        }
        self.supervisor.start(jobs);
        Ok(())
    }
}

/// Writes each job's directory of `spec` (its files and a `store` link to the
/// persistent disk) and the spec itself under `base`.
fn lay_out(base: &Path, spec: &ApplySpec) -> Result<(), String> {
    // Without a persistent disk, `store` is a directory of the VM's own.
    let store = base.join("store");
    if std::fs::symlink_metadata(&store).is_err() {
        std::fs::create_dir_all(&store).map_err(|e| format!("creating the store: {e}"))?;
    }
    let jobs_dir = base.join("data/jobs");
    if jobs_dir.exists() {
        std::fs::remove_dir_all(&jobs_dir).map_err(|e| format!("clearing jobs: {e}"))?;
    }
    for job in &spec.jobs {
        let dir = jobs_dir.join(&job.name);
        for (path, content) in &job.files {
            let path = dir.join(path);
            if !path.starts_with(&dir) || path.components().any(|c| c.as_os_str() == "..") {
                return Err(format!(
                    "job {}: file {} escapes the job",
                    job.name,
                    path.display()
                ));
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, content)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(&store, dir.join("store"))
            .map_err(|e| format!("linking the store: {e}"))?;
    }
    write_json(&base.join("data/spec.json"), spec)
}

/// Publishes a heartbeat at once, then every `heartbeat_interval`.
async fn heartbeat(agent: Arc<Agent>, bus: Bus, cancel: CancellationToken) {
    let subject = format!("{HEARTBEAT_PREFIX}{}", agent.settings.agent_id);
    let interval = Duration::from_secs_f64(agent.settings.heartbeat_interval.max(0.05));
    loop {
        let state = agent.state();
        let applied = !state.deployment.is_empty();
        let heartbeat = Heartbeat {
            deployment: applied.then(|| state.deployment.clone()),
            job: applied.then(|| state.name.clone()),
            index: applied.then_some(state.index),
            job_state: state.job_state,
            vitals: vitals(&agent.base),
            node_id: applied.then(|| state.id.clone()),
        };
        let payload = serde_json::to_vec(&heartbeat).expect("heartbeat JSON");
        if let Err(e) = bus.publish(&subject, payload).await {
            tracing::warn!(error = %e, "heartbeat not sent");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// bosh-agent's vitals: load averages, memory and the base directory's disk use.
fn vitals(base: &Path) -> Value {
    let load: Vec<String> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(str::to_string)
        .collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (total, available) = (kb("MemTotal:"), kb("MemAvailable:"));
    let used = total.saturating_sub(available);
    let mem_percent = (used * 100).checked_div(total).unwrap_or(0);
    json!({
        "load": load,
        "mem": {"kb": used.to_string(), "percent": mem_percent.to_string()},
        "disk": {"ephemeral": {"percent": disk_percent(base).to_string()}},
    })
}

fn disk_percent(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 || stat.f_blocks == 0 {
        return 0;
    }
    let blocks = stat.f_blocks as u64;
    (blocks - stat.f_bavail as u64) * 100 / blocks
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).expect("JSON"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_laid_out_with_their_files_and_store_and_cannot_escape() {
        let base = tempfile::tempdir().unwrap();
        let job = |files: &[(&str, &str)]| JobSpec {
            name: "uaa".into(),
            release: "wf".into(),
            command: vec!["wfd".into(), "uaa".into()],
            env: Default::default(),
            files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
            drain: None,
        };
        let spec = ApplySpec {
            jobs: vec![job(&[("config/uaa.yml", "port: 1")])],
            ..Default::default()
        };
        lay_out(base.path(), &spec).unwrap();
        let dir = base.path().join("data/jobs/uaa");
        assert_eq!(
            std::fs::read_to_string(dir.join("config/uaa.yml")).unwrap(),
            "port: 1"
        );
        std::fs::write(dir.join("store/kept"), "x").unwrap();
        assert!(
            base.path().join("store/kept").is_file(),
            "store is the VM's store"
        );
        let read: ApplySpec = read_json(&base.path().join("data/spec.json")).unwrap();
        assert_eq!(read, spec);

        let evil = ApplySpec {
            jobs: vec![job(&[("../../../escaped", "x")])],
            ..Default::default()
        };
        let err = lay_out(base.path(), &evil).unwrap_err();
        assert!(err.contains("escapes the job"), "{err}");
        assert!(!base.path().join("escaped").exists());
    }
}
