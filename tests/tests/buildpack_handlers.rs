//! The JavaScript and Python buildpacks on the real platform: source pushed with
//! `wf push -p DIR` becomes a `wasi:http` handler component (componentize-js,
//! componentize-py, installed on the cell on first use) that the cell serves through
//! the router; pushing the same sources again reuses the component from the app's
//! buildpack cache; source that does not parse fails staging with the tool's message.
//!
//! Each test prints how long its push took to the first 200 (run with `--nocapture`);
//! the first run installs the tools into `target/buildpack-tools`, later runs reuse them.

use std::path::Path;
use std::time::{Duration, Instant};

use wf_tests::platform::{Platform, Wf};

/// Staging installs the tool on a fresh machine, then builds a component of tens of
/// MB that the cell compiles before the first request.
const SERVED_WITHIN: Duration = Duration::from_secs(120);
const LOGS_WITHIN: Duration = Duration::from_secs(10);
/// Requests timed after the first 200.
const REQUESTS: u32 = 10;

fn source(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("apps/source")
        .join(name)
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// What staging says when it reuses the component it built from the same sources.
const REUSED: &str = "Reusing the component built from the same sources";

/// Pushes fixture `fixture` as `name` and waits for `path` to answer 200 through the
/// router; returns the push output and the body.
fn push_and_get(
    platform: &Platform,
    wf: &Wf,
    name: &str,
    fixture: &str,
    path: &str,
) -> (String, String) {
    let started = Instant::now();
    let out = wf.ok(&["push", name, "-p", &source(fixture)]);
    let pushed = started.elapsed();
    let resp = platform.wait_for(name, path, SERVED_WITHIN, |r| r.status == 200);
    let droplet = out
        .lines()
        .find_map(|line| line.trim().strip_prefix("Droplet: "))
        .unwrap_or("size not in the push output");
    let first_200 = started.elapsed();
    // Each request gets a fresh instance of the component.
    let requests = Instant::now();
    for _ in 0..REQUESTS {
        assert_eq!(platform.get(name, path).status, 200);
    }
    let reused = if out.contains(REUSED) {
        " (component from the buildpack cache)"
    } else {
        ""
    };
    eprintln!(
        "{fixture}{reused}: wf push took {pushed:.1?}, first 200 after {first_200:.1?}; droplet \
         {droplet}; {:.1?} per request after that",
        requests.elapsed() / REQUESTS
    );
    (out, resp.body)
}

/// Waits until the app's recent logs contain every one of `wanted`; returns them.
fn recent_logs_with(wf: &Wf, name: &str, wanted: &[&str]) -> String {
    let deadline = Instant::now() + LOGS_WITHIN;
    loop {
        let logs = wf.ok(&["logs", name, "--recent"]);
        if wanted.iter().all(|w| logs.contains(w)) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "logs of {name} lack one of {wanted:?}:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pushes a fixture that does not parse: the push fails with `StagingError`, and the
/// tool's message (`expect`) is in the push output or the staging log.
fn push_broken(wf: &Wf, name: &str, fixture: &str, expect: &str) {
    let out = wf.fails(&["push", name, "-p", &source(fixture)]);
    assert!(out.contains("StagingError"), "{out}");
    if !out.contains(expect) {
        recent_logs_with(wf, name, &[expect]);
    }
}

#[test]
fn a_javascript_fetch_handler_is_built_served_and_broken_source_fails() {
    let platform = Platform::shared();
    let wf = platform.user();

    let (out, body) = push_and_get(platform, &wf, "js-hello", "js-hello", "/greet/me");
    assert!(!out.contains(REUSED), "{out}");
    assert_eq!(body, "hello from javascript /greet/me\n");
    assert_eq!(
        platform.get("js-hello", "/again").body,
        "hello from javascript /again\n"
    );
    recent_logs_with(
        &wf,
        "js-hello",
        &["JavaScript Buildpack", "wasi:http handler component"],
    );

    // The same sources again: the component comes from the app's buildpack cache.
    let (out, body) = push_and_get(platform, &wf, "js-hello", "js-hello", "/");
    assert!(out.contains(REUSED), "{out}");
    assert_eq!(body, "hello from javascript /\n");

    push_broken(
        &wf,
        "js-broken",
        "js-broken",
        "SyntaxError: Unexpected token ')'",
    );
}

#[test]
fn a_python_handler_is_built_served_and_broken_source_fails() {
    let platform = Platform::shared();
    let wf = platform.user();

    let (out, body) = push_and_get(
        platform,
        &wf,
        "python-hello",
        "python-hello",
        "/greet/me?x=1",
    );
    assert!(!out.contains(REUSED), "{out}");
    assert_eq!(body, "hello from python /greet/me?x=1\n");
    recent_logs_with(
        &wf,
        "python-hello",
        &["Python Buildpack", "wasi:http handler component"],
    );

    let (out, body) = push_and_get(platform, &wf, "python-hello", "python-hello", "/");
    assert!(out.contains(REUSED), "{out}");
    assert_eq!(body, "hello from python /\n");

    // Dependencies from requirements.txt, and a handler module that is not app.py.
    let (_, body) = push_and_get(platform, &wf, "python-deps", "python-deps", "/");
    assert_eq!(body, "hello from python with six 1.17.0\n");

    push_broken(
        &wf,
        "python-broken",
        "python-broken",
        "SyntaxError: expected ':'",
    );
}
