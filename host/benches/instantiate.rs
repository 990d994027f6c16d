//! Per-request cost of a handler app on the cell: a fresh instance of the `handler`
//! fixture from its cached `ProxyPre`, on the cell's engine (pooling allocator), and
//! the whole request through `HandlerApp::handle` (store, instance, handler, body).
//! The same on an on-demand allocator, for the ratio. Issue 3's target: instantiation
//! under 50 us median.
//!
//! `cargo bench -p wf-host --bench instantiate`; medians are in
//! `target/criterion/<group>/<bench>/new/estimates.json`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt as _, Empty};
use wf_host::executor::{new_store, Executor, ExecutorConfig, LineSink, RunSpec};
use wf_host::handler::HandlerApp;
use wf_host::sandbox::{InstanceUsage, SecurityGroups};

fn run_spec(dir: &std::path::Path) -> RunSpec {
    let discard: LineSink = Arc::new(|_: &[u8]| {});
    RunSpec {
        args: vec!["app.wasm".into()],
        env: vec![
            ("PORT".into(), "8080".into()),
            ("CF_INSTANCE_INDEX".into(), "0".into()),
        ],
        app_dir: dir.to_path_buf(),
        tmp_dir: dir.to_path_buf(),
        memory_mb: 128,
        listen_port: None,
        disk_mb: 0,
        security_groups: SecurityGroups::default(),
        stdout: discard.clone(),
        stderr: discard,
        usage: Arc::new(InstanceUsage::default()),
    }
}

fn request() -> hyper::Request<http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>> {
    hyper::Request::builder()
        .uri("/bench")
        .header("host", "bench.local")
        .body(
            Empty::<Bytes>::new()
                .map_err(|never: Infallible| -> hyper::Error { match never {} })
                .boxed_unsync(),
        )
        .expect("a valid request")
}

fn handler(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let wasm = wf_tests::fixtures::fixture_wasm("handler");
    let dir = tempfile::tempdir().expect("temp dir");

    for (name, pooling) in [("pooling", true), ("on-demand", false)] {
        let executor = Executor::with_config(ExecutorConfig {
            pooling,
            ..ExecutorConfig::default()
        })
        .expect("executor");
        let pre = runtime
            .block_on(executor.prepare_handler("bench", &wasm))
            .expect("the handler fixture");
        let spec = run_spec(dir.path());

        let mut group = c.benchmark_group(format!("handler/{name}"));
        group.measurement_time(Duration::from_secs(5));
        group.bench_function("store", |b| {
            b.iter(|| new_store(pre.engine(), &spec).expect("store"))
        });
        group.bench_function("instantiate", |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let (mut store, _output) = new_store(pre.engine(), &spec).expect("store");
                        let start = Instant::now();
                        let proxy = pre.instantiate_async(&mut store).await.expect("instance");
                        elapsed += start.elapsed();
                        drop((proxy, store));
                    }
                    elapsed
                })
            })
        });
        group.bench_function("store+instantiate", |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let (mut store, _output) = new_store(pre.engine(), &spec).expect("store");
                        pre.instantiate_async(&mut store).await.expect("instance");
                    }
                    start.elapsed()
                })
            })
        });
        let app = Arc::new(HandlerApp::new(
            pre.clone(),
            run_spec(dir.path()),
            Arc::new(|_: &[u8]| {}),
        ));
        group.bench_function("request", |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let response = app.handle(request()).await;
                        assert_eq!(response.status(), 200);
                        let body = response.into_body().collect().await.expect("body");
                        assert_eq!(body.to_bytes().as_ref(), b"hello from handler 0\n");
                    }
                    start.elapsed()
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, handler);
criterion_main!(benches);
