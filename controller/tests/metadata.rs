//! Labels and annotations through the API: set on create and PATCH of several resource
//! kinds (merged, `null` deletes), shown on each, kept apart between an app and its web
//! process (same guid), `label_selector` in every form alone and with other filters and
//! pagination, CF's validation errors, and rows gone with their resource. On SQLite,
//! and on PostgreSQL when `WF_TEST_POSTGRES_URL` is set.

use http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row as _;
use wf_db::testing::Backend;

mod common;

use common::{start_with, Api};

#[tokio::test]
async fn metadata_on_sqlite() {
    // A file, so that the test can look at the rows through a connection of its own.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cc.db").display());
    let api = start_with(Backend::Sqlite, |c| c.database_url = url.clone()).await;
    metadata(api, &url).await;
}

#[tokio::test]
async fn metadata_on_postgres() {
    // Skipped unless WF_TEST_POSTGRES_URL is set.
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        let mut url = String::new();
        let api = start_with(Backend::Postgres, |c| url = c.database_url.clone()).await;
        metadata(api, &url).await;
    }
}

fn guid(v: &Value) -> String {
    v["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("no guid: {v}"))
        .to_string()
}

async fn patch(api: &Api, uri: &str, body: Value) -> Value {
    let (status, response) = api.call(Method::PATCH, uri, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "PATCH {uri}: {response}");
    response
}

/// The names of the apps `query` lists (sorted).
async fn app_names(api: &Api, query: &str) -> Vec<String> {
    let list = api.get(&format!("/v3/apps?{query}")).await;
    let mut names: Vec<String> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn assert_error((status, body): (StatusCode, Value), want: StatusCode, title: &str, detail: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["errors"][0]["title"], title, "{body}");
    let got = body["errors"][0]["detail"].as_str().unwrap_or_default();
    assert!(got.contains(detail), "{got:?} lacks {detail:?}");
}

/// How many label and annotation rows resource `guid` has, straight from the CC database.
async fn stored_rows(db: &str, guid: &str) -> i64 {
    let pool = sqlx::AnyPool::connect(db).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) AS n FROM resource_metadata WHERE resource_guid = $1")
        .bind(guid)
        .fetch_one(&pool)
        .await
        .unwrap();
    let n: i64 = row.try_get("n").unwrap();
    pool.close().await;
    n
}

