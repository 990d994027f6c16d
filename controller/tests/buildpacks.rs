//! Admin buildpacks through the API: the built-in ones seeded in order, create and
//! move with CF's position shifting, upload checks, locking, who may write, delete
//! jobs, list filters; and what a build asks the cell to run (named buildpacks without
//! detect, or every enabled one by position), with the custom buildpack's signed zip
//! URL and the app's buildpack cache URLs working. On SQLite, and on PostgreSQL when
//! `WF_TEST_POSTGRES_URL` is set.

use http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use wf_bbs::{StageAction, TaskAction};
use wf_db::testing::Backend;

mod common;

use common::{multipart, start, zip_of, Api};

#[tokio::test]
async fn buildpacks_on_sqlite() {
    buildpacks(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn buildpacks_on_postgres() {
    // Skipped unless WF_TEST_POSTGRES_URL is set.
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        buildpacks(start(Backend::Postgres).await).await;
    }
}

fn guid(v: &Value) -> String {
    v["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("no guid: {v}"))
        .to_string()
}

/// A buildpack zip whose `entries` are each a shell script.
fn scripts(entries: &[&str]) -> Vec<u8> {
    let files: Vec<(&str, &[u8])> = entries.iter().map(|n| (*n, &b"#!/bin/sh\n"[..])).collect();
    zip_of(&files)
}

fn assert_unprocessable((status, body): (StatusCode, Value), detail: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["errors"][0]["title"], "CF-UnprocessableEntity",
        "{body}"
    );
    let got = body["errors"][0]["detail"].as_str().unwrap_or_default();
    assert!(got.contains(detail), "{got:?} lacks {detail:?}");
}

/// The names of the buildpacks in a list response, in its order, with positions.
fn names(list: &Value) -> Vec<(String, i64)> {
    list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["position"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The buildpack names by position, checking positions are 1..n.
async fn order(api: &Api) -> Vec<String> {
    let listed = names(&api.get("/v3/buildpacks?per_page=100").await);
    for (i, (name, position)) in listed.iter().enumerate() {
        assert_eq!(*position, i as i64 + 1, "{name} in {listed:?}");
    }
    listed.into_iter().map(|(name, _)| name).collect()
}

async fn upload(
    api: &Api,
    token: Option<&str>,
    guid: &str,
    bits: &[u8],
) -> (StatusCode, http::HeaderMap, Value) {
    api.send_as(
        Some(token.unwrap_or(&api.token)),
        Method::POST,
        &format!("/v3/buildpacks/{guid}/upload"),
        Some("multipart/form-data; boundary=XYZ"),
        multipart("my-buildpack.zip", bits),
    )
    .await
}

/// Follows a 202's Location to its job, which must be COMPLETE.
async fn assert_job_complete(api: &Api, headers: &http::HeaderMap) {
    let location = headers["location"].to_str().unwrap();
    let path = location.strip_prefix("http://cc.test").unwrap();
    assert_eq!(api.get(path).await["state"], "COMPLETE");
}

async fn buildpacks(api: Api) {
    // Seeded: the built-in buildpacks at 1..n on the wasm stack, READY, without bits.
    let built_in: Vec<String> = wf_buildpacks::BUILT_IN
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(order(&api).await, built_in);
    let first = &api.get("/v3/buildpacks").await["resources"][0];
    assert_eq!(first["stack"], "wasm");
    assert_eq!(first["state"], "READY");
    assert_eq!(first["filename"], Value::Null);
    assert_eq!(
        (&first["enabled"], &first["locked"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(first["lifecycle"], "buildpack");
    let shown = api.get(&format!("/v3/buildpacks/{}", guid(first))).await;
    assert_eq!(shown["name"], first["name"]);

    // Anyone signed in reads; only admins write.
    let (user, _) = api.new_user("dev").await;
    let (status, listed) = api
        .call_as(&user, Method::GET, "/v3/buildpacks", None)
        .await;
    assert_eq!(
        (status, listed["pagination"]["total_results"].as_u64()),
        (StatusCode::OK, Some(built_in.len() as u64))
    );
    let first_guid = guid(first);
    for (method, path, body) in [
        (
            Method::POST,
            "/v3/buildpacks".to_string(),
            Some(json!({"name": "mine"})),
        ),
        (
            Method::PATCH,
            format!("/v3/buildpacks/{first_guid}"),
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, format!("/v3/buildpacks/{first_guid}"), None),
    ] {
        let (status, body) = api.call_as(&user, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(body["errors"][0]["title"], "CF-NotAuthorized");
    }
    let (status, _, _) = upload(
        &api,
        Some(user.as_str()),
        &first_guid,
        &scripts(&["bin/detect", "bin/compile"]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api
        .send(Method::GET, "/v3/buildpacks", None, vec![], false)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Create: at a position (the rest shift down), or last.
    let custom = api
        .post(
            "/v3/buildpacks",
            json!({"name": "custom", "stack": "wasm", "position": 2}),
        )
        .await;
    assert_eq!(
        (&custom["position"], &custom["state"]),
        (&json!(2), &json!("AWAITING_UPLOAD"))
    );
    let last = api.post("/v3/buildpacks", json!({"name": "last"})).await;
    assert_eq!(last["stack"], Value::Null);
    let far = api
        .post(
            "/v3/buildpacks",
            json!({"name": "far", "position": 1000, "enabled": false}),
        )
        .await;
    let mut expected = built_in.clone();
    expected.insert(1, "custom".into());
    expected.extend(["last".to_string(), "far".to_string()]);
    assert_eq!(order(&api).await, expected);
    assert_eq!(far["position"], json!(expected.len()));
    assert_eq!(far["enabled"], false);

    assert_unprocessable(
        api.call(
            Method::POST,
            "/v3/buildpacks",
            Some(json!({"name": "custom", "stack": "wasm"})),
        )
        .await,
        "Buildpack with name 'custom' and stack 'wasm' already exists",
    );
    assert_unprocessable(
        api.call(
            Method::POST,
            "/v3/buildpacks",
            Some(json!({"name": "last"})),
        )
        .await,
        "Buildpack with name 'last' and an unassigned stack already exists",
    );
    for (body, detail) in [
        (
            json!({"name": "x", "stack": "cflinuxfs4"}),
            "Stack 'cflinuxfs4' does not exist",
        ),
        (
            json!({"name": "x", "position": 0}),
            "Position must be greater than or equal to 1",
        ),
        (json!({"name": "bad name"}), "Name can only contain"),
        (json!({}), "Name can't be blank"),
    ] {
        assert_unprocessable(
            api.call(Method::POST, "/v3/buildpacks", Some(body)).await,
            detail,
        );
    }

    // Move, rename, enable and lock.
    let last_guid = guid(&last);
    let (status, moved) = api
        .call(
            Method::PATCH,
            &format!("/v3/buildpacks/{last_guid}"),
            Some(json!({"position": 1})),
        )
        .await;
    assert_eq!((status, &moved["position"]), (StatusCode::OK, &json!(1)));
    let moved_last = expected.remove(expected.len() - 2);
    expected.insert(0, moved_last);
    assert_eq!(order(&api).await, expected);
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v3/buildpacks/{last_guid}"),
            Some(json!({"position": 99})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let moved_last = expected.remove(0);
    expected.push(moved_last);
    assert_eq!(order(&api).await, expected);
    assert_unprocessable(
        api.call(
            Method::PATCH,
            &format!("/v3/buildpacks/{last_guid}"),
            Some(json!({"name": "far"})),
        )
        .await,
        "Buildpack with name 'far' and an unassigned stack already exists",
    );
    let (status, locked) = api
        .call(
            Method::PATCH,
            &format!("/v3/buildpacks/{last_guid}"),
            Some(json!({"name": "locked-one", "locked": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{locked}");
    assert_eq!(
        (&locked["name"], &locked["locked"]),
        (&json!("locked-one"), &json!(true))
    );

    // Upload: a zip with bin/detect and a build script, else 422; locked refuses bits.
    let custom_guid = guid(&custom);
    for (bits, detail) in [
        (b"not a zip".to_vec(), "is not a valid zip file"),
        (scripts(&["bin/compile"]), "must hold bin/detect"),
        (scripts(&["bin/detect", "README"]), "must hold bin/detect"),
    ] {
        let (status, _, body) = upload(&api, None, &custom_guid, &bits).await;
        assert_unprocessable((status, body), detail);
    }
    assert_eq!(
        api.get(&format!("/v3/buildpacks/{custom_guid}")).await["state"],
        "AWAITING_UPLOAD"
    );
    let (status, _, body) = upload(
        &api,
        None,
        &last_guid,
        &scripts(&["bin/detect", "bin/compile"]),
    )
    .await;
    assert_unprocessable((status, body), "is locked");
    let custom_zip = scripts(&["bin/detect", "bin/supply", "bin/finalize", "bin/release"]);
    let (status, headers, uploaded) = upload(&api, None, &custom_guid, &custom_zip).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{uploaded}");
    assert_job_complete(&api, &headers).await;
    let custom = api.get(&format!("/v3/buildpacks/{custom_guid}")).await;
    assert_eq!(
        (&custom["state"], &custom["filename"]),
        (&json!("READY"), &json!("my-buildpack.zip"))
    );

    // Filters and paging.
    let found = api.get("/v3/buildpacks?names=custom,wasm_buildpack").await;
    let found: Vec<String> = names(&found).into_iter().map(|(n, _)| n).collect();
    assert_eq!(found, ["custom", "wasm_buildpack"]);
    let on_wasm = api.get("/v3/buildpacks?stacks=wasm").await;
    assert_eq!(
        on_wasm["pagination"]["total_results"],
        json!(built_in.len() + 1)
    );
    let page = api.get("/v3/buildpacks?per_page=2&page=2").await;
    assert_eq!(
        names(&page).iter().map(|(_, p)| *p).collect::<Vec<_>>(),
        [3, 4]
    );
    assert!(page["pagination"]["next"]["href"]
        .as_str()
        .unwrap()
        .contains("page=3"));
    let newest = api
        .get("/v3/buildpacks?order_by=-created_at&per_page=1")
        .await;
    assert_eq!(newest["resources"][0]["name"], "far");

    staging(&api, &custom_guid, &custom_zip).await;

    // Delete: a job, the record gone, the positions closed up.
    let (status, headers, _) = api
        .send(
            Method::DELETE,
            &format!("/v3/buildpacks/{custom_guid}"),
            None,
            vec![],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_job_complete(&api, &headers).await;
    let (status, _) = api
        .call(Method::GET, &format!("/v3/buildpacks/{custom_guid}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    expected.retain(|n| n != "custom" && n != "last");
    expected.push("locked-one".into());
    assert_eq!(order(&api).await, expected);
}

/// The staging task of a new build of `app` (its build must be STAGING).
async fn stage(api: &Api, app: &str) -> StageAction {
    let package = api
        .post(
            "/v3/packages",
            json!({"type": "bits", "relationships": {"app": {"data": {"guid": app}}}}),
        )
        .await;
    let (status, _, uploaded) = api
        .send(
            Method::POST,
            &format!("/v3/packages/{}/upload", guid(&package)),
            Some("multipart/form-data; boundary=XYZ"),
            multipart("app.wasm", b"\0asm\x01\0\0\0"),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let build = api
        .post("/v3/builds", json!({"package": {"guid": guid(&package)}}))
        .await;
    assert_eq!(build["state"], "STAGING", "{build}");
    let task = api.bbs.task_by_guid(&guid(&build)).await.unwrap();
    match task.definition.action {
        TaskAction::Stage(stage) => stage,
        other => panic!("not a staging task: {other:?}"),
    }
}

fn local(url: &str) -> &str {
    url.strip_prefix("http://cc.test").unwrap()
}

async fn staging(api: &Api, custom_guid: &str, custom_zip: &[u8]) {
    let (_, space) = api.org_and_space("o").await;
    let app_body = |name: &str, buildpacks: Value| {
        json!({
            "name": name,
            "relationships": {"space": {"data": {"guid": space}}},
            "lifecycle": {"type": "buildpack", "data": {"buildpacks": buildpacks}},
        })
    };

    // Names that are no buildpack are refused where they are set.
    let unknown = "Buildpack \"nope\" must be an existing admin buildpack or a valid git URI";
    assert_unprocessable(
        api.call(
            Method::POST,
            "/v3/apps",
            Some(app_body("bad", json!(["nope"]))),
        )
        .await,
        unknown,
    );
    let named = api
        .post(
            "/v3/apps",
            app_body("named", json!(["custom", "wasm_buildpack"])),
        )
        .await;
    let named_guid = guid(&named);
    assert_unprocessable(
        api.call(
            Method::PATCH,
            &format!("/v3/apps/{named_guid}"),
            Some(json!({"lifecycle": {"type": "buildpack", "data": {"buildpacks": ["nope"]}}})),
        )
        .await,
        unknown,
    );

    // Named buildpacks: in order, without detect; the custom one as a signed zip URL.
    let action = stage(api, &named_guid).await;
    assert!(action.skip_detect);
    let refs: Vec<(&str, bool)> = action
        .buildpacks
        .iter()
        .map(|b| (b.name.as_str(), b.url.is_some()))
        .collect();
    assert_eq!(refs, [("custom", true), ("wasm_buildpack", false)]);
    let custom = &action.buildpacks[0];
    let sha256 = hex::encode(Sha256::digest(custom_zip));
    assert_eq!(custom.sha256.as_deref(), Some(sha256.as_str()));
    let (status, zip) = api.download(local(custom.url.as_deref().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(zip.unwrap().as_ref(), custom_zip);
    assert_eq!(action.buildpacks[1].sha256, None);
    let (status, _) = api
        .download(&format!("/internal/v4/buildpacks/{custom_guid}/download"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "unsigned");

    // The buildpack cache: none yet, then what the cell put.
    let cache_get = local(action.buildpack_cache_download_uri.as_deref().unwrap());
    let cache_put = local(action.buildpack_cache_upload_uri.as_deref().unwrap());
    let (status, _) = api.download(cache_get).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = api
        .send(Method::PUT, cache_put, None, b"cache v1".to_vec(), false)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = api
        .send(Method::PUT, cache_put, None, b"cache v2".to_vec(), false)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, cache) = api.download(cache_get).await;
    assert_eq!(
        (status, cache.unwrap().as_ref()),
        (StatusCode::OK, &b"cache v2"[..])
    );

    // No names: every enabled READY buildpack by position, with detect. (`far` is
    // disabled and `locked-one` has no bits.)
    let detect = api.post("/v3/apps", app_body("detect", json!([]))).await;
    let action = stage(api, &guid(&detect)).await;
    assert!(!action.skip_detect);
    let names: Vec<&str> = action.buildpacks.iter().map(|b| b.name.as_str()).collect();
    let mut expected: Vec<&str> = wf_buildpacks::BUILT_IN.to_vec();
    expected.insert(1, "custom");
    assert_eq!(names, expected);

    // A disabled named buildpack refuses the build.
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v3/buildpacks/{custom_guid}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let package = api.get(&format!("/v3/apps/{named_guid}/packages")).await["resources"][0].clone();
    assert_unprocessable(
        api.call(
            Method::POST,
            "/v3/builds",
            Some(json!({"package": {"guid": guid(&package)}})),
        )
        .await,
        "Buildpack \"custom\" is disabled",
    );

    // Deleting the app deletes its cache.
    let (status, _, _) = api
        .send(
            Method::DELETE,
            &format!("/v3/apps/{named_guid}"),
            None,
            vec![],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = api.download(cache_get).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
