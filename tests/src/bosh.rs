//! A BOSH director for tests: a real `nats-server`, `wfd director` with the local CPI
//! (VMs are process trees on this machine, each on its own loopback address of a /24
//! the test picks) or the netns CPI (each VM also in a network namespace, on a bridge,
//! in `10.244.<n>.0/24`; root only), the `wf` release built once per test binary from `bosh/release`
//! with this build's `wfd`, and the local stemcell and a cloud config uploaded. Dropping
//! it kills every VM's process tree, then the director and NATS.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wf_messaging::testing::NatsServer;

use crate::distributed::free_port;
use crate::platform::{binary, http_get, HttpResponse, Process};

const STARTUP: Duration = Duration::from_secs(60);
/// The director user's password in tests.
pub const PASSWORD: &str = "director-test-password";

/// Timers short enough for tests.
pub struct Timers {
    /// Seconds between agent heartbeats.
    pub heartbeat: f64,
    /// Seconds of silence after which an agent is unresponsive.
    pub unresponsive_after: f64,
    pub resurrector: bool,
    /// VMs in network namespaces (the `netns` CPI) rather than on loopback addresses.
    pub netns: bool,
    /// Meltdown: at least this many instances down...
    pub meltdown_minimum_down: usize,
    /// ...and this percentage of the deployment.
    pub meltdown_percent: usize,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heartbeat: 0.5,
            unresponsive_after: 3.0,
            resurrector: true,
            netns: false,
            meltdown_minimum_down: 5,
            meltdown_percent: 20,
        }
    }
}

pub struct Bosh {
    /// The director's data dir: `cpi/vms/<cid>/pid` has each VM's process group.
    pub data_dir: PathBuf,
    /// The first three octets of this director's network, e.g. `127.0.42`.
    pub subnet: String,
    /// The netns CPI's bridge, deleted on drop.
    netns_bridge: Option<String>,
    pub nats: NatsServer,
    pub url: String,
    wf_home: tempfile::TempDir,
    // Declared last: dropped after the VMs are killed (see Drop).
    director: Process,
    _dir: tempfile::TempDir,
}

impl Bosh {
    /// Starts NATS and a director on the `127.0.<octet>.0/24` network, with the release,
    /// stemcell and cloud config uploaded; `None` when `nats-server` is missing (and
    /// not required).
    ///
    /// With `timers.netns`, `None` too when this is not root with `ip` (unless
    /// `WF_REQUIRE_NETNS` is set: then it panics).
    pub fn start(octet: u8, timers: Timers) -> Option<Bosh> {
        if timers.netns && !netns_possible() {
            return None;
        }
        let nats = if timers.netns {
            // Agents in namespaces reach NATS on the bridge's address.
            NatsServer::start_with_args(&["-a", "0.0.0.0"])?
        } else {
            NatsServer::start()?
        };
        let dir = tempfile::tempdir().expect("temp dir");
        // Jobs that drop root (PostgreSQL runs as `postgres`) must reach their VM's dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("opening the temp dir");
        let data_dir = dir.path().join("director");
        let subnet = if timers.netns {
            format!("10.244.{octet}")
        } else {
            format!("127.0.{octet}")
        };
        let listen = if timers.netns {
            let port = free_port();
            let nats_port = nats.url().rsplit(':').next().expect("a port").to_string();
            vec![
                "--listen".into(),
                format!("0.0.0.0:{port}").into(),
                "--url".into(),
                format!("http://{subnet}.1:{port}").into(),
                "--builtin-cpi".into(),
                "netns".into(),
                "--netns-bridge".into(),
                bridge(octet).into(),
                "--agent-nats-url".into(),
                format!("nats://{subnet}.1:{nats_port}").into(),
            ]
        } else {
            // A fixed port: VMs keep the director's URL (their blobstore) across its
            // restarts.
            vec![
                "--listen".into(),
                format!("127.0.0.1:{}", free_port()).into(),
            ]
        };
        let mut args: Vec<OsString> = vec![
            "director".into(),
            "--data-dir".into(),
            data_dir.clone().into(),
            "--admin-password".into(),
            PASSWORD.into(),
            "--nats-url".into(),
            nats.url().into(),
            "--agent-heartbeat-interval".into(),
            timers.heartbeat.to_string().into(),
            "--agent-wait".into(),
            "60".into(),
            "--hm-unresponsive-after".into(),
            timers.unresponsive_after.to_string().into(),
            "--hm-check-interval".into(),
            "0.5".into(),
            "--meltdown-minimum-down".into(),
            timers.meltdown_minimum_down.to_string().into(),
            "--meltdown-percent".into(),
            timers.meltdown_percent.to_string().into(),
        ];
        if !timers.resurrector {
            args.push("--no-resurrector".into());
        }
        args.extend(listen);
        let director = Process::start("director", args);
        let printed = director.line_after("director: ", STARTUP);
        // The director's own address (the `--url` may be one only VMs reach).
        let url = printed
            .split_whitespace()
            .nth(1)
            .map(|addr| format!("http://{}", addr.trim_matches(['(', ')'])))
            .expect("director address")
            .replace("0.0.0.0", "127.0.0.1");
        let bosh = Bosh {
            data_dir,
            netns_bridge: timers.netns.then(|| bridge(octet)),
            subnet,
            nats,
            url,
            wf_home: tempfile::tempdir().expect("WF_HOME"),
            director,
            _dir: dir,
        };
        bosh.ok(&["upload-release", release().to_str().expect("utf-8")]);
        let stemcell = bosh._dir.path().join("stemcell.tgz");
        let packed = Command::new("tar")
            .arg("czf")
            .arg(&stemcell)
            .arg("-C")
            .arg(repo().join("bosh/examples/stemcell"))
            .arg(".")
            .status()
            .expect("running tar");
        assert!(packed.success(), "packing the stemcell");
        bosh.ok(&["upload-stemcell", stemcell.to_str().expect("utf-8")]);
        let cloud_config = bosh._dir.path().join("cloud-config.yml");
        std::fs::write(&cloud_config, bosh.cloud_config()).expect("writing the cloud config");
        bosh.ok(&["update-cloud-config", cloud_config.to_str().expect("utf-8")]);
        Some(bosh)
    }

