//! The executor: one wasmtime [`Engine`] for the cell, compiled components cached by
//! the wasm's sha256, and running a component as a `wasi:cli` command in a sandbox of
//! its own (env, read-only app dir, private tmp dir, its port only, memory limit).
//!
//! CPU fairness comes from epoch interruption: a background thread ticks the epoch
//! every [`EPOCH_TICK`] and every store yields to the runtime at each tick, so a busy
//! loop in one instance cannot starve the others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::OnceCell;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

/// How often the epoch advances: the longest a guest runs before yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Longest stdout/stderr line kept whole; longer output is split.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("compiling the app's wasm: {0}")]
    Compile(String),
    #[error("the app's wasm is not a wasi:cli command component: {0}")]
    NotACommand(String),
    #[error("setting up the instance: {0}")]
    Setup(String),
    #[error("instantiating the app's wasm: {0}")]
    Instantiate(String),
}

/// How a wasm instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `wasi:cli/exit` or the end of `run`: 0 for success.
    Status(i32),
    /// The guest trapped (out of bounds, unreachable, out of memory, ...).
    Trap(String),
}

impl Exit {
    /// The process-like exit status: traps count as status 1.
    pub fn status(&self) -> i32 {
        match self {
            Exit::Status(code) => *code,
            Exit::Trap(_) => 1,
        }
    }

    /// What the cell logs and reports as the crash reason (CF: "Exited with status N").
    pub fn describe(&self) -> String {
        match self {
            Exit::Status(code) => format!("Exited with status {code}"),
            Exit::Trap(trap) => format!("Exited with status 1 (wasm trap: {trap})"),
        }
    }
}

/// Where one output stream of an instance goes, one line at a time.
pub type LineSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Everything an instance gets from the cell.
pub struct RunSpec {
    /// `argv`; the first is the start command.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Preopened read-only at `/app` (and the initial working directory).
    pub app_dir: PathBuf,
    /// Preopened read-write at `/tmp`.
    pub tmp_dir: PathBuf,
    pub memory_mb: u64,
    /// The only port the instance may listen on; `None` for tasks, which may not listen.
    pub listen_port: Option<u16>,
    pub stdout: LineSink,
    pub stderr: LineSink,
}

/// The cell's wasm runtime.
pub struct Executor {
    engine: Engine,
    linker: Linker<InstanceState>,
    compiled: Mutex<HashMap<String, Arc<OnceCell<CommandPre<InstanceState>>>>>,
}

