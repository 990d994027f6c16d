//! The source buildpacks (`rust_buildpack`, `c_buildpack`) staging the source fixtures
//! of `tests/apps/source/` and small inline apps, through the whole lifecycle and the
//! sandbox, with the cell's real toolchains.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::tests::run_stage;
use crate::{sandbox, unpack_droplet, AppKind, Staged, StagingError};

/// Whether the source buildpacks can run here: bubblewrap is required where CI says so
/// (`WF_REQUIRE_BWRAP`, which also installs the C and Rust toolchains).
fn sandbox_available() -> bool {
    if sandbox::available() {
        return true;
    }
    assert!(
        std::env::var_os("WF_REQUIRE_BWRAP").is_none(),
        "WF_REQUIRE_BWRAP is set but bubblewrap (bwrap) is not installed"
    );
    eprintln!("skipped: bubblewrap (bwrap) is not installed");
    false
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/apps/source")
        .join(name)
}

/// Zips the files under `dir` (as `wf push -p dir` would) into `zip`.
fn zip_dir(dir: &Path, zip: &Path) {
    fn add(zip: &mut zip::ZipWriter<std::fs::File>, root: &Path, dir: &Path) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if path.is_dir() {
                add(zip, root, &path);
            } else {
                zip.start_file(name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                zip.write_all(&std::fs::read(&path).unwrap()).unwrap();
            }
        }
    }
    let mut writer = zip::ZipWriter::new(std::fs::File::create(zip).unwrap());
    add(&mut writer, dir, dir);
    writer.finish().unwrap();
}

/// Stages the app in `app` (a directory) with all built-in buildpacks, in `work` under
/// `root` (whose `cache/` is the app's buildpack cache).
fn stage_dir(app: &Path, root: &Path, work: &str) -> (Result<Staged, StagingError>, Vec<String>) {
    let zip = root.join(format!("{work}.zip"));
    zip_dir(app, &zip);
    run_stage(&zip, &root.join(work), vec![], false)
}

fn app_of(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    let app = root.join("app");
    for (name, text) in files {
        let path = app.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    app
}

#[test]
fn a_cargo_project_builds_a_server_and_restages_from_the_cache() {
    if !sandbox_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (staged, lines) = stage_dir(&fixture("rust-hello"), root.path(), "cold");
    let staged = staged.unwrap_or_else(|e| panic!("{e}: {lines:#?}"));
    assert_eq!(staged.metadata.buildpack, "rust_buildpack");
    assert_eq!(staged.metadata.kind, AppKind::Server);
    assert_eq!(staged.metadata.process_types["web"], "app.wasm");
    assert!(
        lines.iter().any(|l| l.contains("Compiling rust-hello")),
        "{lines:#?}"
    );
    let droplet = root.path().join("droplet");
    unpack_droplet(&staged.droplet, &droplet).unwrap();
    assert!(droplet.join("app/src/main.rs").is_file());
    assert!(
        !droplet.join("app/target").exists(),
        "target/ is in the cache"
    );
    assert!(root
        .path()
        .join("cache")
        .read_dir()
        .unwrap()
        .next()
        .is_some());

    // The second staging finds cargo's home and target dir in the cache.
    let started = std::time::Instant::now();
    let (staged, lines) = stage_dir(&fixture("rust-hello"), root.path(), "warm");
    staged.unwrap_or_else(|e| panic!("{e}: {lines:#?}"));
    eprintln!("warm staging took {:?}", started.elapsed());
}

#[test]
fn a_compile_error_shows_rustcs_message_and_fails_staging() {
    if !sandbox_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (staged, lines) = stage_dir(&fixture("rust-broken"), root.path(), "w");
    let err = staged.err().expect("rust-broken must not stage");
    assert_eq!(err.cf_name(), "StagingError");
    assert!(err.to_string().contains("cargo build"), "{err}");
    assert!(
        lines.iter().any(|l| l.contains("src/main.rs:5")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("error[E0308]")),
        "{lines:#?}"
    );
}

#[test]
fn vendored_dependencies_build_offline_once_and_stay_out_of_the_droplet() {
    if !sandbox_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // `cargo vendor`'s layout, without the config snippet it prints.
    let app = app_of(
        root.path(),
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"vendored-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ntiny = \"0.1\"\n",
            ),
            ("src/main.rs", "fn main() { println!(\"{}\", tiny::answer()); }\n"),
            (
                "vendor/tiny/Cargo.toml",
                "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            ("vendor/tiny/src/lib.rs", "pub fn answer() -> u32 { 42 }\n"),
            ("vendor/tiny/.cargo-checksum.json", "{\"files\":{},\"package\":null}"),
        ],
    );
    let (staged, lines) = stage_dir(&app, root.path(), "cold");
    let staged = staged.unwrap_or_else(|e| panic!("{e}: {lines:#?}"));
    assert!(
        lines.iter().any(|l| l.contains("Compiling tiny v0.1.0")),
        "{lines:#?}"
    );
    let droplet = root.path().join("droplet");
    unpack_droplet(&staged.droplet, &droplet).unwrap();
    assert!(
        !droplet.join("app/vendor").exists(),
        "vendor/ is a build input"
    );

    // Restaged with the cache: the dependency is not compiled again, the app is.
    let (staged, lines) = stage_dir(&app, root.path(), "warm");
    staged.unwrap_or_else(|e| panic!("{e}: {lines:#?}"));
    assert!(
        !lines.iter().any(|l| l.contains("Compiling tiny")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Compiling vendored-app")),
        "{lines:#?}"
    );
}

#[test]
fn a_cargo_workspace_with_a_cdylib_and_vendored_crates_builds_offline() {
    if !sandbox_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let app = app_of(
        root.path(),
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"lib\"]\nresolver = \"2\"\n",
            ),
            (
                "lib/Cargo.toml",
                "[package]\nname = \"my-lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n",
            ),
            ("lib/src/lib.rs", "#[no_mangle]\npub extern \"C\" fn answer() -> u32 { 42 }\n"),
            (".cargo/config.toml", "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n"),
            ("vendor/.keep", ""),
        ],
    );
    let (staged, lines) = stage_dir(&app, root.path(), "w");
    let staged = staged.unwrap_or_else(|e| panic!("{e}: {lines:#?}"));
    assert!(
        lines.iter().any(|l| l.contains("building offline")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cdylib my_lib of package my-lib")),
        "{lines:#?}"
    );
    // A cdylib exporting no wasi:http handler is a plain component.
    assert_eq!(staged.metadata.kind, AppKind::Server);
}