    fn cloud_config(&self) -> String {
        let net = &self.subnet;
        format!(
            "azs: [{{name: z1}}, {{name: z2}}]
vm_types: [{{name: default}}]
disk_types: [{{name: default, disk_size: 64}}]
networks:
- name: default
  type: manual
  subnets:
  - range: {net}.0/24
    gateway: {net}.1
    reserved: [{net}.2 - {net}.9]
    static: [{net}.10 - {net}.49]
    azs: [z1, z2]
"
        )
    }

    /// Kills the director (SIGKILL) and starts it again on the same data dir and port.
    pub fn restart_director(&mut self) {
        self.director.restart();
        self.director.line_after("director: ", STARTUP);
    }

    /// Runs `wf bosh args` against this director.
    pub fn run(&self, deployment: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new(binary("wf"));
        command
            .arg("bosh")
            .args(args)
            .env("WF_HOME", self.wf_home.path())
            .env("BOSH_ENVIRONMENT", &self.url)
            .env("BOSH_CLIENT", "admin")
            .env("BOSH_CLIENT_SECRET", PASSWORD)
            .env_remove("BOSH_DEPLOYMENT")
            .stdin(Stdio::null());
        if let Some(deployment) = deployment {
            command.env("BOSH_DEPLOYMENT", deployment);
        }
        command.output().expect("running wf bosh")
    }

