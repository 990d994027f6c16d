//! Secrets never reach the logs: a platform whose `wfd dev` logs at debug level for
//! every Wasmfoundry crate is driven through the operations that carry secrets (the
//! admin password and client secret, a user's password, wrong passwords, tokens, an
//! app's environment variables, a user-provided service's credentials, the route
//! services and blob signing secrets, UAA's signing key); then everything it wrote,
//! the app's log stream (`wf logs --recent`), its events and the audit events are
//! searched for each of them. Failed logins lock the user out on the way (UAA's
//! lockout through the HTTP API, as `wf auth` meets it).

use std::ffi::OsString;
use std::time::Duration;

use wf_tests::platform::{Platform, Wf, ADMIN_CLIENT_SECRET, ADMIN_PASSWORD};

/// Debug for Wasmfoundry's crates, info for the rest (wasmtime, hyper, sqlx).
const RUST_LOG: &str = "info,wf_controller=debug,wf_uaa=debug,wf_bbs=debug,wf_host=debug,\
    wf_router=debug,wf_loggregator=debug,wf_buildpacks=debug,wf_messaging=debug,\
    wf_cli=debug,wf_db=debug";

const USER_PASSWORD: &str = "user-pw-3c0e9f1d";
const WRONG_PASSWORD: &str = "wrong-pw-a17b22c4";
const ENV_SECRET: &str = "env-secret-5e8d0b7a";
const SERVICE_PASSWORD: &str = "svc-pw-91f4c3e2";
const ROUTE_SERVICES_SECRET: &str = "rs-secret-0d6a4b58";

#[test]
fn operations_with_secrets_leave_none_in_logs_app_logs_or_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("wfd-dev.log");
    let extra: Vec<OsString> = vec![
        "--route-services-secret".into(),
        ROUTE_SERVICES_SECRET.into(),
    ];
    let mut platform = Platform::start_logged(&extra, RUST_LOG, &log);
    let wf = platform.user();
    let admin_token = wf.token();

    // A user: created with a password, a wrong login, then a right one.
    wf.ok(&["create-user", "sec-user", USER_PASSWORD]);
    let user = Wf::new(&wf.org, &wf.space);
    user.ok(&["api", &platform.api_url]);
    user.fails(&["auth", "sec-user", WRONG_PASSWORD]);
    user.ok(&["auth", "sec-user", USER_PASSWORD]);
    let user_token = user.token();

    // The admin client's secret, through the client_credentials grant.
    let client = Wf::new(&wf.org, &wf.space);
    client.ok(&["api", &platform.api_url]);
    client.ok(&["auth", "admin", ADMIN_CLIENT_SECRET, "--client-credentials"]);
    let client_token = client.token();

    // An app with a secret in its environment and a bound service's credentials,
    // staged and started with them.
    wf.push_fixture("sec-app", "hello");
    wf.ok(&["set-env", "sec-app", "API_KEY", ENV_SECRET]);
    let credentials = serde_json::json!({
        "uri": format!("postgres://app:{SERVICE_PASSWORD}@db.internal/app"),
        "password": SERVICE_PASSWORD,
    });
    wf.ok(&["cups", "sec-db", "-p", &credentials.to_string()]);
    wf.ok(&["bind-service", "sec-app", "sec-db"]);
    wf.ok(&["restage", "sec-app"]);
    platform.wait_for("sec-app", "/", Duration::from_secs(60), |r| r.status == 200);
    wf.ok(&["env", "sec-app"]);

    // UAA's lockout, as a user meets it: five wrong passwords lock the account, and
    // the right one is refused with UAA's message while the lock lasts.
    wf.ok(&["create-user", "locked-user", USER_PASSWORD]);
    let locked = Wf::new(&wf.org, &wf.space);
    locked.ok(&["api", &platform.api_url]);
    for _ in 0..5 {
        locked.fails(&["auth", "locked-user", WRONG_PASSWORD]);
    }
    let out = locked.fails(&["auth", "locked-user", USER_PASSWORD]);
    assert!(
        out.contains("Your account has been locked because of too many failed attempts"),
        "{out}"
    );
    // Others still log in.
    user.ok(&["auth", "sec-user", USER_PASSWORD]);

    let app_logs = wf.ok(&["logs", "sec-app", "--recent"]);
    let app_events = wf.ok(&["events", "sec-app"]);
    let audit_events = wf.ok(&["curl", "/v3/audit_events?per_page=5000"]);
    let read = |name: &str| {
        std::fs::read_to_string(platform.data_dir.join(name))
            .unwrap_or_else(|e| panic!("reading {name}: {e}"))
    };
    let blob_signing_secret = read("blob-signing-secret").trim().to_string();
    let uaa_key = read("uaa-signing-key.pem");
    let uaa_key_line = uaa_key
        .lines()
        .nth(1)
        .expect("a line of UAA's signing key")
        .to_string();
    platform.stop();
    let component_output = std::fs::read_to_string(&log).unwrap();
    assert!(
        component_output.contains("sec-app") || component_output.len() > 1_000,
        "the component log should hold the platform's output:\n{component_output}"
    );

    let bearer = |token: &str| token.trim_start_matches("bearer ").to_string();
    let secrets = [
        ("the admin password", ADMIN_PASSWORD.to_string()),
        ("the admin client secret", ADMIN_CLIENT_SECRET.to_string()),
        ("a user's password", USER_PASSWORD.to_string()),
        ("a wrong password", WRONG_PASSWORD.to_string()),
        ("the admin's token", bearer(&admin_token)),
        ("a user's token", bearer(&user_token)),
        ("a client's token", bearer(&client_token)),
        ("an app's environment variable", ENV_SECRET.to_string()),
        ("a service's credentials", SERVICE_PASSWORD.to_string()),
        (
            "the route services secret",
            ROUTE_SERVICES_SECRET.to_string(),
        ),
        ("the blob signing secret", blob_signing_secret),
        ("UAA's signing key", uaa_key_line),
    ];
    let outputs = [
        ("wfd dev's output", &component_output),
        ("wf logs --recent", &app_logs),
        ("wf events", &app_events),
        ("the audit events", &audit_events),
    ];
    let mut leaks = Vec::new();
    for (where_, text) in outputs {
        for (what, secret) in &secrets {
            assert!(secret.len() >= 8, "{what} is too short to search for");
            for line in text.lines().filter(|line| line.contains(secret.as_str())) {
                leaks.push(format!("{what} in {where_}: {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
