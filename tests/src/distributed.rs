//! The platform laid out one component per process, as over several machines: a real
//! `nats-server`, two BBS processes sharing one database (one holds the `bbs` lock,
//! the other waits), UAA, the controller, two routers and three cells, each with its
//! own data dir, all on loopback ports. [`Distributed::start_cell`] adds a cell, with
//! placement tags (an isolation segment's cells) if asked. The BBS API and the reps
//! serve mutual TLS, and NATS takes only TLS clients with a certificate, with
//! certificates `wfd certs` made ([`Distributed::certs`]).

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wf_messaging::testing::NatsServer;

use crate::platform::{
    binary, http_get, HttpResponse, Platform, Process, Wf, ADMIN_PASSWORD, APPS_DOMAIN,
};

const STARTUP: Duration = Duration::from_secs(120);
/// The `bbs` lock's TTL under `--fast-failover`: a standby takes over this long after a crash.
pub const LOCK_TTL_SECS: u64 = 2;
/// The cells' names.
pub const CELLS: [&str; 3] = ["cell-a", "cell-b", "cell-c"];
/// The routers' names.
pub const ROUTERS: [&str; 2] = ["router-a", "router-b"];

/// A distributed platform; `platform.processes` are named `uaa`, `bbs-a`, `bbs-b`,
/// `controller`, [`ROUTERS`] and [`CELLS`]. `platform.router_addr` is `router-a`'s.
pub struct Distributed {
    pub platform: Platform,
    pub nats: NatsServer,
    /// Both BBS API URLs, the first one held by `bbs-a` at start.
    pub bbs_urls: Vec<String>,
    /// The routers' addresses, in the order of [`ROUTERS`].
    pub routers: Vec<SocketAddr>,
    /// The cells' rep URLs, in the order of [`CELLS`].
    pub reps: Vec<String>,
    /// The platform CA and the components' certificates (`wfd certs`).
    pub certs: PathBuf,
    fast_failover: bool,
}

impl Distributed {
    /// Starts it all on the `--fast-failover` timers; `None` when `nats-server` is
    /// missing (and not required).
    pub fn start() -> Option<Distributed> {
        Distributed::start_with(true)
    }

    /// Starts it all, on the fast-failover timers or on Diego's defaults.
    pub fn start_with(fast_failover: bool) -> Option<Distributed> {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let certs = root.join("certs");
        generate_certs(&certs);
        // NATS over TLS on the platform CA, verifying its clients' certificates.
        let file = |name: &str| certs.join(name).display().to_string();
        let nats = NatsServer::start_with_args(&[
            "--tls",
            "--tlscert",
            &file("nats.pem"),
            "--tlskey",
            &file("nats-key.pem"),
            "--tlscacert",
            &file("ca.pem"),
            "--tlsverify",
        ])?;
        let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", root.join(name).display());
        let [bbs_a_port, bbs_b_port, uaa_port, api_port] = [(); 4].map(|()| free_port());
        let bbs_urls = [bbs_a_port, bbs_b_port].map(|p| format!("https://127.0.0.1:{p}"));
        let uaa_url = format!("http://127.0.0.1:{uaa_port}");
        let api_url = format!("http://127.0.0.1:{api_port}");
        let nats_url = nats.url();

        let uaa = Process::start(
            "uaa",
            args(&[
                &"uaa",
                &"--database-url",
                &sqlite("uaa.db"),
                &"--listen",
                &format!("127.0.0.1:{uaa_port}"),
                &"--url",
                &uaa_url,
                &"--admin-password",
                &ADMIN_PASSWORD,
                &"--signing-key",
                &root.join("uaa-key.pem"),
            ]),
        );
        uaa.line_after("uaa: ", STARTUP);

        let bbs = |name: &str, port: u16| {
            Process::start(
                name,
                args(&[
                    &"bbs",
                    &"--database-url",
                    &sqlite("bbs.db"),
                    &"--listen",
                    &format!("127.0.0.1:{port}"),
                    &"--nats-url",
                    &nats_url,
                ])
                .into_iter()
                .chain(mtls_args(&certs, "bbs"))
                .chain(nats_tls_args(&certs, "bbs"))
                .chain(fast_failover.then(|| "--fast-failover".into()))
                .collect(),
            )
        };
        let bbs_a = bbs("bbs-a", bbs_a_port);
        bbs_a.line_after("bbs: ", STARTUP);
        // The standby waits for the lock and prints nothing until it has it.
        let bbs_b = bbs("bbs-b", bbs_b_port);
        let bbs_url_list = bbs_urls.join(",");

        let controller = Process::start(
            "controller",
            args(&[
                &"controller",
                &"--database-url",
                &sqlite("cc.db"),
                &"--listen",
                &format!("127.0.0.1:{api_port}"),
                &"--external-url",
                &api_url,
                &"--uaa-url",
                &uaa_url,
                &"--bbs-url",
                &bbs_url_list,
                &"--blobstore-dir",
                &root.join("blobstore"),
                &"--signing-secret-file",
                &root.join("blob-signing-secret"),
                &"--apps-domain",
                &APPS_DOMAIN,
                &"--sync-interval",
                &"2",
                &"--metrics-target",
                &format!("bbs={}/metrics", bbs_urls[0]),
                &"--nats-url",
                &nats_url,
            ])
            .into_iter()
            .chain(mtls_args(&certs, "controller"))
            .chain(nats_tls_args(&certs, "controller"))
            .collect(),
        );
        controller.line_after("api: ", STARTUP);

        let router = |name: &str| {
            let process = Process::start(
                name,
                args(&[
                    &"router",
                    &"--listen",
                    &"127.0.0.1:0",
                    &"--nats-url",
                    &nats_url,
                ])
                .into_iter()
                .chain(nats_tls_args(&certs, "router"))
                .collect(),
            );
            let addr: SocketAddr = process
                .line_after("router: http://", STARTUP)
                .parse()
                .expect("router address");
            (process, addr)
        };
        let routers = ROUTERS.map(router);
        let router_addrs: Vec<SocketAddr> = routers.iter().map(|(_, addr)| *addr).collect();

        let cells =
            CELLS.map(|name| start_cell(name, &[], &bbs_url_list, root, &nats_url, fast_failover));
        let reps: Vec<String> = cells.iter().map(|(_, rep)| rep.clone()).collect();

        let mut processes = vec![uaa, bbs_a, bbs_b, controller];
        processes.extend(routers.map(|(process, _)| process));
        processes.extend(cells.map(|(process, _)| process));
        Some(Distributed {
            platform: Platform::of_processes(processes, dir, api_url, router_addrs[0]),
            nats,
            bbs_urls: bbs_urls.to_vec(),
            routers: router_addrs,
            reps,
            certs,
            fast_failover,
        })
    }

