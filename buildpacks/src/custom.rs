//! Custom buildpacks: a zip with CF's scripts `bin/detect`, `bin/supply`,
//! `bin/finalize` (or the older `bin/compile`) and `bin/release`, run in the sandbox
//! with CF's arguments:
//!
//! | script | arguments |
//! |---|---|
//! | `bin/detect` | `BUILD_DIR` |
//! | `bin/supply` | `BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX` |
//! | `bin/finalize` | `BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX PROFILE_DIR` |
//! | `bin/compile` | `BUILD_DIR CACHE_DIR` |
//! | `bin/release` | `BUILD_DIR`, printing YAML with `default_process_types` |
//!
//! The scripts see the buildpack's own files read-only at [`sandbox::BUILDPACK`].

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::sandbox;
use crate::StagingError;

/// A custom buildpack unpacked on the cell.
pub struct ScriptBuildpack {
    name: String,
    dir: PathBuf,
}

impl ScriptBuildpack {
    /// Unpacks the buildpack `zip` into `dir` and checks that it has the scripts the
    /// contract needs.
    pub fn unpack(name: String, zip: &Path, dir: &Path) -> Result<ScriptBuildpack, StagingError> {
        crate::package::extract(zip, dir)
            .map_err(|e| StagingError::Staging(format!("buildpack {name}: {e}")))?;
        let bin = dir.join("bin");
        let has = |script: &str| bin.join(script).is_file();
        if !has("detect") || !(has("finalize") || has("compile") || has("supply")) {
            return Err(StagingError::Staging(format!(
                "buildpack {name} is not a buildpack: it needs bin/detect and bin/supply, bin/finalize or bin/compile"
            )));
        }
        // Zips often lose the executable bit; the scripts are meant to run.
        for entry in std::fs::read_dir(&bin).map_err(|e| crate::io_error("reading", "bin/", e))? {
            let path = entry
                .map_err(|e| crate::io_error("reading", "bin/", e))?
                .path();
            if path.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| crate::io_error("preparing", &path.display().to_string(), e))?;
            }
        }
        Ok(ScriptBuildpack {
            name,
            dir: dir.to_path_buf(),
        })
    }

    fn has(&self, script: &str) -> bool {
        self.dir.join("bin").join(script).is_file()
    }

    /// `bin/<script>` with the buildpack mounted.
    fn script<'c>(&self, ctx: &'c Context, script: &str) -> sandbox::SandboxCommand<'c> {
        ctx.command(
            &format!("{}/bin/{script}", sandbox::BUILDPACK),
            format!("bin/{script} of buildpack {}", self.name),
        )
        .mount_ro(&self.dir, sandbox::BUILDPACK)
    }
}

impl Buildpack for ScriptBuildpack {
    fn name(&self) -> &str {
        &self.name
    }

    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        let (status, output) = self
            .script(ctx, "detect")
            .arg(sandbox::APP)
            .output(ctx.log)?;
        if status.success() {
            let detected = output.trim();
            ctx.log(&format!(
                "-----> {}{}",
                self.name,
                if detected.is_empty() {
                    String::new()
                } else {
                    format!(" ({detected})")
                }
            ));
        }
        Ok(status.success())
    }

    fn has_supply(&self) -> bool {
        self.has("supply")
    }

    fn supply(&self, ctx: &Context) -> Result<(), StagingError> {
        self.script(ctx, "supply")
            .args([sandbox::APP, sandbox::CACHE, sandbox::DEPS])
            .arg(ctx.index.to_string())
            .run(ctx.log)
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        if self.has("finalize") {
            let profile = format!("{}/.profile.d", sandbox::APP);
            self.script(ctx, "finalize")
                .args([sandbox::APP, sandbox::CACHE, sandbox::DEPS])
                .arg(ctx.index.to_string())
                .arg(profile)
                .run(ctx.log)
        } else if self.has("compile") {
            self.script(ctx, "compile")
                .args([sandbox::APP, sandbox::CACHE])
                .run(ctx.log)
        } else {
            Err(StagingError::Staging(format!(
                "buildpack {} can only supply (it has no bin/finalize or bin/compile), so it cannot be the last buildpack",
                self.name
            )))
        }
    }

    fn release(&self, ctx: &Context) -> Result<ProcessTypes, StagingError> {
        if !self.has("release") {
            return Ok(ProcessTypes::new());
        }
        let (status, output) = self
            .script(ctx, "release")
            .arg(sandbox::APP)
            .output(ctx.log)?;
        if !status.success() {
            return Err(StagingError::Staging(format!(
                "bin/release of buildpack {} failed ({status})",
                self.name
            )));
        }
        release_process_types(&output).map_err(|e| {
            StagingError::Staging(format!("bin/release of buildpack {}: {e}", self.name))
        })
    }
}

/// The `default_process_types` of `bin/release`'s YAML output.
fn release_process_types(yaml: &str) -> Result<ProcessTypes, String> {
    #[derive(serde::Deserialize)]
    struct Release {
        #[serde(default)]
        default_process_types: Option<serde_yaml::Value>,
    }
    let release: Option<Release> = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    match release.and_then(|r| r.default_process_types) {
        None => Ok(ProcessTypes::new()),
        Some(types) => crate::lifecycle::parse_process_types(
            &serde_yaml::to_string(&types).map_err(|e| e.to_string())?,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_output_gives_the_default_process_types() {
        let types = release_process_types(
            "---\naddons: []\ndefault_process_types:\n  web: app.wasm --port 8080\n",
        )
        .unwrap();
        assert_eq!(types["web"], "app.wasm --port 8080");
        assert!(release_process_types("--- {}\n").unwrap().is_empty());
        assert!(release_process_types("default_process_types: nope").is_err());
    }
}
