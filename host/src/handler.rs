//! Handler apps: `wasi:http/incoming-handler` components (the `wasi:http/proxy` world)
//! that the cell serves itself. The cell binds the instance's port with an HTTP/1.1
//! server and gives every request a fresh instance from the app's cached `ProxyPre`
//! on the pooling allocator, in the same sandbox a server instance gets (env, app dir,
//! tmp dir, memory quota, CPU yielding), under a per-request deadline. An idle handler
//! app costs a listening socket and its (shared, mapped) compiled code.
//!
//! Reusing instances is the app's explicit choice: with [`REUSE_ENV`] set to `true`
//! in its environment, an instance that answered a request waits (up to
//! [`MAX_IDLE_INSTANCES`] of them, each holding its pool slot) for the app's next
//! request instead of being dropped, so state in the instance (globals, its memory)
//! carries over from one request to the next. An instance whose request failed (trap,
//! deadline, stop) is never reused.
//!
//! Failures are answered for the app and logged where its developer sees them: a
//! handler past its deadline gets `504`, a trap or missing response `500`, a cell out
//! of instance slots `503`. A failed request does not end the app instance; passing
//! the disk quota of its `/tmp` (shared by its requests) does, as for a server. Only
//! requests write to `/tmp`, so it is measured while requests run and once after the
//! last one ends, never while the app is idle.
//!
//! Stopping is graceful: once told to drain, the cell stops accepting connections,
//! lets the requests in flight finish (keep-alive connections close after theirs),
//! and ends when the last one has; whoever drains bounds the wait.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView as _;

use crate::executor::{
    metered, new_store, ExecutorError, Exit, InstanceOutput, InstanceState, LineSink, RunSpec,
};
use crate::sandbox::{self, DiskQuotaExceeded, OutOfMemory, DISK_CHECK_INTERVAL};

