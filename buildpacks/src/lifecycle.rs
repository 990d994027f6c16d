//! The staging lifecycle, CF's buildpack contract: unpack the package, pick the
//! buildpacks (the first whose `detect` passes, or the named ones), let every
//! non-final buildpack `supply` dependencies and the final one `finalize` (or
//! `compile`) the app, ask it to `release` the process types, and write the droplet.
//! Built-in buildpacks ([`crate::builtin`]) and custom ones ([`crate::custom`]) are
//! both [`Buildpack`]s; everything they run goes through the [`Sandbox`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sandbox::{self, Limits, Sandbox, SandboxCommand};
use crate::{wasm, DropletMetadata, Staged, StagingError, DROPLET_APP_DIR, DROPLET_WASM};

/// Process type -> start command (`web` -> `app.wasm`).
pub type ProcessTypes = BTreeMap<String, String>;

/// A buildpack, as the lifecycle runs it (CF's `bin/detect`, `bin/supply`,
/// `bin/finalize`, `bin/release`).
pub trait Buildpack: Send + Sync {
    fn name(&self) -> &str;

    /// Whether this buildpack can stage the app in `ctx.app_dir`.
    fn detect(&self, ctx: &Context) -> Result<bool, StagingError>;

    /// Whether it has a supply step, which it needs to run before another buildpack
    /// (multi-buildpack).
    fn has_supply(&self) -> bool {
        false
    }

    /// Installs what the final buildpack needs into `ctx.deps_dir()`.
    fn supply(&self, _ctx: &Context) -> Result<(), StagingError> {
        Ok(())
    }

    /// Builds the app: afterwards the app's wasm is `app.wasm` in `ctx.app_dir` (or
    /// the only `.wasm` at its top level).
    fn finalize(&self, ctx: &Context) -> Result<(), StagingError>;

    /// The app's default process types.
    fn release(&self, ctx: &Context) -> Result<ProcessTypes, StagingError>;
}

/// Where a buildpack of a staging comes from.
#[derive(Debug, Clone)]
pub enum BuildpackSource {
    /// One of [`crate::BUILT_IN`].
    BuiltIn(String),
    /// A custom buildpack's zip, already downloaded by the cell.
    Custom { name: String, zip: PathBuf },
}

/// One staging's inputs.
pub struct StageRequest<'a> {
    /// The app package (a zip).
    pub package: &'a Path,
    /// An empty scratch directory for this staging (the droplet is written here).
    pub work_dir: &'a Path,
    /// The buildpacks to try in order; empty means all built-in ones.
    pub buildpacks: Vec<BuildpackSource>,
    /// Run `buildpacks` without detect (all supply, the last finalizes).
    pub skip_detect: bool,
    /// The app's buildpack cache (restored by the cell, saved after success).
    pub cache_dir: &'a Path,
    /// The cell's tools the buildpacks installed (compilers), kept across stagings.
    pub tools_dir: &'a Path,
    /// The staging environment (app env, staging env group, `CF_*`).
    pub env: Vec<(String, String)>,
    pub limits: Limits,
}

/// What a buildpack step sees: the staging's directories (host paths, for the
/// buildpack's own file work; commands see them at [`sandbox::APP`] and friends),
/// its environment, and the sandbox.
pub struct Context<'a> {
    pub app_dir: &'a Path,
    /// This buildpack's slice of the app's buildpack cache.
    pub cache_dir: PathBuf,
    /// The dependency directories of all buildpacks (`<index>/` each).
    pub deps_root: &'a Path,
    /// This buildpack's position among the staging's buildpacks.
    pub index: usize,
    pub tools_dir: &'a Path,
    pub env: &'a [(String, String)],
    pub sandbox: &'a Sandbox,
    pub log: &'a (dyn Fn(&str) + Sync),
}

