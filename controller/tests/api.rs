//! The Cloud Controller's API against a real BBS and UAA: a push done by hand, with the
//! cell's part of staging played by the test. It runs on SQLite (in-memory databases)
//! and, when `WF_TEST_POSTGRES_URL` names a server, on PostgreSQL.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use wf_bbs::{DesiredLrpFilter, TaskAction, TaskFilter, CF_APPS_DOMAIN};
use wf_db::testing::Backend;

mod common;

use common::{multipart, start, start_with, zip_of, Api};

/// Strips the scheme and host of a controller URL.
fn local(url: &str) -> &str {
    url.strip_prefix("http://cc.test").unwrap_or(url)
}

#[tokio::test]
async fn push_by_hand_on_sqlite() {
    push_by_hand(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn push_by_hand_on_postgres() {
    // Skipped, with a note, unless WF_TEST_POSTGRES_URL is set.
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        push_by_hand(start(Backend::Postgres).await).await;
    }
}

#[tokio::test]
async fn push_by_hand_on_s3() {
    // Skipped, with a note, without moto_server (unless WF_REQUIRE_S3 is set).
    let Some(s3) = common::moto::MotoS3::start() else {
        return;
    };
    let api = start_with(Backend::Sqlite, |config| {
        config.blobstore_s3 = Some(s3.config());
    })
    .await;
    push_by_hand(api).await;
}

async fn push_by_hand(api: Api) {
    // Tokens.
    let (status, _, body) = api.send(Method::GET, "/v3/apps", None, vec![], false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["title"], "CF-NotAuthenticated");
    let root = api.get("/").await;
    assert_eq!(
        root["links"]["cloud_controller_v3"]["href"],
        "http://cc.test/v3"
    );

    // Org, space, app.
    let org = api.post("/v3/organizations", json!({"name": "o"})).await;
    let space = api
        .post("/v3/spaces", json!({"name": "s", "relationships": {"organization": {"data": {"guid": org["guid"]}}}}))
        .await;
    let new_app =
        json!({"name": "hello", "relationships": {"space": {"data": {"guid": space["guid"]}}}});
    let app = api.post("/v3/apps", new_app.clone()).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    assert_eq!(app["state"], "STOPPED");
    let (status, clash) = api.call(Method::POST, "/v3/apps", Some(new_app)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{clash}");
    assert_eq!(
        clash["errors"][0]["detail"],
        "App with the name 'hello' already exists."
    );
    let (status, _, garbage) = api
        .send(Method::POST, "/v3/apps", None, b"{not json".to_vec(), true)
        .await;
    assert_eq!(
        (status, garbage["errors"][0]["title"].as_str()),
        (StatusCode::BAD_REQUEST, Some("CF-MessageParseError"))
    );
    let listed = api
        .get(&format!(
            "/v3/apps?names=hello&space_guids={}",
            space["guid"].as_str().unwrap()
        ))
        .await;
    assert_eq!(listed["pagination"]["total_results"], 1);
    let (status, start) = api
        .call(
            Method::POST,
            &format!("/v3/apps/{app_guid}/actions/start"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        start["errors"][0]["detail"],
        "Assign a droplet before starting this app."
    );

    // Route.
    let domains = api.get("/v3/domains?names=apps.test").await;
    let domain_guid = domains["resources"][0]["guid"].clone();
    let route = api
        .post(
            "/v3/routes",
            json!({"host": "hello", "relationships": {"domain": {"data": {"guid": domain_guid}}, "space": {"data": {"guid": space["guid"]}}}}),
        )
        .await;
    assert_eq!(route["url"], "hello.apps.test");
    let route_guid = route["guid"].as_str().unwrap();
    api.post(
        &format!("/v3/routes/{route_guid}/destinations"),
        json!({"destinations": [{"app": {"guid": app_guid}}]}),
    )
    .await;

    // Package: bad bits are refused, good ones make it READY.
    let package = api
        .post(
            "/v3/packages",
            json!({"type": "bits", "relationships": {"app": {"data": {"guid": app_guid}}}}),
        )
        .await;
    let package_guid = package["guid"].as_str().unwrap().to_string();
    let upload = format!("/v3/packages/{package_guid}/upload");
    let form = Some("multipart/form-data; boundary=XYZ");
    let (status, _, refused) = api
        .send(
            Method::POST,
            &upload,
            form,
            multipart("app.zip", &zip_of(&[])),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("empty"));
    assert_eq!(
        api.get(&format!("/v3/packages/{package_guid}")).await["state"],
        "AWAITING_UPLOAD"
    );
    let (status, _, uploaded) = api
        .send(
            Method::POST,
            &upload,
            form,
            multipart("app.wasm", b"\0asm\x01\0\0\0"),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    assert_eq!(uploaded["state"], "READY");

    // Build: the staging task is desired; play the cell.
    let build = api
        .post("/v3/builds", json!({"package": {"guid": package_guid}}))
        .await;
    let build_guid = build["guid"].as_str().unwrap().to_string();
    assert_eq!(build["state"], "STAGING");
    let task = api.bbs.task_by_guid(&build_guid).await.unwrap();
    let TaskAction::Stage(stage) = task.definition.action else {
        panic!("not a staging task")
    };
    assert_eq!(task.definition.log_guid, app_guid);
    let (status, _, _) = api
        .send(Method::GET, local(&stage.package_uri), None, vec![], false)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, denied) = api
        .send(
            Method::GET,
            &format!("{}x", local(&stage.package_uri)),
            None,
            vec![],
            false,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    let (status, _, _) = api
        .send(
            Method::PUT,
            local(&stage.droplet_upload_uri),
            None,
            b"droplet bytes".to_vec(),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.bbs.start_task(&build_guid, "cell-0").await.unwrap();
    let result = json!({"kind": "server", "wasm": "app.wasm", "wasm_sha256": "ab", "buildpack": "wasm_buildpack", "process_types": {"web": "app.wasm"}});
    api.bbs
        .complete_task(&build_guid, "cell-0", false, "", &result.to_string())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let build = loop {
        let build = api.get(&format!("/v3/builds/{build_guid}")).await;
        if build["state"] != "STAGING" {
            break build;
        }
        assert!(Instant::now() < deadline, "build never finished: {build}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(build["state"], "STAGED", "{build}");
    let droplet_guid = build["droplet"]["guid"].as_str().unwrap().to_string();
    let droplet = api.get(&format!("/v3/droplets/{droplet_guid}")).await;
    assert_eq!(droplet["process_types"]["web"], "app.wasm");
    assert_eq!(droplet["checksum"]["type"], "sha256");
    let deadline = Instant::now() + Duration::from_secs(10);
    while api
        .bbs
        .tasks(&TaskFilter::default())
        .await
        .unwrap()
        .iter()
        .any(|t| t.task_guid == build_guid)
    {
        assert!(
            Instant::now() < deadline,
            "the staging task was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Start: a DesiredLRP with the route; scale updates it; stop removes it.
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v3/apps/{app_guid}/relationships/current_droplet"),
            Some(json!({"data": {"guid": droplet_guid}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Without a command of its own, a process shows the one its droplet gives it.
    let web = api.get(&format!("/v3/apps/{app_guid}/processes/web")).await;
    assert_eq!(web["command"], "app.wasm", "{web}");
    let started = api
        .post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    assert_eq!(started["state"], "STARTED");
    let lrps = || async {
        let filter = DesiredLrpFilter {
            domain: Some(CF_APPS_DOMAIN.into()),
            ..Default::default()
        };
        api.bbs.desired_lrps(&filter).await.unwrap()
    };
    let desired = lrps().await;
    assert_eq!(desired.len(), 1);
    assert!(desired[0].process_guid.starts_with(&format!("{app_guid}-")));
    assert_eq!(
        desired[0].routes.cf_router[0].hostnames,
        vec!["hello.apps.test".to_string()]
    );
    assert_eq!(desired[0].log_guid, app_guid);
    assert!(desired[0]
        .action
        .env
        .iter()
        .any(|e| e.name == "VCAP_APPLICATION" && e.value.contains("\"space_name\":\"s\"")));

    let (status, scaled) = api
        .call(
            Method::POST,
            &format!("/v3/apps/{app_guid}/processes/web/actions/scale"),
            Some(json!({"instances": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{scaled}");
    let desired_after = lrps().await;
    assert_eq!((desired_after.len(), desired_after[0].instances), (1, 3));
    assert_eq!(
        desired_after[0].process_guid, desired[0].process_guid,
        "scaling keeps the LRP"
    );
    let (status, bad) = api
        .call(
            Method::POST,
            &format!("/v3/processes/{app_guid}/actions/scale"),
            Some(json!({"instances": -1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let stats = api.get(&format!("/v3/processes/{app_guid}/stats")).await;
    assert_eq!(stats["resources"].as_array().map(Vec::len), Some(3));

    api.post(&format!("/v3/apps/{app_guid}/actions/restart"), json!({}))
        .await;
    let restarted = lrps().await;
    assert_eq!(restarted.len(), 1);
    assert_ne!(
        restarted[0].process_guid, desired[0].process_guid,
        "a restart makes a new LRP"
    );

    api.post(&format!("/v3/apps/{app_guid}/actions/stop"), json!({}))
        .await;
    assert!(lrps().await.is_empty());

    // Every start, scale and stop made an app usage event, on PostgreSQL too (whose
    // typed parameters once refused the first start's NULL previous instance count).
    let events = api.get("/v3/app_usage_events?per_page=100").await;
    let events: Vec<_> = events["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["app"]["guid"] == app_guid.as_str())
        .map(|e| {
            (
                e["state"]["current"].as_str().unwrap_or("").to_string(),
                e["instance_count"]["previous"].clone(),
            )
        })
        .collect();
    assert_eq!(
        events.first(),
        Some(&("STARTED".to_string(), serde_json::Value::Null)),
        "{events:?}"
    );
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("STOPPED"),
        "{events:?}"
    );

    let env = api.get(&format!("/v3/apps/{app_guid}/env")).await;
    assert_eq!(
        env["application_env_json"]["VCAP_APPLICATION"]["application_uris"][0],
        "hello.apps.test"
    );

    // Deleting the org takes everything with it.
    let (status, headers, _) = api
        .send(
            Method::DELETE,
            &format!("/v3/organizations/{}", org["guid"].as_str().unwrap()),
            None,
            vec![],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = headers["location"].to_str().unwrap().to_string();
    assert_eq!(api.get(local(&job)).await["state"], "COMPLETE");
    let (status, gone) = api
        .call(Method::GET, &format!("/v3/apps/{app_guid}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["errors"][0]["detail"], "App not found");
}
