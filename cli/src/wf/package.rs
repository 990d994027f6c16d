//! App bits for `wf push`: a `.wasm` file becomes a zip holding `app.wasm`, a `.zip` is
//! uploaded as is, and a directory is zipped recursively (skipping what the cf CLI
//! always ignores, such as `.git`).

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

/// Files and directories the cf CLI never uploads.
const IGNORED: [&str; 7] = [
    ".cfignore",
    "_darcs",
    ".DS_Store",
    ".git",
    ".gitignore",
    ".hg",
    ".svn",
];

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("The specified path '{0}' does not exist.")]
    Missing(PathBuf),
    #[error("No app files found in '{0}'.")]
    Empty(PathBuf),
    #[error("'{0}' is neither a directory, a .wasm file nor a .zip file.")]
    Unsupported(PathBuf),
    #[error("Cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Cannot zip the app files: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// The zip to upload for the app at `path`.
pub fn package(path: &Path) -> Result<Vec<u8>, PackageError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PackageError::Missing(path.to_path_buf()),
        _ => read_err(path, e),
    })?;
    if meta.is_dir() {
        return zip_dir(path);
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("wasm") => zip_wasm(path),
        Some("zip") => std::fs::read(path).map_err(|e| read_err(path, e)),
        _ => Err(PackageError::Unsupported(path.to_path_buf())),
    }
}

fn read_err(path: &Path, source: std::io::Error) -> PackageError {
    PackageError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn options(mode: u32) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(mode)
}

fn zip_wasm(path: &Path) -> Result<Vec<u8>, PackageError> {
    let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("app.wasm", options(0o644))?;
    zip.write_all(&bytes).map_err(|e| read_err(path, e))?;
    Ok(zip.finish()?.into_inner())
}

fn zip_dir(root: &Path) -> Result<Vec<u8>, PackageError> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let files = add_dir(&mut zip, root, root)?;
    if files == 0 {
        return Err(PackageError::Empty(root.to_path_buf()));
    }
    Ok(zip.finish()?.into_inner())
}

/// Adds the files under `dir` (sorted, for reproducible zips); returns how many.
fn add_dir<W: Write + Seek>(
    zip: &mut zip::ZipWriter<W>,
    root: &Path,
    dir: &Path,
) -> Result<usize, PackageError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    let mut files = 0;
    for entry in entries {
        let name = entry.file_name();
        if IGNORED.iter().any(|i| name == *i) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, as the cf CLI does.
        let meta = std::fs::metadata(&path).map_err(|e| read_err(&path, e))?;
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if meta.is_dir() {
            files += add_dir(zip, root, &path)?;
        } else if meta.is_file() {
            zip.start_file(relative, options(mode(&meta)))?;
            let bytes = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
            zip.write_all(&bytes).map_err(|e| read_err(&path, e))?;
            files += 1;
        }
    }
    Ok(files)
}

#[cfg(unix)]
fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn entries(zip: Vec<u8>) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut file = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                file.read_to_end(&mut data).unwrap();
                (file.name().to_string(), data)
            })
            .collect()
    }

    #[test]
    fn a_wasm_file_is_zipped_as_app_wasm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello.wasm");
        std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
        let zip = package(&path).unwrap();
        assert_eq!(
            entries(zip),
            vec![("app.wasm".to_string(), b"\0asm\x01\0\0\0".to_vec())]
        );
    }

    #[test]
    fn a_directory_is_zipped_recursively_without_vcs_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"wasm").unwrap();
        std::fs::create_dir_all(dir.path().join("static/css")).unwrap();
        std::fs::write(dir.path().join("static/css/site.css"), b"body{}").unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), b"ref").unwrap();
        let names: Vec<String> = entries(package(dir.path()).unwrap())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["app.wasm", "static/css/site.css"]);
    }

    #[test]
    fn bad_paths_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            package(&dir.path().join("nope")),
            Err(PackageError::Missing(_))
        ));
        assert!(matches!(package(dir.path()), Err(PackageError::Empty(_))));
        let txt = dir.path().join("notes.txt");
        std::fs::write(&txt, b"hi").unwrap();
        assert!(matches!(package(&txt), Err(PackageError::Unsupported(_))));
    }
}
