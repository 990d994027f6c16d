//! The staging sandbox: build tools and custom buildpack scripts run as native
//! processes under `bwrap` (bubblewrap), each in fresh namespaces that see only
//!
//! - the system's programs and libraries, read-only (`/usr`, `/bin`, `/lib*`, and the
//!   few files of `/etc` that programs need to run and resolve names);
//! - the app's build directory at `/tmp/app`, its dependencies at `/tmp/deps` and the
//!   running buildpack's cache at `/tmp/cache`, read-write;
//! - what a buildpack mounts on purpose: its own scripts, read-only at
//!   `/tmp/buildpack`, and the cell's cached tools (compilers the buildpacks installed).
//!
//! Nothing else of the host is there: not the cell's data directory (other apps'
//! packages and droplets), its configuration or its secrets, nor the host's `/root`,
//! `/home`, `/proc` of other processes or `/dev` devices beyond the basic ones. The
//! network is shared (buildpacks fetch dependencies, as in CF). Every command of one
//! staging shares a deadline and a memory limit: a cgroup's `memory.max` where the cell
//! may create cgroups (v2, or v1's memory controller), else an RSS watchdog over the
//! staging's processes. A command that passes either is killed with its whole process
//! tree, and staging fails with the reason.

use std::ffi::{CString, OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::StagingError;

/// Where the app's files are inside the sandbox (and every command's working directory).
pub const APP: &str = "/tmp/app";
/// Where the running buildpack's slice of the app's buildpack cache is.
pub const CACHE: &str = "/tmp/cache";
/// Where the buildpacks' dependency directories (`<index>/`) are.
pub const DEPS: &str = "/tmp/deps";
/// Where a custom buildpack's own files are (read-only).
pub const BUILDPACK: &str = "/tmp/buildpack";
/// `$HOME` inside the sandbox: an empty scratch directory.
pub const HOME: &str = "/home/vcap";

/// The system paths every sandbox sees read-only, where they exist.
const SYSTEM_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
];

/// How often the watchdog checks the deadline and memory.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Limits of one staging, over all of its commands.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time for the whole staging.
    pub timeout: Duration,
    /// Memory of all its processes together.
    pub memory_bytes: u64,
}

/// The sandbox of one staging: its deadline, its memory limit, and where its
/// directories are on the host.
pub struct Sandbox {
    bwrap: Option<PathBuf>,
    deadline: Instant,
    limits: Limits,
    cgroup: Option<Cgroup>,
    /// The host directory mounted as `$HOME` and `/tmp` scratch space.
    scratch: PathBuf,
}

/// A command to run in the sandbox: program, arguments, environment and mounts.
pub struct SandboxCommand<'a> {
    sandbox: &'a Sandbox,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    /// (host path, sandbox path, writable)
    mounts: Vec<(PathBuf, PathBuf, bool)>,
    /// What the command is, for error messages (`bin/detect of my_buildpack`).
    what: String,
}

impl Sandbox {
    /// A sandbox whose scratch space lives under `scratch` (created), with `limits`
    /// counted from now.
    pub fn new(scratch: &Path, limits: Limits) -> Result<Sandbox, StagingError> {
        std::fs::create_dir_all(scratch.join("home"))
            .and_then(|()| std::fs::create_dir_all(scratch.join("tmp")))
            .map_err(|e| crate::io_error("creating", "the sandbox's scratch space", e))?;
        Ok(Sandbox {
            bwrap: find_bwrap(),
            deadline: Instant::now() + limits.timeout,
            limits,
            cgroup: Cgroup::create(limits.memory_bytes),
            scratch: scratch.to_path_buf(),
        })
    }

    /// A command running `program` (a path inside the sandbox, or a name on `PATH`).
    pub fn command(
        &self,
        program: impl AsRef<OsStr>,
        what: impl Into<String>,
    ) -> SandboxCommand<'_> {
        SandboxCommand {
            sandbox: self,
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            what: what.into(),
        }
    }

    fn time_left(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now())
    }

    fn timed_out(&self) -> StagingError {
        StagingError::Staging(format!(
            "staging exceeded its time limit of {}s and was stopped",
            self.limits.timeout.as_secs()
        ))
    }

    fn out_of_memory(&self) -> StagingError {
        StagingError::Staging(format!(
            "staging exceeded its memory limit of {} MB and was stopped",
            self.limits.memory_bytes >> 20
        ))
    }
}

