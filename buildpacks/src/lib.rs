//! Buildpacks: turn a package (the app's bits, a zip) into a droplet (a tgz holding
//! `app.wasm`, the app's files under `app/`, and `droplet.json`). The skeleton has the
//! `wasm` buildpack: the package holds a prebuilt WebAssembly module or component.

mod droplet;
mod package;
mod wasm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the built-in buildpack for prebuilt wasm, as apps and builds list it.
pub const WASM_BUILDPACK: &str = "wasm_buildpack";
/// The built-in buildpacks, in their default detection order (CC seeds its buildpack
/// records with these at positions 1, 2, ...).
pub const BUILT_IN: &[&str] = &[
    "staticfile_buildpack",
    WASM_BUILDPACK,
    "wat_buildpack",
    "rust_buildpack",
    "c_buildpack",
    "javascript_buildpack",
    "python_buildpack",
];
/// Where the app's wasm sits in a droplet, and the `web` start command.
pub const DROPLET_WASM: &str = "app.wasm";
/// The droplet's metadata file.
pub const DROPLET_METADATA: &str = "droplet.json";
/// The directory of the app's other files in a droplet.
pub const DROPLET_APP_DIR: &str = "app";

/// What the cell runs: a command component that binds `$PORT` itself, or a
/// `wasi:http` handler the cell serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    Server,
    Handler,
}

/// `droplet.json` inside every droplet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropletMetadata {
    pub kind: AppKind,
    /// Path of the wasm inside the droplet (`app.wasm`).
    pub wasm: String,
    /// Hex sha256 of the wasm bytes (the cell caches compiled artifacts by it).
    pub wasm_sha256: String,
    /// Name of the buildpack that staged it (`wasm_buildpack`).
    pub buildpack: String,
    /// Process type -> start command (`web` -> `app.wasm`).
    pub process_types: BTreeMap<String, String>,
}

pub struct Staged {
    /// Path of the droplet tgz written under the work dir.
    pub droplet: PathBuf,
    pub metadata: DropletMetadata,
}

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("None of the buildpacks detected a compatible application")]
    NoAppDetected,
    #[error("{0}")]
    Staging(String),
    #[error("{0}")]
    InvalidPackage(String),
}

impl StagingError {
    /// CF's staging error name, as in a build's `error` field: `<name> - <reason>`.
    pub fn cf_name(&self) -> &'static str {
        match self {
            StagingError::NoAppDetected => "NoAppDetectedError",
            StagingError::Staging(_) | StagingError::InvalidPackage(_) => "StagingError",
        }
    }
}

/// Stages `package_zip` into a droplet under `work_dir`; `log` receives staging output.
///
/// The package is unpacked into `work_dir/app`, the `wasm` buildpack detects the app's
/// wasm (`app.wasm`, or the only `.wasm` at the top level), validates it, and writes
/// `work_dir/droplet.tgz`.
pub fn stage(
    package_zip: &Path,
    work_dir: &Path,
    buildpacks: &[String],
    log: &mut dyn FnMut(&str),
) -> Result<Staged, StagingError> {
    if let Some(unknown) = buildpacks.iter().find(|b| b.as_str() != WASM_BUILDPACK) {
        return Err(StagingError::Staging(format!(
            "buildpack {unknown:?} is not available (built-in: {WASM_BUILDPACK})"
        )));
    }
    let app_dir = work_dir.join(DROPLET_APP_DIR);
    let unpacked = package::extract(package_zip, &app_dir)?;
    log(&format!("-----> Extracted app package ({unpacked} bytes)"));

    log("-----> Wasm Buildpack");
    let wasm_name = wasm::find_app_wasm(&app_dir)?;
    let bytes =
        std::fs::read(app_dir.join(&wasm_name)).map_err(|e| io_error("reading", &wasm_name, e))?;
    let kind = wasm::validate(&bytes).map_err(|reason| {
        StagingError::Staging(format!(
            "{wasm_name} is not a valid WebAssembly module or component: {reason}"
        ))
    })?;
    log(&format!(
        "       Detected {} ({})",
        wasm_name,
        kind.describe()
    ));

    let metadata = DropletMetadata {
        kind: kind.app_kind(),
        wasm: DROPLET_WASM.to_string(),
        wasm_sha256: sha256_hex(&bytes),
        buildpack: WASM_BUILDPACK.to_string(),
        process_types: BTreeMap::from([("web".to_string(), DROPLET_WASM.to_string())]),
    };
    let droplet = work_dir.join("droplet.tgz");
    let size = droplet::write(&droplet, &app_dir, &wasm_name, &metadata)?;
    log(&format!("       Process types: web -> {DROPLET_WASM}"));
    log(&format!("       Droplet: {size} bytes"));
    Ok(Staged { droplet, metadata })
}

/// Unpacks a droplet tgz into `dest`, returning its metadata.
pub fn unpack_droplet(droplet: &Path, dest: &Path) -> Result<DropletMetadata, StagingError> {
    droplet::unpack(droplet, dest)
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn io_error(action: &str, what: &str, e: std::io::Error) -> StagingError {
    StagingError::Staging(format!("{action} {what}: {e}"))
}

#[cfg(test)]
mod tests;
