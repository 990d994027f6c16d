//! Durability: every org, app and droplet is in the databases and the blobstore, so
//! restarting `wfd dev` on the same data dir brings the apps back up.

use std::time::Duration;

use wf_tests::platform::Platform;

#[test]
fn restarting_the_platform_brings_the_apps_back() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut platform = Platform::start_on(data_dir.path());
    let wf = platform.user();
    wf.push_fixture("phoenix", "hello");
    wf.ok(&["scale", "phoenix", "-i", "2"]);
    platform.wait_for("phoenix", "/", Duration::from_secs(60), |r| {
        r.body == "hello from 1\n"
    });
    platform.stop();

    let platform = Platform::start_on(data_dir.path());
    // The old ports are gone; log in to the new platform and target the same space.
    wf.login(&platform);
    wf.ok(&["target", "-o", &wf.org, "-s", &wf.space]);
    let resp = platform.wait_for("phoenix", "/", Duration::from_secs(60), |r| r.status == 200);
    assert!(resp.body.starts_with("hello from "), "{resp:?}");
    platform.wait_for("phoenix", "/", Duration::from_secs(60), |r| {
        r.body == "hello from 1\n"
    });
    let app = wf.ok(&["app", "phoenix"]);
    assert!(app.contains("#1") && app.contains("running"), "{app}");
}
