//! Fault injection's harness: a steady workload against a [`Distributed`] platform (GETs
//! through the routers as a load balancer in front of them sends them, a push loop, and
//! the app log lines those GETs make), a [`FaultRun`] that injects one fault at a time and
//! measures requests failed and time to heal, the checks that nothing acknowledged was
//! lost (apps pushed, their DesiredLRPs and droplets, log lines), and the per-fault
//! report `bench/faults.sh` prints.
//!
//! **Acknowledged** means: a push whose `wf push` exited 0; a DesiredLRP the API
//! answered 2xx for (every acknowledged push made one); a log line the app wrote before
//! answering a GET that came back 200. Loggregator is best-effort (CF says logs may be
//! lost, and its log cache is in memory), so the log lines are split by when they were
//! written: lines written while no fault is active ("quiet") must all reach the log
//! cache; lines written between a fault's injection and its heal are counted, and the
//! report shows how many of those did not arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::Digest as _;

use crate::distributed::{Distributed, ROUTERS};
use crate::platform::{http_get, Wf, APPS_DOMAIN};

/// The app the request loop calls.
pub const STEADY_APP: &str = "steady";
/// Its instances.
pub const STEADY_INSTANCES: usize = 3;
/// Pause between two requests of the request loop (about 20 requests a second).
const REQUEST_INTERVAL: Duration = Duration::from_millis(50);
/// Pause between two pushes of the push loop.
const PUSH_INTERVAL: Duration = Duration::from_secs(2);
/// How long a log line may be in flight: lines written this long before a fault
/// (which may crash the in-memory log cache holding them) or after its heal belong to
/// the fault's window, not to a quiet one.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a fault may take to heal before the test fails.
pub const HEAL_WITHIN: Duration = Duration::from_secs(90);

/// The routers' addresses as a load balancer in front of them sees them (a restarted
/// router comes back on a new port).
#[derive(Clone, Default)]
pub struct Front(Arc<Mutex<Vec<SocketAddr>>>);

impl Front {
    pub fn new(routers: &[SocketAddr]) -> Front {
        Front(Arc::new(Mutex::new(routers.to_vec())))
    }

    pub fn set(&self, routers: &[SocketAddr]) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = routers.to_vec();
    }

    pub fn routers(&self) -> Vec<SocketAddr> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// GET `path` on `host` through router `first` (modulo their number), going on to
    /// the next router when one cannot be reached at all (refused, reset), as a load
    /// balancer's health-checked pool does; a router's HTTP answer is final.
    pub fn get(&self, first: usize, host: &str, path: &str) -> (u16, String) {
        let routers = self.routers();
        let mut last = (0, String::from("no routers"));
        for i in 0..routers.len() {
            let addr = routers[(first + i) % routers.len()];
            let resp = http_get(addr, &format!("{host}.{APPS_DOMAIN}"), path);
            if resp.status != 0 {
                return (resp.status, resp.body);
            }
            last = (0, format!("{addr}: {}", resp.body));
        }
        last
    }
}

/// One request of the request loop.
#[derive(Debug, Clone)]
pub struct Sample {
    pub seq: u64,
    pub sent: Instant,
    pub done: Instant,
    pub status: u16,
    /// The body (or the error), e.g. `hello from 2`.
    pub body: String,
}

/// One push of the push loop.
#[derive(Debug, Clone)]
pub struct Push {
    pub name: String,
    pub started: Instant,
    pub finished: Instant,
    pub ok: bool,
    pub output: String,
}