    /// Starts one more cell, `name`, in the isolation segments `placement_tags` (none:
    /// the shared cells); it is `platform.processes`' `name`. Returns its rep URL.
    pub fn start_cell(&mut self, name: &str, placement_tags: &[&str]) -> String {
        let (process, rep) = start_cell(
            name,
            placement_tags,
            &self.bbs_urls.join(","),
            &self.platform.data_dir,
            &self.nats.url(),
            self.fast_failover,
        );
        self.platform.processes.push(process);
        rep
    }

    /// Restarts router `index` of [`ROUTERS`]; it comes back on a new port.
    pub fn restart_router(&mut self, index: usize) {
        let process = self.platform.process(ROUTERS[index]);
        process.restart();
        self.routers[index] = process
            .line_after("router: http://", STARTUP)
            .parse()
            .expect("router address");
        self.platform.router_addr = self.routers[0];
    }

    /// Asks cell `index` of [`CELLS`] to evacuate (its rep's `POST /evacuate`).
    pub fn evacuate(&self, index: usize) {
        let resp = self
            .internal_client()
            .post(format!("{}/evacuate", self.reps[index]))
            .timeout(Duration::from_secs(10))
            .send()
            .expect("POST /evacuate");
        assert_eq!(resp.status().as_u16(), 202, "evacuating {}", CELLS[index]);
    }

    /// GET `path` on the app at `host` through router `index` of [`ROUTERS`].
    pub fn get_via(&self, index: usize, host: &str, path: &str) -> HttpResponse {
        http_get(self.routers[index], &format!("{host}.{APPS_DOMAIN}"), path)
    }

