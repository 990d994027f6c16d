//! Components that a slow toolchain (componentize-js, componentize-py: ten seconds and
//! more) built from an app's sources, kept in the buildpack's slice of the app's
//! buildpack cache under a digest of everything that went into them. Staging the same
//! sources again (a push of unchanged bits, a restage) copies the component instead of
//! building it, and the cell, which caches compiled code by the wasm's sha256, starts
//! it without compiling either.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::lifecycle::Context;
use crate::{StagingError, DROPLET_WASM};

/// The digest of a build: the toolchain (`toolchain` names its version and target) and
/// every file of the app, path and contents.
pub fn digest(ctx: &Context, toolchain: &str) -> Result<String, StagingError> {
    let mut hasher = Sha256::new();
    hasher.update(toolchain.as_bytes());
    hasher.update([0]);
    hash_dir(&mut hasher, ctx.app_dir, Path::new(""))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Copies the component built for `digest` into the app as `app.wasm`, if the cache
/// has it; whether it did.
pub fn restore(ctx: &Context, digest: &str) -> Result<bool, StagingError> {
    let cached = ctx.cache_dir.join(file_name(digest));
    if !cached.is_file() {
        return Ok(false);
    }
    std::fs::copy(&cached, ctx.app_dir.join(DROPLET_WASM))
        .map_err(|e| crate::io_error("restoring", "the cached component", e))?;
    Ok(true)
}

/// Keeps the app's `app.wasm` as the component built for `digest`, in place of any
/// other the cache held.
pub fn save(ctx: &Context, digest: &str) -> Result<(), StagingError> {
    let entries = std::fs::read_dir(&ctx.cache_dir)
        .map_err(|e| crate::io_error("listing", "the buildpack cache", e))?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(PREFIX) {
            std::fs::remove_file(entry.path())
                .map_err(|e| crate::io_error("pruning", "the buildpack cache", e))?;
        }
    }
    std::fs::copy(
        ctx.app_dir.join(DROPLET_WASM),
        ctx.cache_dir.join(file_name(digest)),
    )
    .map_err(|e| crate::io_error("caching", "the component", e))?;
    Ok(())
}

const PREFIX: &str = "component-";

fn file_name(digest: &str) -> String {
    format!("{PREFIX}{digest}.wasm")
}

/// Feeds the files under `dir` (at `relative` in the app) to `hasher` in name order:
/// each one's path, length and contents. Symlinks count by their target's path.
fn hash_dir(hasher: &mut Sha256, dir: &Path, relative: &Path) -> Result<(), StagingError> {
    let listing_error = |e| crate::io_error("listing", "the app", e);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(listing_error)?
        .collect::<Result<_, _>>()
        .map_err(listing_error)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = relative.join(entry.file_name());
        let kind = entry.file_type().map_err(listing_error)?;
        hasher.update(path.as_os_str().as_encoded_bytes());
        if kind.is_dir() {
            hasher.update(b"/\0");
            hash_dir(hasher, &entry.path(), &path)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(listing_error)?;
            hasher.update(b"@\0");
            hasher.update(target.as_os_str().as_encoded_bytes());
            hasher.update([0]);
        } else {
            let bytes = std::fs::read(entry.path())
                .map_err(|e| crate::io_error("reading", &path.display().to_string(), e))?;
            hasher.update(b"\0");
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_digest(dir: &Path) -> String {
        let mut hasher = Sha256::new();
        hash_dir(&mut hasher, dir, Path::new("")).unwrap();
        hex::encode(hasher.finalize())
    }

    #[test]
    fn the_digest_follows_paths_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.js"), "a").unwrap();
        std::fs::write(dir.path().join("index.js"), "index").unwrap();
        let first = tree_digest(dir.path());
        assert_eq!(tree_digest(dir.path()), first);

        std::fs::write(dir.path().join("src/a.js"), "b").unwrap();
        let changed = tree_digest(dir.path());
        assert_ne!(changed, first);

        std::fs::rename(dir.path().join("src/a.js"), dir.path().join("src/b.js")).unwrap();
        assert_ne!(tree_digest(dir.path()), changed);
    }
}