/// Applies a manifest to the space and waits for its job; the job.
async fn apply_manifest(api: &Api, space: &str, manifest: &str) -> Value {
    let uri = format!("/v3/spaces/{space}/actions/apply_manifest");
    let (status, headers, body) = api
        .send(
            Method::POST,
            &uri,
            Some("application/x-yaml"),
            manifest.as_bytes().to_vec(),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let location = headers["location"].to_str().unwrap();
    let job = &location[location.find("/v3/").unwrap()..];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let state = api.get(job).await;
        if state["state"] != "PROCESSING" || std::time::Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs a statement on the CC database with `args` as `$1...` and a timestamp last.
async fn sql(db: &str, statement: &str, args: &[&str]) {
    let pool = sqlx::AnyPool::connect(db).await.unwrap();
    let mut query = sqlx::query(statement);
    for arg in args {
        query = query.bind(arg.to_string());
    }
    query
        .bind("2026-01-01T00:00:00.000000Z")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

async fn metadata(api: Api, db: &str) {
    // Orgs and spaces: metadata on create, shown on show and in lists.
    let org = api
        .post(
            "/v3/organizations",
            json!({"name": "o", "metadata": {
                "labels": {"env": "prod", "example.com/team": "core"},
                "annotations": {"contact": "ops@example.com"},
            }}),
        )
        .await;
    assert_eq!(
        org["metadata"],
        json!({"labels": {"env": "prod", "example.com/team": "core"},
               "annotations": {"contact": "ops@example.com"}})
    );
    let org_guid = guid(&org);
    let shown = api.get(&format!("/v3/organizations/{org_guid}")).await;
    assert_eq!(shown["metadata"], org["metadata"]);
    let space = api
        .post(
            "/v3/spaces",
            json!({"name": "s", "relationships": {"organization": {"data": {"guid": org_guid}}},
                   "metadata": {"labels": {"tier": "1"}}}),
        )
        .await;
    let space_guid = guid(&space);
    let listed = api
        .get("/v3/spaces?label_selector=tier=1&include=organization")
        .await;
    assert_eq!(listed["pagination"]["total_results"], 1, "{listed}");
    assert_eq!(listed["resources"][0]["metadata"]["labels"]["tier"], "1");
    assert_eq!(
        listed["included"]["organizations"][0]["metadata"]["labels"]["env"],
        "prod"
    );
    assert_eq!(
        api.get("/v3/organizations?label_selector=example.com/team=core")
            .await["pagination"]["total_results"],
        1
    );
    assert_eq!(
        api.get("/v3/organizations?label_selector=team=core").await["pagination"]["total_results"],
        0,
        "a prefixed key is not its bare name"
    );

    // PATCH merges, and null deletes.
    let patched = patch(
        &api,
        &format!("/v3/organizations/{org_guid}"),
        json!({"metadata": {"labels": {"env": "staging", "example.com/team": null, "new": ""},
                            "annotations": {"contact": null, "note": "x"}}}),
    )
    .await;
    assert_eq!(
        patched["metadata"],
        json!({"labels": {"env": "staging", "new": ""}, "annotations": {"note": "x"}})
    );
    assert_eq!(
        patched["name"], "o",
        "a metadata PATCH changes nothing else"
    );

    // Apps to select among.
    let mut apps = Vec::new();
    for (name, labels) in [
        ("a-prod", json!({"env": "prod", "tier": "web"})),
        ("b-dev", json!({"env": "dev", "tier": "web"})),
        ("c-test", json!({"env": "test"})),
        ("d-none", json!({})),
        (
            "e-prod-worker",
            json!({"env": "prod", "tier": "worker", "example.com/team": "core"}),
        ),
    ] {
        let app = api
            .post(
                "/v3/apps",
                json!({"name": name, "relationships": {"space": {"data": {"guid": space_guid}}},
                       "metadata": {"labels": labels, "annotations": {"owner": name}}}),
            )
            .await;
        assert_eq!(app["metadata"]["labels"], labels, "{app}");
        assert_eq!(app["metadata"]["annotations"]["owner"], name);
        apps.push(guid(&app));
    }
    let all = ["a-prod", "b-dev", "c-test", "d-none", "e-prod-worker"];
    let expect = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    for (selector, want) in [
        ("env=prod", &["a-prod", "e-prod-worker"][..]),
        ("env==prod", &["a-prod", "e-prod-worker"][..]),
        ("env!=prod", &["b-dev", "c-test", "d-none"][..]),
        (
            "env in (prod,dev)",
            &["a-prod", "b-dev", "e-prod-worker"][..],
        ),
        ("env notin (prod, dev)", &["c-test", "d-none"][..]),
        ("tier", &["a-prod", "b-dev", "e-prod-worker"][..]),
        ("!tier", &["c-test", "d-none"][..]),
        ("env=prod,tier=web", &["a-prod"][..]),
        ("env,!tier", &["c-test"][..]),
        ("example.com/team=core", &["e-prod-worker"][..]),
        ("env=nothing", &[][..]),
        ("owner", &[][..]),
    ] {
        let query = format!("label_selector={}", urlencode(selector));
        assert_eq!(app_names(&api, &query).await, expect(want), "{selector}");
    }
    assert_eq!(app_names(&api, "").await, expect(&all));

    // Combined with other filters, and paged with the selector kept in the links.
    assert_eq!(
        app_names(&api, "label_selector=env=prod&names=a-prod,b-dev").await,
        expect(&["a-prod"])
    );
    let page = api
        .get("/v3/apps?label_selector=tier&per_page=2&order_by=name")
        .await;
    assert_eq!(page["pagination"]["total_results"], 3);
    assert_eq!(page["pagination"]["total_pages"], 2);
    assert_eq!(page["resources"][0]["name"], "a-prod");
    let next = page["pagination"]["next"]["href"].as_str().unwrap();
    assert!(next.contains("label_selector=tier"), "{next}");
    let next = &next[next.find("/v3/").unwrap()..];
    let second = api.get(next).await;
    assert_eq!(second["resources"].as_array().unwrap().len(), 1);
    assert_eq!(second["resources"][0]["name"], "e-prod-worker");

    // Malformed selectors: 400 CF-BadQueryParameter.
    for (selector, detail) in [
        ("env in (a,b", "Invalid label_selector value"),
        ("env notin a", "Invalid label_selector value"),
        ("=prod", "Invalid label_selector value"),
        ("env==a==b", "Invalid label_selector value"),
        ("", "Missing label_selector value"),
        ("bad*key=1", "'bad*key' contains invalid characters"),
    ] {
        let uri = format!("/v3/apps?label_selector={}", urlencode(selector));
        assert_error(
            api.call(Method::GET, &uri, None).await,
            StatusCode::BAD_REQUEST,
            "CF-BadQueryParameter",
            detail,
        );
    }

    // An app and its web process share a guid but not their labels.
    let app_guid = &apps[0];
    let process = patch(
        &api,
        &format!("/v3/processes/{app_guid}"),
        json!({"metadata": {"labels": {"kind": "web"}}}),
    )
    .await;
    assert_eq!(process["metadata"]["labels"], json!({"kind": "web"}));
    let app = api.get(&format!("/v3/apps/{app_guid}")).await;
    assert_eq!(
        app["metadata"]["labels"],
        json!({"env": "prod", "tier": "web"})
    );
    let processes = api.get("/v3/processes?label_selector=kind=web").await;
    assert_eq!(processes["pagination"]["total_results"], 1);
    assert_eq!(processes["resources"][0]["guid"], *app_guid);
    assert_eq!(app_names(&api, "label_selector=kind").await, expect(&[]));
    let app = patch(
        &api,
        &format!("/v3/apps/{app_guid}"),
        json!({"name": "a-prod", "metadata": {"labels": {"tier": null}, "annotations": {"x": "1"}}}),
    )
    .await;
    assert_eq!(app["metadata"]["labels"], json!({"env": "prod"}));
    assert_eq!(
        app["metadata"]["annotations"],
        json!({"owner": "a-prod", "x": "1"})
    );

    // Concurrent PATCHes of one key all succeed, and one of them wins.
    let uri = format!("/v3/apps/{app_guid}");
    let racing = (0..16).map(|i| {
        let body = json!({"metadata": {"labels": {"race": i.to_string()}}});
        api.call(Method::PATCH, &uri, Some(body))
    });
    for (status, body) in futures::future::join_all(racing).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let app = api.get(&uri).await;
    assert!(app["metadata"]["labels"]["race"].is_string(), "{app}");
    patch(&api, &uri, json!({"metadata": {"labels": {"race": null}}})).await;

    // Validation as CF words it; nothing changes.
    let long_value = "v".repeat(64);
    for (body, detail) in [
        (
            json!({"labels": {"cloudfoundry.org/x": "1"}}),
            "Metadata label key error: prefix 'cloudfoundry.org' is reserved",
        ),
        (
            json!({"labels": {"": "test", "sha2": "108&eb90d734"}}),
            "Metadata label key error: key cannot be empty string, Metadata label value error: '108&eb90d734' contains invalid characters",
        ),
        (
            json!({"labels": {"k": long_value}}),
            "Metadata label value error: 'vvvvvvvv...' is greater than 63 characters",
        ),
        (
            json!({"annotations": {"k": "a".repeat(5001)}}),
            "Metadata annotation value error: 'aaaaaaaa...' is greater than 5000 characters",
        ),
        (json!({"labels": {"a/b/c": "1"}}), "key has more than one '/'"),
        (json!({"other": {}}), "Metadata has unexpected field(s): 'other'"),
    ] {
        assert_error(
            api.call(
                Method::PATCH,
                &format!("/v3/apps/{app_guid}"),
                Some(json!({"metadata": body})),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "CF-UnprocessableEntity",
            detail,
        );
    }
    assert_error(
        api.call(
            Method::POST,
            "/v3/apps",
            Some(
                json!({"name": "bad", "relationships": {"space": {"data": {"guid": space_guid}}},
                        "metadata": {"labels": {"-x": "1"}}}),
            ),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "CF-UnprocessableEntity",
        "Metadata label key error: '-x' starts or ends with invalid characters",
    );
    assert!(!app_names(&api, "").await.contains(&"bad".to_string()));
    let app = api.get(&format!("/v3/apps/{app_guid}")).await;
    assert_eq!(app["metadata"]["labels"], json!({"env": "prod"}));

    // Domains, routes, packages, buildpacks, users.
    let domain = api
        .post(
            "/v3/domains",
            json!({"name": "meta.example.com", "metadata": {"labels": {"edge": "yes"}}}),
        )
        .await;
    assert_eq!(domain["metadata"]["labels"], json!({"edge": "yes"}));
    let domain_guid = guid(&domain);
    let domain = patch(
        &api,
        &format!("/v3/domains/{domain_guid}"),
        json!({"metadata": {"annotations": {"dns": "managed"}}}),
    )
    .await;
    assert_eq!(
        domain["metadata"],
        json!({"labels": {"edge": "yes"}, "annotations": {"dns": "managed"}})
    );
    let domains = api.get("/v3/domains?label_selector=edge").await;
    assert_eq!(domains["pagination"]["total_results"], 1);

    let route = api
        .post(
            "/v3/routes",
            json!({"host": "www", "relationships": {
                "space": {"data": {"guid": space_guid}},
                "domain": {"data": {"guid": domain_guid}}},
                "metadata": {"labels": {"public": "true"}}}),
        )
        .await;
    let route_guid = guid(&route);
    assert_eq!(route["metadata"]["labels"], json!({"public": "true"}));
    let route = patch(
        &api,
        &format!("/v3/routes/{route_guid}"),
        json!({"metadata": {"labels": {"public": "false"}}}),
    )
    .await;
    assert_eq!(route["metadata"]["labels"], json!({"public": "false"}));
    let routes = api.get("/v3/routes?label_selector=public=false").await;
    assert_eq!(routes["pagination"]["total_results"], 1);
    assert_eq!(routes["resources"][0]["guid"], route_guid);

    let package = api
        .post(
            "/v3/packages",
            json!({"type": "bits", "relationships": {"app": {"data": {"guid": app_guid}}},
                   "metadata": {"labels": {"commit": "abc123"}}}),
        )
        .await;
    let package_guid = guid(&package);
    assert_eq!(package["metadata"]["labels"], json!({"commit": "abc123"}));
    patch(
        &api,
        &format!("/v3/packages/{package_guid}"),
        json!({"metadata": {"labels": {"commit": null, "branch": "main"}}}),
    )
    .await;
    let packages = api
        .get(&format!(
            "/v3/apps/{app_guid}/packages?label_selector=branch=main"
        ))
        .await;
    assert_eq!(packages["pagination"]["total_results"], 1);
    assert_eq!(
        packages["resources"][0]["metadata"]["labels"],
        json!({"branch": "main"})
    );

    let buildpack = api
        .post(
            "/v3/buildpacks",
            json!({"name": "labelled", "metadata": {"labels": {"lang": "rust"}}}),
        )
        .await;
    let buildpack_guid = guid(&buildpack);
    assert_eq!(buildpack["metadata"]["labels"], json!({"lang": "rust"}));
    let buildpack = patch(
        &api,
        &format!("/v3/buildpacks/{buildpack_guid}"),
        json!({"enabled": false, "metadata": {"annotations": {"source": "git"}}}),
    )
    .await;
    assert_eq!(buildpack["enabled"], false);
    assert_eq!(
        buildpack["metadata"]["annotations"],
        json!({"source": "git"})
    );
    let buildpacks = api.get("/v3/buildpacks?label_selector=lang").await;
    assert_eq!(buildpacks["pagination"]["total_results"], 1);
    assert_eq!(buildpacks["resources"][0]["name"], "labelled");

    let (dev_token, dev_guid) = api.new_user("dev").await;
    // The controller records a user on their first request.
    let (status, _) = api
        .call_as(&dev_token, Method::GET, "/v3/organizations", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    api.grant(&dev_guid, "organization_user", "organization", &org_guid)
        .await;
    let user = patch(
        &api,
        &format!("/v3/users/{dev_guid}"),
        json!({"metadata": {"labels": {"team": "core"}}}),
    )
    .await;
    assert_eq!(user["metadata"]["labels"], json!({"team": "core"}));
    let users = api.get("/v3/users?label_selector=team=core").await;
    assert_eq!(users["pagination"]["total_results"], 1);
    assert_eq!(users["resources"][0]["guid"], dev_guid);

    // Metadata PATCHes follow each resource's update permission.
    api.grant(&dev_guid, "space_auditor", "space", &space_guid)
        .await;
    let forbidden = |r: (StatusCode, Value)| assert_eq!(r.0, StatusCode::FORBIDDEN, "{}", r.1);
    let labels = json!({"metadata": {"labels": {"by": "auditor"}}});
    forbidden(
        api.call_as(
            &dev_token,
            Method::PATCH,
            &format!("/v3/apps/{app_guid}"),
            Some(labels.clone()),
        )
        .await,
    );
    forbidden(
        api.call_as(
            &dev_token,
            Method::PATCH,
            &format!("/v3/routes/{route_guid}"),
            Some(labels.clone()),
        )
        .await,
    );
    forbidden(
        api.call_as(
            &dev_token,
            Method::PATCH,
            &format!("/v3/users/{dev_guid}"),
            Some(labels.clone()),
        )
        .await,
    );
    let app = api.get(&format!("/v3/apps/{app_guid}")).await;
    assert_eq!(app["metadata"]["labels"], json!({"env": "prod"}));

    // Manifests: apply_manifest sets an app's metadata, the app's manifest shows it.
    let manifest = "applications:\n- name: from-manifest\n  metadata:\n    labels:\n      env: dev\n    annotations:\n      note: hi\n";
    let job = apply_manifest(&api, &space_guid, manifest).await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let listed = api
        .get("/v3/apps?names=from-manifest&label_selector=env=dev")
        .await;
    assert_eq!(listed["pagination"]["total_results"], 1, "{listed}");
    let manifest_app_guid = guid(&listed["resources"][0]);
    // The current manifest (what a diff starts from) has the app's metadata.
    let diff_uri = format!("/v3/spaces/{space_guid}/manifest_diff");
    let (status, _, same) = api
        .send(
            Method::POST,
            &diff_uri,
            None,
            manifest.as_bytes().to_vec(),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["diff"], json!([]), "{same}");
    let changed = manifest.replace("env: dev", "env: prod");
    let (_, _, diff) = api
        .send(Method::POST, &diff_uri, None, changed.into_bytes(), true)
        .await;
    assert_eq!(
        diff["diff"],
        json!([{"op": "replace", "path": "/applications/0/metadata",
                "was": {"labels": {"env": "dev"}, "annotations": {"note": "hi"}},
                "value": {"labels": {"env": "prod"}, "annotations": {"note": "hi"}}}])
    );
    let job = apply_manifest(
        &api,
        &space_guid,
        "applications:\n- name: from-manifest\n  metadata:\n    labels:\n      env: null\n      tier: '1'\n",
    )
    .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let app = api.get(&format!("/v3/apps/{manifest_app_guid}")).await;
    assert_eq!(
        app["metadata"],
        json!({"labels": {"tier": "1"}, "annotations": {"note": "hi"}})
    );
    let job = apply_manifest(
        &api,
        &space_guid,
        "applications:\n- name: from-manifest\n  metadata:\n    labels:\n      bad*: x\n",
    )
    .await;
    assert_eq!(job["state"], "FAILED", "{job}");
    let detail = job["errors"][0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Metadata label key error: 'bad*' contains invalid characters"),
        "{job}"
    );

    // The one stack, which has no record of its own.
    let stack_guid = guid(&api.get("/v3/stacks").await["resources"][0]);
    let stack = patch(
        &api,
        &format!("/v3/stacks/{stack_guid}"),
        json!({"metadata": {"labels": {"runtime": "wasmtime"}}}),
    )
    .await;
    assert_eq!(stack["metadata"]["labels"], json!({"runtime": "wasmtime"}));
    for (query, found) in [
        ("label_selector=runtime=wasmtime", 1),
        ("label_selector=runtime%21%3Dwasmtime", 0),
        ("label_selector=%21runtime", 0),
        ("label_selector=runtime&names=wasm", 1),
        ("label_selector=runtime&names=cflinuxfs4", 0),
    ] {
        let stacks = api.get(&format!("/v3/stacks?{query}")).await;
        assert_eq!(stacks["pagination"]["total_results"], found, "{query}");
    }
    forbidden(
        api.call_as(
            &dev_token,
            Method::PATCH,
            &format!("/v3/stacks/{stack_guid}"),
            Some(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await,
    );

    // Service instances and credential bindings.
    let instance = api
        .post(
            "/v3/service_instances",
            json!({"type": "user-provided", "name": "db",
                   "relationships": {"space": {"data": {"guid": space_guid}}},
                   "credentials": {"uri": "x"},
                   "metadata": {"labels": {"class": "db"}}}),
        )
        .await;
    let instance_guid = guid(&instance);
    assert_eq!(instance["metadata"]["labels"], json!({"class": "db"}));
    let instance = patch(
        &api,
        &format!("/v3/service_instances/{instance_guid}"),
        json!({"metadata": {"annotations": {"backup": "daily"}}}),
    )
    .await;
    assert_eq!(
        instance["metadata"],
        json!({"labels": {"class": "db"}, "annotations": {"backup": "daily"}})
    );
    let instances = api
        .get("/v3/service_instances?label_selector=class%20in%20(db,cache)")
        .await;
    assert_eq!(instances["pagination"]["total_results"], 1);
    let binding = api
        .post(
            "/v3/service_credential_bindings",
            json!({"type": "app", "relationships": {
                "service_instance": {"data": {"guid": instance_guid}},
                "app": {"data": {"guid": app_guid}}},
                "metadata": {"labels": {"bound-by": "test"}}}),
        )
        .await;
    let binding_guid = guid(&binding);
    assert_eq!(binding["metadata"]["labels"], json!({"bound-by": "test"}));
    let binding = patch(
        &api,
        &format!("/v3/service_credential_bindings/{binding_guid}"),
        json!({"metadata": {"labels": {"bound-by": null, "purpose": "logs"}}}),
    )
    .await;
    assert_eq!(binding["metadata"]["labels"], json!({"purpose": "logs"}));
    let bindings = api
        .get("/v3/service_credential_bindings?label_selector=purpose=logs")
        .await;
    assert_eq!(bindings["pagination"]["total_results"], 1);
    assert_eq!(stored_rows(db, &binding_guid).await, 1);

    // A broker's catalog (written as a catalog fetch would), its offerings and plans.
    let (broker_guid, offering_guid, plan_guid) = ("b-1", "o-1", "p-1");
    sql(
        db,
        "INSERT INTO service_brokers (guid, name, url, authentication, space_guid, \
         created_at, updated_at) VALUES ($1, 'kv', 'https://broker.test', '{}', NULL, $2, $2)",
        &[broker_guid],
    )
    .await;
    sql(
        db,
        "INSERT INTO service_offerings (guid, service_broker_guid, broker_id, name, \
         description, available, bindable, plan_updateable, instances_retrievable, \
         bindings_retrievable, tags, requires, metadata, created_at, updated_at) \
         VALUES ($1, 'b-1', 'kv-id', 'kv', 'd', 1, 1, 0, 0, 0, '[]', '[]', '{}', $2, $2)",
        &[offering_guid],
    )
    .await;
    sql(
        db,
        "INSERT INTO service_plans (guid, service_offering_guid, broker_id, name, \
         description, available, free, bindable, plan_updateable, visibility_type, metadata, \
         created_at, updated_at) \
         VALUES ($1, 'o-1', 'small-id', 'small', 'd', 1, 1, 1, 0, 'admin', '{}', $2, $2)",
        &[plan_guid],
    )
    .await;
    let broker = patch(
        &api,
        &format!("/v3/service_brokers/{broker_guid}"),
        json!({"metadata": {"labels": {"vendor": "acme"}}}),
    )
    .await;
    assert_eq!(broker["metadata"]["labels"], json!({"vendor": "acme"}));
    let offering = patch(
        &api,
        &format!("/v3/service_offerings/{offering_guid}"),
        json!({"metadata": {"labels": {"kind": "kv"}}}),
    )
    .await;
    assert_eq!(offering["metadata"]["labels"], json!({"kind": "kv"}));
    let plan = patch(
        &api,
        &format!("/v3/service_plans/{plan_guid}"),
        json!({"metadata": {"annotations": {"size": "1GB"}, "labels": {"tier": "free"}}}),
    )
    .await;
    assert_eq!(plan["metadata"]["annotations"], json!({"size": "1GB"}));
    for (list, selector, key) in [
        ("service_brokers", "vendor=acme", "vendor"),
        ("service_offerings", "kind", "kind"),
        ("service_plans", "tier in (free)", "tier"),
    ] {
        let uri = format!("/v3/{list}?label_selector={}", urlencode(selector));
        assert_eq!(
            api.get(&uri).await["pagination"]["total_results"],
            1,
            "{uri}"
        );
        let uri = format!("/v3/{list}?label_selector=%21{key}");
        assert_eq!(
            api.get(&uri).await["pagination"]["total_results"],
            0,
            "{uri}"
        );
    }
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/v3/service_brokers/{broker_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for gone in [broker_guid, offering_guid, plan_guid] {
        assert_eq!(stored_rows(db, gone).await, 0, "{gone}");
    }

    // Deleting a resource deletes its rows; the web process's went with the app.
    assert_eq!(stored_rows(db, app_guid).await, 4);
    let (status, body) = api
        .call(Method::DELETE, &format!("/v3/apps/{app_guid}"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(stored_rows(db, app_guid).await, 0);
    assert_eq!(stored_rows(db, &package_guid).await, 0);
    assert_eq!(stored_rows(db, &binding_guid).await, 0);
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/v3/service_instances/{instance_guid}"),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(stored_rows(db, &instance_guid).await, 0);
    assert_eq!(stored_rows(db, &apps[4]).await, 4);
    for uri in [
        format!("/v3/buildpacks/{buildpack_guid}"),
        format!("/v3/routes/{route_guid}"),
        format!("/v3/domains/{domain_guid}"),
    ] {
        let (status, body) = api.call(Method::DELETE, &uri, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{uri}: {body}");
    }
    for gone in [&buildpack_guid, &route_guid, &domain_guid] {
        assert_eq!(stored_rows(db, gone).await, 0);
    }
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/v3/organizations/{org_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for gone in [&org_guid, &space_guid, &apps[4]] {
        assert_eq!(stored_rows(db, gone).await, 0, "{gone}");
    }
    assert_eq!(stored_rows(db, &dev_guid).await, 1);
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
