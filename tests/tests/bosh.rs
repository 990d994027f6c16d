//! BOSH end to end: a director with the local CPI deploys real `wfd` jobs (UAA with a
//! persistent disk, routers) as VMs on loopback addresses, the resurrector recreates a
//! killed VM with its disk, a broken canary stops a rolling update, cloud-check finds
//! and fixes an unresponsive agent, and delete-deployment removes it all. Each test
//! has its own director, NATS and /24 of loopback addresses. The last deploys the whole
//! platform from `bosh/examples/platform.yml` (PostgreSQL included), pushes an app
//! through it and updates and loses cells while the app is served, on the local and on
//! the netns CPI.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wf_tests::bosh::{get, group_alive, postgres_bin_dir, repo, wait_for_status, Bosh, Timers};
use wf_tests::distributed::eventually;
use wf_tests::platform::{http_get, Platform, ADMIN_PASSWORD, APPS_DOMAIN};

/// The router job's status port (its `/health`).
const ROUTER_STATUS_PORT: u16 = 8082;
const UAA_PORT: u16 = 8081;
const DEPLOY: Duration = Duration::from_secs(120);

struct Groups<'a> {
    uaa: bool,
    routers: u32,
    /// Extra YAML under the router job's `properties` (indented 6).
    router_properties: &'a str,
    canary_watch_time: &'a str,
}

