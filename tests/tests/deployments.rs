//! Rolling deployments end to end: `wf push --strategy rolling` replaces a running
//! app's instances one at a time while a client keeps calling it through the router:
//! every request succeeds, the old and new versions both answer during the rollout,
//! and only the new one at the end. A deployment whose new version never becomes
//! healthy is cancelled with `wf cancel-deployment`: the old version kept serving all
//! along and is the app again. A canary push pauses with one new instance next to the
//! old ones, `wf continue-deployment` finishes it without a failed request, and `wf
//! rollback` brings the first revision back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wf_tests::fixtures::fixture_wasm;
use wf_tests::platform::Platform;

#[test]
fn a_rolling_push_has_no_downtime() {
    let platform = Platform::shared();
    let wf = platform.user();
    let hello = fixture_wasm("hello");
    wf.ok(&["push", "rolly", "-p", hello.to_str().unwrap(), "-i", "2"]);
    let first = platform.get("rolly", "/");
    assert!(first.body.starts_with("hello"), "{first:?}");

    // A client calling the app all along.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let caller = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let router = platform.router_addr;
        std::thread::spawn(move || {
            let host = format!("rolly.{}", wf_tests::platform::APPS_DOMAIN);
            while !stop.load(Ordering::Relaxed) {
                let resp = wf_tests::platform::http_get(router, &host, "/");
                seen.lock().unwrap().push((resp.status, resp.body));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let crasher = fixture_wasm("crasher");
    let out = wf.ok(&[
        "push",
        "rolly",
        "-p",
        crasher.to_str().unwrap(),
        "--strategy",
        "rolling",
    ]);
    assert!(out.contains("Waiting for app rolly to deploy"), "{out}");
    // The new version alone answers once the deployment is done.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !platform.get("rolly", "/").body.starts_with("crasher") {
        assert!(Instant::now() < deadline, "the old version still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    caller.join().unwrap();

    let seen = seen.lock().unwrap();
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    assert!(
        seen.iter().any(|(_, b)| b.starts_with("hello")),
        "the old version never answered"
    );
    assert!(
        seen.iter().any(|(_, b)| b.starts_with("crasher")),
        "the new version never answered"
    );
    let tail = &seen[seen.len().saturating_sub(5)..];
    assert!(
        tail.iter().all(|(_, b)| b.starts_with("crasher")),
        "{tail:?}"
    );

    let guid = wf.app_guid("rolly");
    let deployments = wf.curl_json(&[&format!("/v3/deployments?app_guids={guid}")]);
    let last = &deployments["resources"][0];
    assert_eq!(last["status"]["value"], "FINALIZED", "{deployments}");
    assert_eq!(last["status"]["reason"], "DEPLOYED", "{deployments}");
    let stats = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web/stats")]);
    let running = stats["resources"]
        .as_array()
        .map(|r| r.iter().filter(|i| i["state"] == "RUNNING").count());
    assert_eq!(running, Some(2), "{stats}");
}

#[test]
fn a_cancelled_deployment_rolls_back_without_downtime() {
    let platform = Platform::shared();
    let wf = platform.user();
    let hello = fixture_wasm("hello");
    wf.ok(&["push", "rollback", "-p", hello.to_str().unwrap(), "-i", "2"]);
    let guid = wf.app_guid("rollback");
    let droplet_before =
        wf.curl_json(&[&format!("/v3/apps/{guid}/droplets/current")])["guid"].clone();

    // The worker fixture has no socket: under the web process's port health check it
    // never becomes healthy, so its deployment waits for its first instance.
    let worker = fixture_wasm("worker");
    let mut push = wf.spawn(&[
        "push",
        "rollback",
        "-p",
        worker.to_str().unwrap(),
        "--strategy",
        "rolling",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let active = format!("/v3/deployments?app_guids={guid}&status_values=ACTIVE");
    while wf.curl_json(&[&active])["resources"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "no deployment started");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..20 {
        let resp = platform.get("rollback", "/");
        assert!(
            resp.status == 200 && resp.body.starts_with("hello"),
            "{resp:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = wf.ok(&["cancel-deployment", "rollback"]);
    assert!(out.contains("OK"), "{out}");
    assert!(
        !push.wait().unwrap().success(),
        "the push reports the cancelled deployment"
    );

    let deployments = wf.curl_json(&[&format!("/v3/deployments?app_guids={guid}")]);
    assert_eq!(
        deployments["resources"][0]["status"]["reason"], "CANCELED",
        "{deployments}"
    );
    let droplet_after =
        wf.curl_json(&[&format!("/v3/apps/{guid}/droplets/current")])["guid"].clone();
    assert_eq!(droplet_after, droplet_before);
    for _ in 0..20 {
        let resp = platform.get("rollback", "/");
        assert!(
            resp.status == 200 && resp.body.starts_with("hello"),
            "{resp:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web/stats")]);
        let states: Vec<&str> = stats["resources"]
            .as_array()
            .map(|r| r.iter().filter_map(|i| i["state"].as_str()).collect())
            .unwrap_or_default();
        if states == ["RUNNING", "RUNNING"] {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = wf.fails(&["cancel-deployment", "rollback"]);
    assert!(out.contains("No active deployment"), "{out}");
}

/// Calls `host` through the router every 20 ms until `stop`; what it got.
fn keep_calling(
    platform: &Platform,
    host: &str,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Arc<Mutex<Vec<(u16, String)>>>) {
    let seen: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let router = platform.router_addr;
    let host = format!("{host}.{}", wf_tests::platform::APPS_DOMAIN);
    let caller = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let resp = wf_tests::platform::http_get(router, &host, "/");
                seen.lock().unwrap().push((resp.status, resp.body));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    (caller, seen)
}

#[test]
fn a_canary_push_pauses_continues_and_rolls_back() {
    let platform = Platform::shared();
    let wf = platform.user();
    let hello = fixture_wasm("hello");
    wf.ok(&["push", "tweety", "-p", hello.to_str().unwrap(), "-i", "3"]);
    let guid = wf.app_guid("tweety");
    let stop = Arc::new(AtomicBool::new(false));
    let (caller, seen) = keep_calling(platform, "tweety", stop.clone());

    // The canary: one new instance next to the three old ones, then a pause.
    let crasher = fixture_wasm("crasher");
    let out = wf.ok(&[
        "push",
        "tweety",
        "-p",
        crasher.to_str().unwrap(),
        "--strategy",
        "canary",
    ]);
    assert!(
        out.contains("Active deployment with status PAUSED"),
        "{out}"
    );
    assert!(out.contains("wf continue-deployment tweety"), "{out}");
    let deployments = wf.curl_json(&[&format!("/v3/deployments?app_guids={guid}")]);
    let canary = &deployments["resources"][0];
    assert_eq!(canary["strategy"], "canary", "{deployments}");
    assert_eq!(canary["state"], "PAUSED", "{deployments}");
    assert_eq!(canary["revision"]["version"], 2, "{deployments}");
    let from = seen.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answers: Vec<String> = seen.lock().unwrap()[from..]
            .iter()
            .map(|(_, body)| body.trim().to_string())
            .collect();
        let old = answers.iter().filter(|b| b.starts_with("hello")).count();
        let new: Vec<&String> = answers
            .iter()
            .filter(|b| b.starts_with("crasher"))
            .collect();
        assert!(
            new.iter().all(|b| *b == "crasher 0"),
            "one canary instance only: {new:?}"
        );
        if old >= 10 && !new.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{answers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web/stats")]);
    let running = stats["resources"]
        .as_array()
        .map(|r| r.iter().filter(|i| i["state"] == "RUNNING").count());
    assert_eq!(
        running,
        Some(1),
        "the new version runs one instance: {stats}"
    );
    let app = wf.ok(&["app", "tweety"]);
    assert!(
        app.contains("Active deployment with status PAUSED"),
        "{app}"
    );
    assert!(app.contains("canary"), "{app}");

    // Continue: the rest of the instances, one at a time, to the end.
    let out = wf.ok(&["continue-deployment", "tweety"]);
    assert!(
        out.contains("Continuing deployment for app tweety"),
        "{out}"
    );
    let deployment = wf.curl_json(&[&format!(
        "/v3/deployments/{}",
        canary["guid"].as_str().unwrap()
    )]);
    assert_eq!(deployment["status"]["reason"], "DEPLOYED", "{deployment}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !platform.get("tweety", "/").body.starts_with("crasher") {
        assert!(Instant::now() < deadline, "the old version still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    caller.join().unwrap();
    let seen = seen.lock().unwrap();
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    let tail = &seen[seen.len().saturating_sub(5)..];
    assert!(
        tail.iter().all(|(_, b)| b.starts_with("crasher")),
        "{tail:?}"
    );
    let stats = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web/stats")]);
    let running = stats["resources"]
        .as_array()
        .map(|r| r.iter().filter(|i| i["state"] == "RUNNING").count());
    assert_eq!(running, Some(3), "{stats}");
    let out = wf.fails(&["continue-deployment", "tweety"]);
    assert!(out.contains("No active deployment"), "{out}");

    // Revisions, and a rollback to the first: v1 serves again.
    let out = wf.ok(&["revisions", "tweety"]);
    assert!(out.contains("2(deployed)"), "{out}");
    assert!(out.contains("New droplet deployed."), "{out}");
    assert!(out.contains("Initial revision."), "{out}");
    let out = wf.ok(&["rollback", "tweety", "--version", "1", "-f"]);
    assert!(
        out.contains("Rolling back to revision 1 for app tweety"),
        "{out}"
    );
    // Once the old instances' routes are gone, v1 alone answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let resp = platform.get("tweety", "/");
        in_a_row = if resp.body.starts_with("hello") {
            in_a_row + 1
        } else {
            0
        };
        assert!(
            Instant::now() < deadline,
            "v1 does not answer alone: {resp:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = wf.ok(&["revisions", "tweety"]);
    assert!(
        out.contains("New droplet deployed. Rolled back to revision 1."),
        "{out}"
    );
    assert!(out.contains("3(deployed)"), "{out}");
    let out = wf.fails(&["rollback", "tweety", "--version", "9", "-f"]);
    assert!(out.contains("Revision '9' not found"), "{out}");
}
