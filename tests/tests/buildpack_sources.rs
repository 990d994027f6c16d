//! Source apps on the real platform: `wf push` of a Cargo project and of C sources
//! (`tests/apps/source/`), staged by `rust_buildpack` and `c_buildpack` (clang, or
//! zig when the app asks) on the cell,
//! served through the router or run as a worker; compile errors fail the push with
//! `StagingError` and the compiler's message in the staging log; a restage reuses the
//! buildpack cache (a vendored proc-macro crate is not compiled again). The tests share one platform; each works in an org and space of
//! its own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wf_tests::platform::{Platform, Wf};

const START_WITHIN: Duration = Duration::from_secs(60);

fn source_app(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps/source")
        .join(name);
    assert!(dir.is_dir(), "{} missing", dir.display());
    dir.to_str().expect("utf-8 path").to_string()
}

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

/// The push output and the app's recent logs, where the staging log shows.
fn push_and_logs(wf: &Wf, push_output: String, app: &str) -> String {
    format!("{push_output}\n{}", wf.ok(&["logs", app, "--recent"]))
}

#[test]
fn a_cargo_project_is_built_served_and_restaged_from_the_buildpack_cache() {
    let platform = Platform::shared();
    let wf = platform.user();
    let started = Instant::now();
    let out = wf.ok(&["push", "rusty", "-p", &source_app("rust-hello")]);
    let resp = platform.wait_for("rusty", "/", START_WITHIN, |r| r.status == 200);
    eprintln!(
        "rust-hello: push to first 200 (cold) in {:?}",
        started.elapsed()
    );
    assert_eq!(resp.body, "hello from rust source\n");
    for expected in [
        "-----> Rust Buildpack",
        "Compiling rust-hello v0.1.0 (/tmp/app)",
        "Built app.wasm (WebAssembly component)",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    let guid = wf.app_guid("rusty");
    let droplet = wf.curl_json(&[&format!("/v3/apps/{guid}/droplets/current")]);
    assert_eq!(
        droplet["buildpacks"][0]["name"], "rust_buildpack",
        "{droplet}"
    );

    // The restage restores cargo's home and target dir from the buildpack cache.
    let started = Instant::now();
    let out = wf.ok(&["restage", "rusty"]);
    let resp = platform.wait_for("rusty", "/", START_WITHIN, |r| r.status == 200);
    eprintln!(
        "rust-hello: restage to first 200 (warm) in {:?}",
        started.elapsed()
    );
    assert_eq!(resp.body, "hello from rust source\n");
    assert!(out.contains("Restored buildpack cache"), "{out}");
    assert!(out.contains("Built app.wasm"), "{out}");
}

#[test]
fn vendored_crates_build_offline_and_a_restage_does_not_compile_them_again() {
    let platform = Platform::shared();
    let wf = platform.user();
    let dir = source_app("rust-vendored");
    let out = wf.ok(&["push", "vendored", "-p", &dir, "--no-start"]);
    for expected in [
        "Vendored crates found: building offline",
        "Compiling greeting-macro v0.1.0",
        "Compiling rust-vendored v0.1.0 (/tmp/app)",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    let out = wf.ok(&["restage", "vendored"]);
    // The trace may begin with the push's staging; the restage's starts at the restore.
    let (_, restage) = out
        .split_once("Restored buildpack cache")
        .unwrap_or_else(|| panic!("no restored cache:\n{out}"));
    assert!(restage.contains("Compiling rust-vendored"), "{out}");
    assert!(
        !restage.contains("Compiling greeting-macro"),
        "the proc-macro crate comes from the cache:\n{out}"
    );
}

#[test]
fn a_rust_compile_error_fails_the_push_with_rustcs_message() {
    let platform = Platform::shared();
    let wf = platform.user();
    let out = wf.fails(&["push", "rust-bad", "-p", &source_app("rust-broken")]);
    assert!(out.contains("StagingError"), "{out}");
    assert!(out.contains("cargo build"), "{out}");
    let all = push_and_logs(&wf, out, "rust-bad");
    assert!(all.contains("src/main.rs:5"), "rustc's location:\n{all}");
    assert!(all.contains("error[E0308]: mismatched types"), "{all}");
}

#[test]
fn c_sources_run_as_a_worker_that_logs() {
    let platform = Platform::shared();
    let wf = platform.user();
    // The fixture's manifest.yml gives the worker no route and a process health check.
    let dir = source_app("c-worker");
    let out = wf.ok(&["push", "c-worker", "-f", &dir]);
    for expected in ["-----> C Buildpack", "WebAssembly core module"] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    wait_for_logs(
        &wf,
        "c-worker",
        &[
            "[APP/PROC/WEB/0] OUT c worker 0 started",
            "[APP/PROC/WEB/0] OUT c tick 2",
        ],
    );
    let app = wf.ok(&["app", "c-worker"]);
    assert!(app.contains("running"), "{app}");
}

#[test]
fn c_sources_build_with_zig_cc_when_the_app_asks_and_restage_from_its_cache() {
    let platform = Platform::shared();
    let wf = platform.user();
    // The c-worker fixture again, asking for zig (installed from PyPI on first use).
    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("manifest.yml");
    std::fs::write(
        &manifest,
        format!(
            "applications:\n- name: c-zig\n  path: {}\n  no-route: true\n  \
             health-check-type: process\n  env:\n    WF_C_TOOLCHAIN: zig\n",
            source_app("c-worker")
        ),
    )
    .unwrap();
    let out = wf.ok(&["push", "-f", manifest.to_str().unwrap()]);
    for expected in [
        "-----> C Buildpack",
        "Using zig cc",
        "zig cc -target wasm32-wasi",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    wait_for_logs(&wf, "c-zig", &["[APP/PROC/WEB/0] OUT c worker 0 started"]);
    // Zig's cache (the wasi-libc it built) comes back from the buildpack cache.
    let restaged = wf.ok(&["restage", "c-zig"]);
    assert!(restaged.contains("Using zig cc"), "{restaged}");
    assert!(!restaged.contains("Installing ziglang"), "{restaged}");
    wait_for_logs(&wf, "c-zig", &["[APP/PROC/WEB/0] OUT c tick 2"]);

    // An unknown toolchain is a staging error that says what to use.
    wf.ok(&["set-env", "c-zig", "WF_C_TOOLCHAIN", "gcc"]);
    let out = wf.fails(&["restage", "c-zig"]);
    assert!(out.contains("StagingError"), "{out}");
    let all = push_and_logs(&wf, out, "c-zig");
    assert!(
        all.contains("WF_C_TOOLCHAIN=\"gcc\" is not a C toolchain: use clang or zig"),
        "{all}"
    );
}

#[test]
fn a_c_compile_error_fails_the_push_with_clangs_message() {
    let platform = Platform::shared();
    let wf = platform.user();
    let out = wf.fails(&["push", "c-bad", "-p", &source_app("c-broken")]);
    assert!(out.contains("StagingError"), "{out}");
    assert!(out.contains("clang failed"), "{out}");
    let all = push_and_logs(&wf, out, "c-bad");
    assert!(
        all.contains("main.c:6") && all.contains("undeclared_counter"),
        "clang's location:\n{all}"
    );
}
