//! Density of one cell (issue 3): how many idle handler apps, and how many idle server
//! instances, the cell's executor holds in one process, with the resident memory each
//! adds. Run through `bench/density.sh`, which raises the open-file limit first.
//!
//! `handlers`: the `handler` fixture served as the cell serves a handler app (its own
//! listening port, tmp dir and disk-quota watch, `handler::serve`), added until
//! `HANDLERS` or until one fails to start. `servers`: the `hello` fixture (a
//! `wasi:cli` command binding its port) run as the cell runs a server instance, each
//! holding a pool slot, added until `SERVERS` or until one fails to start or to
//! listen. The engine is sized as the cell sizes it for its memory (`MEMORY_MB`, default
//! this machine's), through `CellConfig::instance_slots`. At every `STEP` instances it
//! prints the resident memory (RSS) and open files; at the end a few instances are asked
//! a request each (they still answer) and the process's CPU time over 5 idle seconds.
//!
//! `cargo bench -p wf-host --bench density -- handlers|servers`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use wf_host::executor::{CommandApp, Executor, ExecutorConfig, LineSink, RunSpec};
use wf_host::handler::{self, HandlerApp};
use wf_host::sandbox::{InstanceUsage, SecurityGroups};
use wf_host::CellConfig;

/// A field of `/proc/self/status` (`VmRSS`, ...), in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// User plus system CPU time of the process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This machine's memory, in MiB.
fn machine_memory_mb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(16_384, |kib| kib / 1024)
}

fn spec(port: u16, dirs: &(tempfile::TempDir, tempfile::TempDir), listen: bool) -> RunSpec {
    let discard: LineSink = Arc::new(|_: &[u8]| {});
    RunSpec {
        args: vec!["app.wasm".into()],
        env: vec![
            ("PORT".into(), port.to_string()),
            ("CF_INSTANCE_INDEX".into(), "0".into()),
        ],
        app_dir: dirs.0.path().to_path_buf(),
        tmp_dir: dirs.1.path().to_path_buf(),
        memory_mb: 64,
        listen_port: listen.then_some(port),
        disk_mb: 1_024,
        security_groups: SecurityGroups::default(),
        stdout: discard.clone(),
        stderr: discard,
        usage: Arc::new(InstanceUsage::default()),
    }
}

/// One `GET /` on its own connection: the response's status line. (Out of file
/// descriptors, an instance cannot accept the connection and this waits.)
async fn get(port: u16) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response.lines().next().unwrap_or_default().to_string())
}

struct Report {
    kind: &'static str,
    baseline_kib: u64,
    started: Instant,
}

