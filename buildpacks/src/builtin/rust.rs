//! `rust_buildpack`: a Cargo project (`Cargo.toml` at the app's root) built with
//! `cargo build --release --target wasm32-wasip2` by the cell's own Rust toolchain,
//! whose sysroot is mounted read-only in the sandbox at [`TOOLCHAIN`] (its `cargo` and
//! `rustc` are run directly, never rustup's proxies, so an app's `rust-toolchain.toml`
//! cannot make the cell download another toolchain).
//!
//! The artifact is the package's default binary (`default-run`, the only `[[bin]]`, or
//! the one named after the package), a command component that binds `$PORT` (a server);
//! a package without binaries must be a `cdylib` (a `wasi:http` handler). It becomes
//! `app.wasm`, the `web` process.
//!
//! `CARGO_HOME` and the target directory live in the app's buildpack cache, so a
//! restage reuses the downloaded crates and the compiled dependencies (cargo
//! fingerprints crates.io dependencies by version, and every staging sees the same
//! paths: the app at `/tmp/app`, the cache at `/tmp/cache`); only the app's own crate
//! is compiled again, its files being freshly unpacked. The droplet carries neither:
//! `target/` and `vendor/` are build inputs and are left out of it. An app that vendors
//! its crates (`cargo vendor`: a `vendor/` directory, with or without the
//! `.cargo/config.toml` that points crates.io at it) is built `--offline`; otherwise
//! cargo may fetch from crates.io.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::sandbox::{APP, CACHE};
use crate::{StagingError, DROPLET_WASM};

/// The buildpack's name, as apps and builds list it.
pub const NAME: &str = "rust_buildpack";
/// The Rust target apps are built for: WASI preview 2 components.
const TARGET: &str = "wasm32-wasip2";
/// Where the cell's Rust sysroot is mounted inside the sandbox.
const TOOLCHAIN: &str = "/opt/rust";
/// Cargo's home and target directories, under the buildpack's cache slice.
const CARGO_HOME_DIR: &str = "cargo-home";
const TARGET_DIR: &str = "target";
/// The directory `cargo vendor` writes by default.
const VENDOR_DIR: &str = "vendor";

pub struct RustBuildpack;

impl Buildpack for RustBuildpack {
    fn name(&self) -> &str {
        NAME
    }

    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        Ok(ctx.app_dir.join("Cargo.toml").is_file())
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        ctx.log("-----> Rust Buildpack");
        let sysroot = cell_sysroot()?;
        ctx.log(&format!("       Using {}", rustc_version(&sysroot)));
        let pushed_target = ctx.app_dir.join(TARGET_DIR);
        if pushed_target.is_dir() {
            ctx.log(
                "       Ignoring the pushed target/ directory (builds go to the buildpack cache)",
            );
            std::fs::remove_dir_all(&pushed_target)
                .map_err(|e| crate::io_error("removing", "the pushed target/ directory", e))?;
        }
        let vendoring = Vendoring::of(ctx.app_dir)?;
        if vendoring != Vendoring::None {
            ctx.log("       Vendored crates found: building offline");
        }

        let (status, metadata) = cargo(ctx, &sysroot, "cargo metadata")
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ])
            .output(ctx.log)?;
        if !status.success() {
            return Err(StagingError::Staging(format!(
                "cargo metadata failed ({status}): Cargo.toml is not a valid Cargo project"
            )));
        }
        let metadata: Metadata = serde_json::from_str(&metadata).map_err(|e| {
            StagingError::Staging(format!("cargo metadata printed unexpected output: {e}"))
        })?;
        let artifact = choose_artifact(&metadata, &Path::new(APP).join("Cargo.toml"))?;
        ctx.log(&format!(
            "       Building {} of package {}",
            artifact.describe(),
            artifact.package
        ));

        cargo(
            ctx,
            &sysroot,
            format!("cargo build --release --target {TARGET}"),
        )
        .args(["build", "--release", "--target", TARGET, "-p"])
        .arg(&artifact.package)
        .args(artifact.selector())
        .args(vendoring.cargo_args())
        .run(ctx.log)?;

        let built = ctx
            .cache_dir
            .join(TARGET_DIR)
            .join(TARGET)
            .join("release")
            .join(artifact.file_name());
        std::fs::copy(&built, ctx.app_dir.join(DROPLET_WASM)).map_err(|e| {
            StagingError::Staging(format!(
                "cargo finished without building {}: {e}",
                artifact.file_name()
            ))
        })?;
        if cargo_vendored(ctx.app_dir) {
            std::fs::remove_dir_all(ctx.app_dir.join(VENDOR_DIR))
                .map_err(|e| crate::io_error("removing", "vendor/ from the droplet", e))?;
        }
        Ok(())
    }

    fn release(&self, _ctx: &Context) -> Result<ProcessTypes, StagingError> {
        Ok(ProcessTypes::from([(
            "web".to_string(),
            DROPLET_WASM.to_string(),
        )]))
    }
}

