//! Isolation between apps on a cell: a hostile app attacks its sandbox (writes outside
//! its directory, connects to the cell's internal ports and the metadata address,
//! floods its log, exits, exhausts its memory, spins forever, overflows its stack,
//! reads the host's and its neighbours' files, looks for their secrets, streams
//! gigabytes, sends and asks for huge headers, opens descriptors without end, declares
//! giant memories and tables) while a neighbour app in the same cell keeps answering at
//! its usual speed. Every attack is contained: denied, or the hostile instance crashes
//! with a readable reason and comes back, and the platform's processes keep their
//! memory and descriptors.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wf_tests::platform::{http_get_with, Platform, Wf, APPS_DOMAIN};

const START_WITHIN: Duration = Duration::from_secs(60);
/// The neighbour's answers may not take longer than this, whatever the hostile app does.
const NEIGHBOUR_LATENCY: Duration = Duration::from_secs(2);

/// Held by the tests that measure the platform's memory or descriptors, and by those
/// that move them a lot (the memory bomb), so that they do not measure each other.
static MEASURED: Mutex<()> = Mutex::new(());

fn measured() -> std::sync::MutexGuard<'static, ()> {
    MEASURED.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_hostile_app_is_contained_and_its_neighbour_keeps_answering() {
    let _measured = measured();
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("hostile", "hostile");
    wf.push_fixture("neighbour", "hello");
    assert_eq!(platform.get("hostile", "/").body, "hostile 0\n");
    neighbour_answers(platform, "after the pushes");

    // The filesystem: only /tmp is writable, nothing of the host is visible.
    let report = platform.get("hostile", "/write-outside");
    assert_eq!(report.status, 200, "{report:?}");
    for line in report.body.lines() {
        let (target, outcome) = line.split_once(": ").expect("target: outcome");
        let expected = if target == "/tmp/inside" {
            "ok"
        } else {
            "denied"
        };
        assert!(outcome.starts_with(expected), "{}", report.body);
    }
    assert_eq!(report.body.lines().count(), 6, "{}", report.body);

    // The network: the router, the neighbour's own port and the metadata address are
    // internal to the cell, whatever the security groups allow publicly.
    let neighbour_port = instance_port(&wf, "neighbour");
    let internal = [
        format!("127.0.0.1:{}", platform.router_addr.port()),
        format!("127.0.0.1:{neighbour_port}"),
        "169.254.169.254:80".to_string(),
    ];
    for addr in internal {
        let resp = platform.get("hostile", &format!("/connect?addr={addr}"));
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(resp.body.starts_with("denied"), "{addr}: {}", resp.body);
    }
    let resp = platform.get("hostile", &format!("/listen?port={neighbour_port}"));
    assert!(resp.body.starts_with("denied"), "{}", resp.body);
    neighbour_answers(platform, "after the denied connections");

    // A log flood is cut to the app's log rate, and the drop is said in its log.
    let resp = platform.get("hostile", "/flood?lines=100000");
    assert_eq!(resp.body, "flooded 100000\n", "{resp:?}");
    neighbour_answers(platform, "after the log flood");
    wait_for_logs(&wf, "hostile", &["log lines dropped"]);

    // An exit with a status of its own is reported as such; the instance comes back.
    let resp = platform.get("hostile", "/exit?code=3");
    assert_eq!(resp.body, "exiting with 3\n", "{resp:?}");
    wait_for_logs(&wf, "hostile", &["Exited with status 3"]);
    platform.wait_for("hostile", "/", START_WITHIN, |r| r.body == "hostile 0\n");
    neighbour_answers(platform, "after the exit");

    // A memory bomb hits the instance's quota, not the cell's memory.
    platform.get("hostile", "/membomb");
    neighbour_answers(platform, "after the memory bomb");
    wait_for_logs(
        &wf,
        "hostile",
        &["Exited with status 137 (out of memory: limit 256M)"],
    );
    platform.wait_for("hostile", "/", START_WITHIN, |r| r.body == "hostile 0\n");
    let stats = process_stats(&wf, "hostile");
    assert_eq!(stats["resources"][0]["state"], "RUNNING", "{stats}");

    // A busy loop gets its share of the CPU and no more: the neighbour keeps its pace
    // while the hostile instance spins (its request never gets an answer).
    std::thread::spawn(move || platform.get("hostile", "/spin"));
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..3 {
        neighbour_answers(platform, &format!("while the hostile app spins ({round})"));
        std::thread::sleep(Duration::from_millis(300));
    }
    wf.ok(&["restart", "hostile"]);
    platform.wait_for("hostile", "/", START_WITHIN, |r| r.body == "hostile 0\n");
    neighbour_answers(platform, "after the restart");
}

