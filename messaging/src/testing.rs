//! A throwaway `nats-server` for tests, on a free loopback port, killed on drop.
//!
//! Without `nats-server` on the machine, [`NatsServer::start`] returns `None` after
//! printing that the test is skipped, unless `WF_REQUIRE_NATS` is set (as in CI): then
//! it panics, so the test fails.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `nats-server` gets to accept connections after starting.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `nats-server`; dropping it kills the server.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    args: Vec<String>,
    child: Child,
}

impl NatsServer {
    /// Starts `nats-server` on a free port of 127.0.0.1; see the module docs for when
    /// it returns `None`.
    pub fn start() -> Option<NatsServer> {
        Self::start_with_args(&[])
    }

    /// Like [`NatsServer::start`], with extra `nats-server` flags (`--user`, `--pass`...).
    pub fn start_with_args(args: &[&str]) -> Option<NatsServer> {
        let Some(binary) = nats_server_binary() else {
            if std::env::var_os("WF_REQUIRE_NATS").is_some() {
                panic!("WF_REQUIRE_NATS is set but nats-server is not on PATH: install it (apt-get install nats-server)");
            }
            eprintln!("skipping: nats-server is not on PATH (set WF_REQUIRE_NATS to fail instead)");
            return None;
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("no free port on 127.0.0.1")
            .port();
        let args = args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let child = spawn(&binary, port, &args);
        Some(NatsServer {
            binary,
            port,
            args,
            child,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server and starts a new one on the same port, returning once it
    /// accepts connections: clients see a disconnect and reconnect.
    pub fn restart(&mut self) {
        kill(&mut self.child);
        self.child = spawn(&self.binary, self.port, &self.args);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// `nats-server` on PATH, or in /usr/sbin where Debian puts it (outside a user's PATH).
pub fn nats_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts the server and waits until it accepts connections.
fn spawn(binary: &Path, port: u16, args: &[String]) -> Child {
    let mut child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("nats-server on port {port} exited at startup: {status}");
        }
        if Instant::now() > deadline {
            kill(&mut child);
            panic!(
                "nats-server did not accept connections on port {port} within {STARTUP_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
