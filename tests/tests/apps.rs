//! A developer's everyday app lifecycle against the real platform: push a wasm app,
//! reach it through the router, scale it, crash it, stop, start and delete it.
//! The tests share one platform; each works in an org and space of its own, with app
//! names no other test uses.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wf_tests::platform::Platform;

const START_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn push_hello_and_reach_it_through_the_router() {
    let platform = Platform::shared();
    let wf = platform.user();

    let out = wf.push_fixture("hello", "hello");
    assert!(out.contains("Staging app"), "push output:\n{out}");
    assert!(
        out.contains("running"),
        "push ends with the app summary:\n{out}"
    );

    let resp = platform.get("hello", "/");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, "hello from 0\n");
    assert!(resp.header("x-vcap-request-id").is_some(), "{resp:?}");

    let apps = wf.ok(&["apps"]);
    assert!(apps.contains("hello") && apps.contains("started"), "{apps}");
    let app = wf.ok(&["app", "hello"]);
    assert!(app.contains("#0") && app.contains("running"), "{app}");
    // The start command the droplet gives the web process, as cf shows it.
    assert!(
        app.lines()
            .any(|l| l.starts_with("start command:") && l.ends_with("app.wasm")),
        "{app}"
    );

    // Staging logs, the cell's logs and the app's own stdout are all in the log cache.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = wf.ok(&["logs", "hello", "--recent"]);
        let complete = logs.contains("[STG/")
            && logs.contains("[APP/PROC/WEB/0] OUT listening on")
            && logs.contains("[APP/PROC/WEB/0] OUT GET /");
        if complete {
            break;
        }
        assert!(Instant::now() < deadline, "logs incomplete:\n{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn unknown_routes_get_the_router_error() {
    let platform = Platform::shared();
    let resp = platform.get("nobody-home", "/");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-cf-routererror"), Some("unknown_route"));
}

