//! Fault injection (issue 12): under a steady workload (GETs through both routers, a
//! push every couple of seconds, the app log lines the GETs make), each component of a
//! distributed platform is killed with SIGKILL in turn and restarted as a supervisor
//! would, NATS is killed and restarted, the blobstore goes away and comes back; on
//! platforms of their own, a private PostgreSQL under the BBS, CC and UAA crashes, and
//! a cell's disk fills up (a tmpfs in a private mount namespace; skipped unless root).
//! Each fault's row reports requests failed and time to heal, and asserts that nothing
//! acknowledged was lost (see `wf_tests::faults` for what "acknowledged" means).
//! `bench/faults.sh` runs these with `--nocapture` and prints the tables.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wf_tests::distributed::{Distributed, CELLS, ROUTERS};
use wf_tests::faults::{
    fill_disk, in_private_mount_namespace, libfaketime, mount_tmpfs, move_to_postgres,
    print_report, FakeClock, FaultRow, FaultRun, PrivatePostgres,
};

/// One platform at a time: two beside each other on 2 cores would skew the times to
/// heal (and each already runs 9 `wfd` processes and a workload).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a killed component stays down before its supervisor restarts it.
const DOWN: Duration = Duration::from_secs(2);

/// Waits for `process` to print `prefix` (its "serving" line) after a restart.
fn serving(run: &mut FaultRun, process: &str, prefix: &str) {
    run.d
        .platform
        .process(process)
        .line_after(prefix, Duration::from_secs(60));
}

/// Asserts the losses of `rows` (and of `last`) are zero, after printing the report.
fn assert_nothing_lost(title: &str, run: &FaultRun, last: &FaultRow) {
    let mut rows = run.rows.clone();
    rows.push(last.clone());
    print_report(title, &wf_tests::faults::report_table(&rows));
    for r in &rows {
        assert_eq!(
            (r.lost_lrps, r.lost_droplets, r.lost_quiet_lines),
            (0, 0, 0),
            "{}: acknowledged DesiredLRPs, droplets or quiet log lines lost: {r:?}",
            r.fault
        );
    }
}

#[test]
fn kill_9_of_each_component_and_nats_and_the_blobstore_lose_nothing_acknowledged() {
    let _one = one_at_a_time();
    let Some(d) = Distributed::start() else {
        return;
    };
    let mut run = FaultRun::start(d, true);
    run.quiet(Duration::from_secs(5));

    // A cell running an instance of the app: its instances are replaced elsewhere,
    // the routers retry their dead endpoints, and the cell comes back empty.
    let victim = run
        .d
        .settled_on(&run.steady_process, 3)
        .and_then(|cells| cells.into_iter().next())
        .unwrap_or_else(|| CELLS[0].to_string());
    run.fault(
        &format!("kill -9 {victim} (restarted after {DOWN:?})"),
        |run| {
            run.d.platform.process(&victim).kill();
            std::thread::sleep(DOWN);
            run.d.platform.process(&victim).restart();
            let prefix = format!("cell {victim}: rep ");
            serving(run, &victim, &prefix);
            Instant::now()
        },
        |_, _| true,
    );
    run.quiet(Duration::from_secs(3));

    // The active BBS: the standby takes the lock; the killed one comes back as standby.
    run.fault(
        &format!("kill -9 active BBS (restarted after {DOWN:?})"),
        |run| {
            run.d.platform.process("bbs-a").kill();
            std::thread::sleep(DOWN);
            run.d.platform.process("bbs-a").restart();
            Instant::now()
        },
        |run, undone| run.pushed_since(undone),
    );
    run.quiet(Duration::from_secs(3));

    run.fault(
        &format!("kill -9 controller (restarted after {DOWN:?})"),
        |run| {
            run.d.platform.process("controller").kill();
            std::thread::sleep(DOWN);
            run.d.platform.process("controller").restart();
            serving(run, "controller", "api: ");
            Instant::now()
        },
        |run, undone| run.pushed_since(undone),
    );
    run.quiet(Duration::from_secs(3));

    run.fault(
        &format!("kill -9 UAA (restarted after {DOWN:?})"),
        |run| {
            run.d.platform.process("uaa").kill();
            std::thread::sleep(DOWN);
            run.d.platform.process("uaa").restart();
            serving(run, "uaa", "uaa: ");
            Instant::now()
        },
        |run, undone| run.pushed_since(undone),
    );
    run.quiet(Duration::from_secs(3));

    // A router: the load balancer's pool goes on to the other one; the restarted one
    // (on a new port) learns every route from its router.start.
    run.fault(
        &format!("kill -9 {} (restarted after {DOWN:?})", ROUTERS[0]),
        |run| {
            run.d.platform.process(ROUTERS[0]).kill();
            std::thread::sleep(DOWN);
            run.d.restart_router(0);
            Instant::now()
        },
        |_, _| true,
    );
    run.quiet(Duration::from_secs(3));

    run.fault(
        "kill -9 nats-server (restarted at once)",
        |run| {
            run.d.nats.restart();
            Instant::now()
        },
        |run, undone| run.pushed_since(undone),
    );
    run.quiet(Duration::from_secs(3));

    // The blobstore goes away (its directory replaced by a file, so every read and
    // write fails) for 10 s: pushes fail meanwhile, running instances keep serving.
    let blobstore_gone = Instant::now();
    let blobstore = run.d.platform.data_dir.join("blobstore");
    let away = run.d.platform.data_dir.join("blobstore.away");
    run.fault(
        "blobstore unavailable for 10 s",
        |_| {
            std::fs::rename(&blobstore, &away).expect("moving the blobstore away");
            std::fs::write(&blobstore, b"not a directory").expect("blocking the blobstore");
            std::thread::sleep(Duration::from_secs(10));
            std::fs::remove_file(&blobstore).expect("unblocking the blobstore");
            std::fs::rename(&away, &blobstore).expect("moving the blobstore back");
            Instant::now()
        },
        |run, undone| run.pushed_since(undone),
    );
    // Pushes that failed meanwhile say why, as CF does (CF-BlobstoreUnavailable).
    for push in run.workload.pushes() {
        if !push.ok && push.started >= blobstore_gone {
            assert!(
                push.output.contains("blobstore unavailability"),
                "{}: {}",
                push.name,
                push.output
            );
        }
    }
    run.quiet(Duration::from_secs(3));

    let last = run.finish();
    assert_nothing_lost("kill -9 each component, NATS, blobstore", &run, &last);
    run.d.platform.stop();
}