    /// `wf bosh args`, asserting success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(None, args)
    }

    /// `wf bosh -d deployment args`, asserting success; stdout.
    pub fn ok_in(&self, deployment: Option<&str>, args: &[&str]) -> String {
        let out = self.run(deployment, args);
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "wf bosh {} failed:\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args.join(" ")
        );
        stdout
    }

    /// `wf bosh -d deployment args`, asserting failure; stdout and stderr.
    pub fn fails_in(&self, deployment: &str, args: &[&str]) -> String {
        let out = self.run(Some(deployment), args);
        let (stdout, stderr) = texts(&out);
        assert!(
            !out.status.success(),
            "wf bosh {} succeeded but should have failed:\n{stdout}",
            args.join(" ")
        );
        format!("{stdout}{stderr}")
    }

    /// Deploys `manifest` (YAML) as `deployment`; the command's output, or its failure's.
    pub fn deploy(&self, deployment: &str, manifest: &str) -> Output {
        let path = self._dir.path().join(format!("{deployment}.yml"));
        std::fs::write(&path, manifest).expect("writing the manifest");
        self.run(Some(deployment), &["deploy", path.to_str().expect("utf-8")])
    }

    /// `wf bosh instances` as (instance, process state, ip) rows.
    pub fn instances(&self, deployment: &str) -> Vec<Instance> {
        self.rows(deployment, "instances")
            .into_iter()
            .map(|row| Instance {
                name: row[0].clone(),
                process_state: row[1].clone(),
                ip: row[3].parse().expect("instance IP"),
                vm_cid: None,
            })
            .collect()
    }

    /// `wf bosh vms` as rows with the VM CID.
    pub fn vms(&self, deployment: &str) -> Vec<Instance> {
        self.rows(deployment, "vms")
            .into_iter()
            .map(|row| Instance {
                name: row[0].clone(),
                process_state: row[1].clone(),
                ip: row[3].parse().expect("VM IP"),
                vm_cid: Some(row[4].clone()),
            })
            .collect()
    }

    /// The table's rows, cut at its header's columns (a cell may hold spaces:
    /// `unresponsive agent`).
    fn rows(&self, deployment: &str, command: &str) -> Vec<Vec<String>> {
        let out = self.ok_in(Some(deployment), &[command]);
        let mut lines = out.lines().skip_while(|l| !l.starts_with("Instance"));
        let header = lines.next().expect("a table header");
        let mut starts: Vec<usize> = header
            .split("   ")
            .filter(|h| !h.trim().is_empty())
            .map(|h| header.find(h.trim()).expect("a header column"))
            .collect();
        starts.push(usize::MAX);
        lines
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                starts
                    .windows(2)
                    .map(|w| {
                        line.get(w[0]..w[1].min(line.len()))
                            .unwrap_or("")
                            .trim()
                            .to_string()
                    })
                    .collect()
            })
            .collect()
    }

    /// Waits until `deployment` has `count` instances, all `state`.
    pub fn wait_for_instances(
        &self,
        deployment: &str,
        count: usize,
        state: &str,
        within: Duration,
    ) -> Vec<Instance> {
        let deadline = Instant::now() + within;
        loop {
            let instances = self.instances(deployment);
            if instances.len() == count && instances.iter().all(|i| i.process_state == state) {
                return instances;
            }
            assert!(
                Instant::now() < deadline,
                "{deployment}: not {count} instances {state} within {within:?}: {instances:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The process group of VM `cid` (its agent's pid).
    pub fn vm_pgid(&self, cid: &str) -> i32 {
        std::fs::read_to_string(self.data_dir.join("cpi/vms").join(cid).join("pid"))
            .expect("the VM's pid file")
            .trim()
            .parse()
            .expect("a pid")
    }

    /// Sends `signal` (`KILL`, `STOP`, ...) to every process of VM `cid`.
    pub fn signal_vm(&self, cid: &str, signal: &str) {
        signal_group(self.vm_pgid(cid), signal);
    }

    /// Kills VM `cid` as a lost machine: its processes, and its network namespace if it
    /// has one.
    pub fn kill_vm(&self, cid: &str) {
        self.signal_vm(cid, "KILL");
        if self.netns_bridge.is_some() {
            let deleted = Command::new("ip")
                .args(["netns", "delete", &format!("wf-{cid}")])
                .status()
                .expect("running ip");
            assert!(deleted.success(), "deleting VM {cid}'s namespace");
        }
    }

    /// The VMs the local CPI has.
    pub fn vm_dirs(&self) -> Vec<PathBuf> {
        list(&self.data_dir.join("cpi/vms"))
    }

    /// The disks the local CPI has.
    pub fn disk_dirs(&self) -> Vec<PathBuf> {
        list(&self.data_dir.join("cpi/disks"))
    }
}

impl Drop for Bosh {
    fn drop(&mut self) {
        // VMs are no children of the director: kill their process trees ourselves.
        for vm in self.vm_dirs() {
            if let Some(pgid) = std::fs::read_to_string(vm.join("pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                signal_group(pgid, "KILL");
            }
            if self.netns_bridge.is_some() {
                let cid = vm
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let _ = Command::new("ip")
                    .args(["netns", "delete", &format!("wf-{cid}")])
                    .status();
            }
        }
        if let Some(bridge) = &self.netns_bridge {
            let _ = Command::new("ip")
                .args(["link", "delete", bridge])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Instance {
    /// `group/id`.
    pub name: String,
    pub process_state: String,
    pub ip: Ipv4Addr,
    pub vm_cid: Option<String>,
}

/// The folder of PostgreSQL's server programs (`initdb`, `postgres`): where `initdb` on
/// PATH leads, else Debian's newest `/usr/lib/postgresql/*/bin`. `None` (the test is
/// skipped) without them, unless `WF_TEST_POSTGRES_URL` is set, as in CI: then it
/// panics.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let debian = || {
        let mut dirs: Vec<PathBuf> = list(Path::new("/usr/lib/postgresql"))
            .into_iter()
            .map(|d| d.join("bin"))
            .filter(|d| d.join("initdb").is_file())
            .collect();
        dirs.sort_by_key(|d| {
            d.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
        });
        dirs.pop()
    };
    let found = on_path.or_else(debian);
    if found.is_none() {
        assert!(
            std::env::var_os("WF_TEST_POSTGRES_URL").is_none(),
            "WF_TEST_POSTGRES_URL is set but PostgreSQL's server programs are not installed"
        );
        eprintln!("skipping: PostgreSQL's server programs (initdb, postgres) are not installed");
    }
    found
}

/// The netns CPI's bridge for network `10.244.<octet>.0/24`.
fn bridge(octet: u8) -> String {
    format!("wfbr{octet}")
}

/// Whether this process may create network namespaces (root with CAP_NET_ADMIN and
/// iproute2's `ip`: it makes and deletes one to see); says so when not, and panics when
/// `WF_REQUIRE_NETNS` is set.
fn netns_possible() -> bool {
    let probe = format!("wf-probe-{}", std::process::id());
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ip(&["netns", "add", &probe]) && ip(&["netns", "delete", &probe]) {
        return true;
    }
    assert!(
        std::env::var_os("WF_REQUIRE_NETNS").is_none(),
        "WF_REQUIRE_NETNS is set but this process cannot make network namespaces with ip"
    );
    eprintln!("skipping: the netns CPI needs root, CAP_NET_ADMIN and ip (set WF_REQUIRE_NETNS to fail instead)");
    false
}

/// Whether a process of group `pgid` runs (zombies, which wait for a parent to reap
/// them, do not count).
pub fn group_alive(pgid: i32) -> bool {
    list(Path::new("/proc")).iter().any(|proc| {
        let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        matches!(fields.as_slice(), [state, _ppid, pgrp, ..]
            if *state != "Z" && pgrp.parse() == Ok(pgid))
    })
}

fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn signal_group(pgid: i32, signal: &str) {
    if pgid > 1 {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(format!("-{pgid}"))
            .stderr(Stdio::null())
            .status();
    }
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// The `wf` release (`bosh/release` with this build's `wfd`), built once per test
/// binary under `target/<profile>/bosh-test-release`.
pub fn release() -> PathBuf {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE
        .get_or_init(|| {
            let wfd = binary("wfd");
            let out = wfd.with_file_name("bosh-test-release");
            let made = Command::new(binary("wf"))
                .args(["bosh", "create-release"])
                .arg(repo().join("bosh/release"))
                .args(["--version", "1", "--wfd"])
                .arg(&wfd)
                .arg("--tarball-dir")
                .arg(&out)
                .output()
                .expect("running wf bosh create-release");
            assert!(
                made.status.success(),
                "wf bosh create-release: {}",
                String::from_utf8_lossy(&made.stdout)
            );
            out.join("wf-1.tgz")
        })
        .clone()
}

/// GET `path` on `ip:port`.
pub fn get(ip: Ipv4Addr, port: u16, path: &str) -> HttpResponse {
    http_get(SocketAddr::from((ip, port)), &ip.to_string(), path)
}

/// Polls `GET path` on `ip:port` until it answers `status`, or panics after `within`.
pub fn wait_for_status(
    ip: Ipv4Addr,
    port: u16,
    path: &str,
    status: u16,
    within: Duration,
) -> HttpResponse {
    let deadline = Instant::now() + within;
    loop {
        let response = get(ip, port, path);
        if response.status == status {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "{ip}:{port}{path} did not answer {status} within {within:?}: {response:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
