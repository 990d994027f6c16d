//! Route, domain and environment commands end to end: `wf create-route`,
//! `map-route` (creating the route when needed), `unmap-route`, `delete-route`,
//! `domains`, `create-private-domain` / `delete-private-domain`, `set-env` /
//! `unset-env`, checked through the router and the API.

use std::time::{Duration, Instant};

use wf_tests::platform::{http_get, Platform, APPS_DOMAIN};

/// Waits until the router answers `status` for `path` on `host` (a full host name).
fn wait_for_status(platform: &Platform, host: &str, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http_get(platform.router_addr, host, path);
        if resp.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path}: {resp:?}, wanted {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn routes_are_created_mapped_unmapped_and_deleted_with_the_cli() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("rt", "hello");

    let out = wf.ok(&["create-route", APPS_DOMAIN, "--hostname", "rt-extra"]);
    assert!(
        out.contains(&format!("Route rt-extra.{APPS_DOMAIN} has been created.")),
        "{out}"
    );
    let again = wf.ok(&["create-route", APPS_DOMAIN, "--hostname", "rt-extra"]);
    assert!(again.contains("already exists"), "{again}");
    wait_for_status(platform, &format!("rt-extra.{APPS_DOMAIN}"), "/", 404);

    wf.ok(&["map-route", "rt", APPS_DOMAIN, "--hostname", "rt-extra"]);
    wf.ok(&[
        "map-route",
        "rt",
        APPS_DOMAIN,
        "--hostname",
        "rt-api",
        "--path",
        "/v2",
    ]);
    wait_for_status(platform, &format!("rt-extra.{APPS_DOMAIN}"), "/", 200);
    wait_for_status(platform, &format!("rt-api.{APPS_DOMAIN}"), "/v2/x", 200);
    let routes = wf.ok(&["routes"]);
    assert!(
        routes.contains("rt-api") && routes.contains("/v2"),
        "{routes}"
    );

    wf.ok(&[
        "unmap-route",
        "rt",
        APPS_DOMAIN,
        "--hostname",
        "rt-api",
        "--path",
        "/v2",
    ]);
    wait_for_status(platform, &format!("rt-api.{APPS_DOMAIN}"), "/v2/x", 404);
    let out = wf.ok(&[
        "unmap-route",
        "rt",
        APPS_DOMAIN,
        "--hostname",
        "rt-api",
        "--path",
        "/v2",
    ]);
    assert!(out.contains("not currently mapped"), "{out}");
    wf.ok(&["delete-route", APPS_DOMAIN, "--hostname", "rt-extra", "-f"]);
    wait_for_status(platform, &format!("rt-extra.{APPS_DOMAIN}"), "/", 404);
    assert!(!wf.ok(&["routes"]).contains("rt-extra"));
    let out = wf.fails(&["map-route", "rt", "no-such.domain", "--hostname", "x"]);
    assert!(out.contains("Domain 'no-such.domain' not found."), "{out}");

    let domains = wf.ok(&["domains"]);
    assert!(
        domains.contains(APPS_DOMAIN) && domains.contains("shared"),
        "{domains}"
    );

    // A private domain of the org: routes on it reach the app.
    let private = format!("{}.example", wf.org);
    wf.ok(&["create-private-domain", &wf.org, &private]);
    assert!(wf.ok(&["domains"]).contains("private"));
    wf.ok(&["map-route", "rt", &private, "--hostname", "www"]);
    wait_for_status(platform, &format!("www.{private}"), "/", 200);
    wf.ok(&["delete-private-domain", &private, "-f"]);
    assert!(!wf.ok(&["domains"]).contains(&private));
    assert!(!wf.ok(&["routes"]).contains(&private));

    wf.ok(&["set-env", "rt", "COLOR", "blue"]);
    assert!(wf.ok(&["env", "rt"]).contains("COLOR: blue"));
    wf.ok(&["unset-env", "rt", "COLOR"]);
    assert!(!wf.ok(&["env", "rt"]).contains("COLOR"));
    assert!(wf.ok(&["unset-env", "rt", "COLOR"]).contains("was not set"));
}