impl Context<'_> {
    /// This buildpack's dependency directory (host path).
    pub fn deps_dir(&self) -> PathBuf {
        self.deps_root.join(self.index.to_string())
    }

    /// A sandboxed command with the app at [`sandbox::APP`], the dependencies at
    /// [`sandbox::DEPS`], this buildpack's cache at [`sandbox::CACHE`], and the
    /// staging environment set.
    pub fn command(&self, program: &str, what: impl Into<String>) -> SandboxCommand<'_> {
        self.sandbox
            .command(program, what)
            .mount_rw(self.app_dir, sandbox::APP)
            .mount_rw(self.deps_root, sandbox::DEPS)
            .mount_rw(&self.cache_dir, sandbox::CACHE)
            .envs(self.env)
    }

    pub fn log(&self, line: &str) {
        (self.log)(line)
    }
}

/// Runs the lifecycle for `request`; `log` receives the staging output line by line.
pub fn stage(
    request: StageRequest<'_>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Staged, StagingError> {
    let work = request.work_dir;
    let app_dir = work.join(DROPLET_APP_DIR);
    let deps_root = work.join("deps");
    let unpacked = crate::package::extract(request.package, &app_dir)?;
    log(&format!("-----> Extracted app package ({unpacked} bytes)"));
    std::fs::create_dir_all(&deps_root)
        .map_err(|e| crate::io_error("creating", "the dependencies directory", e))?;

    let buildpacks = load(&request, work)?;
    let sandbox = Sandbox::new(&work.join("sandbox"), request.limits)?;
    let context = |index: usize, buildpack: &dyn Buildpack| -> Result<Context<'_>, StagingError> {
        let cache_dir = request.cache_dir.join(cache_slice(buildpack.name()));
        let deps = deps_root.join(index.to_string());
        for dir in [&cache_dir, &deps] {
            std::fs::create_dir_all(dir)
                .map_err(|e| crate::io_error("creating", &dir.display().to_string(), e))?;
        }
        Ok(Context {
            app_dir: &app_dir,
            cache_dir,
            deps_root: &deps_root,
            index,
            tools_dir: request.tools_dir,
            env: &request.env,
            sandbox: &sandbox,
            log,
        })
    };

    // The buildpacks that run, with their indices: all named ones, or the first
    // that detects the app.
    let chosen: Vec<usize> = if request.skip_detect {
        (0..buildpacks.len()).collect()
    } else {
        let mut detected = None;
        for (index, buildpack) in buildpacks.iter().enumerate() {
            if buildpack.detect(&context(index, buildpack.as_ref())?)? {
                detected = Some(index);
                break;
            }
        }
        vec![detected.ok_or(StagingError::NoAppDetected)?]
    };
    let (&last, suppliers) = chosen.split_last().ok_or(StagingError::NoAppDetected)?;
    for &index in suppliers {
        let buildpack = buildpacks[index].as_ref();
        if !buildpack.has_supply() {
            return Err(StagingError::Staging(format!(
                "buildpack {} cannot run before another one: it has no supply step (bin/supply)",
                buildpack.name()
            )));
        }
        buildpack.supply(&context(index, buildpack)?)?;
    }
    let last_buildpack = buildpacks[last].as_ref();
    let ctx = context(last, last_buildpack)?;
    if last_buildpack.has_supply() {
        last_buildpack.supply(&ctx)?;
    }
    last_buildpack.finalize(&ctx)?;
    let mut process_types = last_buildpack.release(&ctx)?;
    process_types.extend(procfile(&app_dir)?);
    if process_types.is_empty() {
        process_types.insert("web".to_string(), DROPLET_WASM.to_string());
    }
    drop(ctx);

    let wasm_name = wasm::find_app_wasm(&app_dir).map_err(|e| match e {
        StagingError::NoAppDetected => StagingError::Staging(format!(
            "buildpack {} finished without producing the app's wasm ({DROPLET_WASM})",
            last_buildpack.name()
        )),
        other => other,
    })?;
    let bytes = std::fs::read(app_dir.join(&wasm_name))
        .map_err(|e| crate::io_error("reading", &wasm_name, e))?;
    let kind = wasm::validate(&bytes).map_err(|reason| {
        StagingError::Staging(format!(
            "{wasm_name} is not a valid WebAssembly module or component: {reason}"
        ))
    })?;
    log(&format!("       Built {wasm_name} ({})", kind.describe()));
    let metadata = DropletMetadata {
        kind: kind.app_kind(),
        wasm: DROPLET_WASM.to_string(),
        wasm_sha256: crate::sha256_hex(&bytes),
        buildpack: last_buildpack.name().to_string(),
        buildpacks: chosen
            .iter()
            .map(|&i| buildpacks[i].name().to_string())
            .collect(),
        process_types,
    };
    let droplet = work.join("droplet.tgz");
    let size = crate::droplet::write(&droplet, &app_dir, &wasm_name, &metadata)?;
    let types: Vec<String> = metadata
        .process_types
        .iter()
        .map(|(kind, command)| format!("{kind} -> {command}"))
        .collect();
    log(&format!("       Process types: {}", types.join(", ")));
    log(&format!("       Droplet: {size} bytes"));
    Ok(Staged { droplet, metadata })
}

