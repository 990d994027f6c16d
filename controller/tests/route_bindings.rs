//! Service route bindings (route services): CF's shapes, errors and roles; a
//! user-provided instance's route service reaching the running app's DesiredLRP at once
//! (bind, a new `route_service_url`, unbind, deleting the instance or the route); and
//! managed ones against the openbrokerapi broker (`tests/brokers/`, mode `route`): sync
//! and async binds with `bind_resource.route`, the broker's `route_service_url`, a
//! broker that gives none (failed, unbound), parameters, unbind, and an instance with
//! route bindings that cannot be deleted. On SQLite, and on PostgreSQL when configured.

mod common;
#[path = "../../tests/brokers/launcher.rs"]
mod launcher;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{staged_app, start_with, Api};
use http::{Method, StatusCode};
use launcher::{python, Broker};
use serde_json::{json, Value};
use wf_bbs::{DesiredLrpFilter, CF_APPS_DOMAIN};
use wf_db::testing::Backend;

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

#[tokio::test]
async fn user_provided_route_services_on_sqlite() {
    user_provided_route_services(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn user_provided_route_services_on_postgres() {
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        user_provided_route_services(start(Backend::Postgres).await).await;
    }
}

#[tokio::test]
async fn managed_route_services_on_sqlite() {
    if let Some(python) = python() {
        managed_route_services(start(Backend::Sqlite).await, &python).await;
    }
}

#[tokio::test]
async fn managed_route_services_on_postgres() {
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        if let Some(python) = python() {
            managed_route_services(start(Backend::Postgres).await, &python).await;
        }
    }
}

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

fn detail(response: &Value) -> &str {
    response["errors"][0]["detail"].as_str().unwrap_or_default()
}

/// A route `host.apps.test` in `space`.
async fn route(api: &Api, space: &str, host: &str) -> String {
    let domains = api.get("/v3/domains?names=apps.test").await;
    let domain = guid(&domains["resources"][0]);
    guid(
        &api.post(
            "/v3/routes",
            json!({"host": host, "relationships": {
                "domain": {"data": {"guid": domain}}, "space": {"data": {"guid": space}}}}),
        )
        .await,
    )
}

/// A started app in `space` that `route` sends traffic to.
async fn started_app(api: &Api, space: &str, name: &str, route: &str) -> String {
    let app = staged_app(api, space, name).await;
    api.post(
        &format!("/v3/routes/{route}/destinations"),
        json!({"destinations": [{"app": {"guid": app}}]}),
    )
    .await;
    let started = api
        .post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    assert_eq!(started["state"], "STARTED", "{started}");
    app
}