impl Executor {
    /// Creates the engine and starts its epoch ticker (which ends with the engine).
    pub fn new() -> Result<Executor, ExecutorError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| ExecutorError::Setup(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| ExecutorError::Setup(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| ExecutorError::Setup(format!("starting the epoch ticker: {e}")))?;
        Ok(Executor {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// The command component in `wasm`, compiled once per `sha256` (on a blocking thread).
    pub async fn prepare(
        &self,
        sha256: &str,
        wasm: &Path,
    ) -> Result<CommandPre<InstanceState>, ExecutorError> {
        let cell = {
            let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
            compiled.entry(sha256.to_string()).or_default().clone()
        };
        let pre = cell
            .get_or_try_init(|| async {
                let engine = self.engine.clone();
                let path = wasm.to_path_buf();
                let component =
                    tokio::task::spawn_blocking(move || Component::from_file(&engine, &path))
                        .await
                        .map_err(|e| ExecutorError::Compile(e.to_string()))?
                        .map_err(|e| ExecutorError::Compile(format!("{e:#}")))?;
                let instance_pre = self
                    .linker
                    .instantiate_pre(&component)
                    .map_err(|e| ExecutorError::NotACommand(format!("{e:#}")))?;
                CommandPre::new(instance_pre)
                    .map_err(|e| ExecutorError::NotACommand(format!("{e:#}")))
            })
            .await?;
        Ok(pre.clone())
    }

    /// Runs the command to its end. Dropping the future stops the instance.
    pub async fn run(
        &self,
        pre: &CommandPre<InstanceState>,
        spec: RunSpec,
    ) -> Result<Exit, ExecutorError> {
        let stdout = LineStream::new(spec.stdout);
        let stderr = LineStream::new(spec.stderr);
        let ctx = {
            let mut builder = WasiCtx::builder();
            builder
                .args(&spec.args)
                .envs(&spec.env)
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .preopened_dir(&spec.app_dir, "/app", FsPerms::ReadOnly)
                .and_then(|b| b.preopened_dir(&spec.tmp_dir, "/tmp", FsPerms::ReadWrite))
                .map_err(|e| ExecutorError::Setup(format!("preopening directories: {e:#}")))?;
            let listen_port = spec.listen_port;
            builder
                .initial_cwd("/app")
                .allow_tcp(true)
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, usage| {
                    let allowed = socket_allowed(listen_port, addr, usage);
                    Box::pin(async move { allowed })
                });
            builder.build()
        };
        let limits = StoreLimitsBuilder::new()
            .memory_size(
                usize::try_from(spec.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            )
            .build();
        let mut store = Store::new(
            &self.engine,
            InstanceState {
                ctx,
                table: ResourceTable::new(),
                limits,
            },
        );
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let command = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| ExecutorError::Instantiate(format!("{e:#}")))?;
        let result = command.wasi_cli_run().call_run(&mut store).await;
        stdout.flush_partial();
        stderr.flush_partial();
        Ok(match result {
            Ok(Ok(())) => Exit::Status(0),
            Ok(Err(())) => Exit::Status(1),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Exit::Status(exit.0),
                None => Exit::Trap(format!("{e:#}")),
            },
        })
    }
}

/// The network policy of an instance: it may listen on its own port only (binding
/// port 0 is the implicit bind of an outgoing connection), accept anyone, and connect
/// out over TCP; UDP is off.
fn socket_allowed(listen_port: Option<u16>, addr: SocketAddr, usage: SocketAddrUse) -> bool {
    match usage {
        SocketAddrUse::TcpBind => addr.port() == 0 || Some(addr.port()) == listen_port,
        SocketAddrUse::TcpListen => Some(addr.port()) == listen_port,
        SocketAddrUse::TcpAccept | SocketAddrUse::TcpConnect => true,
        SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => false,
    }
}

/// The store data of one instance.
pub struct InstanceState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// A guest output stream cut into lines for the log sink. Every handle the guest
/// opens shares one buffer, so lines written through different handles stay whole.
#[derive(Clone)]
struct LineStream {
    inner: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    pending: Vec<u8>,
    sink: LineSink,
}

impl LineStream {
    fn new(sink: LineSink) -> LineStream {
        LineStream {
            inner: Arc::new(Mutex::new(LineBuffer {
                pending: Vec::new(),
                sink,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        buf.pending.extend_from_slice(bytes);
        while let Some(end) = buf.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.pending.drain(..=end).collect();
            (buf.sink)(trim_line_end(&line));
        }
        if buf.pending.len() > MAX_LINE {
            let line = std::mem::take(&mut buf.pending);
            (buf.sink)(&line);
        }
    }

    /// Emits what is left after the last newline (the guest ended mid-line).
    fn flush_partial(&self) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !buf.pending.is_empty() {
            let line = std::mem::take(&mut buf.pending);
            (buf.sink)(&line);
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl IsTerminal for LineStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LineStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LineStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl AsyncWrite for LineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collecting() -> (LineSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink_lines = lines.clone();
        let sink: LineSink = Arc::new(move |line: &[u8]| {
            sink_lines
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(line).into_owned())
        });
        (sink, lines)
    }

    #[test]
    fn output_is_cut_into_lines_across_handles() {
        let (sink, lines) = collecting();
        let stream = LineStream::new(sink);
        let other = stream.clone();
        stream.push(b"hel");
        other.push(b"lo\r\nwor");
        stream.push(b"ld\n\ntail");
        assert_eq!(*lines.lock().unwrap(), ["hello", "world", ""]);
        stream.flush_partial();
        assert_eq!(lines.lock().unwrap().last().unwrap(), "tail");
    }

    #[test]
    fn overlong_lines_are_split() {
        let (sink, lines) = collecting();
        let stream = LineStream::new(sink);
        stream.push(&vec![b'x'; MAX_LINE + 1]);
        assert_eq!(lines.lock().unwrap().len(), 1);
    }

    #[test]
    fn instances_listen_on_their_own_port_only() {
        let addr = |port| SocketAddr::from(([0, 0, 0, 0], port));
        assert!(socket_allowed(
            Some(61000),
            addr(61000),
            SocketAddrUse::TcpBind
        ));
        assert!(socket_allowed(
            Some(61000),
            addr(61000),
            SocketAddrUse::TcpListen
        ));
        assert!(!socket_allowed(
            Some(61000),
            addr(61001),
            SocketAddrUse::TcpBind
        ));
        assert!(!socket_allowed(
            Some(61000),
            addr(0),
            SocketAddrUse::TcpListen
        ));
        assert!(!socket_allowed(None, addr(8080), SocketAddrUse::TcpListen));
        assert!(socket_allowed(None, addr(0), SocketAddrUse::TcpBind));
        assert!(socket_allowed(None, addr(443), SocketAddrUse::TcpConnect));
        assert!(!socket_allowed(
            Some(61000),
            addr(61000),
            SocketAddrUse::UdpBind
        ));
    }

    #[test]
    fn exits_describe_themselves_as_cf_does() {
        assert_eq!(Exit::Status(1).describe(), "Exited with status 1");
        assert_eq!(Exit::Trap("unreachable".into()).status(), 1);
    }

    /// Runs a fixture app as the cell would, with `env`, on a fresh port.
    struct Running {
        port: u16,
        stdout: Arc<Mutex<Vec<String>>>,
        stderr: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<Result<Exit, ExecutorError>>,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    async fn start_fixture(executor: &Arc<Executor>, name: &str, index: &str) -> Running {
        let wasm = wf_tests::fixtures::fixture_wasm(name);
        let sha = format!("{name}-test");
        let pre = executor.prepare(&sha, &wasm).await.unwrap();
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (stdout_sink, stdout) = collecting();
        let (stderr_sink, stderr) = collecting();
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spec = RunSpec {
            args: vec!["app.wasm".into()],
            env: vec![
                ("PORT".into(), port.to_string()),
                ("CF_INSTANCE_INDEX".into(), index.into()),
            ],
            app_dir: dirs.0.path().to_path_buf(),
            tmp_dir: dirs.1.path().to_path_buf(),
            memory_mb: 64,
            listen_port: Some(port),
            stdout: stdout_sink,
            stderr: stderr_sink,
        };
        let runner = executor.clone();
        let task = tokio::spawn(async move { runner.run(&pre, spec).await });
        Running {
            port,
            stdout,
            stderr,
            task,
            _dirs: dirs,
        }
    }

    /// One HTTP/1.1 GET against the instance, retried until it listens.
    async fn get(port: u16, path: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(mut stream) => {
                    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
                    stream.write_all(request.as_bytes()).await.unwrap();
                    let mut response = String::new();
                    stream.read_to_string(&mut response).await.unwrap();
                    return response;
                }
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "never listened: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hello_fixture_serves_and_logs_and_stops_when_dropped() {
        let executor = Arc::new(Executor::new().unwrap());
        let running = start_fixture(&executor, "hello", "3").await;
        let response = get(running.port, "/some/path").await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("\r\n\r\nhello from 3\n"), "{response}");
        let stdout = running.stdout.lock().unwrap().clone();
        assert_eq!(
            stdout,
            [
                format!("listening on {}", running.port),
                "GET /some/path".to_string()
            ]
        );

        running.task.abort();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", running.port))
            .await
            .is_ok()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "instance still listening after abort"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_crasher_fixture_exits_with_status_1() {
        let executor = Arc::new(Executor::new().unwrap());
        let running = start_fixture(&executor, "crasher", "0").await;
        assert!(get(running.port, "/").await.ends_with("crasher 0\n"));
        get(running.port, "/crash").await;
        let exit = tokio::time::timeout(Duration::from_secs(10), running.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(exit, Exit::Status(1));
        assert_eq!(*running.stderr.lock().unwrap(), ["crashing"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_cannot_listen_on_other_ports() {
        let executor = Arc::new(Executor::new().unwrap());
        let wasm = wf_tests::fixtures::fixture_wasm("hello");
        let pre = executor.prepare("hello-policy", &wasm).await.unwrap();
        let (stderr_sink, stderr) = collecting();
        let (stdout_sink, _) = collecting();
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spec = RunSpec {
            args: vec!["app.wasm".into()],
            env: vec![("PORT".into(), "1".into())],
            app_dir: dirs.0.path().to_path_buf(),
            tmp_dir: dirs.1.path().to_path_buf(),
            memory_mb: 64,
            listen_port: Some(2),
            stdout: stdout_sink,
            stderr: stderr_sink,
        };
        let exit = executor.run(&pre, spec).await.unwrap();
        assert_ne!(exit.status(), 0, "{exit:?}");
        assert!(
            stderr.lock().unwrap()[0].starts_with("cannot listen on 1"),
            "{:?}",
            stderr.lock().unwrap()
        );
    }
}