#[test]
fn c_sources_build_a_preview1_worker() {
    if !sandbox_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (staged, lines) = stage_dir(&fixture("c-worker"), root.path(), "w");
    let staged = staged.unwrap_or_else(|e| panic!("{e}: {lines:#?}"));
    assert_eq!(staged.metadata.buildpack, "c_buildpack");
    assert_eq!(staged.metadata.process_types["web"], "app.wasm");
    assert!(
        lines.iter().any(|l| l.contains("WebAssembly core module")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("health-check-type: process")),
        "{lines:#?}"
    );
}

#[test]
fn a_makefile_builds_app_wasm_with_the_wasi_compilers() {
    if !sandbox_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let app = app_of(
        root.path(),
        &[
            (
                "Makefile",
                "CFLAGS += -DGREETING='\"hi\"'\napp.wasm: src/main.o src/util.o\n\t$(CXX) $(LDFLAGS) -o $@ $^\n",
            ),
            ("src/main.c", "#include <stdio.h>\nint twice(int);\nint main(void) { printf(\"%s %d\\n\", GREETING, twice(21)); return 0; }\n"),
            ("src/util.cpp", "#include <vector>\nextern \"C\" int twice(int x) { std::vector<int> v{x, x}; return v[0] + v[1]; }\n"),
        ],
    );
    let (staged, lines) = stage_dir(&app, root.path(), "w");
    staged.unwrap_or_else(|e| panic!("{e}: {lines:#?}"));
    assert!(
        lines.iter().any(|l| l.contains("Running make")),
        "{lines:#?}"
    );

    let root = tempfile::tempdir().unwrap();
    let app = app_of(
        root.path(),
        &[("Makefile", "all:\n\techo nothing\n"), ("x.c", "")],
    );
    let (staged, _) = stage_dir(&app, root.path(), "w");
    let err = staged.err().expect("no app.wasm").to_string();
    assert!(err.contains("without building app.wasm"), "{err}");
}

#[test]
fn a_c_compile_error_shows_clangs_message_and_fails_staging() {
    if !sandbox_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (staged, lines) = stage_dir(&fixture("c-broken"), root.path(), "w");
    let err = staged.err().expect("c-broken must not stage");
    assert_eq!(err.cf_name(), "StagingError");
    assert!(err.to_string().contains("clang failed"), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("main.c:6") && l.contains("undeclared_counter")),
        "{lines:#?}"
    );
}