fn manifest(bosh: &Bosh, name: &str, groups: &Groups) -> String {
    let net = &bosh.subnet;
    let mut yaml = format!(
        "name: {name}
releases: [{{name: wf, version: latest}}]
stemcells: [{{alias: default, os: wf-local, version: latest}}]
update:
  canaries: 1
  max_in_flight: 2
  canary_watch_time: {canary}
  update_watch_time: 1000-30000
instance_groups:
",
        canary = groups.canary_watch_time
    );
    if groups.uaa {
        yaml.push_str(&format!(
            "- name: uaa
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  persistent_disk_type: default
  networks: [{{name: default, static_ips: [{net}.10]}}]
  jobs:
  - name: uaa
    release: wf
    properties:
      uaa: {{admin_password: s3cret}}
"
        ));
    }
    yaml.push_str(&format!(
        "- name: router
  azs: [z1, z2]
  instances: {routers}
  vm_type: default
  stemcell: default
  networks: [{{name: default}}]
  jobs:
  - name: router
    release: wf
    properties:
      nats: {{url: \"{nats}\"}}
{extra}",
        routers = groups.routers,
        nats = bosh.nats.url(),
        extra = groups.router_properties,
    ));
    yaml
}

fn assert_deployed(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "deploy failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn deploy_resurrect_with_the_disk_and_delete() {
    let Some(mut bosh) = Bosh::start(201, Timers::default()) else {
        return;
    };
    let groups = Groups {
        uaa: true,
        routers: 2,
        router_properties: "",
        canary_watch_time: "1000-30000",
    };
    // `serial: false`: uaa and the routers are updated at the same time.
    let yaml = manifest(&bosh, "platform", &groups).replace(
        "  update_watch_time: 1000-30000\n",
        "  update_watch_time: 1000-30000\n  serial: false\n",
    );
    assert!(yaml.contains("serial: false"));
    let out = assert_deployed(bosh.deploy("platform", &yaml));
    assert!(out.contains("(canary)"), "{out}");
    let instances = bosh.wait_for_instances("platform", 3, "running", DEPLOY);
    for router in instances.iter().filter(|i| i.name.starts_with("router/")) {
        wait_for_status(router.ip, ROUTER_STATUS_PORT, "/health", 200, DEPLOY);
    }
    let uaa = instances
        .iter()
        .find(|i| i.name.starts_with("uaa/"))
        .expect("a uaa instance");
    assert_eq!(
        uaa.ip.to_string(),
        format!("{}.10", bosh.subnet),
        "its static IP"
    );
    let keys = wait_for_status(uaa.ip, UAA_PORT, "/token_keys", 200, DEPLOY).body;
    assert_eq!(bosh.disk_dirs().len(), 1, "uaa's persistent disk");

    // Deploying the same manifest again changes nothing.
    let out = assert_deployed(bosh.deploy("platform", &yaml));
    assert!(!out.contains("Updating instance"), "{out}");

    // Kill uaa's VM (its agent and job): the resurrector recreates it with its disk, so
    // UAA comes back with the signing key it keeps there.
    let vm = bosh
        .vms("platform")
        .into_iter()
        .find(|i| i.name.starts_with("uaa/"))
        .and_then(|i| i.vm_cid)
        .expect("uaa's VM");
    bosh.signal_vm(&vm, "KILL");
    assert_eq!(
        get(uaa.ip, UAA_PORT, "/token_keys").status,
        0,
        "uaa is down"
    );
    let again = wait_for_status(uaa.ip, UAA_PORT, "/token_keys", 200, DEPLOY).body;
    assert_eq!(
        again, keys,
        "the same signing key, from the re-attached disk"
    );
    let vms = bosh.vms("platform");
    let new_vm = vms
        .iter()
        .find(|i| i.name.starts_with("uaa/"))
        .and_then(|i| i.vm_cid.clone())
        .expect("uaa's VM");
    assert_ne!(new_vm, vm, "a new VM");
    bosh.wait_for_instances("platform", 3, "running", DEPLOY);
    let tasks = bosh.ok(&["tasks"]);
    assert!(tasks.contains("scan and fix"), "{tasks}");

    // The director's state is in its database: killed and started again, it knows the
    // deployment and its VMs, and its health monitor watches them again.
    bosh.restart_director();
    let after_restart = bosh.wait_for_instances("platform", 3, "running", DEPLOY);
    assert_eq!(
        after_restart.iter().map(|i| &i.name).collect::<Vec<_>>(),
        instances.iter().map(|i| &i.name).collect::<Vec<_>>()
    );
    let router = bosh
        .vms("platform")
        .into_iter()
        .find(|i| i.name.starts_with("router/"))
        .expect("a router VM");
    bosh.kill_vm(router.vm_cid.as_deref().expect("a VM"));
    assert_eq!(get(router.ip, ROUTER_STATUS_PORT, "/health").status, 0);
    wait_for_status(router.ip, ROUTER_STATUS_PORT, "/health", 200, DEPLOY);

    // delete-deployment removes the VMs (their processes) and the disk.
    bosh.wait_for_instances("platform", 3, "running", DEPLOY);
    let pgids: Vec<i32> = bosh
        .vms("platform")
        .iter()
        .filter_map(|i| i.vm_cid.as_deref())
        .map(|cid| bosh.vm_pgid(cid))
        .collect();
    bosh.ok_in(Some("platform"), &["delete-deployment"]);
    assert!(bosh.vm_dirs().is_empty(), "{:?}", bosh.vm_dirs());
    assert!(bosh.disk_dirs().is_empty(), "{:?}", bosh.disk_dirs());
    for pgid in pgids {
        assert!(!group_alive(pgid), "VM process group {pgid} still runs");
    }
    assert!(!bosh.ok(&["deployments"]).contains("platform"));
    for router in instances.iter().filter(|i| i.name.starts_with("router/")) {
        assert_eq!(get(router.ip, ROUTER_STATUS_PORT, "/health").status, 0);
    }
}

#[test]
fn a_broken_canary_stops_the_deploy_and_leaves_the_rest() {
    let Some(bosh) = Bosh::start(202, Timers::default()) else {
        return;
    };
    let good = Groups {
        uaa: false,
        routers: 3,
        router_properties: "",
        canary_watch_time: "1000-30000",
    };
    assert_deployed(bosh.deploy("routers", &manifest(&bosh, "routers", &good)));
    let before = bosh.wait_for_instances("routers", 3, "running", DEPLOY);

    // A port no router can listen on: the canary's job keeps dying.
    let broken = Groups {
        router_properties: "      router: {port: 99999}\n",
        canary_watch_time: "1000-4000",
        ..good
    };
    let out = bosh.deploy("routers", &manifest(&bosh, "routers", &broken));
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("is not running after update"), "{log}");
    assert_eq!(
        log.matches("Updating instance").count(),
        1,
        "only the canary: {log}"
    );

    let after = bosh.instances("routers");
    let failing: Vec<_> = after
        .iter()
        .filter(|i| i.process_state == "failing")
        .collect();
    assert_eq!(failing.len(), 1, "{after:?}");
    for instance in after.iter().filter(|i| i.process_state != "failing") {
        assert_eq!(instance.process_state, "running", "{after:?}");
        assert_eq!(
            get(instance.ip, ROUTER_STATUS_PORT, "/health").status,
            200,
            "{instance:?} keeps serving"
        );
    }
    let task = bosh.ok(&["tasks"]);
    assert!(
        task.lines().nth(1).is_some_and(|l| l.contains("error")),
        "{task}"
    );

    // Fixing the manifest brings the canary back; the others had nothing to change.
    let out = assert_deployed(bosh.deploy("routers", &manifest(&bosh, "routers", &good)));
    assert_eq!(out.matches("Updating instance").count(), 1, "{out}");
    let fixed = bosh.wait_for_instances("routers", 3, "running", DEPLOY);
    assert_eq!(
        fixed.iter().map(|i| &i.name).collect::<Vec<_>>(),
        before.iter().map(|i| &i.name).collect::<Vec<_>>()
    );
}

#[test]
fn cloud_check_finds_an_unresponsive_agent_and_recreates_it() {
    let timers = Timers {
        resurrector: false,
        ..Timers::default()
    };
    let Some(bosh) = Bosh::start(203, timers) else {
        return;
    };
    let groups = Groups {
        uaa: false,
        routers: 1,
        router_properties: "",
        canary_watch_time: "1000-30000",
    };
    assert_deployed(bosh.deploy("edge", &manifest(&bosh, "edge", &groups)));
    let vm = bosh.vms("edge").remove(0);
    let cid = vm.vm_cid.clone().expect("a VM");
    bosh.ok_in(Some("edge"), &["stop"]);
    bosh.wait_for_instances("edge", 1, "stopped", DEPLOY);
    assert_eq!(
        get(vm.ip, ROUTER_STATUS_PORT, "/health").status,
        0,
        "stopped"
    );
    bosh.ok_in(Some("edge"), &["start"]);
    wait_for_status(vm.ip, ROUTER_STATUS_PORT, "/health", 200, DEPLOY);
    let restarted = bosh.ok_in(Some("edge"), &["restart", "router/0"]);
    assert!(restarted.contains("restart router/"), "{restarted}");
    bosh.wait_for_instances("edge", 1, "running", DEPLOY);
    assert_eq!(bosh.vms("edge")[0].vm_cid, vm.vm_cid, "the same VM");

    // A frozen VM: its agent no longer answers.
    bosh.signal_vm(&cid, "STOP");
    let report = bosh.ok_in(Some("edge"), &["cloud-check"]);
    assert!(
        report.contains("unresponsive_agent") && report.contains(&cid),
        "{report}"
    );
    assert!(report.contains("1 problems"), "{report}");
    bosh.wait_for_instances("edge", 1, "unresponsive agent", DEPLOY);

    let fixed = bosh.ok_in(Some("edge"), &["cloud-check", "--resolve"]);
    assert!(fixed.contains("Recreating"), "{fixed}");
    bosh.wait_for_instances("edge", 1, "running", DEPLOY);
    wait_for_status(vm.ip, ROUTER_STATUS_PORT, "/health", 200, DEPLOY);
    let report = bosh.ok_in(Some("edge"), &["cloud-check"]);
    assert!(report.contains("0 problems"), "{report}");
    assert!(
        bosh.vm_dirs().iter().all(|d| !d.ends_with(&cid)),
        "the frozen VM was deleted"
    );

    // A new static IP moves the instance: its VM is recreated on that address.
    let moved = manifest(&bosh, "edge", &groups).replace(
        "networks: [{name: default}]",
        &format!(
            "networks: [{{name: default, static_ips: [{}.20]}}]",
            bosh.subnet
        ),
    );
    let out = assert_deployed(bosh.deploy("edge", &moved));
    assert!(out.contains("moves from"), "{out}");
    let ip = format!("{}.20", bosh.subnet).parse().expect("an IP");
    wait_for_status(ip, ROUTER_STATUS_PORT, "/health", 200, DEPLOY);
    assert_eq!(
        get(vm.ip, ROUTER_STATUS_PORT, "/health").status,
        0,
        "gone from the old IP"
    );
}

#[test]
fn meltdown_protection_leaves_a_mostly_dead_deployment_alone() {
    let timers = Timers {
        meltdown_minimum_down: 2,
        meltdown_percent: 50,
        ..Timers::default()
    };
    let Some(bosh) = Bosh::start(204, timers) else {
        return;
    };
    let groups = Groups {
        uaa: false,
        routers: 3,
        router_properties: "",
        canary_watch_time: "1000-30000",
    };
    assert_deployed(bosh.deploy("edge", &manifest(&bosh, "edge", &groups)));
    let vms = bosh.vms("edge");
    for vm in &vms[..2] {
        bosh.signal_vm(vm.vm_cid.as_deref().expect("a VM"), "KILL");
    }
    // 2 of 3 down: a meltdown, reported in a task and not resurrected.
    let deadline = std::time::Instant::now() + DEPLOY;
    let task = loop {
        let tasks = bosh.ok(&["tasks"]);
        if let Some(line) = tasks.lines().find(|l| l.contains("resurrection")) {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no resurrection task: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        task.contains("error") && task.contains("Meltdown: 2 of 3"),
        "{task}"
    );
    assert!(!bosh.ok(&["tasks"]).contains("scan and fix"));
    std::thread::sleep(Duration::from_secs(2));
    let states: Vec<String> = bosh
        .instances("edge")
        .into_iter()
        .map(|i| i.process_state)
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "unresponsive agent").count(),
        2,
        "{states:?}"
    );
    // The operator fixes it.
    bosh.ok_in(Some("edge"), &["cloud-check", "--resolve"]);
    bosh.wait_for_instances("edge", 3, "running", DEPLOY);
}