impl Report {
    fn step(&self, count: usize) {
        let rss = status_kib("VmRSS");
        println!(
            "{} {count:>6}: RSS {:>8} KiB (+{:.1} KiB each), {} open files, {:.1} s",
            self.kind,
            rss,
            (rss.saturating_sub(self.baseline_kib)) as f64 / count.max(1) as f64,
            open_files(),
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Requests to a few of `ports` (2 s each at most) and the idle CPU use.
    async fn end(&self, count: usize, ports: &[u16], stopped_by: Option<String>) {
        self.step(count);
        match stopped_by {
            Some(why) => println!("{}: stopped at {count}: {why}", self.kind),
            None => println!("{}: all {count} started", self.kind),
        }
        let sample: Vec<u16> = ports
            .iter()
            .step_by((ports.len() / 20).max(1))
            .copied()
            .collect();
        let mut answered = 0;
        let mut took = Vec::new();
        for &port in &sample {
            let started = Instant::now();
            let got = tokio::time::timeout(Duration::from_secs(2), get(port)).await;
            if matches!(got, Ok(Ok(line)) if line.contains(" 200 ")) {
                answered += 1;
            }
            took.push(started.elapsed());
        }
        took.sort();
        println!(
            "{}: {answered}/{} sampled instances answered 200 (median {:?})",
            self.kind,
            sample.len(),
            took.get(took.len() / 2).copied().unwrap_or_default()
        );
        let before = cpu_time();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle = cpu_time() - before;
        println!(
            "{}: idle CPU {:.1}% of a core over 5 s ({count} instances)",
            self.kind,
            idle.as_secs_f64() / 5.0 * 100.0
        );
    }
}

async fn handlers(executor: &Executor, target: u32, step: u32) {
    let wasm = wf_tests::fixtures::fixture_wasm("handler");
    let pre = executor
        .prepare_handler("density", &wasm)
        .await
        .expect("the handler fixture");
    let report = Report {
        kind: "handler apps",
        baseline_kib: status_kib("VmRSS"),
        started: Instant::now(),
    };
    let drain = CancellationToken::new();
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut stopped_by = None;
    for i in 1..=target {
        let started = async {
            let listener = handler::bind(0).await.map_err(|e| e.to_string())?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let dirs = (
                tempfile::tempdir().map_err(|e| format!("app dir: {e}"))?,
                tempfile::tempdir().map_err(|e| format!("tmp dir: {e}"))?,
            );
            let app = Arc::new(HandlerApp::new(
                pre.clone(),
                spec(port, &dirs, false),
                Arc::new(|_: &[u8]| {}),
            ));
            let task = tokio::spawn(handler::serve(listener, app, drain.clone()));
            Ok::<_, String>((port, dirs, task))
        };
        match started.await {
            Ok((port, dirs, task)) => {
                ports.push(port);
                held.push((dirs, task));
            }
            Err(e) => {
                stopped_by = Some(e);
                break;
            }
        }
        if i % step == 0 {
            report.step(i as usize);
        }
    }
    report.end(held.len(), &ports, stopped_by).await;
}

async fn servers(executor: &Arc<Executor>, target: u32, step: u32) {
    let wasm = wf_tests::fixtures::fixture_wasm("hello");
    let app: CommandApp = executor
        .prepare("density", &wasm)
        .await
        .expect("the hello fixture");
    let report = Report {
        kind: "server instances",
        baseline_kib: status_kib("VmRSS"),
        started: Instant::now(),
    };
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut stopped_by = None;
    for i in 1..=target {
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => {
                stopped_by = Some(format!("no free port: {e}"));
                break;
            }
        };
        let dirs = match (tempfile::tempdir(), tempfile::tempdir()) {
            (Ok(a), Ok(t)) => (a, t),
            (Err(e), _) | (_, Err(e)) => {
                stopped_by = Some(format!("instance dirs: {e}"));
                break;
            }
        };
        let run = spec(port, &dirs, true);
        let (executor, app) = (executor.clone(), app.clone());
        let mut task = tokio::spawn(async move { executor.run(&app, run).await });
        // Started once it listens; an instance that ends first could not start.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = loop {
            if task.is_finished() {
                let ended = (&mut task).await;
                break Err(format!("the instance ended: {ended:?}"));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err("not listening after 10 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if let Err(e) = listening {
            stopped_by = Some(e);
            break;
        }
        ports.push(port);
        held.push((dirs, task));
        if i % step == 0 {
            report.step(i as usize);
        }
    }
    report.end(held.len(), &ports, stopped_by).await;
}

fn main() {
    let kind = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "handlers".into());
    let config = CellConfig {
        memory_mb: std::env::var("MEMORY_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(machine_memory_mb),
        ..CellConfig::default()
    };
    let slots = config.instance_slots();
    let step = env_u32("STEP", 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let created = Instant::now();
    let executor = Arc::new(
        Executor::with_config(ExecutorConfig {
            instance_slots: slots,
            ..ExecutorConfig::default()
        })
        .expect("executor"),
    );
    println!(
        "cell: {} MiB, container capacity {}, {slots} pool slots (engine created in {:?}, RSS {} KiB, virtual {} GiB); open-file limit: see `ulimit -n`",
        config.memory_mb,
        config.container_capacity(),
        created.elapsed(),
        status_kib("VmRSS"),
        status_kib("VmSize") >> 20,
    );
    runtime.block_on(async {
        match kind.as_str() {
            "servers" => servers(&executor, env_u32("SERVERS", 2_000), step).await,
            _ => handlers(&executor, env_u32("HANDLERS", 10_000), step).await,
        }
    });
}
