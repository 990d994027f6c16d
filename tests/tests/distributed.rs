//! Distributed mode: one process per component over a real NATS (two BBS, three cells,
//! two routers), driven through what an operator sees: a cell killed, a cell cut off
//! and back, a cell drained, the active BBS killed, a router restarted, NATS restarted.
//! The app keeps answering and the platform heals each time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wf_messaging::{Bus, NatsTls};
use wf_tests::distributed::{
    eventually, generate_certs, mtls_client, Distributed, LOCK_TTL_SECS, ROUTERS,
};

/// (presence, cell id) of the RUNNING instances of `process_guid`, sorted.
fn running(d: &Distributed, process_guid: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = d
        .actual_lrps(process_guid)
        .iter()
        .filter(|lrp| lrp["state"] == "RUNNING")
        .map(|lrp| {
            (
                lrp["presence"].as_str().unwrap_or("").to_string(),
                lrp["instance_key"]["cell_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The BBS API, the reps and NATS answer only clients with a certificate of the
/// platform CA: not a client without one, nor one whose certificate another CA signed
/// (even one trusting the platform CA), nor plain HTTP or NATS.
fn assert_internal_apis_refuse_strangers(d: &Distributed) {
    let bbs = format!("{}/v1/actual_lrps/list", d.bbs_urls[0]);
    let rep = format!("{}/state", d.reps[0]);
    let insider = d.internal_client();
    let no_certificate = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let other = tempfile::tempdir().unwrap();
    generate_certs(other.path());
    let both_cas = other.path().join("both.pem");
    let mut pem = std::fs::read(d.certs.join("ca.pem")).unwrap();
    pem.extend(std::fs::read(other.path().join("ca.pem")).unwrap());
    std::fs::write(&both_cas, pem).unwrap();
    let other_ca = mtls_client(&both_cas, other.path(), "controller");
    for url in [&bbs, &rep] {
        let post = |client: &reqwest::blocking::Client| {
            let req = if url.ends_with("/state") {
                client.get(url)
            } else {
                client.post(url).json(&serde_json::json!({}))
            };
            req.send().and_then(|r| r.error_for_status())
        };
        post(&insider).unwrap_or_else(|e| panic!("{url} refused the platform's client: {e}"));
        let refused = post(&no_certificate).expect_err("a client without a certificate");
        assert!(!refused.is_status(), "{url}: {refused:?}");
        let refused = post(&other_ca).expect_err("a certificate of another CA");
        assert!(!refused.is_status(), "{url}: {refused:?}");
        let plain = reqwest::blocking::Client::new()
            .get(url.replacen("https://", "http://", 1))
            .timeout(Duration::from_secs(10))
            .send()
            .and_then(|r| r.error_for_status());
        assert!(plain.is_err(), "{url} answered plain HTTP");
    }

    // NATS takes TLS clients with a certificate of the platform CA only.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nats = d.nats.url();
    let connect = |tls: Option<NatsTls>| runtime.block_on(Bus::nats_with_tls(&nats, tls.as_ref()));
    let ca = d.certs.join("ca.pem");
    assert!(connect(None).is_err(), "NATS took a plain client");
    let no_certificate = NatsTls {
        ca: ca.clone(),
        client_certificate: None,
    };
    assert!(
        connect(Some(no_certificate)).is_err(),
        "NATS took a client without a certificate"
    );
    let other_ca = NatsTls {
        ca: both_cas.clone(),
        client_certificate: Some((
            other.path().join("controller.pem"),
            other.path().join("controller-key.pem"),
        )),
    };
    assert!(
        connect(Some(other_ca)).is_err(),
        "NATS took another CA's certificate"
    );
    let insider = NatsTls {
        ca,
        client_certificate: Some((
            d.certs.join("controller.pem"),
            d.certs.join("controller-key.pem"),
        )),
    };
    connect(Some(insider)).expect("NATS refused the platform's certificate");
}

#[test]
fn a_lost_cell_is_replaced_within_its_presence_ttl_on_default_timers() {
    let Some(mut d) = Distributed::start_with(false) else {
        return;
    };
    assert_internal_apis_refuse_strangers(&d);
    let wf = d.platform.user();
    // The controller's collector scrapes the BBS's `/metrics` with its certificate.
    let platform_metrics = reqwest::blocking::Client::new()
        .get(format!("{}/metrics/platform", d.platform.api_url))
        .header("Authorization", wf.token())
        .timeout(Duration::from_secs(30))
        .send()
        .and_then(|r| r.text())
        .unwrap();
    assert!(
        platform_metrics
            .lines()
            .any(|l| l.starts_with("up{component=\"bbs\"") && l.ends_with(" 1")),
        "{platform_metrics}"
    );
    let process_guid = d.push(&wf, "steady", 2);
    let cells = d.settled_on(&process_guid, 2).expect("two instances");
    let victim = cells[0].clone();
    d.platform.process(&victim).kill();
    let killed = Instant::now();
    let mut failed = 0;
    eventually(
        "the lost instance replaced",
        Duration::from_secs(60),
        || {
            failed += usize::from(d.platform.get("steady", "/").status != 200);
            d.settled_on(&process_guid, 2)
                .is_some_and(|cells| !cells.contains(&victim))
        },
    );
    eprintln!(
        "default timers: kill -9 of a cell -> replaced in {:?} ({failed} requests failed)",
        killed.elapsed()
    );
    assert_eq!(failed, 0, "the router retries the lost instance's endpoint");
    d.platform.stop();
}

#[test]
fn the_platform_heals_when_cells_the_bbs_a_router_or_nats_fail() {
    let Some(mut d) = Distributed::start() else {
        return;
    };
    let wf = d.platform.user();
    let process_guid = d.push(&wf, "spread", 3);

    // The auction spreads one app's instances over the cells.
    eventually(
        "three instances on three cells",
        Duration::from_secs(60),
        || {
            d.settled_on(&process_guid, 3)
                .is_some_and(|cells| cells.iter().collect::<BTreeSet<_>>().len() == 3)
        },
    );
    for router in 0..ROUTERS.len() {
        eventually(
            "every router to serve the app",
            Duration::from_secs(30),
            || d.get_via(router, "spread", "/").status == 200,
        );
    }

    // Logs cross NATS: the cells' app lines and the routers' access lines reach the
    // log cache in the controller.
    eventually(
        "app and router logs in wf logs --recent",
        Duration::from_secs(30),
        || {
            let logs = wf.ok(&["logs", "spread", "--recent"]);
            logs.contains("[APP/PROC/WEB/0] OUT GET /") && logs.contains("[RTR/")
        },
    );

    // A cell dies (kill -9). Its presence expires, convergence marks its instance
    // SUSPECT and auctions a replacement; meanwhile both routers retry its dead
    // endpoint on another instance, so no request fails.
    d.platform.process("cell-a").kill();
    let killed = Instant::now();
    let mut failed = Vec::new();
    let mut requests = 0;
    eventually(
        "cell-a's instance replaced",
        Duration::from_secs(60),
        || {
            for router in 0..ROUTERS.len() {
                let resp = d.get_via(router, "spread", "/");
                requests += 1;
                if resp.status != 200 {
                    failed.push(resp);
                }
            }
            d.settled_on(&process_guid, 3)
                .is_some_and(|cells| !cells.iter().any(|c| c == "cell-a"))
        },
    );
    let healed_in = killed.elapsed();
    eprintln!(
        "kill -9 of a cell: replaced and routed in {healed_in:?}, {requests} requests, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed while a cell was lost: {failed:?}"
    );

    // A cell is cut off (frozen) and comes back: its instance was SUSPECT, replaced
    // meanwhile, and on its return the suspect is dropped and stopped: one instance
    // per index, no SUSPECT left.
    let before: Vec<(String, String)> = running(&d, &process_guid);
    assert!(
        before.iter().any(|(_, cell)| cell == "cell-b"),
        "{before:?}"
    );
    d.platform.process("cell-b").signal("STOP");
    let mut saw_suspect = false;
    eventually(
        "cell-b's instances replaced",
        Duration::from_secs(60),
        || {
            let rows = running(&d, &process_guid);
            saw_suspect |= rows.iter().any(|(p, c)| p == "SUSPECT" && c == "cell-b");
            let ordinary_elsewhere = rows
                .iter()
                .filter(|(p, c)| p == "ORDINARY" && c != "cell-b")
                .count();
            ordinary_elsewhere == 3
        },
    );
    eprintln!("cell cut off: its instances replaced (seen as SUSPECT meanwhile: {saw_suspect})");
    d.platform.process("cell-b").signal("CONT");
    eventually(
        "one ORDINARY instance per index, none on the returned cell",
        Duration::from_secs(60),
        || {
            d.settled_on(&process_guid, 3)
                .is_some_and(|cells| cells.iter().all(|c| c == "cell-c"))
        },
    );
    for _ in 0..10 {
        for router in 0..ROUTERS.len() {
            let resp = d.get_via(router, "spread", "/");
            assert_eq!(resp.status, 200, "{resp:?}");
        }
    }

    // cell-c is drained (evacuated): each instance keeps serving as EVACUATING until
    // its replacement runs on cell-b, so no request fails; then cell-c exits.
    d.evacuate(2);
    let mut failed = Vec::new();
    eventually(
        "cell-c's instances handed over to cell-b",
        Duration::from_secs(60),
        || {
            for router in 0..ROUTERS.len() {
                let resp = d.get_via(router, "spread", "/");
                if resp.status != 200 {
                    failed.push(resp);
                }
            }
            d.settled_on(&process_guid, 3)
                .is_some_and(|cells| cells.iter().all(|c| c == "cell-b"))
        },
    );
    assert!(
        failed.is_empty(),
        "requests failed during the evacuation: {failed:?}"
    );
    assert!(
        d.platform
            .process("cell-c")
            .exits_within(Duration::from_secs(30)),
        "an evacuated cell exits"
    );

    // The standby BBS holds its address without listening: connections are refused
    // (clients go on to the active one) and no other process is given its port.
    let standby = d.bbs_urls[1].trim_start_matches("https://").to_string();
    let refused = std::net::TcpStream::connect(&standby).map_err(|e| e.kind());
    assert_eq!(
        refused.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "the standby BBS at {standby} must refuse connections"
    );

    // The active BBS dies: the standby takes the `bbs` lock once it expires, and the
    // cells and the controller follow it to its URL.
    d.platform.process("bbs-a").kill();
    d.platform
        .process("bbs-b")
        .line_after("bbs: ", Duration::from_secs(LOCK_TTL_SECS * 5));
    wf.ok(&["scale", "spread", "-i", "4"]);
    eventually(
        "four instances under the new BBS",
        Duration::from_secs(60),
        || d.settled_on(&process_guid, 4).is_some(),
    );

    // A new router learns every route at once: its router.start makes the
    // route-emitter re-publish, without waiting for the 20 s re-emit.
    d.restart_router(1);
    let restarted = Instant::now();
    eventually(
        "the restarted router to serve the app",
        Duration::from_secs(15),
        || d.get_via(1, "spread", "/").status == 200,
    );
    eprintln!(
        "restarted router: routes learned in {:?}",
        restarted.elapsed()
    );

    // NATS restarts: the route-emitter and the routers reconnect, and unregistrations
    // after the restart still reach them (scaled down, only index 0 answers).
    d.nats.restart();
    wf.ok(&["scale", "spread", "-i", "1"]);
    eventually("one instance left", Duration::from_secs(60), || {
        d.settled_on(&process_guid, 1).is_some()
    });
    for router in 0..ROUTERS.len() {
        eventually("only index 0 routed", Duration::from_secs(30), || {
            d.get_via(router, "spread", "/").body == "hello from 0\n"
        });
        for _ in 0..20 {
            let resp = d.get_via(router, "spread", "/");
            assert_eq!(resp.body, "hello from 0\n", "{resp:?}");
        }
    }

    d.platform.stop();
}