impl<'a> SandboxCommand<'a> {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets `name` in the command's environment (which starts with only `PATH`,
    /// `HOME`, `TMPDIR` and `LANG`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn envs<'e>(mut self, vars: impl IntoIterator<Item = &'e (String, String)>) -> Self {
        self.env.extend(vars.into_iter().cloned());
        self
    }

    /// Mounts host `dir` at `inside`, read-only.
    pub fn mount_ro(mut self, dir: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.mounts.push((dir.into(), inside.into(), false));
        self
    }

    /// Mounts host `dir` at `inside`, writable.
    pub fn mount_rw(mut self, dir: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.mounts.push((dir.into(), inside.into(), true));
        self
    }

    /// Runs the command, sending each line of its stdout and stderr to `log`; fails
    /// when it exits non-zero (with the last lines it printed), is killed, or passes a
    /// limit.
    pub fn run(self, log: &(dyn Fn(&str) + Sync)) -> Result<(), StagingError> {
        let what = self.what.clone();
        match self.spawn_and_wait(Output::Log(log))? {
            (status, _) if status.success() => Ok(()),
            (status, _) => Err(StagingError::Staging(format!("{what} failed ({status})"))),
        }
    }

    /// Runs the command and returns its exit status and stdout (its stderr goes to `log`).
    pub fn output(
        self,
        log: &(dyn Fn(&str) + Sync),
    ) -> Result<(std::process::ExitStatus, String), StagingError> {
        self.spawn_and_wait(Output::Capture(log))
    }

    fn spawn_and_wait(
        self,
        output: Output<'_>,
    ) -> Result<(std::process::ExitStatus, String), StagingError> {
        let sandbox = self.sandbox;
        if sandbox.time_left().is_none() {
            return Err(sandbox.timed_out());
        }
        let mut command = self.build()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cgroup) = &sandbox.cgroup {
            let procs = cgroup.procs.clone();
            // SAFETY: between fork and exec only async-signal-safe calls: open, write
            // and close of a path prepared before the fork.
            unsafe {
                command.pre_exec(move || join_cgroup(&procs));
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| StagingError::Staging(format!("cannot start {}: {e}", self.what)))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::scope(|scope| {
            let log = output.log();
            let errors = scope.spawn(move || forward_lines(stderr, log));
            let captured = match output {
                Output::Log(log) => scope.spawn(move || {
                    forward_lines(stdout, log);
                    String::new()
                }),
                Output::Capture(_) => scope.spawn(move || {
                    let mut text = String::new();
                    let _ = BufReader::new(stdout)
                        .take(1 << 20)
                        .read_to_string(&mut text);
                    text
                }),
            };
            let status = watch(sandbox, &mut child);
            let _ = errors.join();
            let stdout = captured.join().unwrap_or_default();
            status.map(|status| (status, stdout))
        })
    }

    /// The `bwrap` invocation (or, where the cell has no bubblewrap, an error).
    fn build(&self) -> Result<Command, StagingError> {
        let sandbox = self.sandbox;
        let bwrap = sandbox.bwrap.as_ref().ok_or_else(|| {
            StagingError::Staging(
                "this cell cannot run build tools: bubblewrap (`bwrap`) is not installed \
                 (apt-get install bubblewrap)"
                    .to_string(),
            )
        })?;
        let mut command = Command::new(bwrap);
        command.env_clear();
        command.args([
            "--unshare-all",
            "--share-net",
            // As `vcap` (uid 2000, CF's staging user) in a user namespace, with no
            // capabilities even when the cell runs as root.
            "--unshare-user",
            "--uid",
            "2000",
            "--gid",
            "2000",
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]);
        for path in SYSTEM_PATHS.iter().filter(|p| Path::new(p).exists()) {
            match std::fs::read_link(path) {
                // `/lib` -> `usr/lib` on merged-/usr systems: keep the symlink.
                Ok(target) if !path.starts_with("/etc/") => {
                    command.arg("--symlink").arg(target).arg(path)
                }
                _ => command.args(["--ro-bind", path, path]),
            };
        }
        command
            .arg("--bind")
            .arg(sandbox.scratch.join("tmp"))
            .arg("/tmp")
            .arg("--bind")
            .arg(sandbox.scratch.join("home"))
            .arg(HOME);
        for (host, inside, writable) in &self.mounts {
            command
                .arg(if *writable { "--bind" } else { "--ro-bind" })
                .arg(host)
                .arg(inside);
        }
        command.args(["--chdir", APP]);
        let base = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", HOME),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
        ];
        for (name, value) in base
            .iter()
            .map(|(n, v)| (*n, *v))
            .chain(self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            command.arg("--setenv").arg(name).arg(value);
        }
        command.arg("--").arg(&self.program).args(&self.args);
        Ok(command)
    }
}

