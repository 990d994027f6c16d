//! App bits for `wf push`: a `.wasm` file becomes a zip holding `app.wasm`, a `.zip` is
//! uploaded as is, and a directory is zipped recursively (skipping what the cf CLI
//! always ignores, such as `.git`). The files of a directory or a `.wasm` are
//! fingerprinted for the resource cache, and the zip leaves out those the platform
//! already has.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha1::Digest as _;
use zip::write::SimpleFileOptions;

/// Smallest file worth matching against the resource cache (the platform's minimum).
const MIN_RESOURCE_SIZE: usize = 4096;

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

/// App bits read from disk.
pub enum AppBits {
    /// A `.zip` given as it is.
    Zip(Vec<u8>),
    /// The files of a directory or a `.wasm`, to be zipped.
    Files(Vec<AppFile>),
}

/// A file of the app: its path in the app (`/`-separated), unix mode, and bytes.
pub struct AppFile {
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

/// The zip to upload for the app at `path` (all its files).
pub fn package(path: &Path) -> Result<Vec<u8>, PackageError> {
    read(path)?.zip(&[])
}

/// The bits of the app at `path`.
pub fn read(path: &Path) -> Result<AppBits, PackageError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PackageError::Missing(path.to_path_buf()),
        _ => read_err(path, e),
    })?;
    if meta.is_dir() {
        let mut files = Vec::new();
        add_dir(&mut files, path, path)?;
        if files.is_empty() {
            return Err(PackageError::Empty(path.to_path_buf()));
        }
        return Ok(AppBits::Files(files));
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("wasm") => Ok(AppBits::Files(vec![AppFile {
            path: "app.wasm".to_string(),
            mode: 0o644,
            bytes: std::fs::read(path).map_err(|e| read_err(path, e))?,
        }])),
        Some("zip") => Ok(AppBits::Zip(
            std::fs::read(path).map_err(|e| read_err(path, e))?,
        )),
        _ => Err(PackageError::Unsupported(path.to_path_buf())),
    }
}

impl AppBits {
    /// The files worth matching against the resource cache, as V3 resources
    /// (`checksum`, `size_in_bytes`, `path`, `mode`).
    pub fn fingerprints(&self) -> Vec<Value> {
        let AppBits::Files(files) = self else {
            return Vec::new();
        };
        files
            .iter()
            .filter(|f| f.bytes.len() >= MIN_RESOURCE_SIZE)
            .map(|f| {
                json!({
                    "checksum": {"value": hex::encode(sha1::Sha1::digest(&f.bytes))},
                    "size_in_bytes": f.bytes.len(),
                    "path": f.path,
                    "mode": format!("{:o}", f.mode),
                })
            })
            .collect()
    }

    /// The zip to upload: every file but those at the paths in `skip` (the platform
    /// has them).
    pub fn zip(&self, skip: &[String]) -> Result<Vec<u8>, PackageError> {
        let files = match self {
            AppBits::Zip(zip) => return Ok(zip.clone()),
            AppBits::Files(files) => files,
        };
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for file in files.iter().filter(|f| !skip.contains(&f.path)) {
            zip.start_file(file.path.as_str(), options(file.mode))?;
            zip.write_all(&file.bytes)
                .map_err(|e| read_err(Path::new(&file.path), e))?;
        }
        Ok(zip.finish()?.into_inner())
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

/// Adds the files under `dir` (sorted, for reproducible zips).
fn add_dir(files: &mut Vec<AppFile>, root: &Path, dir: &Path) -> Result<(), PackageError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if IGNORED.iter().any(|i| name == *i) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, as the cf CLI does.
        let meta = std::fs::metadata(&path).map_err(|e| read_err(&path, e))?;
        if meta.is_dir() {
            add_dir(files, root, &path)?;
        } else if meta.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push(AppFile {
                path: relative,
                mode: mode(&meta),
                bytes: std::fs::read(&path).map_err(|e| read_err(&path, e))?,
            });
        }
    }
    Ok(())
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
    fn big_files_are_fingerprinted_and_matched_ones_left_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), vec![1u8; 5000]).unwrap();
        std::fs::write(dir.path().join("small.txt"), b"hi").unwrap();
        let bits = read(dir.path()).unwrap();
        let prints = bits.fingerprints();
        assert_eq!(prints.len(), 1, "{prints:?}");
        assert_eq!(prints[0]["path"], "app.wasm");
        assert_eq!(prints[0]["size_in_bytes"], 5000);
        assert_eq!(prints[0]["checksum"]["value"].as_str().unwrap().len(), 40);
        let names: Vec<String> = entries(bits.zip(&["app.wasm".to_string()]).unwrap())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["small.txt"]);
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
