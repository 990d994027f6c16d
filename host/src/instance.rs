//! The life of an ActualLRP instance on the cell: claim, fetch the droplet, start the
//! wasm on a port of its own (a server binds it; for a handler app the cell serves it;
//! a preview1 worker has none), wait until its readiness check passes, report RUNNING,
//! keep checking its liveness, and report how it ended: crashed (it exited, or became
//! unhealthy), or stopped gracefully (ActualLRP removed first so routers forget it,
//! then drained, then ended). Also runs one-off instances for Tasks.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wf_bbs::rep::LrpWork;
use wf_bbs::{CheckDefinition, CheckKind, EnvVar, NetInfo, PortMapping, RunAction};
use wf_buildpacks::AppKind;
use wf_loggregator::LogType;

use crate::app_logs::{LimitedLogs, LogBatchSink, LogLimits};
use crate::cell::{Cell, LrpPhase};
use crate::droplets::Droplet;
use crate::executor::{CommandApp, Exit, InstanceState, LineSink, RunSpec};
use crate::handler::{self, HandlerApp};
use crate::metrics::MeteredInstance;
use crate::sandbox::{InstanceUsage, SecurityGroups};

/// How long an instance may take to become healthy when its DesiredLRP does not say.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between readiness checks while an instance starts.
const STARTUP_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Time between liveness checks when the DesiredLRP does not say (CF's
/// `health-check-interval`: 30 s).
const DEFAULT_LIVENESS_INTERVAL: Duration = Duration::from_secs(30);
/// How long one check may take when the DesiredLRP does not say (CF's
/// `health-check-invocation-timeout`: 1 s).
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for a BBS call made while stopping.
const BBS_TIMEOUT: Duration = Duration::from_secs(10);
/// CF's container port for web processes.
const DEFAULT_CONTAINER_PORT: u16 = 8080;
const CELL_SOURCE: &str = "CELL";
/// Exit status of an instance killed because it did not stop within its grace (as a
/// CF process SIGKILLed after SIGTERM).
const KILLED_STATUS: i32 = 137;
const DEFAULT_LOG_SOURCE: &str = "APP/PROC/WEB";

/// How an instance's run ended.
enum Outcome {
    /// The rep was told to stop it (or the cell is shutting down) before it ran.
    Stopped,
    /// Stopped while it ran: its ActualLRP was removed first, then it drained and
    /// ended with `status` (143 for an instance the cell ended, as CF's SIGTERM).
    Drained {
        status: i32,
    },
    Exited(Exit),
    /// It never ran, never became healthy, or became unhealthy.
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

    let app_logs = logs.limited_app_sinks(&work.desired.action);
    let outcome = run_instance(&cell, &work, &logs, &app_logs, &stop).await;
    // The app's last lines go out before the cell says how it ended.
    app_logs.forwarder.finish().await;
    match outcome {
        Outcome::Stopped | Outcome::Drained { .. } => {
            if let Outcome::Stopped = outcome {
                logs.cell(
                    LogType::Out,
                    &format!("Cell {cell_id} stopping instance {guid}"),
                );
                remove_actual_lrp(&cell, &work).await;
            }
            logs.cell(
                LogType::Out,
                &format!("Cell {cell_id} destroying container for instance {guid}"),
            );
            if let Outcome::Drained { status } = outcome {
                logs.app(LogType::Out, &format!("Exit status {status}"));
            }
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

async fn remove_actual_lrp(cell: &Cell, work: &LrpWork) {
    let instance_key = cell.instance_key(&work.instance_guid);
    let removed = tokio::time::timeout(
        BBS_TIMEOUT,
        cell.bbs.remove_actual_lrp(&work.key, &instance_key),
    )
    .await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "removing stopped ActualLRP"),
        Err(_) => {
            tracing::warn!(instance_guid = %work.instance_guid, "removing stopped ActualLRP timed out")
        }
    }
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

/// Starts the instance, reports it RUNNING once healthy, and watches it: its end,
/// its liveness check, and `stop`, on which it stops gracefully (Diego's order: the
/// ActualLRP goes first, so its routes do, then the instance).
async fn run_instance(
    cell: &Arc<Cell>,
    work: &LrpWork,
    logs: &InstanceLogs,
    app_logs: &LimitedLogs,
    stop: &CancellationToken,
) -> Outcome {
    let started = tokio::select! {
        _ = stop.cancelled() => return Outcome::Stopped,
        started = start(cell, work, logs, app_logs) => started,
    };
    let mut instance = match started {
        Ok(instance) => instance,
        Err(outcome) => return outcome,
    };
    let desired = &work.desired;
    let _metered = cell.metrics.register(MeteredInstance {
        process_guid: work.key.process_guid.clone(),
        instance_guid: work.instance_guid.clone(),
        index: work.key.index,
        log_guid: desired.log_guid.clone(),
        tags: desired.metric_tags.clone(),
        memory_quota_bytes: u64::from(desired.memory_mb) << 20,
        disk_quota_bytes: u64::from(desired.disk_mb) << 20,
        usage: instance.usage.clone(),
    });
    cell.set_lrp_phase(
        &work.instance_guid,
        LrpPhase::Running,
        Some(instance.net_info.clone()),
    );
    let instance_key = cell.instance_key(&work.instance_guid);
    let reported = tokio::select! {
        _ = stop.cancelled() => None,
        reported = cell.bbs.start_actual_lrp(&work.key, &instance_key, instance.net_info.clone()) => Some(reported),
    };
    if let Some(Err(e)) = reported {
        // Bulk sync reports it again.
        tracing::warn!(process_guid = %work.key.process_guid, error = %e, "reporting RUNNING failed");
    }
    tokio::select! {
        ended = &mut instance.running.0 => return ended_outcome(ended),
        failure = instance.check.first_failure() => {
            logs.cell(LogType::Err, "Container became unhealthy");
            return Outcome::Failed(format!("Instance became unhealthy: {failure}"));
        }
        _ = stop.cancelled() => {}
    }
    logs.cell(
        LogType::Out,
        &format!(
            "Cell {} stopping instance {}",
            cell.config.cell_id, work.instance_guid
        ),
    );
    remove_actual_lrp(cell, work).await;
    let status = instance.drain(&cell.config).await;
    Outcome::Drained { status }
}

/// A started, healthy instance.
struct Started {
    running: AbortOnDrop<Result<Exit, String>>,
    check: HealthCheck,
    net_info: NetInfo,
    /// Cancelled to drain a handler app (the cell serves it); `None` for a server.
    drain: Option<CancellationToken>,
    usage: Arc<InstanceUsage>,
    _port: PortLease,
    _tmp: tempfile::TempDir,
}

impl Started {
    /// Ends the instance gracefully and returns its exit status: a handler app's
    /// requests in flight may finish within the graceful shutdown interval (killed
    /// after it: 137); a server keeps running for the stop drain window (while routers
    /// forget it) and is then ended (143), unless it ends by itself before.
    async fn drain(&mut self, config: &crate::CellConfig) -> i32 {
        let grace = config.graceful_shutdown_interval;
        let window = match &self.drain {
            Some(drain) => {
                drain.cancel();
                grace
            }
            None => config.stop_drain.min(grace),
        };
        match tokio::time::timeout(window, &mut self.running.0).await {
            Ok(Ok(Ok(exit))) => exit.status(),
            Ok(_) => Exit::Stopped.status(),
            Err(_) if self.drain.is_some() => KILLED_STATUS,
            Err(_) => Exit::Stopped.status(),
        }
    }
}

/// Creates the instance's container, starts its wasm and waits until it is healthy;
/// the error is how it ended instead.
async fn start(
    cell: &Arc<Cell>,
    work: &LrpWork,
    logs: &InstanceLogs,
    app_logs: &LimitedLogs,
) -> Result<Started, Outcome> {
    let desired = &work.desired;
    let failed = |why: String| Outcome::Failed(format!("Failed to create container: {why}"));
    let (droplet, app) = prepare_lrp(cell, &desired.action)
        .await
        .map_err(Outcome::Failed)?;
    let port = cell
        .ports
        .allocate()
        .map_err(|e| failed(format!("no free port: {e}")))?;
    let tmp = instance_tmp_dir(&cell.config.data_dir).map_err(|e| failed(e.to_string()))?;
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
    let usage = Arc::new(InstanceUsage::default());
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
        usage: usage.clone(),
    };
    let runner = cell.clone();
    let mut drain = None;
    let mut running = AbortOnDrop(match app {
        LrpApp::Server(pre) => tokio::spawn(async move {
            runner
                .executor
                .run(&pre, spec)
                .await
                .map_err(|e| e.to_string())
        }),
        LrpApp::Handler(pre) => {
            let listener = handler::bind(port.number())
                .await
                .map_err(|e| failed(e.to_string()))?;
            let app = Arc::new(HandlerApp::new(pre, spec, logs.cell_sink(LogType::Err)));
            let token = CancellationToken::new();
            drain = Some(token.clone());
            tokio::spawn(async move { Ok(handler::serve(listener, app, token).await) })
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
    let check = HealthCheck::new(
        desired.check_definition.as_ref(),
        port.number(),
        container_port,
    );
    tokio::select! {
        ended = &mut running.0 => return Err(ended_outcome(ended)),
        healthy = check.wait_healthy(timeout) => if let Err(failure) = healthy {
            return Err(Outcome::Failed(format!(
                "Instance never healthy after {}s: {failure}",
                timeout.as_secs()
            )));
        }
    }
    logs.cell(LogType::Out, "Container became healthy");
    Ok(Started {
        running,
        check,
        net_info: NetInfo {
            address: address.clone(),
            ports: vec![PortMapping {
                container_port,
                host_port: port.number(),
            }],
            instance_address: address,
        },
        drain,
        usage,
        _port: port,
        _tmp: tmp,
    })
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
    /// A command component that binds its port itself, or a preview1 module (a
    /// worker: no port, so its DesiredLRP's health check is `process`).
    Server(CommandApp),
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
pub async fn prepare(cell: &Cell, action: &RunAction) -> Result<(Droplet, CommandApp), String> {
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
    let app_logs = logs.limited_app_sinks(action);
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
        usage: Arc::new(InstanceUsage::default()),
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

/// The health check of an instance: the DesiredLRP's, aimed at the instance's host
/// port. As in Diego it serves twice: as the readiness check while the instance starts
/// (polled every [`STARTUP_CHECK_INTERVAL`] until it passes or the start timeout ends)
/// and as the liveness check once it runs (every `interval_ms`, CF's 30 s by default),
/// where one failure crashes the instance.
#[derive(Debug, Clone)]
struct HealthCheck {
    kind: CheckKind,
    port: u16,
    /// The port the app was told to use, for the reasons the developer reads.
    container_port: u16,
    /// For HTTP checks: the path that must answer 200.
    path: String,
    /// Per attempt (CF's invocation timeout, 1 s by default).
    attempt_timeout: Duration,
    /// Between liveness checks.
    interval: Duration,
}

impl HealthCheck {
    fn new(
        definition: Option<&CheckDefinition>,
        host_port: u16,
        container_port: u16,
    ) -> HealthCheck {
        let millis = |ms: Option<u64>, default: Duration| match ms {
            Some(ms) if ms > 0 => Duration::from_millis(ms),
            _ => default,
        };
        HealthCheck {
            kind: definition.map(|d| d.kind).unwrap_or(CheckKind::Port),
            port: host_port,
            container_port,
            path: definition
                .and_then(|d| d.path.clone())
                .unwrap_or_else(|| "/".to_string()),
            attempt_timeout: millis(definition.map(|d| d.timeout_ms), DEFAULT_CHECK_TIMEOUT),
            interval: millis(definition.map(|d| d.interval_ms), DEFAULT_LIVENESS_INTERVAL),
        }
    }

    /// One check; the error is why it failed, in Diego's words.
    async fn attempt(&self) -> Result<(), String> {
        let port = self.container_port;
        let failed = |why: String| match self.kind {
            CheckKind::Http => {
                format!("Failed to get 200 from {} on port {port}: {why}", self.path)
            }
            _ => format!("Failed to make TCP connection to port {port}: {why}"),
        };
        let check = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| io_reason(&e))?;
            if self.kind != CheckKind::Http {
                return Ok(());
            }
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.path, self.port
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| io_reason(&e))?;
            let mut head = [0u8; 16];
            let n = stream.read(&mut head).await.map_err(|e| io_reason(&e))?;
            let status_line = String::from_utf8_lossy(&head[..n]);
            match status_line.split_whitespace().nth(1) {
                Some("200") if status_line.starts_with("HTTP/1.") => Ok(()),
                Some(code) => Err(format!("received status code {code}")),
                None => Err("no HTTP response".to_string()),
            }
        };
        match tokio::time::timeout(self.attempt_timeout, check).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(failed(why)),
            Err(_) => Err(failed(format!(
                "timed out after {:.2} seconds",
                self.attempt_timeout.as_secs_f64()
            ))),
        }
    }

    /// The readiness check: polls until the instance passes, or returns the last
    /// failure once `timeout` passes. A `process` check passes at once.
    async fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        if self.kind == CheckKind::Process {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let failure = match self.attempt().await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if Instant::now() + STARTUP_CHECK_INTERVAL >= deadline {
                return Err(failure);
            }
            tokio::time::sleep(STARTUP_CHECK_INTERVAL).await;
        }
    }

    /// The liveness check: checks every interval and returns the first failure. A
    /// `process` check never fails here: that the wasm still runs is watched by whoever
    /// awaits it.
    async fn first_failure(&self) -> String {
        if self.kind == CheckKind::Process {
            return std::future::pending().await;
        }
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(failure) = self.attempt().await {
                return failure;
            }
        }
    }
}

/// An I/O error as Diego's health check words it (`connection refused`).
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".to_string(),
        _ => e.to_string(),
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
    /// The cell's app log counters.
    counters: Arc<crate::app_logs::LogCounters>,
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
            counters: cell.app_logs.clone(),
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
        wf_loggregator::emit(&self.bus, &self.envelope(source_type, log_type, line));
    }

    fn envelope(
        &self,
        source_type: &str,
        log_type: LogType,
        line: &[u8],
    ) -> wf_loggregator::Envelope {
        wf_loggregator::Envelope::log(
            &self.source_id,
            &self.instance_id,
            source_type,
            log_type,
            line,
        )
    }

    /// The app's stdout and stderr sinks behind the instance's log rate limit: the
    /// action's own (`cf scale -l`), else the cell's default.
    pub fn limited_app_sinks(&self, action: &RunAction) -> LimitedLogs {
        let mut limits = LogLimits::default();
        if let Some(rate) = action.log_rate_limit_bytes_per_second {
            limits.bytes_per_second = rate;
            limits.burst_bytes = limits.burst_bytes.min(rate);
        }
        let logs = self.clone();
        let sink: LogBatchSink = Arc::new(move |lines: &[(LogType, Bytes)]| {
            // Each envelope: the line in base64 and some 250 bytes of JSON around it.
            let bytes = lines.iter().map(|(_, l)| l.len() * 4 / 3 + 256).sum();
            let mut batch = wf_loggregator::LogBatch::with_capacity(bytes);
            for (log_type, line) in lines {
                batch.push(
                    &logs.source_id,
                    &logs.instance_id,
                    &logs.source_type,
                    *log_type,
                    line,
                );
            }
            wf_loggregator::emit_log_batch(&logs.bus, batch);
        });
        crate::app_logs::limit(sink, limits, self.counters.clone())
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

    /// A fixture started as `start` would (server or handler), for stopping it.
    async fn started(fixture: &str) -> Started {
        let executor = Arc::new(crate::executor::Executor::new().unwrap());
        let wasm = wf_tests::fixtures::fixture_wasm(fixture);
        let port = Arc::new(PortAllocator::default()).allocate().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let discard: LineSink = Arc::new(|_: &[u8]| {});
        let usage = Arc::new(InstanceUsage::default());
        let spec = RunSpec {
            args: vec!["app.wasm".into()],
            env: vec![("PORT".into(), port.number().to_string())],
            app_dir: tmp.path().to_path_buf(),
            tmp_dir: tmp.path().to_path_buf(),
            memory_mb: 64,
            listen_port: Some(port.number()),
            disk_mb: 0,
            security_groups: SecurityGroups::default(),
            stdout: discard.clone(),
            stderr: discard.clone(),
            usage: usage.clone(),
        };
        let (running, drain) = if fixture == "handler" {
            let pre = executor.prepare_handler(fixture, &wasm).await.unwrap();
            let listener = handler::bind(port.number()).await.unwrap();
            let app = Arc::new(HandlerApp::new(pre, spec, discard));
            let drain = CancellationToken::new();
            let serving = drain.clone();
            let task =
                tokio::spawn(async move { Ok(handler::serve(listener, app, serving).await) });
            (task, Some(drain))
        } else {
            let app = executor.prepare(fixture, &wasm).await.unwrap();
            let task =
                tokio::spawn(
                    async move { executor.run(&app, spec).await.map_err(|e| e.to_string()) },
                );
            (task, None)
        };
        let check = HealthCheck::new(None, port.number(), 8080);
        assert_eq!(check.wait_healthy(Duration::from_secs(30)).await, Ok(()));
        Started {
            running: AbortOnDrop(running),
            check,
            net_info: NetInfo {
                address: "127.0.0.1".into(),
                ports: Vec::new(),
                instance_address: "127.0.0.1".into(),
            },
            drain,
            usage,
            _port: port,
            _tmp: tmp,
        }
    }

    fn stop_config(stop_drain_ms: u64, grace_ms: u64) -> crate::CellConfig {
        crate::CellConfig {
            stop_drain: Duration::from_millis(stop_drain_ms),
            graceful_shutdown_interval: Duration::from_millis(grace_ms),
            ..crate::CellConfig::default()
        }
    }

    /// One HTTP/1.1 GET on its own connection: the status code (0 if none came).
    async fn status_of(port: u16, path: &str) -> u16 {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            return 0;
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_server_serves_through_the_drain_window_then_ends_with_143() {
        let mut instance = started("hello").await;
        let port = instance.check.port;
        let config = stop_config(400, 10_000);
        let began = Instant::now();
        {
            let drain = instance.drain(&config);
            tokio::pin!(drain);
            // Routers may still send during the window: the instance answers.
            let answered = tokio::select! {
                status = status_of(port, "/") => status,
                _ = &mut drain => panic!("the drain ended before the window"),
            };
            assert_eq!(answered, 200);
            assert_eq!(drain.await, 143);
        }
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(instance);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            assert!(Instant::now() < deadline, "still listening after the stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_handler_finishes_its_requests_or_is_killed_after_the_grace() {
        let mut instance = started("handler").await;
        let port = instance.check.port;
        let in_flight = tokio::spawn(async move { status_of(port, "/sleep?ms=300").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let began = Instant::now();
        assert_eq!(instance.drain(&stop_config(0, 5_000)).await, 143);
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(
            in_flight.await.unwrap(),
            200,
            "the request in flight finished"
        );

        let mut instance = started("handler").await;
        let port = instance.check.port;
        let stuck = tokio::spawn(async move { status_of(port, "/spin").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let began = Instant::now();
        assert_eq!(instance.drain(&stop_config(0, 300)).await, KILLED_STATUS);
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        drop(instance);
        assert_eq!(stuck.await.unwrap(), 0, "the stuck request was cut off");
    }

    #[tokio::test]
    async fn health_checks_pass_once_the_port_listens() {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = HealthCheck::new(None, port, 8080);
        assert_eq!(check.wait_healthy(Duration::from_secs(2)).await, Ok(()));
        drop(listener);
        assert_eq!(
            check.wait_healthy(Duration::from_millis(300)).await,
            Err("Failed to make TCP connection to port 8080: connection refused".to_string())
        );
        let process = CheckDefinition {
            kind: CheckKind::Process,
            port: 8080,
            path: None,
            timeout_ms: 0,
            interval_ms: 0,
        };
        assert_eq!(
            HealthCheck::new(Some(&process), port, 8080)
                .wait_healthy(Duration::ZERO)
                .await,
            Ok(())
        );
    }

    /// Answers each connection with the next of `statuses`, then stops listening.
    async fn answering(statuses: Vec<&'static str>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in statuses {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                stream.write_all(status.as_bytes()).await.unwrap();
            }
        });
        port
    }

    fn http_check(port: u16, interval_ms: u64) -> HealthCheck {
        let http = CheckDefinition {
            kind: CheckKind::Http,
            port: 8080,
            path: Some("/health".into()),
            timeout_ms: 1000,
            interval_ms,
        };
        HealthCheck::new(Some(&http), port, 8080)
    }

    #[tokio::test]
    async fn http_health_checks_want_a_200() {
        let port = answering(vec![
            "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
        ])
        .await;
        let check = http_check(port, 0);
        assert_eq!(
            check.attempt().await,
            Err(
                "Failed to get 200 from /health on port 8080: received status code 503".to_string()
            )
        );
        assert_eq!(check.attempt().await, Ok(()));
    }

    #[tokio::test]
    async fn liveness_checks_go_on_at_the_interval_until_one_fails() {
        let port = answering(vec![
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 500 Internal Server Error\r\n\r\n",
        ])
        .await;
        let check = http_check(port, 50);
        assert_eq!(check.interval, Duration::from_millis(50));
        let started = Instant::now();
        let failure = tokio::time::timeout(Duration::from_secs(5), check.first_failure())
            .await
            .expect("the third check fails");
        assert_eq!(
            failure,
            "Failed to get 200 from /health on port 8080: received status code 500"
        );
        // Two passing checks and a failing one, an interval apart.
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_port_that_closes_fails_the_liveness_check() {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let port_check = CheckDefinition {
            kind: CheckKind::Port,
            port: 8080,
            path: None,
            timeout_ms: 500,
            interval_ms: 20,
        };
        let check = HealthCheck::new(Some(&port_check), port, 8080);
        let failure = check.first_failure();
        tokio::pin!(failure);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut failure)
                .await
                .is_err(),
            "a listening port keeps passing"
        );
        drop(listener);
        let failure = tokio::time::timeout(Duration::from_secs(2), failure)
            .await
            .expect("the closed port fails");
        // Refused, or reset if a check was connecting as the listener closed.
        assert!(
            failure.starts_with("Failed to make TCP connection to port 8080: connection re"),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn liveness_defaults_are_cfs_and_process_checks_never_fail_here() {
        let check = HealthCheck::new(None, 1, 8080);
        assert_eq!(check.interval, Duration::from_secs(30));
        assert_eq!(check.attempt_timeout, Duration::from_secs(1));
        let process = CheckDefinition {
            kind: CheckKind::Process,
            port: 8080,
            path: None,
            timeout_ms: 0,
            interval_ms: 10,
        };
        // Nothing listens on port 1: a port check would fail at once.
        let check = HealthCheck::new(Some(&process), 1, 8080);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), check.first_failure())
                .await
                .is_err()
        );
    }
}
