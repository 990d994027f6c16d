//! Buildpacks: turn a package (the app's bits, a zip) into a droplet (a tgz holding
//! `app.wasm`, the app's files under `app/`, and `droplet.json`) through CF's buildpack
//! lifecycle ([`lifecycle`]): built-in buildpacks ([`builtin`]) and custom ones with
//! CF's scripts ([`custom`]), whose build tools run in the staging [`sandbox`].

mod builtin;
mod custom;
mod droplet;
#[doc(hidden)]
pub mod fuzzing;
pub mod lifecycle;
mod package;
pub mod sandbox;
pub mod tools;
mod wasm;

pub use droplet::{pack_cache, unpack_cache};
pub use lifecycle::{stage, Buildpack, BuildpackSource, Context, ProcessTypes, StageRequest};
pub use sandbox::Limits;

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
    /// Name of the buildpack that staged it (`wasm_buildpack`): the final one.
    pub buildpack: String,
    /// Every buildpack that ran, in order (the final one last).
    #[serde(default)]
    pub buildpacks: Vec<String>,
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

/// Checks an uploaded droplet tgz without unpacking it: only files and directories at
/// relative paths, at most `max_unpacked_bytes`, and a `droplet.json` whose wasm
/// matches; returns its metadata.
pub fn inspect_droplet(
    droplet: &Path,
    max_unpacked_bytes: u64,
) -> Result<DropletMetadata, StagingError> {
    droplet::inspect(droplet, max_unpacked_bytes)
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
