//! The shared end-to-end harness: starts the real platform (`wfd dev`) as a child
//! process on ephemeral ports, drives it with the real `wf` CLI, and reaches apps
//! through the router, as a user would.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The admin password every test platform is started with.
pub const ADMIN_PASSWORD: &str = "admin-test-password";
/// The secret of UAA's `admin` client on test platforms.
pub const ADMIN_CLIENT_SECRET: &str = "admin-client-test-secret";
/// The apps domain of test platforms.
pub const APPS_DOMAIN: &str = "apps.test.local";
/// How long a `wfd` process may take to report that it serves.
const STARTUP: Duration = Duration::from_secs(120);

/// Path of a binary of this workspace (`wf`, `wfd`), built by `cargo build --bins`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// Where the cells of test platforms install buildpack tools (componentize-js,
/// componentize-py, ...): `target/buildpack-tools`, shared by all of them and kept
/// across runs, unless `WF_BUILDPACK_TOOLS_DIR` names another place.
fn buildpack_tools_dir() -> OsString {
    std::env::var_os("WF_BUILDPACK_TOOLS_DIR").unwrap_or_else(|| {
        let profile_dir = binary("wfd")
            .parent()
            .map(Path::to_path_buf)
            .expect("wfd lives in target/<profile>");
        profile_dir
            .parent()
            .unwrap_or(&profile_dir)
            .join("buildpack-tools")
            .into_os_string()
    })
}

/// One `wfd` process of a test platform, with its standard output's lines.
pub struct Process {
    pub name: String,
    args: Vec<OsString>,
    child: Child,
    /// Closing it stops the process (`--stop-on-stdin-close`).
    stdin: Option<ChildStdin>,
    /// In a mutex only so that a shared platform can live in a static.
    lines: Mutex<mpsc::Receiver<String>>,
}

impl Process {
    /// Starts `wfd args` (with `--stop-on-stdin-close` added).
    pub fn start(name: &str, args: Vec<OsString>) -> Process {
        Process::spawn(name, args, None)
    }

    /// [`Process::start`] at log level `rust_log` (`RUST_LOG`), with all it writes to
    /// its standard output and standard error kept in the file `log` as well (e.g. to
    /// look for secrets in it). A restart logs as [`Process::start`] does.
    pub fn start_logged(name: &str, args: Vec<OsString>, rust_log: &str, log: &Path) -> Process {
        Process::spawn(name, args, Some((rust_log, log)))
    }

    fn spawn(name: &str, args: Vec<OsString>, logged: Option<(&str, &Path)>) -> Process {
        let rust_log = match logged {
            Some((level, _)) => level.to_string(),
            None => std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string()),
        };
        let log = logged.map(|(_, path)| {
            std::fs::File::create(path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
        });
        let stderr = match &log {
            Some(file) => Stdio::from(file.try_clone().expect("log file handle")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(binary("wfd"))
            .args(&args)
            .arg("--stop-on-stdin-close")
            .env("WF_BUILDPACK_TOOLS_DIR", buildpack_tools_dir())
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting wfd {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("wfd stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(file) = &mut log {
                    let _ = writeln!(file, "{line}");
                }
                if tx.send(line).is_err() && log.is_none() {
                    break;
                }
            }
        });
        Process {
            name: name.to_string(),
            args,
            child,
            stdin,
            lines: Mutex::new(lines),
        }
    }

    /// The rest of the first output line that starts with `prefix`, waiting up to `within`.
    pub fn line_after(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "wfd {} did not print {prefix:?} within {within:?}",
                    self.name
                ),
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process, e.g. to freeze it as a
    /// network partition would cut it off.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} wfd {} failed", self.name);
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same command again (after [`Process::kill`] or [`Process::stop`]).
    pub fn restart(&mut self) {
        self.kill();
        *self = Process::start(&self.name, self.args.clone());
    }

    /// The `wfd` arguments it was started with (without `--stop-on-stdin-close`).
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// The process id, e.g. to read its memory and descriptors from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory (KiB) and open descriptors, from `/proc`.
    pub fn rss_kib_and_fds(&self) -> (u64, usize) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .count();
        (rss, fds)
    }

    /// Whether the process has ended (by itself, or killed).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills the process and starts it again with `args`, which later restarts reuse:
    /// e.g. the same component pointed at another database.
    pub fn restart_with(&mut self, args: Vec<OsString>) {
        self.kill();
        *self = Process::start(&self.name, args);
    }

    /// Asks the process to stop and waits for it, killing it after `within`; false if
    /// it had to be killed.
    pub fn stop(&mut self, within: Duration) -> bool {
        self.stdin.take();
        if self.exits_within(within) {
            return true;
        }
        self.kill();
        false
    }

    /// Whether the process ends (by itself or as asked) within `within`.
    pub fn exits_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stdin.take();
        self.kill();
    }
}

/// A running platform: `wfd dev`, or one `wfd` process per component
/// ([`crate::distributed`]). Dropping it stops the platform.
pub struct Platform {
    pub processes: Vec<Process>,
    pub data_dir: PathBuf,
    pub api_url: String,
    pub router_addr: SocketAddr,
    // Keeps a temporary data dir alive as long as the platform.
    _temp: Option<tempfile::TempDir>,
}

