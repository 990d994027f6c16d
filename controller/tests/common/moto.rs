//! A throwaway S3-compatible server for tests: moto's `moto_server` (PyPI
//! `moto[server]`) on a free loopback port with one empty bucket, killed on drop.
//!
//! Without `moto_server` on PATH, [`MotoS3::start`] returns `None` after printing that
//! the test is skipped, unless `WF_REQUIRE_S3` is set (as in CI): then it panics, so the
//! test fails.

// Not every test binary that shares `common` uses S3.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;
use wf_controller::S3Config;

/// How long `moto_server` gets to accept connections after starting.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const BUCKET: &str = "cc-blobs";
const REGION: &str = "us-east-1";
/// moto accepts any keys.
const KEY_ID: &str = "testing";
const SECRET: &str = "testing";

/// A running `moto_server` with the bucket `cc-blobs`; dropping it kills the server.
pub struct MotoS3 {
    port: u16,
    child: Child,
}

impl MotoS3 {
    /// Starts `moto_server` on a free port of 127.0.0.1 and makes the bucket; see the
    /// module docs for when it returns `None`.
    pub fn start() -> Option<MotoS3> {
        let Some(binary) = find_binary() else {
            if std::env::var_os("WF_REQUIRE_S3").is_some() {
                panic!("WF_REQUIRE_S3 is set but moto_server is not on PATH: install it (pip install 'moto[server]')");
            }
            eprintln!("skipping: moto_server is not on PATH (set WF_REQUIRE_S3 to fail instead)");
            return None;
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("no free port on 127.0.0.1")
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut server = MotoS3 { port, child };
        server.wait_until_up();
        let status = server.request(&format!("PUT /{BUCKET} HTTP/1.1"));
        assert!(status.contains(" 200 "), "creating the bucket: {status}");
        Some(server)
    }

    /// The controller's configuration for the bucket.
    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            endpoint: Some(self.endpoint()),
            region: REGION.into(),
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        }
    }

    /// The bucket itself, for tests that look behind the blobstore's back.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .build()
            .expect("an S3 client for moto");
        Arc::new(store)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_until_up(&mut self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server on port {} exited at startup: {status}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not accept connections on port {} within {STARTUP_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a body-less request (`request_line`) and returns the status line.
    fn request(&self, request_line: &str) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap();
        stream.set_read_timeout(Some(STARTUP_TIMEOUT)).unwrap();
        write!(
            stream,
            "{request_line}\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.lines().next().unwrap_or_default().to_string()
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
}
