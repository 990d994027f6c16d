//! The blobstore: package zips (`packages/<guid>.zip`) and droplet tgzs
//! (`droplets/<guid>.tgz`), kept as objects in an `object_store` store (a local
//! directory today; any S3-compatible store later through object_store's `aws` feature).
//! Uploads are streamed to a local scratch file (hashed, and for packages checked and
//! repacked) and only then put under their final key, so a reader never sees half a
//! blob. Also validates package bits.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Blobs up to this size are put in one request; larger ones go up in parts of this
/// size (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// How many parts of one blob may be on their way to the store at once.
const PARTS_IN_FLIGHT: usize = 4;
/// How much of a scratch file is read at a time.
const READ_SIZE: usize = 256 * 1024;

pub struct Blobstore {
    store: Arc<dyn ObjectStore>,
    /// Local directory for uploads in progress; never part of the store's key space
    /// that anything reads.
    scratch: PathBuf,
}

/// A blob being read: its size and its bytes as they arrive from the store.
pub struct Blob {
    pub size: u64,
    pub chunks: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("object store: {0}")]
    Store(object_store::Error),
    #[error("scratch file: {0}")]
    Io(#[from] std::io::Error),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
            other => BlobError::Store(other),
        }
    }
}

impl Blobstore {
    /// The local-directory blobstore under `root`: objects under `root`, scratch files
    /// under `root/tmp` (cleared of uploads a previous run left behind).
    pub async fn open(root: &Path) -> Result<Blobstore, BlobError> {
        tokio::fs::create_dir_all(root).await?;
        let store = LocalFileSystem::new_with_prefix(root)?;
        Blobstore::with_store(Arc::new(store), root.join("tmp")).await
    }

    /// A blobstore over any object store, with `scratch` as its local scratch directory
    /// (cleared of uploads a previous run left behind).
    pub async fn with_store(
        store: Arc<dyn ObjectStore>,
        scratch: PathBuf,
    ) -> Result<Blobstore, BlobError> {
        match tokio::fs::remove_dir_all(&scratch).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        tokio::fs::create_dir_all(&scratch).await?;
        Ok(Blobstore { store, scratch })
    }

    pub fn package_key(&self, guid: &str) -> Key {
        // `from_iter` escapes each part, so a guid cannot add levels or climb out.
        Key::from_iter(["packages".to_string(), format!("{guid}.zip")])
    }

    pub fn droplet_key(&self, guid: &str) -> Key {
        Key::from_iter(["droplets".to_string(), format!("{guid}.tgz")])
    }

    /// A fresh local scratch path for an upload in progress.
    pub fn temp_path(&self) -> PathBuf {
        self.scratch.join(uuid::Uuid::new_v4().to_string())
    }

    /// Writes `chunks` to the scratch file `tmp`; returns the hex sha256 of what it wrote.
    pub async fn write_stream<S, E>(&self, tmp: &Path, mut chunks: S) -> Result<String, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
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
        Ok(hex::encode(hasher.finalize()))
    }

    /// Removes a scratch file; one that is not there is fine.
    pub async fn remove_temp(&self, tmp: &Path) -> std::io::Result<()> {
        match tokio::fs::remove_file(tmp).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Puts the finished scratch file `file` under `key`, streaming it in parts when it
    /// is large; returns the hex sha256 of what it put. The blob appears under `key`
    /// only once all of it is stored (a failed upload is aborted).
    pub async fn put_file(&self, file: &Path, key: &Key) -> Result<String, BlobError> {
        let mut file = tokio::fs::File::open(file).await?;
        let size = file.metadata().await?.len();
        let mut hasher = Sha256::new();
        if size <= PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await?;
            hasher.update(&bytes);
            self.store.put(key, PutPayload::from(bytes)).await?;
            return Ok(hex::encode(hasher.finalize()));
        }
        let upload = self.store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let written: Result<(), BlobError> = async {
            let mut buf = vec![0u8; READ_SIZE];
            loop {
                let read = file.read(&mut buf).await?;
                if read == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..read]);
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(&buf[..read]);
            }
        }
        .await;
        if let Err(e) = written {
            if let Err(abort) = writer.abort().await {
                tracing::debug!(key = %key, error = %abort, "cannot abort a failed blob upload");
            }
            return Err(e);
        }
        writer.finish().await?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Opens the blob under `key` for reading; `BlobError::NotFound` when there is none.
    pub async fn get(&self, key: &Key) -> Result<Blob, BlobError> {
        let result = self.store.get(key).await?;
        Ok(Blob {
            size: result.meta.size,
            chunks: result.into_stream(),
        })
    }

    /// The hex sha256 of the blob under `key`, read as a stream.
    pub async fn sha256(&self, key: &Key) -> Result<String, BlobError> {
        let mut blob = self.get(key).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = blob.chunks.next().await {
            hasher.update(&chunk?);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Deletes the blob under `key`; one that is not there is fine.
    pub async fn delete(&self, key: &Key) -> Result<(), BlobError> {
        match self.store.delete(key).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
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

    async fn read_all(blobs: &Blobstore, key: &Key) -> Result<Vec<u8>, BlobError> {
        let mut blob = blobs.get(key).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = blob.chunks.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        assert_eq!(blob.size, bytes.len() as u64);
        Ok(bytes)
    }

    #[tokio::test]
    async fn blobs_round_trip_through_the_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let blobs = Blobstore::open(&root).await.unwrap();
        // One small blob (a single put) and one that goes up in parts.
        let small = b"\0asm\x01\0\0\0".to_vec();
        let large: Vec<u8> = (0..PART_SIZE * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        for (guid, data) in [("p1", &small), ("p2", &large)] {
            let tmp = blobs.temp_path();
            let written = blobs
                .write_stream(
                    &tmp,
                    futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data.clone()))]),
                )
                .await
                .unwrap();
            let key = blobs.package_key(guid);
            assert_eq!(blobs.put_file(&tmp, &key).await.unwrap(), written);
            blobs.remove_temp(&tmp).await.unwrap();
            assert_eq!(&read_all(&blobs, &key).await.unwrap(), data);
            assert_eq!(blobs.sha256(&key).await.unwrap(), written);
            assert!(root.join("packages").join(format!("{guid}.zip")).is_file());
        }

        let key = blobs.package_key("p1");
        blobs.delete(&key).await.unwrap();
        assert!(matches!(
            read_all(&blobs, &key).await,
            Err(BlobError::NotFound(_))
        ));
        // Deleting what is not there is fine.
        blobs.delete(&key).await.unwrap();
        blobs.delete(&blobs.droplet_key("never")).await.unwrap();
        // Nothing is left behind in scratch.
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn keys_keep_guids_in_one_level() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let blobs = Blobstore {
            store: Arc::new(store),
            scratch: dir.path().join("tmp"),
        };
        assert_eq!(blobs.package_key("g1").as_ref(), "packages/g1.zip");
        assert_eq!(blobs.droplet_key("g1").as_ref(), "droplets/g1.tgz");
        let sneaky = blobs.droplet_key("../../etc/passwd");
        assert_eq!(sneaky.parts().count(), 2, "{sneaky}");
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
