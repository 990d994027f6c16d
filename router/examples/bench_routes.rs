//! Load-test harness for `bench/router.sh`: either a tiny hello-world HTTP backend, or
//! the router in-process with 100,000 extra routes registered over an in-process bus
//! (re-registered every 20 s, as route-emitters do) and a consumer draining the RTR
//! envelopes (as the log cache does). Each mode prints its address and runs until
//! stdin closes.
//!
//! ```text
//! bench_routes backend
//! bench_routes router --backend 127.0.0.1:PORT [--routes 100000] [--threads 1]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;
use wf_router::message::REGISTER_SUBJECT;
use wf_router::{RegistryMessage, RouterConfig};

const BENCH_HOST: &str = "hello.apps.bench.local";
const APP_GUID: &str = "5b9ea3a4-5bd4-4f51-9c1a-3d7f3c0c0a11";

/// The allocator `wfd` uses (see cli/src/bin/wfd.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> ! {
    eprintln!(
        "usage: bench_routes backend | router --backend ADDR [--routes N] [--threads N (0: current thread)]"
    );
    std::process::exit(2)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let threads: usize = flag("--threads").map_or(Ok(1), |t| t.parse())?;
    let runtime = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    match args.first().map(String::as_str) {
        Some("backend") => runtime.block_on(backend()),
        Some("router") => {
            let backend: SocketAddr = flag("--backend").unwrap_or_else(|| usage()).parse()?;
            let routes: usize = flag("--routes").map_or(Ok(100_000), |r| r.parse())?;
            runtime.block_on(router(backend, routes))
        }
        _ => usage(),
    }
}

/// Resolves when stdin reaches its end (the script closes it to stop us).
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
}

async fn backend() -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("backend http://{}", listener.local_addr()?);
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"hello from 0\n")));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = stdin_closed() => {}
    }
    Ok(())
}

fn filler_route(i: usize) -> RegistryMessage {
    RegistryMessage {
        host: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        port: 61000 + (i % 1000) as u16,
        uris: vec![format!("app-{i}.apps.bench.local")],
        app: Some(format!("00000000-0000-4000-8000-{i:012}")),
        private_instance_id: Some(format!("instance-{i}")),
        private_instance_index: Some("0".into()),
        ..Default::default()
    }
}

async fn router(backend: SocketAddr, routes: usize) -> Result<(), Error> {
    let bus = Bus::in_process();
    // Drains RTR envelopes like the log cache would.
    let mut envelopes = bus.subscribe(wf_loggregator::ENVELOPE_SUBJECT).await?;
    tokio::spawn(async move { while envelopes.next().await.is_some() {} });

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let status_listener = TcpListener::bind("127.0.0.1:0").await?;
    let (addr, status) = (listener.local_addr()?, status_listener.local_addr()?);
    let cancel = CancellationToken::new();
    // Registrations count once the router announced itself (it subscribed by then).
    let mut started = bus.subscribe(wf_router::message::START_SUBJECT).await?;
    let task = tokio::spawn(wf_router::run_with_status(
        RouterConfig::default(),
        listener,
        Some(status_listener),
        bus.clone(),
        cancel.clone(),
    ));

    let hello = RegistryMessage {
        host: backend.ip().to_string(),
        port: backend.port(),
        uris: vec![BENCH_HOST.into()],
        app: Some(APP_GUID.into()),
        private_instance_id: Some("hello-0".into()),
        private_instance_index: Some("0".into()),
        ..Default::default()
    };
    // The registrations are serialized once: a route-emitter's work, not the router's
    // (it runs on other machines in CF), so not counted in the router's CPU time.
    let mut registrations = vec![Bytes::from(serde_json::to_vec(&hello)?)];
    for i in 0..routes {
        registrations.push(Bytes::from(serde_json::to_vec(&filler_route(i))?));
    }
    tokio::time::timeout(Duration::from_secs(30), started.next())
        .await?
        .ok_or("the router did not start")?;
    let started = Instant::now();
    register_all(&bus, &registrations, status).await?;
    eprintln!(
        "registered {} routes in {:.1?}",
        routes + 1,
        started.elapsed()
    );
    println!("router http://{addr} status http://{status} host {BENCH_HOST}");

    // Re-register every 20 s (minimumRegisterIntervalInSeconds), as route-emitters do.
    let refresh_bus = bus.clone();
    let refresh = async move {
        loop {
            tokio::time::sleep(Duration::from_secs(20)).await;
            if let Err(e) = publish_all(&refresh_bus, &registrations).await {
                eprintln!("re-registration failed: {e}");
            }
        }
    };
    tokio::select! {
        _ = refresh => {}
        _ = stdin_closed() => {}
    }
    cancel.cancel();
    task.await??;
    Ok(())
}

/// Publishes the registrations, pausing so the router's subscription buffer never
/// overflows.
async fn publish_all(bus: &Bus, registrations: &[Bytes]) -> Result<(), Error> {
    for (i, registration) in registrations.iter().enumerate() {
        bus.publish(REGISTER_SUBJECT, registration.clone()).await?;
        if i % 1000 == 999 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

/// Registers everything and waits until the router's `/metrics` counts every route.
async fn register_all(bus: &Bus, registrations: &[Bytes], status: SocketAddr) -> Result<(), Error> {
    publish_all(bus, registrations).await?;
    let routes = registrations.len() - 1;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let req = Request::get(format!("http://{status}/metrics")).body(Full::new(Bytes::new()))?;
        let body = client
            .request(req)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        let count: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("wf_router_total_routes ")?.parse().ok())
            .unwrap_or_default();
        if count > routes {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {count} of {} routes registered", routes + 1).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