/// `wf scale -l` gives the app a log rate of its own (restarting it), which its
/// instances keep to and say so when they drop lines; the process shows the limit.
#[test]
fn an_apps_own_log_rate_limit_is_kept() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("chatty", "hostile");
    let out = wf.ok(&["scale", "chatty", "-l", "4K"]);
    assert!(out.contains("OK"), "{out}");
    let stats = process_stats(&wf, "chatty");
    assert_eq!(stats["resources"][0]["log_rate_limit"], 4096, "{stats}");
    platform.wait_for("chatty", "/", START_WITHIN, |r| r.body == "hostile 0\n");
    let resp = platform.get("chatty", "/flood?lines=2000");
    assert_eq!(resp.body, "flooded 2000\n", "{resp:?}");
    wait_for_logs(
        &wf,
        "chatty",
        &["app instance exceeded log rate limit (4096 bytes/sec)"],
    );
    let err = wf.fails(&["scale", "chatty", "-l", "lots"]);
    assert!(err.contains("Invalid log rate limit 'lots'"), "{err}");
}

/// A few requests to the neighbour, each answered in full within [`NEIGHBOUR_LATENCY`].
fn neighbour_answers(platform: &Platform, during: &str) {
    answers_promptly(platform, "neighbour", "hello from 0\n", during);
}

/// A few requests to `host`, each answered `body` within [`NEIGHBOUR_LATENCY`].
fn answers_promptly(platform: &Platform, host: &str, body: &str, during: &str) {
    for _ in 0..5 {
        let started = Instant::now();
        let resp = platform.get(host, "/");
        let took = started.elapsed();
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (200, body),
            "{during}: {resp:?}"
        );
        assert!(took < NEIGHBOUR_LATENCY, "{during}: {host} took {took:?}");
    }
}

