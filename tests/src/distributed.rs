//! The platform laid out one component per process, as over several machines: a real
//! `nats-server`, two BBS processes sharing one database (one holds the `bbs` lock,
//! the other waits), UAA, the controller, two routers and three cells, each with its
//! own data dir, all on loopback ports.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use wf_messaging::testing::NatsServer;

use crate::platform::{http_get, HttpResponse, Platform, Process, ADMIN_PASSWORD, APPS_DOMAIN};

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
}

impl Distributed {
    /// Starts it all on the `--fast-failover` timers; `None` when `nats-server` is
    /// missing (and not required).
    pub fn start() -> Option<Distributed> {
        Distributed::start_with(true)
    }

    /// Starts it all, on the fast-failover timers or on Diego's defaults.
    pub fn start_with(fast_failover: bool) -> Option<Distributed> {
        let nats = NatsServer::start()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", root.join(name).display());
        let [bbs_a_port, bbs_b_port, uaa_port, api_port] = [(); 4].map(|()| free_port());
        let bbs_urls = [bbs_a_port, bbs_b_port].map(|p| format!("http://127.0.0.1:{p}"));
        let uaa_url = format!("http://127.0.0.1:{uaa_port}");
        let api_url = format!("http://127.0.0.1:{api_port}");
        let nats_url = nats.url();
        let args = |items: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<OsString> {
            items.iter().map(|i| i.as_ref().to_os_string()).collect()
        };

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
                &"--nats-url",
                &nats_url,
            ]),
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
                ]),
            );
            let addr: SocketAddr = process
                .line_after("router: http://", STARTUP)
                .parse()
                .expect("router address");
            (process, addr)
        };
        let routers = ROUTERS.map(router);
        let router_addrs: Vec<SocketAddr> = routers.iter().map(|(_, addr)| *addr).collect();

        let cell = |name: &str| {
            let process = Process::start(
                name,
                args(&[
                    &"cell",
                    &"--bbs-url",
                    &bbs_url_list,
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
                ])
                .into_iter()
                .chain(fast_failover.then(|| "--fast-failover".into()))
                .collect(),
            );
            let rep = process.line_after(&format!("cell {name}: rep "), STARTUP);
            (process, rep)
        };
        let cells = CELLS.map(cell);
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
        })
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
        let resp = reqwest::blocking::Client::new()
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

    /// The ActualLRPs of CC process `process_guid` (BBS process guids are
    /// `<process guid>-<version>`), as the BBS API lists them.
    pub fn actual_lrps(&self, process_guid: &str) -> Vec<serde_json::Value> {
        for url in &self.bbs_urls {
            let resp = reqwest::blocking::Client::new()
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

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
