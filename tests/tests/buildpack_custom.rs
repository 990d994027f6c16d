//! Custom buildpacks on the real platform, as an admin and a developer use them:
//! `wf create-buildpack` uploads a folder with CF's scripts; detection tries it in its
//! position; `wf push -b A -b B` runs A's supply before B (a built-in) finalizes; the
//! scripts' output is in the staging log; `wf delete-buildpack` removes it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use wf_tests::fixtures::fixture_wasm;
use wf_tests::platform::Platform;

const START_WITHIN: Duration = Duration::from_secs(60);

/// Writes `bin/<name>` scripts into `dir`.
fn buildpack(dir: &Path, scripts: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    for (name, body) in scripts {
        let path = dir.join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn a_custom_buildpack_detects_compiles_and_releases_an_app() {
    let platform = Platform::shared();
    let wf = platform.user();
    let dir = tempfile::tempdir().unwrap();
    // Detects a `Customfile`, "compiles" by moving the app's module into place and
    // releases a web process with an argument.
    let bp = dir.path().join("custom");
    buildpack(
        &bp,
        &[
            ("detect", "test -f \"$1/Customfile\" && echo custom 1.2"),
            (
                "compile",
                "echo \"-----> Custom compile in $1 with cache $2\"; cp \"$1/module.bin\" \"$1/app.wasm\"",
            ),
            ("release", "printf -- '---\\ndefault_process_types:\\n  web: app.wasm\\n'"),
        ],
    );
    let out = wf.ok(&[
        "create-buildpack",
        "custom_e2e_buildpack",
        bp.to_str().unwrap(),
        "1",
    ]);
    assert!(out.contains("OK"), "{out}");
    let listed = wf.ok(&["buildpacks"]);
    assert!(listed.contains("custom_e2e_buildpack"), "{listed}");

    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Customfile"), "").unwrap();
    std::fs::copy(fixture_wasm("hello"), app.join("module.bin")).unwrap();
    let out = wf.ok(&["push", "customized", "-p", app.to_str().unwrap()]);
    for expected in [
        "-----> custom_e2e_buildpack (custom 1.2)",
        "-----> Custom compile in /tmp/app with cache /tmp/cache",
    ] {
        assert!(
            out.contains(expected),
            "{expected:?} not in the push output:\n{out}"
        );
    }
    let resp = platform.wait_for("customized", "/", START_WITHIN, |r| r.status == 200);
    assert_eq!(resp.body, "hello from 0\n");
    let summary = wf.ok(&["app", "customized"]);
    assert!(summary.contains("custom_e2e_buildpack"), "{summary}");

    // Apps without a Customfile still get the built-ins: the custom one does not match.
    let out = wf.ok(&[
        "push",
        "plain-after-custom",
        "-p",
        fixture_wasm("hello").to_str().unwrap(),
    ]);
    assert!(out.contains("Wasm Buildpack"), "{out}");

    let out = wf.ok(&["delete-buildpack", "custom_e2e_buildpack", "-f"]);
    assert!(out.contains("OK"), "{out}");
    assert!(!wf.ok(&["buildpacks"]).contains("custom_e2e_buildpack"));
}

#[test]
fn named_buildpacks_run_in_order_a_custom_supply_before_a_built_in_final() {
    let platform = Platform::shared();
    let wf = platform.user();
    let dir = tempfile::tempdir().unwrap();
    // Supplies a page into the site the staticfile buildpack then serves; it never
    // detects, so only naming it runs it.
    let bp = dir.path().join("supplier");
    buildpack(
        &bp,
        &[
            ("detect", "exit 1"),
            (
                "supply",
                "echo \"-----> Supplying deps index $4\"; echo 'supplied by a buildpack' > \"$1/supplied.txt\"; touch \"$3/$4/marker\"",
            ),
        ],
    );
    wf.ok(&[
        "create-buildpack",
        "supplier_e2e_buildpack",
        bp.to_str().unwrap(),
        "99",
    ]);

    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("Staticfile"), "").unwrap();
    std::fs::write(site.join("index.html"), "<h1>multi</h1>\n").unwrap();
    let out = wf.ok(&[
        "push",
        "multi-bp",
        "-p",
        site.to_str().unwrap(),
        "-b",
        "supplier_e2e_buildpack",
        "-b",
        "staticfile_buildpack",
    ]);
    assert!(out.contains("-----> Supplying deps index 0"), "{out}");
    let resp = platform.wait_for("multi-bp", "/supplied.txt", START_WITHIN, |r| {
        r.status == 200
    });
    assert_eq!(resp.body, "supplied by a buildpack\n");

    // A supply-only buildpack cannot be the last one: a clear staging error.
    let err = wf.fails(&[
        "push",
        "supply-only",
        "-p",
        site.to_str().unwrap(),
        "-b",
        "supplier_e2e_buildpack",
    ]);
    assert!(
        err.contains("StagingError") && err.contains("cannot be the last buildpack"),
        "{err}"
    );
    wf.ok(&["delete-buildpack", "supplier_e2e_buildpack", "-f"]);
}