/// Polls the app's recent logs until every needle is in them.
fn wait_for_logs(wf: &Wf, app: &str, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = wf.ok(&["logs", app, "--recent"]);
        if needles.iter().all(|needle| logs.contains(needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needles:?} not in the logs of {app}:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn process_stats(wf: &Wf, app: &str) -> serde_json::Value {
    let guid = wf.app_guid(app);
    let process = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web")]);
    let process_guid = process["guid"].as_str().expect("process guid");
    wf.curl_json(&[&format!("/v3/processes/{process_guid}/stats")])
}

/// The host port of instance 0 of `app`, once it runs.
fn instance_port(wf: &Wf, app: &str) -> u16 {
    let deadline = Instant::now() + START_WITHIN;
    loop {
        let stats = process_stats(wf, app);
        let port = stats["resources"][0]["instance_ports"][0]["external"].as_u64();
        if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
            return port;
        }
        assert!(Instant::now() < deadline, "{app} has no port: {stats}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every line of `report` says the attempt was denied.
fn all_denied(report: &str, lines: usize) {
    assert_eq!(report.lines().count(), lines, "{report}");
    for line in report.lines() {
        assert!(line.contains(": denied"), "not denied: {line}\n{report}");
    }
}

/// GET `path` on instance `index` of the app `host` (guid `app_guid`), through the
/// router's `X-CF-App-Instance`.
fn get_instance(platform: &Platform, host: &str, app_guid: &str, index: u32, path: &str) -> String {
    let target = format!("{app_guid}:{index}");
    let resp = http_get_with(
        platform.router_addr,
        &format!("{host}.{APPS_DOMAIN}"),
        path,
        &[("X-CF-App-Instance", &target)],
    );
    assert_eq!(resp.status, 200, "{host}/{index}{path}: {resp:?}");
    resp.body
}

#[test]
fn the_hosts_and_other_instances_files_are_out_of_reach() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("snoop", "hostile");
    wf.push_fixture("victim", "hostile");
    wf.ok(&["scale", "snoop", "-i", "2"]);
    let snoop = wf.app_guid("snoop");
    let victim = wf.app_guid("victim");
    let deadline = Instant::now() + START_WITHIN;
    while process_stats(&wf, "snoop")["resources"]
        .as_array()
        .is_none_or(|r| r.iter().filter(|i| i["state"] == "RUNNING").count() < 2)
    {
        assert!(
            Instant::now() < deadline,
            "snoop's second instance never ran"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The host's files: nothing outside /app and /tmp opens, by any path.
    all_denied(&platform.get("snoop", "/read-host").body, 14);

    // Another app's /tmp, and another instance's of the same app.
    let put = "/put?path=/tmp/secret&data=victim-secret";
    assert_eq!(get_instance(platform, "victim", &victim, 0, put), "ok\n");
    let put = "/put?path=/tmp/mine&data=instance-0-secret";
    assert_eq!(get_instance(platform, "snoop", &snoop, 0, put), "ok\n");
    assert_eq!(
        get_instance(platform, "snoop", &snoop, 0, "/read?path=/tmp/mine"),
        "ok 17: instance-0-secret\n"
    );
    for path in [
        "/read?path=/tmp/secret",
        "/read?path=/tmp/mine",
        "/read?path=/tmp/../secret",
    ] {
        let body = get_instance(platform, "snoop", &snoop, 1, path);
        assert!(body.starts_with("denied"), "{path}: {body}");
    }
    let listed = get_instance(platform, "snoop", &snoop, 1, "/list?path=/tmp");
    assert_eq!(listed, "ok \n", "instance 1 sees files in its /tmp");

    // Other apps' droplets and the cell's data, by their paths on the host.
    let mut host_files = Vec::new();
    collect_files(&platform.data_dir, &mut host_files, 3);
    assert!(
        !host_files.is_empty(),
        "no files under {}",
        platform.data_dir.display()
    );
    for file in host_files.iter().take(10) {
        let body = platform
            .get("snoop", &format!("/read?path={}", file.display()))
            .body;
        assert!(body.starts_with("denied"), "{}: {body}", file.display());
    }

    // Links out of /tmp: symbolic ones may be made but lead nowhere; a hard link to
    // the app's read-only files is refused, and they stay unwritable.
    let links = platform.get("snoop", "/links").body;
    assert_eq!(links.lines().count(), 7, "{links}");
    for line in links.lines() {
        let through = line.rsplit_once(": ").map_or("", |(_, outcome)| outcome);
        assert!(
            line.contains("read: denied")
                || line.contains(": denied")
                || through.starts_with("denied"),
            "{line}\n{links}"
        );
        assert!(!line.contains("root:x:"), "{line}");
    }
    neighbour_of(platform, &wf, "after the file attempts");
}

/// Up to `left` levels of files under `dir` (skips what it cannot read).
fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>, left: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() && left > 0 {
            collect_files(&path, out, left - 1);
        } else if path.is_file()
            && path
                .to_str()
                .is_some_and(|p| !p.contains(['&', '?', ' ', '#']))
        {
            out.push(path);
        }
    }
}

/// Pushes a `hello` neighbour of this test's own and checks it answers promptly.
fn neighbour_of(platform: &Platform, wf: &Wf, during: &str) {
    let name = format!("hello-{}", wf.space);
    if platform.get(&name, "/").status != 200 {
        wf.push_fixture(&name, "hello");
    }
    answers_promptly(platform, &name, "hello from 0\n", during);
}

#[test]
fn an_app_sees_no_environment_but_its_own() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("env-victim", "hostile");
    wf.push_fixture("env-snoop", "hostile");
    wf.ok(&[
        "cups",
        "victim-db",
        "-p",
        r#"{"password":"victim-db-password"}"#,
    ]);
    wf.ok(&["bind-service", "env-victim", "victim-db"]);
    wf.ok(&["restart", "env-victim"]);
    let victims = platform.get("env-victim", "/env").body;
    assert!(victims.contains("victim-db-password"), "{victims}");

    let env = platform.get("env-snoop", "/env").body;
    assert!(env.contains("VCAP_APPLICATION="), "{env}");
    assert!(!env.contains("victim-db-password"), "{env}");
    // The cell's own environment (the harness gives wfd RUST_LOG and
    // WF_BUILDPACK_TOOLS_DIR; cargo gives it CARGO_*) stays the cell's.
    assert!(env.lines().any(|l| l == "HOME=/app"), "{env}");
    for line in env.lines() {
        let name = line.split_once('=').map_or(line, |(name, _)| name);
        assert!(
            !["PATH", "USER", "PWD", "RUST_LOG", "WF_BUILDPACK_TOOLS_DIR"].contains(&name)
                && !name.starts_with("CARGO")
                && !name.starts_with("WFD_"),
            "the host's {name} reached the app:\n{env}"
        );
    }
}

#[test]
fn a_stack_overflow_ends_only_its_instance() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("deep", "hostile");
    neighbour_of(platform, &wf, "before the recursion");
    let resp = platform.get("deep", "/stack");
    assert_ne!(resp.status, 200, "{resp:?}");
    wait_for_logs(
        &wf,
        "deep",
        &["Exited with status 1 (wasm trap: stack overflow)"],
    );
    platform.wait_for("deep", "/", START_WITHIN, |r| r.body == "hostile 0\n");
    neighbour_of(platform, &wf, "after the stack overflow");
}

/// The soft open-file limit of process `pid`.
fn open_file_limit(pid: u32) -> usize {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(usize::MAX / 8)
}

/// Streams a 2 GiB response through the router (once read as fast as it comes, once
/// not read for a while): the router and the cell pass it through in bounded
/// buffers, and the neighbour keeps its pace.
#[test]
fn a_huge_response_streams_through_in_bounded_memory() {
    let _measured = measured();
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("huge", "hostile");
    neighbour_of(platform, &wf, "before the huge response");
    let (rss_before, _) = platform.processes[0].rss_kib_and_fds();
    let mut rss_max = rss_before;

    const MIB: u64 = 1 << 20;
    let router = platform.router_addr;
    let download = std::thread::spawn(move || -> (u16, u64, Duration) {
        let started = Instant::now();
        let mut stream = TcpStream::connect(router).expect("router");
        let request = format!(
            "GET /huge?mb=2048 HTTP/1.1\r\nHost: huge.{APPS_DOMAIN}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("request");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = vec![0u8; 256 * 1024];
        let mut head = Vec::new();
        let mut body = 0u64;
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if head.len() < 4096 && body == 0 {
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    body = (head.len() - end - 4) as u64;
                }
            } else {
                body += n as u64;
            }
        }
        let status = String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body, started.elapsed())
    });
    while !download.is_finished() {
        answers_promptly(
            platform,
            &format!("hello-{}", wf.space),
            "hello from 0\n",
            "while 2 GiB stream",
        );
        rss_max = rss_max.max(platform.processes[0].rss_kib_and_fds().0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body, took) = download.join().expect("download");
    assert_eq!((status, body), (200, 2048 * MIB), "after {took:?}");
    let grown_mib = (rss_max.saturating_sub(rss_before)) / 1024;
    eprintln!(
        "2 GiB through the router in {took:?}; wfd RSS {rss_before} KiB, max +{grown_mib} MiB"
    );
    assert!(
        grown_mib < 64,
        "wfd grew {grown_mib} MiB while streaming 2 GiB"
    );

    // A reader that stops reading: the app is held back, nothing piles up.
    let mut stream = TcpStream::connect(router).expect("router");
    let request = format!(
        "GET /huge?mb=1024 HTTP/1.1\r\nHost: huge.{APPS_DOMAIN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut buf = vec![0u8; 1 << 20];
    stream.read_exact(&mut buf).expect("the first MiB");
    let (rss_before, _) = platform.processes[0].rss_kib_and_fds();
    let mut rss_max = rss_before;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        rss_max = rss_max.max(platform.processes[0].rss_kib_and_fds().0);
    }
    neighbour_of(platform, &wf, "while a huge response waits for its reader");
    drop(stream);
    let grown_mib = (rss_max.saturating_sub(rss_before)) / 1024;
    assert!(
        grown_mib < 32,
        "wfd grew {grown_mib} MiB for a reader that stopped"
    );
    platform.wait_for("huge", "/", START_WITHIN, |r| r.body == "hostile 0\n");
}