/// The steady workload: the request loop on [`STEADY_APP`] and the push loop.
pub struct Workload {
    stop: Arc<AtomicBool>,
    pub front: Front,
    samples: Arc<Mutex<Vec<Sample>>>,
    pushes: Arc<Mutex<Vec<Push>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts the request loop through `front` and, with `pusher`, the push loop
    /// (pushing the hello fixture as `p0`, `p1`, ... into `pusher`'s space).
    pub fn start(front: Front, pusher: Option<Wf>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let pushes = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        {
            let (stop, samples, front) = (stop.clone(), samples.clone(), front.clone());
            threads.push(std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let (status, body) = front.get(seq as usize, STEADY_APP, &format!("/r/{seq}"));
                    let ok = status == 200 && body.starts_with("hello from ");
                    let sample = Sample {
                        seq,
                        sent,
                        done: Instant::now(),
                        status: if ok || status != 200 { status } else { 0 },
                        body: body.chars().take(200).collect(),
                    };
                    lock(&samples).push(sample);
                    seq += 1;
                    std::thread::sleep(REQUEST_INTERVAL);
                }
            }));
        }
        if let Some(wf) = pusher {
            let (stop, pushes) = (stop.clone(), pushes.clone());
            let wasm = crate::fixtures::fixture_wasm("hello");
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("p{n}");
                    let started = Instant::now();
                    let out = wf.run(&[
                        "push",
                        &name,
                        "-p",
                        wasm.to_str().expect("utf-8 path"),
                        "-m",
                        "64M",
                    ]);
                    let output = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    lock(&pushes).push(Push {
                        name,
                        started,
                        finished: Instant::now(),
                        ok: out.status.success(),
                        output: output
                            .chars()
                            .rev()
                            .take(400)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect(),
                    });
                    n += 1;
                    let until = Instant::now() + PUSH_INTERVAL;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }));
        }
        Workload {
            stop,
            front,
            samples,
            pushes,
            threads,
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    pub fn pushes(&self) -> Vec<Push> {
        lock(&self.pushes).clone()
    }

    /// Stops both loops (the push under way finishes first).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct FaultRow {
    pub fault: String,
    /// Requests sent from the injection to the next fault.
    pub requests: usize,
    pub failed: usize,
    /// From the injection to the platform healthy again, with no failed request after.
    pub heal: Duration,
    pub pushes_ok: usize,
    pub pushes_failed: usize,
    /// Acknowledged pushes whose app, process or DesiredLRP is gone.
    pub lost_lrps: usize,
    /// Acknowledged pushes whose droplet cannot be downloaded (or does not match).
    pub lost_droplets: usize,
    /// Log lines written in the quiet window before this fault that never arrived.
    pub lost_quiet_lines: usize,
    /// Log lines written in the quiet window before this fault.
    pub quiet_lines: usize,
    /// Log lines written during this fault (to its heal) that never arrived (best effort).
    pub fault_lines_missing: usize,
    pub fault_lines: usize,
    /// Components that exited because of the fault (a BBS that lost its lock, say) and
    /// that the test restarted, as the supervisor (monit, systemd) of a real deployment.
    pub restarted: Vec<String>,
}

/// A distributed platform under the steady workload, with the faults injected so far.
pub struct FaultRun {
    pub d: Distributed,
    pub wf: Wf,
    pub workload: Workload,
    steady_guid: String,
    pub steady_process: String,
    pub rows: Vec<FaultRow>,
    /// (injected, healed) of each fault so far.
    windows: Vec<(Instant, Instant)>,
    /// Log lines (request seqs) found in the log cache so far.
    seen_lines: BTreeSet<u64>,
    /// Where the log lines were checked up to: the end of the last window checked.
    logs_checked_to: Instant,
    /// Instant <-> wall clock, to read the log cache from a time.
    epoch: (Instant, SystemTime),
    token: String,
}

impl FaultRun {
    /// Pushes [`STEADY_APP`] with [`STEADY_INSTANCES`] on `d` and starts the workload
    /// (with the push loop if `pushes`).
    pub fn start(d: Distributed, pushes: bool) -> FaultRun {
        let wf = d.platform.user();
        let steady_process = d.push(&wf, STEADY_APP, STEADY_INSTANCES as u32);
        let steady_guid = wf.app_guid(STEADY_APP);
        let front = Front::new(&d.routers);
        for i in 0..d.routers.len() {
            crate::distributed::eventually(
                "every router to route the app",
                Duration::from_secs(30),
                || front.get(i, STEADY_APP, "/").0 == 200,
            );
        }
        let pusher = pushes.then(|| {
            let pusher = Wf::new(&wf.org, &wf.space);
            pusher.login(&d.platform);
            pusher.ok(&["target", "-o", &wf.org, "-s", &wf.space]);
            pusher
        });
        let token = wf.token();
        let workload = Workload::start(front, pusher);
        let now = Instant::now();
        FaultRun {
            d,
            wf,
            workload,
            steady_guid,
            steady_process,
            rows: Vec::new(),
            windows: Vec::new(),
            seen_lines: BTreeSet::new(),
            logs_checked_to: now,
            epoch: (now, SystemTime::now()),
            token,
        }
    }

