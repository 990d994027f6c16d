//! The life of an ActualLRP instance on the cell: claim, fetch the droplet, start the
//! wasm on a port of its own (a server binds it; for a handler app the cell serves it),
//! health-check it, report RUNNING, and report how it ended (crashed, or stopped and
//! removed). Also runs one-off instances for Tasks.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wf_bbs::rep::LrpWork;
use wf_bbs::{CheckDefinition, CheckKind, EnvVar, NetInfo, PortMapping, RunAction};
use wf_buildpacks::AppKind;
use wf_loggregator::LogType;

use crate::app_logs::{LimitedLogs, LogLimits};
use crate::cell::{Cell, LrpPhase};
use crate::droplets::Droplet;
use crate::executor::{Exit, InstanceState, LineSink, RunSpec};
use crate::handler::{self, HandlerApp};
use crate::sandbox::SecurityGroups;

/// How long an instance may take to become healthy when its DesiredLRP does not say.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between health checks while an instance starts.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for a BBS call made while stopping.
const BBS_TIMEOUT: Duration = Duration::from_secs(10);
/// CF's container port for web processes.
const DEFAULT_CONTAINER_PORT: u16 = 8080;
const CELL_SOURCE: &str = "CELL";
const DEFAULT_LOG_SOURCE: &str = "APP/PROC/WEB";

/// How an instance's run ended.
enum Outcome {
    /// The rep was told to stop it (or the cell is shutting down).
    Stopped,
    Exited(Exit),
    /// It never ran or never became healthy.
    Failed(String),
}

/// Runs one ActualLRP instance from claim to removal; `stop` ends it.
pub async fn run_lrp(cell: Arc<Cell>, work: LrpWork, stop: CancellationToken) {
    let guid = work.instance_guid.clone();
    let key = work.key.clone();
    let instance_key = cell.instance_key(&guid);
    if let Err(e) = cell.bbs.claim_actual_lrp(&key, &instance_key).await {
        tracing::warn!(process_guid = %key.process_guid, index = key.index, error = %e, "claiming ActualLRP failed");
        cell.release_lrp(&guid);
        return;
    }
    cell.set_lrp_phase(&guid, LrpPhase::Claimed, None);
    let logs = InstanceLogs::new(
        &cell,
        &work.desired.log_guid,
        key.index,
        &work.desired.log_source,
    );
    let cell_id = cell.config.cell_id.clone();
    logs.cell(
        LogType::Out,
        &format!("Cell {cell_id} creating container for instance {guid}"),
    );

    let app_logs = logs.limited_app_sinks();
    let outcome = tokio::select! {
        _ = stop.cancelled() => Outcome::Stopped,
        outcome = start_and_wait(&cell, &work, &logs, &app_logs) => outcome,
    };
    // The app's last lines go out before the cell says how it ended.
    app_logs.forwarder.finish().await;
    match outcome {
        Outcome::Stopped => {
            logs.cell(
                LogType::Out,
                &format!("Cell {cell_id} stopping instance {guid}"),
            );
            let removed =
                tokio::time::timeout(BBS_TIMEOUT, cell.bbs.remove_actual_lrp(&key, &instance_key))
                    .await;
            match removed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "removing stopped ActualLRP"),
                Err(_) => tracing::warn!(%guid, "removing stopped ActualLRP timed out"),
            }
            logs.cell(
                LogType::Out,
                &format!("Cell {cell_id} destroying container for instance {guid}"),
            );
            logs.cell(
                LogType::Out,
                &format!("Cell {cell_id} successfully destroyed container for instance {guid}"),
            );
        }
        Outcome::Exited(exit) => {
            let log_type = if exit.status() == 0 {
                LogType::Out
            } else {
                LogType::Err
            };
            logs.cell(log_type, &exit.describe());
            crash(
                &cell,
                &work,
                &format!("{}: {}", logs.source_type, exit.describe()),
            )
            .await;
        }
        Outcome::Failed(reason) => {
            logs.cell(LogType::Err, &reason);
            crash(&cell, &work, &reason).await;
        }
    }
    cell.release_lrp(&guid);
}

async fn crash(cell: &Cell, work: &LrpWork, reason: &str) {
    let instance_key = cell.instance_key(&work.instance_guid);
    let crashed = tokio::time::timeout(
        BBS_TIMEOUT,
        cell.bbs.crash_actual_lrp(&work.key, &instance_key, reason),
    )
    .await;
    match crashed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(process_guid = %work.key.process_guid, error = %e, "reporting crash failed")
        }
        Err(_) => {
            tracing::warn!(process_guid = %work.key.process_guid, "reporting crash timed out")
        }
    }
}