/// Huge request headers (one of 1 MiB, or 10,000 small ones) are refused by the
/// router; a huge response header from the app becomes a 502. Neither reaches the
/// other side, and the app keeps answering.
#[test]
fn huge_headers_are_refused_on_the_way_in_and_out() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("headers", "hostile");
    let host = format!("headers.{APPS_DOMAIN}");
    let big = "a".repeat(1 << 20);
    let resp = http_get_with(platform.router_addr, &host, "/", &[("X-Big", &big)]);
    assert!(
        [0, 400, 431].contains(&resp.status),
        "a 1 MiB request header: {} {}",
        resp.status,
        resp.body.chars().take(200).collect::<String>()
    );
    let many: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("X-H{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let resp = http_get_with(platform.router_addr, &host, "/", &many);
    assert!(
        [0, 400, 431].contains(&resp.status),
        "10,000 request headers: {}",
        resp.status
    );

    let resp = platform.get("headers", "/huge-header?kb=1024");
    assert_eq!(
        resp.status,
        502,
        "a 1 MiB response header: {:?}",
        resp.headers.len()
    );
    assert!(resp.header("x-huge").is_none());
    answers_promptly(platform, "headers", "hostile 0\n", "after the huge headers");
    neighbour_of(platform, &wf, "after the huge headers");
}

