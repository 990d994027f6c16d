//! `c_buildpack`: C and C++ sources built for `wasm32-wasi` (WASI preview1) with one of
//! two toolchains:
//!
//! - **clang** (the default when the cell has it): Debian's `clang`, `lld` (`wasm-ld`),
//!   `wasi-libc`, `libclang-rt-dev-wasm32`, and `libc++-dev-wasm32` for C++ (clang 14
//!   has no wasm exceptions: C++ builds with `-fno-exceptions`).
//! - **zig** (`zig cc`, from PyPI's `ziglang` wheel, which carries its own clang and
//!   wasi-libc): installed into the cell's tools directory on first use, when the cell
//!   lacks Debian's toolchain or when the app asks for it with `WF_C_TOOLCHAIN=zig` in
//!   its environment. Zig's cache (the wasi-libc and libc++ it builds once) lives in the
//!   app's buildpack cache, so a restage does not build them again.
//!
//! - **Sources at the app's root, no Makefile**: every `*.c` (or, with any C++ file,
//!   every `*.c`/`*.cc`/`*.cpp`/`*.cxx`, compiled as C++) is compiled and linked into
//!   `app.wasm` with `-O2`.
//! - **A `Makefile`** (next to C/C++ sources anywhere in the app): `make` runs with
//!   `CC` and `CXX` set on its command line to the toolchain's compilers for
//!   `wasm32-wasi` (so they win over the Makefile's own), and `CFLAGS`, `CXXFLAGS`
//!   (`-O2`) and `LDFLAGS` in its environment (which a Makefile may extend or replace).
//!   Its default target must leave **`app.wasm`** at the app's root.
//!
//! The result is a WASI preview1 core module, and preview1 has no sockets: the app
//! cannot serve HTTP, it runs as a **worker** (a long-running process that logs) or as
//! tasks. Its process type stays `web: app.wasm`, because `web` is the process the
//! platform creates and starts for every app (as CF does); what makes it a worker is
//! how it is pushed: `no-route: true` and `health-check-type: process` (the port
//! check would wait forever for a port it never opens), e.g. in its `manifest.yml`.
//! The staging log says so.

use std::path::{Path, PathBuf};

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::sandbox::{SandboxCommand, CACHE};
use crate::{StagingError, DROPLET_WASM};

/// The buildpack's name, as apps and builds list it.
pub const NAME: &str = "c_buildpack";
/// clang's target: WASI preview1 (Debian 12's clang 14 calls it `wasm32-wasi`).
const TARGET: &str = "wasm32-wasi";
/// The app environment variable that picks the toolchain: `clang` or `zig`.
const TOOLCHAIN_VAR: &str = "WF_C_TOOLCHAIN";
/// The `ziglang` wheel on PyPI: `zig cc` with its own clang, lld and wasi-libc.
const ZIGLANG: &str = "0.15.2";
/// Where the zig toolchain is mounted in the sandbox (read-only).
const ZIG_MOUNT: &str = "/tmp/tools/ziglang";
/// The Debian packages that make up the toolchain, for the error when one is missing.
const PACKAGES: &str = "clang lld wasi-libc libclang-rt-dev-wasm32 libc++-dev-wasm32";
/// The files of the toolchain the build needs, and their package.
const TOOLCHAIN_FILES: &[(&str, &str)] = &[
    ("/usr/bin/clang", "clang"),
    ("/usr/bin/wasm-ld", "lld"),
    ("/usr/include/wasm32-wasi/stdio.h", "wasi-libc"),
];
const MAKEFILES: &[&str] = &["GNUmakefile", "makefile", "Makefile"];
const C_EXTENSIONS: &[&str] = &["c"];
const CXX_EXTENSIONS: &[&str] = &["cc", "cpp", "cxx"];
/// How deep detection looks for sources next to a Makefile.
const SOURCE_DEPTH: usize = 4;

pub struct CBuildpack;

