//! Load, bounded for CI (issue 12; `bench/load.sh` and `bench/soak.sh` are the full
//! size): 100 handler apps pushed by 20 concurrent `wf` clients, scaled to 300
//! instances, then a 60 s soak of steady traffic through the router during which the
//! platform's resident memory and open descriptors stay flat after a warm-up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wf_tests::distributed::free_port;
use wf_tests::platform::{http_get, Platform, Wf, APPS_DOMAIN};

const APPS: usize = 100;
const CLIENTS: usize = 20;
const INSTANCES: usize = 3;
const SOAK: Duration = Duration::from_secs(60);
const WARM_UP: Duration = Duration::from_secs(15);
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Requests a second of the soak's traffic, spread over its threads.
const RATE: u64 = 100;
const TRAFFIC_THREADS: u64 = 4;
/// How much the platform may grow from the end of the warm-up to the end of the soak.
const RSS_SLACK_KIB: u64 = 16 * 1024;
const RSS_SLACK_PCT: u64 = 10;
const FD_SLACK: usize = 16;

#[test]
fn pushes_by_concurrent_clients_then_a_soak_with_flat_memory_and_descriptors() {
    let status_port = free_port();
    // A cell big enough for 20 stagings at once (1 GiB of memory and 4 GiB of disk
    // each, as CF asks) beside 300 small instances.
    let platform = Platform::start_with(&[
        "--router-status-port".into(),
        status_port.to_string().into(),
        "--cell-memory-mb".into(),
        "65536".into(),
        "--cell-disk-mb".into(),
        "262144".into(),
    ]);
    let admin = platform.user();
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("manifest.yml");
    let apps: String = (0..APPS)
        .map(|i| format!("- name: load-{i}\n  memory: 16M\n  disk_quota: 16M\n"))
        .collect();
    std::fs::write(&manifest, format!("applications:\n{apps}")).expect("manifest");

    // 100 apps by 20 clients, each with a config home and login of its own.
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let wf = Wf::new(&admin.org, &admin.space);
            wf.login(&platform);
            wf.ok(&["target", "-o", &admin.org, "-s", &admin.space]);
            let wasm = wf_tests::fixtures::fixture_wasm("handler");
            let manifest = manifest.clone();
            std::thread::spawn(move || {
                let mut times = Vec::new();
                for i in (c..APPS).step_by(CLIENTS) {
                    let pushed = Instant::now();
                    let out = wf.run(&[
                        "push",
                        &format!("load-{i}"),
                        "-f",
                        manifest.to_str().expect("utf-8 path"),
                        "-p",
                        wasm.to_str().expect("utf-8 path"),
                    ]);
                    assert!(
                        out.status.success(),
                        "push load-{i}: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    times.push(pushed.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times: Vec<Duration> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    let took = started.elapsed();
    times.sort();
    eprintln!(
        "{APPS} pushes by {CLIENTS} clients in {took:?} ({:.1}/s); p50 {:?}, p99 {:?}",
        APPS as f64 / took.as_secs_f64(),
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    for i in 0..APPS {
        platform.wait_for(&format!("load-{i}"), "/", Duration::from_secs(30), |r| {
            r.status == 200 && r.body.starts_with("hello from handler")
        });
    }

    // 300 instances: every app scaled to 3, by the same 20 clients' worth of threads.
    let scalers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let wf = Wf::new(&admin.org, &admin.space);
            wf.login(&platform);
            wf.ok(&["target", "-o", &admin.org, "-s", &admin.space]);
            std::thread::spawn(move || {
                for i in (c..APPS).step_by(CLIENTS) {
                    wf.ok(&["scale", &format!("load-{i}"), "-i", &INSTANCES.to_string()]);
                }
            })
        })
        .collect();
    for scaler in scalers {
        scaler.join().expect("scaler");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let endpoints = routed_endpoints(status_port);
        if endpoints >= APPS * INSTANCES {
            eprintln!(
                "{endpoints} instances routed {:?} after the pushes",
                started.elapsed() - took
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{endpoints} of {} instances routed",
            APPS * INSTANCES
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The soak: steady traffic to every app, the platform sampled as it goes.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic: Vec<_> = (0..TRAFFIC_THREADS)
        .map(|t| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let router = platform.router_addr;
            std::thread::spawn(move || {
                let every = Duration::from_micros(1_000_000 * TRAFFIC_THREADS / RATE);
                let mut next = Instant::now();
                let mut n = t as usize;
                while !stop.load(Ordering::Relaxed) {
                    let host = format!("load-{}.{APPS_DOMAIN}", n % APPS);
                    let resp = http_get(router, &host, "/");
                    let counter = if resp.status == 200 { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    n += TRAFFIC_THREADS as usize;
                    next += every;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        })
        .collect();
    let wfd = &platform.processes[0];
    let soak_started = Instant::now();
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    while soak_started.elapsed() < SOAK {
        let (rss, fds) = wfd.rss_kib_and_fds();
        samples.push((soak_started.elapsed(), rss, fds));
        std::thread::sleep(SAMPLE_EVERY);
    }
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.join().expect("traffic");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let series: Vec<String> = samples
        .iter()
        .map(|(t, rss, fds)| format!("{}s {}MiB {fds}fd", t.as_secs(), rss / 1024))
        .collect();
    eprintln!("soak: {ok} ok, {failed} failed; wfd: {}", series.join(", "));
    assert_eq!(failed, 0, "requests failed during the soak ({ok} ok)");
    assert!(
        ok > RATE * SOAK.as_secs() / 2,
        "only {ok} requests in {SOAK:?}"
    );

    // Flat: the mean of the last three samples against the three after the warm-up.
    let after: Vec<_> = samples.iter().filter(|(t, _, _)| *t >= WARM_UP).collect();
    assert!(after.len() >= 6, "{series:?}");
    let mean = |s: &[&(Duration, u64, usize)]| {
        let n = s.len() as u64;
        (
            s.iter().map(|(_, rss, _)| rss).sum::<u64>() / n,
            s.iter().map(|(_, _, fds)| *fds as u64).sum::<u64>() / n,
        )
    };
    let (rss_warm, fds_warm) = mean(&after[..3]);
    let (rss_end, fds_end) = mean(&after[after.len() - 3..]);
    let rss_slack = RSS_SLACK_KIB.max(rss_warm * RSS_SLACK_PCT / 100);
    assert!(
        rss_end <= rss_warm + rss_slack,
        "RSS grew from {rss_warm} KiB to {rss_end} KiB during the soak: {series:?}"
    );
    assert!(
        fds_end <= fds_warm + FD_SLACK as u64,
        "descriptors grew from {fds_warm} to {fds_end} during the soak: {series:?}"
    );
}

/// Endpoints in the router's route table (its status port's `/routes`).
fn routed_endpoints(status_port: u16) -> usize {
    let addr = ([127, 0, 0, 1], status_port).into();
    let resp = http_get(addr, "127.0.0.1", "/routes");
    let routes: BTreeMap<String, Vec<serde_json::Value>> =
        serde_json::from_str(&resp.body).unwrap_or_default();
    routes.values().map(Vec::len).sum()
}
