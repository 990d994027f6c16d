//! The `wasi:http/proxy` world that the source buildpacks of handler apps (JavaScript,
//! Python) build against: the WASI 0.2.12 packages the cell links handler components
//! with (`wit/wasi-0.2.12`, as wasmtime-wasi-http ships them), written into the
//! staging for the toolchain to read, at the 0.2.x version the toolchain needs.

use std::path::Path;

use crate::StagingError;

/// The WASI 0.2 release of the packages below (what the cell's wasmtime links).
pub const WASI_PATCH: u32 = 12;

/// The WASI packages the `wasi:http/proxy` world refers to, by file name.
const PACKAGES: &[(&str, &str)] = &[
    ("cli.wit", include_str!("../../wit/wasi-0.2.12/cli.wit")),
    (
        "clocks.wit",
        include_str!("../../wit/wasi-0.2.12/clocks.wit"),
    ),
    (
        "filesystem.wit",
        include_str!("../../wit/wasi-0.2.12/filesystem.wit"),
    ),
    ("http.wit", include_str!("../../wit/wasi-0.2.12/http.wit")),
    ("io.wit", include_str!("../../wit/wasi-0.2.12/io.wit")),
    (
        "random.wit",
        include_str!("../../wit/wasi-0.2.12/random.wit"),
    ),
    (
        "sockets.wit",
        include_str!("../../wit/wasi-0.2.12/sockets.wit"),
    ),
];

/// Writes a WIT directory into `dir` (a `world.wit` with the packages under `deps/`)
/// declaring the WASI packages as version `0.2.<patch>`, and returns the name of the
/// proxy world to target (`wasi:http/proxy@0.2.<patch>`).
///
/// A toolchain whose runtime was built against an older 0.2 release exports and
/// imports that release's names; the cell accepts them (0.2.x are semver-compatible),
/// and what later releases added is gated off as an unstable feature, so the
/// toolchain never binds it.
pub fn write_proxy(dir: &Path, patch: u32) -> Result<String, StagingError> {
    if patch > WASI_PATCH {
        return Err(StagingError::Staging(format!(
            "wasi 0.2.{patch} is newer than the cell's wasi 0.2.{WASI_PATCH}"
        )));
    }
    let deps = dir.join("deps");
    std::fs::create_dir_all(&deps).map_err(|e| crate::io_error("creating", "the WIT", e))?;
    for (name, text) in PACKAGES {
        std::fs::write(deps.join(name), at_version(text, patch))
            .map_err(|e| crate::io_error("writing", name, e))?;
    }
    let world = format!("wasi:http/proxy@0.2.{patch}");
    std::fs::write(
        dir.join("world.wit"),
        format!("package wasmfoundry:handler;\n\nworld handler {{\n  include {world};\n}}\n"),
    )
    .map_err(|e| crate::io_error("writing", "world.wit", e))?;
    Ok(world)
}

/// `text` (a package at 0.2.[`WASI_PATCH`]) as the package at 0.2.`patch`.
fn at_version(text: &str, patch: u32) -> String {
    if patch == WASI_PATCH {
        return text.to_string();
    }
    let current = format!("@0.2.{WASI_PATCH}");
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let since = trimmed
                .strip_prefix("@since(version = 0.2.")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|n| n.parse::<u32>().ok());
            match since {
                Some(added) if added > patch => {
                    let indent = &line[..line.len() - trimmed.len()];
                    format!("{indent}@unstable(feature = wasi-0-2-{added})\n")
                }
                _ => format!("{}\n", line.replace(&current, &format!("@0.2.{patch}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_release_is_written_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let world = write_proxy(dir.path(), WASI_PATCH).unwrap();
        assert_eq!(world, "wasi:http/proxy@0.2.12");
        let http = std::fs::read_to_string(dir.path().join("deps/http.wit")).unwrap();
        assert_eq!(http, PACKAGES[3].1);
        let root = std::fs::read_to_string(dir.path().join("world.wit")).unwrap();
        assert!(root.contains("include wasi:http/proxy@0.2.12;"), "{root}");
    }

    #[test]
    fn an_older_release_renames_packages_and_gates_later_additions() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            write_proxy(dir.path(), 10).unwrap(),
            "wasi:http/proxy@0.2.10"
        );
        for (name, _) in PACKAGES {
            let text = std::fs::read_to_string(dir.path().join("deps").join(name)).unwrap();
            assert!(!text.contains("0.2.12"), "{name} still names 0.2.12");
            assert!(text.contains("@0.2.10"), "{name}");
        }
        let cli = std::fs::read_to_string(dir.path().join("deps/cli.wit")).unwrap();
        assert!(cli.contains("@unstable(feature = wasi-0-2-12)\n  exit-with-code"));
    }

    #[test]
    fn a_newer_release_than_the_cell_links_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_proxy(dir.path(), WASI_PATCH + 1).is_err());
    }
}