impl Buildpack for CBuildpack {
    fn name(&self) -> &str {
        NAME
    }

    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        if has_makefile(ctx.app_dir) {
            return Ok(has_sources_below(ctx.app_dir, SOURCE_DEPTH));
        }
        Ok(!root_sources(ctx.app_dir)?.is_empty())
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        ctx.log("-----> C Buildpack");
        let toolchain = Toolchain::choose(ctx)?;
        if has_makefile(ctx.app_dir) {
            let (cc, cxx) = (toolchain.compiler(false), toolchain.compiler(true));
            ctx.log(&format!(
                "       Running make (CC={}), expecting {DROPLET_WASM}",
                cc.join(" ")
            ));
            toolchain
                .command(ctx, "make", "make")
                .arg(format!("CC={}", cc.join(" ")))
                .arg(format!("CXX={}", cxx.join(" ")))
                .env("CFLAGS", "-O2")
                .env("CXXFLAGS", "-O2")
                .env("LDFLAGS", "")
                .run(ctx.log)?;
            if !ctx.app_dir.join(DROPLET_WASM).is_file() {
                return Err(StagingError::Staging(format!(
                    "make finished without building {DROPLET_WASM}: the Makefile's default target must write {DROPLET_WASM} at the app's root"
                )));
            }
        } else {
            let sources = root_sources(ctx.app_dir)?;
            let compiler = toolchain.compiler(is_cxx(&sources));
            let what = toolchain.name(is_cxx(&sources));
            ctx.log(&format!(
                "       Compiling {} with {}",
                sources.join(" "),
                compiler.join(" ")
            ));
            toolchain
                .command(ctx, &compiler[0], what)
                .args(&compiler[1..])
                .args(["-O2", "-o", DROPLET_WASM])
                .args(&sources)
                .run(ctx.log)?;
        }
        ctx.log(
            "       Built a WASI preview1 core module: no sockets, so it runs as a worker or \
             as tasks; push it with `no-route: true` and `health-check-type: process`",
        );
        Ok(())
    }

    fn release(&self, _ctx: &Context) -> Result<ProcessTypes, StagingError> {
        Ok(ProcessTypes::from([(
            "web".to_string(),
            DROPLET_WASM.to_string(),
        )]))
    }
}

fn has_makefile(app_dir: &Path) -> bool {
    MAKEFILES.iter().any(|name| app_dir.join(name).is_file())
}

/// The compilers a build uses.
enum Toolchain {
    /// Debian's clang, lld and wasi-libc, installed on the cell.
    Clang,
    /// `zig cc` from the `ziglang` wheel, in this host directory of the cell's tools.
    Zig(PathBuf),
}

impl Toolchain {
    /// The toolchain the app asks for with `WF_C_TOOLCHAIN`, else clang where the cell
    /// has it and zig where it does not (installing zig on first use).
    fn choose(ctx: &Context) -> Result<Toolchain, StagingError> {
        let asked = ctx
            .env
            .iter()
            .rev()
            .find(|(name, _)| name == TOOLCHAIN_VAR)
            .map(|(_, value)| value.trim());
        let missing: Vec<&str> = TOOLCHAIN_FILES
            .iter()
            .filter(|(file, _)| !Path::new(file).exists())
            .map(|(_, package)| *package)
            .collect();
        match asked {
            Some("clang") if !missing.is_empty() => Err(StagingError::Staging(format!(
                "{TOOLCHAIN_VAR}=clang, but this cell cannot build with clang: {} not installed \
                 (apt-get install {PACKAGES}); unset {TOOLCHAIN_VAR} to build with zig",
                missing.join(", ")
            ))),
            Some("clang") => Ok(Toolchain::Clang),
            Some("zig") => Toolchain::zig(ctx),
            None | Some("") if missing.is_empty() => Ok(Toolchain::Clang),
            None | Some("") => {
                ctx.log(&format!(
                    "       clang for wasm32-wasi is not on this cell ({} missing): using zig cc",
                    missing.join(", ")
                ));
                Toolchain::zig(ctx)
            }
            Some(other) => Err(StagingError::Staging(format!(
                "{TOOLCHAIN_VAR}={other:?} is not a C toolchain: use clang or zig"
            ))),
        }
    }

