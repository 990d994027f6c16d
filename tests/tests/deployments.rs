//! Rolling deployments end to end: `wf push --strategy rolling` replaces a running
//! app's instances one at a time while a client keeps calling it through the router:
//! every request succeeds, the old and new versions both answer during the rollout,
//! and only the new one at the end. A deployment whose new version never becomes
//! healthy is cancelled with `wf cancel-deployment`: the old version kept serving all
//! along and is the app again.

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
