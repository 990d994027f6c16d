//! The cell against the real platform: container metrics reach the Log Cache as
//! gauges, a stopped instance drains and says so as CF's cells do, and a WASI
//! preview1 module runs as a worker process and as tasks. The tests share one
//! platform; each works in an org and space of its own.

use std::time::{Duration, Instant};

use serde_json::Value;
use wf_tests::platform::{Platform, Wf};

/// Waits until `wf logs app --recent` contains every one of `wanted`.
fn wait_for_logs(wf: &Wf, app: &str, wanted: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = wf.ok(&["logs", app, "--recent"]);
        if wanted.iter().all(|w| logs.contains(w)) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "logs lack one of {wanted:?}:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until `wf tasks app` shows the task named `name` in `state`.
fn wait_for_task_state(wf: &Wf, app: &str, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = wf.ok(&["tasks", app]);
        let row = tasks
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_default()
            .to_string();
        if row.split_whitespace().nth(2) == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {name} of {app} never reached {state}:\n{tasks}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A gauge value of `envelope` by CF metric name: (value, unit).
fn gauge(envelope: &Value, name: &str) -> (f64, String) {
    let metric = &envelope["gauge"]["metrics"][name];
    let value = metric["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no {name} in {envelope}"));
    (
        value,
        metric["unit"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn container_metrics_reach_the_log_cache_as_gauges() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("metered", "hello");
    let guid = wf.app_guid("metered");
    // Some work for the instance to account for.
    for _ in 0..20 {
        assert_eq!(platform.get("metered", "/").status, 200);
    }

    // The cell emits every 15 s (Diego's interval).
    let deadline = Instant::now() + Duration::from_secs(45);
    let envelope = loop {
        let read = wf.curl_json(&[&format!(
            "/api/v1/read/{guid}?envelope_types=GAUGE&descending=true&limit=10"
        )]);
        let batch = read["envelopes"]["batch"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(found) = batch
            .into_iter()
            .find(|e| e["gauge"]["metrics"].get("memory_quota").is_some())
        {
            break found;
        }
        assert!(Instant::now() < deadline, "no container metrics for {guid}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(envelope["source_id"], guid.as_str(), "{envelope}");
    assert_eq!(envelope["instance_id"], "0", "{envelope}");
    assert_eq!(envelope["tags"]["app_name"], "metered", "{envelope}");

    let (cpu, unit) = gauge(&envelope, "cpu");
    assert_eq!(unit, "percentage");
    assert!((0.0..100.0).contains(&cpu), "cpu {cpu}%");
    let (memory_quota, unit) = gauge(&envelope, "memory_quota");
    assert_eq!(unit, "bytes");
    let (memory, _) = gauge(&envelope, "memory");
    assert!(
        memory >= 64.0 * 1024.0 && memory <= memory_quota,
        "memory {memory} of {memory_quota}"
    );
    let (disk_quota, unit) = gauge(&envelope, "disk_quota");
    assert_eq!(unit, "bytes");
    let (disk, _) = gauge(&envelope, "disk");
    assert!(
        disk >= 0.0 && disk <= disk_quota,
        "disk {disk} of {disk_quota}"
    );
    let process = wf.curl_json(&[&format!("/v3/apps/{guid}/processes")]);
    let memory_mb = process["resources"][0]["memory_in_mb"].as_f64().unwrap();
    let disk_mb = process["resources"][0]["disk_in_mb"].as_f64().unwrap();
    assert_eq!(memory_quota, memory_mb * 1024.0 * 1024.0);
    assert_eq!(disk_quota, disk_mb * 1024.0 * 1024.0);

    // The controller reports the same figures as the instance's usage (as CC reads
    // Log Cache for `/stats`; cpu as a fraction).
    let stats = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web/stats")]);
    let usage = &stats["resources"][0]["usage"];
    assert!(
        usage["mem"].as_f64().unwrap_or(0.0) >= 64.0 * 1024.0,
        "{stats}"
    );
    assert!(
        (0.0..1.0).contains(&usage["cpu"].as_f64().unwrap_or(-1.0)),
        "{stats}"
    );
}

#[test]
fn a_stopped_instance_drains_and_exits_as_cf_shows() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("drained", "hello");
    assert_eq!(platform.get("drained", "/").status, 200);
    wf.ok(&["stop", "drained"]);
    let logs = wait_for_logs(
        &wf,
        "drained",
        &[
            "[CELL/0] OUT Cell cell-0 stopping instance",
            "[APP/PROC/WEB/0] OUT Exit status 143",
            "[CELL/0] OUT Cell cell-0 successfully destroyed container for instance",
        ],
    );
    let position = |line: &str| logs.find(line).unwrap();
    assert!(
        position("stopping instance") < position("Exit status 143")
            && position("Exit status 143") < position("successfully destroyed container"),
        "{logs}"
    );
    // A stop is not a crash.
    assert!(!logs.contains("Exited with status"), "{logs}");
}

#[test]
fn a_preview1_module_runs_as_a_worker_and_as_tasks() {
    let platform = Platform::shared();
    let wf = platform.user();
    let wasm = wf_tests::fixtures::fixture_wasm("worker");
    wf.ok(&[
        "push",
        "p1-worker",
        "-p",
        wasm.to_str().expect("utf-8 path"),
        "--no-start",
    ]);
    // A worker has no port: its process is checked by being alive.
    let guid = wf.app_guid("p1-worker");
    let processes = wf.curl_json(&[&format!("/v3/apps/{guid}/processes")]);
    let process_guid = processes["resources"][0]["guid"].as_str().unwrap();
    wf.curl_json(&[
        &format!("/v3/processes/{process_guid}"),
        "-X",
        "PATCH",
        "-d",
        r#"{"health_check":{"type":"process"}}"#,
    ]);
    wf.ok(&["start", "p1-worker"]);
    wait_for_logs(
        &wf,
        "p1-worker",
        &[
            "[APP/PROC/WEB/0] OUT worker 0 started",
            "[APP/PROC/WEB/0] OUT tick 2",
        ],
    );
    let app = wf.ok(&["app", "p1-worker"]);
    assert!(app.contains("running"), "{app}");

    wf.ok(&[
        "run-task",
        "p1-worker",
        "--command",
        "app.wasm task",
        "--name",
        "ok",
        "-m",
        "64M",
    ]);
    wait_for_task_state(&wf, "p1-worker", "ok", "SUCCEEDED");
    wait_for_logs(
        &wf,
        "p1-worker",
        &["[APP/TASK/ok/0] OUT task ran with MEMORY_LIMIT=64m: tmp ok, app read-only"],
    );

    wf.ok(&[
        "run-task",
        "p1-worker",
        "--command",
        "app.wasm exit 3",
        "--name",
        "three",
    ]);
    wait_for_task_state(&wf, "p1-worker", "three", "FAILED");
    wait_for_logs(&wf, "p1-worker", &["[APP/TASK/three/0] ERR exiting with 3"]);
    let tasks = wf.curl_json(&[&format!("/v3/apps/{guid}/tasks")]);
    let three = tasks["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "three")
        .unwrap();
    assert_eq!(
        three["result"]["failure_reason"], "APP/TASK/three: Exited with status 3",
        "{tasks}"
    );
}
