//! The blobstore: every blob the Cloud Controller keeps, in an `object_store` store (a
//! local directory, or any S3-compatible bucket), laid out by kind as CF's buckets are:
//!
//! | kind | key |
//! |---|---|
//! | package zips | `packages/<package guid>.zip` |
//! | droplet tgzs | `droplets/<droplet guid>.tgz` |
//! | buildpack zips | `buildpacks/<buildpack guid>.zip` |
//! | resource cache (files by sha1) | `resources/ab/cd/abcd...` (partitioned like CF's) |
//! | buildpack cache | `buildpack_cache/<app guid>/<stack>.tgz` |
//!
//! Every blob has a recorded sha256. Uploads are streamed to a local scratch file
//! (hashed, and for packages checked and repacked) and only then put under their final
//! key, checked again against the recorded sha256 as they go (on S3 the server checks
//! each request's `x-amz-checksum-sha256` too), so a reader never sees half a blob.
//! Reads check the bytes against the recorded sha256 as they stream and hold back the
//! last chunk until it matches: a blob that does not match is an error, never served
//! whole. Also validates package and buildpack bits.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Blobs up to this size are put in one request; larger ones go up in parts of this
/// size (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// How many parts of one blob may be on their way to the store at once.
const PARTS_IN_FLIGHT: usize = 4;
/// How much of a scratch file is read at a time.
const READ_SIZE: usize = 256 * 1024;

/// An S3-compatible bucket for the blobstore (`--blobstore s3://BUCKET`).
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// The server's URL (`http://127.0.0.1:9000` for MinIO or moto, path-style
    /// addressing); `None` is AWS itself, at `region`'s endpoint.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a blobstore URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobstoreUrlError {
    #[error("blobstore '{0}' is not an s3://BUCKET URL")]
    NotS3(String),
    #[error("blobstore '{0}': an S3 bucket name has 3 to 63 lowercase letters, digits, '.' and '-', and nothing after it")]
    BadBucket(String),
}

/// The bucket of an `s3://BUCKET` URL.
pub fn s3_bucket(url: &str) -> Result<String, BlobstoreUrlError> {
    let bucket = url
        .strip_prefix("s3://")
        .ok_or_else(|| BlobstoreUrlError::NotS3(url.to_string()))?;
    let bucket = bucket.strip_suffix('/').unwrap_or(bucket);
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(BlobstoreUrlError::BadBucket(url.to_string()));
    }
    Ok(bucket.to_string())
}

/// What a blob holds, and so the folder it lives under (CF's bucket for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Package,
    Droplet,
    Buildpack,
    Resource,
    BuildpackCache,
}

impl BlobKind {
    pub fn folder(self) -> &'static str {
        match self {
            BlobKind::Package => "packages",
            BlobKind::Droplet => "droplets",
            BlobKind::Buildpack => "buildpacks",
            BlobKind::Resource => "resources",
            BlobKind::BuildpackCache => "buildpack_cache",
        }
    }

    /// The guid a package, droplet or buildpack key is named after, or the app guid of
    /// a buildpack cache key; `None` for other keys (resources are named by content).
    pub fn guid_of(self, key: &Key) -> Option<String> {
        let parts: Vec<_> = key.parts().collect();
        let extension = match self {
            BlobKind::Package | BlobKind::Buildpack => ".zip",
            BlobKind::Droplet => ".tgz",
            BlobKind::BuildpackCache => {
                return match parts.as_slice() {
                    [folder, app, _stack] if folder.as_ref() == self.folder() => {
                        Some(app.as_ref().to_string())
                    }
                    _ => None,
                };
            }
            BlobKind::Resource => return None,
        };
        match parts.as_slice() {
            [folder, name] if folder.as_ref() == self.folder() => {
                name.as_ref().strip_suffix(extension).map(str::to_string)
            }
            _ => None,
        }
    }
}

pub struct Blobstore {
    store: Arc<dyn ObjectStore>,
    /// Local directory for uploads in progress; never part of the store's key space
    /// that anything reads.
    scratch: PathBuf,
}

