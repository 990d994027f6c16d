//! Isolation segments end to end, in distributed mode: a fourth cell started with the
//! placement tag `iso1`; an org entitled to the segment and a space assigned to it with
//! `wf`; the app pushed there runs only on the tagged cell, an app of an untagged space
//! never does, and an app whose segment has no cell reports Diego's placement error in
//! `wf app`.

use std::time::Duration;

use wf_tests::distributed::{eventually, Distributed, CELLS};

#[test]
fn an_isolated_space_runs_on_its_segments_cells_only() {
    let Some(mut d) = Distributed::start() else {
        return;
    };
    d.start_cell("cell-iso", &["iso1"]);
    let wf = d.platform.user();
    wf.ok(&["create-isolation-segment", "iso1"]);
    wf.ok(&["enable-org-isolation", &wf.org, "iso1"]);
    let listed = wf.ok(&["isolation-segments"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("iso1") && l.contains(&wf.org)),
        "{listed}"
    );
    let set = wf.ok(&["set-space-isolation-segment", &wf.space, "iso1"]);
    assert!(set.contains("they must be restarted"), "{set}");

    // The isolated app: every instance on the tagged cell.
    let isolated = d.push(&wf, "isolated", 2);
    let cells = d.settled_on(&isolated, 2).expect("two instances");
    assert_eq!(cells, ["cell-iso", "cell-iso"]);
    d.platform
        .wait_for("isolated", "/", Duration::from_secs(30), |r| {
            r.status == 200
        });
    let app = wf.ok(&["app", "isolated"]);
    assert!(
        app.lines()
            .any(|l| l.starts_with("isolation segment:") && l.ends_with("iso1")),
        "{app}"
    );

    // An app of an untagged space: never on the tagged cell.
    wf.ok(&["create-space", "open", "-o", &wf.org]);
    wf.ok(&["target", "-s", "open"]);
    let open = d.push(&wf, "open", 3);
    let cells = d.settled_on(&open, 3).expect("three instances");
    assert!(
        cells.iter().all(|c| CELLS.contains(&c.as_str())),
        "{cells:?}"
    );

    // A segment without cells: the restarted app cannot be placed, and says why.
    wf.ok(&["create-isolation-segment", "iso2"]);
    wf.ok(&["enable-org-isolation", &wf.org, "iso2"]);
    wf.ok(&["set-org-default-isolation-segment", &wf.org, "iso2"]);
    let still = d.settled_on(&open, 3).expect("running until restarted");
    assert!(still.iter().all(|c| CELLS.contains(&c.as_str())));
    let app_guid = wf.app_guid("open");
    let (status, body) = wf.api(
        &d.platform,
        "POST",
        &format!("/v3/apps/{app_guid}/actions/restart"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let error = "found no compatible cell with placement tag \"iso2\"";
    eventually(
        "the placement error in wf app",
        Duration::from_secs(60),
        || wf.ok(&["app", "open"]).contains(error),
    );
    let stats = wf.curl_json(&[&format!("/v3/apps/{app_guid}/processes/web/stats")]);
    assert_eq!(
        stats["resources"][0]["isolation_segment"], "iso2",
        "{stats}"
    );
    assert_eq!(stats["resources"][0]["details"], error, "{stats}");

    // Back to the shared cells: the org's default reset, a restart places it again.
    wf.ok(&["reset-org-default-isolation-segment", &wf.org]);
    wf.ok(&["restart", "open"]);
    eventually("three instances again", Duration::from_secs(60), || {
        d.settled_on(&open, 3)
            .is_some_and(|cells| cells.iter().all(|c| CELLS.contains(&c.as_str())))
    });
    // The isolated app leaves the segment's cells only when restarted after its
    // space's segment is reset.
    wf.ok(&["target", "-s", &wf.space]);
    wf.ok(&["reset-space-isolation-segment", &wf.space]);
    std::thread::sleep(Duration::from_secs(5)); // two of the controller's bulk syncs
    let cells = d.settled_on(&isolated, 2).expect("still running");
    assert_eq!(cells, ["cell-iso", "cell-iso"]);
    wf.ok(&["restart", "isolated"]);
    eventually(
        "the isolated app on the shared cells",
        Duration::from_secs(60),
        || {
            d.settled_on(&isolated, 2)
                .is_some_and(|cells| cells.iter().all(|c| CELLS.contains(&c.as_str())))
        },
    );
    wf.ok(&["disable-org-isolation", &wf.org, "iso2"]);
    wf.ok(&["delete-isolation-segment", "iso2", "-f"]);
    let listed = wf.ok(&["isolation-segments"]);
    assert!(!listed.contains("iso2"), "{listed}");
    d.platform.stop();
}
