//! The executor: one wasmtime [`Engine`] for the cell, compiled apps cached by the
//! wasm's sha256 (in memory, in front of the on-disk [`ArtifactCache`]), and running
//! an app to its end in a sandbox of its own (env, read-only app dir, private tmp dir,
//! its port only, memory limit): a `wasi:cli` command component, or a WASI preview1
//! core module (`_start`, on wasmtime's preview1 adapter, [`WasiP1Ctx`]) for apps
//! from older toolchains, which has no sockets and so runs as a worker or a task.
//! Handler apps use the same engine, stores and sandbox, one instance per request
//! (see `handler`).
//!
//! The engine uses the **pooling instance allocator**: instance slots (memory, tables,
//! fiber stack) are reserved once and reused, with copy-on-write memory images, which
//! is what makes a fresh instance per handler request cheap. One engine serves both
//! app kinds: a server or task holds one slot for its life, a handler request for its
//! duration, and the slot count ([`ExecutorConfig::instance_slots`]) is sized above the
//! cell's container count so that handler requests keep headroom. Every memory slot
//! reserves 4 GiB plus guard of address space (so bounds checks stay elided), which
//! bounds slots to about 30,000 on a 47-bit address space; the memory an instance may
//! really use is its quota, enforced by its store's [`MemoryLimiter`].
//!
//! CPU fairness comes from epoch interruption: a background thread ticks the epoch
//! every [`EPOCH_TICK`] and every store yields to the runtime at each tick, so a busy
//! loop in one instance cannot starve the others (and a handler's deadline can fire).
//!
//! What an instance may reach (network, files) and its memory and disk quotas are the
//! `sandbox`'s; this module applies them to each store and turns how an instance
//! ended (exit, trap, out of memory, quota) into an [`Exit`]. The time an instance's
//! wasm runs is the time spent polling its future ([`metered`]): a guest runs only
//! inside that poll, and yields at every epoch tick, so two clock reads per poll
//! measure its CPU time closely and cheaply.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use tokio::io::AsyncWrite;
use tokio::sync::OnceCell;
use wasmtime::component::{InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::compiled::{ArtifactCache, CompileError, Compiled};
use crate::sandbox::{
    self, InstanceUsage, MemoryLimiter, NetworkPolicy, OutOfMemory, SecurityGroups,
    DISK_CHECK_INTERVAL,
};

/// How often the epoch advances: the longest a guest runs before yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Longest stdout/stderr line kept whole; longer output is split into lines this long.
pub const MAX_LINE: usize = 64 * 1024;
/// Pool slots per instance slot: a component is several core instances (the app's
/// module and the shims `wasm-component-ld` adds) and tables; most have one memory.
const CORE_INSTANCES_PER_SLOT: u32 = 8;
const TABLES_PER_SLOT: u32 = 4;
const MEMORIES_PER_SLOT: u32 = 1;
/// Table memory kept resident in a freed pool slot (reset with memset, not madvise).
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("compiling the app's wasm: {0}")]
    Compile(String),
    #[error("the app's wasm is neither a wasi:cli command component nor a WASI preview1 module with `_start`: {0}")]
    NotACommand(String),
    #[error("setting up the instance: {0}")]
    Setup(String),
    #[error("instantiating the app's wasm: {0}")]
    Instantiate(String),
    #[error("the app's wasm is not a wasi:http handler component: {0}")]
    NotAHandler(String),
}

impl From<CompileError> for ExecutorError {
    fn from(e: CompileError) -> Self {
        ExecutorError::Compile(e.to_string())
    }
}

/// How the cell's engine is set up. The defaults suit a test or a small cell; `run`
/// sizes the pool from the cell's container count.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Where compiled artifacts are kept (`<data dir>/compiled`); `None` keeps them in
    /// memory only.
    pub compiled_dir: Option<PathBuf>,
    /// Instances that can exist at once (servers, tasks, handler requests in flight).
    /// Default 1,000, wasmtime's own pool default.
    pub instance_slots: u32,
    /// The largest memory quota an instance may have, in MiB (default 4,096: all a
    /// 32-bit linear memory can address). Each instance's own quota is enforced by
    /// its store limits.
    pub max_memory_mb: u64,
    /// The pooling allocator (default); `false` allocates every instance on demand
    /// (for comparisons).
    pub pooling: bool,
    /// Bytes of a freed memory slot kept resident for the next instance, whose dirty
    /// pages are found with Linux's `PAGEMAP_SCAN` and reset with memset instead of
    /// being handed back to the kernel and faulted in again. Default 64 KiB (1 MiB
    /// measured no faster for the handler fixture); a cell retains at most
    /// `instance_slots` times this.
    pub memory_keep_resident: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            compiled_dir: None,
            instance_slots: 1_000,
            max_memory_mb: 4_096,
            pooling: true,
            memory_keep_resident: 64 * 1024,
        }
    }
}

