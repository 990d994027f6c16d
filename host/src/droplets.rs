//! The cell's droplet cache: droplets downloaded once, checked against their sha256,
//! and kept unpacked under `<data dir>/droplets/<sha256>/` for every instance of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use wf_buildpacks::{DropletMetadata, DROPLET_APP_DIR, DROPLET_METADATA, DROPLET_WASM};

/// Longest a droplet download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DropletError {
    #[error("droplet sha256 {0:?} is not a hex sha256")]
    BadChecksum(String),
    #[error("downloading the droplet: {0}")]
    Download(String),
    #[error("downloaded droplet has sha256 {actual}, expected {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("unpacking the droplet: {0}")]
    Unpack(String),
    #[error("droplet cache I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// An unpacked droplet.
#[derive(Debug, Clone)]
pub struct Droplet {
    pub dir: PathBuf,
    pub metadata: DropletMetadata,
}

impl Droplet {
    /// The app's wasm.
    pub fn wasm(&self) -> PathBuf {
        self.dir.join(DROPLET_WASM)
    }

    /// The app's other files (preopened read-only for the instance).
    pub fn app_dir(&self) -> PathBuf {
        self.dir.join(DROPLET_APP_DIR)
    }
}

pub struct DropletCache {
    dir: PathBuf,
    http: reqwest::Client,
    /// One fetch at a time per sha256: concurrent instances of one app wait for it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DropletCache {
    pub fn new(dir: PathBuf, http: reqwest::Client) -> DropletCache {
        DropletCache {
            dir,
            http,
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The droplet with `sha256`, downloaded from `uri` unless cached.
    pub async fn fetch(&self, uri: &str, sha256: &str) -> Result<Droplet, DropletError> {
        let sha256 = sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DropletError::BadChecksum(sha256));
        }
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(sha256.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let dir = self.dir.join(&sha256);
        if let Some(droplet) = read_unpacked(&dir).await {
            return Ok(droplet);
        }
        tokio::fs::create_dir_all(&self.dir).await?;
        let tgz = self
            .dir
            .join(format!("{sha256}.tgz.{}", uuid::Uuid::new_v4()));
        let result = self.download_and_unpack(uri, &sha256, &tgz, &dir).await;
        let _ = tokio::fs::remove_file(&tgz).await;
        result
    }

    async fn download_and_unpack(
        &self,
        uri: &str,
        sha256: &str,
        tgz: &Path,
        dir: &Path,
    ) -> Result<Droplet, DropletError> {
        let actual = download(&self.http, uri, tgz).await?;
        if actual != sha256 {
            return Err(DropletError::ChecksumMismatch {
                expected: sha256.to_string(),
                actual,
            });
        }
        // Unpack beside the final place and rename: a crash never leaves half a droplet.
        let staging = self
            .dir
            .join(format!("{sha256}.unpacking.{}", uuid::Uuid::new_v4()));
        let (tgz_path, staging_path) = (tgz.to_path_buf(), staging.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            let metadata = wf_buildpacks::unpack_droplet(&tgz_path, &staging_path)
                .map_err(|e| DropletError::Unpack(e.to_string()))?;
            std::fs::create_dir_all(staging_path.join(DROPLET_APP_DIR))?;
            Ok::<_, DropletError>(metadata)
        })
        .await
        .map_err(|e| DropletError::Unpack(e.to_string()))?;
        let metadata = match unpacked {
            Ok(metadata) => metadata,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                return Err(e);
            }
        };
        let _ = tokio::fs::remove_dir_all(dir).await;
        tokio::fs::rename(&staging, dir).await?;
        Ok(Droplet {
            dir: dir.to_path_buf(),
            metadata,
        })
    }
}

/// Streams `uri` into `dest`; returns the hex sha256 of what it wrote.
pub async fn download(
    http: &reqwest::Client,
    uri: &str,
    dest: &Path,
) -> Result<String, DropletError> {
    let fail = |e: reqwest::Error| DropletError::Download(e.to_string());
    let mut resp = http
        .get(uri)
        .timeout(DOWNLOAD_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fail)?;
    let mut file = tokio::fs::File::create(dest).await?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(fail)? {
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(hex::encode(hasher.finalize()))
}

/// A droplet unpacked earlier, if `dir` holds a complete one.
async fn read_unpacked(dir: &Path) -> Option<Droplet> {
    let json = tokio::fs::read(dir.join(DROPLET_METADATA)).await.ok()?;
    let metadata = serde_json::from_slice(&json).ok()?;
    Some(Droplet {
        dir: dir.to_path_buf(),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves `body` at `/droplet` and counts the requests.
    async fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/droplet",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/droplet", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    fn staged_droplet(dir: &Path) -> (Vec<u8>, String) {
        let zip_path = dir.join("package.zip");
        let mut zip = zip_writer(&zip_path);
        zip_entry(&mut zip, "app.wasm", b"\0asm\x0d\0\x01\0");
        zip.finish().unwrap();
        let staged = wf_buildpacks::stage(
            wf_buildpacks::StageRequest {
                package: &zip_path,
                work_dir: &dir.join("work"),
                buildpacks: vec![],
                skip_detect: false,
                cache_dir: &dir.join("cache"),
                tools_dir: &dir.join("tools"),
                env: vec![],
                limits: wf_buildpacks::Limits {
                    timeout: std::time::Duration::from_secs(60),
                    memory_bytes: 256 << 20,
                },
            },
            &|_: &str| {},
        )
        .unwrap();
        let bytes = std::fs::read(&staged.droplet).unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        (bytes, sha)
    }

    fn zip_writer(path: &Path) -> zip::ZipWriter<std::fs::File> {
        zip::ZipWriter::new(std::fs::File::create(path).unwrap())
    }

    fn zip_entry(zip: &mut zip::ZipWriter<std::fs::File>, name: &str, data: &[u8]) {
        use std::io::Write as _;
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }

    #[tokio::test]
    async fn droplets_are_downloaded_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, sha) = staged_droplet(dir.path());
        let (url, hits) = serve(bytes).await;
        let cache = DropletCache::new(dir.path().join("droplets"), reqwest::Client::new());

        let (a, b) = tokio::join!(cache.fetch(&url, &sha), cache.fetch(&url, &sha));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.dir, b.dir);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(a.wasm().is_file());
        assert!(a.app_dir().is_dir());

        let wrong = "0".repeat(64);
        let err = cache.fetch(&url, &wrong).await.unwrap_err();
        assert!(
            matches!(err, DropletError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(!dir.path().join("droplets").join(&wrong).exists());

        let err = cache.fetch(&url, "../../etc").await.unwrap_err();
        assert!(matches!(err, DropletError::BadChecksum(_)), "{err}");
    }
}