#[test]
fn scaling_to_three_serves_three_instances_and_back_to_one() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("scaler", "hello");

    wf.ok(&["scale", "scaler", "-i", "3"]);
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + START_WITHIN;
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "only saw {seen:?}");
        let resp = platform.get("scaler", "/");
        if resp.status == 200 {
            seen.insert(resp.body);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let expected: BTreeSet<String> = (0..3).map(|i| format!("hello from {i}\n")).collect();
    assert_eq!(seen, expected);
    let app = wf.ok(&["app", "scaler"]);
    assert!(app.contains("#2"), "{app}");

    wf.ok(&["scale", "scaler", "-i", "1"]);
    // Once the extra instances are gone, only index 0 answers, every time.
    let deadline = Instant::now() + START_WITHIN;
    let mut only_zero_in_a_row = 0;
    while only_zero_in_a_row < 20 {
        assert!(Instant::now() < deadline, "instances 1 and 2 kept serving");
        let resp = platform.get("scaler", "/");
        if resp.status == 200 && resp.body == "hello from 0\n" {
            only_zero_in_a_row += 1;
        } else {
            only_zero_in_a_row = 0;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_crashed_instance_is_restarted() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("crashy", "crasher");
    assert_eq!(platform.get("crashy", "/").body, "crasher 0\n");

    let guid = wf.app_guid("crashy");
    let process = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web")]);
    let process_guid = process["guid"].as_str().expect("process guid").to_string();

    platform.get("crashy", "/crash");
    // The instance comes back (CF restarts the first crashes at once)...
    platform.wait_for("crashy", "/", START_WITHIN, |r| {
        r.status == 200 && r.body == "crasher 0\n"
    });
    // ... and the crash is on record: the cell logged why the instance stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = wf.ok(&["logs", "crashy", "--recent"]);
        if logs.contains("ERR crashing") && logs.contains("Exited with status 1") {
            break;
        }
        assert!(Instant::now() < deadline, "crash not logged:\n{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = wf.curl_json(&[&format!("/v3/processes/{process_guid}/stats")]);
    assert_eq!(stats["resources"][0]["state"], "RUNNING", "{stats}");
}

#[test]
fn stop_start_restart_and_delete() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("cycler", "hello");

    wf.ok(&["stop", "cycler"]);
    platform.wait_for("cycler", "/", START_WITHIN, |r| r.status == 404);
    let app = wf.ok(&["app", "cycler"]);
    assert!(app.contains("stopped"), "{app}");

    wf.ok(&["start", "cycler"]);
    platform.wait_for("cycler", "/", START_WITHIN, |r| r.status == 200);

    wf.ok(&["restart", "cycler"]);
    platform.wait_for("cycler", "/", START_WITHIN, |r| r.status == 200);

    wf.ok(&["delete", "cycler", "-f"]);
    platform.wait_for("cycler", "/", START_WITHIN, |r| r.status == 404);
    let err = wf.fails(&["app", "cycler"]);
    assert!(err.contains("App 'cycler' not found"), "{err}");
}

#[test]
fn the_app_sees_its_cf_environment() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("envy", "env");
    let resp = platform.get("envy", "/");
    assert_eq!(resp.status, 200, "{resp:?}");
    let env: serde_json::Value = serde_json::from_str(&resp.body).expect("env JSON");
    assert_eq!(env["CF_INSTANCE_INDEX"], "0");
    assert!(
        env["PORT"]
            .as_str()
            .is_some_and(|p| p.parse::<u16>().is_ok()),
        "{env}"
    );
    assert!(env["CF_INSTANCE_GUID"]
        .as_str()
        .is_some_and(|g| !g.is_empty()));
    assert!(env["MEMORY_LIMIT"]
        .as_str()
        .is_some_and(|m| m.ends_with('m')));
    assert_eq!(env["VCAP_SERVICES"], "{}");
    let vcap: serde_json::Value =
        serde_json::from_str(env["VCAP_APPLICATION"].as_str().expect("VCAP_APPLICATION"))
            .expect("VCAP_APPLICATION is JSON");
    assert_eq!(vcap["application_name"], "envy");
    assert_eq!(vcap["space_name"], wf.space.as_str());
    assert_eq!(vcap["organization_name"], wf.org.as_str());
    let uris = vcap["application_uris"].to_string();
    assert!(uris.contains("envy."), "{vcap}");
}

#[test]
fn wf_logs_streams_lines_as_they_happen() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("streamer", "hello");

    let mut child = wf.spawn(&["logs", "streamer"]);
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Requests made after `wf logs` started show up in its output, from the app and the router.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut app_line, mut router_line) = (false, false);
    while !(app_line && router_line) {
        assert!(
            Instant::now() < deadline,
            "no streamed lines (app {app_line}, router {router_line})"
        );
        let resp = platform.get("streamer", "/streamed-path");
        assert_eq!(resp.status, 200, "{resp:?}");
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(300)) {
            app_line |= line.contains("[APP/PROC/WEB/0] OUT GET /streamed-path");
            router_line |= line.contains("[RTR/") && line.contains("/streamed-path");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_droplet_is_downloaded_pushed_as_it_is_and_source_copied_to_another_app() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("bits-source", "hello");
    let dir = tempfile::tempdir().unwrap();
    let droplet = dir.path().join("hello.tgz");
    let droplet = droplet.to_str().unwrap();
    let out = wf.ok(&["download-droplet", "bits-source", "--path", droplet]);
    assert!(out.contains("Droplet saved"), "{out}");

    // Pushed as it is: nothing is staged, and it serves at once.
    let out = wf.ok(&["push", "bits-droplet", "--droplet", droplet]);
    assert!(!out.contains("Staging app"), "{out}");
    let resp = platform.wait_for("bits-droplet", "/", START_WITHIN, |r| r.status == 200);
    assert_eq!(resp.body, "hello from 0\n");
    // Bits that are not a droplet are refused, with the reason.
    let junk = dir.path().join("junk.tgz");
    std::fs::write(&junk, b"not a droplet").unwrap();
    let out = wf.fails(&["push", "bits-junk", "--droplet", junk.to_str().unwrap()]);
    assert!(out.contains("invalid droplet"), "{out}");

    // copy-source: the source's package, staged for the other app, which restarts.
    let out = wf.ok(&["copy-source", "bits-source", "bits-droplet"]);
    assert!(out.contains("Staging app bits-droplet"), "{out}");
    let guid = wf.app_guid("bits-droplet");
    let droplets = wf.curl_json(&[&format!("/v3/apps/{guid}/droplets")]);
    assert_eq!(droplets["pagination"]["total_results"], 2, "{droplets}");
    let resp = platform.wait_for("bits-droplet", "/", START_WITHIN, |r| r.status == 200);
    assert_eq!(resp.body, "hello from 0\n");
}

#[test]
fn a_push_of_files_the_platform_has_sends_only_their_fingerprints() {
    let platform = Platform::shared();
    let wf = platform.user();
    // Another app's push put the fixture's wasm in the resource cache...
    let first = wf.push_fixture("cached-a", "hello");
    let second = wf.push_fixture("cached-b", "hello");
    // ... so a push of the same file names it instead of sending it.
    assert!(
        second.contains("1 of the app's files") && second.contains("already on the platform"),
        "first push:\n{first}\nsecond push:\n{second}"
    );
    let resp = platform.wait_for("cached-b", "/", START_WITHIN, |r| r.status == 200);
    assert_eq!(resp.body, "hello from 0\n");
}