/// How a wasm instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `wasi:cli/exit` or the end of `run`: 0 for success.
    Status(i32),
    /// The guest trapped (out of bounds, unreachable, a panic, ...): the trap's message.
    Trap(String),
    /// The guest's call stack overflowed.
    StackOverflow,
    /// The guest grew its memory past its quota.
    OutOfMemory { limit_mb: u64 },
    /// The cell stopped the instance for writing more than its disk quota.
    DiskQuotaExceeded { limit_mb: u64 },
    /// The cell stopped the instance because it was told to (scale down, app stop,
    /// cell shutdown), after letting it drain: what SIGTERM is to a CF container.
    Stopped,
}

impl Exit {
    /// The process-like exit status: traps count as status 1, an instance the cell
    /// killed for a quota as 137 (SIGKILL, as CF shows an OOM-killed container), and
    /// one it stopped as 143 (SIGTERM).
    pub fn status(&self) -> i32 {
        match self {
            Exit::Status(code) => *code,
            Exit::Trap(_) | Exit::StackOverflow => 1,
            Exit::OutOfMemory { .. } | Exit::DiskQuotaExceeded { .. } => 137,
            Exit::Stopped => 143,
        }
    }

    /// What the cell logs and reports as the crash reason (CF: "Exited with status N"),
    /// with why in parentheses when the app did not exit by itself.
    pub fn describe(&self) -> String {
        let status = self.status();
        match self {
            Exit::Status(_) | Exit::Stopped => format!("Exited with status {status}"),
            Exit::Trap(trap) => format!("Exited with status {status} (wasm trap: {trap})"),
            Exit::StackOverflow => {
                format!("Exited with status {status} (wasm trap: stack overflow)")
            }
            Exit::OutOfMemory { limit_mb } => {
                format!("Exited with status {status} (out of memory: limit {limit_mb}M)")
            }
            Exit::DiskQuotaExceeded { limit_mb } => {
                format!("Exited with status {status} (disk quota exceeded: limit {limit_mb}M)")
            }
        }
    }

