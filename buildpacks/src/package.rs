//! Unpacking an app package (a zip) without trusting it: every entry must stay inside
//! the app directory, symlinks are refused, and the total size is capped.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::StagingError;

/// The most an app package may unpack to (CF's default app bits limit is 1 GiB).
pub const MAX_UNPACKED_BYTES: u64 = 1 << 30;

/// Extracts `zip_path` into `dest` (created if missing); returns the bytes written.
pub fn extract(zip_path: &Path, dest: &Path) -> Result<u64, StagingError> {
    let file = File::open(zip_path)
        .map_err(|e| StagingError::InvalidPackage(format!("cannot open the app package: {e}")))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        StagingError::InvalidPackage(format!("the app package is not a valid zip archive: {e}"))
    })?;
    std::fs::create_dir_all(dest)
        .map_err(|e| crate::io_error("creating", "the app directory", e))?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| {
            StagingError::InvalidPackage(format!("the app package is corrupt: {e}"))
        })?;
        let name = entry.name().to_string();
        let relative = safe_relative_path(&name)?;
        if entry.is_symlink() {
            return Err(StagingError::InvalidPackage(format!(
                "package entry {name:?} is a symlink; packages may hold only files and directories"
            )));
        }
        let target = dest.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| crate::io_error("creating", &name, e))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| crate::io_error("creating", &name, e))?;
        }
        let mut out = File::create(&target).map_err(|e| crate::io_error("writing", &name, e))?;
        // `take` bounds what a lying size header could make us write.
        let budget = MAX_UNPACKED_BYTES - total;
        let written = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)
            .map_err(|e| StagingError::InvalidPackage(format!("package entry {name:?}: {e}")))?;
        out.flush()
            .map_err(|e| crate::io_error("writing", &name, e))?;
        if written > budget {
            return Err(StagingError::InvalidPackage(format!(
                "the app package unpacks to more than {MAX_UNPACKED_BYTES} bytes"
            )));
        }
        total += written;
    }
    Ok(total)
}

/// The entry name as a path relative to the app directory, or why it is refused.
fn safe_relative_path(name: &str) -> Result<PathBuf, StagingError> {
    let refuse = || {
        StagingError::InvalidPackage(format!(
            "package entry {name:?} is outside the app directory (absolute paths and `..` are refused)"
        ))
    };
    if name.contains('\\') || name.contains('\0') {
        return Err(refuse());
    }
    let mut path = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refuse())
            }
        }
    }
    if path.as_os_str().is_empty() {
        return Err(refuse());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_kept_and_escapes_refused() {
        assert_eq!(
            safe_relative_path("a/b.txt").unwrap(),
            PathBuf::from("a/b.txt")
        );
        assert_eq!(
            safe_relative_path("./app.wasm").unwrap(),
            PathBuf::from("app.wasm")
        );
        for bad in ["../evil.wasm", "a/../../x", "/etc/passwd", "a\\..\\x", ""] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
