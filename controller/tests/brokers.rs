//! Managed services against a broker written with openbrokerapi (`tests/brokers/`, an
//! independent OSB implementation, run with a Python that has it: `WF_OSB_PYTHON`, or
//! `python3`; skipped without one unless `WF_REQUIRE_OSB` is set): register a broker,
//! plan visibility, sync and async provisioning, app bindings and service keys with
//! the broker's credentials in `VCAP_SERVICES`, unbind and deprovision (also of a
//! deleted app's bindings and a deleted space's instances); a broker that
//! times out or answers garbage (to a provision or a bind) fails the operation with a
//! clear description and gets the orphan-mitigating DELETE; credentials never in broker responses or audit events.
//! On SQLite, and on PostgreSQL when configured.

mod common;
#[path = "../../tests/brokers/launcher.rs"]
mod launcher;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{start_with, Api};
use http::{Method, StatusCode};
use launcher::{python, Broker};
use serde_json::{json, Value};
use wf_db::testing::Backend;

fn start_broker(python: &str, mode: &str) -> Broker {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/brokers/osb_broker.py");
    Broker::start(python, &script, mode)
}

/// Waits until `broker` was sent `line` (`METHOD PATH`).
async fn wait_for(broker: &Broker, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !broker.got(line) {
        assert!(
            Instant::now() < deadline,
            "the broker never got {line}: {}",
            broker.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn managed_services_on_sqlite() {
    if let Some(python) = python() {
        managed_services(Backend::Sqlite, &python).await;
    }
}

#[tokio::test]
async fn managed_services_on_postgres() {
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        if let Some(python) = python() {
            managed_services(Backend::Postgres, &python).await;
        }
    }
}

async fn start(backend: Backend) -> Api {
    start_with(backend, |config| {
        config.brokers = wf_controller::BrokerConfig {
            timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
            max_poll_interval: Duration::from_millis(500),
            max_poll_duration: Duration::from_secs(60),
        };
    })
    .await
}

/// The job a 202 points at, once it is no longer PROCESSING.
async fn finished_job(
    api: &Api,
    token: &str,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> Value {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, headers, response) = api.send_as(Some(token), method, uri, None, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{uri}: {response}");
    let location = headers["location"].to_str().unwrap();
    let job_path = location.strip_prefix("http://cc.test").unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = api.get(&job_path).await;
        if job["state"] != "PROCESSING" {
            return job;
        }
        assert!(Instant::now() < deadline, "job never finished: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

async fn instance_named(api: &Api, name: &str) -> Value {
    let list = api
        .get(&format!("/v3/service_instances?names={name}"))
        .await;
    list["resources"][0].clone()
}

async fn managed_services(backend: Backend, python: &str) {
    let api = start(backend).await;
    let broker = start_broker(python, "good");
    let admin = api.token.clone();
    let (org, space) = api.org_and_space("osb").await;
    let (dev, dev_id) = api.new_user("osb-dev").await;
    api.grant(&dev_id, "organization_user", "organization", &org)
        .await;
    api.grant(&dev_id, "space_developer", "space", &space).await;

    // Only admins register global brokers; the catalog comes in a job.
    let register = json!({
        "name": "kv-broker",
        "url": broker.url,
        "authentication": {"type": "basic", "credentials": {"username": "broker", "password": "broker-pass"}},
    });
    let (status, _) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/service_brokers",
            Some(register.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let job = finished_job(
        &api,
        &admin,
        Method::POST,
        "/v3/service_brokers",
        Some(register),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    assert_eq!(job["operation"], "service_broker.catalog.synchronize");
    let brokers = api.get("/v3/service_brokers").await;
    assert_eq!(brokers["resources"][0]["name"], "kv-broker");
    assert!(!brokers.to_string().contains("broker-pass"), "{brokers}");
    let broker_guid = guid(&brokers["resources"][0]);

    // Plans start admin-only; enable-service-access makes them visible.
    let offerings = api.get("/v3/service_offerings?names=kv").await;
    assert_eq!(offerings["resources"][0]["tags"], json!(["kv", "store"]));
    let (_, offerings) = api
        .call_as(&dev, Method::GET, "/v3/service_offerings", None)
        .await;
    assert_eq!(offerings["pagination"]["total_results"], 0, "{offerings}");
    let plans = api.get("/v3/service_plans?service_offering_names=kv").await;
    let plan = |name: &str| {
        plans["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(guid)
            .unwrap()
    };
    let (sync_plan, async_plan) = (plan("sync"), plan("async"));
    assert_eq!(plans["resources"][0]["visibility_type"], "admin");
    let visibility = api
        .call(
            Method::PATCH,
            &format!("/v3/service_plans/{sync_plan}/visibility"),
            Some(json!({"type": "public"})),
        )
        .await;
    assert_eq!(visibility.0, StatusCode::OK, "{}", visibility.1);
    let visibility = api
        .call(
            Method::PATCH,
            &format!("/v3/service_plans/{async_plan}/visibility"),
            Some(json!({"type": "organization", "organizations": [{"guid": org}]})),
        )
        .await;
    assert_eq!(visibility.1["organizations"][0]["guid"], json!(org));
    let (_, plans) = api
        .call_as(
            &dev,
            Method::GET,
            "/v3/service_plans?service_broker_names=kv-broker&available=true",
            None,
        )
        .await;
    assert_eq!(plans["pagination"]["total_results"], 2, "{plans}");

    // Provision: sync, then async (in progress until the broker's last_operation says so).
    let create = |name: &str, plan: &str| {
        json!({
            "type": "managed", "name": name, "tags": ["mine"],
            "parameters": {"size": "small"},
            "relationships": {"space": {"data": {"guid": space}}, "service_plan": {"data": {"guid": plan}}},
        })
    };
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_instances",
        Some(create("kv-sync", &sync_plan)),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let sync_instance = instance_named(&api, "kv-sync").await;
    assert_eq!(sync_instance["type"], "managed");
    assert_eq!(sync_instance["last_operation"]["type"], "create");
    assert_eq!(sync_instance["last_operation"]["state"], "succeeded");
    assert_eq!(
        sync_instance["relationships"]["service_plan"]["data"]["guid"],
        json!(sync_plan)
    );
    let sync_guid = guid(&sync_instance);
    assert_eq!(
        sync_instance["dashboard_url"],
        json!(format!("https://kv.example/{sync_guid}"))
    );

    let (status, _, _) = api
        .send_as(
            Some(&dev),
            Method::POST,
            "/v3/service_instances",
            None,
            create("kv-async", &async_plan).to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let async_guid = guid(&instance_named(&api, "kv-async").await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let instance = api
            .get(&format!("/v3/service_instances/{async_guid}"))
            .await;
        let state = instance["last_operation"]["state"]
            .as_str()
            .unwrap()
            .to_string();
        if state == "succeeded" {
            assert_eq!(instance["last_operation"]["description"], "ready");
            break;
        }
        assert_eq!(state, "in progress", "{instance}");
        assert!(
            Instant::now() < deadline,
            "async provisioning never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let polls = broker
        .requests()
        .lines()
        .filter(|l| *l == format!("GET /v2/service_instances/{async_guid}/last_operation"))
        .count();
    assert!(polls >= 3, "{}", broker.requests());

    // New parameters go to the broker as an update.
    let job = finished_job(
        &api,
        &dev,
        Method::PATCH,
        &format!("/v3/service_instances/{sync_guid}"),
        Some(json!({"parameters": {"size": "large"}, "tags": ["mine"]})),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let updated = api.get(&format!("/v3/service_instances/{sync_guid}")).await;
    assert_eq!(updated["last_operation"]["type"], "update");
    assert_eq!(updated["last_operation"]["state"], "succeeded");
    assert!(broker.got(&format!("PATCH /v2/service_instances/{sync_guid}")));

    // Bad input: CF's errors.
    let (status, response) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/service_instances",
            Some(create("kv-sync", &sync_plan)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
    let (status, response) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/service_instances",
            Some(create("x", "no-such-plan")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response.to_string().contains("Invalid service plan"),
        "{response}"
    );

    // Bind an app and make a key: the broker's credentials.
    let app = api
        .post(
            "/v3/apps",
            json!({"name": "web", "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    let app_guid = guid(&app);
    let bind = json!({"type": "app", "relationships": {
        "app": {"data": {"guid": app_guid}},
        "service_instance": {"data": {"guid": sync_guid}},
    }});
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_credential_bindings",
        Some(bind),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let env = api.get(&format!("/v3/apps/{app_guid}/env")).await;
    let entry = &env["system_env_json"]["VCAP_SERVICES"]["kv"][0];
    assert_eq!(entry["label"], "kv", "{env}");
    assert_eq!(entry["plan"], "sync");
    assert_eq!(entry["provider"], Value::Null);
    assert_eq!(entry["name"], "kv-sync");
    assert_eq!(entry["instance_guid"], json!(sync_guid));
    assert_eq!(entry["tags"], json!(["kv", "store", "mine"]));
    assert_eq!(entry["credentials"]["password"], "kv-s3cret");
    let binding_guid = entry["binding_guid"].as_str().unwrap().to_string();

    let key = json!({"type": "key", "name": "k1", "relationships": {
        "service_instance": {"data": {"guid": async_guid}},
    }});
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_credential_bindings",
        Some(key),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let keys = api
        .get(&format!(
            "/v3/service_credential_bindings?type=key&service_instance_guids={async_guid}"
        ))
        .await;
    let key_guid = guid(&keys["resources"][0]);
    let details = api
        .get(&format!(
            "/v3/service_credential_bindings/{key_guid}/details"
        ))
        .await;
    assert_eq!(details["credentials"]["password"], "kv-s3cret");
    // The async plan binds asynchronously: polled, then fetched.
    assert!(
        broker.got(&format!(
            "GET /v2/service_instances/{async_guid}/service_bindings/{key_guid}/last_operation"
        )),
        "{}",
        broker.requests()
    );
    assert!(broker.got(&format!(
        "GET /v2/service_instances/{async_guid}/service_bindings/{key_guid}"
    )));
    wait_for(
        &broker,
        &format!("PUT /v2/service_instances/{async_guid}/service_bindings/{key_guid}"),
    )
    .await;

    // Secrets stay out of audit events; a broker with instances stays.
    let events = api.get("/v3/audit_events?per_page=5000").await;
    let text = events.to_string();
    for secret in ["kv-s3cret", "broker-pass", "small", "large"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("audit.service_instance.create"));
    assert!(text.contains("audit.service_binding.create"));
    assert!(text.contains("audit.service_key.create"));
    let (status, response) = api
        .call(
            Method::DELETE,
            &format!("/v3/service_brokers/{broker_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .to_string()
            .contains("Can not remove brokers that have associated service instances"),
        "{response}"
    );
    let (status, response) = api
        .call_as(
            &dev,
            Method::DELETE,
            &format!("/v3/service_instances/{sync_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response.to_string().contains("must first be deleted"),
        "{response}"
    );

    // Unbind, delete the key, deprovision: the broker gets the DELETEs.
    for binding in [&binding_guid, &key_guid] {
        let job = finished_job(
            &api,
            &dev,
            Method::DELETE,
            &format!("/v3/service_credential_bindings/{binding}"),
            None,
        )
        .await;
        assert_eq!(job["state"], "COMPLETE", "{job}");
    }
    let env = api.get(&format!("/v3/apps/{app_guid}/env")).await;
    assert_eq!(env["system_env_json"]["VCAP_SERVICES"], json!({}));
    for instance in [&sync_guid, &async_guid] {
        let job = finished_job(
            &api,
            &dev,
            Method::DELETE,
            &format!("/v3/service_instances/{instance}"),
            None,
        )
        .await;
        assert_eq!(job["state"], "COMPLETE", "{job}");
        let (status, _) = api
            .call(
                Method::GET,
                &format!("/v3/service_instances/{instance}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let requests = broker.requests();
    assert!(requests.contains(&format!(
        "DELETE /v2/service_instances/{sync_guid}/service_bindings/{binding_guid}"
    )));
    assert!(requests.contains(&format!("DELETE /v2/service_instances/{async_guid}")));

    // Brokers that time out or answer garbage: the create fails, saying why, and the
    // broker gets a deprovision (orphan mitigation).
    for (mode, expected) in [
        ("slow", "did not answer within"),
        ("garbage", "invalid response: status 201"),
    ] {
        let bad = start_broker(python, mode);
        let job = finished_job(
            &api,
            &admin,
            Method::POST,
            "/v3/service_brokers",
            Some(json!({
                "name": format!("{mode}-broker"),
                "url": bad.url,
                "authentication": {"type": "basic", "credentials": {"username": "broker", "password": "broker-pass"}},
            })),
        )
        .await;
        assert_eq!(job["state"], "COMPLETE", "{job}");
        let plans = api
            .get(&format!(
                "/v3/service_plans?service_broker_names={mode}-broker&names=sync"
            ))
            .await;
        let plan = guid(&plans["resources"][0]);
        api.call(
            Method::PATCH,
            &format!("/v3/service_plans/{plan}/visibility"),
            Some(json!({"type": "public"})),
        )
        .await;
        let name = format!("kv-{mode}");
        let job = finished_job(
            &api,
            &dev,
            Method::POST,
            "/v3/service_instances",
            Some(create(&name, &plan)),
        )
        .await;
        assert_eq!(job["state"], "FAILED", "{job}");
        assert!(
            job["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{job}"
        );
        let instance = instance_named(&api, &name).await;
        assert_eq!(instance["last_operation"]["state"], "failed", "{instance}");
        assert!(
            instance["last_operation"]["description"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{instance}"
        );
        wait_for(
            &bad,
            &format!("DELETE /v2/service_instances/{}", guid(&instance)),
        )
        .await;
    }

    // A bind answered with garbage fails, and the broker gets the unbind.
    let bad = start_broker(python, "garbage-bind");
    let job = finished_job(
        &api,
        &admin,
        Method::POST,
        "/v3/service_brokers",
        Some(json!({
            "name": "garbage-bind-broker",
            "url": bad.url,
            "authentication": {"type": "basic", "credentials": {"username": "broker", "password": "broker-pass"}},
        })),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let plans = api
        .get("/v3/service_plans?service_broker_names=garbage-bind-broker&names=sync")
        .await;
    let plan = guid(&plans["resources"][0]);
    api.call(
        Method::PATCH,
        &format!("/v3/service_plans/{plan}/visibility"),
        Some(json!({"type": "public"})),
    )
    .await;
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_instances",
        Some(create("kv-gb", &plan)),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let gb_instance = guid(&instance_named(&api, "kv-gb").await);
    let bind = json!({"type": "app", "relationships": {
        "app": {"data": {"guid": app_guid}},
        "service_instance": {"data": {"guid": gb_instance}},
    }});
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_credential_bindings",
        Some(bind),
    )
    .await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert!(
        job["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("invalid response"),
        "{job}"
    );
    let bindings = api
        .get(&format!(
            "/v3/service_credential_bindings?service_instance_guids={gb_instance}"
        ))
        .await;
    let failed = &bindings["resources"][0];
    assert_eq!(failed["last_operation"]["state"], "failed", "{bindings}");
    wait_for(
        &bad,
        &format!(
            "DELETE /v2/service_instances/{gb_instance}/service_bindings/{}",
            guid(failed)
        ),
    )
    .await;
    let env = api.get(&format!("/v3/apps/{app_guid}/env")).await;
    assert_eq!(env["system_env_json"]["VCAP_SERVICES"], json!({}), "{env}");

    // Space developers register space-scoped brokers, whose plans only their space sees.
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_brokers",
        Some(json!({
            "name": "kv-space",
            "url": broker.url,
            "authentication": {"type": "basic", "credentials": {"username": "broker", "password": "broker-pass"}},
            "relationships": {"space": {"data": {"guid": space}}},
        })),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let (_, plans) = api
        .call_as(
            &dev,
            Method::GET,
            "/v3/service_plans?service_broker_names=kv-space",
            None,
        )
        .await;
    assert_eq!(plans["pagination"]["total_results"], 2, "{plans}");
    assert_eq!(plans["resources"][0]["visibility_type"], "space");
    let (outsider, outsider_id) = api.new_user("osb-outsider").await;
    let (other_org, _) = api.org_and_space("osb-other").await;
    api.grant(
        &outsider_id,
        "organization_user",
        "organization",
        &other_org,
    )
    .await;
    let (_, seen) = api
        .call_as(
            &outsider,
            Method::GET,
            "/v3/service_plans?service_broker_names=kv-space",
            None,
        )
        .await;
    assert_eq!(seen["pagination"]["total_results"], 0, "{seen}");
    let (_, brokers) = api
        .call_as(&outsider, Method::GET, "/v3/service_brokers", None)
        .await;
    assert_eq!(brokers["pagination"]["total_results"], 0, "{brokers}");
    let space_plan = guid(&plans["resources"][0]);
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_instances",
        Some(create("kv-space-1", &space_plan)),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");

    // Deleting an app unbinds its managed bindings at the broker; deleting a space
    // deprovisions its managed instances.
    let space_instance = guid(&instance_named(&api, "kv-space-1").await);
    let app = api
        .post(
            "/v3/apps",
            json!({"name": "web2", "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    let bind = json!({"type": "app", "relationships": {
        "app": {"data": {"guid": guid(&app)}},
        "service_instance": {"data": {"guid": space_instance}},
    }});
    let job = finished_job(
        &api,
        &dev,
        Method::POST,
        "/v3/service_credential_bindings",
        Some(bind),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let bindings = api
        .get(&format!(
            "/v3/service_credential_bindings?service_instance_guids={space_instance}"
        ))
        .await;
    let binding = guid(&bindings["resources"][0]);
    let (status, _) = api
        .call(Method::DELETE, &format!("/v3/apps/{}", guid(&app)), None)
        .await;
    assert!(status.is_success(), "{status}");
    wait_for(
        &broker,
        &format!("DELETE /v2/service_instances/{space_instance}/service_bindings/{binding}"),
    )
    .await;
    let (status, _) = api
        .call(Method::DELETE, &format!("/v3/spaces/{space}"), None)
        .await;
    assert!(status.is_success(), "{status}");
    wait_for(
        &broker,
        &format!("DELETE /v2/service_instances/{space_instance}"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while api
        .call(
            Method::GET,
            &format!("/v3/service_instances/{space_instance}"),
            None,
        )
        .await
        .0
        != StatusCode::NOT_FOUND
    {
        assert!(
            Instant::now() < deadline,
            "the deprovisioned instance stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broker whose catalog cannot be fetched is not registered.
    let job = finished_job(
        &api,
        &admin,
        Method::POST,
        "/v3/service_brokers",
        Some(json!({
            "name": "wrong-password",
            "url": broker.url,
            "authentication": {"type": "basic", "credentials": {"username": "broker", "password": "nope"}},
        })),
    )
    .await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert!(
        job["errors"][0]["detail"].as_str().unwrap().contains("401"),
        "{job}"
    );
    let brokers = api.get("/v3/service_brokers?names=wrong-password").await;
    assert_eq!(brokers["pagination"]["total_results"], 0);
}