/// A sandboxed run of the toolchain's `cargo`, with the cache's home and target dirs.
fn cargo<'c>(
    ctx: &'c Context,
    sysroot: &Path,
    what: impl Into<String>,
) -> crate::sandbox::SandboxCommand<'c> {
    ctx.command(&format!("{TOOLCHAIN}/bin/cargo"), what)
        .mount_ro(sysroot, TOOLCHAIN)
        .env(
            "PATH",
            format!("{TOOLCHAIN}/bin:/usr/local/bin:/usr/bin:/bin"),
        )
        .env("RUSTC", format!("{TOOLCHAIN}/bin/rustc"))
        .env("CARGO_HOME", format!("{CACHE}/{CARGO_HOME_DIR}"))
        .env("CARGO_TARGET_DIR", format!("{CACHE}/{TARGET_DIR}"))
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
}

/// The cell's Rust sysroot (from its own `rustc`), which must have cargo and the wasm
/// target.
fn cell_sysroot() -> Result<PathBuf, StagingError> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        // Away from any directory's rust-toolchain.toml.
        .current_dir("/")
        .output()
        .map_err(|e| {
            StagingError::Staging(format!(
                "this cell has no Rust toolchain (running rustc: {e}); install one with rustup"
            ))
        })?;
    if !output.status.success() {
        return Err(StagingError::Staging(format!(
            "this cell's Rust toolchain does not work: `rustc --print sysroot` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    check_sysroot(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// `sysroot` if it has what staging needs: cargo and the wasm target's standard library.
fn check_sysroot(sysroot: PathBuf) -> Result<PathBuf, StagingError> {
    if !sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Err(StagingError::Staging(format!(
            "this cell's Rust toolchain ({}) lacks the {TARGET} target: the cell needs `rustup target add {TARGET}`",
            sysroot.display()
        )));
    }
    if !sysroot.join("bin/cargo").is_file() {
        return Err(StagingError::Staging(format!(
            "this cell's Rust toolchain ({}) has no cargo: the cell needs `rustup component add cargo`",
            sysroot.display()
        )));
    }
    Ok(sysroot)
}

/// `rustc x.y.z (...)` of the sysroot, for the staging log.
fn rustc_version(sysroot: &Path) -> String {
    Command::new(sysroot.join("bin/rustc"))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| format!("the Rust toolchain at {}", sysroot.display()))
}

/// Whether and how the app vendors its crates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendoring {
    None,
    /// `.cargo/config.toml` replaces crates.io with a directory source.
    Configured,
    /// A `cargo vendor` directory that no cargo config points at (`cargo vendor`'s output
    /// without the config snippet it prints): the build points crates.io at it.
    Directory,
}

impl Vendoring {
    fn of(app_dir: &Path) -> Result<Vendoring, StagingError> {
        let mut config = None;
        for name in [".cargo/config.toml", ".cargo/config"] {
            let path = app_dir.join(name);
            if path.is_file() {
                config = Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| crate::io_error("reading", name, e))?,
                );
                break;
            }
        }
        Ok(Vendoring::decide(
            config.as_deref(),
            cargo_vendored(app_dir),
        ))
    }

    /// From the app's cargo config (if any) and whether it has a `cargo vendor` directory.
    fn decide(config: Option<&str>, vendor_dir: bool) -> Vendoring {
        if config.is_some_and(replaces_crates_io_with_a_directory) {
            Vendoring::Configured
        } else if vendor_dir {
            Vendoring::Directory
        } else {
            Vendoring::None
        }
    }

    fn cargo_args(self) -> Vec<String> {
        match self {
            Vendoring::None => Vec::new(),
            Vendoring::Configured => vec!["--offline".to_string()],
            Vendoring::Directory => vec![
                "--offline".to_string(),
                "--config".to_string(),
                "source.crates-io.replace-with=\"vendored-sources\"".to_string(),
                "--config".to_string(),
                format!("source.vendored-sources.directory=\"{VENDOR_DIR}\""),
            ],
        }
    }
}

/// Whether the app has a `vendor/` directory written by `cargo vendor` (its crates
/// carry `.cargo-checksum.json`), not some other kind of vendored files.
fn cargo_vendored(app_dir: &Path) -> bool {
    std::fs::read_dir(app_dir.join(VENDOR_DIR))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.path().join(".cargo-checksum.json").is_file())
        })
        .unwrap_or(false)
}