impl Platform {
    /// The platform shared by the tests of one test binary; tests stay independent by
    /// working in an org and space of their own ([`Platform::user`]).
    pub fn shared() -> &'static Platform {
        static SHARED: OnceLock<Platform> = OnceLock::new();
        SHARED.get_or_init(Platform::start)
    }

    /// A new platform on a fresh data dir.
    pub fn start() -> Platform {
        Platform::start_with(&[])
    }

    /// A new platform on a fresh data dir, with `extra` arguments for `wfd dev` (e.g.
    /// `--backend-ca`).
    pub fn start_with(extra: &[OsString]) -> Platform {
        let temp = tempfile::tempdir().expect("temp data dir");
        let mut platform = Platform::start_on_with(temp.path(), extra);
        platform._temp = Some(temp);
        platform
    }

    /// A new `wfd dev` on `data_dir` (which may hold a previous platform's state).
    pub fn start_on(data_dir: &Path) -> Platform {
        Platform::start_on_with(data_dir, &[])
    }

    /// [`Platform::start_with`], its `wfd dev` logging at `rust_log` into `log` (see
    /// [`Process::start_logged`]).
    pub fn start_logged(extra: &[OsString], rust_log: &str, log: &Path) -> Platform {
        let temp = tempfile::tempdir().expect("temp data dir");
        let mut platform = Platform::launch(temp.path(), extra, Some((rust_log, log)));
        platform._temp = Some(temp);
        platform
    }

    fn start_on_with(data_dir: &Path, extra: &[OsString]) -> Platform {
        Platform::launch(data_dir, extra, None)
    }

    fn launch(data_dir: &Path, extra: &[OsString], logged: Option<(&str, &Path)>) -> Platform {
        let mut args: Vec<OsString> = vec![
            "dev".into(),
            "--data-dir".into(),
            data_dir.into(),
            "--api-port".into(),
            "0".into(),
            "--router-port".into(),
            "0".into(),
            "--apps-domain".into(),
            APPS_DOMAIN.into(),
            "--admin-password".into(),
            ADMIN_PASSWORD.into(),
            "--admin-client-secret".into(),
            ADMIN_CLIENT_SECRET.into(),
            "--sync-interval".into(),
            "2".into(),
        ];
        args.extend_from_slice(extra);
        let dev = Process::spawn("dev", args, logged);
        let api_url = dev.line_after("api: ", STARTUP);
        let router = dev.line_after("router: http://", STARTUP);
        let router_addr = router
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .parse()
            .expect("router address");
        Platform {
            processes: vec![dev],
            data_dir: data_dir.to_path_buf(),
            api_url,
            router_addr,
            _temp: None,
        }
    }

    /// A platform made of `processes`, reached at `api_url` and `router_addr`.
    pub fn of_processes(
        processes: Vec<Process>,
        data_dir: tempfile::TempDir,
        api_url: String,
        router_addr: SocketAddr,
    ) -> Platform {
        Platform {
            processes,
            data_dir: data_dir.path().to_path_buf(),
            api_url,
            router_addr,
            _temp: Some(data_dir),
        }
    }

    /// The process called `name`.
    pub fn process(&mut self, name: &str) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Stops the platform the way an operator would (it closes each process's stdin,
    /// which `--stop-on-stdin-close` treats like Ctrl-C), waiting for them to exit.
    pub fn stop(&mut self) {
        for process in self.processes.iter_mut().rev() {
            assert!(
                process.stop(Duration::from_secs(20)),
                "wfd {} did not stop within 20 s of being asked to",
                process.name
            );
        }
    }

    /// A `wf` user logged in as admin, with an org and space of their own targeted.
    pub fn user(&self) -> Wf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let wf = Wf::new(&format!("org-{n}"), &format!("space-{n}"));
        wf.login(self);
        wf.ok(&["create-org", &wf.org]);
        wf.ok(&["create-space", &wf.space, "-o", &wf.org]);
        wf.ok(&["target", "-o", &wf.org, "-s", &wf.space]);
        wf
    }

    /// Creates UAA user `username` through SCIM `/Users` with `admin`'s token (which
    /// holds scim.write); returns the user's id (their guid in the controller).
    pub fn create_uaa_user(&self, admin: &Wf, username: &str, password: &str) -> String {
        let body = serde_json::json!({
            "userName": username,
            "password": password,
            "emails": [{"value": format!("{username}@example.test"), "primary": true}],
        });
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/Users", self.api_url))
            .header("Authorization", admin.token())
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .expect("SCIM create user");
        let status = resp.status().as_u16();
        let user: serde_json::Value = resp.json().unwrap_or(serde_json::Value::Null);
        assert_eq!(status, 201, "creating UAA user {username}: {user}");
        user["id"].as_str().expect("SCIM user id").to_string()
    }

    /// GET `path` on the app at `host` (without the apps domain) through the router.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        http_get(self.router_addr, &format!("{host}.{APPS_DOMAIN}"), path)
    }

    /// The `VCAP_SERVICES` of an app of the `env` fixture (which answers `/` with its
    /// environment as JSON).
    pub fn vcap_services(&self, host: &str) -> serde_json::Value {
        let resp = self.get(host, "/");
        assert_eq!(resp.status, 200, "{resp:?}");
        let env: serde_json::Value = serde_json::from_str(&resp.body).expect("env as JSON");
        serde_json::from_str(env["VCAP_SERVICES"].as_str().expect("VCAP_SERVICES"))
            .expect("VCAP_SERVICES as JSON")
    }

    /// Polls `GET path` through the router until `accept` holds, or panics after
    /// `within` with the last response.
    pub fn wait_for(
        &self,
        host: &str,
        path: &str,
        within: Duration,
        accept: impl Fn(&HttpResponse) -> bool,
    ) -> HttpResponse {
        let deadline = Instant::now() + within;
        loop {
            let resp = self.get(host, path);
            if accept(&resp) {
                return resp;
            }
            if Instant::now() > deadline {
                panic!("{host}{path} did not answer as expected within {within:?}; last: {resp:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `wf` CLI with a config home of its own, working in one org and space.
pub struct Wf {
    home: tempfile::TempDir,
    pub org: String,
    pub space: String,
}

impl Wf {
    pub fn new(org: &str, space: &str) -> Wf {
        Wf {
            home: tempfile::tempdir().expect("WF_HOME"),
            org: org.to_string(),
            space: space.to_string(),
        }
    }

    /// Points at `platform` and logs in as admin (the org and space are not targeted).
    pub fn login(&self, platform: &Platform) {
        self.ok(&["api", &platform.api_url]);
        self.ok(&["auth", "admin", ADMIN_PASSWORD]);
    }

    /// Points at `platform` and logs in as `user` (a UAA user, e.g. from
    /// [`Platform::create_uaa_user`]).
    pub fn login_as(&self, platform: &Platform, user: &str, password: &str) {
        self.ok(&["api", &platform.api_url]);
        self.ok(&["auth", user, password]);
    }

    /// A raw API request with this user's token, as any CF client could send it;
    /// returns the status and the JSON body (`null` if there is none).
    pub fn api(
        &self,
        platform: &Platform,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut req = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", platform.api_url))
            .header("Authorization", self.token())
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().expect("API request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(serde_json::Value::Null))
    }

    /// Pushes fixture app `fixture` as `name`; returns the push output.
    pub fn push_fixture(&self, name: &str, fixture: &str) -> String {
        let wasm = crate::fixtures::fixture_wasm(fixture);
        self.ok(&["push", name, "-p", wasm.to_str().expect("utf-8 path")])
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("wf"))
            .args(args)
            .env("WF_HOME", self.home.path())
            .stdin(Stdio::null())
            .output()
            .expect("running wf")
    }

    /// Runs `wf args` answering its prompts with `input`, asserting success; returns
    /// stdout.
    pub fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        let mut child = Command::new(binary("wf"))
            .args(args)
            .env("WF_HOME", self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting wf");
        if let Some(mut stdin) = child.stdin.take() {
            // wf may exit before reading everything; that shows in its status.
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child.wait_with_output().expect("running wf");
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "wf {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" "),
            out.status
        );
        stdout
    }

    /// Starts `wf args` in the background with piped stdout (for `wf logs APP`).
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(binary("wf"))
            .args(args)
            .env("WF_HOME", self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting wf")
    }

    /// Runs `wf args`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "wf {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" "),
            out.status
        );
        stdout
    }

    /// Runs `wf args`, asserting failure; returns stdout and stderr together.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = texts(&out);
        assert!(
            !out.status.success(),
            "wf {} succeeded but should have failed:\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" ")
        );
        format!("{stdout}{stderr}")
    }

    /// The current access token, as `bearer <jwt>`.
    pub fn token(&self) -> String {
        self.ok(&["oauth-token"]).trim().to_string()
    }

    /// The guid of app `name` in the targeted space.
    pub fn app_guid(&self, name: &str) -> String {
        self.ok(&["app", name, "--guid"]).trim().to_string()
    }

    /// `wf curl path`, parsed as JSON.
    pub fn curl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["curl"];
        all.extend_from_slice(args);
        let body = self.ok(&all);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("wf curl {args:?}: {e}: {body}"))
    }
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// 0 when the connection failed.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`, as curl would send it.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> HttpResponse {
    http_get_with(addr, host, path, &[])
}

/// [`http_get`] with extra `headers`.
pub fn http_get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let failed = |e: std::io::Error| HttpResponse {
        status: 0,
        headers: vec![],
        body: e.to_string(),
    };
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wf-tests\r\n{extra}Connection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return failed(e);
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        return failed(e);
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi");
        assert_eq!(
            (r.status, r.body.as_str(), r.header("x-a")),
            (200, "hi", Some("b"))
        );
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!((r.status, r.body.as_str()), (404, "abcde"));
    }
}