    /// The cells of the ORDINARY RUNNING instances, if there are exactly `n` and no others.
    pub fn settled_on(&self, process_guid: &str, n: usize) -> Option<Vec<String>> {
        let rows = self.actual_lrps(process_guid);
        let all_running_ordinary = rows
            .iter()
            .all(|lrp| lrp["state"] == "RUNNING" && lrp["presence"] == "ORDINARY");
        (rows.len() == n && all_running_ordinary).then(|| {
            rows.iter()
                .map(|lrp| {
                    lrp["instance_key"]["cell_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
    }

    /// Pushes the hello fixture as `name` with `instances`; returns its web process guid.
    pub fn push(&self, wf: &Wf, name: &str, instances: u32) -> String {
        wf.push_fixture(name, "hello");
        wf.ok(&["scale", name, "-i", &instances.to_string()]);
        let app_guid = wf.app_guid(name);
        let processes = wf.curl_json(&[&format!("/v3/apps/{app_guid}/processes")]);
        let process_guid = processes["resources"][0]["guid"]
            .as_str()
            .expect("web process guid")
            .to_string();
        eventually("the instances to run", Duration::from_secs(60), || {
            self.settled_on(&process_guid, instances as usize).is_some()
        });
        process_guid
    }

    /// The ActualLRPs of CC process `process_guid` (BBS process guids are
    /// `<process guid>-<version>`), as the BBS API lists them.
    pub fn actual_lrps(&self, process_guid: &str) -> Vec<serde_json::Value> {
        for url in &self.bbs_urls {
            let resp = self
                .internal_client()
                .post(format!("{url}/v1/actual_lrps/list"))
                .json(&serde_json::json!({}))
                .timeout(Duration::from_secs(10))
                .send();
            if let Ok(resp) = resp {
                let body: serde_json::Value = resp.json().expect("BBS JSON");
                let all = body["actual_lrps"].as_array().cloned().unwrap_or_default();
                return all
                    .into_iter()
                    .filter(|lrp| {
                        lrp["key"]["process_guid"]
                            .as_str()
                            .is_some_and(|guid| guid.starts_with(process_guid))
                    })
                    .collect();
            }
        }
        panic!("no BBS answers at {:?}", self.bbs_urls);
    }
}

/// The platform CA and the certificates of `bbs`, `rep` and `controller` for
/// 127.0.0.1, written into `dir` by `wfd certs`.
pub fn generate_certs(dir: &Path) {
    let out = Command::new(binary("wfd"))
        .args(["certs", "--host", "127.0.0.1", "--dir"])
        .arg(dir)
        .output()
        .expect("running wfd certs");
    assert!(
        out.status.success(),
        "wfd certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client of the internal APIs with `component`'s certificate in `certs`, trusting
/// the CAs in `ca` (a PEM bundle).
pub fn mtls_client(ca: &Path, certs: &Path, component: &str) -> reqwest::blocking::Client {
    let tls = wf_bbs::mtls::MutualTls::from_pem_files(
        ca,
        &certs.join(format!("{component}.pem")),
        &certs.join(format!("{component}-key.pem")),
    )
    .expect("loading certificates");
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls.client_config())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an mTLS client")
}

impl Distributed {
    /// A client of the BBS and rep APIs, as an operator with the controller's
    /// certificate.
    pub fn internal_client(&self) -> reqwest::blocking::Client {
        mtls_client(&self.certs.join("ca.pem"), &self.certs, "controller")
    }
}

/// `component`'s `--mtls-*` flags, with its certificate in `certs`.
fn mtls_args(certs: &Path, component: &str) -> Vec<OsString> {
    let file = |name: String| certs.join(name).into_os_string();
    vec![
        "--mtls-ca".into(),
        file("ca.pem".into()),
        "--mtls-cert".into(),
        file(format!("{component}.pem")),
        "--mtls-key".into(),
        file(format!("{component}-key.pem")),
    ]
}

/// `component`'s `--nats-tls-*` flags, with its certificate in `certs`.
fn nats_tls_args(certs: &Path, component: &str) -> Vec<OsString> {
    let file = |name: String| certs.join(name).into_os_string();
    vec![
        "--nats-tls-ca".into(),
        file("ca.pem".into()),
        "--nats-tls-cert".into(),
        file(format!("{component}.pem")),
        "--nats-tls-key".into(),
        file(format!("{component}-key.pem")),
    ]
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    items.iter().map(|i| i.as_ref().to_os_string()).collect()
}

/// `wfd cell` `name` with its data dir under `root`; the process and its rep URL.
fn start_cell(
    name: &str,
    placement_tags: &[&str],
    bbs_urls: &str,
    root: &Path,
    nats_url: &str,
    fast_failover: bool,
) -> (Process, String) {
    let mut cell_args = args(&[
        &"cell",
        &"--bbs-url",
        &bbs_urls,
        &"--listen",
        &"127.0.0.1:0",
        &"--cell-id",
        &name,
        &"--memory-mb",
        &"4096",
        &"--data-dir",
        &root.join(name),
        &"--nats-url",
        &nats_url,
    ]);
    for tag in placement_tags {
        cell_args.extend(args(&[&"--placement-tag", tag]));
    }
    cell_args.extend(fast_failover.then(|| "--fast-failover".into()));
    cell_args.extend(mtls_args(&root.join("certs"), "rep"));
    cell_args.extend(nats_tls_args(&root.join("certs"), "rep"));
    let process = Process::start(name, cell_args);
    let rep = process.line_after(&format!("cell {name}: rep "), STARTUP);
    (process, rep)
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `within`.
pub fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port free on 127.0.0.1 a moment ago, below the kernel's ephemeral port range (as
/// the components' real ports are): a component restarted on it finds it free, where a
/// port of the ephemeral range may meanwhile have become a client connection's local
/// port, held for a minute in TIME_WAIT once closed ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    const LOWEST: u64 = 10_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_start: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    if ephemeral_start > LOWEST + 1_000 {
        let span = ephemeral_start - LOWEST;
        // Test binaries run at once: each starts somewhere else in the span.
        let start = u64::from(std::process::id()).wrapping_mul(7_919)
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()));
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (LOWEST + (start + n * 7) % span) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