    /// How an instance ended whose instantiation or `run` failed with `error`: an exit
    /// through `wasi:cli/exit`, the memory quota, or a trap.
    pub fn from_error(error: &wasmtime::Error) -> Exit {
        if let Some(exit) = error.downcast_ref::<I32Exit>() {
            return Exit::Status(exit.0);
        }
        if let Some(oom) = error.downcast_ref::<OutOfMemory>() {
            return Exit::OutOfMemory {
                limit_mb: oom.limit_mb,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => Exit::StackOverflow,
            Some(trap) => Exit::Trap(trap.to_string()),
            // A host function failed the guest: its own words, without the backtrace.
            None => Exit::Trap(error.root_cause().to_string()),
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
    /// The instance's memory quota.
    pub memory_mb: u64,
    /// The only port the instance may listen on; `None` for tasks, which may not listen.
    pub listen_port: Option<u16>,
    /// The quota of `tmp_dir`, in MiB (0: none). `run` enforces it.
    pub disk_mb: u64,
    /// Where the instance may connect or send to.
    pub security_groups: SecurityGroups,
    pub stdout: LineSink,
    pub stderr: LineSink,
    /// Where what the instance uses is counted (CPU time, memory, disk).
    pub usage: Arc<InstanceUsage>,
}

/// An app ready to run to its end (a server, worker or task).
#[derive(Clone)]
pub enum CommandApp {
    /// A `wasi:cli` command component.
    Component(CommandPre<InstanceState>),
    /// A WASI preview1 core module: no sockets, so no port.
    Module(wasmtime::InstancePre<ModuleState>),
}

/// A compiled app with its imports resolved.
#[derive(Clone)]
enum Linked {
    Component(InstancePre<InstanceState>),
    Module(wasmtime::InstancePre<ModuleState>),
}

/// The cell's wasm runtime.
pub struct Executor {
    engine: Engine,
    linker: Linker<InstanceState>,
    module_linker: wasmtime::Linker<ModuleState>,
    artifacts: Option<ArtifactCache>,
    compiled: Mutex<HashMap<String, Arc<OnceCell<Linked>>>>,
}

impl Executor {
    /// An executor with the default [`ExecutorConfig`] (no artifact cache on disk).
    pub fn new() -> Result<Executor, ExecutorError> {
        Executor::with_config(ExecutorConfig::default())
    }

    /// Creates the engine and starts its epoch ticker (which ends with the engine).
    pub fn with_config(settings: ExecutorConfig) -> Result<Executor, ExecutorError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        if settings.pooling {
            let slots = settings.instance_slots.max(1);
            let max_memory = settings.max_memory_mb.clamp(1, 4_096) << 20;
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(slots)
                .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_SLOT))
                .total_memories(slots.saturating_mul(MEMORIES_PER_SLOT))
                .total_tables(slots.saturating_mul(TABLES_PER_SLOT))
                .total_stacks(slots)
                .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
                .linear_memory_keep_resident(settings.memory_keep_resident)
                .table_keep_resident(TABLE_KEEP_RESIDENT)
                .pagemap_scan(wasmtime::Enabled::Auto);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| ExecutorError::Setup(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .map_err(|e| ExecutorError::Setup(e.to_string()))?;
        let mut module_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |state: &mut ModuleState| {
            &mut state.wasi
        })
        .map_err(|e| ExecutorError::Setup(e.to_string()))?;
        let artifacts = settings
            .compiled_dir
            .as_deref()
            .map(|dir| ArtifactCache::new(dir, &engine));
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
            module_linker,
            artifacts,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// The command component or preview1 module in `wasm`, compiled once per `sha256`
    /// (on a blocking thread).
    pub async fn prepare(&self, sha256: &str, wasm: &Path) -> Result<CommandApp, ExecutorError> {
        match self.linked(sha256, wasm).await? {
            Linked::Component(pre) => CommandPre::new(pre)
                .map(CommandApp::Component)
                .map_err(|e| ExecutorError::NotACommand(format!("{e:#}"))),
            Linked::Module(pre) => Ok(CommandApp::Module(pre)),
        }
    }

    /// The `wasi:http` handler component in `wasm`, compiled once per `sha256`.
    pub async fn prepare_handler(
        &self,
        sha256: &str,
        wasm: &Path,
    ) -> Result<ProxyPre<InstanceState>, ExecutorError> {
        match self.linked(sha256, wasm).await? {
            Linked::Component(pre) => {
                ProxyPre::new(pre).map_err(|e| ExecutorError::NotAHandler(format!("{e:#}")))
            }
            Linked::Module(_) => Err(ExecutorError::NotAHandler("a core module".into())),
        }
    }

    /// The app in `wasm` with its imports resolved: from memory, else from the
    /// artifact cache, else compiled (on a blocking thread), once per `sha256`.
    async fn linked(&self, sha256: &str, wasm: &Path) -> Result<Linked, ExecutorError> {
        let cell = {
            let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
            compiled.entry(sha256.to_string()).or_default().clone()
        };
        let linked = cell
            .get_or_try_init(|| async {
                let engine = self.engine.clone();
                let artifacts = self.artifacts.clone();
                let (sha, path) = (sha256.to_string(), wasm.to_path_buf());
                let compiled = tokio::task::spawn_blocking(move || match artifacts {
                    Some(cache) => cache.load_or_compile(&engine, &sha, &path).map(|c| c.0),
                    None => crate::compiled::compile(&engine, &path),
                })
                .await
                .map_err(|e| ExecutorError::Compile(e.to_string()))??;
                match compiled {
                    Compiled::Component(component) => self
                        .linker
                        .instantiate_pre(&component)
                        .map(Linked::Component),
                    Compiled::Module(module) => self
                        .module_linker
                        .instantiate_pre(&module)
                        .map(Linked::Module),
                }
                .map_err(|e| ExecutorError::Instantiate(format!("{e:#}")))
            })
            .await?;
        Ok(linked.clone())
    }

    /// Runs the app to its end, or until it passes its disk quota. Dropping the
    /// future stops the instance.
    pub async fn run(&self, app: &CommandApp, spec: RunSpec) -> Result<Exit, ExecutorError> {
        let (run, output) = match app {
            CommandApp::Component(pre) => {
                let (store, output) = new_store(&self.engine, &spec)?;
                (run_component(pre.clone(), store).boxed(), output)
            }
            CommandApp::Module(pre) => {
                let (store, output) = new_module_store(&self.engine, &spec)?;
                (run_module(pre.clone(), store).boxed(), output)
            }
        };
        let quota = sandbox::watch_disk_quota(
            spec.tmp_dir.clone(),
            spec.disk_mb,
            DISK_CHECK_INTERVAL,
            spec.usage.clone(),
        );
        let exit = tokio::select! {
            exit = metered(spec.usage.clone(), run) => exit,
            exceeded = quota => Ok(Exit::DiskQuotaExceeded { limit_mb: exceeded.limit_mb }),
        };
        output.flush_partial();
        exit
    }
}

async fn run_component(
    pre: CommandPre<InstanceState>,
    mut store: Store<InstanceState>,
) -> Result<Exit, ExecutorError> {
    let command = match pre.instantiate_async(&mut store).await {
        Ok(command) => command,
        // A memory quota below the app's initial memory.
        Err(e) if e.downcast_ref::<OutOfMemory>().is_some() => return Ok(Exit::from_error(&e)),
        Err(e) => return Err(ExecutorError::Instantiate(format!("{e:#}"))),
    };
    Ok(match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Exit::Status(0),
        Ok(Err(())) => Exit::Status(1),
        Err(e) => {
            tracing::debug!(error = ?e, "instance ended with an error");
            Exit::from_error(&e)
        }
    })
}

/// Runs a preview1 module's `_start`: returning is status 0, `proc_exit` its code.
async fn run_module(
    pre: wasmtime::InstancePre<ModuleState>,
    mut store: Store<ModuleState>,
) -> Result<Exit, ExecutorError> {
    let instance = match pre.instantiate_async(&mut store).await {
        Ok(instance) => instance,
        Err(e) if e.downcast_ref::<OutOfMemory>().is_some() => return Ok(Exit::from_error(&e)),
        Err(e) => return Err(ExecutorError::Instantiate(format!("{e:#}"))),
    };
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|e| ExecutorError::NotACommand(format!("{e:#}")))?;
    Ok(match start.call_async(&mut store, ()).await {
        Ok(()) => Exit::Status(0),
        Err(e) => {
            tracing::debug!(error = ?e, "module instance ended with an error");
            Exit::from_error(&e)
        }
    })
}

