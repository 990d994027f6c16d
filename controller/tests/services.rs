//! User-provided service instances and credential bindings: CRUD in CF's shapes,
//! credentials encrypted at rest and shown only to those who may read secrets (never
//! in audit events), bindings in one space only, `VCAP_SERVICES` in CF's shape, and
//! deleting an instance deletes its bindings. On SQLite, and on PostgreSQL when
//! configured.

mod common;

use common::{start, Api};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use wf_db::testing::Backend;

#[tokio::test]
async fn user_provided_services_on_sqlite() {
    user_provided_services(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn user_provided_services_on_postgres() {
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        user_provided_services(start(Backend::Postgres).await).await;
    }
}

fn detail(response: &Value) -> &str {
    response["errors"][0]["detail"].as_str().unwrap_or_default()
}

async fn user_provided_services(api: Api) {
    let (org, space) = api.org_and_space("svc").await;
    let (_other_org, other_space) = api.org_and_space("svc-other").await;
    let (auditor, auditor_id) = api.new_user("auditor").await;
    api.grant(&auditor_id, "organization_user", "organization", &org)
        .await;
    api.grant(&auditor_id, "space_auditor", "space", &space)
        .await;

    let instance = api
        .post(
            "/v3/service_instances",
            json!({
                "type": "user-provided",
                "name": "my-db",
                "relationships": {"space": {"data": {"guid": space}}},
                "credentials": {"uri": "postgres://u:s3cret@db:5432/x", "port": 5432},
                "syslog_drain_url": "syslog://127.0.0.1:6514",
                "tags": ["db", "pg"],
            }),
        )
        .await;
    let instance_guid = instance["guid"].as_str().unwrap().to_string();
    assert_eq!(instance["type"], "user-provided");
    assert_eq!(instance["tags"], json!(["db", "pg"]));
    assert_eq!(instance["last_operation"]["state"], "succeeded");
    assert_eq!(instance["relationships"]["space"]["data"]["guid"], space);
    assert!(instance.get("credentials").is_none(), "{instance}");

    // Bad input: CF's errors.
    for (body, expected) in [
        (
            json!({"type": "user-provided", "name": "my-db", "relationships": {"space": {"data": {"guid": space}}}}),
            "name is taken: my-db",
        ),
        (
            json!({"type": "user-provided", "name": "x", "relationships": {"space": {"data": {"guid": space}}}, "credentials": [1]}),
            "Credentials must be an object",
        ),
        (
            json!({"type": "user-provided", "name": "x", "relationships": {"space": {"data": {"guid": space}}}, "syslog_drain_url": "ftp://x"}),
            "Syslog drain url is invalid",
        ),
        (
            json!({"type": "user-provided", "name": "x", "relationships": {"space": {"data": {"guid": space}}}, "route_service_url": "http://plain"}),
            "must be https",
        ),
        (
            json!({"type": "user-provided", "name": "x"}),
            "must include space",
        ),
        (json!({"type": "weird", "name": "x"}), "Type must be one of"),
        (
            json!({"type": "user-provided", "name": "x", "relationships": {"space": {"data": {"guid": "nope"}}}}),
            "Invalid space",
        ),
        (
            json!({"type": "user-provided", "name": "x", "unknown": 1}),
            "unknown",
        ),
    ] {
        let (status, response) = api
            .call(Method::POST, "/v3/service_instances", Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
        assert!(
            detail(&response).contains(expected),
            "{expected}: {response}"
        );
    }

    // Credentials: for developers and admins, not auditors; never in events.
    let credentials = api
        .get(&format!(
            "/v3/service_instances/{instance_guid}/credentials"
        ))
        .await;
    assert_eq!(credentials["uri"], "postgres://u:s3cret@db:5432/x");
    let (status, _) = api
        .call_as(
            &auditor,
            Method::GET,
            &format!("/v3/service_instances/{instance_guid}/credentials"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, listed) = api
        .call_as(&auditor, Method::GET, "/v3/service_instances", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed["pagination"]["total_results"], 1,
        "the auditor sees the instance"
    );
    let events = api
        .get(&format!("/v3/audit_events?target_guids={instance_guid}"))
        .await;
    assert_eq!(
        events["resources"][0]["type"],
        "audit.user_provided_service_instance.create"
    );
    assert!(!events.to_string().contains("s3cret"), "{events}");
    assert_eq!(
        events["resources"][0]["data"]["request"]["credentials"],
        "[PRIVATE DATA HIDDEN]"
    );

    // An app to bind, in the same space; one in another space cannot be bound.
    let app = api
        .post(
            "/v3/apps",
            json!({"name": "web", "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let elsewhere = api
        .post(
            "/v3/apps",
            json!({"name": "far", "relationships": {"space": {"data": {"guid": other_space}}}}),
        )
        .await;
    let bind = |app: &str| {
        json!({"type": "app", "name": "primary-db", "relationships": {
            "app": {"data": {"guid": app}},
            "service_instance": {"data": {"guid": instance_guid}},
        }})
    };
    let (status, response) = api
        .call(
            Method::POST,
            "/v3/service_credential_bindings",
            Some(bind(elsewhere["guid"].as_str().unwrap())),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
    assert!(detail(&response).contains("different spaces"), "{response}");
    let binding = api
        .post("/v3/service_credential_bindings", bind(&app_guid))
        .await;
    let binding_guid = binding["guid"].as_str().unwrap().to_string();
    assert_eq!(binding["type"], "app");
    assert_eq!(binding["relationships"]["app"]["data"]["guid"], app_guid);
    let (status, response) = api
        .call(
            Method::POST,
            "/v3/service_credential_bindings",
            Some(bind(&app_guid)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail(&response).contains("already bound"), "{response}");
    let details = api
        .get(&format!(
            "/v3/service_credential_bindings/{binding_guid}/details"
        ))
        .await;
    assert_eq!(details["credentials"]["port"], 5432);
    assert_eq!(details["syslog_drain_url"], "syslog://127.0.0.1:6514");
    let listed = api
        .get(&format!(
            "/v3/service_credential_bindings?app_guids={app_guid}"
        ))
        .await;
    assert_eq!(listed["pagination"]["total_results"], 1);
    let listed = api
        .get("/v3/service_credential_bindings?service_instance_names=my-db")
        .await;
    assert_eq!(listed["pagination"]["total_results"], 1);

    // VCAP_SERVICES in CF's shape.
    let env = api.get(&format!("/v3/apps/{app_guid}/env")).await;
    let services = &env["system_env_json"]["VCAP_SERVICES"];
    let entry = &services["user-provided"][0];
    assert_eq!(entry["label"], "user-provided");
    assert_eq!(entry["name"], "primary-db");
    assert_eq!(entry["instance_name"], "my-db");
    assert_eq!(entry["instance_guid"], instance_guid);
    assert_eq!(entry["binding_guid"], binding_guid);
    assert_eq!(entry["credentials"]["uri"], "postgres://u:s3cret@db:5432/x");
    assert_eq!(entry["tags"], json!(["db", "pg"]));
    assert_eq!(entry["volume_mounts"], json!([]));

    // Updating credentials re-encrypts them; the binding sees the new ones.
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v3/service_instances/{instance_guid}"),
            Some(json!({"credentials": {"uri": "new"}, "syslog_drain_url": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let details = api
        .get(&format!(
            "/v3/service_credential_bindings/{binding_guid}/details"
        ))
        .await;
    assert_eq!(
        details,
        json!({"credentials": {"uri": "new"}, "syslog_drain_url": null, "volume_mounts": []})
    );

    // Deleting the instance deletes its binding.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v3/service_instances/{instance_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/v3/service_credential_bindings/{binding_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let env = api.get(&format!("/v3/apps/{app_guid}/env")).await;
    assert_eq!(env["system_env_json"]["VCAP_SERVICES"], json!({}));
}