/// The request's buildpacks, built-in ones looked up and custom ones unpacked.
fn load(request: &StageRequest<'_>, work: &Path) -> Result<Vec<Box<dyn Buildpack>>, StagingError> {
    let sources = if request.buildpacks.is_empty() {
        crate::BUILT_IN
            .iter()
            .map(|name| BuildpackSource::BuiltIn(name.to_string()))
            .collect()
    } else {
        request.buildpacks.clone()
    };
    let mut loaded: Vec<Box<dyn Buildpack>> = Vec::new();
    for (index, source) in sources.into_iter().enumerate() {
        match source {
            BuildpackSource::BuiltIn(name) => match crate::builtin::get(&name) {
                Some(buildpack) => loaded.push(buildpack),
                // While detecting, a buildpack this cell lacks is just not a match.
                None if !request.skip_detect && request.buildpacks.is_empty() => {}
                None => {
                    return Err(StagingError::Staging(format!(
                        "buildpack {name:?} is not available on this cell"
                    )))
                }
            },
            BuildpackSource::Custom { name, zip } => {
                let dir = work.join("buildpacks").join(index.to_string());
                loaded.push(Box::new(crate::custom::ScriptBuildpack::unpack(
                    name, &zip, &dir,
                )?));
            }
        }
    }
    Ok(loaded)
}

/// The cache subdirectory of the buildpack `name` (a digest, so any name is safe).
fn cache_slice(name: &str) -> String {
    crate::sha256_hex(name.as_bytes())[..16].to_string()
}

/// The app's `Procfile` process types, which override the buildpack's (as in CF).
fn procfile(app_dir: &Path) -> Result<ProcessTypes, StagingError> {
    let path = app_dir.join("Procfile");
    if !path.is_file() {
        return Ok(ProcessTypes::new());
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| crate::io_error("reading", "Procfile", e))?;
    parse_process_types(&text).map_err(|e| StagingError::Staging(format!("Procfile: {e}")))
}

/// Parses `type: command` lines (a Procfile, or `bin/release`'s
/// `default_process_types` map flattened by the caller).
pub(crate) fn parse_process_types(text: &str) -> Result<ProcessTypes, String> {
    let map: Option<BTreeMap<String, serde_yaml::Value>> =
        serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    map.unwrap_or_default()
        .into_iter()
        .map(|(kind, command)| match command {
            serde_yaml::Value::String(command) => Ok((kind, command)),
            other => Err(format!(
                "the command of {kind:?} is not a string: {other:?}"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfiles_parse_and_reject_non_strings() {
        let types =
            parse_process_types("web: app.wasm serve\nworker: app.wasm work --fast\n").unwrap();
        assert_eq!(types["web"], "app.wasm serve");
        assert_eq!(types["worker"], "app.wasm work --fast");
        assert!(parse_process_types("web: [1, 2]").is_err());
        assert!(parse_process_types("").unwrap().is_empty());
    }
}