/// How long a request may run (instance included) unless the app says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a client's request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The app environment variable that turns instance reuse on (`true`, any case).
pub const REUSE_ENV: &str = "WF_HANDLER_REUSE";
/// Most idle instances a reusing app keeps: as many as its peak of concurrent
/// requests, up to this.
pub const MAX_IDLE_INSTANCES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("binding port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// Why a request got no response from the app.
#[derive(Debug, thiserror::Error)]
pub enum RequestFailure {
    #[error("setting up the instance failed: {0}")]
    Setup(#[from] ExecutorError),
    #[error("the request is not valid HTTP for the handler: {0}")]
    BadRequest(String),
    #[error("no instance slot free on the cell: {0}")]
    NoSlot(String),
    #[error("instantiating the handler failed: {0}")]
    Instantiate(String),
    /// The instance trapped, ran out of memory or exited: [`Exit::describe`].
    #[error("the handler crashed: {0}")]
    Crash(String),
    #[error("the handler answered with error {0}")]
    ErrorCode(String),
    #[error("the handler returned without sending a response")]
    NoResponse,
    #[error("the handler did not finish within its {}s request deadline and was stopped", .0.as_secs_f64())]
    Deadline(Duration),
    #[error("the instance was stopped")]
    Stopped,
}

impl RequestFailure {
    fn status(&self) -> hyper::StatusCode {
        use hyper::StatusCode;
        match self {
            RequestFailure::BadRequest(_) => StatusCode::BAD_REQUEST,
            RequestFailure::NoSlot(_) | RequestFailure::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            RequestFailure::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One handler app instance (an ActualLRP): what every request's instance gets.
pub struct HandlerApp {
    pre: ProxyPre<InstanceState>,
    spec: RunSpec,
    timeout: Duration,
    /// The cell's lines about failed requests.
    events: LineSink,
    /// Cancelled when the instance stops: ends requests still running.
    stop: CancellationToken,
    /// Instances waiting for a request, when the app reuses them ([`REUSE_ENV`]);
    /// `None`: a fresh instance per request.
    idle: Option<Mutex<Vec<Warm>>>,
    /// Requests whose instance is still running.
    in_flight: InFlight,
}

/// A count of the requests running and of those started, with a wake-up at every
/// change.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    started: std::sync::atomic::AtomicU64,
    changed: tokio::sync::Notify,
}

/// One running request: counted in [`InFlight`] until dropped.
struct Running(Arc<HandlerApp>);

impl Running {
    fn start(app: &Arc<HandlerApp>) -> Running {
        app.in_flight.count.fetch_add(1, Ordering::AcqRel);
        app.in_flight.started.fetch_add(1, Ordering::AcqRel);
        app.in_flight.changed.notify_waiters();
        Running(app.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.in_flight.count.fetch_sub(1, Ordering::AcqRel);
        self.0.in_flight.changed.notify_waiters();
    }
}

impl InFlight {
    /// Waits until `done` holds of the counts.
    async fn until(&self, mut done: impl FnMut(&InFlight) -> bool) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// Waits for a request to start after the `seen`th (however short it runs).
    async fn until_started(&self, seen: &mut u64) {
        self.until(|counts| {
            let started = counts.started.load(Ordering::Acquire);
            std::mem::replace(seen, started) != started
        })
        .await
    }

    /// Waits until no request runs.
    async fn until_idle(&self) {
        self.until(|counts| counts.count.load(Ordering::Acquire) == 0)
            .await
    }
}

/// An instance that answered a request, kept for the next one.
struct Warm {
    store: Store<InstanceState>,
    proxy: Proxy,
    output: InstanceOutput,
}

impl HandlerApp {
    /// `spec.listen_port` is ignored: handler instances never listen themselves.
    /// Instances are reused when `spec.env` sets [`REUSE_ENV`] to `true`.
    pub fn new(pre: ProxyPre<InstanceState>, mut spec: RunSpec, events: LineSink) -> HandlerApp {
        spec.listen_port = None;
        let reuse = spec
            .env
            .iter()
            .any(|(name, value)| name == REUSE_ENV && value.eq_ignore_ascii_case("true"));
        HandlerApp {
            pre,
            spec,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            events,
            stop: CancellationToken::new(),
            idle: reuse.then(|| Mutex::new(Vec::new())),
            in_flight: InFlight::default(),
        }
    }

    /// Whether the app reuses instances across requests.
    pub fn reuses_instances(&self) -> bool {
        self.idle.is_some()
    }

    /// An idle instance, if the app reuses them and one is waiting.
    fn take_idle(&self) -> Option<Warm> {
        let mut idle = self
            .idle
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        idle.pop()
    }

    /// Keeps an instance whose request succeeded for the next request, if the app
    /// reuses instances, is not stopping, and keeps fewer than the most; else drops it.
    fn keep_idle(&self, warm: Warm) {
        let Some(idle) = &self.idle else { return };
        if self.stop.is_cancelled() {
            return;
        }
        let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(warm);
        }
    }

    /// Drops the idle instances, freeing their pool slots.
    fn drop_idle(&self) {
        if let Some(idle) = &self.idle {
            idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Sets the per-request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> HandlerApp {
        self.timeout = timeout;
        self
    }

    /// Runs one request in a fresh instance (or an idle one, with reuse); failures
    /// become the matching error response and a line in the app's log.
    pub async fn handle<B>(
        self: &Arc<Self>,
        request: hyper::Request<B>,
    ) -> hyper::Response<HyperOutgoingBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let line = format!("{} {}", request.method(), request.uri().path());
        match self.respond(request, &line).await {
            Ok(response) => response,
            Err(failure) => {
                let status = failure.status();
                self.report(&line, &failure, Some(status));
                error_response(status)
            }
        }
    }

    /// The response head from a fresh or reused instance; failures after it (a body
    /// cut short) are reported by the instance's task, failures before it are returned.
    async fn respond<B>(
        self: &Arc<Self>,
        request: hyper::Request<B>,
        line: &str,
    ) -> Result<hyper::Response<HyperOutgoingBody>, RequestFailure>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = Instant::now() + self.timeout;
        let (mut store, reused, output) = match self.take_idle() {
            Some(mut warm) => {
                // Its deadline counted from when it last ran: a full tick from now.
                warm.store.set_epoch_deadline(1);
                (warm.store, Some(warm.proxy), warm.output)
            }
            None => {
                let (store, output) = new_store(self.pre.engine(), &self.spec)?;
                (store, None, output)
            }
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let responded = Arc::new(AtomicBool::new(false));
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| RequestFailure::BadRequest(one_line(&e)))?;
        let sent = responded.clone();
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam_from_callback(move |response| {
                sent.store(true, Ordering::Release);
                // `respond` may have given up waiting (the instance is being stopped).
                let _ = sender.send(response);
            })
            .map_err(|e| RequestFailure::Instantiate(one_line(&e)))?;

        let pre = self.pre.clone();
        let timeout = self.timeout;
        let stop = self.stop.clone();
        let usage = self.spec.usage.clone();
        let run = metered(usage, async move {
            let proxy = match reused {
                Some(proxy) => proxy,
                None => pre.instantiate_async(&mut store).await.map_err(|e| {
                    if e.chain()
                        .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
                    {
                        RequestFailure::NoSlot(one_line(&e))
                    } else if e.downcast_ref::<OutOfMemory>().is_some() {
                        RequestFailure::Crash(Exit::from_error(&e).describe())
                    } else {
                        RequestFailure::Instantiate(one_line(&e))
                    }
                })?,
            };
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
                .map_err(|e| RequestFailure::Crash(Exit::from_error(&e).describe()))?;
            Ok((store, proxy))
        });
        // The guest runs in a task of its own: it may go on streaming the body after
        // sending the response head. Dropping the store ends it at its next yield.
        let app = self.clone();
        let task_line = line.to_string();
        let running = Running::start(self);
        let task = tokio::spawn(async move {
            let _running = running;
            let result = tokio::select! {
                finished = tokio::time::timeout_at(deadline, run) => {
                    finished.unwrap_or(Err(RequestFailure::Deadline(timeout)))
                }
                _ = stop.cancelled() => Err(RequestFailure::Stopped),
            };
            output.flush_partial();
            match result {
                Ok((store, proxy)) => {
                    app.keep_idle(Warm {
                        store,
                        proxy,
                        output,
                    });
                    Ok(())
                }
                // The head is out: a failure now can only cut the body short.
                Err(failure) if responded.load(Ordering::Acquire) => {
                    app.report(&task_line, &failure, None);
                    Ok(())
                }
                Err(failure) => Err(failure),
            }
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => {
                task.abort();
                Err(RequestFailure::ErrorCode(format!("{code:?}")))
            }
            // The guest dropped the response outparam: see how the task ended.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(RequestFailure::NoResponse),
                Ok(Err(failure)) => Err(failure),
                Err(e) => Err(RequestFailure::Crash(e.to_string())),
            },
        }
    }

    /// Logs a failed request: `answered` is the cell's error status, `None` when the
    /// app's own response was already under way.
    fn report(&self, line: &str, failure: &RequestFailure, answered: Option<hyper::StatusCode>) {
        let message = match answered {
            Some(status) => format!("{line}: {failure} (answered {})", status.as_u16()),
            None => format!("{line}: {failure} (response cut short)"),
        };
        tracing::debug!(%message, "handler request failed");
        (self.events)(message.as_bytes());
    }
}

/// Binds the instance's port on every interface, as a server app would.
pub async fn bind(port: u16) -> Result<TcpListener, HandlerError> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .await
        .map_err(|source| HandlerError::Bind { port, source })
}

/// Serves HTTP/1.1 on `listener` for `app` until the instance passes its disk quota,
/// or, once `drain` is cancelled, until the requests in flight have finished
/// ([`Exit::Stopped`]); how it ended is returned. Its end, or dropping the future,
/// ends its connections and the requests still running.
pub async fn serve(listener: TcpListener, app: Arc<HandlerApp>, drain: CancellationToken) -> Exit {
    let _stop_all = app.stop.clone().drop_guard();
    let quota = watch_disk_quota(&app);
    let connections = TaskTracker::new();
    let drained = async {
        accept_loop(listener, &app, &connections, &drain).await;
        connections.close();
        connections.wait().await;
        Exit::Stopped
    };
    let exit = tokio::select! {
        exit = drained => exit,
        exceeded = quota => Exit::DiskQuotaExceeded { limit_mb: exceeded.limit_mb },
    };
    // Requests still running end with `stop`; they keep no instance once it is set.
    app.stop.cancel();
    app.drop_idle();
    exit
}

/// Returns once the app's `/tmp` passes its disk quota, measuring it (and the usage
/// metric) as a server's is measured while requests run, and once more after the last
/// one has ended; an idle app's is not measured.
async fn watch_disk_quota(app: &HandlerApp) -> DiskQuotaExceeded {
    let spec = &app.spec;
    let watch = || {
        sandbox::watch_disk_quota(
            spec.tmp_dir.clone(),
            spec.disk_mb,
            DISK_CHECK_INTERVAL,
            spec.usage.clone(),
        )
    };
    let mut seen = 0;
    loop {
        app.in_flight.until_started(&mut seen).await;
        tokio::select! {
            exceeded = watch() => return exceeded,
            () = app.in_flight.until_idle() => {}
        }
        // The watch measures at once: this is the measurement after the last request.
        tokio::select! {
            exceeded = watch() => return exceeded,
            () = tokio::time::sleep(DISK_CHECK_INTERVAL / 2) => {}
        }
    }
}

/// Accepts connections until `drain` is cancelled (dropping the listener, so new
/// connections are refused); each connection is a task on `connections`.
async fn accept_loop(
    listener: TcpListener,
    app: &Arc<HandlerApp>,
    connections: &TaskTracker,
    drain: &CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = drain.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a handler connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn_app = app.clone();
        let service = service_fn(move |request| {
            let app = conn_app.clone();
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let stop = app.stop.clone();
        let drain = drain.clone();
        connections.spawn(async move {
            let conn = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => Some(served),
                _ = drain.cancelled() => {
                    // The request in flight finishes; the connection closes after it.
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        served = conn => Some(served),
                        _ = stop.cancelled() => None,
                    }
                }
                _ = stop.cancelled() => None,
            };
            if let Some(Err(e)) = served {
                tracing::debug!(error = %e, "handler connection ended with an error");
            }
        });
    }
}

/// A response of the cell's own: the status only (the reason goes to the app's log,
/// not to its clients).
fn error_response(status: hyper::StatusCode) -> hyper::Response<HyperOutgoingBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut response = hyper::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A wasmtime error on one line (its chain and backtrace joined), for the app's log.
fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::executor::tests::collecting;
    use crate::executor::{Executor, ExecutorConfig};

    type Lines = Arc<Mutex<Vec<String>>>;

    /// The handler fixture served as the cell serves it, on a fresh port.
    struct Served {
        port: u16,
        stdout: Lines,
        events: Lines,
        task: tokio::task::JoinHandle<Exit>,
        drain: CancellationToken,
        usage: Arc<crate::sandbox::InstanceUsage>,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    async fn serve_fixture(executor: &Executor, index: &str, timeout: Duration) -> Served {
        serve_fixture_with(executor, index, timeout, &[], 0).await
    }

    /// [`serve_fixture`] with more app environment and a disk quota (MiB, 0: none).
    async fn serve_fixture_with(
        executor: &Executor,
        index: &str,
        timeout: Duration,
        app_env: &[(&str, &str)],
        disk_mb: u64,
    ) -> Served {
        let wasm = wf_tests::fixtures::fixture_wasm("handler");
        let pre = executor
            .prepare_handler("handler-test", &wasm)
            .await
            .unwrap();
        let listener = bind(0).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stdout_sink, stdout) = collecting();
        let (stderr_sink, _) = collecting();
        let (events_sink, events) = collecting();
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let usage = Arc::new(crate::sandbox::InstanceUsage::default());
        let spec = RunSpec {
            args: vec!["app.wasm".into()],
            env: [
                ("PORT", port.to_string().as_str()),
                ("CF_INSTANCE_INDEX", index),
            ]
            .iter()
            .chain(app_env)
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
            app_dir: dirs.0.path().to_path_buf(),
            tmp_dir: dirs.1.path().to_path_buf(),
            memory_mb: 64,
            listen_port: Some(port),
            disk_mb,
            security_groups: crate::sandbox::SecurityGroups::default(),
            stdout: stdout_sink,
            stderr: stderr_sink,
            usage: usage.clone(),
        };
        let app = Arc::new(HandlerApp::new(pre, spec, events_sink).with_timeout(timeout));
        let reuse =
            app_env.contains(&(REUSE_ENV, "true")) || app_env.contains(&(REUSE_ENV, "TRUE"));
        assert_eq!(app.reuses_instances(), reuse);
        let drain = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, drain.clone()));
        Served {
            port,
            stdout,
            events,
            task,
            drain,
            usage,
            _dirs: dirs,
        }
    }

    /// One `GET path` on its own connection: status and body.
    async fn get(port: u16, path: &str) -> (u16, String) {
        try_get(port, path).await.unwrap()
    }

    /// [`get`], or the I/O error that cut it off.
    async fn try_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_gets_a_fresh_instance_with_the_instance_env() {
        let executor = Executor::new().unwrap();
        let served = serve_fixture(&executor, "3", DEFAULT_REQUEST_TIMEOUT).await;
        assert_eq!(
            get(served.port, "/some/path").await,
            (200, "hello from handler 3\n".to_string())
        );
        // A reused instance would count 2, 3, ...
        for _ in 0..3 {
            assert_eq!(get(served.port, "/count").await, (200, "1\n".to_string()));
        }
        assert_eq!(
            *served.stdout.lock().unwrap(),
            ["GET /some/path", "GET /count", "GET /count", "GET /count"]
        );
        assert!(served.events.lock().unwrap().is_empty());
        served.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_reuse_an_instance_keeps_its_state_until_a_request_fails() {
        let executor = Executor::with_config(ExecutorConfig {
            instance_slots: 4,
            ..ExecutorConfig::default()
        })
        .unwrap();
        let served = serve_fixture_with(
            &executor,
            "0",
            Duration::from_millis(500),
            &[(REUSE_ENV, "TRUE")],
            0,
        )
        .await;
        for expected in 1..=3 {
            assert_eq!(
                get(served.port, "/count").await,
                (200, format!("{expected}\n"))
            );
        }
        // More requests than instance slots, one after another: one instance serves
        // them all, so none waits for a slot.
        for _ in 0..10 {
            assert_eq!(get(served.port, "/").await.0, 200);
        }
        assert_eq!(get(served.port, "/count").await, (200, "14\n".to_string()));
        // The busy loop takes the idle instance and is stopped at its deadline: the
        // next request starts over in a fresh instance.
        assert_eq!(get(served.port, "/spin").await.0, 504);
        assert_eq!(get(served.port, "/count").await, (200, "1\n".to_string()));
        assert_eq!(get(served.port, "/count").await, (200, "2\n".to_string()));
        served.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reuse_is_only_on_when_the_app_says_true() {
        let executor = Executor::new().unwrap();
        for value in ["false", "1", ""] {
            let served = serve_fixture_with(
                &executor,
                "0",
                DEFAULT_REQUEST_TIMEOUT,
                &[(REUSE_ENV, value)],
                0,
            )
            .await;
            for _ in 0..2 {
                assert_eq!(get(served.port, "/count").await, (200, "1\n".to_string()));
            }
            served.task.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_reuse_concurrent_requests_each_get_an_instance_and_keep_it() {
        let executor = Executor::new().unwrap();
        let served = serve_fixture_with(
            &executor,
            "0",
            DEFAULT_REQUEST_TIMEOUT,
            &[(REUSE_ENV, "true")],
            0,
        )
        .await;
        let port = served.port;
        // Two requests at once (overlapping for a second) need two instances; both
        // wait for the next requests.
        let slow: Vec<_> = (0..2)
            .map(|_| tokio::spawn(async move { get(port, "/sleep?ms=1000").await }))
            .collect();
        for request in slow {
            assert_eq!(request.await.unwrap(), (200, "slept 1000ms\n".to_string()));
        }
        let mut counts: Vec<String> = Vec::new();
        for _ in 0..2 {
            let concurrent: Vec<_> = (0..2)
                .map(|_| tokio::spawn(async move { get(port, "/sleep?ms=1000").await }))
                .collect();
            for request in concurrent {
                assert_eq!(request.await.unwrap().0, 200);
            }
        }
        for _ in 0..2 {
            counts.push(get(port, "/count").await.1);
        }
        // Each of the two instances handled one request of every pair; the last one
        // back answers both counts.
        assert_eq!(counts, ["4\n", "5\n"]);
        served.task.abort();
    }

    /// Only requests write to `/tmp`: an idle app's is not measured, a request's
    /// writes are (and end the app past its quota).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tmp_is_measured_after_requests_not_while_idle() {
        let executor = Executor::new().unwrap();
        let served = serve_fixture_with(&executor, "0", DEFAULT_REQUEST_TIMEOUT, &[], 1).await;
        let tmp = served._dirs.1.path().to_path_buf();
        std::fs::write(tmp.join("half"), vec![1u8; 512 << 10]).unwrap();
        tokio::time::sleep(DISK_CHECK_INTERVAL * 2).await;
        assert_eq!(served.usage.disk_bytes(), 0, "measured while idle");
        assert_eq!(get(served.port, "/").await.0, 200);
        let deadline = std::time::Instant::now() + DISK_CHECK_INTERVAL * 3;
        while served.usage.disk_bytes() < 512 << 10 {
            assert!(std::time::Instant::now() < deadline, "never measured");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!served.task.is_finished());
        // Past the quota: the next request's measurement ends the app. It measures as
        // the request starts, so the request itself may be cut off with the app.
        std::fs::write(tmp.join("more"), vec![1u8; 1 << 20]).unwrap();
        if let Ok((status, _)) = try_get(served.port, "/").await {
            assert!(status == 200 || status == 0, "{status}");
        }
        let exit = tokio::time::timeout(DISK_CHECK_INTERVAL * 3, served.task)
            .await
            .expect("the app ends past its quota")
            .unwrap();
        assert_eq!(exit, Exit::DiskQuotaExceeded { limit_mb: 1 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_each_get_an_instance() {
        let executor = Executor::new().unwrap();
        let served = serve_fixture(&executor, "0", DEFAULT_REQUEST_TIMEOUT).await;
        let port = served.port;
        let requests: Vec<_> = (0..32)
            .map(|i| tokio::spawn(async move { get(port, &format!("/r{i}")).await }))
            .collect();
        for request in requests {
            assert_eq!(
                request.await.unwrap(),
                (200, "hello from handler 0\n".to_string())
            );
        }
        assert_eq!(served.stdout.lock().unwrap().len(), 32);
        served.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_loop_gets_504_at_its_deadline_while_neighbours_answer() {
        let executor = Executor::new().unwrap();
        let served = serve_fixture(&executor, "0", Duration::from_millis(800)).await;
        let port = served.port;
        let started = std::time::Instant::now();
        let spinning = tokio::spawn(async move { get(port, "/spin").await });
        // Let the spinning instance start, then check its neighbour answers promptly.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let neighbour = std::time::Instant::now();
        assert_eq!(get(port, "/").await.0, 200);
        assert!(neighbour.elapsed() < Duration::from_millis(500));

        let (status, _) = spinning.await.unwrap();
        assert_eq!(status, 504);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let events = served.events.lock().unwrap().clone();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            events[0].starts_with("GET /spin: the handler did not finish within its 0.8s")
                && events[0].ends_with("(answered 504)"),
            "{events:?}"
        );
        served.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cell_out_of_instance_slots_answers_503() {
        let executor = Executor::with_config(ExecutorConfig {
            instance_slots: 1,
            ..ExecutorConfig::default()
        })
        .unwrap();
        let served = serve_fixture(&executor, "0", Duration::from_secs(2)).await;
        let port = served.port;
        let spinning = tokio::spawn(async move { get(port, "/spin").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(port, "/").await.0, 503);
        assert_eq!(spinning.await.unwrap().0, 504);
        // The slot is free again.
        assert_eq!(get(port, "/").await.0, 200);
        let events = served.events.lock().unwrap().clone();
        assert!(
            events[0].starts_with("GET /: no instance slot free on the cell"),
            "{events:?}"
        );
        served.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_the_server_stops_running_requests_and_frees_the_port() {
        let executor = Executor::with_config(ExecutorConfig {
            instance_slots: 1,
            ..ExecutorConfig::default()
        })
        .unwrap();
        let served = serve_fixture(&executor, "0", DEFAULT_REQUEST_TIMEOUT).await;
        let port = served.port;
        let spinning = tokio::spawn(async move { get(port, "/spin").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        served.task.abort();
        // The connection is cut and the spinning instance's slot is freed.
        let (status, _) = tokio::time::timeout(Duration::from_secs(5), spinning)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 0);
        // The spinning instance stops at its next epoch yield, freeing the only slot.
        let again = serve_fixture(&executor, "0", DEFAULT_REQUEST_TIMEOUT).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while get(again.port, "/").await.0 != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot was never freed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err());
        again.task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn draining_refuses_new_connections_and_lets_requests_in_flight_finish() {
        let executor = Executor::new().unwrap();
        let served = serve_fixture(&executor, "0", DEFAULT_REQUEST_TIMEOUT).await;
        let port = served.port;
        let in_flight = tokio::spawn(async move { get(port, "/sleep?ms=600").await });
        // The request is under way before the drain begins.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while served.stdout.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the request never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let draining = std::time::Instant::now();
        served.drain.cancel();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            assert!(std::time::Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(in_flight.await.unwrap(), (200, "slept 600ms\n".to_string()));
        let exit = tokio::time::timeout(Duration::from_secs(5), served.task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, Exit::Stopped);
        assert!(
            draining.elapsed() < Duration::from_secs(3),
            "{:?}",
            draining.elapsed()
        );
    }

    #[tokio::test]
    async fn a_server_component_is_not_a_handler() {
        let executor = Executor::new().unwrap();
        let wasm = wf_tests::fixtures::fixture_wasm("hello");
        let prepared = executor.prepare_handler("hello-not-a-handler", &wasm).await;
        assert!(
            matches!(prepared, Err(ExecutorError::NotAHandler(_))),
            "{:?}",
            prepared.err()
        );
    }
}