/// An app that opens descriptors without end (each file it opens is one of the cell
/// process's) is stopped at its own limit, long before the cell runs out: the
/// neighbour keeps accepting connections, and the descriptors come back.
#[test]
fn an_app_cannot_exhaust_the_cells_descriptors() {
    let _measured = measured();
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("fds", "hostile");
    neighbour_of(platform, &wf, "before the descriptors");
    let (_, fds_before) = platform.processes[0].rss_kib_and_fds();
    let pid = platform.processes[0].pid();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    peak = peak.max(fds.count());
                }
            }
            peak
        })
    };
    let resp = platform.get("fds", "/fds?n=100000");
    wait_for_logs(&wf, "fds", &["Exited with status 1 (wasm trap: "]);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    eprintln!(
        "/fds: {} {}; wfd descriptors {fds_before} before, {peak} at most",
        resp.status,
        resp.body.trim()
    );
    // The instance is stopped at its share (a quarter of the cell's open-file limit at
    // most), and never answers that it got them all.
    assert!(!resp.body.starts_with("opened 100000"), "{resp:?}");
    let limit = open_file_limit(pid);
    assert!(
        peak < fds_before + limit / 4 + 64,
        "wfd reached {peak} descriptors (limit {limit}, {fds_before} before)"
    );
    neighbour_of(platform, &wf, "after the descriptors");
    platform.wait_for("fds", "/", START_WITHIN, |r| r.body == "hostile 0\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, fds) = platform.processes[0].rss_kib_and_fds();
        if fds <= fds_before + 16 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wfd holds {fds} descriptors, {fds_before} before"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Modules that ask for more than their quota at start (a 4 GiB memory, a table of
/// 100 million elements, a data segment past their memory) or for what the cell does
/// not offer (threads) crash at start with the reason; the cell stays up.
#[test]
fn modules_declaring_giant_memories_tables_and_threads_fail_alone() {
    let platform = Platform::shared();
    let wf = platform.user();
    let start = r#"(func (export "_start"))"#;
    let cases = [
        (
            "giant-memory",
            format!(r#"(module (memory (export "memory") 65536) {start})"#),
            "out of memory: limit",
        ),
        (
            "giant-table",
            format!(r#"(module (memory (export "memory") 1) (table 100000000 funcref) {start})"#),
            "Failed to create container: compiling the app's wasm: module table does not fit",
        ),
        (
            "giant-data",
            format!(
                r#"(module (memory (export "memory") 1) (data (i32.const 4294901760) "pwned") {start})"#
            ),
            "out of bounds",
        ),
        (
            "spawner",
            format!(
                r#"(module (import "wasi" "thread-spawn" (func (param i32) (result i32))) (memory (export "memory") 1) {start})"#
            ),
            "unknown import: `wasi::thread-spawn` has not been defined",
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, wat, _) in &cases {
        let app = dir.path().join(name);
        std::fs::create_dir_all(&app).expect("app dir");
        std::fs::write(app.join("app.wat"), wat).expect("app.wat");
        // The start fails (the push may see the instance before it does): the logs
        // say why.
        wf.run(&[
            "push",
            name,
            "-p",
            app.to_str().expect("utf-8"),
            "-u",
            "process",
            "--no-route",
        ]);
    }
    for (name, _, reason) in &cases {
        wait_for_logs(&wf, name, &[reason]);
    }
    neighbour_of(platform, &wf, "after the giant modules");
    for (name, _, _) in &cases {
        wf.ok(&["delete", name, "-f"]);
    }
}
