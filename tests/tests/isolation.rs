//! Isolation between apps on a cell: a hostile app attacks its sandbox (writes outside
//! its directory, connects to the cell's internal ports and the metadata address,
//! floods its log, exits, exhausts its memory, spins forever) while a neighbour app in
//! the same cell keeps answering at its usual speed. Every attack is contained: denied,
//! or the hostile instance crashes with a readable reason and comes back.

use std::time::{Duration, Instant};

use wf_tests::platform::{Platform, Wf};

const START_WITHIN: Duration = Duration::from_secs(60);
/// The neighbour's answers may not take longer than this, whatever the hostile app does.
const NEIGHBOUR_LATENCY: Duration = Duration::from_secs(2);

#[test]
fn a_hostile_app_is_contained_and_its_neighbour_keeps_answering() {
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

/// A few requests to the neighbour, each answered in full within [`NEIGHBOUR_LATENCY`].
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

fn neighbour_answers(platform: &Platform, during: &str) {
    for _ in 0..5 {
        let started = Instant::now();
        let resp = platform.get("neighbour", "/");
        let took = started.elapsed();
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (200, "hello from 0\n"),
            "{during}: {resp:?}"
        );
        assert!(
            took < NEIGHBOUR_LATENCY,
            "{during}: the neighbour took {took:?}"
        );
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