async fn start_and_wait(
    cell: &Arc<Cell>,
    work: &LrpWork,
    logs: &InstanceLogs,
    app_logs: &LimitedLogs,
) -> Outcome {
    let desired = &work.desired;
    let (droplet, app) = match prepare_lrp(cell, &desired.action).await {
        Ok(prepared) => prepared,
        Err(reason) => return Outcome::Failed(reason),
    };
    let port = match cell.ports.allocate() {
        Ok(port) => port,
        Err(e) => return Outcome::Failed(format!("Failed to create container: no free port: {e}")),
    };
    let tmp = match instance_tmp_dir(&cell.config.data_dir) {
        Ok(tmp) => tmp,
        Err(e) => return Outcome::Failed(format!("Failed to create container: {e}")),
    };
    let container_port = desired
        .ports
        .first()
        .copied()
        .unwrap_or(DEFAULT_CONTAINER_PORT);
    let address = cell.config.advertise_address.clone();
    let env = instance_env(
        &desired.action.env,
        &[
            ("PORT", port.number().to_string()),
            ("CF_INSTANCE_INDEX", work.key.index.to_string()),
            ("CF_INSTANCE_GUID", work.instance_guid.clone()),
            ("CF_INSTANCE_PORT", port.number().to_string()),
            ("CF_INSTANCE_ADDR", format!("{address}:{}", port.number())),
            ("CF_INSTANCE_IP", address.clone()),
            ("CF_INSTANCE_INTERNAL_IP", address.clone()),
            (
                "CF_INSTANCE_PORTS",
                format!(
                    r#"[{{"external":{},"internal":{container_port}}}]"#,
                    port.number()
                ),
            ),
            ("INSTANCE_INDEX", work.key.index.to_string()),
            ("INSTANCE_GUID", work.instance_guid.clone()),
            ("MEMORY_LIMIT", format!("{}m", desired.memory_mb)),
            ("HOME", "/app".to_string()),
            ("TMPDIR", "/tmp".to_string()),
        ],
    );
    let spec = RunSpec {
        args: vec![start_command(&desired.action, &droplet)],
        env,
        app_dir: droplet.app_dir(),
        tmp_dir: tmp.path().to_path_buf(),
        memory_mb: u64::from(desired.memory_mb),
        listen_port: Some(port.number()),
        disk_mb: u64::from(desired.disk_mb),
        security_groups: security_groups(cell),
        stdout: app_logs.stdout.clone(),
        stderr: app_logs.stderr.clone(),
    };
    let runner = cell.clone();
    let mut running = AbortOnDrop(match app {
        LrpApp::Server(pre) => tokio::spawn(async move {
            runner
                .executor
                .run(&pre, spec)
                .await
                .map_err(|e| e.to_string())
        }),
        LrpApp::Handler(pre) => {
            let listener = match handler::bind(port.number()).await {
                Ok(listener) => listener,
                Err(e) => return Outcome::Failed(format!("Failed to create container: {e}")),
            };
            let app = Arc::new(HandlerApp::new(pre, spec, logs.cell_sink(LogType::Err)));
            tokio::spawn(async move { Ok(handler::serve(listener, app).await) })
        }
    });
    let cell_id = &cell.config.cell_id;
    logs.cell(
        LogType::Out,
        &format!(
            "Cell {cell_id} successfully created container for instance {}",
            work.instance_guid
        ),
    );

    let timeout = match desired.start_timeout_ms {
        0 => DEFAULT_START_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    let check = HealthCheck::new(desired.check_definition.as_ref(), port.number());
    tokio::select! {
        ended = &mut running.0 => return ended_outcome(ended),
        healthy = check.wait_healthy(timeout) => if !healthy {
            let failure = match check.kind {
                CheckKind::Http => format!("Failed to get 200 from {} on port {container_port}", check.path),
                _ => format!("Failed to make TCP connection to port {container_port}"),
            };
            return Outcome::Failed(format!(
                "Instance never healthy after {}s: {failure}",
                timeout.as_secs()
            ));
        }
    }
    logs.cell(LogType::Out, "Container became healthy");
    let net_info = NetInfo {
        address: address.clone(),
        ports: vec![PortMapping {
            container_port,
            host_port: port.number(),
        }],
        instance_address: address,
    };
    cell.set_lrp_phase(
        &work.instance_guid,
        LrpPhase::Running,
        Some(net_info.clone()),
    );
    let instance_key = cell.instance_key(&work.instance_guid);
    if let Err(e) = cell
        .bbs
        .start_actual_lrp(&work.key, &instance_key, net_info)
        .await
    {
        // Bulk sync reports it again.
        tracing::warn!(process_guid = %work.key.process_guid, error = %e, "reporting RUNNING failed");
    }
    let ended = (&mut running.0).await;
    drop(tmp);
    ended_outcome(ended)
}

fn ended_outcome(ended: Result<Result<Exit, String>, tokio::task::JoinError>) -> Outcome {
    match ended {
        Ok(Ok(exit)) => Outcome::Exited(exit),
        Ok(Err(e)) => Outcome::Failed(format!("Failed to create container: {e}")),
        Err(e) => Outcome::Failed(format!("instance failed: {e}")),
    }
}

/// What an LRP instance runs, by the droplet's kind.
enum LrpApp {
    /// A command component that binds its port itself.
    Server(CommandPre<InstanceState>),
    /// A `wasi:http` handler the cell serves, an instance per request.
    Handler(ProxyPre<InstanceState>),
}

/// Fetches the droplet and compiles its wasm as its kind says.
async fn prepare_lrp(cell: &Cell, action: &RunAction) -> Result<(Droplet, LrpApp), String> {
    let droplet = fetch_droplet(cell, action).await?;
    let (sha256, wasm) = (&droplet.metadata.wasm_sha256, droplet.wasm());
    let app = match droplet.metadata.kind {
        AppKind::Server => cell
            .executor
            .prepare(sha256, &wasm)
            .await
            .map(LrpApp::Server),
        AppKind::Handler => cell
            .executor
            .prepare_handler(sha256, &wasm)
            .await
            .map(LrpApp::Handler),
    };
    let app = app.map_err(|e| format!("Failed to create container: {e}"))?;
    Ok((droplet, app))
}

async fn fetch_droplet(cell: &Cell, action: &RunAction) -> Result<Droplet, String> {
    cell.droplets
        .fetch(&action.droplet_uri, &action.droplet_sha256)
        .await
        .map_err(|e| format!("Failed to create container: {e}"))
}

/// Fetches the droplet and compiles its wasm as a command (both cached); the error is
/// the reason the cell reports.
pub async fn prepare(
    cell: &Cell,
    action: &RunAction,
) -> Result<(Droplet, CommandPre<InstanceState>), String> {
    let droplet = fetch_droplet(cell, action).await?;
    let pre = cell
        .executor
        .prepare(&droplet.metadata.wasm_sha256, &droplet.wasm())
        .await
        .map_err(|e| format!("Failed to create container: {e}"))?;
    Ok((droplet, pre))
}

/// Runs the droplet of `action` once to its end (a Task): no port, logs to `logs`.
pub async fn run_once(
    cell: &Arc<Cell>,
    action: &RunAction,
    memory_mb: u32,
    disk_mb: u32,
    logs: &InstanceLogs,
) -> Result<Exit, String> {
    let (droplet, pre) = prepare(cell, action).await?;
    let tmp = instance_tmp_dir(&cell.config.data_dir)
        .map_err(|e| format!("Failed to create container: {e}"))?;
    let app_logs = logs.limited_app_sinks();
    let env = instance_env(
        &action.env,
        &[
            ("MEMORY_LIMIT", format!("{memory_mb}m")),
            ("HOME", "/app".to_string()),
            ("TMPDIR", "/tmp".to_string()),
        ],
    );
    let spec = RunSpec {
        args: command_args(&start_command(action, &droplet)),
        env,
        app_dir: droplet.app_dir(),
        tmp_dir: tmp.path().to_path_buf(),
        memory_mb: u64::from(memory_mb),
        listen_port: None,
        disk_mb: u64::from(disk_mb),
        security_groups: security_groups(cell),
        stdout: app_logs.stdout.clone(),
        stderr: app_logs.stderr.clone(),
    };
    let exit = cell
        .executor
        .run(&pre, spec)
        .await
        .map_err(|e| format!("Failed to create container: {e}"));
    app_logs.forwarder.finish().await;
    exit
}

/// The cell's security groups for an instance, with the cell's own address internal.
fn security_groups(cell: &Cell) -> SecurityGroups {
    let own = cell.config.advertise_address.parse().ok();
    SecurityGroups::new(cell.config.security_groups.clone()).with_internal_addresses(own)
}

/// `argv[0]`: the action's command, else the droplet's `web` process type.
fn start_command(action: &RunAction, droplet: &Droplet) -> String {
    if !action.command.is_empty() {
        return action.command.clone();
    }
    droplet
        .metadata
        .process_types
        .get("web")
        .cloned()
        .unwrap_or_else(|| droplet.metadata.wasm.clone())
}

/// A task's WASI args: its command split on whitespace (`app.wasm migrate --all` runs
/// the droplet's module with argv `["app.wasm", "migrate", "--all"]`); never empty.
fn command_args(command: &str) -> Vec<String> {
    let args: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    if args.is_empty() {
        vec![command.to_string()]
    } else {
        args
    }
}

/// The action's env with the platform's variables on top (apps cannot override them).
fn instance_env(action_env: &[EnvVar], platform: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = action_env
        .iter()
        .filter(|v| !platform.iter().any(|(name, _)| *name == v.name))
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    env.extend(platform.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

fn instance_tmp_dir(data_dir: &Path) -> std::io::Result<tempfile::TempDir> {
    let dir = data_dir.join("instances");
    std::fs::create_dir_all(&dir)?;
    tempfile::tempdir_in(dir)
}

/// The health check of an instance: the DesiredLRP's, aimed at the instance's host port.
#[derive(Debug, Clone)]
struct HealthCheck {
    kind: CheckKind,
    port: u16,
    /// For HTTP checks: the path that must answer 200.
    path: String,
    /// Per attempt.
    attempt_timeout: Duration,
}

impl HealthCheck {
    fn new(definition: Option<&CheckDefinition>, host_port: u16) -> HealthCheck {
        HealthCheck {
            kind: definition.map(|d| d.kind).unwrap_or(CheckKind::Port),
            port: host_port,
            path: definition
                .and_then(|d| d.path.clone())
                .unwrap_or_else(|| "/".to_string()),
            attempt_timeout: match definition.map(|d| d.timeout_ms) {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => Duration::from_secs(1),
            },
        }
    }

    async fn attempt(&self) -> bool {
        let check = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            if self.kind != CheckKind::Http {
                return Ok::<bool, std::io::Error>(true);
            }
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.path, self.port
            );
            stream.write_all(request.as_bytes()).await?;
            let mut head = [0u8; 16];
            let n = stream.read(&mut head).await?;
            Ok(head[..n].starts_with(b"HTTP/1.1 200") || head[..n].starts_with(b"HTTP/1.0 200"))
        };
        matches!(
            tokio::time::timeout(self.attempt_timeout, check).await,
            Ok(Ok(true))
        )
    }

    /// Polls until the instance passes or `timeout` passes.
    async fn wait_healthy(&self, timeout: Duration) -> bool {
        if self.kind == CheckKind::Process {
            return true;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.attempt().await {
                return true;
            }
            tokio::time::sleep(HEALTH_CHECK_INTERVAL).await;
        }
        false
    }
}

/// Aborts the task when dropped, so a stopped instance's wasm stops with it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where an instance's logs go: app output under its log source, cell lines as CELL.
#[derive(Clone)]
pub struct InstanceLogs {
    bus: wf_messaging::Bus,
    source_id: String,
    instance_id: String,
    pub source_type: String,
    /// Source type of the cell's own lines: CELL for instances, the task's for tasks.
    cell_source_type: String,
}

impl InstanceLogs {
    pub fn new(cell: &Cell, log_guid: &str, index: u32, log_source: &str) -> InstanceLogs {
        let source_type = if log_source.is_empty() {
            DEFAULT_LOG_SOURCE
        } else {
            log_source
        };
        InstanceLogs {
            bus: cell.bus.clone(),
            source_id: log_guid.to_string(),
            instance_id: index.to_string(),
            source_type: source_type.to_string(),
            cell_source_type: CELL_SOURCE.to_string(),
        }
    }

    /// Logs of a Task: the cell's lines go out under the task's source type (CF shows
    /// `[STG/0] Cell ... creating container` while staging).
    pub fn for_task(cell: &Cell, log_guid: &str, log_source: &str) -> InstanceLogs {
        let mut logs = InstanceLogs::new(cell, log_guid, 0, log_source);
        logs.cell_source_type = logs.source_type.clone();
        logs
    }

    pub fn cell(&self, log_type: LogType, line: &str) {
        self.emit(&self.cell_source_type, log_type, line.as_bytes());
    }

    pub fn app(&self, log_type: LogType, line: &str) {
        self.emit(&self.source_type, log_type, line.as_bytes());
    }

    fn emit(&self, source_type: &str, log_type: LogType, line: &[u8]) {
        let envelope = wf_loggregator::Envelope::log(
            &self.source_id,
            &self.instance_id,
            source_type,
            log_type,
            line,
        );
        wf_loggregator::emit(&self.bus, &envelope);
    }

    pub fn app_sink(&self, log_type: LogType) -> LineSink {
        let logs = self.clone();
        Arc::new(move |line: &[u8]| logs.emit(&logs.source_type, log_type, line))
    }

    /// The app's stdout and stderr sinks behind the instance's log rate limit.
    pub fn limited_app_sinks(&self) -> LimitedLogs {
        crate::app_logs::limit(
            self.app_sink(LogType::Out),
            self.app_sink(LogType::Err),
            LogLimits::default(),
        )
    }

    /// The cell's lines about the instance, as a sink (a handler's failed requests).
    pub fn cell_sink(&self, log_type: LogType) -> LineSink {
        let logs = self.clone();
        Arc::new(move |line: &[u8]| logs.emit(&logs.cell_source_type, log_type, line))
    }
}

/// Hands out host ports for instances: free ones the OS picks, never one already leased.
#[derive(Default)]
pub struct PortAllocator {
    leased: Mutex<HashSet<u16>>,
}

/// A port held for an instance until dropped.
pub struct PortLease {
    port: u16,
    allocator: Arc<PortAllocator>,
}

impl PortLease {
    pub fn number(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.allocator
            .leased
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}

impl PortAllocator {
    pub fn allocate(self: &Arc<Self>) -> std::io::Result<PortLease> {
        for _ in 0..64 {
            let port = std::net::TcpListener::bind(("0.0.0.0", 0))?
                .local_addr()?
                .port();
            let mut leased = self.leased.lock().unwrap_or_else(|e| e.into_inner());
            if leased.insert(port) {
                return Ok(PortLease {
                    port,
                    allocator: self.clone(),
                });
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no unleased port found",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_commands_become_args() {
        assert_eq!(command_args("app.wasm  task x"), ["app.wasm", "task", "x"]);
        assert_eq!(command_args("app.wasm"), ["app.wasm"]);
        assert_eq!(command_args(""), [""]);
    }

    #[test]
    fn platform_variables_win_over_the_apps() {
        let action_env = vec![
            EnvVar {
                name: "PORT".into(),
                value: "1".into(),
            },
            EnvVar {
                name: "GREETING".into(),
                value: "hi".into(),
            },
        ];
        let env = instance_env(&action_env, &[("PORT", "61000".to_string())]);
        assert_eq!(
            env,
            [
                ("GREETING".to_string(), "hi".to_string()),
                ("PORT".to_string(), "61000".to_string())
            ]
        );
    }

    #[test]
    fn leased_ports_are_distinct_until_released() {
        let ports = Arc::new(PortAllocator::default());
        let a = ports.allocate().unwrap();
        let b = ports.allocate().unwrap();
        assert_ne!(a.number(), b.number());
        let number = a.number();
        drop(a);
        assert!(!ports.leased.lock().unwrap().contains(&number));
    }

    #[tokio::test]
    async fn health_checks_pass_once_the_port_listens() {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = HealthCheck::new(None, port);
        assert!(check.wait_healthy(Duration::from_secs(2)).await);
        drop(listener);
        assert!(!check.wait_healthy(Duration::from_millis(300)).await);
        let process = CheckDefinition {
            kind: CheckKind::Process,
            port: 8080,
            path: None,
            timeout_ms: 0,
            interval_ms: 0,
        };
        assert!(
            HealthCheck::new(Some(&process), port)
                .wait_healthy(Duration::ZERO)
                .await
        );
    }

    #[tokio::test]
    async fn http_health_checks_want_a_200() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let statuses = [
            "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
        ];
        tokio::spawn(async move {
            for status in statuses {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                stream.write_all(status.as_bytes()).await.unwrap();
            }
        });
        let http = CheckDefinition {
            kind: CheckKind::Http,
            port: 8080,
            path: Some("/health".into()),
            timeout_ms: 1000,
            interval_ms: 0,
        };
        let check = HealthCheck::new(Some(&http), port);
        assert!(!check.attempt().await);
        assert!(check.attempt().await);
    }
}