    /// Lets the workload run quietly for `d`.
    pub fn quiet(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// Injects a fault: checks the log lines of the quiet window before it, runs
    /// `inject` (which also undoes the fault, e.g. restarts what it killed, as a
    /// supervisor would, and returns when it did), waits until the platform is healthy
    /// again and `healed(run, undone)` holds,
    /// then checks that no acknowledged push lost its app, DesiredLRP or droplet, and
    /// records the row.
    pub fn fault(
        &mut self,
        name: &str,
        inject: impl FnOnce(&mut FaultRun) -> Instant,
        mut healed: impl FnMut(&mut FaultRun, Instant) -> bool,
    ) {
        let (quiet_lines, lost_quiet_lines, fault_lines, fault_lines_missing) = self.check_logs();
        if let Some(previous) = self.rows.last_mut() {
            previous.fault_lines = fault_lines;
            previous.fault_lines_missing = fault_lines_missing;
        }
        let injected = Instant::now();
        let undone = inject(self);
        let front_changed = self.workload.front.routers() != self.d.routers;
        if front_changed {
            self.workload.front.set(&self.d.routers);
        }
        // Healthy: the app's instances all running, every router serving it, the API
        // answering, the fault's own check; then no request fails for 3 s.
        let deadline = injected + HEAL_WITHIN;
        let mut restarted = Vec::new();
        let healthy_at = loop {
            restarted.extend(self.supervise());
            if self.healthy() && healed(self, undone) {
                let at = Instant::now();
                std::thread::sleep(Duration::from_secs(3));
                let failed_after = self
                    .workload
                    .samples()
                    .iter()
                    .any(|s| s.sent >= at && s.status != 200);
                if !failed_after {
                    break at;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name}: the platform did not heal within {HEAL_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let samples = self.workload.samples();
        let last_failure = samples
            .iter()
            .filter(|s| s.sent >= injected && s.status != 200)
            .map(|s| s.done)
            .max();
        let healed_at = last_failure.map_or(healthy_at, |f| f.max(healthy_at));
        self.windows.push((injected, healed_at));
        let (lost_lrps, lost_droplets) = self.check_pushes();
        let pushes = self.workload.pushes();
        let in_window = |p: &&Push| p.finished >= injected && p.finished <= healed_at;
        let row = FaultRow {
            fault: name.to_string(),
            requests: samples.iter().filter(|s| s.sent >= injected).count(),
            failed: samples
                .iter()
                .filter(|s| s.sent >= injected && s.status != 200)
                .count(),
            heal: healed_at - injected,
            pushes_ok: pushes.iter().filter(in_window).filter(|p| p.ok).count(),
            pushes_failed: pushes.iter().filter(in_window).filter(|p| !p.ok).count(),
            lost_lrps,
            lost_droplets,
            quiet_lines,
            lost_quiet_lines,
            fault_lines: 0,
            fault_lines_missing: 0,
            restarted,
        };
        eprintln!("fault: {row:?}");
        for s in samples
            .iter()
            .filter(|s| s.sent >= injected && s.status != 200)
            .take(5)
        {
            eprintln!(
                "  failed request {} at +{:?}: {} {}",
                s.seq,
                s.sent - injected,
                s.status,
                s.body
            );
        }
        for p in pushes.iter().filter(|p| p.finished >= injected) {
            eprintln!(
                "  push {} started at {:+.1} s, took {:.1} s, ok: {}",
                p.name,
                p.started
                    .duration_since(injected.min(p.started))
                    .as_secs_f64()
                    - injected
                        .duration_since(p.started.min(injected))
                        .as_secs_f64(),
                (p.finished - p.started).as_secs_f64(),
                p.ok
            );
        }
        for p in pushes.iter().filter(in_window).filter(|p| !p.ok) {
            eprintln!("  failed push {}: {}", p.name, p.output.trim());
        }
        self.rows.push(row);
    }

    /// Restarts the components that exited, as their supervisor would; returns their
    /// names.
    pub fn supervise(&mut self) -> Vec<String> {
        let exited: Vec<String> = self
            .d
            .platform
            .processes
            .iter_mut()
            .filter_map(|p| p.exited().then(|| p.name.clone()))
            .collect();
        for name in &exited {
            eprintln!("  {name} exited: restarting it");
            match ROUTERS.iter().position(|r| r == name) {
                Some(i) => {
                    self.d.restart_router(i);
                    self.workload.front.set(&self.d.routers);
                }
                None => self.d.platform.process(name).restart(),
            }
        }
        exited
    }

    /// Whether the steady app runs all its instances, every router serves it and the
    /// API answers.
    pub fn healthy(&mut self) -> bool {
        let settled = self.actual_lrps().is_some_and(|rows| {
            rows.len() == STEADY_INSTANCES
                && rows
                    .iter()
                    .all(|lrp| lrp["state"] == "RUNNING" && lrp["presence"] == "ORDINARY")
        });
        if !settled {
            return false;
        }
        let routers = self.workload.front.routers();
        for addr in routers {
            let resp = http_get(addr, &format!("{STEADY_APP}.{APPS_DOMAIN}"), "/");
            if resp.status != 200 {
                return false;
            }
        }
        self.api_get("/v3/apps?per_page=1").is_some()
    }

    /// The ActualLRPs of the steady app; `None` when no BBS answers.
    fn actual_lrps(&self) -> Option<Vec<serde_json::Value>> {
        let body = self.bbs_post("/v1/actual_lrps/list")?;
        Some(
            body["actual_lrps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|lrp| {
                    lrp["key"]["process_guid"]
                        .as_str()
                        .is_some_and(|g| g.starts_with(&self.steady_process))
                })
                .collect(),
        )
    }

    /// POST `path` with `{}` to whichever BBS answers.
    pub fn bbs_post(&self, path: &str) -> Option<serde_json::Value> {
        let client = self.d.internal_client();
        self.d.bbs_urls.iter().find_map(|url| {
            let resp = client
                .post(format!("{url}{path}"))
                .json(&serde_json::json!({}))
                .timeout(Duration::from_secs(10))
                .send()
                .ok()?;
            resp.status().is_success().then(|| resp.json().ok())?
        })
    }

    /// GET `path` on the API with the test user's token (fetched again once on 401).
    pub fn api_get(&mut self, path: &str) -> Option<serde_json::Value> {
        for attempt in 0..2 {
            let resp = reqwest::blocking::Client::new()
                .get(format!("{}{path}", self.d.platform.api_url))
                .header("Authorization", &self.token)
                .timeout(Duration::from_secs(10))
                .send()
                .ok()?;
            if resp.status().as_u16() == 401 && attempt == 0 {
                let out = self.wf.run(&["oauth-token"]);
                if !out.status.success() {
                    return None;
                }
                self.token = String::from_utf8_lossy(&out.stdout).trim().to_string();
                continue;
            }
            return resp.status().is_success().then(|| resp.json().ok())?;
        }
        None
    }

    /// Checks every push acknowledged so far: its app still exists in the Cloud
    /// Controller, a DesiredLRP for it is in the BBS, and its droplet downloads from
    /// the DesiredLRP's URL with the DesiredLRP's checksum. Returns (apps or DesiredLRPs
    /// lost, droplets lost), waiting up to 30 s for a transient answer to settle.
    pub fn check_pushes(&mut self) -> (usize, usize) {
        let acknowledged: Vec<String> = self
            .workload
            .pushes()
            .into_iter()
            .filter(|p| p.ok)
            .map(|p| p.name)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (lost_lrps, lost_droplets, detail) = self.lost_pushes(&acknowledged);
            if lost_lrps + lost_droplets == 0 || Instant::now() > deadline {
                if !detail.is_empty() {
                    eprintln!("  lost: {detail}");
                }
                return (lost_lrps, lost_droplets);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn lost_pushes(&mut self, acknowledged: &[String]) -> (usize, usize, String) {
        if acknowledged.is_empty() {
            return (0, 0, String::new());
        }
        let Some(apps) = self.api_get("/v3/apps?per_page=5000") else {
            return (acknowledged.len(), 0, "the API does not answer".into());
        };
        let guids: BTreeMap<String, String> = apps["resources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|a| {
                Some((
                    a["name"].as_str()?.to_string(),
                    a["guid"].as_str()?.to_string(),
                ))
            })
            .collect();
        let Some(desired) = self.bbs_post("/v1/desired_lrps/list") else {
            return (acknowledged.len(), 0, "no BBS answers".into());
        };
        let by_app: BTreeMap<String, serde_json::Value> = desired["desired_lrps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|lrp| Some((lrp["log_guid"].as_str()?.to_string(), lrp)))
            .collect();
        let (mut lost_lrps, mut lost_droplets, mut detail) = (0, 0, Vec::new());
        for name in acknowledged {
            let Some(lrp) = guids.get(name).and_then(|g| by_app.get(g)) else {
                lost_lrps += 1;
                detail.push(format!("{name}: no app or DesiredLRP"));
                continue;
            };
            if lrp["instances"].as_u64().unwrap_or(0) == 0 {
                lost_lrps += 1;
                detail.push(format!("{name}: DesiredLRP with 0 instances"));
                continue;
            }
            let uri = lrp["action"]["droplet_uri"].as_str().unwrap_or("");
            let sha = lrp["action"]["droplet_sha256"].as_str().unwrap_or("");
            match droplet_sha256(uri) {
                Ok(got) if got == sha => {}
                Ok(got) => {
                    lost_droplets += 1;
                    detail.push(format!(
                        "{name}: droplet sha256 {got}, DesiredLRP says {sha}"
                    ));
                }
                Err(e) => {
                    lost_droplets += 1;
                    detail.push(format!("{name}: droplet {uri}: {e}"));
                }
            }
        }
        (lost_lrps, lost_droplets, detail.join("; "))
    }

    /// Whether a push started after `t` was acknowledged: the push path works again.
    pub fn pushed_since(&self, t: Instant) -> bool {
        self.workload
            .pushes()
            .iter()
            .any(|p| p.ok && p.started >= t)
    }

    /// Checks the log lines written since the last check: (quiet lines, of which lost,
    /// fault lines, of which missing). Quiet lines are waited for (up to 20 s).
    pub fn check_logs(&mut self) -> (usize, usize, usize, usize) {
        let to = Instant::now();
        let from = self.logs_checked_to;
        let in_fault = |t: Instant, windows: &[(Instant, Instant)]| {
            windows
                .iter()
                .any(|(a, b)| t + SETTLE >= *a && t <= *b + SETTLE)
        };
        let written: Vec<(u64, bool)> = self
            .workload
            .samples()
            .into_iter()
            .filter(|s| s.status == 200 && s.done >= from && s.done < to)
            .map(|s| {
                (
                    s.seq,
                    in_fault(s.sent, &self.windows) || in_fault(s.done, &self.windows),
                )
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        let read_from = from.checked_sub(Duration::from_secs(30)).unwrap_or(from);
        loop {
            self.read_log_lines(read_from);
            let missing_quiet = written
                .iter()
                .filter(|(seq, fault)| !fault && !self.seen_lines.contains(seq))
                .count();
            if missing_quiet == 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.logs_checked_to = to;
        let quiet: Vec<u64> = written
            .iter()
            .filter(|(_, f)| !f)
            .map(|(s, _)| *s)
            .collect();
        let fault: Vec<u64> = written
            .iter()
            .filter(|(_, f)| *f)
            .map(|(s, _)| *s)
            .collect();
        let lost_quiet: Vec<u64> = quiet
            .iter()
            .copied()
            .filter(|s| !self.seen_lines.contains(s))
            .collect();
        if !lost_quiet.is_empty() {
            let samples = self.workload.samples();
            let last_heal = self.windows.last().map(|w| w.1);
            for seq in lost_quiet.iter().take(10) {
                let s = &samples[*seq as usize];
                eprintln!(
                    "  quiet log line {seq} missing: sent {:?} after the last heal, answered {:?}",
                    last_heal.map(|h| s.sent.saturating_duration_since(h)),
                    s.body
                );
            }
            let metrics = reqwest::blocking::get(format!("{}/metrics", self.d.platform.api_url))
                .and_then(|r| r.text())
                .unwrap_or_default();
            for line in metrics.lines().filter(|l| l.starts_with("log_cache")) {
                eprintln!("  controller: {line}");
            }
        }
        let fault_missing = fault
            .iter()
            .filter(|s| !self.seen_lines.contains(s))
            .count();
        (quiet.len(), lost_quiet.len(), fault.len(), fault_missing)
    }

    /// Reads the steady app's log lines from the log cache, from `from` on, into
    /// `seen_lines`.
    fn read_log_lines(&mut self, from: Instant) {
        let wall = self.epoch.1 + from.saturating_duration_since(self.epoch.0);
        let mut start = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
            // Other machines' clocks: the cells stamp the envelopes.
            - 5_000_000_000;
        for _ in 0..1000 {
            let path = format!(
                "/api/v1/read/{}?envelope_types=LOG&limit=1000&start_time={start}",
                self.steady_guid
            );
            let Some(body) = self.api_get(&path) else {
                return;
            };
            let batch = body["envelopes"]["batch"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut last = start;
            for e in &batch {
                let ts: i64 = e["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                last = last.max(ts);
                let payload = e["log"]["payload"].as_str().unwrap_or("");
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload) else {
                    continue;
                };
                let line = String::from_utf8_lossy(&bytes);
                if let Some(seq) = line
                    .trim()
                    .strip_prefix("GET /r/")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    self.seen_lines.insert(seq);
                }
            }
            if batch.len() < 1000 {
                return;
            }
            start = last + 1;
        }
    }

    /// Stops the workload and makes the final checks: every acknowledged push still
    /// serves through the routers, and the log lines since the last fault. Returns the
    /// final row.
    pub fn finish(&mut self) -> FaultRow {
        std::thread::sleep(SETTLE);
        let (quiet_lines, lost_quiet_lines, fault_lines, fault_lines_missing) = self.check_logs();
        if let Some(previous) = self.rows.last_mut() {
            previous.fault_lines = fault_lines;
            previous.fault_lines_missing = fault_lines_missing;
        }
        self.workload.stop();
        let (lost_lrps, lost_droplets) = self.check_pushes();
        let acknowledged: Vec<Push> = self
            .workload
            .pushes()
            .into_iter()
            .filter(|p| p.ok)
            .collect();
        for p in &acknowledged {
            crate::distributed::eventually(
                &format!("acknowledged push {} to serve", p.name),
                Duration::from_secs(60),
                || self.workload.front.get(0, &p.name, "/").0 == 200,
            );
        }
        let pushes = self.workload.pushes();
        let row = FaultRow {
            fault: "(after the last fault)".into(),
            requests: 0,
            failed: 0,
            heal: Duration::ZERO,
            pushes_ok: pushes.iter().filter(|p| p.ok).count(),
            pushes_failed: pushes.iter().filter(|p| !p.ok).count(),
            lost_lrps,
            lost_droplets,
            quiet_lines,
            lost_quiet_lines,
            fault_lines: 0,
            fault_lines_missing: 0,
            restarted: Vec::new(),
        };
        eprintln!("final: {row:?}");
        row
    }

    /// The report as a markdown table.
    pub fn table(&self) -> String {
        report_table(&self.rows)
    }
}

/// Downloads the droplet at `uri`; its sha256 in hex.
fn droplet_sha256(uri: &str) -> Result<String, String> {
    let resp = reqwest::blocking::Client::new()
        .get(uri)
        .timeout(Duration::from_secs(30))
        .send()
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let bytes = resp.bytes().map_err(|e| e.to_string())?;
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `rows` as the markdown table the report prints (and docs/reliability.md shows).
pub fn report_table(rows: &[FaultRow]) -> String {
    let mut out = String::from(
        "| fault | requests | failed | time to heal | pushes ok / failed | lost DesiredLRPs | lost droplets | quiet log lines lost | log lines during fault missing | exited, restarted |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} s | {} / {} | {} | {} | {} of {} | {} of {} | {} |\n",
            r.fault,
            r.requests,
            r.failed,
            r.heal.as_secs_f64(),
            r.pushes_ok,
            r.pushes_failed,
            r.lost_lrps,
            r.lost_droplets,
            r.lost_quiet_lines,
            r.quiet_lines,
            r.fault_lines_missing,
            r.fault_lines,
            if r.restarted.is_empty() {
                "-".to_string()
            } else {
                r.restarted.join(", ")
            },
        ));
    }
    out
}

/// Prints `table` between the markers `bench/faults.sh` extracts.
pub fn print_report(title: &str, table: &str) {
    println!("FAULTS-REPORT-BEGIN {title}\n{table}FAULTS-REPORT-END");
}

/// A PostgreSQL server of the test's own (initdb and pg_ctl, as `.ci/run` starts its
/// shared one), on a free loopback port, so that it can be restarted: the shared
/// `WF_TEST_POSTGRES_URL` server must not be. Runs as `postgres` (through runuser) when
/// the test runs as root, since the server refuses root. Stopped on drop.
pub struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Initialises and starts a server; `None` (the test is skipped, and says so)
    /// without PostgreSQL's server programs, unless `WF_TEST_POSTGRES_URL` is set (as in
    /// CI): then it panics.
    pub fn start() -> Option<PrivatePostgres> {
        let bin = crate::bosh::postgres_bin_dir()?;
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("wf-faults-postgres")
            .tempdir()
            .expect("a temp dir");
        if as_postgres {
            let status = std::process::Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(
                status.success(),
                "chown postgres {}: is there a postgres user?",
                dir.path().display()
            );
        }
        let pg = PrivatePostgres {
            bin,
            port: crate::distributed::free_port(),
            dir,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-locale".as_ref(),
                "--encoding=UTF8".as_ref(),
            ],
        );
        pg.start_server();
        for db in ["bbs", "cc", "uaa"] {
            pg.run(
                "createdb",
                &[
                    "-h".as_ref(),
                    "127.0.0.1".as_ref(),
                    "-p".as_ref(),
                    pg.port.to_string().as_ref(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    db.as_ref(),
                ],
            );
        }
        Some(pg)
    }

    /// The URL of database `db` (`bbs`, `cc` or `uaa`).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (after [`PrivatePostgres::crash`]), waiting until it accepts
    /// connections.
    pub fn start_server(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-k {} -p {} -h 127.0.0.1 -c fsync=off -c max_connections=200",
            self.dir.path().display(),
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        );
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: every backend
    /// quits at once, and the next start runs crash recovery).
    pub fn crash(&self) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "stop".as_ref(),
            ],
        );
    }

    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        let path = if path.is_file() {
            path
        } else {
            // createdb is a client program: not always beside the server's.
            std::path::PathBuf::from(program)
        };
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path).current_dir("/");
            c
        } else {
            std::process::Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self
            .command(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `args` with the value after `flag` replaced by `value`.
pub fn with_arg(args: &[std::ffi::OsString], flag: &str, value: &str) -> Vec<std::ffi::OsString> {
    let mut out = args.to_vec();
    let i = out
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    out[i + 1] = value.into();
    out
}

/// Moves the BBS, UAA and the Cloud Controller of a just started `d` (before anyone
/// used it) onto `pg`'s databases: each is restarted with `--database-url` changed.
pub fn move_to_postgres(d: &mut Distributed, pg: &PrivatePostgres) {
    let within = Duration::from_secs(60);
    // The standby first, so that it cannot take the lock in the old database.
    d.platform.process("bbs-b").kill();
    for (name, db, ready) in [
        ("bbs-a", "bbs", Some("bbs: ")),
        ("bbs-b", "bbs", None),
        ("uaa", "uaa", Some("uaa: ")),
        ("controller", "cc", Some("api: ")),
    ] {
        let process = d.platform.process(name);
        let args = with_arg(process.args(), "--database-url", &pg.url(db));
        process.restart_with(args);
        if let Some(prefix) = ready {
            process.line_after(prefix, within);
        }
    }
}

/// Runs `body` on a thread of its own in a private mount namespace (`unshare`), so that
/// the mounts it makes (a small tmpfs for a cell's data dir, say) are seen only by it and
/// the processes it starts, and vanish with them. Returns `false` (after saying why)
/// when this process may not make one (not root, or no CAP_SYS_ADMIN).
pub fn in_private_mount_namespace(body: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare and mount with these constant arguments touch only this
        // thread's mount namespace.
        let entered = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
        };
        let _ = tx.send(
            entered
                .then_some(())
                .ok_or_else(std::io::Error::last_os_error),
        );
        if entered {
            body();
        }
    });
    let entered = rx.recv().expect("the namespace thread answers");
    if let Err(e) = &entered {
        eprintln!("skipping: cannot make a private mount namespace ({e}); the test needs root");
    }
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
    entered.is_ok()
}

/// Mounts a tmpfs of `size` (`64m`) on `dir` (made if missing), in this thread's mount
/// namespace (see [`in_private_mount_namespace`]).
pub fn mount_tmpfs(dir: &std::path::Path, size: &str) {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(dir).expect("the mount point");
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("a path");
    let options = std::ffi::CString::new(format!("size={size}")).expect("options");
    // SAFETY: plain C strings that outlive the call.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    assert_eq!(
        mounted,
        0,
        "mounting a tmpfs on {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

/// Fills the file system of `dir` with the file `dir/filler` until it is full.
pub fn fill_disk(dir: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler")).expect("the filler file");
    let chunk = vec![0x5au8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // What is left (less than a chunk) too.
    while file.write_all(&[0x5a; 4096]).is_ok() {}
    let _ = file.sync_all();
}

/// libfaketime (Debian's `faketime` package), to move one component's wall clock:
/// `None` (the test is skipped, and says so) without it, unless `WF_REQUIRE_FAKETIME`
/// is set: then it panics.
pub fn libfaketime() -> Option<std::path::PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("WF_REQUIRE_FAKETIME").is_none(),
            "WF_REQUIRE_FAKETIME is set but libfaketime is not installed (apt-get install faketime)"
        );
        eprintln!("skipping: libfaketime is not installed (apt-get install faketime)");
    }
    found
}

/// A wall clock offset that one component reads through libfaketime: `offset` writes
/// it (`+120`, `-120`, `+0`: seconds), and the component sees it within a second. Only
/// the wall clock moves (as an NTP step does), not the monotonic one.
pub struct FakeClock {
    lib: std::path::PathBuf,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeClock {
    pub fn new(lib: std::path::PathBuf) -> FakeClock {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("clock");
        std::fs::write(&file, "+0").expect("the clock file");
        FakeClock {
            lib,
            file,
            _dir: dir,
        }
    }

    /// Restarts `process` with its clock read through this one.
    pub fn restart(&self, process: &mut crate::platform::Process) {
        // Process::start passes this process's environment on; the moment it is set
        // the offset is 0, so a `wf` the workload starts meanwhile is unaffected.
        let vars = [
            ("LD_PRELOAD", self.lib.as_os_str().to_owned()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.as_os_str().to_owned()),
            ("FAKETIME_CACHE_DURATION", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
        ];
        for (k, v) in &vars {
            std::env::set_var(k, v);
        }
        process.restart();
        for (k, _) in &vars {
            std::env::remove_var(k);
        }
    }

    pub fn offset(&self, offset: &str) {
        std::fs::write(&self.file, offset).expect("the clock file");
    }
}