enum Output<'l> {
    Log(&'l (dyn Fn(&str) + Sync)),
    Capture(&'l (dyn Fn(&str) + Sync)),
}

impl<'l> Output<'l> {
    fn log(&self) -> &'l (dyn Fn(&str) + Sync) {
        match self {
            Output::Log(log) | Output::Capture(log) => *log,
        }
    }
}

/// Sends each line read from `from` to `log` (lossily decoded, long lines cut).
fn forward_lines(from: impl Read, log: &(dyn Fn(&str) + Sync)) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().take(64 * 1024).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                log(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

/// Waits for `child`, killing its process group when the deadline passes or the
/// staging's memory goes over its limit.
fn watch(sandbox: &Sandbox, child: &mut Child) -> Result<std::process::ExitStatus, StagingError> {
    let pgid = child.id() as i32;
    let kill = |child: &mut Child| {
        // SAFETY: kill(2) on the process group the child leads.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    };
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| StagingError::Staging(format!("waiting for a build process: {e}")))?
        {
            if sandbox.cgroup.as_ref().is_some_and(Cgroup::oom_killed) {
                return Err(sandbox.out_of_memory());
            }
            return Ok(status);
        }
        if sandbox.time_left().is_none() {
            kill(child);
            return Err(sandbox.timed_out());
        }
        if sandbox.cgroup.is_none() && group_rss(pgid) > sandbox.limits.memory_bytes {
            kill(child);
            return Err(sandbox.out_of_memory());
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
}

/// The resident memory of the processes in group `pgid`, from `/proc`.
fn group_rss(pgid: i32) -> u64 {
    let page = 4096u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the `(comm)`, which may itself hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let group: i32 = fields.get(2)?.parse().ok()?;
            let rss: u64 = fields.get(21)?.parse().ok()?;
            (group == pgid).then_some(rss * page)
        })
        .sum()
}

/// Whether this machine can run sandboxed commands (bubblewrap is installed).
pub fn available() -> bool {
    find_bwrap().is_some()
}

/// `bwrap` on `PATH`, if installed.
fn find_bwrap() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bwrap"))
            .find(|path| path.is_file())
    })
}

/// A memory cgroup made for one staging, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    /// `<dir>/cgroup.procs`, ready for `pre_exec`.
    procs: CString,
    v2: bool,
}

