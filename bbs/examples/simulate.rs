//! The scheduler at scale (issue 4): N simulated cells and M LRP instances against a real
//! BBS on SQLite or PostgreSQL.
//!
//! Each simulated cell is a small axum server on a loopback port speaking the rep
//! protocol (`GET /state`, `POST /work`, [`wf_bbs::rep`]). It takes the work that fits
//! its capacity and then, as a rep does, claims and starts each ActualLRP through the BBS
//! (one instance at a time per cell), and refreshes its presence every 5 s with a 15 s
//! TTL. The BBS runs its auctioneer and route-emitter ([`Bbs::run`]); its convergence
//! loop is parked and passes are called directly so that they can be timed. Printed:
//!
//! - placement: from desiring the LRPs on an empty BBS to every instance RUNNING;
//! - one convergence pass at steady state (two, to show the spread);
//! - re-placement: 10% of the cells vanish (servers stopped, presences removed, so the
//!   15 s TTL and the 30 s convergence interval are not counted), then one convergence
//!   pass and the auctions until their instances run elsewhere;
//! - latency p50/p99 of the BBS calls the cells make (claim, start, presence).
//!
//! ```text
//! cargo run --release -p wf-bbs --example simulate -- --cells 100 --lrps 10000 \
//!     [--instances 100] [--database-url URL] [--bbs-api] [--timeout 600]
//! ```
//!
//! `--instances` is the instance count of each DesiredLRP; `--bbs-api` sends the cells'
//! calls through the BBS HTTP API ([`BbsClient`]) rather than in-process; without
//! `--database-url` the BBS is a fresh SQLite file in the temp folder. The database must
//! be empty. The last lines are `name value` pairs for `bench/scheduler.sh`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wf_bbs::rep::{CellState, LrpSummary, LrpWork, Work};
use wf_bbs::*;
use wf_messaging::Bus;

const MEMORY_MB: u32 = 128;
const DISK_MB: u32 = 256;
const ZONES: usize = 3;
/// Cells have room for this many times their share of the instances.
const HEADROOM: f64 = 1.5;
const PRESENCE_TTL: Duration = Duration::from_secs(15);
const PRESENCE_INTERVAL: Duration = Duration::from_secs(5);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// DesiredLRPs desired at once, as CC's process sync (nsync) does with its pool of 50.
const DESIRE_WORKERS: usize = 50;

struct Args {
    cells: usize,
    lrps: usize,
    instances: usize,
    database_url: Option<String>,
    bbs_api: bool,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cells: 100,
        lrps: 10_000,
        instances: 100,
        database_url: None,
        bbs_api: false,
        timeout: Duration::from_secs(600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bbs-api" {
            args.bbs_api = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--cells" => args.cells = number()?,
            "--lrps" => args.lrps = number()?,
            "--instances" => args.instances = number()?,
            "--timeout" => args.timeout = Duration::from_secs(number()? as u64),
            "--database-url" => args.database_url = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.cells < 10 || args.lrps == 0 || args.instances == 0 {
        return Err("need --cells >= 10 (10% of them vanish), --lrps and --instances > 0".into());
    }
    Ok(args)
}

/// How the simulated cells reach the BBS.
#[derive(Clone)]
enum BbsApi {
    InProcess(Arc<Bbs>),
    Http(BbsClient),
}

impl BbsApi {
    async fn claim(&self, key: &ActualLrpKey, ik: &ActualLrpInstanceKey) -> Result<(), BbsError> {
        match self {
            BbsApi::InProcess(bbs) => bbs.claim_actual_lrp(key, ik).await,
            BbsApi::Http(client) => client.claim_actual_lrp(key, ik).await,
        }
    }

    async fn start(
        &self,
        key: &ActualLrpKey,
        ik: &ActualLrpInstanceKey,
        net_info: NetInfo,
    ) -> Result<(), BbsError> {
        match self {
            BbsApi::InProcess(bbs) => bbs.start_actual_lrp(key, ik, net_info).await,
            BbsApi::Http(client) => client.start_actual_lrp(key, ik, net_info).await,
        }
    }

