//! The log cache's memory under container metrics from many instances, with and without
//! a store-wide byte budget (issue 12's soak, in one process and simulated time).
//!
//! `cargo run --release -p wf-loggregator --example store_budget -- [BUDGET_MIB] [MINUTES]`
//! (budget 0: none; defaults 512 and 120). 1,000 apps of 10 instances each send one
//! gauge envelope per instance every 15 s, as the reps do; every ten simulated minutes
//! it prints what the store holds, the process's RSS, the longest single ingest (a
//! prune runs inside one) and the longest read of a reader thread meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wf_loggregator::envelope::{Gauge, GaugeValue};
use wf_loggregator::{Envelope, EnvelopeMessage, LogStore, LogStoreConfig, ReadQuery};

// wfd's allocator, so that RSS is what the controller would show.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APPS: usize = 1000;
const INSTANCES: usize = 10;
const INTERVAL_NS: i64 = 15_000_000_000;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let budget_mib = args.next().transpose().expect("BUDGET_MIB").unwrap_or(512);
    let minutes = args.next().transpose().expect("MINUTES").unwrap_or(120);
    let store = Arc::new(LogStore::with_config(LogStoreConfig {
        max_bytes: if budget_mib == 0 {
            usize::MAX
        } else {
            budget_mib << 20
        },
        ..LogStoreConfig::default()
    }));
    let guids: Vec<String> = (0..APPS)
        .map(|i| format!("{i:08x}-5a4c-4f4e-9c1b-2f6d0c3e8a71"))
        .collect();
    println!("budget {budget_mib} MiB (0: none), {APPS} apps x {INSTANCES} instances, a gauge each every 15 s");
    // A reader (cf logs --recent, cf app) reading all along: how long the lock keeps it.
    let done = Arc::new(AtomicBool::new(false));
    let longest_read_us = Arc::new(AtomicU64::new(0));
    let reader = std::thread::spawn({
        let (store, done, longest) = (store.clone(), done.clone(), longest_read_us.clone());
        let source = guids[0].clone();
        let query = ReadQuery {
            descending: true,
            limit: Some(100),
            ..Default::default()
        };
        move || {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::hint::black_box(store.read(&source, &query));
                longest.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    println!("minute  envelopes  approx MiB  RSS MiB  longest ingest  longest read  ingest/s");
    let started = Instant::now();
    let mut longest = Duration::ZERO;
    let rounds = minutes * 4;
    for round in 1..=rounds {
        for (app, guid) in guids.iter().enumerate() {
            for index in 0..INSTANCES {
                let envelope = gauge(guid, app, index, round as i64 * INTERVAL_NS);
                let t = Instant::now();
                store.ingest(envelope);
                longest = longest.max(t.elapsed());
            }
        }
        if round % 40 == 0 {
            let stats = store.stats();
            println!(
                "{:>6}  {:>9}  {:>10}  {:>7}  {:>11.1} ms  {:>9.1} ms  {:>8.0}",
                round / 4,
                stats.envelopes,
                stats.bytes >> 20,
                rss_mib(),
                longest.as_secs_f64() * 1000.0,
                longest_read_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
                stats.ingested as f64 / started.elapsed().as_secs_f64(),
            );
            longest = Duration::ZERO;
        }
    }
    done.store(true, Ordering::Relaxed);
    reader.join().expect("the reader");
    let stats = store.stats();
    println!(
        "ingested {}, expired {}, sources {}, evicted sources {}",
        stats.ingested, stats.expired, stats.sources, stats.evicted_sources
    );
}

/// One instance's container metrics, with the tags the rep puts on them.
fn gauge(guid: &str, app: usize, index: usize, timestamp: i64) -> Envelope {
    let mut metrics = BTreeMap::new();
    let value = |unit: &str, value: f64| GaugeValue {
        unit: unit.to_string(),
        value,
    };
    metrics.insert("cpu".to_string(), value("percentage", 1.5));
    for name in ["memory", "memory_quota", "disk", "disk_quota"] {
        metrics.insert(name.to_string(), value("bytes", 33_554_432.0));
    }
    let tags = [
        ("app_id", guid.to_string()),
        ("app_name", format!("app-{app}")),
        ("instance_id", index.to_string()),
        ("organization_name", "org".to_string()),
        ("space_name", "space".to_string()),
        ("process_type", "web".to_string()),
        ("source_id", guid.to_string()),
        ("origin", "rep".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Envelope {
        timestamp,
        source_id: guid.to_string(),
        instance_id: index.to_string(),
        tags,
        message: EnvelopeMessage::Gauge(Gauge { metrics }),
    }
}

fn rss_mib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (pages * 4096) >> 20
}
