//! Audit events end to end: what a developer does to an app (create, scale, stop,
//! start, env change) and its crashes show in `wf events` and `/v3/audit_events`, with
//! the actor, and only to those who may see the app's space.

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
}
