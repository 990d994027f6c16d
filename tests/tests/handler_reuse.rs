//! Instance reuse for handler apps is the app's explicit option: `WF_HANDLER_REUSE=true`
//! in its environment (`wf set-env`, then a restart) makes the cell keep an instance
//! for the app's next requests, so state in the instance carries over; without it
//! every request gets a fresh instance.

use std::time::Duration;

use wf_tests::platform::Platform;

#[test]
fn set_env_turns_instance_reuse_on_for_a_handler_app() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("counter", "handler");
    for _ in 0..2 {
        assert_eq!(platform.get("counter", "/count").body, "1\n");
    }

    wf.ok(&["set-env", "counter", "WF_HANDLER_REUSE", "true"]);
    wf.ok(&["restart", "counter"]);
    // Once the restarted instance serves, one instance answers one request after
    // another (the router may still reach the old instance for a moment).
    platform.wait_for("counter", "/count", Duration::from_secs(30), |r| {
        r.body == "2\n"
    });
    assert_eq!(platform.get("counter", "/count").body, "3\n");
    assert_eq!(platform.get("counter", "/").body, "hello from handler 0\n");
    assert_eq!(platform.get("counter", "/count").body, "5\n");
}
