//! The fixture apps of `tests/apps/`, built from source for wasm32-wasip2 (the
//! preview1 ones for wasm32-wasip1) the first time a test asks for one. Cargo's lock on the target dir keeps parallel test
//! binaries from building over each other; within a process the build runs once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The fixture apps (`tests/apps/<name>`, package `fixture-<name>`).
pub const FIXTURES: &[&str] = &["hello", "crasher", "env", "handler", "hostile", "worker"];
/// The fixtures built for wasm32-wasip1: core modules, not components.
const PREVIEW1_FIXTURES: &[&str] = &["worker"];

/// Path of the built `fixture-<name>.wasm` (a wasip2 component, or a wasip1 module;
/// `fixture_<name>.wasm` for library fixtures such as `wasi:http` handlers); builds
/// all fixtures on first use. Panics if the build fails or `name` is not a fixture.
pub fn fixture_wasm(name: &str) -> PathBuf {
    assert!(FIXTURES.contains(&name), "no fixture app named {name:?}");
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let target_dir = match BUILT.get_or_init(build_all) {
        Ok(dir) => dir,
        Err(e) => panic!("building the fixture apps failed: {e}"),
    };
    let dir = target_dir.join(target_of(name)).join("release");
    // Command fixtures are binaries (`fixture-<name>.wasm`); handler fixtures are
    // libraries, whose artifacts cargo names with underscores.
    let wasm = dir.join(format!("fixture-{name}.wasm"));
    if wasm.is_file() {
        return wasm;
    }
    let lib = dir.join(format!("fixture_{}.wasm", name.replace('-', "_")));
    assert!(lib.is_file(), "{} missing after the build", wasm.display());
    lib
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
}

fn target_of(name: &str) -> &'static str {
    if PREVIEW1_FIXTURES.contains(&name) {
        "wasm32-wasip1"
    } else {
        "wasm32-wasip2"
    }
}

/// Builds every fixture in release mode into `target/wasm-fixtures`, away from the
/// host build so the two never contend for the same artifacts; returns that dir.
fn build_all() -> Result<PathBuf, String> {
    let root = workspace_root();
    let target_dir = root.join("target").join("wasm-fixtures");
    for target in ["wasm32-wasip2", "wasm32-wasip1"] {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root)
            .args(["build", "--release", "--target", target, "--target-dir"])
            .arg(&target_dir)
            // Small artifacts compile faster on the cell; the workspace's release profile
            // keeps line tables for the platform's own binaries.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true");
        for name in FIXTURES.iter().filter(|name| target_of(name) == target) {
            cmd.args(["-p", &format!("fixture-{name}")]);
        }
        let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    Ok(target_dir)
}