    async fn presence(&self, presence: &CellPresence) -> Result<(), BbsError> {
        match self {
            BbsApi::InProcess(bbs) => bbs.set_cell_presence(presence, PRESENCE_TTL).await,
            BbsApi::Http(client) => client.set_cell_presence(presence, PRESENCE_TTL).await,
        }
    }
}

/// What all cells share: the BBS, the call latencies, and how many instances they started.
struct Sim {
    api: BbsApi,
    latencies: Mutex<HashMap<&'static str, Vec<Duration>>>,
    started: AtomicUsize,
    failures: AtomicUsize,
}

impl Sim {
    /// Runs one BBS call, recording its latency under `op`.
    async fn call<F>(&self, op: &'static str, call: F) -> bool
    where
        F: std::future::Future<Output = Result<(), BbsError>>,
    {
        let begun = Instant::now();
        let result = call.await;
        let took = begun.elapsed();
        self.latencies
            .lock()
            .unwrap()
            .entry(op)
            .or_default()
            .push(took);
        if let Err(e) = result {
            if self.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("{op} failed: {e}");
            }
            return false;
        }
        true
    }
}

/// One simulated cell and its rep.
struct Cell {
    presence: CellPresence,
    state: Mutex<CellState>,
    queue: mpsc::UnboundedSender<LrpWork>,
    stop: CancellationToken,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Cell {
    /// Serves the rep on a loopback port and registers the cell's presence.
    async fn start(sim: Arc<Sim>, cell_id: String, zone: String, capacity: Resources) -> Arc<Cell> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (queue, work) = mpsc::unbounded_channel();
        let cell = Arc::new(Cell {
            presence: CellPresence {
                cell_id: cell_id.clone(),
                rep_url: url.clone(),
                zone: zone.clone(),
                capacity,
                placement_tags: vec![],
            },
            state: Mutex::new(CellState {
                cell_id,
                rep_url: url,
                zone,
                available_resources: capacity,
                total_resources: capacity,
                lrps: vec![],
                tasks: vec![],
                starting_container_count: 0,
                evacuating: false,
                placement_tags: vec![],
            }),
            queue,
            stop: CancellationToken::new(),
            heartbeat: Mutex::new(None),
        });
        let app = Router::new()
            .route("/state", get(state))
            .route("/work", post(perform))
            .with_state(cell.clone());
        let stop = cell.stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        tokio::spawn(cell.clone().run_work(sim.clone(), work));
        sim.call("presence", sim.api.presence(&cell.presence)).await;
        let heartbeat = tokio::spawn(cell.clone().heartbeat(sim));
        *cell.heartbeat.lock().unwrap() = Some(heartbeat);
        cell
    }

    /// Claims and starts the accepted instances one by one, as the rep's container
    /// creation would.
    async fn run_work(self: Arc<Self>, sim: Arc<Sim>, mut work: mpsc::UnboundedReceiver<LrpWork>) {
        let net_info = NetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 61000,
            }],
            instance_address: "127.0.0.1".into(),
        };
        loop {
            let lrp = tokio::select! {
                _ = self.stop.cancelled() => return,
                lrp = work.recv() => match lrp {
                    Some(lrp) => lrp,
                    None => return,
                },
            };
            let ik = ActualLrpInstanceKey {
                instance_guid: lrp.instance_guid.clone(),
                cell_id: self.presence.cell_id.clone(),
            };
            let running = sim.call("claim", sim.api.claim(&lrp.key, &ik)).await
                && sim
                    .call("start", sim.api.start(&lrp.key, &ik, net_info.clone()))
                    .await;
            if running {
                sim.started.fetch_add(1, Ordering::Relaxed);
            }
            let mut state = self.state.lock().unwrap();
            state.starting_container_count = state.starting_container_count.saturating_sub(1);
        }
    }

    /// Refreshes the presence until the cell stops; a refresh under way completes.
    async fn heartbeat(self: Arc<Self>, sim: Arc<Sim>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(PRESENCE_INTERVAL) => {}
            }
            sim.call("presence", sim.api.presence(&self.presence)).await;
        }
    }

    /// Stops serving and refreshing; answers how many instances the cell held.
    async fn vanish(&self) -> usize {
        self.stop.cancel();
        let heartbeat = self.heartbeat.lock().unwrap().take();
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        self.state.lock().unwrap().lrps.len()
    }
}

async fn state(State(cell): State<Arc<Cell>>) -> Json<CellState> {
    Json(cell.state.lock().unwrap().clone())
}

/// Takes the instances that fit and queues them for starting; answers the rest.
async fn perform(State(cell): State<Arc<Cell>>, Json(work): Json<Work>) -> Json<Work> {
    let mut refused = Work {
        tasks: work.tasks,
        ..Default::default()
    };
    let mut state = cell.state.lock().unwrap();
    for lrp in work.lrps {
        let available = &mut state.available_resources;
        let fits = available.containers >= 1
            && available.memory_mb >= u64::from(lrp.desired.memory_mb)
            && available.disk_mb >= u64::from(lrp.desired.disk_mb);
        if !fits {
            refused.lrps.push(lrp);
            continue;
        }
        available.containers -= 1;
        available.memory_mb -= u64::from(lrp.desired.memory_mb);
        available.disk_mb -= u64::from(lrp.desired.disk_mb);
        state.starting_container_count += 1;
        state.lrps.push(LrpSummary {
            process_guid: lrp.key.process_guid.clone(),
            index: lrp.key.index,
            domain: lrp.key.domain.clone(),
            instance_guid: lrp.instance_guid.clone(),
        });
        // The worker ends only when the cell stops, and then nothing is sent here.
        let _ = cell.queue.send(lrp);
    }
    Json(refused)
}

