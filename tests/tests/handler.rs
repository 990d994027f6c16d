//! Handler apps (`wasi:http` components) on the real platform: pushed like any app,
//! detected as handlers by the buildpack, served by the cell with an instance per
//! request, reached through the router, scaled, and logged like servers.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wf_tests::platform::Platform;

const START_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn push_a_handler_reach_it_scale_it_and_read_its_logs() {
    let platform = Platform::shared();
    let wf = platform.user();

    let out = wf.push_fixture("greeter", "handler");
    assert!(
        out.contains("running"),
        "push ends with the app summary:\n{out}"
    );
    let resp = platform.get("greeter", "/hi");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, "hello from handler 0\n");
    assert!(resp.header("x-vcap-request-id").is_some(), "{resp:?}");
    // An instance per request: no state survives from one request to the next.
    assert_eq!(platform.get("greeter", "/count").body, "1\n");
    assert_eq!(platform.get("greeter", "/count").body, "1\n");

    wf.ok(&["scale", "greeter", "-i", "2"]);
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + START_WITHIN;
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "only saw {seen:?}");
        let resp = platform.get("greeter", "/");
        if resp.status == 200 {
            seen.insert(resp.body);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let expected: BTreeSet<String> = (0..2)
        .map(|i| format!("hello from handler {i}\n"))
        .collect();
    assert_eq!(seen, expected);

    // Staging saw a handler; each request's stdout is in the app's log stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = wf.ok(&["logs", "greeter", "--recent"]);
        let complete = logs.contains("wasi:http handler component")
            && logs.contains("[APP/PROC/WEB/0] OUT GET /hi")
            && logs.contains("[APP/PROC/WEB/1] OUT GET /");
        if complete {
            break;
        }
        assert!(Instant::now() < deadline, "logs incomplete:\n{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