/// Whether a cargo config replaces crates.io with a `directory` source, as the snippet
/// `cargo vendor` prints does (a line-based reading: enough for that snippet and its
/// hand-written variants).
fn replaces_crates_io_with_a_directory(config: &str) -> bool {
    let mut section = "";
    let mut replaces = false;
    let mut directory = false;
    for line in config.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let in_crates_io =
            section == "source.crates-io" || (section == "source" && key.starts_with("crates-io."));
        if in_crates_io && key.ends_with("replace-with") {
            replaces = true;
        }
        if section.starts_with("source") && key.ends_with("directory") {
            directory = true;
        }
    }
    replaces && directory
}

/// What `cargo metadata --no-deps --format-version 1` says, the parts used here.
#[derive(Debug, Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
    #[serde(default)]
    default_run: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

impl Package {
    fn bins(&self) -> Vec<&str> {
        self.targets
            .iter()
            .filter(|t| t.kind.iter().any(|k| k == "bin"))
            .map(|t| t.name.as_str())
            .collect()
    }

    fn cdylib(&self) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| t.kind.iter().any(|k| k == "cdylib"))
            .map(|t| t.name.as_str())
    }

    fn runnable(&self) -> bool {
        !self.bins().is_empty() || self.cdylib().is_some()
    }
}

/// The wasm to build: a binary or the `cdylib` of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Artifact {
    package: String,
    kind: ArtifactKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ArtifactKind {
    Bin(String),
    Cdylib(String),
}

impl Artifact {
    /// Cargo's arguments that build only this artifact.
    fn selector(&self) -> Vec<String> {
        match &self.kind {
            ArtifactKind::Bin(name) => vec!["--bin".to_string(), name.clone()],
            ArtifactKind::Cdylib(_) => vec!["--lib".to_string()],
        }
    }

    /// The file cargo writes under `target/<target>/release/`.
    fn file_name(&self) -> String {
        match &self.kind {
            ArtifactKind::Bin(name) => format!("{name}.wasm"),
            // Library artifacts are named after the crate, with underscores.
            ArtifactKind::Cdylib(name) => format!("{}.wasm", name.replace('-', "_")),
        }
    }

    fn describe(&self) -> String {
        match &self.kind {
            ArtifactKind::Bin(name) => format!("binary {name}"),
            ArtifactKind::Cdylib(name) => format!("cdylib {name}"),
        }
    }
}

