//! Quotas end to end with the real `wf`: an admin defines an org quota of two app
//! instances and puts the user's org on it; a pushed app then scales to two instances
//! but not three (CF's message), and a space quota of the org shows and applies.

use wf_tests::platform::Platform;

#[test]
fn an_org_quota_of_two_instances_stops_a_third() {
    let platform = Platform::shared();
    let wf = platform.user();
    let quota = format!("two-of-{}", wf.org);

    let out = wf.ok(&[
        "create-quota",
        &quota,
        "-m",
        "2G",
        "-i",
        "512M",
        "-r",
        "10",
        "-a",
        "2",
    ]);
    assert!(
        out.contains(&format!("Creating org quota {quota} as admin...")),
        "{out}"
    );
    let shown = wf.ok(&["quota", &quota]);
    for line in [
        "total memory:         2G",
        "instance memory:      512M",
        "routes:               10",
        "app instances:        2",
        "paid service plans:   disallowed",
    ] {
        assert!(shown.contains(line), "missing {line:?} in:\n{shown}");
    }
    let listed = wf.ok(&["quotas"]);
    assert!(
        listed.contains("default") && listed.contains(&quota),
        "{listed}"
    );
    let out = wf.ok(&["set-quota", &wf.org, &quota]);
    assert!(
        out.contains(&format!(
            "Setting quota {quota} to org {} as admin...",
            wf.org
        )),
        "{out}"
    );

    wf.push_fixture("bounded", "hello");
    let refused = wf.fails(&["scale", "bounded", "-i", "3"]);
    assert!(
        refused.contains("app_instance_limit app_instance_limit_exceeded"),
        "{refused}"
    );
    wf.ok(&["scale", "bounded", "-i", "2"]);
    let refused = wf.fails(&["scale", "bounded", "-m", "1G"]);
    assert!(
        refused.contains("memory instance_memory_limit_exceeded"),
        "{refused}"
    );

    // Raising the quota lets the app grow.
    wf.ok(&["update-quota", &quota, "-a", "-1"]);
    assert!(wf
        .ok(&["quota", &quota])
        .contains("app instances:        unlimited"));
    wf.ok(&["scale", "bounded", "-i", "3"]);

    // A space quota of the org: at most 3 instances in the space.
    wf.ok(&["create-space-quota", "small", "-a", "3"]);
    let listed = wf.ok(&["space-quotas"]);
    assert!(listed.contains("small"), "{listed}");
    wf.ok(&["set-space-quota", &wf.space, "small"]);
    let refused = wf.fails(&["scale", "bounded", "-i", "4"]);
    assert!(
        refused.contains("app_instance_limit space_app_instance_limit_exceeded"),
        "{refused}"
    );

    // A quota in use is not deleted.
    let refused = wf.fails(&["delete-quota", &quota, "-f"]);
    assert!(
        refused.contains("This quota is applied to one or more organizations"),
        "{refused}"
    );
    wf.ok(&["set-quota", &wf.org, "default"]);
    wf.ok(&["delete-quota", &quota, "-f"]);
    assert!(wf.fails(&["quota", &quota]).contains("not found"));
}