/// `future`, with the time spent polling it counted as `usage`'s CPU time.
pub fn metered<F: Future>(usage: Arc<InstanceUsage>, future: F) -> impl Future<Output = F::Output> {
    let mut future = Box::pin(future);
    std::future::poll_fn(move |cx| {
        let started = Instant::now();
        let polled = future.as_mut().poll(cx);
        usage.add_cpu_time(started.elapsed());
        polled
    })
}

/// The output streams of an instance, to flush when it ends.
pub struct InstanceOutput {
    stdout: LineStream,
    stderr: LineStream,
}

impl InstanceOutput {
    /// Emits what the instance wrote after its last newline.
    pub fn flush_partial(&self) {
        self.stdout.flush_partial();
        self.stderr.flush_partial();
    }
}

/// The WASI context of an instance: args, env, output, files and network as `spec`
/// says.
fn wasi_builder(spec: &RunSpec) -> Result<(WasiCtxBuilder, InstanceOutput), ExecutorError> {
    let stdout = LineStream::new(spec.stdout.clone());
    let stderr = LineStream::new(spec.stderr.clone());
    let mut builder = WasiCtx::builder();
    builder
        .args(&spec.args)
        .envs(&spec.env)
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    sandbox::preopen_filesystem(&mut builder, &spec.app_dir, &spec.tmp_dir)
        .map_err(|e| ExecutorError::Setup(e.to_string()))?;
    NetworkPolicy::new(spec.listen_port, spec.security_groups.clone()).apply(&mut builder);
    Ok((builder, InstanceOutput { stdout, stderr }))
}

/// A store for one instance of the app `spec` describes: its sandbox (WASI context),
/// memory limit and CPU yielding, on `engine`.
pub fn new_store(
    engine: &Engine,
    spec: &RunSpec,
) -> Result<(Store<InstanceState>, InstanceOutput), ExecutorError> {
    let (mut builder, output) = wasi_builder(spec)?;
    let mut table = ResourceTable::new();
    table.set_max_capacity(sandbox::max_open_handles());
    let state = InstanceState {
        ctx: builder.build(),
        table,
        limits: MemoryLimiter::new(spec.memory_mb, spec.usage.clone()),
        http: WasiHttpCtx::new(),
        http_hooks: OutgoingHttp,
    };
    Ok((sandboxed_store(engine, state, |s| &mut s.limits), output))
}

/// A store for a preview1 module instance, in the same sandbox as [`new_store`]'s.
fn new_module_store(
    engine: &Engine,
    spec: &RunSpec,
) -> Result<(Store<ModuleState>, InstanceOutput), ExecutorError> {
    let (mut builder, output) = wasi_builder(spec)?;
    let mut wasi = builder.build_p1();
    wasi.ctx()
        .table
        .set_max_capacity(sandbox::max_open_handles());
    let state = ModuleState {
        wasi,
        limits: MemoryLimiter::new(spec.memory_mb, spec.usage.clone()),
    };
    Ok((sandboxed_store(engine, state, |s| &mut s.limits), output))
}

