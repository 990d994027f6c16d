//! Builds the staticfile buildpack's file server (`static-server/`, a wasi:http
//! component) for wasm32-wasip2 and leaves it in `OUT_DIR`, where
//! `builtin/staticfile.rs` embeds it: staging a static site then only copies bytes.
//!
//! The nested cargo gets a target dir of its own (`target/static-server`), so it never
//! waits on the lock the outer build holds, and none of the outer build's host flags.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const ARTIFACT: &str = "wf_static_server.wasm";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let server = manifest_dir.join("static-server");
    for path in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", server.join(path).display());
    }
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let target_dir = target_dir(&out_dir);

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&server)
        .args(["build", "--release", "-p", "wf-static-server"])
        .args(["--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        // Small and lean: the cell compiles this wasm for every static site.
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    // Flags and wrappers meant for the outer (host) build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build the static file server: {e}"));
    assert!(
        status.success(),
        "building the static file server for {TARGET} failed ({status}); is the target \
         installed (`rustup target add {TARGET}`)?"
    );
    let built = target_dir.join(TARGET).join("release").join(ARTIFACT);
    std::fs::copy(&built, out_dir.join("static-server.wasm"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
}

/// `target/static-server` beside the outer build's profile dirs (`OUT_DIR` is
/// `<target>/<profile>/build/<pkg>/out`), shared by all profiles; `OUT_DIR` itself if
/// it is laid out otherwise.
fn target_dir(out_dir: &Path) -> PathBuf {
    match out_dir.ancestors().nth(4) {
        Some(target)
            if out_dir
                .ancestors()
                .nth(2)
                .is_some_and(|b| b.ends_with("build")) =>
        {
            target.join("static-server")
        }
        _ => out_dir.join("static-server"),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
