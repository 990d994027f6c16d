//! The blobstore: package zips (`packages/<guid>.zip`) and droplet tgzs
//! (`droplets/<guid>.tgz`) as local files. Uploads are written to `tmp/` and renamed
//! into place, so a reader never sees half a blob. Also validates package bits.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

pub struct Blobstore {
    root: PathBuf,
}

impl Blobstore {
    /// Creates the layout under `root` and clears uploads a previous run left behind.
    pub async fn open(root: &Path) -> std::io::Result<Blobstore> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            tokio::fs::remove_dir_all(&tmp).await?;
        }
        for dir in ["packages", "droplets", "tmp"] {
            tokio::fs::create_dir_all(root.join(dir)).await?;
        }
        Ok(Blobstore {
            root: root.to_path_buf(),
        })
    }

    pub fn package_path(&self, guid: &str) -> PathBuf {
        self.root.join("packages").join(format!("{guid}.zip"))
    }

    pub fn droplet_path(&self, guid: &str) -> PathBuf {
        self.root.join("droplets").join(format!("{guid}.tgz"))
    }

    /// A fresh path under `tmp/` for an upload in progress.
    pub fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    /// Writes `chunks` to the temp file `tmp`; returns the hex sha256 of what it wrote.
    pub async fn write_stream<S, E>(&self, tmp: &Path, mut chunks: S) -> Result<String, UploadError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut file = tokio::fs::File::create(tmp).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Moves a finished upload into place.
    pub async fn commit(&self, tmp: &Path, dest: &Path) -> std::io::Result<()> {
        tokio::fs::rename(tmp, dest).await
    }

    /// Removes a blob; one that is not there is fine.
    pub async fn remove(&self, path: &Path) -> std::io::Result<()> {
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading the upload: {0}")]
    Body(String),
    #[error("writing the blob: {0}")]
    Io(#[from] std::io::Error),
}

/// Why uploaded package bits were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BitsError {
    #[error("{0} is not a valid zip file or WebAssembly module")]
    NotZip(String),
    #[error("{0} is empty: the package holds no files")]
    Empty(String),
    #[error("{file} holds an entry with an unsafe path '{entry}'")]
    UnsafePath { file: String, entry: String },
    #[error("cannot read the uploaded bits: {0}")]
    Io(String),
}

/// The WebAssembly binary magic.
const WASM_MAGIC: &[u8] = b"\0asm";
/// The name a bare `.wasm` upload gets inside its package.
const WASM_ENTRY: &str = "app.wasm";

/// Checks uploaded bits at `upload` (a zip, or a bare wasm that is wrapped into one as
/// `app.wasm`) and writes the package zip to `dest`. `filename` names the upload in errors.
/// Blocking: run it on a blocking thread.
pub fn prepare_package(upload: &Path, dest: &Path, filename: &str) -> Result<(), BitsError> {
    let io = |e: std::io::Error| BitsError::Io(e.to_string());
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(upload).map_err(io)?;
    let read = file.read(&mut magic).map_err(io)?;
    if read == magic.len() && magic == WASM_MAGIC {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(dest).map_err(io)?);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(WASM_ENTRY, options)
            .map_err(|e| BitsError::Io(e.to_string()))?;
        zip.write_all(&std::fs::read(upload).map_err(io)?)
            .map_err(io)?;
        zip.finish().map_err(|e| BitsError::Io(e.to_string()))?;
        return Ok(());
    }
    validate_zip(upload, filename)?;
    std::fs::copy(upload, dest).map_err(io)?;
    Ok(())
}

/// A package zip must open, hold at least one file, and keep every entry inside the
/// app directory.
fn validate_zip(path: &Path, filename: &str) -> Result<(), BitsError> {
    let file = std::fs::File::open(path).map_err(|e| BitsError::Io(e.to_string()))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|_| BitsError::NotZip(filename.to_string()))?;
    let mut files = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|_| BitsError::NotZip(filename.to_string()))?;
        let name = entry.name();
        if !is_safe_entry(name) || entry.enclosed_name().is_none() {
            return Err(BitsError::UnsafePath {
                file: filename.to_string(),
                entry: name.to_string(),
            });
        }
        if !entry.is_dir() {
            files += 1;
        }
    }
    if files == 0 {
        return Err(BitsError::Empty(filename.to_string()));
    }
    Ok(())
}

fn is_safe_entry(name: &str) -> bool {
    let absolute = name.starts_with('/') || name.starts_with('\\') || name.get(1..2) == Some(":");
    !absolute && !name.split(['/', '\\']).any(|part| part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn prepare(bytes: &[u8]) -> (tempfile::TempDir, Result<(), BitsError>) {
        let dir = tempfile::tempdir().unwrap();
        let upload = dir.path().join("upload");
        std::fs::write(&upload, bytes).unwrap();
        let result = prepare_package(&upload, &dir.path().join("package.zip"), "bits.zip");
        (dir, result)
    }

    #[test]
    fn accepts_zips_and_wraps_bare_wasm() {
        let (dir, result) = prepare(&zip_of(&[
            ("app.wasm", b"\0asm\x01\0\0\0"),
            ("static/a.txt", b"a"),
        ]));
        assert_eq!(result, Ok(()));
        assert!(dir.path().join("package.zip").exists());

        let (dir, result) = prepare(b"\0asm\x01\0\0\0");
        assert_eq!(result, Ok(()));
        let file = std::fs::File::open(dir.path().join("package.zip")).unwrap();
        let mut archive = zip::ZipArchive::new(file).unwrap();
        let mut wasm = Vec::new();
        archive
            .by_name("app.wasm")
            .unwrap()
            .read_to_end(&mut wasm)
            .unwrap();
        assert_eq!(wasm, b"\0asm\x01\0\0\0");
    }

    #[test]
    fn refuses_garbage_empty_zips_and_escaping_paths() {
        let (_dir, result) = prepare(b"hello, I am text");
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("WebAssembly") && err.to_string().contains("zip"),
            "{err}"
        );

        let (_dir, result) = prepare(&zip_of(&[]));
        assert_eq!(result, Err(BitsError::Empty("bits.zip".into())));
        let (_dir, result) = prepare(&zip_of(&[("dir/", b"")]));
        assert_eq!(result, Err(BitsError::Empty("bits.zip".into())));

        let (_dir, result) = prepare(&zip_of(&[("../evil.wasm", b"\0asm")]));
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("unsafe path '../evil.wasm'"),
            "{err}"
        );
        let (_dir, result) = prepare(&zip_of(&[("/etc/passwd", b"x")]));
        assert!(matches!(result, Err(BitsError::UnsafePath { .. })));
    }

    #[test]
    fn entry_paths_must_stay_inside() {
        assert!(is_safe_entry("app.wasm"));
        assert!(is_safe_entry("a/b..c/d"));
        assert!(!is_safe_entry("a/../../b"));
        assert!(!is_safe_entry("..\\b"));
        assert!(!is_safe_entry("C:/x"));
    }
}