fn desired(process_guid: String, instances: u32) -> DesiredLrp {
    DesiredLrp {
        routes: Routes {
            cf_router: vec![CfRoute {
                hostnames: vec![format!("{process_guid}.apps.internal")],
                port: 8080,
                route_service_url: None,
                isolation_segment: None,
            }],
        },
        process_guid,
        domain: CF_APPS_DOMAIN.into(),
        instances,
        memory_mb: MEMORY_MB,
        disk_mb: DISK_MB,
        ports: vec![8080],
        start_timeout_ms: 60_000,
        check_definition: None,
        log_guid: "app-guid".into(),
        log_source: "APP/PROC/WEB".into(),
        metric_tags: [("app_name".to_string(), "sim".to_string())].into(),
        annotation: String::new(),
        placement_tags: vec![],
        action: RunAction {
            droplet_uri: "http://blobstore/droplet".into(),
            droplet_sha256: "abc".into(),
            command: String::new(),
            env: vec![],
            log_rate_limit_bytes_per_second: None,
        },
        modification_tag: ModificationTag::default(),
    }
}

/// Desires `lrps` instances in DesiredLRPs of `instances`, [`DESIRE_WORKERS`] at a
/// time; answers when it was done.
async fn desire_all(bbs: Arc<Bbs>, lrps: usize, instances: usize, begun: Instant) -> Duration {
    let counts: Vec<usize> = (0..lrps.div_ceil(instances))
        .map(|n| instances.min(lrps - n * instances))
        .collect();
    let desired_lrps = counts.len();
    futures::stream::iter(counts.into_iter().enumerate())
        .for_each_concurrent(DESIRE_WORKERS, |(n, count)| {
            let bbs = bbs.clone();
            async move {
                bbs.desire_lrp(desired(format!("sim-{n:06}"), count as u32))
                    .await
                    .unwrap();
            }
        })
        .await;
    let took = begun.elapsed();
    println!("  desired {desired_lrps} LRPs in {:.2} s", secs(took));
    took
}

/// Waits until the cells have started `target` instances in all; false after `timeout`.
async fn wait_started(sim: &Sim, target: usize, begun: Instant, timeout: Duration) -> bool {
    let mut report = begun + PROGRESS_INTERVAL;
    loop {
        let started = sim.started.load(Ordering::Relaxed);
        if started >= target {
            return true;
        }
        if begun.elapsed() >= timeout {
            println!(
                "  gave up after {:.1} s: {started}/{target} started",
                secs(begun.elapsed())
            );
            return false;
        }
        if Instant::now() >= report {
            println!(
                "  {:>6.1} s: {started}/{target} started",
                secs(begun.elapsed())
            );
            report += PROGRESS_INTERVAL;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("simulate: {e}");
            std::process::exit(2);
        }
    };
    let temp_db = std::env::temp_dir().join(format!("wf-simulate-{}.db", std::process::id()));
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", temp_db.display()));
    let ok = simulate(&args, &database_url).await;
    if args.database_url.is_none() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", temp_db.display()));
        }
    }
    if !ok {
        std::process::exit(1);
    }
}

