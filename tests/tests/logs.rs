//! Logs as developers read them: every line an app writes is in `wf logs --recent`, in
//! order; `wf logs` streams a new line promptly; someone without a role in the app's
//! space reads nothing of it, through the CLI or the Log Cache and RLP APIs.

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use wf_tests::platform::{Platform, Wf};

const LINES: usize = 300;

/// The `flood line <i>` numbers in `wf logs --recent`, once the last one is there.
fn flood_lines(wf: &Wf, app: &str) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = wf.ok(&["logs", app, "--recent"]);
        let numbers: Vec<usize> = logs
            .lines()
            .filter_map(|l| l.split_once("OUT flood line ")?.1.trim().parse().ok())
            .collect();
        if numbers.last() == Some(&(LINES - 1)) || Instant::now() > deadline {
            return numbers;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn recent_logs_hold_every_line_in_order_and_streams_are_prompt() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("logger", "hostile");
    let resp = platform.get("logger", &format!("/flood?lines={LINES}"));
    assert_eq!(resp.body, format!("flooded {LINES}\n"), "{resp:?}");
    let numbers = flood_lines(&wf, "logger");
    assert_eq!(
        numbers,
        (0..LINES).collect::<Vec<_>>(),
        "all lines, in order"
    );

    // A line written after `wf logs` connected shows up at once.
    let mut child = wf.spawn(&["logs", "logger"]);
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Connected once a request's line comes through.
    let deadline = Instant::now() + Duration::from_secs(20);
    'connect: loop {
        assert!(Instant::now() < deadline, "wf logs never streamed");
        platform.get("logger", "/warm-up");
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(300)) {
            if line.contains("/warm-up") {
                break 'connect;
            }
        }
    }
    let mut latencies = Vec::new();
    for probe in 0..5 {
        // Drain what came before this probe.
        while lines_rx.try_recv().is_ok() {}
        let path = format!("/latency-probe-{probe}");
        let sent = Instant::now();
        platform.get("logger", &path);
        let deadline = sent + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines_rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{path} never streamed"));
            if line.contains(&path) {
                latencies.push(sent.elapsed());
                break;
            }
        }
    }
    eprintln!("request to streamed log line: {latencies:?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn someone_without_a_role_in_the_space_reads_no_logs() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("private-logs", "hello");
    platform.get("private-logs", "/secret-path");
    let guid = wf.app_guid("private-logs");

    platform.create_uaa_user(&wf, "log-outsider", "outsider-password-1");
    let outsider = Wf::new("nowhere", "nothing");
    outsider.login_as(platform, "log-outsider", "outsider-password-1");
    let (status, body) = outsider.api(
        platform,
        "GET",
        &format!("/api/v1/read/{guid}?envelope_types=LOG"),
        None,
    );
    assert_eq!(status, 404, "log cache hides the app: {body}");
    let (status, body) = outsider.api(platform, "GET", "/api/v1/meta", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.to_string().contains(&guid),
        "meta lists no foreign source: {body}"
    );
    let (status, body) = outsider.api(
        platform,
        "GET",
        &format!("/v2/read?source_id={guid}&log"),
        None,
    );
    assert_eq!(status, 404, "the stream hides the app too: {body}");

    // The owner reads them.
    let (status, body) = wf.api(
        platform,
        "GET",
        &format!("/api/v1/read/{guid}?envelope_types=LOG"),
        None,
    );
    assert_eq!(status, 200);
    assert!(
        !body["envelopes"]["batch"].as_array().unwrap().is_empty(),
        "{body}"
    );
    let recent = wf.ok(&["logs", "private-logs", "--recent"]);
    assert!(recent.contains("GET /secret-path"), "{recent}");
}
