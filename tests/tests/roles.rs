//! Roles end to end: an admin creates an org and space and two UAA users; the one given
//! organization_user and space_developer pushes an app and reaches it through the
//! router, the other sees nothing of it (404s, empty lists) until given an auditor's
//! role, after which they may read but not write (CF-NotAuthorized). Only admins create
//! orgs, and space roles need an org role first.

use std::time::Duration;

use serde_json::{json, Value};
use wf_tests::fixtures::fixture_wasm;
use wf_tests::platform::{Platform, Wf, ADMIN_CLIENT_SECRET};

const PASSWORD: &str = "a-user-password-1";

fn guid_of(wf: &Wf, path: &str) -> String {
    let list = wf.curl_json(&[path]);
    list["resources"][0]["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: {list}"))
        .to_string()
}

fn role(kind: &str, user: Value, target: &str, guid: &str) -> Value {
    json!({
        "type": kind,
        "relationships": {"user": {"data": user}, target: {"data": {"guid": guid}}},
    })
}

fn assert_cf_error(status: u16, body: &Value, expected_status: u16, code: u64) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
}

#[test]
fn developers_work_in_their_space_and_outsiders_see_nothing() {
    let platform = Platform::shared();
    let admin = platform.user();
    let org_guid = guid_of(&admin, &format!("/v3/organizations?names={}", admin.org));
    let space_guid = guid_of(&admin, &format!("/v3/spaces?names={}", admin.space));

    let dev_id = platform.create_uaa_user(&admin, "dev1", PASSWORD);
    let outsider_id = platform.create_uaa_user(&admin, "outsider", PASSWORD);
    let dev = Wf::new(&admin.org, &admin.space);
    dev.login_as(platform, "dev1", PASSWORD);
    let outsider = Wf::new(&admin.org, &admin.space);
    outsider.login_as(platform, "outsider", PASSWORD);

    // Without roles nobody sees the org; their first requests make them known users.
    let orgs = dev.curl_json(&["/v3/organizations"]);
    assert_eq!(orgs["resources"], json!([]), "{orgs}");
    let (status, body) = outsider.api(platform, "GET", &format!("/v3/spaces/{space_guid}"), None);
    assert_cf_error(status, &body, 404, 10010);
    let (status, me) = dev.api(platform, "GET", &format!("/v3/users/{dev_id}"), None);
    assert_eq!(
        (status, me["username"].as_str()),
        (200, Some("dev1")),
        "{me}"
    );

    // A space role needs an org role first.
    let space_dev = |id: &str| role("space_developer", json!({"guid": id}), "space", &space_guid);
    let (status, body) = admin.api(platform, "POST", "/v3/roles", Some(space_dev(&dev_id)));
    assert_cf_error(status, &body, 422, 10008);
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("do not have a role in that space's organization"),
        "{body}"
    );
    // By username (and origin) as well as by guid.
    let org_user = role(
        "organization_user",
        json!({"username": "dev1", "origin": "uaa"}),
        "organization",
        &org_guid,
    );
    let (status, body) = admin.api(platform, "POST", "/v3/roles", Some(org_user.clone()));
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["relationships"]["user"]["data"]["guid"],
        dev_id.as_str()
    );
    let (status, body) = admin.api(platform, "POST", "/v3/roles", Some(org_user));
    assert_cf_error(status, &body, 422, 10008);
    let (status, body) = admin.api(platform, "POST", "/v3/roles", Some(space_dev(&dev_id)));
    assert_eq!(status, 201, "{body}");
    let role_guid = body["guid"].as_str().expect("role guid").to_string();
    let roles = dev.curl_json(&[&format!("/v3/roles?user_guids={dev_id}")]);
    assert_eq!(roles["pagination"]["total_results"], 2, "{roles}");

    // The developer pushes and reaches their app.
    dev.ok(&["target", "-o", &dev.org, "-s", &dev.space]);
    dev.push_fixture("dev1-hello", "hello");
    let resp = platform.wait_for("dev1-hello", "/", Duration::from_secs(60), |r| {
        r.status == 200
    });
    assert_eq!(resp.body, "hello from 0\n");
    let app_guid = dev.app_guid("dev1-hello");

    // The outsider sees nothing of it, and cannot create an app in the space.
    let apps = outsider.curl_json(&["/v3/apps"]);
    assert_eq!(apps["resources"], json!([]), "{apps}");
    let (status, body) = outsider.api(platform, "GET", &format!("/v3/apps/{app_guid}"), None);
    assert_cf_error(status, &body, 404, 10010);
    let new_app =
        json!({"name": "intruder", "relationships": {"space": {"data": {"guid": space_guid}}}});
    let (status, body) = outsider.api(platform, "POST", "/v3/apps", Some(new_app.clone()));
    assert_cf_error(status, &body, 422, 10008);
    let (status, body) = outsider.api(
        platform,
        "POST",
        &format!("/v3/apps/{app_guid}/actions/stop"),
        None,
    );
    assert_cf_error(status, &body, 404, 10010);
    let roles = outsider.curl_json(&["/v3/roles"]);
    assert_eq!(roles["resources"], json!([]), "{roles}");

    // As an auditor the outsider reads, but may not write.
    for body in [
        role(
            "organization_user",
            json!({"guid": outsider_id}),
            "organization",
            &org_guid,
        ),
        role(
            "space_auditor",
            json!({"guid": outsider_id}),
            "space",
            &space_guid,
        ),
    ] {
        let (status, body) = admin.api(platform, "POST", "/v3/roles", Some(body));
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = outsider.api(platform, "GET", &format!("/v3/apps/{app_guid}"), None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = outsider.api(platform, "POST", "/v3/apps", Some(new_app));
    assert_cf_error(status, &body, 403, 10003);
    let (status, body) = outsider.api(
        platform,
        "POST",
        &format!("/v3/apps/{app_guid}/actions/stop"),
        None,
    );
    assert_cf_error(status, &body, 403, 10003);
    let (status, body) = outsider.api(platform, "GET", &format!("/v3/apps/{app_guid}/env"), None);
    assert_cf_error(status, &body, 403, 10003);
    // Auditors cannot give themselves more rights.
    let (status, body) = outsider.api(platform, "POST", "/v3/roles", Some(space_dev(&outsider_id)));
    assert_cf_error(status, &body, 403, 10003);

    // Only admins create orgs.
    let (status, body) = dev.api(
        platform,
        "POST",
        "/v3/organizations",
        Some(json!({"name": "dev1-org"})),
    );
    assert_cf_error(status, &body, 403, 10003);

    // Without the developer role the developer can no longer change the app.
    let (status, body) = admin.api(platform, "DELETE", &format!("/v3/roles/{role_guid}"), None);
    assert_eq!(status, 202, "{body}");
    let (status, body) = dev.api(
        platform,
        "POST",
        &format!("/v3/apps/{app_guid}/actions/stop"),
        None,
    );
    assert_cf_error(status, &body, 404, 10010);
    assert_eq!(platform.get("dev1-hello", "/").status, 200);
}

#[test]
fn the_cli_creates_users_and_gives_them_roles() {
    let platform = Platform::shared();
    let admin = platform.user();
    admin.ok(&["create-user", "carol", PASSWORD]);
    let again = admin.ok(&["create-user", "carol", PASSWORD]);
    assert!(again.contains("already exists"), "{again}");
    // Carol has never logged in: the role names her by her UAA id.
    admin.ok(&[
        "set-space-role",
        "carol",
        &admin.org,
        &admin.space,
        "SpaceDeveloper",
    ]);
    let out = admin.fails(&["set-org-role", "carol", &admin.org, "Boss"]);
    assert!(out.contains("Invalid role"), "{out}");

    let carol = Wf::new(&admin.org, &admin.space);
    carol.login_as(platform, "carol", PASSWORD);
    carol.ok(&["target", "-o", &carol.org, "-s", &carol.space]);
    let out = carol.fails(&["create-space", "carol-space", "-o", &carol.org]);
    assert!(out.contains("not authorized"), "{out}");
    admin.ok(&["set-org-role", "carol", &admin.org, "OrgManager"]);
    carol.ok(&["create-space", "carol-space", "-o", &carol.org]);

    let users = carol.curl_json(&["/v3/users?usernames=carol"]);
    assert_eq!(users["resources"][0]["username"], "carol", "{users}");
    let roles = carol.curl_json(&[&format!(
        "/v3/roles?user_guids={}",
        users["resources"][0]["guid"].as_str().unwrap_or_default()
    )]);
    let mut types: Vec<&str> = roles["resources"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["type"].as_str()).collect())
        .unwrap_or_default();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "organization_manager",
            "organization_user",
            "space_developer"
        ],
        "{roles}"
    );
}