/// The artifact to build: from the package at the app's root (`root_manifest`), or
/// from the only package of a virtual workspace that has something to run.
fn choose_artifact(metadata: &Metadata, root_manifest: &Path) -> Result<Artifact, StagingError> {
    let package = match metadata
        .packages
        .iter()
        .find(|p| p.manifest_path == root_manifest)
    {
        Some(package) => package,
        None => {
            let runnable: Vec<&Package> =
                metadata.packages.iter().filter(|p| p.runnable()).collect();
            match runnable.as_slice() {
                [package] => *package,
                [] => {
                    return Err(StagingError::Staging(
                        "the Cargo workspace has no package with a binary or a cdylib to run"
                            .to_string(),
                    ))
                }
                several => {
                    let names: Vec<&str> = several.iter().map(|p| p.name.as_str()).collect();
                    return Err(StagingError::Staging(format!(
                        "the Cargo workspace has several packages to run ({}): push the one to run, or put a package at the workspace root",
                        names.join(", ")
                    )));
                }
            }
        }
    };
    let bins = package.bins();
    let bin = match (&package.default_run, bins.as_slice()) {
        (Some(default), _) => Some(default.clone()),
        (None, [only]) => Some(only.to_string()),
        (None, []) => None,
        (None, several) => match several.iter().find(|b| **b == package.name) {
            Some(named) => Some(named.to_string()),
            None => {
                return Err(StagingError::Staging(format!(
                    "package {} has several binaries ({}) and no default: set `default-run` in Cargo.toml",
                    package.name,
                    several.join(", ")
                )))
            }
        },
    };
    let kind = match (bin, package.cdylib()) {
        (Some(bin), _) => ArtifactKind::Bin(bin),
        (None, Some(lib)) => ArtifactKind::Cdylib(lib.to_string()),
        (None, None) => {
            return Err(StagingError::Staging(format!(
                "package {} has nothing to run: give it a binary (src/main.rs) for a server, or `crate-type = [\"cdylib\"]` for a wasi:http handler",
                package.name
            )))
        }
    };
    Ok(Artifact {
        package: package.name.clone(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, manifest: &str, targets: &[(&str, &str)]) -> Package {
        Package {
            name: name.to_string(),
            manifest_path: PathBuf::from(manifest),
            targets: targets
                .iter()
                .map(|(name, kind)| Target {
                    name: name.to_string(),
                    kind: vec![kind.to_string()],
                })
                .collect(),
            default_run: None,
        }
    }

    fn choose(packages: Vec<Package>) -> Result<Artifact, StagingError> {
        choose_artifact(&Metadata { packages }, Path::new("/tmp/app/Cargo.toml"))
    }

    fn bin(package: &str, name: &str) -> Artifact {
        Artifact {
            package: package.to_string(),
            kind: ArtifactKind::Bin(name.to_string()),
        }
    }

    #[test]
    fn the_root_packages_default_binary_is_built() {
        let root = "/tmp/app/Cargo.toml";
        let only = package("web-app", root, &[("web-app", "bin")]);
        assert_eq!(choose(vec![only]).unwrap(), bin("web-app", "web-app"));
        assert_eq!(bin("web-app", "web-app").file_name(), "web-app.wasm");

        let named = package(
            "shop",
            root,
            &[("migrate", "bin"), ("shop", "bin"), ("shop", "lib")],
        );
        assert_eq!(choose(vec![named]).unwrap(), bin("shop", "shop"));

        let mut chosen = package("shop", root, &[("migrate", "bin"), ("server", "bin")]);
        chosen.default_run = Some("server".to_string());
        assert_eq!(choose(vec![chosen]).unwrap(), bin("shop", "server"));

        let ambiguous = package("shop", root, &[("migrate", "bin"), ("server", "bin")]);
        let err = choose(vec![ambiguous]).unwrap_err().to_string();
        assert!(err.contains("default-run"), "{err}");
    }

    #[test]
    fn a_cdylib_without_binaries_is_built_as_a_handler() {
        let lib = package(
            "my-handler",
            "/tmp/app/Cargo.toml",
            &[("my-handler", "cdylib")],
        );
        let artifact = choose(vec![lib]).unwrap();
        assert_eq!(artifact.selector(), vec!["--lib"]);
        assert_eq!(artifact.file_name(), "my_handler.wasm");

        let nothing = package("lib-only", "/tmp/app/Cargo.toml", &[("lib-only", "lib")]);
        let err = choose(vec![nothing]).unwrap_err().to_string();
        assert!(err.contains("nothing to run"), "{err}");
    }

    #[test]
    fn a_virtual_workspace_needs_exactly_one_runnable_member() {
        let server = package("server", "/tmp/app/server/Cargo.toml", &[("server", "bin")]);
        let common = package("common", "/tmp/app/common/Cargo.toml", &[("common", "lib")]);
        assert_eq!(
            choose(vec![common, server]).unwrap(),
            bin("server", "server")
        );

        let a = package("a", "/tmp/app/a/Cargo.toml", &[("a", "bin")]);
        let b = package("b", "/tmp/app/b/Cargo.toml", &[("b", "cdylib")]);
        let err = choose(vec![a, b]).unwrap_err().to_string();
        assert!(err.contains("several packages to run (a, b)"), "{err}");
    }

    #[test]
    fn a_sysroot_without_the_wasm_target_or_cargo_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let sysroot = dir.path().to_path_buf();
        let err = check_sysroot(sysroot.clone()).unwrap_err().to_string();
        assert!(err.contains("`rustup target add wasm32-wasip2`"), "{err}");
        std::fs::create_dir_all(sysroot.join("lib/rustlib/wasm32-wasip2")).unwrap();
        let err = check_sysroot(sysroot.clone()).unwrap_err().to_string();
        assert!(err.contains("has no cargo"), "{err}");
        std::fs::create_dir_all(sysroot.join("bin")).unwrap();
        std::fs::write(sysroot.join("bin/cargo"), "").unwrap();
        assert_eq!(check_sysroot(sysroot.clone()).unwrap(), sysroot);
    }

    #[test]
    fn vendoring_is_detected_from_the_config_or_the_vendor_dir() {
        let cargo_vendor_snippet = "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n";
        assert_eq!(
            Vendoring::decide(Some(cargo_vendor_snippet), true),
            Vendoring::Configured
        );
        let dotted = "[source]\ncrates-io.replace-with = \"v\"\nv.directory = \"third_party\"\n";
        assert_eq!(
            Vendoring::decide(Some(dotted), false),
            Vendoring::Configured
        );
        let unrelated = "[build]\njobs = 2 # directory = nope\n";
        assert_eq!(Vendoring::decide(Some(unrelated), false), Vendoring::None);
        assert_eq!(
            Vendoring::decide(Some(unrelated), true),
            Vendoring::Directory
        );
        assert_eq!(Vendoring::decide(None, false), Vendoring::None);
        assert!(Vendoring::None.cargo_args().is_empty());
        assert_eq!(Vendoring::Configured.cargo_args(), vec!["--offline"]);
        let args = Vendoring::Directory.cargo_args();
        assert!(
            args.contains(&"source.vendored-sources.directory=\"vendor\"".to_string()),
            "{args:?}"
        );
    }
}
