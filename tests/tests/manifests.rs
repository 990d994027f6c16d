//! Manifests end to end: `wf push -f manifest.yml` pushes every app of a manifest with
//! its instances, memory, environment and routes (reached through the router), flags
//! override the manifest, the API renders an app's manifest and diffs a new one, and a
//! bad manifest is refused with CF's errors.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_tests::fixtures::fixture_wasm;
use wf_tests::platform::{Platform, APPS_DOMAIN};

fn running_instances(wf: &wf_tests::platform::Wf, app: &str) -> usize {
    let guid = wf.app_guid(app);
    let stats = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web/stats")]);
    stats["resources"]
        .as_array()
        .map(|r| r.iter().filter(|i| i["state"] == "RUNNING").count())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn push_applies_a_manifest_of_several_apps() {
    let platform = Platform::shared();
    let wf = platform.user();
    let dir = tempfile::tempdir().unwrap();
    let hello = fixture_wasm("hello");
    std::fs::copy(&hello, dir.path().join("app.wasm")).unwrap();
    let manifest = format!(
        "---\napplications:\n\
         - name: mf-web\n  path: app.wasm\n  instances: 2\n  memory: 64M\n  env:\n    GREETING: hi\n    NUM: 3\n  \
           routes:\n  - route: mf-web.{APPS_DOMAIN}\n  - route: mf-alt.{APPS_DOMAIN}/api\n\
         - name: mf-quiet\n  path: app.wasm\n  no-route: true\n"
    );
    let manifest_path = dir.path().join("manifest.yml");
    std::fs::write(&manifest_path, manifest).unwrap();
    let out = wf.ok(&["push", "-f", manifest_path.to_str().unwrap()]);
    assert!(
        out.contains("Pushing app mf-web") && out.contains("Pushing app mf-quiet"),
        "{out}"
    );

    wait_for("two mf-web instances", || {
        running_instances(&wf, "mf-web") == 2
    });
    let guid = wf.app_guid("mf-web");
    let env = wf.curl_json(&[&format!("/v3/apps/{guid}/environment_variables")]);
    assert_eq!(env["var"], json!({"GREETING": "hi", "NUM": "3"}), "{env}");
    let process = wf.curl_json(&[&format!("/v3/apps/{guid}/processes/web")]);
    assert_eq!(process["memory_in_mb"], 64, "{process}");
    for (host, path) in [("mf-web", "/"), ("mf-alt", "/api/x")] {
        wait_for(&format!("{host}{path} through the router"), || {
            platform.get(host, path).status == 200
        });
    }
    let quiet = wf.app_guid("mf-quiet");
    let routes = wf.curl_json(&[&format!("/v3/apps/{quiet}/routes")]);
    assert_eq!(routes["resources"], json!([]), "{routes}");

    // The app as a manifest, and what a new one would change.
    let rendered = wf.ok(&["curl", &format!("/v3/apps/{guid}/manifest")]);
    assert!(rendered.contains("name: mf-web"), "{rendered}");
    assert!(rendered.contains("instances: 2"), "{rendered}");
    assert!(
        rendered.contains(&format!("route: mf-alt.{APPS_DOMAIN}/api")),
        "{rendered}"
    );
    let space = wf.curl_json(&[&format!("/v3/spaces?names={}", wf.space)])["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let diff = wf.curl_json(&[
        &format!("/v3/spaces/{space}/manifest_diff"),
        "-X",
        "POST",
        "-H",
        "Content-Type: application/x-yaml",
        "-d",
        "applications:\n- name: mf-web\n  instances: 3\n  env:\n    GREETING: hi\n    NUM: 3\n",
    ]);
    assert_eq!(
        diff["diff"],
        json!([{"op": "replace", "path": "/applications/0/processes/0/instances", "was": 2, "value": 3}]),
        "{diff}"
    );

    // Flags win over the manifest for the named app; others are left alone.
    wf.ok(&[
        "push",
        "mf-web",
        "-f",
        manifest_path.to_str().unwrap(),
        "-i",
        "1",
    ]);
    wait_for("one mf-web instance", || {
        running_instances(&wf, "mf-web") == 1
    });
    let out = wf.fails(&["push", "nope", "-f", manifest_path.to_str().unwrap()]);
    assert!(
        out.contains("Could not find app named 'nope' in manifest"),
        "{out}"
    );
}

#[test]
fn bad_manifests_are_refused_with_cf_errors() {
    let platform = Platform::shared();
    let wf = platform.user();
    let space = wf.curl_json(&[&format!("/v3/spaces?names={}", wf.space)])["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let apply = |body: &str| -> Value {
        wf.curl_json(&[
            &format!("/v3/spaces/{space}/actions/apply_manifest"),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-yaml",
            "-d",
            body,
        ])
    };
    for (body, detail) in [
        ("applications: [", "not valid YAML"),
        (
            "applications:\n- name: a\n  memory: lots",
            "Invalid memory size",
        ),
        ("applications: []", "at least one application"),
    ] {
        let response = apply(body);
        assert_eq!(
            response["errors"][0]["title"], "CF-UnprocessableEntity",
            "{response}"
        );
        let text = response["errors"][0]["detail"].as_str().unwrap_or_default();
        assert!(text.contains(detail), "{body}: {response}");
    }

    // A route on a domain that does not exist fails the job, naming the app.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.yml");
    std::fs::write(
        &manifest,
        format!(
            "applications:\n- name: mf-bad\n  path: {}\n  routes:\n  - route: x.nowhere.example\n",
            fixture_wasm("hello").display()
        ),
    )
    .unwrap();
    let out = wf.fails(&["push", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.contains("For application 'mf-bad': The route 'x.nowhere.example' did not match any existing domains."),
        "{out}"
    );
}