#[test]
fn users_log_in_change_their_password_and_are_deleted_with_the_cli() {
    let platform = Platform::shared();
    let admin = platform.user();
    admin.ok(&["create-user", "dave", PASSWORD]);
    admin.ok(&[
        "set-space-role",
        "dave",
        &admin.org,
        &admin.space,
        "SpaceSupporter",
    ]);

    // `wf login` asks for the password (not on the command line), then targets.
    let dave = Wf::new(&admin.org, &admin.space);
    let out = dave.ok_with_input(
        &[
            "login",
            "-a",
            &platform.api_url,
            "-u",
            "dave",
            "-o",
            &admin.org,
            "-s",
            &admin.space,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.contains("Password: "), "{out}");
    assert!(
        out.contains(&format!("space:          {}", admin.space)),
        "{out}"
    );
    // Three wrong passwords and it gives up.
    let eve = Wf::new(&admin.org, &admin.space);
    let out = eve.run(&[
        "login",
        "-a",
        &platform.api_url,
        "-u",
        "dave",
        "-p",
        "wrong",
    ]);
    assert!(!out.status.success());

    let out = admin.ok(&["space-users", &admin.org, &admin.space]);
    assert!(out.contains("SPACE SUPPORTER\n  dave (uaa)"), "{out}");
    assert!(
        out.contains("SPACE AUDITOR\n  No space auditor found"),
        "{out}"
    );
    let out = admin.ok(&["org-users", &admin.org]);
    assert!(out.contains("ORG MANAGER\n"), "{out}");

    // A new password: the session ends, the old password no longer works.
    let new_password = "a-new-password-2";
    let out = dave.ok_with_input(
        &["passwd"],
        &format!("{PASSWORD}\n{new_password}\n{new_password}\n"),
    );
    assert!(out.contains("Please log in again"), "{out}");
    assert!(dave.fails(&["apps"]).contains("Not logged in"));
    assert!(dave
        .fails(&["auth", "dave", PASSWORD])
        .contains("Credentials were rejected"));
    dave.ok(&["auth", "dave", new_password]);
    dave.ok(&["logout"]);
    assert!(dave.fails(&["oauth-token"]).contains("Not logged in"));

    // Deleted from UAA and the controller.
    admin.ok(&["delete-user", "dave", "-f"]);
    assert!(dave
        .fails(&["auth", "dave", new_password])
        .contains("Credentials were rejected"));
    let users = admin.curl_json(&["/v3/users?usernames=dave"]);
    assert_eq!(users["resources"], json!([]), "{users}");
    assert!(admin
        .ok(&["delete-user", "dave", "-f"])
        .contains("does not exist"));

    // An OAuth client logs in with its credentials; its token is fetched again when needed.
    let client = Wf::new(&admin.org, &admin.space);
    client.ok(&["api", &platform.api_url]);
    client.ok(&["auth", "admin", ADMIN_CLIENT_SECRET, "--client-credentials"]);
    let token = client.ok(&["oauth-token"]);
    assert!(token.starts_with("bearer "), "{token}");
    assert!(client
        .fails(&["auth", "admin", "wrong", "--client-credentials"])
        .contains("Credentials were rejected"));
}

/// A tenant: an org and space of their own with a space developer in it.
fn tenant(platform: &Platform, username: &str) -> Wf {
    let admin = platform.user();
    admin.ok(&["create-user", username, PASSWORD]);
    admin.ok(&[
        "set-space-role",
        username,
        &admin.org,
        &admin.space,
        "SpaceDeveloper",
    ]);
    let wf = Wf::new(&admin.org, &admin.space);
    wf.login_as(platform, username, PASSWORD);
    wf.ok(&["target", "-o", &wf.org, "-s", &wf.space]);
    wf
}

fn path_of(fixture: &str) -> String {
    fixture_wasm(fixture)
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

#[test]
fn two_tenants_with_identically_named_apps_see_and_reach_only_their_own() {
    let platform = Platform::shared();
    let alice = tenant(platform, "alice");
    let bob = tenant(platform, "bob");
    alice.ok(&["push", "twin", "-p", &path_of("hello")]);
    // Bob's app has the same name; its default route is Alice's, so he takes another.
    let out = bob.fails(&["push", "twin", "-p", &path_of("hostile")]);
    assert!(
        out.contains("Route already exists with host 'twin'"),
        "{out}"
    );
    bob.ok(&["push", "twin", "-p", &path_of("hostile"), "-n", "twin-bob"]);

    // Each sees only their own.
    let (alice_guid, bob_guid) = (alice.app_guid("twin"), bob.app_guid("twin"));
    assert_ne!(alice_guid, bob_guid);
    for (wf, own, other) in [
        (&alice, &alice_guid, &bob_guid),
        (&bob, &bob_guid, &alice_guid),
    ] {
        let apps = wf.curl_json(&["/v3/apps?names=twin"]);
        let guids: Vec<&str> = apps["resources"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["guid"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(guids, [own.as_str()], "{apps}");
        let (status, body) = wf.api(platform, "GET", &format!("/v3/apps/{other}"), None);
        assert_cf_error(status, &body, 404, 10010);
        let (status, body) = wf.api(
            platform,
            "POST",
            &format!("/v3/apps/{other}/actions/stop"),
            None,
        );
        assert_cf_error(status, &body, 404, 10010);
        let out = wf.ok(&["curl", &format!("/v3/apps/{other}/env")]);
        assert!(out.contains("App not found"), "{out}");
    }

    // Through the router each route reaches its own app...
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (port, hello) = loop {
        let stats = alice.curl_json(&[&format!("/v3/apps/{alice_guid}/processes/web")]);
        let process = stats["guid"].as_str().unwrap_or_default().to_string();
        let stats = alice.curl_json(&[&format!("/v3/processes/{process}/stats")]);
        let port = stats["resources"][0]["instance_ports"][0]["external"].as_u64();
        let hello = platform.get("twin", "/");
        if let (Some(port), 200) = (port, hello.status) {
            break (port, hello);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "twin never served: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(hello.body.contains("hello"), "{hello:?}");
    let resp = platform.get("twin-bob", "/connect?addr=127.0.0.1:1");
    assert_eq!(resp.status, 200, "{resp:?}");
    // ...and Bob's app cannot reach Alice's instance around it.
    let resp = platform.get("twin-bob", &format!("/connect?addr=127.0.0.1:{port}"));
    assert!(resp.body.starts_with("denied"), "{}", resp.body);
}