/// Runs the scenario; false when a phase did not finish in time.
async fn simulate(args: &Args, database_url: &str) -> bool {
    let config = BbsConfig {
        database_url: database_url.to_string(),
        // Passes are called below; the loop's own pass runs at start, on an empty BBS.
        convergence_interval: Duration::from_secs(24 * 3600),
        ..Default::default()
    };
    let bbs = Bbs::open(config, Bus::in_process())
        .await
        .unwrap_or_else(|e| panic!("opening the BBS: {e}"));
    let existing = bbs
        .desired_lrps(&DesiredLrpFilter::default())
        .await
        .unwrap();
    assert!(existing.is_empty(), "the database must be empty");
    let cancel = CancellationToken::new();
    let running = bbs.run(cancel.clone());
    let api = if args.bbs_api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (server, stop) = (bbs.clone(), cancel.clone());
        tokio::spawn(async move { server.serve(listener, stop).await });
        BbsApi::Http(BbsClient::new(vec![url]).unwrap())
    } else {
        BbsApi::InProcess(bbs.clone())
    };
    let sim = Arc::new(Sim {
        api,
        latencies: Mutex::default(),
        started: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
    });
    let backend = database_url.split(':').next().unwrap_or_default();
    println!(
        "simulate: {} cells, {} instances ({} per DesiredLRP), {backend}, cells call the BBS {}",
        args.cells,
        args.lrps,
        args.instances,
        if args.bbs_api {
            "over HTTP"
        } else {
            "in-process"
        }
    );

    let per_cell = ((args.lrps as f64 / args.cells as f64) * HEADROOM).ceil() as u64 + 1;
    let capacity = Resources {
        memory_mb: per_cell * u64::from(MEMORY_MB),
        disk_mb: per_cell * u64::from(DISK_MB),
        containers: per_cell,
    };
    let mut cells = Vec::with_capacity(args.cells);
    for i in 0..args.cells {
        let zone = format!("z{}", i % ZONES);
        cells.push(Cell::start(sim.clone(), format!("cell-{i:04}"), zone, capacity).await);
    }
    bbs.upsert_domain(CF_APPS_DOMAIN, Duration::from_secs(24 * 3600))
        .await
        .unwrap();

    // Placement from empty; the LRPs are desired as CC's process sync would.
    let begun = Instant::now();
    let desiring = tokio::spawn(desire_all(bbs.clone(), args.lrps, args.instances, begun));
    let placed = wait_started(&sim, args.lrps, begun, args.timeout).await;
    let placement = begun.elapsed();
    let mut results = Vec::new();
    if desiring.is_finished() {
        let desire = desiring.await.unwrap();
        results.push(("desire_s".to_string(), secs(desire)));
    }
    let mut finished = placed;
    if placed {
        println!("placement (empty -> all RUNNING): {:.2} s", secs(placement));
        results.push(("placement_s".into(), secs(placement)));
        // Steady state.
        let mut passes = Vec::new();
        for _ in 0..2 {
            let begun = Instant::now();
            bbs.converge().await.unwrap();
            passes.push(begun.elapsed());
        }
        println!(
            "convergence pass (steady state): {:.3} s (second pass {:.3} s)",
            secs(passes[0]),
            secs(passes[1])
        );
        results.push(("convergence_s".into(), secs(passes[0])));

        // 10% of the cells vanish.
        let begun = Instant::now();
        let gone = args.cells / 10;
        let mut lost = 0;
        for cell in cells.iter().step_by(10).take(gone) {
            lost += cell.vanish().await;
            bbs.remove_cell_presence(&cell.presence.cell_id)
                .await
                .unwrap();
        }
        let converge = Instant::now();
        bbs.converge().await.unwrap();
        let converge = converge.elapsed();
        let replaced = wait_started(&sim, args.lrps + lost, begun, args.timeout).await;
        if replaced {
            println!(
                "re-placement ({gone} cells, {lost} instances): {:.2} s (convergence pass {:.3} s)",
                secs(begun.elapsed()),
                secs(converge)
            );
            results.push(("replacement_s".into(), secs(begun.elapsed())));
            results.push(("replacement_convergence_s".into(), secs(converge)));
        }
        finished = replaced;
        // The vanished cells' instances stay as SUSPECT until a later pass sees their
        // replacements running.
        let actuals = bbs.actual_lrps(&ActualLrpFilter::default()).await.unwrap();
        let count = |presence: Presence, state: Option<ActualLrpState>| {
            actuals
                .iter()
                .filter(|a| a.presence == presence && state.is_none_or(|s| a.state == s))
                .count()
        };
        println!(
            "check: {} of {} ORDINARY ActualLRPs RUNNING, {} SUSPECT",
            count(Presence::Ordinary, Some(ActualLrpState::Running)),
            count(Presence::Ordinary, None),
            count(Presence::Suspect, None)
        );
    }

    let mut latencies = std::mem::take(&mut *sim.latencies.lock().unwrap());
    for op in ["claim", "start", "presence"] {
        let Some(sorted) = latencies.get_mut(op) else {
            continue;
        };
        sorted.sort();
        let (p50, p99) = (percentile(sorted, 50), percentile(sorted, 99));
        println!(
            "{op:<8} latency: p50 {:.2} ms, p99 {:.2} ms ({} calls)",
            secs(p50) * 1e3,
            secs(p99) * 1e3,
            sorted.len()
        );
        results.push((format!("{op}_p50_ms"), secs(p50) * 1e3));
        results.push((format!("{op}_p99_ms"), secs(p99) * 1e3));
    }
    let failures = sim.failures.load(Ordering::Relaxed);
    if failures > 0 {
        println!("{failures} BBS calls failed");
    }
    cancel.cancel();
    for cell in &cells {
        cell.stop.cancel();
    }
    let _ = running.await;
    println!("--");
    for (name, value) in results {
        println!("{name} {value:.3}");
    }
    finished
}
