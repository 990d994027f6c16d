//! Starts the openbrokerapi test broker (`osb_broker.py` beside this file) for the
//! controller's managed-services test and the end-to-end one (each includes this file
//! with `#[path]`): finds a Python that has openbrokerapi (`WF_OSB_PYTHON`, else
//! `python3`; without one the tests skip, unless `WF_REQUIRE_OSB` is set), runs the
//! broker on a free loopback port, and reads back the requests it was sent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Python that can import openbrokerapi, or `None` (the test skips).
pub fn python() -> Option<String> {
    let candidates = std::env::var("WF_OSB_PYTHON")
        .into_iter()
        .chain(["python3".to_string()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import openbrokerapi"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    assert!(
        std::env::var_os("WF_REQUIRE_OSB").is_none(),
        "WF_REQUIRE_OSB is set but no Python with openbrokerapi was found (WF_OSB_PYTHON)"
    );
    eprintln!("skipping: no Python with openbrokerapi (pip install openbrokerapi; WF_OSB_PYTHON)");
    None
}

/// The test broker in one mode (`good`, `slow`, `garbage`: see `osb_broker.py`).
pub struct Broker {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Broker {
    /// Runs `script` (`osb_broker.py`) with `python` and waits until it listens.
    pub fn start(python: &str, script: &Path, mode: &str) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log =
            std::env::temp_dir().join(format!("wf-osb-broker-{}-{port}.log", std::process::id()));
        std::fs::write(&log, "").unwrap();
        let child = Command::new(python)
            .arg(script)
            .args([port.to_string(), mode.to_string()])
            .env("BROKER_LOG", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the test broker did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Broker {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// The requests the broker got so far, one `METHOD PATH` a line.
    pub fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it got `line`.
    pub fn got(&self, line: &str) -> bool {
        self.requests().lines().any(|l| l == line)
    }
}