/// Waits until the app's DesiredLRP routes `uri` through `route_service_url`.
async fn wait_for_route_service(api: &Api, app: &str, uri: &str, route_service_url: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let filter = DesiredLrpFilter {
            domain: Some(CF_APPS_DOMAIN.into()),
            ..Default::default()
        };
        let lrps = api.bbs.desired_lrps(&filter).await.unwrap();
        let routes: Vec<_> = lrps
            .iter()
            .filter(|l| l.log_guid == app)
            .flat_map(|l| l.routes.cf_router.clone())
            .collect();
        let found = routes
            .iter()
            .find(|r| r.hostnames.iter().any(|h| h == uri))
            .map(|r| r.route_service_url.as_deref());
        if found == Some(route_service_url) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{uri} never had route service {route_service_url:?}: {routes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bind_body(route: &str, instance: &str) -> Value {
    json!({"relationships": {
        "route": {"data": {"guid": route}},
        "service_instance": {"data": {"guid": instance}},
    }})
}

async fn user_provided_route_services(api: Api) {
    let (org, space) = api.org_and_space("rs").await;
    let (_, other_space) = api.org_and_space("rs-other").await;
    let (dev, dev_id) = api.new_user("rs-dev").await;
    api.grant(&dev_id, "organization_user", "organization", &org)
        .await;
    api.grant(&dev_id, "space_developer", "space", &space).await;
    let (auditor, auditor_id) = api.new_user("rs-auditor").await;
    api.grant(&auditor_id, "organization_user", "organization", &org)
        .await;
    api.grant(&auditor_id, "space_auditor", "space", &space)
        .await;

    let ups = |name: &str, space: &str, url: Option<&str>| {
        let mut body = json!({"type": "user-provided", "name": name,
            "relationships": {"space": {"data": {"guid": space}}}});
        if let Some(url) = url {
            body["route_service_url"] = json!(url);
        }
        body
    };
    let rs = guid(
        &api.post(
            "/v3/service_instances",
            ups("rs", &space, Some("https://rs.example/a")),
        )
        .await,
    );
    let plain = guid(
        &api.post("/v3/service_instances", ups("plain", &space, None))
            .await,
    );
    let elsewhere = guid(
        &api.post(
            "/v3/service_instances",
            ups("elsewhere", &other_space, Some("https://rs.example/b")),
        )
        .await,
    );
    let web = route(&api, &space, "web").await;
    let other_route = route(&api, &space, "other").await;
    let app = started_app(&api, &space, "web", &web).await;
    wait_for_route_service(&api, &app, "web.apps.test", None).await;

    // CF's errors.
    for (body, expected) in [
        (
            bind_body(&web, &plain),
            "This service instance does not support route binding",
        ),
        (
            bind_body(&web, &elsewhere),
            "The service instance and the route are in different spaces",
        ),
        (
            bind_body(&web, "nope"),
            "The service instance could not be found: nope",
        ),
        (bind_body("nope", &rs), "The route could not be found: nope"),
        (
            json!({"relationships": {"route": {"data": {"guid": web}}, "service_instance": {"data": {"guid": rs}}}, "parameters": {"a": 1}}),
            "Binding parameters are not supported for user-provided service instances",
        ),
        (
            json!({"relationships": {"route": {"data": {"guid": web}}}}),
            "must include service_instance",
        ),
    ] {
        let (status, response) = api
            .call(Method::POST, "/v3/service_route_bindings", Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
        assert!(
            detail(&response).contains(expected),
            "{expected}: {response}"
        );
    }

    let internal = guid(
        &api.post(
            "/v3/domains",
            json!({"name": "rs.internal", "internal": true}),
        )
        .await,
    );
    let internal_route = guid(
        &api.post(
            "/v3/routes",
            json!({"host": "x", "relationships": {
                "domain": {"data": {"guid": internal}}, "space": {"data": {"guid": space}}}}),
        )
        .await,
    );
    let (status, response) = api
        .call(
            Method::POST,
            "/v3/service_route_bindings",
            Some(bind_body(&internal_route, &rs)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        detail(&response),
        "Route services cannot be bound to internal routes"
    );

    // Readers may not bind; developers may, and the route service reaches the running
    // app's LRP at once.
    let (status, _) = api
        .call_as(
            &auditor,
            Method::POST,
            "/v3/service_route_bindings",
            Some(bind_body(&web, &rs)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut body = bind_body(&web, &rs);
    body["metadata"] = json!({"labels": {"env": "prod"}});
    let (status, binding) = api
        .call_as(&dev, Method::POST, "/v3/service_route_bindings", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{binding}");
    let binding_guid = guid(&binding);
    assert_eq!(binding["route_service_url"], "https://rs.example/a");
    assert_eq!(binding["last_operation"]["type"], "create");
    assert_eq!(binding["last_operation"]["state"], "succeeded");
    assert_eq!(
        binding["relationships"]["route"]["data"]["guid"],
        json!(web)
    );
    assert_eq!(
        binding["relationships"]["service_instance"]["data"]["guid"],
        json!(rs)
    );
    assert_eq!(binding["metadata"]["labels"]["env"], "prod");
    assert!(binding["links"]["route"]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v3/routes/{web}")));
    assert!(binding["links"].get("parameters").is_none(), "{binding}");
    wait_for_route_service(&api, &app, "web.apps.test", Some("https://rs.example/a")).await;

    let (status, again) = api
        .call(
            Method::POST,
            "/v3/service_route_bindings",
            Some(bind_body(&web, &rs)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        again["errors"][0]["title"],
        "CF-ServiceInstanceAlreadyBoundToSameRoute"
    );
    let rs2 = guid(
        &api.post(
            "/v3/service_instances",
            ups("rs2", &space, Some("https://rs.example/c")),
        )
        .await,
    );
    let (status, taken) = api
        .call(
            Method::POST,
            "/v3/service_route_bindings",
            Some(bind_body(&web, &rs2)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        detail(&taken),
        "A route may only be bound to a single service instance"
    );

    // Readers see it; list filters.
    let (status, shown) = api
        .call_as(
            &auditor,
            Method::GET,
            &format!("/v3/service_route_bindings/{binding_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    for query in [
        format!("route_guids={web}"),
        format!("service_instance_guids={rs}"),
        "service_instance_names=rs".to_string(),
        "label_selector=env=prod".to_string(),
    ] {
        let listed = api
            .get(&format!("/v3/service_route_bindings?{query}"))
            .await;
        assert_eq!(
            listed["pagination"]["total_results"], 1,
            "{query}: {listed}"
        );
        assert_eq!(listed["resources"][0]["guid"], json!(binding_guid));
    }
    let with = api
        .get("/v3/service_route_bindings?include=route,service_instance")
        .await;
    assert_eq!(with["included"]["routes"][0]["guid"], json!(web), "{with}");
    assert_eq!(with["included"]["service_instances"][0]["name"], "rs");
    let shown = api
        .get(&format!(
            "/v3/service_route_bindings/{binding_guid}?include=route"
        ))
        .await;
    assert_eq!(shown["included"]["routes"][0]["host"], "web", "{shown}");
    let (status, _) = api
        .call(Method::GET, "/v3/service_route_bindings?include=app", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let none = api
        .get(&format!(
            "/v3/service_route_bindings?route_guids={other_route}"
        ))
        .await;
    assert_eq!(none["pagination"]["total_results"], 0);
    let (outsider, outsider_id) = api.new_user("rs-outsider").await;
    let (outsider_org, _) = api.org_and_space("rs-outsider").await;
    api.grant(
        &outsider_id,
        "organization_user",
        "organization",
        &outsider_org,
    )
    .await;
    let (_, unseen) = api
        .call_as(&outsider, Method::GET, "/v3/service_route_bindings", None)
        .await;
    assert_eq!(unseen["pagination"]["total_results"], 0, "{unseen}");
    let (status, _) = api
        .call_as(
            &outsider,
            Method::GET,
            &format!("/v3/service_route_bindings/{binding_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Metadata; parameters are for managed instances only.
    let (status, patched) = api
        .call_as(
            &dev,
            Method::PATCH,
            &format!("/v3/service_route_bindings/{binding_guid}"),
            Some(json!({"metadata": {"annotations": {"note": "x"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"]["annotations"]["note"], "x");
    let (status, parameters) = api
        .call(
            Method::GET,
            &format!("/v3/service_route_bindings/{binding_guid}/parameters"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(parameters["errors"][0]["title"], "CF-BadRequest");

    // A new route_service_url reaches the route at once.
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v3/service_instances/{rs}"),
            Some(json!({"route_service_url": "https://rs.example/new"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let shown = api
        .get(&format!("/v3/service_route_bindings/{binding_guid}"))
        .await;
    assert_eq!(shown["route_service_url"], "https://rs.example/new");
    wait_for_route_service(&api, &app, "web.apps.test", Some("https://rs.example/new")).await;

    // Unbind: readers may not; then the route goes straight to the app.
    let path = format!("/v3/service_route_bindings/{binding_guid}");
    let (status, _) = api.call_as(&auditor, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.call_as(&dev, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for_route_service(&api, &app, "web.apps.test", None).await;
    let (status, _) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deleting the instance or the route takes the binding with it.
    let binding = api
        .post("/v3/service_route_bindings", bind_body(&web, &rs))
        .await;
    wait_for_route_service(&api, &app, "web.apps.test", Some("https://rs.example/new")).await;
    let (status, _) = api
        .call(Method::DELETE, &format!("/v3/service_instances/{rs}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/v3/service_route_bindings/{}", guid(&binding)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    wait_for_route_service(&api, &app, "web.apps.test", None).await;
    let binding = api
        .post("/v3/service_route_bindings", bind_body(&other_route, &rs2))
        .await;
    api.call(Method::DELETE, &format!("/v3/routes/{other_route}"), None)
        .await;
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/v3/service_route_bindings/{}", guid(&binding)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let events = api
        .get("/v3/audit_events?types=audit.service_route_binding.create,audit.service_route_binding.delete")
        .await;
    assert!(
        events["pagination"]["total_results"].as_u64().unwrap() >= 2,
        "{events}"
    );
}

/// The job a 202 points at, once it is no longer PROCESSING.
async fn finished_job(api: &Api, method: Method, uri: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, headers, response) = api.send_as(Some(&api.token), method, uri, None, body).await;
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

async fn managed_route_services(api: Api, python: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/brokers/osb_broker.py");
    let broker = Broker::start(python, &script, "route");
    let (_, space) = api.org_and_space("mrs").await;
    let job = finished_job(
        &api,
        Method::POST,
        "/v3/service_brokers",
        Some(json!({
            "name": "rs-broker",
            "url": broker.url,
            "authentication": {"type": "basic", "credentials": {"username": "broker", "password": "broker-pass"}},
        })),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let plan = |offering: &str, name: &str| {
        let api = &api;
        let uri = format!("/v3/service_plans?service_offering_names={offering}&names={name}");
        async move { guid(&api.get(&uri).await["resources"][0]) }
    };
    let mut instances = Vec::new();
    for (name, offering, plan_name) in [
        ("rs-sync", "rs", "sync"),
        ("rs-async", "rs", "async"),
        ("rs-none", "rs", "none"),
        ("kv", "kv", "sync"),
    ] {
        let plan = plan(offering, plan_name).await;
        let job = finished_job(
            &api,
            Method::POST,
            "/v3/service_instances",
            Some(json!({"type": "managed", "name": name, "relationships": {
                "space": {"data": {"guid": space}}, "service_plan": {"data": {"guid": plan}}}})),
        )
        .await;
        assert_eq!(job["state"], "COMPLETE", "{name}: {job}");
        let listed = api
            .get(&format!("/v3/service_instances?names={name}"))
            .await;
        instances.push(guid(&listed["resources"][0]));
    }
    let [sync, async_, none, kv] = <[String; 4]>::try_from(instances).unwrap();
    let web = route(&api, &space, "mweb").await;
    let app = started_app(&api, &space, "mweb", &web).await;

    // An offering without route_forwarding cannot be route-bound.
    let (status, response) = api
        .call(
            Method::POST,
            "/v3/service_route_bindings",
            Some(bind_body(&web, &kv)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        detail(&response),
        "This service instance does not support route binding"
    );

    // Sync bind: the broker gets bind_resource.route (no app), gives the URL.
    let mut body = bind_body(&web, &sync);
    body["parameters"] = json!({"mode": "strict"});
    let job = finished_job(&api, Method::POST, "/v3/service_route_bindings", Some(body)).await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    assert_eq!(job["operation"], "service_route_bindings.create");
    let listed = api
        .get(&format!("/v3/service_route_bindings?route_guids={web}"))
        .await;
    let binding = &listed["resources"][0];
    let binding_guid = guid(binding);
    let url = format!("https://rs.example/{binding_guid}");
    assert_eq!(binding["route_service_url"], json!(url));
    assert_eq!(binding["last_operation"]["state"], "succeeded");
    assert!(
        binding["links"]["parameters"]["href"].is_string(),
        "{binding}"
    );
    assert!(
        broker.got(&format!(
            r#"BIND {binding_guid} {{"route": "mweb.apps.test"}}"#
        )),
        "{}",
        broker.requests()
    );
    wait_for_route_service(&api, &app, "mweb.apps.test", Some(&url)).await;
    let events = api
        .get(&format!("/v3/audit_events?target_guids={binding_guid}"))
        .await;
    let types: Vec<&str> = events["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"audit.service_route_binding.start_create")
            && types.contains(&"audit.service_route_binding.create"),
        "{types:?}"
    );
    let parameters = api
        .get(&format!(
            "/v3/service_route_bindings/{binding_guid}/parameters"
        ))
        .await;
    assert_eq!(parameters, json!({"mode": "strict"}));

    // An instance with route bindings cannot be deleted.
    let (status, response) = api
        .call(
            Method::DELETE,
            &format!("/v3/service_instances/{sync}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");

    // Unbind: a job; the broker is asked, and the route goes straight to the app.
    let job = finished_job(
        &api,
        Method::DELETE,
        &format!("/v3/service_route_bindings/{binding_guid}"),
        None,
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    assert!(broker.got(&format!(
        "DELETE /v2/service_instances/{sync}/service_bindings/{binding_guid}"
    )));
    wait_for_route_service(&api, &app, "mweb.apps.test", None).await;

    // Async bind: in progress until the broker's last_operation says so, then fetched.
    let job = finished_job(
        &api,
        Method::POST,
        "/v3/service_route_bindings",
        Some(bind_body(&web, &async_)),
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let listed = api
        .get(&format!("/v3/service_route_bindings?route_guids={web}"))
        .await;
    let binding_guid = guid(&listed["resources"][0]);
    let url = format!("https://rs.example/{binding_guid}");
    assert_eq!(listed["resources"][0]["route_service_url"], json!(url));
    assert!(broker.got(&format!(
        "GET /v2/service_instances/{async_}/service_bindings/{binding_guid}/last_operation"
    )));
    wait_for_route_service(&api, &app, "mweb.apps.test", Some(&url)).await;
    finished_job(
        &api,
        Method::DELETE,
        &format!("/v3/service_route_bindings/{binding_guid}"),
        None,
    )
    .await;
    wait_for_route_service(&api, &app, "mweb.apps.test", None).await;

    // A broker that gives no route_service_url: the bind fails and is undone.
    let job = finished_job(
        &api,
        Method::POST,
        "/v3/service_route_bindings",
        Some(bind_body(&web, &none)),
    )
    .await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert!(
        job["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("route_service_url"),
        "{job}"
    );
    let listed = api
        .get(&format!("/v3/service_route_bindings?route_guids={web}"))
        .await;
    let failed = &listed["resources"][0];
    assert_eq!(failed["last_operation"]["state"], "failed");
    assert!(failed["route_service_url"].is_null());
    let deadline = Instant::now() + Duration::from_secs(10);
    let unbind = format!(
        "DELETE /v2/service_instances/{none}/service_bindings/{}",
        guid(failed)
    );
    while !broker.got(&unbind) {
        assert!(
            Instant::now() < deadline,
            "no orphan mitigation: {}",
            broker.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_route_service(&api, &app, "mweb.apps.test", None).await;
}
