//! CF tasks against the real platform: `wf run-task` runs an app's droplet once on a
//! cell; `wf tasks` shows how it ended and `wf logs` what it printed. The tests share
//! one platform; each works in an org and space of its own.

use std::time::{Duration, Instant};

use wf_tests::platform::{Platform, Wf};

const TASK_WITHIN: Duration = Duration::from_secs(60);

/// Waits until `wf tasks app` shows the task named `name` in `state`; returns the listing.
fn wait_for_task_state(wf: &Wf, app: &str, name: &str, state: &str) -> String {
    let deadline = Instant::now() + TASK_WITHIN;
    loop {
        let tasks = wf.ok(&["tasks", app]);
        let row = tasks
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_default()
            .to_string();
        if row.split_whitespace().nth(2) == Some(state) {
            return tasks;
        }
        assert!(
            Instant::now() < deadline,
            "task {name} of {app} never reached {state}:\n{tasks}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until `wf logs app --recent` contains every one of `wanted`.
fn wait_for_logs(wf: &Wf, app: &str, wanted: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
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

#[test]
fn a_task_runs_the_droplet_once_and_succeeds() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("task-hello", "hello");

    let out = wf.ok(&[
        "run-task",
        "task-hello",
        "--command",
        "app.wasm task",
        "--name",
        "t1",
    ]);
    assert!(
        out.contains("task name:   t1") && out.contains("task id:     1"),
        "{out}"
    );

    let tasks = wait_for_task_state(&wf, "task-hello", "t1", "SUCCEEDED");
    assert!(tasks.contains("app.wasm task"), "{tasks}");
    wait_for_logs(&wf, "task-hello", &["[APP/TASK/t1/0] OUT task ran"]);

    let app_guid = wf.app_guid("task-hello");
    let listed = wf.curl_json(&[&format!("/v3/apps/{app_guid}/tasks")]);
    let task = &listed["resources"][0];
    assert_eq!(task["state"], "SUCCEEDED", "{listed}");
    assert_eq!(task["sequence_id"], 1, "{listed}");
    assert!(task["result"]["failure_reason"].is_null(), "{listed}");
    let shown = wf.curl_json(&[&format!("/v3/tasks/{}", task["guid"].as_str().unwrap())]);
    assert_eq!(shown["name"], "t1");

    // The app itself kept serving.
    let resp = platform.get("task-hello", "/");
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn a_failing_task_is_failed_with_its_exit_status() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("task-fail-app", "hello");

    wf.ok(&[
        "run-task",
        "task-fail-app",
        "--command",
        "app.wasm task-fail",
        "--name",
        "boom",
    ]);
    wait_for_task_state(&wf, "task-fail-app", "boom", "FAILED");
    wait_for_logs(
        &wf,
        "task-fail-app",
        &["[APP/TASK/boom/0] ERR task failing"],
    );

    let app_guid = wf.app_guid("task-fail-app");
    let listed = wf.curl_json(&[&format!("/v3/apps/{app_guid}/tasks")]);
    assert_eq!(
        listed["resources"][0]["result"]["failure_reason"], "APP/TASK/boom: Exited with status 1",
        "{listed}"
    );

    // A finished task cannot be terminated.
    let out = wf.fails(&["terminate-task", "task-fail-app", "1"]);
    assert!(out.contains("cannot be canceled"), "{out}");
    let out = wf.fails(&["terminate-task", "task-fail-app", "7"]);
    assert!(out.contains("Task sequence ID 7 not found."), "{out}");
}

#[test]
fn a_task_needs_a_droplet() {
    let platform = Platform::shared();
    let wf = platform.user();
    let spaces = wf.curl_json(&[&format!("/v3/spaces?names={}", wf.space)]);
    let space_guid = spaces["resources"][0]["guid"].as_str().expect("space guid");
    let body = format!(
        r#"{{"name":"no-droplet","relationships":{{"space":{{"data":{{"guid":"{space_guid}"}}}}}}}}"#
    );
    wf.curl_json(&["/v3/apps", "-X", "POST", "-d", &body]);

    let out = wf.fails(&["run-task", "no-droplet", "--command", "app.wasm task"]);
    assert!(
        out.contains("Task must have a droplet. Assign current droplet to app."),
        "{out}"
    );
    let out = wf.ok(&["tasks", "no-droplet"]);
    assert!(out.contains("No tasks found"), "{out}");

    let app_guid = wf.app_guid("no-droplet");
    let out = wf.ok(&[
        "curl",
        &format!("/v3/apps/{app_guid}/tasks"),
        "-X",
        "POST",
        "-d",
        r#"{"name": ""}"#,
    ]);
    assert!(out.contains("CF-UnprocessableEntity"), "{out}");
}

#[test]
fn terminating_a_running_task_fails_it_as_cancelled() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("task-forever", "hello");

    let out = wf.ok(&[
        "run-task",
        "task-forever",
        "--command",
        "app.wasm task-sleep",
        "--name",
        "forever",
    ]);
    assert!(out.contains("task id:     1"), "{out}");
    wait_for_task_state(&wf, "task-forever", "forever", "RUNNING");
    wait_for_logs(
        &wf,
        "task-forever",
        &["[APP/TASK/forever/0] OUT task sleeping"],
    );

    let out = wf.ok(&["terminate-task", "task-forever", "1"]);
    assert!(out.contains("OK"), "{out}");
    wait_for_task_state(&wf, "task-forever", "forever", "FAILED");
    let app_guid = wf.app_guid("task-forever");
    let listed = wf.curl_json(&[&format!("/v3/apps/{app_guid}/tasks")]);
    assert_eq!(
        listed["resources"][0]["result"]["failure_reason"], "task was cancelled",
        "{listed}"
    );
}