#[test]
fn a_postgresql_restart_loses_nothing_acknowledged() {
    let _one = one_at_a_time();
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let Some(mut d) = Distributed::start() else {
        return;
    };
    move_to_postgres(&mut d, &pg);
    let mut run = FaultRun::start(d, true);
    run.quiet(Duration::from_secs(5));

    // The BBS, UAA and the Cloud Controller all lose their database at once (every
    // connection cut, as in a crash) for 3 s; routing goes on from the routers' tables.
    run.fault(
        "PostgreSQL crash (BBS, CC, UAA databases), back after 3 s",
        |_| {
            pg.crash();
            std::thread::sleep(Duration::from_secs(3));
            pg.start_server();
            Instant::now()
        },
        |run, undone| run.pushed_since(undone),
    );
    run.quiet(Duration::from_secs(3));

    let last = run.finish();
    assert_nothing_lost("PostgreSQL restart", &run, &last);
    run.d.platform.stop();
}

/// The RUNNING instances the BBS has on cell `cell`.
fn running_on(run: &FaultRun, cell: &str) -> usize {
    run.bbs_post("/v1/actual_lrps/list")
        .and_then(|body| body["actual_lrps"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|lrp| lrp["state"] == "RUNNING" && lrp["instance_key"]["cell_id"] == cell)
        .count()
}

#[test]
fn a_full_disk_on_a_cell_sends_work_elsewhere_and_the_cell_recovers() {
    let _one = one_at_a_time();
    // The fourth cell's data dir is a 64 MB tmpfs, in a mount namespace of the test's
    // own: nothing is mounted outside it, and it goes away with the test.
    in_private_mount_namespace(|| {
        let Some(mut d) = Distributed::start() else {
            return;
        };
        let dir = d.platform.data_dir.join("cell-full");
        mount_tmpfs(&dir, "64m");
        d.start_cell("cell-full", &[]);
        let mut run = FaultRun::start(d, true);
        run.quiet(Duration::from_secs(5));

        // The disk fills up for 15 s while apps are pushed: stagings and instances the
        // auction gives the full cell fail there, with the reason, and go elsewhere;
        // once space is freed the cell takes work again.
        let filled_at = Instant::now();
        run.fault(
            "disk full on a cell for 15 s",
            |_| {
                fill_disk(&dir);
                std::thread::sleep(Duration::from_secs(15));
                std::fs::remove_file(dir.join("filler")).expect("freeing the disk");
                Instant::now()
            },
            |run, undone| run.pushed_since(undone) && running_on(run, "cell-full") > 0,
        );
        let failed: Vec<String> = run
            .workload
            .pushes()
            .into_iter()
            .filter(|p| !p.ok && p.started >= filled_at)
            .map(|p| p.output)
            .collect();
        // The full cell offers no disk to the auction (its rep says so in its log):
        // the other cells stage and run what is pushed meanwhile.
        assert!(
            failed.is_empty(),
            "pushes failed while one cell's disk was full: {failed:#?}"
        );
        run.quiet(Duration::from_secs(3));

        let last = run.finish();
        assert_nothing_lost("disk full on a cell", &run, &last);
        run.d.platform.stop();
    });
}

#[test]
fn clock_jumps_on_the_active_bbs_lose_nothing_acknowledged() {
    let _one = one_at_a_time();
    let Some(lib) = libfaketime() else {
        return;
    };
    let Some(mut d) = Distributed::start() else {
        return;
    };
    // bbs-b reads its wall clock through libfaketime and is made the active BBS.
    let clock = FakeClock::new(lib);
    clock.restart(d.platform.process("bbs-b"));
    d.platform.process("bbs-a").kill();
    d.platform
        .process("bbs-b")
        .line_after("bbs: ", Duration::from_secs(30));
    d.platform.process("bbs-a").restart();
    let mut run = FaultRun::start(d, true);
    run.quiet(Duration::from_secs(5));

    // Its clock steps 2 minutes ahead (its lock, the cells' presences and the
    // ActualLRPs' timestamps are read against it) for 10 s, and back.
    for (name, offset) in [
        ("active BBS clock 2 min ahead for 10 s, then back", "+120"),
        ("active BBS clock 2 min behind for 10 s, then back", "-120"),
    ] {
        run.fault(
            name,
            |_| {
                clock.offset(offset);
                std::thread::sleep(Duration::from_secs(10));
                clock.offset("+0");
                Instant::now()
            },
            |run, undone| run.pushed_since(undone),
        );
        run.quiet(Duration::from_secs(3));
    }

    let last = run.finish();
    assert_nothing_lost("clock jumps", &run, &last);
    // The BBS kept its lock through both steps: no failover, nothing restarted.
    for row in &run.rows {
        assert!(row.restarted.is_empty(), "{}: {row:?}", row.fault);
    }
    run.d.platform.stop();
}