/// GETs the app through both routers until `stop`; the number of requests and the
/// failed ones, with when they were answered.
fn hammer(
    routers: [SocketAddr; 2],
    host: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<(Instant, String)>)> {
    std::thread::spawn(move || {
        let (mut requests, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            for router in routers {
                let response = http_get(router, &host, "/");
                requests += 1;
                if response.status != 200 {
                    let failure = format!("{router}: {} {}", response.status, response.body);
                    failed.push((Instant::now(), failure));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (requests, failed)
    })
}

/// The whole-platform tests run one at a time: two 11-VM platforms at once on a 2-core
/// machine starve each other (and the heartbeats and requests they measure).
fn one_platform_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static PLATFORM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PLATFORM.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_whole_platform_deploys_serves_an_app_and_heals() {
    let _alone = one_platform_at_a_time();
    if let Some(bosh) = Bosh::start(205, Timers::default()) {
        whole_platform(bosh);
    }
}

/// The same with every VM in a network namespace of its own (the `netns` CPI; root).
#[test]
fn the_whole_platform_on_network_namespaces() {
    let _alone = one_platform_at_a_time();
    let timers = Timers {
        netns: true,
        ..Timers::default()
    };
    if let Some(bosh) = Bosh::start(206, timers) {
        whole_platform(bosh);
    }
}

/// Deploys `bosh/examples/platform.yml` on `bosh`'s network, pushes an app, recreates
/// the cells (drained) and kills a cell VM while the app is served.
fn whole_platform(bosh: Bosh) {
    let nats_server = wf_messaging::testing::nats_server_binary().expect("nats-server");
    let Some(postgres) = postgres_bin_dir() else {
        return;
    };
    let net = bosh.subnet.clone();
    let manifest = std::fs::read_to_string(repo().join("bosh/examples/platform.yml"))
        .expect("the example manifest")
        .replace("127.0.10.", &format!("{net}."))
        .replace("apps.localhost", APPS_DOMAIN)
        .replace("change-me", ADMIN_PASSWORD)
        .replace(
            "server: nats-server",
            &format!("server: {}", nats_server.display()),
        )
        .replace(
            "/usr/lib/postgresql/15/bin",
            &postgres.display().to_string(),
        );
    let started = Instant::now();
    assert_deployed(bosh.deploy("wasmfoundry", &manifest));
    bosh.wait_for_instances("wasmfoundry", 11, "running", DEPLOY);
    eprintln!("deploying the platform (11 VMs): {:?}", started.elapsed());

    let routers: [SocketAddr; 2] =
        [14, 15].map(|host| format!("{net}.{host}:8080").parse().expect("router"));
    let platform = Platform::of_processes(
        vec![],
        tempfile::tempdir().expect("temp dir"),
        format!("http://{net}.13:9022"),
        routers[0],
    );
    let wf = platform.user();
    wf.push_fixture("hello", "hello");
    wf.ok(&["scale", "hello", "-i", "2"]);
    eventually("2 instances of hello", Duration::from_secs(120), || {
        wf.ok(&["app", "hello"]).contains("2/2")
    });
    platform.wait_for("hello", "/", Duration::from_secs(60), |r| r.status == 200);
    let host = format!("hello.{APPS_DOMAIN}");

    // A zero-downtime update of the cells: each is drained (its rep evacuates, Diego
    // moves its instances) before its VM is recreated, while both routers serve.
    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(routers, host.clone(), stop.clone());
    let started = Instant::now();
    let out = bosh.ok_in(Some("wasmfoundry"), &["recreate", "cell"]);
    eprintln!("recreating the 3 cells: {:?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let (requests, failed) = load.join().expect("the load thread");
    eprintln!(
        "recreating the cells: {requests} requests, {} failed",
        failed.len()
    );
    assert_eq!(out.matches("Creating VM").count(), 3, "{out}");
    assert!(
        failed.is_empty(),
        "requests failed while the cells were recreated: {failed:?}"
    );
    bosh.wait_for_instances("wasmfoundry", 11, "running", DEPLOY);

    // A cell VM dies: the resurrector recreates it, and the app is served meanwhile.
    let cell = bosh
        .vms("wasmfoundry")
        .into_iter()
        .find(|i| i.name.starts_with("cell/"))
        .and_then(|i| i.vm_cid)
        .expect("a cell VM");
    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(routers, host, stop.clone());
    bosh.kill_vm(&cell);
    let killed = Instant::now();
    eventually("the cell's VM recreated", DEPLOY, || {
        let vms = bosh.vms("wasmfoundry");
        vms.len() == 11
            && vms
                .iter()
                .all(|i| i.vm_cid.as_deref() != Some(&cell) && i.process_state == "running")
    });
    stop.store(true, Ordering::Relaxed);
    let healed = killed.elapsed();
    let (requests, failed) = load.join().expect("the load thread");
    eprintln!(
        "losing a cell VM: resurrected in {healed:?}; {requests} requests, {} failed",
        failed.len()
    );
    // Only requests in flight on the killed cell's instance may fail (the router
    // retries refused connections, not requests a dying backend dropped).
    let late: Vec<_> = failed
        .iter()
        .filter(|(at, _)| at.duration_since(killed) > Duration::from_secs(1))
        .collect();
    assert!(
        late.is_empty(),
        "requests failed after a cell was lost: {late:?}"
    );
    platform.wait_for("hello", "/", Duration::from_secs(60), |r| r.status == 200);
}
