//! Revisions and deployments in the Cloud Controller: when an app's revisions are
//! recorded and how they are described, `/revisions/deployed`, their environment
//! variables and metadata with CF's roles, rollbacks through `POST /v3/deployments`
//! with CF's errors, and the canary state machine (PREPAUSED, PAUSED, continue,
//! cancel), with the test playing the cell's part. On SQLite and, when
//! `WF_TEST_POSTGRES_URL` names a server, PostgreSQL.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};
use wf_bbs::{
    ActualLrpInstanceKey, ActualLrpKey, DesiredLrp, DesiredLrpFilter, NetInfo, CF_APPS_DOMAIN,
};
use wf_db::testing::Backend;

mod common;

use common::{droplet_tgz, multipart, staged_app, start, Api};

#[tokio::test]
async fn revisions_on_sqlite() {
    revisions(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn revisions_on_postgres() {
    // Skipped, with a note, unless WF_TEST_POSTGRES_URL is set.
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        revisions(start(Backend::Postgres).await).await;
    }
}

#[tokio::test]
async fn canary_deployments_on_sqlite() {
    canary(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn canary_deployments_on_postgres() {
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        canary(start(Backend::Postgres).await).await;
    }
}

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

/// A new staged droplet of `app` (uploaded, as `wf push --droplet` does).
async fn new_droplet(api: &Api, app: &str, wasm: &[u8]) -> String {
    let droplet = guid(
        &api.post(
            "/v3/droplets",
            json!({"relationships": {"app": {"data": {"guid": app}}}}),
        )
        .await,
    );
    let (status, _, uploaded) = api
        .send(
            Method::POST,
            &format!("/v3/droplets/{droplet}/upload"),
            Some("multipart/form-data; boundary=XYZ"),
            multipart(
                "droplet.tgz",
                &droplet_tgz(wasm, json!({"web": "app.wasm"})),
            ),
            true,
        )
        .await;
    assert!(status.is_success(), "{uploaded}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get(&format!("/v3/droplets/{droplet}")).await["state"] != "STAGED" {
        assert!(Instant::now() < deadline, "the droplet never staged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    droplet
}

/// The app's revisions, oldest first: (version, description).
async fn described(api: &Api, app: &str) -> Vec<(i64, String)> {
    api.get(&format!("/v3/apps/{app}/revisions?per_page=100"))
        .await["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_i64().unwrap(),
                r["description"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn versions(api: &Api, uri: &str) -> Vec<i64> {
    let mut versions: Vec<i64> = api.get(uri).await["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_i64().unwrap())
        .collect();
    versions.sort();
    versions
}

async fn lrps(api: &Api, app: &str) -> Vec<DesiredLrp> {
    let filter = DesiredLrpFilter {
        domain: Some(CF_APPS_DOMAIN.into()),
        ..Default::default()
    };
    api.bbs
        .desired_lrps(&filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.process_guid.starts_with(app))
        .collect()
}

/// Plays the cell: instance `index` of the LRP `lrp` runs.
async fn run_instance(api: &Api, lrp: &str, index: u32) {
    let key = ActualLrpKey {
        process_guid: lrp.into(),
        index,
        domain: CF_APPS_DOMAIN.into(),
    };
    let instance = ActualLrpInstanceKey {
        instance_guid: format!("{lrp}-{index}"),
        cell_id: "cell-0".into(),
    };
    api.bbs.claim_actual_lrp(&key, &instance).await.unwrap();
    api.bbs
        .start_actual_lrp(&key, &instance, NetInfo::default())
        .await
        .unwrap();
}

/// Waits (up to 10 s) for `check` to hold of the deployment `guid`; its last state.
async fn deployment_until(api: &Api, guid: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deployment = api.get(&format!("/v3/deployments/{guid}")).await;
        if check(&deployment) {
            return deployment;
        }
        assert!(Instant::now() < deadline, "{deployment}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The web LRPs of `app` as (version, instances), the newest last.
async fn lrp_sizes(api: &Api, app: &str, versions: [&str; 2]) -> Vec<u32> {
    let lrps = lrps(api, app).await;
    versions
        .iter()
        .map(|v| {
            lrps.iter()
                .find(|l| l.process_guid.ends_with(v))
                .map_or(0, |l| l.instances)
        })
        .collect()
}

async fn revisions(api: Api) {
    let (org, space) = api.org_and_space("o").await;
    let app = staged_app(&api, &space, "web").await;
    let d1 = api.get(&format!("/v3/apps/{app}/droplets/current")).await["guid"].clone();
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v3/apps/{app}/environment_variables"),
            Some(json!({"var": {"A": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        described(&api, &app).await.is_empty(),
        "a stopped app has no revision"
    );

    // Start: the initial revision, deployed; a restart of the same state adds none.
    api.post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    let listed = api.get(&format!("/v3/apps/{app}/revisions")).await;
    let first = &listed["resources"][0];
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["description"], "Initial revision.");
    assert_eq!(first["droplet"]["guid"], d1);
    assert_eq!(first["deployable"], true);
    assert_eq!(first["processes"], json!({"web": {"command": null}}));
    assert_eq!(first["relationships"]["app"]["data"]["guid"], app);
    let r1 = guid(first);
    assert_eq!(
        first["links"]["environment_variables"]["href"],
        format!("http://cc.test/v3/revisions/{r1}/environment_variables")
    );
    api.post(&format!("/v3/apps/{app}/actions/restart"), json!({}))
        .await;
    assert_eq!(described(&api, &app).await.len(), 1);
    let deployed = format!("/v3/apps/{app}/revisions/deployed");
    assert_eq!(versions(&api, &deployed).await, [1]);

    // New environment, a custom command: a revision each, with CF's reasons.
    api.call(
        Method::PATCH,
        &format!("/v3/apps/{app}/environment_variables"),
        Some(json!({"var": {"B": "2"}})),
    )
    .await;
    let (status, patched) = api
        .call(
            Method::PATCH,
            &format!("/v3/processes/{app}"),
            Some(json!({"command": "app.wasm --fast"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(described(&api, &app).await.len(), 3);
    // A new droplet, deployed.
    let d2 = new_droplet(&api, &app, b"\0asm\x01\0\0\0v2").await;
    let deployment = api
        .post(
            "/v3/deployments",
            json!({"droplet": {"guid": d2}, "relationships": {"app": {"data": {"guid": app}}}}),
        )
        .await;
    assert_eq!(
        deployment["revision"]["version"],
        4,
        "{deployment} {:?}",
        described(&api, &app).await
    );
    assert_eq!(
        described(&api, &app).await,
        [
            (1, "Initial revision.".to_string()),
            (2, "New environment variables deployed.".to_string()),
            (
                3,
                "Custom start command added for 'web' process.".to_string()
            ),
            (4, "New droplet deployed.".to_string()),
        ]
    );
    assert_eq!(
        versions(&api, &deployed).await,
        [3, 4],
        "the old version runs on during the deployment"
    );
    let new_lrp = lrps(&api, &app)
        .await
        .into_iter()
        .find(|l| l.instances == 1 && l.action.droplet_uri.contains(d2.as_str()))
        .map(|l| l.process_guid);
    run_instance(&api, &new_lrp.expect("the new version's LRP"), 0).await;
    deployment_until(&api, &guid(&deployment), |d| {
        d["status"]["reason"] == "DEPLOYED"
    })
    .await;
    assert_eq!(versions(&api, &deployed).await, [4]);

    // Filters, metadata and environment variables.
    let list = format!("/v3/apps/{app}/revisions");
    assert_eq!(
        versions(&api, &format!("{list}?versions=1,3")).await,
        [1, 3]
    );
    assert_eq!(
        versions(&api, &format!("{list}?deployable=true")).await,
        [1, 2, 3, 4]
    );
    assert!(versions(&api, &format!("{list}?deployable=false"))
        .await
        .is_empty());
    let (status, _) = api
        .call(Method::GET, &format!("{list}?deployable=maybe"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let r2 = guid(&api.get(&format!("{list}?versions=2")).await["resources"][0]);
    let (status, patched) = api
        .call(
            Method::PATCH,
            &format!("/v3/revisions/{r2}"),
            Some(json!({"metadata": {"labels": {"stage": "good"}, "annotations": {"why": "env"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"]["labels"]["stage"], "good");
    assert_eq!(
        versions(&api, &format!("{list}?label_selector=stage=good")).await,
        [2]
    );
    assert_eq!(
        api.get(&format!("/v3/revisions/{r2}")).await["metadata"]["annotations"]["why"],
        "env"
    );
    let env = |r: &str| format!("/v3/revisions/{r}/environment_variables");
    assert_eq!(api.get(&env(&r1)).await["var"], json!({"A": "1"}));
    assert_eq!(api.get(&env(&r2)).await["var"], json!({"A": "1", "B": "2"}));

    // Roles: auditors see revisions but not their environment; others see nothing.
    let (auditor, auditor_id) = api.new_user("auditor").await;
    let (dev, dev_id) = api.new_user("dev").await;
    let (stranger, _) = api.new_user("stranger").await;
    for (id, role) in [(&auditor_id, "space_auditor"), (&dev_id, "space_developer")] {
        api.grant(id, "organization_user", "organization", &org)
            .await;
        api.grant(id, role, "space", &space).await;
    }
    let as_user = |token: &'static str, method: Method, uri: String, body: Option<Value>| {
        let api = &api;
        let token = match token {
            "auditor" => auditor.clone(),
            "dev" => dev.clone(),
            _ => stranger.clone(),
        };
        async move { api.call_as(&token, method, &uri, body).await.0 }
    };
    let labels = || Some(json!({"metadata": {"labels": {"k": "v"}}}));
    let cases = [
        ("auditor", Method::GET, list.clone(), None, StatusCode::OK),
        (
            "auditor",
            Method::GET,
            format!("/v3/revisions/{r1}"),
            None,
            StatusCode::OK,
        ),
        (
            "auditor",
            Method::GET,
            env(&r1),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "auditor",
            Method::PATCH,
            format!("/v3/revisions/{r1}"),
            labels(),
            StatusCode::FORBIDDEN,
        ),
        ("dev", Method::GET, env(&r1), None, StatusCode::OK),
        (
            "dev",
            Method::PATCH,
            format!("/v3/revisions/{r1}"),
            labels(),
            StatusCode::OK,
        ),
        (
            "stranger",
            Method::GET,
            list.clone(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "stranger",
            Method::GET,
            format!("/v3/revisions/{r1}"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "stranger",
            Method::GET,
            env(&r1),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "stranger",
            Method::GET,
            deployed.clone(),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (who, method, uri, body, expected) in cases {
        let m = method.to_string();
        assert_eq!(
            as_user(who, method, uri.clone(), body).await,
            expected,
            "{who} {m} {uri}"
        );
    }

    // Rollback to revision 1: its droplet, environment and command, as a new revision.
    let to = |revision: &str| json!({"revision": {"guid": revision}, "relationships": {"app": {"data": {"guid": app}}}});
    let rollback = api.post("/v3/deployments", to(&r1)).await;
    assert_eq!(rollback["revision"]["version"], 5, "{rollback}");
    assert_eq!(rollback["droplet"]["guid"], d1);
    let (_, fifth) = described(&api, &app).await.pop().unwrap();
    assert_eq!(
        fifth,
        "Custom start command removed for 'web' process. New droplet deployed. \
         New environment variables deployed. Rolled back to revision 1."
    );
    assert_eq!(
        api.get(&format!("/v3/apps/{app}/environment_variables"))
            .await["var"],
        json!({"A": "1"})
    );
    // The custom command ("app.wasm --fast") is gone: the process shows the one its
    // droplet gives it, as CF does.
    assert_eq!(
        api.get(&format!("/v3/processes/{app}")).await["command"],
        "app.wasm"
    );
    assert_eq!(
        api.get(&format!("/v3/apps/{app}/droplets/current")).await["guid"],
        d1
    );
    let events = api
        .get(&format!(
            "/v3/audit_events?target_guids={app}&types=audit.app.deployment.create"
        ))
        .await;
    assert!(
        events["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["type"] == "rollback"),
        "{events}"
    );

    // CF's errors.
    let unprocessable = |body: Value, message: &'static str| {
        let api = &api;
        async move {
            let (status, err) = api.call(Method::POST, "/v3/deployments", Some(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
            assert!(
                err["errors"][0]["detail"]
                    .as_str()
                    .unwrap()
                    .contains(message),
                "{err}"
            );
        }
    };
    unprocessable(
        to(&r1),
        "Unable to rollback. The code and configuration you are rolling back to is the same as the deployed revision.",
    )
    .await;
    unprocessable(to("no-such-revision"), "The revision does not exist").await;
    let mut both = to(&r2);
    both["droplet"] = json!({"guid": d2});
    unprocessable(both, "Cannot set both fields 'droplet' and 'revision'").await;
    let other = staged_app(&api, &space, "other").await;
    let mut foreign = to(&r2);
    foreign["relationships"]["app"]["data"]["guid"] = json!(other);
    unprocessable(foreign, "The revision does not exist").await;
    let (status, _) = api
        .call_as(&auditor, Method::POST, "/v3/deployments", Some(to(&r2)))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        described(&api, &app).await.len(),
        5,
        "no revision for refusals"
    );

    // A stopped app has no deployed revision; deleting the app deletes its revisions.
    api.post(&format!("/v3/apps/{app}/actions/stop"), json!({}))
        .await;
    assert!(versions(&api, &deployed).await.is_empty());
    let (status, _) = api
        .call(Method::DELETE, &format!("/v3/apps/{app}"), None)
        .await;
    assert!(status.is_success());
    let (status, _) = api
        .call(Method::GET, &format!("/v3/revisions/{r1}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn canary(api: Api) {
    let (_, space) = api.org_and_space("o").await;
    let app = staged_app(&api, &space, "bird").await;
    api.post(
        &format!("/v3/processes/{app}/actions/scale"),
        json!({"instances": 3}),
    )
    .await;
    api.post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    let v1 = lrps(&api, &app).await.pop().unwrap().process_guid;
    for index in 0..3 {
        run_instance(&api, &v1, index).await;
    }
    let d2 = new_droplet(&api, &app, b"\0asm\x01\0\0\0v2").await;
    let body = |strategy: &str, droplet: &str| {
        json!({"droplet": {"guid": droplet}, "strategy": strategy,
               "relationships": {"app": {"data": {"guid": app}}}})
    };

    let (status, err) = api
        .call(
            Method::POST,
            "/v3/deployments",
            Some(body("blue-green", &d2)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let mut bad = body("rolling", &d2);
    bad["options"] = json!({"max_in_flight": 0});
    let (status, err) = api.call(Method::POST, "/v3/deployments", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err
        .to_string()
        .contains("Max in flight must be an integer greater than 0"));

    // The canary: one new instance, the old version keeps all three.
    let deployment = api.post("/v3/deployments", body("canary", &d2)).await;
    assert_eq!(deployment["strategy"], "canary");
    assert_eq!(deployment["state"], "PREPAUSED");
    assert_eq!(deployment["status"]["value"], "ACTIVE");
    assert_eq!(deployment["status"]["reason"], "DEPLOYING");
    assert_eq!(deployment["options"]["max_in_flight"], 1);
    let canary_guid = guid(&deployment);
    let continue_uri = format!("/v3/deployments/{canary_guid}/actions/continue");
    let (status, err) = api.call(Method::POST, &continue_uri, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err
        .to_string()
        .contains("Cannot continue a deployment with status: ACTIVE and reason: DEPLOYING"));
    let v2 = lrps(&api, &app)
        .await
        .into_iter()
        .map(|l| l.process_guid)
        .find(|g| *g != v1)
        .expect("the canary's LRP");
    let v2_version = v2.strip_prefix(&format!("{app}-")).unwrap().to_string();
    let v1_version = v1.strip_prefix(&format!("{app}-")).unwrap().to_string();
    let sizes = || lrp_sizes(&api, &app, [&v1_version, &v2_version]);
    assert_eq!(sizes().await, [3, 1]);
    run_instance(&api, &v2, 0).await;
    let paused = deployment_until(&api, &canary_guid, |d| d["state"] == "PAUSED").await;
    assert_eq!(paused["status"]["value"], "ACTIVE");
    assert_eq!(paused["status"]["reason"], "PAUSED");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(sizes().await, [3, 1], "a paused canary stays one instance");
    assert_eq!(
        api.get(&format!("/v3/deployments/{canary_guid}")).await["state"],
        "PAUSED"
    );
    let deployed = format!("/v3/apps/{app}/revisions/deployed");
    assert_eq!(versions(&api, &deployed).await, [1, 2]);

    // Continue: a rolling deployment to the end.
    let continued = api.post(&continue_uri, json!({})).await;
    assert_eq!(continued["state"], "DEPLOYING", "{continued}");
    assert_eq!(continued["status"]["reason"], "DEPLOYING");
    deployment_until(&api, &canary_guid, |d| d["state"] == "DEPLOYING").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sizes().await != [2, 2] {
        assert!(Instant::now() < deadline, "{:?}", sizes().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run_instance(&api, &v2, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sizes().await != [1, 3] {
        assert!(Instant::now() < deadline, "{:?}", sizes().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run_instance(&api, &v2, 2).await;
    let done = deployment_until(&api, &canary_guid, |d| d["state"] == "DEPLOYED").await;
    assert_eq!(done["status"]["value"], "FINALIZED");
    assert_eq!(done["status"]["reason"], "DEPLOYED");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sizes().await != [0, 3] {
        assert!(Instant::now() < deadline, "{:?}", sizes().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(versions(&api, &deployed).await, [2]);
    let (status, err) = api.call(Method::POST, &continue_uri, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let events = api
        .get(&format!(
            "/v3/audit_events?target_guids={app}&types=audit.app.deployment.continue"
        ))
        .await;
    assert_eq!(events["resources"].as_array().map(Vec::len), Some(1));

    // A paused canary cancelled: the droplet and the old version's instances are back.
    let d3 = new_droplet(&api, &app, b"\0asm\x01\0\0\0v3").await;
    let deployment = api.post("/v3/deployments", body("canary", &d3)).await;
    let v3 = lrps(&api, &app)
        .await
        .into_iter()
        .map(|l| l.process_guid)
        .find(|g| *g != v2)
        .expect("the second canary's LRP");
    run_instance(&api, &v3, 0).await;
    deployment_until(&api, &guid(&deployment), |d| d["state"] == "PAUSED").await;
    let listed = api
        .get(&format!(
            "/v3/deployments?app_guids={app}&status_reasons=PAUSED"
        ))
        .await;
    assert_eq!(listed["resources"].as_array().map(Vec::len), Some(1));
    let cancelled = api
        .post(
            &format!("/v3/deployments/{}/actions/cancel", guid(&deployment)),
            json!({}),
        )
        .await;
    assert_eq!(cancelled["state"], "CANCELED");
    assert_eq!(cancelled["status"]["reason"], "CANCELED");
    assert_eq!(
        api.get(&format!("/v3/apps/{app}/droplets/current")).await["guid"],
        d2
    );
    let remaining: Vec<(String, u32)> = lrps(&api, &app)
        .await
        .into_iter()
        .map(|l| (l.process_guid, l.instances))
        .collect();
    assert_eq!(remaining, [(v2.clone(), 3)]);
    assert_eq!(versions(&api, &deployed).await, [2]);
}
