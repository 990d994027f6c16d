//! Audit events end to end: what a developer does to an app (create, scale, stop,
//! start, env change) and its crashes show in `wf events` and `/v3/audit_events`, with
//! the actor, and only to those who may see the app's space; its app usage events say
//! what ran and how big.

use std::time::{Duration, Instant};

use serde_json::Value;
use wf_tests::platform::{Platform, Wf};

fn event_types(wf: &Wf, app_guid: &str) -> Vec<String> {
    let events = wf.curl_json(&[&format!("/v3/audit_events?target_guids={app_guid}")]);
    events["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|e| e["type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn actions_and_crashes_are_audited() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("audited", "crasher");
    let guid = wf.app_guid("audited");
    wf.ok(&["scale", "audited", "-i", "2"]);
    wf.ok(&["set-env", "audited", "SECRET", "hunter2"]);
    wf.ok(&["stop", "audited"]);
    wf.ok(&["start", "audited"]);

    let types = event_types(&wf, &guid);
    for wanted in [
        "audit.app.create",
        "audit.app.droplet.mapped",
        "audit.app.process.scale",
        "audit.app.update",
        "audit.app.stop",
        "audit.app.start",
        "audit.app.map-route",
    ] {
        assert!(
            types.iter().any(|t| t == wanted),
            "{wanted} missing from {types:?}"
        );
    }
    let out = wf.ok(&["events", "audited"]);
    assert!(out.contains("audit.app.process.scale"), "{out}");
    assert!(out.contains("instances: 2"), "{out}");
    assert!(out.contains("admin"), "{out}");
    // Environment values never appear in events.
    let all = wf.ok(&["curl", &format!("/v3/audit_events?target_guids={guid}")]);
    assert!(!all.contains("hunter2"), "{all}");
    assert!(all.contains("[PRIVATE DATA HIDDEN]"), "{all}");

    // Usage events: started, resized while started, stopped, started again.
    let usage = wf.curl_json(&["/v3/app_usage_events?per_page=5000"]);
    let mine: Vec<&Value> = usage["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|e| e["app"]["guid"] == guid.as_str())
                .collect()
        })
        .unwrap_or_default();
    let summary: Vec<(String, String, u64)> = mine
        .iter()
        .map(|e| {
            (
                e["state"]["current"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["state"]["previous"].as_str().unwrap_or("-").to_string(),
                e["instance_count"]["current"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("STARTED", "STOPPED", 1),
        ("STARTED", "STARTED", 2),
        ("STOPPED", "STARTED", 2),
        ("STARTED", "STOPPED", 2),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
        .collect();
    assert_eq!(summary, expected, "{usage}");
    assert_eq!(mine[1]["instance_count"]["previous"], 1, "{usage}");

    // A crash is recorded by the platform, with the instance's exit.
    let resp = platform.get("audited", "/crash");
    assert_eq!(resp.status, 200, "{resp:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let crash: Value = loop {
        let events = wf.curl_json(&[&format!(
            "/v3/audit_events?types=app.crash&target_guids={guid}"
        )]);
        if let Some(event) = events["resources"].as_array().and_then(|r| r.first()) {
            break event.clone();
        }
        assert!(Instant::now() < deadline, "no app.crash event: {events}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(crash["actor"]["type"], "app", "{crash}");
    assert_eq!(crash["data"]["reason"], "CRASHED", "{crash}");
    assert!(
        crash["data"]["exit_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{crash}"
    );

    // Someone without a role in the space sees none of it.
    let password = "an-outsider-password-1";
    platform.create_uaa_user(&wf, "event-outsider", password);
    let outsider = Wf::new(&wf.org, &wf.space);
    outsider.login_as(platform, "event-outsider", password);
    assert!(event_types(&outsider, &guid).is_empty());
    let (status, _) = outsider.api(platform, "GET", "/v3/app_usage_events", None);
    assert_eq!(
        status, 403,
        "usage events are for admins and global readers"
    );
}