impl Cgroup {
    /// Creates a cgroup limited to `bytes` under the cell's own cgroup (v2) or the v1
    /// memory hierarchy, or `None` where the cell may not.
    fn create(bytes: u64) -> Option<Cgroup> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "wf-staging-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (dir, limit_file, v2) = cgroup_parent().map(|(parent, v2)| {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            (parent.join(&name), file, v2)
        })?;
        std::fs::create_dir(&dir).ok()?;
        let cgroup = Cgroup {
            procs: CString::new(
                dir.join("cgroup.procs")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
            .ok()?,
            dir,
            v2,
        };
        std::fs::write(cgroup.dir.join(limit_file), bytes.to_string()).ok()?;
        if !v2 {
            // Count swap too where the kernel accounts it, so swapping is no way out.
            let _ = std::fs::write(
                cgroup.dir.join("memory.memsw.limit_in_bytes"),
                bytes.to_string(),
            );
        }
        Some(cgroup)
    }

    /// Whether the kernel killed a process of this cgroup for memory.
    fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let (k, v) = line.split_once(' ')?;
                    (k == key).then(|| v.trim().parse::<u64>().unwrap_or(0))
                })
            })
            .is_some_and(|kills| kills > 0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The processes are gone by now (each command is waited for); the kernel
        // removes an empty cgroup on rmdir.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Where to make staging cgroups: the v2 cgroup this process is in, if it delegates
/// the memory controller, else the v1 memory hierarchy's cgroup of this process.
fn cgroup_parent() -> Option<(PathBuf, bool)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                let dir = Path::new(root).join(path);
                let delegated = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
                if delegated {
                    return Some((dir, true));
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path);
            if dir.join("memory.limit_in_bytes").exists() {
                return Some((dir, false));
            }
        }
    }
    None
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`.
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: plain syscalls on a valid NUL-terminated path and a stack buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if written != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(dir: &Path, timeout: Duration, memory_mb: u64) -> Sandbox {
        Sandbox::new(
            &dir.join("scratch"),
            Limits {
                timeout,
                memory_bytes: memory_mb << 20,
            },
        )
        .unwrap()
    }

    fn lines_of(f: impl FnOnce(&(dyn Fn(&str) + Sync))) -> Vec<String> {
        let lines = std::sync::Mutex::new(Vec::new());
        f(&|line: &str| lines.lock().unwrap().push(line.to_string()));
        lines.into_inner().unwrap()
    }

    /// The tests below need bubblewrap; CI installs it. Where it is missing, the
    /// command fails with the install hint, which is what this checks instead.
    fn bwrap_or_hint(result: &Result<(), StagingError>) -> bool {
        if find_bwrap().is_some() {
            return true;
        }
        assert!(result
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("bubblewrap"));
        false
    }

    #[test]
    fn commands_see_the_app_but_not_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("main.c"), "int main;").unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret").unwrap();
        let sandbox = sandbox(dir.path(), Duration::from_secs(30), 512);
        let script = format!(
            "ls {APP}; echo made > {APP}/out; cat {} || echo no-secret; ls /root 2>&1 | head -1; echo home=$HOME; echo err >&2; id -u; grep CapEff /proc/self/status",
            secret.display()
        );
        let mut result = Ok(());
        let lines = lines_of(|log| {
            result = sandbox
                .command("/bin/sh", "the test script")
                .args(["-c", &script])
                .mount_rw(&app, APP)
                .run(log);
        });
        if !bwrap_or_hint(&result) {
            return;
        }
        result.unwrap();
        assert!(lines.contains(&"main.c".to_string()), "{lines:?}");
        assert!(lines.contains(&"no-secret".to_string()), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("s3cret")), "{lines:?}");
        assert!(lines.contains(&format!("home={HOME}")), "{lines:?}");
        assert!(lines.contains(&"err".to_string()), "{lines:?}");
        assert!(
            lines.contains(&"2000".to_string()),
            "runs as vcap: {lines:?}"
        );
        assert!(
            lines.contains(&"CapEff:\t0000000000000000".to_string()),
            "no capabilities: {lines:?}"
        );
        assert_eq!(std::fs::read_to_string(app.join("out")).unwrap(), "made\n");
    }

    #[test]
    fn failures_time_limits_and_memory_limits_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        let run = |sandbox: &Sandbox, script: &str| {
            sandbox
                .command("/bin/sh", "bin/compile")
                .args(["-c", script])
                .mount_rw(&app, APP)
                .run(&|_| {})
        };
        let fast = sandbox(dir.path(), Duration::from_secs(30), 256);
        let failed = run(&fast, "exit 3");
        if !bwrap_or_hint(&failed) {
            return;
        }
        assert!(failed
            .unwrap_err()
            .to_string()
            .contains("bin/compile failed (exit status: 3)"),);

        let slow = sandbox(dir.path(), Duration::from_millis(300), 256);
        let started = Instant::now();
        let err = run(&slow, "sleep 30").unwrap_err().to_string();
        assert!(err.contains("time limit of 0s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let small = sandbox(dir.path(), Duration::from_secs(30), 32);
        // Grows a shell variable to ~256 MB.
        let err = run(&small, "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done")
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory limit of 32 MB"), "{err}");
    }
}
