//! Managed services as an operator and a developer use them, against a broker written
//! with openbrokerapi (`tests/brokers/`): `wf create-service-broker`,
//! `enable-service-access`, `marketplace`, `create-service --wait`, `update-service`,
//! `bind-service` and
//! a restart that puts the broker's credentials into `VCAP_SERVICES`, service keys,
//! then `unbind-service`, `delete-service` (the broker gets the deprovision) and
//! `delete-service-broker`.

#[path = "../brokers/launcher.rs"]
mod launcher;

use std::path::Path;

use launcher::Broker;
use wf_tests::platform::Platform;

#[test]
fn a_managed_service_reaches_the_env_of_a_bound_app() {
    let Some(python) = launcher::python() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("brokers/osb_broker.py");
    let broker = Broker::start(&python, &script, "good");
    let platform = Platform::shared();
    let wf = platform.user();

    let out = wf.ok(&[
        "create-service-broker",
        "e2e-kv",
        "broker",
        "broker-pass",
        &broker.url,
    ]);
    assert!(out.contains("Creating service broker e2e-kv"), "{out}");
    let out = wf.ok(&["service-brokers"]);
    assert!(out.contains("e2e-kv") && out.contains(&broker.url), "{out}");
    assert!(!out.contains("broker-pass"), "{out}");
    wf.ok(&["enable-service-access", "kv", "-p", "sync"]);
    let out = wf.ok(&["marketplace"]);
    assert!(
        out.contains("kv") && out.contains("sync") && out.contains("e2e-kv"),
        "{out}"
    );
    let out = wf.ok(&["marketplace", "-e", "kv"]);
    assert!(
        out.contains("ready at once") && out.contains("free"),
        "{out}"
    );

    wf.push_fixture("osb-env", "env");
    let out = wf.ok(&[
        "create-service",
        "kv",
        "sync",
        "my-kv",
        "-c",
        r#"{"size":"small"}"#,
        "-t",
        "mine",
        "--wait",
    ]);
    assert!(out.contains("Service instance my-kv created."), "{out}");
    let out = wf.ok(&["services"]);
    assert!(
        out.contains("my-kv")
            && out.contains("kv")
            && out.contains("sync")
            && out.contains("create succeeded"),
        "{out}"
    );
    let out = wf.ok(&["service", "my-kv"]);
    assert!(out.contains("https://kv.example/"), "{out}");

    let out = wf.ok(&[
        "update-service",
        "my-kv",
        "-c",
        r#"{"size":"large"}"#,
        "--wait",
    ]);
    assert!(
        out.contains("Update of service instance my-kv completed."),
        "{out}"
    );
    assert!(wf.ok(&["services"]).contains("update succeeded"));

    wf.ok(&["bind-service", "osb-env", "my-kv"]);
    wf.ok(&["restart", "osb-env"]);
    let vcap = platform.vcap_services("osb-env");
    let entry = &vcap["kv"][0];
    assert_eq!(entry["name"], "my-kv", "{vcap}");
    assert_eq!(entry["label"], "kv");
    assert_eq!(entry["plan"], "sync");
    assert_eq!(entry["tags"], serde_json::json!(["kv", "store", "mine"]));
    assert_eq!(entry["credentials"]["password"], "kv-s3cret");

    wf.ok(&["create-service-key", "my-kv", "k1"]);
    let out = wf.ok(&["service-key", "my-kv", "k1"]);
    assert!(out.contains("kv-s3cret"), "{out}");
    wf.ok(&["delete-service-key", "my-kv", "k1", "-f"]);

    let instance = wf.curl_json(&["/v3/service_instances?names=my-kv"]);
    let guid = instance["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let out = wf.fails(&["delete-service-broker", "e2e-kv", "-f"]);
    assert!(out.contains("associated service instances"), "{out}");
    wf.ok(&["unbind-service", "osb-env", "my-kv"]);
    let out = wf.ok(&["delete-service", "my-kv", "-f"]);
    assert!(out.contains("Service instance my-kv deleted."), "{out}");
    assert!(
        broker.got(&format!("DELETE /v2/service_instances/{guid}")),
        "{}",
        broker.requests()
    );
    wf.ok(&["delete-service-broker", "e2e-kv", "-f"]);
    assert!(wf
        .ok(&["service-brokers"])
        .contains("No service brokers found"));
}