/// A store of `data` held to its memory limiter, yielding at every epoch tick.
fn sandboxed_store<T: Send + 'static>(
    engine: &Engine,
    data: T,
    limits: fn(&mut T) -> &mut MemoryLimiter,
) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(move |state| -> &mut dyn ResourceLimiter { limits(state) });
    store.set_epoch_deadline(1);
    // Yield through tokio, not wasmtime's own yield (which wakes the task at once): a
    // task that `yield_now`s runs again only after the runtime has polled its I/O
    // driver, so busy guests on every worker cannot hold back their neighbours' I/O
    // (tokio would otherwise poll it only every 61 task polls, 61 ticks).
    store.epoch_deadline_callback(|_| {
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store
}

/// The store data of a preview1 module instance.
pub struct ModuleState {
    wasi: WasiP1Ctx,
    limits: MemoryLimiter,
}

/// The store data of one instance.
pub struct InstanceState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: MemoryLimiter,
    http: WasiHttpCtx,
    http_hooks: OutgoingHttp,
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Outgoing `wasi:http` requests: denied. Apps reach the network through wasi:sockets,
/// under the instance's socket policy; an outgoing HTTP client in the cell would
/// bypass that policy, so it waits for the policy to cover it.
struct OutgoingHttp;

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(std::future::ready(Err(
            wasmtime_wasi_http::Error::HttpRequestDenied,
        )))
    }
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

    /// Emits every complete line (split into [`MAX_LINE`] pieces if longer), and the
    /// unterminated rest once it passes [`MAX_LINE`]. Linear in `bytes`: a guest can
    /// make the host do no more than copy what it writes.
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let LineBuffer { pending, sink } = &mut *buf;
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(end + 1);
            if pending.is_empty() {
                emit_split(sink, trim_line_end(line));
            } else {
                pending.extend_from_slice(line);
                emit_split(sink, trim_line_end(pending));
                pending.clear();
            }
            rest = after;
        }
        pending.extend_from_slice(rest);
        if pending.len() > MAX_LINE {
            let whole = pending.len() / MAX_LINE * MAX_LINE;
            emit_split(sink, &pending[..whole]);
            pending.drain(..whole);
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

fn emit_split(sink: &LineSink, line: &[u8]) {
    if line.is_empty() {
        return sink(line);
    }
    for piece in line.chunks(MAX_LINE) {
        sink(piece);
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
pub(crate) mod tests {
    use super::*;

    /// A log sink that keeps the lines, for tests of anything that writes app output.
    pub(crate) fn collecting() -> (LineSink, Arc<Mutex<Vec<String>>>) {
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
    fn overlong_lines_are_cut_at_the_limit_even_with_a_newline() {
        let (sink, lines) = collecting();
        let stream = LineStream::new(sink);
        let mut long = vec![b'x'; 2 * MAX_LINE + 10];
        long.extend_from_slice(b"\nnext\n");
        stream.push(&long);
        let lines = lines.lock().unwrap();
        let lengths: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lengths, [MAX_LINE, MAX_LINE, 10, 4]);
    }

    #[test]
    fn exits_describe_themselves_as_cf_does() {
        assert_eq!(Exit::Status(1).describe(), "Exited with status 1");
        assert_eq!(Exit::Trap("unreachable".into()).status(), 1);
        assert_eq!(
            Exit::Trap("wasm `unreachable` instruction executed".into()).describe(),
            "Exited with status 1 (wasm trap: wasm `unreachable` instruction executed)"
        );
        assert_eq!(
            Exit::OutOfMemory { limit_mb: 256 }.describe(),
            "Exited with status 137 (out of memory: limit 256M)"
        );
        assert_eq!(
            Exit::StackOverflow.describe(),
            "Exited with status 1 (wasm trap: stack overflow)"
        );
        assert_eq!(
            Exit::DiskQuotaExceeded { limit_mb: 1024 }.describe(),
            "Exited with status 137 (disk quota exceeded: limit 1024M)"
        );
    }

    #[test]
    fn errors_are_classified_into_exits() {
        let exit = wasmtime::Error::new(I32Exit(3)).context("wasm backtrace: ...");
        assert_eq!(Exit::from_error(&exit), Exit::Status(3));
        let oom = wasmtime::Error::new(OutOfMemory { limit_mb: 64 }).context("backtrace");
        assert_eq!(Exit::from_error(&oom), Exit::OutOfMemory { limit_mb: 64 });
        let overflow = wasmtime::Error::new(Trap::StackOverflow).context("backtrace");
        assert_eq!(Exit::from_error(&overflow), Exit::StackOverflow);
        let host = wasmtime::Error::msg("the host said no").context("backtrace");
        assert_eq!(
            Exit::from_error(&host),
            Exit::Trap("the host said no".into())
        );
    }

    /// A fixture app run as the cell would, on a fresh port.
    struct Running {
        port: u16,
        stdout: Arc<Mutex<Vec<String>>>,
        stderr: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<Result<Exit, ExecutorError>>,
        usage: Arc<InstanceUsage>,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    async fn start_fixture(executor: &Arc<Executor>, name: &str, index: &str) -> Running {
        start_sandboxed(executor, name, index, 0, SecurityGroups::default()).await
    }

    /// Memory quota of the test instances.
    const TEST_MEMORY_MB: u64 = 64;

    async fn start_sandboxed(
        executor: &Arc<Executor>,
        name: &str,
        index: &str,
        disk_mb: u64,
        security_groups: SecurityGroups,
    ) -> Running {
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
        let usage = Arc::new(InstanceUsage::default());
        let spec = RunSpec {
            args: vec!["app.wasm".into()],
            env: vec![
                ("PORT".into(), port.to_string()),
                ("CF_INSTANCE_INDEX".into(), index.into()),
            ],
            app_dir: dirs.0.path().to_path_buf(),
            tmp_dir: dirs.1.path().to_path_buf(),
            memory_mb: TEST_MEMORY_MB,
            listen_port: Some(port),
            disk_mb,
            security_groups,
            stdout: stdout_sink,
            stderr: stderr_sink,
            usage: usage.clone(),
        };
        let runner = executor.clone();
        let task = tokio::spawn(async move { runner.run(&pre, spec).await });
        Running {
            port,
            stdout,
            stderr,
            task,
            usage,
            _dirs: dirs,
        }
    }

    /// The body of one HTTP/1.1 GET (which the fixtures answer with a 200).
    async fn body(port: u16, path: &str) -> String {
        let response = get(port, path).await;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => body.to_string(),
            _ => panic!("GET {path}: {response:?}"),
        }
    }

    /// Waits for a running fixture's instance to end.
    async fn exit_of(running: Running) -> Exit {
        tokio::time::timeout(Duration::from_secs(30), running.task)
            .await
            .expect("the instance ended in time")
            .expect("the instance task did not panic")
            .expect("the instance ran")
    }

    /// Sends a request and does not wait for the answer (which may never come).
    async fn send_only(port: u16, path: &str) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt as _;
        get(port, "/").await;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream
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
            disk_mb: 0,
            security_groups: SecurityGroups::default(),
            stdout: stdout_sink,
            stderr: stderr_sink,
            usage: Arc::new(InstanceUsage::default()),
        };
        let exit = executor.run(&pre, spec).await.unwrap();
        assert_ne!(exit.status(), 0, "{exit:?}");
        assert!(
            stderr.lock().unwrap()[0].starts_with("cannot listen on 1"),
            "{:?}",
            stderr.lock().unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_outside_tmp_are_denied() {
        let executor = Arc::new(Executor::new().unwrap());
        let running = start_fixture(&executor, "hostile", "0").await;
        let report = body(running.port, "/write-outside").await;
        let outcomes: Vec<(&str, &str)> = report
            .lines()
            .filter_map(|line| line.split_once(": "))
            .collect();
        assert_eq!(outcomes.len(), 6, "{report}");
        for (target, outcome) in outcomes {
            let expected = if target == "/tmp/inside" {
                "ok"
            } else {
                "denied"
            };
            assert!(outcome.starts_with(expected), "{report}");
        }
        let app_dir = running._dirs.0.path();
        assert_eq!(
            std::fs::read_dir(app_dir).unwrap().count(),
            0,
            "the app dir was written"
        );
        assert!(running._dirs.1.path().join("inside").is_file());
        running.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_follow_the_security_groups() {
        let executor = Arc::new(Executor::new().unwrap());
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        let by_default = start_fixture(&executor, "hostile", "0").await;
        let connect = |running: &Running, addr: String| {
            let port = running.port;
            async move { body(port, &format!("/connect?addr={addr}")).await }
        };
        for addr in [
            format!("127.0.0.1:{target_port}"),
            format!("127.0.0.1:{}", by_default.port),
            "169.254.169.254:80".to_string(),
            "10.0.0.1:5432".to_string(),
            format!("[::1]:{target_port}"),
        ] {
            let outcome = connect(&by_default, addr.clone()).await;
            assert!(outcome.starts_with("denied"), "{addr}: {outcome}");
        }
        let listen = body(by_default.port, &format!("/listen?port={target_port}")).await;
        assert!(listen.starts_with("denied"), "{listen}");
        // The default groups allow DNS: the cell resolves for the app.
        let resolved = body(by_default.port, "/dns?host=localhost").await;
        assert!(resolved.starts_with("ok"), "{resolved}");
        by_default.task.abort();

        // A rule that names the loopback address and port opens exactly that.
        let named = SecurityGroups::new(vec![crate::sandbox::SecurityGroupRule::new(
            crate::sandbox::Protocol::Tcp,
            "127.0.0.1",
            Some(&target_port.to_string()),
        )
        .unwrap()]);
        let allowed = start_sandboxed(&executor, "hostile", "1", 0, named).await;
        let outcome = connect(&allowed, format!("127.0.0.1:{target_port}")).await;
        assert_eq!(outcome, "ok\n");
        let outcome = connect(&allowed, format!("127.0.0.1:{}", allowed.port)).await;
        assert!(outcome.starts_with("denied"), "{outcome}");
        // No rule for port 53: no name lookups.
        let resolved = body(allowed.port, "/dns?host=localhost").await;
        assert!(resolved.starts_with("denied"), "{resolved}");
        allowed.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_memory_bomb_ends_as_out_of_memory() {
        let executor = Arc::new(Executor::new().unwrap());
        let running = start_fixture(&executor, "hostile", "0").await;
        send_only(running.port, "/membomb").await;
        assert_eq!(
            exit_of(running).await,
            Exit::OutOfMemory {
                limit_mb: TEST_MEMORY_MB
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stack_overflow_ends_as_such() {
        let executor = Arc::new(Executor::new().unwrap());
        let running = start_fixture(&executor, "hostile", "0").await;
        send_only(running.port, "/stack").await;
        assert_eq!(exit_of(running).await, Exit::StackOverflow);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exit_code_is_reported_as_is() {
        let executor = Arc::new(Executor::new().unwrap());
        let running = start_fixture(&executor, "hostile", "0").await;
        assert_eq!(body(running.port, "/exit?code=3").await, "exiting with 3\n");
        assert_eq!(exit_of(running).await, Exit::Status(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writing_past_the_disk_quota_ends_the_instance() {
        let executor = Arc::new(Executor::new().unwrap());
        let running =
            start_sandboxed(&executor, "hostile", "0", 1, SecurityGroups::default()).await;
        let wrote = body(running.port, "/disk?mb=3").await;
        assert!(wrote.ends_with("ok\n"), "{wrote}");
        assert_eq!(
            exit_of(running).await,
            Exit::DiskQuotaExceeded { limit_mb: 1 }
        );
    }

    /// What the cell reports of an instance: the CPU time its wasm ran, its memory and
    /// its `/tmp`. A busy loop uses about a core; an idle server next to nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn usage_counts_cpu_time_memory_and_disk() {
        let executor = Arc::new(Executor::new().unwrap());
        let idle = start_fixture(&executor, "hello", "0").await;
        get(idle.port, "/").await;
        let memory = idle.usage.memory_bytes();
        assert!(
            (64 << 10..=TEST_MEMORY_MB << 20).contains(&memory),
            "linear memory of the hello fixture: {memory}"
        );
        let idle_before = idle.usage.cpu_time();
        let spinner =
            start_sandboxed(&executor, "hostile", "1", 64, SecurityGroups::default()).await;
        let wrote = body(spinner.port, "/disk?mb=2").await;
        assert!(wrote.ends_with("ok\n"), "{wrote}");
        let _spinning = send_only(spinner.port, "/spin").await;
        let before = spinner.usage.cpu_time();
        let period = Duration::from_millis(600);
        tokio::time::sleep(period).await;
        let spun = spinner.usage.cpu_time() - before;
        let idled = idle.usage.cpu_time() - idle_before;
        eprintln!(
            "over {period:?}: busy loop {spun:?}, idle server {idled:?} (memory {memory} bytes)"
        );
        assert!(
            spun >= period / 2 && spun <= period + Duration::from_millis(100),
            "the busy loop ran {spun:?} in {period:?}"
        );
        assert!(
            idled < Duration::from_millis(20),
            "the idle server ran {idled:?}"
        );
        // Measured with the disk quota, every second.
        let deadline = std::time::Instant::now() + DISK_CHECK_INTERVAL * 3;
        while spinner.usage.disk_bytes() < 2 << 20 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let disk = spinner.usage.disk_bytes();
        assert!((2 << 20..4 << 20).contains(&disk), "/tmp holds {disk}");
        spinner.task.abort();
        idle.task.abort();
        let _ = idle.task.await;
        assert_eq!(
            idle.usage.memory_bytes(),
            0,
            "a stopped instance holds no memory"
        );
    }

    /// Runs the preview1 `worker` fixture with `args` (no port) to its end, or for
    /// `within`; returns how it ended (if it did), its stdout and stderr.
    async fn run_worker(
        executor: &Executor,
        args: &[&str],
        within: Duration,
    ) -> (Option<Exit>, Vec<String>, Vec<String>) {
        let wasm = wf_tests::fixtures::fixture_wasm("worker");
        let app = executor.prepare("worker-test", &wasm).await.unwrap();
        assert!(matches!(app, CommandApp::Module(_)), "a core module");
        let (stdout_sink, stdout) = collecting();
        let (stderr_sink, stderr) = collecting();
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spec = RunSpec {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![
                ("MEMORY_LIMIT".into(), format!("{TEST_MEMORY_MB}m")),
                ("CF_INSTANCE_INDEX".into(), "4".into()),
            ],
            app_dir: dirs.0.path().to_path_buf(),
            tmp_dir: dirs.1.path().to_path_buf(),
            memory_mb: TEST_MEMORY_MB,
            listen_port: None,
            disk_mb: 0,
            security_groups: SecurityGroups::default(),
            stdout: stdout_sink,
            stderr: stderr_sink,
            usage: Arc::new(InstanceUsage::default()),
        };
        let exit = tokio::time::timeout(within, executor.run(&app, spec))
            .await
            .ok()
            .map(|ran| ran.expect("the module ran"));
        let lines = |l: Arc<Mutex<Vec<String>>>| l.lock().unwrap().clone();
        (exit, lines(stdout), lines(stderr))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn preview1_modules_run_as_tasks_in_the_sandbox() {
        let executor = Executor::new().unwrap();
        let long = Duration::from_secs(30);
        let (exit, stdout, _) = run_worker(&executor, &["app.wasm", "task"], long).await;
        assert_eq!(exit, Some(Exit::Status(0)));
        assert_eq!(
            stdout,
            ["task ran with MEMORY_LIMIT=64m: tmp ok, app read-only"]
        );
        let (exit, _, stderr) = run_worker(&executor, &["app.wasm", "exit", "3"], long).await;
        assert_eq!(exit, Some(Exit::Status(3)));
        assert_eq!(stderr, ["exiting with 3"]);
        let (exit, _, _) = run_worker(&executor, &["app.wasm", "grow", "128"], long).await;
        assert_eq!(
            exit,
            Some(Exit::OutOfMemory {
                limit_mb: TEST_MEMORY_MB
            })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_preview1_worker_runs_until_stopped_and_is_no_handler() {
        let executor = Executor::new().unwrap();
        let (exit, stdout, _) =
            run_worker(&executor, &["app.wasm"], Duration::from_millis(700)).await;
        assert_eq!(exit, None, "a worker runs on");
        assert_eq!(stdout[0], "worker 4 started");
        assert!(stdout.len() >= 3 && stdout[1] == "tick 1", "{stdout:?}");
        let wasm = wf_tests::fixtures::fixture_wasm("worker");
        assert!(matches!(
            executor.prepare_handler("worker-test", &wasm).await,
            Err(ExecutorError::NotAHandler(_))
        ));
    }

    /// One runtime thread for two instances: the busy loop must yield for the other to
    /// answer at all.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_loop_does_not_starve_its_neighbour() {
        let executor = Arc::new(Executor::new().unwrap());
        let spinner = start_fixture(&executor, "hostile", "0").await;
        let neighbour = start_fixture(&executor, "hello", "1").await;
        get(neighbour.port, "/").await;
        let _spinning = send_only(spinner.port, "/spin").await;
        // Let it spin before measuring.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The median of a few requests, so one scheduling hiccup on a loaded machine does
        // not decide; without the yield the neighbour would not answer at all.
        let mut took = Vec::new();
        for _ in 0..5 {
            let started = std::time::Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(5), body(neighbour.port, "/"))
                .await
                .expect("the neighbour answered");
            assert_eq!(answer, "hello from 1\n");
            took.push(started.elapsed());
        }
        took.sort();
        assert!(
            took[2] < Duration::from_millis(500),
            "the neighbour took {took:?}"
        );
        spinner.task.abort();
        neighbour.task.abort();
    }
}