    fn zig(ctx: &Context) -> Result<Toolchain, StagingError> {
        let dir = crate::tools::ensure(ctx, &format!("ziglang-{ZIGLANG}"), |dir| {
            ctx.command("python3", "pip install of ziglang")
                .mount_rw(dir, ZIG_MOUNT)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                    "--no-warn-script-location",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--target",
                    ZIG_MOUNT,
                ])
                .arg(format!("ziglang=={ZIGLANG}"))
                .run(ctx.log)
        })?;
        ctx.log(&format!("       Using zig cc (ziglang {ZIGLANG})"));
        Ok(Toolchain::Zig(dir))
    }

    /// The compiler's command line for `wasm32-wasi`: C, or C++ when `cxx`.
    fn compiler(&self, cxx: bool) -> Vec<String> {
        let mut words: Vec<String> = match (self, cxx) {
            (Toolchain::Clang, false) => vec!["clang".into(), format!("--target={TARGET}")],
            (Toolchain::Clang, true) => vec!["clang++".into(), format!("--target={TARGET}")],
            (Toolchain::Zig(_), cxx) => vec![
                format!("{ZIG_MOUNT}/ziglang/zig"),
                if cxx { "c++" } else { "cc" }.into(),
                "-target".into(),
                TARGET.into(),
            ],
        };
        if cxx {
            words.push("-fno-exceptions".into());
        }
        words
    }

    /// The compiler's name in errors ("clang failed ...").
    fn name(&self, cxx: bool) -> &'static str {
        match (self, cxx) {
            (Toolchain::Clang, false) => "clang",
            (Toolchain::Clang, true) => "clang++",
            (Toolchain::Zig(_), false) => "zig cc",
            (Toolchain::Zig(_), true) => "zig c++",
        }
    }

    /// A sandboxed command of the build, with zig mounted and its cache in the app's
    /// buildpack cache.
    fn command<'c>(&self, ctx: &'c Context, program: &str, what: &str) -> SandboxCommand<'c> {
        let command = ctx.command(program, what);
        match self {
            Toolchain::Clang => command,
            Toolchain::Zig(dir) => command
                .mount_ro(dir, ZIG_MOUNT)
                .env("ZIG_GLOBAL_CACHE_DIR", format!("{CACHE}/zig"))
                .env("ZIG_LOCAL_CACHE_DIR", format!("{CACHE}/zig")),
        }
    }
}

/// Whether `sources` need a C++ compiler: any of them is C++.
fn is_cxx(sources: &[String]) -> bool {
    sources.iter().any(|s| has_extension(s, CXX_EXTENSIONS))
}

fn has_extension(name: &str, extensions: &[&str]) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e))
}

fn is_source(name: &str) -> bool {
    has_extension(name, C_EXTENSIONS) || has_extension(name, CXX_EXTENSIONS)
}

/// The C/C++ source files at the top of `app_dir`, sorted.
fn root_sources(app_dir: &Path) -> Result<Vec<String>, StagingError> {
    let entries = std::fs::read_dir(app_dir)
        .map_err(|e| crate::io_error("reading", "the app directory", e))?;
    let mut sources: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_source(name))
        .collect();
    sources.sort();
    Ok(sources)
}

/// Whether a C/C++ source file is in `dir` or its subdirectories, `depth` levels down.
fn has_sources_below(dir: &Path, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(kind) = entry.file_type() else {
            return false;
        };
        if kind.is_file() {
            entry.file_name().to_str().is_some_and(is_source)
        } else {
            kind.is_dir() && depth > 0 && has_sources_below(&entry.path(), depth - 1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cxx_sources_switch_to_the_cxx_compiler_without_exceptions() {
        let c = vec!["a.c".to_string(), "b.c".to_string()];
        let mixed = vec!["a.c".to_string(), "b.cpp".to_string()];
        assert!(!is_cxx(&c) && is_cxx(&mixed));
        assert_eq!(
            Toolchain::Clang.compiler(true),
            ["clang++", "--target=wasm32-wasi", "-fno-exceptions"]
        );
        assert_eq!(
            Toolchain::Zig(PathBuf::new()).compiler(false),
            [
                "/tmp/tools/ziglang/ziglang/zig",
                "cc",
                "-target",
                "wasm32-wasi"
            ]
        );
        assert_eq!(Toolchain::Zig(PathBuf::new()).name(true), "zig c++");
        assert!(is_source("x.cc") && is_source("x.cxx") && is_source("x.c"));
        assert!(!is_source("x.h") && !is_source("Makefile") && !is_source("c"));
    }

    #[test]
    fn detection_needs_sources_at_the_root_or_under_a_makefile() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path();
        assert!(root_sources(app).unwrap().is_empty());
        std::fs::write(app.join("Makefile"), "all:\n").unwrap();
        assert!(!has_sources_below(app, SOURCE_DEPTH));
        std::fs::create_dir_all(app.join("src/deep")).unwrap();
        std::fs::write(app.join("src/deep/main.c"), "").unwrap();
        assert!(has_makefile(app) && has_sources_below(app, SOURCE_DEPTH));
        assert!(!has_sources_below(app, 1));
        std::fs::write(app.join("z.c"), "").unwrap();
        std::fs::write(app.join("a.cpp"), "").unwrap();
        std::fs::write(app.join("notes.txt"), "").unwrap();
        assert_eq!(root_sources(app).unwrap(), vec!["a.cpp", "z.c"]);
    }
}