/// A blob being read: its size and its bytes as they arrive from the store, checked
/// against its recorded sha256 (a mismatch ends the stream with
/// [`BlobError::ChecksumMismatch`] in place of the last chunk).
pub struct Blob {
    pub size: u64,
    pub chunks: BoxStream<'static, Result<Bytes, BlobError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error(
        "blob {key} does not match its recorded sha256 {expected} (its bytes hash to {actual})"
    )]
    ChecksumMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("'{0}' is not a hex sha1: resources are keyed by their sha1")]
    BadResourceSha1(String),
    #[error("S3 bucket {bucket} cannot be listed: {source}")]
    Bucket {
        bucket: String,
        source: object_store::Error,
    },
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
    /// The blobstore in `s3`'s bucket, or else in the local directory `dir`. Scratch
    /// files go under `dir/tmp` either way (cleared of uploads a previous run left
    /// behind).
    pub async fn open(dir: &Path, s3: Option<&S3Config>) -> Result<Blobstore, BlobError> {
        tokio::fs::create_dir_all(dir).await?;
        let store: Arc<dyn ObjectStore> = match s3 {
            None => Arc::new(LocalFileSystem::new_with_prefix(dir)?),
            Some(s3) => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_checksum_algorithm(Checksum::SHA256);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let store = builder.build()?;
                // Fail at start, not at the first upload, when the bucket is missing or
                // the keys are refused.
                let probe = Key::from(BlobKind::Package.folder());
                if let Err(source) = store.list_with_delimiter(Some(&probe)).await {
                    return Err(BlobError::Bucket {
                        bucket: s3.bucket.clone(),
                        source,
                    });
                }
                Arc::new(store)
            }
        };
        Blobstore::with_store(store, dir.join("tmp")).await
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

    // `Key::from_iter` escapes each part, so a guid cannot add levels or climb out.

    pub fn package_key(&self, guid: &str) -> Key {
        Key::from_iter([
            BlobKind::Package.folder().to_string(),
            format!("{guid}.zip"),
        ])
    }

    pub fn droplet_key(&self, guid: &str) -> Key {
        Key::from_iter([
            BlobKind::Droplet.folder().to_string(),
            format!("{guid}.tgz"),
        ])
    }

    pub fn buildpack_key(&self, guid: &str) -> Key {
        Key::from_iter([
            BlobKind::Buildpack.folder().to_string(),
            format!("{guid}.zip"),
        ])
    }

    /// A resource cache entry, keyed by its (hex) sha1 as CF's resource matching is, and
    /// partitioned by its first two pairs of digits: `resources/ab/cd/abcd...`.
    pub fn resource_key(&self, sha1: &str) -> Result<Key, BlobError> {
        let sha1 = sha1.to_ascii_lowercase();
        if sha1.len() != 40 || !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BlobError::BadResourceSha1(sha1));
        }
        Ok(Key::from_iter([
            BlobKind::Resource.folder(),
            &sha1[0..2],
            &sha1[2..4],
            &sha1,
        ]))
    }

    /// The buildpack cache an app's stagings on `stack` share.
    pub fn buildpack_cache_key(&self, app_guid: &str, stack: &str) -> Key {
        Key::from_iter([
            BlobKind::BuildpackCache.folder().to_string(),
            app_guid.to_string(),
            format!("{stack}.tgz"),
        ])
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
    /// is large, and checking what it sends against `sha256` (the hex sha256 recorded
    /// for the blob). The blob appears under `key` only once all of it is stored and
    /// matched (a failed or mismatched upload is aborted).
    pub async fn put_file(&self, file: &Path, key: &Key, sha256: &str) -> Result<(), BlobError> {
        let mut file = tokio::fs::File::open(file).await?;
        let size = file.metadata().await?.len();
        let mut hasher = Sha256::new();
        if size <= PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await?;
            hasher.update(&bytes);
            check_sha256(key, sha256, hasher)?;
            self.store.put(key, PutPayload::from(bytes)).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let written: Result<(), BlobError> = async {
            let mut buf = vec![0u8; READ_SIZE];
            loop {
                let read = file.read(&mut buf).await?;
                if read == 0 {
                    return check_sha256(key, sha256, hasher);
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
        Ok(())
    }

    /// Opens the blob under `key` for reading, checked against `sha256` (the hex sha256
    /// recorded for it) as it streams; `BlobError::NotFound` when there is none.
    pub async fn get(&self, key: &Key, sha256: &str) -> Result<Blob, BlobError> {
        let result = self.store.get(key).await?;
        Ok(Blob {
            size: result.meta.size,
            chunks: verified(result.into_stream(), key.clone(), sha256.to_string()),
        })
    }

    /// The hex sha256 of the blob under `key`, read as a stream.
    pub async fn sha256(&self, key: &Key) -> Result<String, BlobError> {
        let mut chunks = self.store.get(key).await?.into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next().await {
            hasher.update(&chunk?);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Every blob of `kind`, as the store lists it (in no particular order).
    pub fn list(&self, kind: BlobKind) -> BoxStream<'static, Result<ObjectMeta, BlobError>> {
        let prefix = Key::from(kind.folder());
        self.store
            .list(Some(&prefix))
            .map_err(BlobError::from)
            .boxed()
    }

    /// Whether a blob is stored under `key`.
    pub async fn has(&self, key: &Key) -> Result<bool, BlobError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the resource cache's file `sha1` to `dest`, checking that its bytes hash
    /// to `sha1`; `BlobError::NotFound` when the cache does not have it.
    pub async fn fetch_resource(&self, sha1: &str, dest: &Path) -> Result<(), BlobError> {
        let key = self.resource_key(sha1)?;
        let mut chunks = self.store.get(&key).await?.into_stream();
        let mut file = tokio::fs::File::create(dest).await?;
        let mut hasher = sha1::Sha1::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(sha1) {
            return Err(BlobError::ChecksumMismatch {
                key: key.to_string(),
                expected: sha1.to_string(),
                actual,
            });
        }
        Ok(())
    }

    /// Copies the blob under `from` to `to` (inside the store: an S3 server copies it
    /// without sending it here).
    pub async fn copy(&self, from: &Key, to: &Key) -> Result<(), BlobError> {
        Ok(self.store.copy(from, to).await?)
    }

    /// Deletes the blob under `key`; one that is not there is fine.
    pub async fn delete(&self, key: &Key) -> Result<(), BlobError> {
        match self.store.delete(key).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `Ok` when `hasher` (fed a blob's bytes) gives `expected`.
fn check_sha256(key: &Key, expected: &str, hasher: Sha256) -> Result<(), BlobError> {
    let actual = hex::encode(hasher.finalize());
    if actual.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(BlobError::ChecksumMismatch {
        key: key.to_string(),
        expected: expected.to_string(),
        actual,
    })
}

/// `chunks`, hashed as they pass, with each chunk held back until the next arrives: the
/// last one goes out only once the whole blob matched `sha256`, else the stream ends
/// with the mismatch (logged, since a reader may only see a cut-off body).
fn verified(
    chunks: BoxStream<'static, Result<Bytes, object_store::Error>>,
    key: Key,
    sha256: String,
) -> BoxStream<'static, Result<Bytes, BlobError>> {
    struct Reading {
        chunks: BoxStream<'static, Result<Bytes, object_store::Error>>,
        hasher: Sha256,
        held: Option<Bytes>,
        key: Key,
        sha256: String,
    }
    let reading = Reading {
        chunks,
        hasher: Sha256::new(),
        held: None,
        key,
        sha256,
    };
    futures::stream::unfold(Some(reading), |reading| async move {
        let mut reading = reading?;
        loop {
            match reading.chunks.next().await {
                Some(Ok(chunk)) => {
                    reading.hasher.update(&chunk);
                    if let Some(previous) = reading.held.replace(chunk) {
                        return Some((Ok(previous), Some(reading)));
                    }
                }
                Some(Err(e)) => return Some((Err(e.into()), None)),
                None => {
                    let Reading {
                        hasher,
                        held,
                        key,
                        sha256,
                        ..
                    } = reading;
                    return match check_sha256(&key, &sha256, hasher) {
                        Ok(()) => held.map(|last| (Ok(last), None)),
                        Err(e) => {
                            tracing::error!(error = %e, "a blob is corrupt: not served");
                            Some((Err(e), None))
                        }
                    };
                }
            }
        }
    })
    .boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading the upload: {0}")]
    Body(String),
    #[error("writing the blob: {0}")]
    Io(#[from] std::io::Error),
}

/// Why uploaded package or buildpack bits were refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BitsError {
    #[error("{0} is not a valid zip file or WebAssembly module")]
    NotZip(String),
    #[error("{0} is empty: the package holds no files")]
    Empty(String),
    #[error("{file} holds an entry with an unsafe path '{entry}'")]
    UnsafePath { file: String, entry: String },
    #[error("{0} is not a valid zip file")]
    NotBuildpackZip(String),
    #[error("{0} is not a buildpack: it must hold bin/detect, and bin/compile, bin/finalize or bin/supply")]
    NotABuildpack(String),
    #[error("cannot read the uploaded bits: {0}")]
    Io(String),
}

/// The WebAssembly binary magic.
const WASM_MAGIC: &[u8] = b"\0asm";
/// The name a bare `.wasm` upload gets inside its package.
const WASM_ENTRY: &str = "app.wasm";

/// A file of the resource cache that goes into a package: its path in the app, its
/// unix mode, and the scratch file it was fetched to.
#[derive(Debug, Clone)]
pub struct CachedFile {
    pub path: String,
    pub mode: u32,
    pub file: PathBuf,
}

/// Checks uploaded bits at `upload` (a zip, or a bare wasm that is wrapped into one as
/// `app.wasm`), adds the files `cached` from the resource cache (unless the upload has
/// a file at that path), and writes the package zip to `dest`; returns the zip's hex
/// sha256. The package must hold a file, every entry inside the app directory.
/// `filename` names the upload in errors. Blocking: run it on a blocking thread.
pub fn prepare_package(
    upload: &Path,
    cached: &[CachedFile],
    dest: &Path,
    filename: &str,
) -> Result<String, BitsError> {
    write_package(upload, cached, dest, filename)?;
    let mut file = std::fs::File::open(dest).map_err(|e| BitsError::Io(e.to_string()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| BitsError::Io(e.to_string()))?;
    Ok(hex::encode(hasher.finalize()))
}

fn write_package(
    upload: &Path,
    cached: &[CachedFile],
    dest: &Path,
    filename: &str,
) -> Result<(), BitsError> {
    let io = |e: std::io::Error| BitsError::Io(e.to_string());
    let zip_err = |e: zip::result::ZipError| BitsError::Io(e.to_string());
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(upload).map_err(io)?;
    let read = file.read(&mut magic).map_err(io)?;
    let wasm = read == magic.len() && magic == WASM_MAGIC;
    let uploaded = if wasm {
        vec![WASM_ENTRY.to_string()]
    } else {
        zip_files(upload, filename, || BitsError::NotZip(filename.to_string()))?
    };
    if uploaded.is_empty() && cached.is_empty() {
        return Err(BitsError::Empty(filename.to_string()));
    }
    if let Some(unsafe_path) = cached
        .iter()
        .find(|c| !is_safe_entry(&c.path) || c.path.is_empty() || c.path.ends_with('/'))
    {
        return Err(BitsError::UnsafePath {
            file: "resources".to_string(),
            entry: unsafe_path.path.clone(),
        });
    }
    if !wasm && cached.is_empty() {
        std::fs::copy(upload, dest).map_err(io)?;
        return Ok(());
    }
    let mut zip = zip::ZipWriter::new(std::fs::File::create(dest).map_err(io)?);
    let options = |mode: u32| {
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode)
    };
    if wasm {
        zip.start_file(WASM_ENTRY, options(0o644))
            .map_err(zip_err)?;
        std::io::copy(&mut std::fs::File::open(upload).map_err(io)?, &mut zip).map_err(io)?;
    } else {
        let mut archive =
            zip::ZipArchive::new(std::fs::File::open(upload).map_err(io)?).map_err(zip_err)?;
        for i in 0..archive.len() {
            zip.raw_copy_file(archive.by_index_raw(i).map_err(zip_err)?)
                .map_err(zip_err)?;
        }
    }
    for cached in cached {
        if uploaded.contains(&cached.path) {
            continue;
        }
        zip.start_file(cached.path.as_str(), options(cached.mode & 0o777))
            .map_err(zip_err)?;
        std::io::copy(
            &mut std::fs::File::open(&cached.file).map_err(io)?,
            &mut zip,
        )
        .map_err(io)?;
    }
    zip.finish().map_err(zip_err)?;
    Ok(())
}

/// A file of a package worth keeping in the resource cache: its hex sha1 and sha256,
/// and the scratch file it was extracted to.
#[derive(Debug)]
pub struct CacheableFile {
    pub sha1: String,
    pub sha256: String,
    pub file: PathBuf,
}

/// Extracts the files of the package zip `package` whose size is within `sizes` into
/// `scratch` (a directory), with their hashes, for the resource cache. Blocking.
pub fn cacheable_files(
    package: &Path,
    sizes: std::ops::RangeInclusive<u64>,
    scratch: &Path,
) -> Result<Vec<CacheableFile>, BitsError> {
    let io = |e: std::io::Error| BitsError::Io(e.to_string());
    let zip_err = |e: zip::result::ZipError| BitsError::Io(e.to_string());
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(package).map_err(io)?).map_err(zip_err)?;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        if entry.is_dir() || !sizes.contains(&entry.size()) {
            continue;
        }
        let path = scratch.join(i.to_string());
        let mut out = std::fs::File::create(&path).map_err(io)?;
        let (mut sha1, mut sha256) = (sha1::Sha1::new(), Sha256::new());
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let read = entry.read(&mut buf).map_err(io)?;
            if read == 0 {
                break;
            }
            sha1.update(&buf[..read]);
            sha256.update(&buf[..read]);
            out.write_all(&buf[..read]).map_err(io)?;
        }
        files.push(CacheableFile {
            sha1: hex::encode(sha1.finalize()),
            sha256: hex::encode(sha256.finalize()),
            file: path,
        });
    }
    Ok(files)
}

/// The files of the zip at `path` (`not_zip` when it does not open), every entry
/// checked to stay inside the directory it unpacks to.
fn zip_files(
    path: &Path,
    filename: &str,
    not_zip: impl Fn() -> BitsError,
) -> Result<Vec<String>, BitsError> {
    let file = std::fs::File::open(path).map_err(|e| BitsError::Io(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|_| not_zip())?;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|_| not_zip())?;
        let name = entry.name();
        if !is_safe_entry(name) || entry.enclosed_name().is_none() {
            return Err(BitsError::UnsafePath {
                file: filename.to_string(),
                entry: name.to_string(),
            });
        }
        if !entry.is_dir() {
            files.push(name.to_string());
        }
    }
    Ok(files)
}

/// Checks that the zip at `path` is a buildpack (CF's contract): safe entries,
/// `bin/detect`, and `bin/compile` or `bin/finalize` (or `bin/supply`, for a buildpack
/// that only supplies).
pub fn validate_buildpack(path: &Path, filename: &str) -> Result<(), BitsError> {
    let files = zip_files(path, filename, || {
        BitsError::NotBuildpackZip(filename.to_string())
    })?;
    let has = |script: &str| files.iter().any(|f| f == script);
    let builds = ["bin/compile", "bin/finalize", "bin/supply"]
        .into_iter()
        .any(has);
    if !has("bin/detect") || !builds {
        return Err(BitsError::NotABuildpack(filename.to_string()));
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
        let dest = dir.path().join("package.zip");
        let result = prepare_package(&upload, &[], &dest, "bits.zip").map(|sha256| {
            let zip = std::fs::read(&dest).unwrap();
            assert_eq!(sha256, hex::encode(Sha256::digest(&zip)));
        });
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
    fn cached_files_join_the_upload_and_big_files_are_cacheable() {
        let dir = tempfile::tempdir().unwrap();
        let cached_file = dir.path().join("cached");
        std::fs::write(&cached_file, vec![b'c'; 5000]).unwrap();
        let cached = |path: &str| CachedFile {
            path: path.to_string(),
            mode: 0o755,
            file: cached_file.clone(),
        };
        let upload = dir.path().join("upload");
        let dest = dir.path().join("package.zip");
        // An empty zip with resources is a package; the upload wins over a resource at
        // the same path.
        std::fs::write(&upload, zip_of(&[])).unwrap();
        prepare_package(&upload, &[cached("lib/big.bin")], &dest, "bits.zip").unwrap();
        std::fs::write(
            &upload,
            zip_of(&[("app.wasm", b"\0asm"), ("lib/big.bin", b"new")]),
        )
        .unwrap();
        prepare_package(
            &upload,
            &[cached("lib/big.bin"), cached("data/x")],
            &dest,
            "bits.zip",
        )
        .unwrap();
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&dest).unwrap()).unwrap();
        let mut read = |name: &str| {
            let mut file = archive.by_name(name).unwrap();
            let mode = file.unix_mode();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            (bytes.len(), mode.map(|m| m & 0o777))
        };
        assert_eq!(read("lib/big.bin").0, 3);
        assert_eq!(read("data/x"), (5000, Some(0o755)));
        let elsewhere = dir.path().join("refused.zip");
        let err = prepare_package(&upload, &[cached("../x")], &elsewhere, "bits.zip").unwrap_err();
        assert!(err.to_string().contains("unsafe path '../x'"), "{err}");

        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let found = cacheable_files(&dest, 4096..=1 << 20, &scratch).unwrap();
        assert_eq!(found.len(), 1, "only data/x is big enough: {found:?}");
        assert_eq!(
            found[0].sha1,
            hex::encode(sha1::Sha1::digest(vec![b'c'; 5000]))
        );
        assert_eq!(std::fs::read(&found[0].file).unwrap().len(), 5000);
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
    fn buildpacks_need_detect_and_a_build_script() {
        let check = |bytes: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bp.zip");
            std::fs::write(&path, bytes).unwrap();
            validate_buildpack(&path, "bp.zip")
        };
        for scripts in [
            &["bin/detect", "bin/compile"][..],
            &["bin/detect", "bin/supply", "bin/finalize", "bin/release"],
            &["bin/detect", "bin/supply"],
        ] {
            let entries: Vec<(&str, &[u8])> =
                scripts.iter().map(|s| (*s, &b"#!/bin/sh"[..])).collect();
            assert_eq!(check(&zip_of(&entries)), Ok(()), "{scripts:?}");
        }
        let not_a_buildpack = BitsError::NotABuildpack("bp.zip".into());
        for entries in [
            &[("bin/compile", &b"x"[..])][..],
            &[("bin/detect", b"x")],
            &[("nested/bin/detect", b"x"), ("nested/bin/compile", b"x")],
            &[],
        ] {
            assert_eq!(check(&zip_of(entries)), Err(not_a_buildpack.clone()));
        }
        assert_eq!(
            check(b"not a zip"),
            Err(BitsError::NotBuildpackZip("bp.zip".into()))
        );
        assert!(matches!(
            check(&zip_of(&[
                ("bin/detect", b"x"),
                ("bin/compile", b"x"),
                ("../evil", b"x")
            ])),
            Err(BitsError::UnsafePath { .. })
        ));
    }

    async fn read_all(blobs: &Blobstore, key: &Key, sha256: &str) -> Result<Vec<u8>, BlobError> {
        let mut blob = blobs.get(key, sha256).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = blob.chunks.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        assert_eq!(blob.size, bytes.len() as u64);
        Ok(bytes)
    }

    /// Puts `data` under `key` as the API does: through a scratch file.
    async fn put(blobs: &Blobstore, key: &Key, data: &[u8]) -> String {
        let tmp = blobs.temp_path();
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data.to_vec()))]);
        let written = blobs.write_stream(&tmp, chunks).await.unwrap();
        blobs.put_file(&tmp, key, &written).await.unwrap();
        blobs.remove_temp(&tmp).await.unwrap();
        written
    }

    #[tokio::test]
    async fn blobs_round_trip_through_the_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let blobs = Blobstore::open(&root, None).await.unwrap();
        // One small blob (a single put) and one that goes up in parts.
        let small = b"\0asm\x01\0\0\0".to_vec();
        let large: Vec<u8> = (0..PART_SIZE * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        for (guid, data) in [("p1", &small), ("p2", &large)] {
            let key = blobs.package_key(guid);
            let written = put(&blobs, &key, data).await;
            assert_eq!(&read_all(&blobs, &key, &written).await.unwrap(), data);
            assert_eq!(blobs.sha256(&key).await.unwrap(), written);
            assert!(root.join("packages").join(format!("{guid}.zip")).is_file());
        }
        let listed: Vec<ObjectMeta> = blobs.list(BlobKind::Package).try_collect().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(blobs.list(BlobKind::Droplet).next().await.is_none());

        let key = blobs.package_key("p1");
        blobs.delete(&key).await.unwrap();
        assert!(matches!(
            read_all(&blobs, &key, "00").await,
            Err(BlobError::NotFound(_))
        ));
        // Deleting what is not there is fine.
        blobs.delete(&key).await.unwrap();
        blobs.delete(&blobs.droplet_key("never")).await.unwrap();
        // Nothing is left behind in scratch.
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn blobs_that_do_not_match_their_sha256_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let blobs = Blobstore::open(&root, None).await.unwrap();
        let large: Vec<u8> = (0..PART_SIZE + 1).map(|i| (i % 253) as u8).collect();
        for (guid, data) in [("d1", b"droplet".to_vec()), ("d2", large)] {
            let key = blobs.droplet_key(guid);
            // An upload whose bytes are not the recorded ones never appears.
            let tmp = blobs.temp_path();
            std::fs::write(&tmp, &data).unwrap();
            let wrong = "ab".repeat(32);
            let refused = blobs.put_file(&tmp, &key, &wrong).await.unwrap_err();
            assert!(
                matches!(refused, BlobError::ChecksumMismatch { .. }),
                "{refused}"
            );
            assert!(matches!(
                blobs.sha256(&key).await,
                Err(BlobError::NotFound(_))
            ));

            // A stored blob changed behind the blobstore's back is an error on read,
            // and its last chunk is never handed out.
            let sha256 = put(&blobs, &key, &data).await;
            let mut corrupt = data.clone();
            corrupt[0] ^= 1;
            std::fs::write(root.join("droplets").join(format!("{guid}.tgz")), &corrupt).unwrap();
            let mut blob = blobs.get(&key, &sha256).await.unwrap();
            let mut served = 0;
            let err = loop {
                match blob.chunks.next().await {
                    Some(Ok(chunk)) => served += chunk.len(),
                    Some(Err(e)) => break e,
                    None => panic!("a corrupt blob was served whole"),
                }
            };
            assert!(served < data.len());
            assert!(
                err.to_string()
                    .contains("does not match its recorded sha256"),
                "{err}"
            );
            assert!(matches!(
                read_all(&blobs, &key, &sha256).await,
                Err(BlobError::ChecksumMismatch { .. })
            ));
        }
    }

    #[test]
    fn keys_follow_the_layout_and_keep_guids_in_one_level() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let blobs = Blobstore {
            store: Arc::new(store),
            scratch: dir.path().join("tmp"),
        };
        assert_eq!(blobs.package_key("g1").as_ref(), "packages/g1.zip");
        assert_eq!(blobs.droplet_key("g1").as_ref(), "droplets/g1.tgz");
        assert_eq!(blobs.buildpack_key("b1").as_ref(), "buildpacks/b1.zip");
        assert_eq!(
            blobs.buildpack_cache_key("a1", "wasm").as_ref(),
            "buildpack_cache/a1/wasm.tgz"
        );
        let sha1 = "ABCDEF0123456789abcdef0123456789abcdef01";
        assert_eq!(
            blobs.resource_key(sha1).unwrap().as_ref(),
            "resources/ab/cd/abcdef0123456789abcdef0123456789abcdef01"
        );
        for bad in [
            "abc",
            "../../../../../../../../../../../../etc/passwd",
            &"g".repeat(40),
        ] {
            assert!(matches!(
                blobs.resource_key(bad),
                Err(BlobError::BadResourceSha1(_))
            ));
        }
        let sneaky = blobs.droplet_key("../../etc/passwd");
        assert_eq!(sneaky.parts().count(), 2, "{sneaky}");
        let sneaky = blobs.buildpack_cache_key("a/../b", "../x");
        assert_eq!(sneaky.parts().count(), 3, "{sneaky}");

        assert_eq!(
            BlobKind::Package
                .guid_of(&blobs.package_key("g1"))
                .as_deref(),
            Some("g1")
        );
        assert_eq!(
            BlobKind::Droplet
                .guid_of(&blobs.droplet_key("g1"))
                .as_deref(),
            Some("g1")
        );
        assert_eq!(
            BlobKind::BuildpackCache
                .guid_of(&blobs.buildpack_cache_key("a1", "wasm"))
                .as_deref(),
            Some("a1")
        );
        assert_eq!(BlobKind::Droplet.guid_of(&blobs.package_key("g1")), None);
        assert_eq!(
            BlobKind::Package.guid_of(&Key::from("packages/x/y.zip")),
            None
        );
        assert_eq!(
            BlobKind::Resource.guid_of(&blobs.resource_key(sha1).unwrap()),
            None
        );
    }

    #[test]
    fn s3_urls_name_a_bucket() {
        assert_eq!(s3_bucket("s3://cc-blobs").unwrap(), "cc-blobs");
        assert_eq!(s3_bucket("s3://cc.blobs-1/").unwrap(), "cc.blobs-1");
        assert!(matches!(
            s3_bucket("/var/blobs"),
            Err(BlobstoreUrlError::NotS3(_))
        ));
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Caps",
            "s3://b/key",
            "s3://-b-",
            &format!("s3://{}", "b".repeat(64)),
        ] {
            assert!(
                matches!(s3_bucket(bad), Err(BlobstoreUrlError::BadBucket(_))),
                "{bad}"
            );
        }
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
