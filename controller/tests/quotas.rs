//! Organization and space quotas through the API: CF's `default` quota on every new
//! org, create/read/update/delete and applying, who may do what (admin, org manager,
//! space developer, outsider), and each enforcement with CF's message (scaling,
//! starting, routes, tasks). On SQLite, and on PostgreSQL when `WF_TEST_POSTGRES_URL`
//! is set.

use http::{Method, StatusCode};
use serde_json::{json, Value};
use wf_db::testing::Backend;

mod common;

use common::{staged_app, start, Api};

#[tokio::test]
async fn quotas_on_sqlite() {
    quotas(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn quotas_on_postgres() {
    // Skipped, with a note, unless WF_TEST_POSTGRES_URL is set.
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        quotas(start(Backend::Postgres).await).await;
    }
}

fn guid(v: &Value) -> String {
    v["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("no guid: {v}"))
        .to_string()
}

/// Asserts a CF error: its status, title and (when given) detail.
fn assert_error(
    (status, body): (StatusCode, Value),
    expected: StatusCode,
    title: &str,
    detail: Option<&str>,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["errors"][0]["title"], title, "{body}");
    if let Some(detail) = detail {
        assert_eq!(body["errors"][0]["detail"], detail, "{body}");
    }
}

fn unprocessable(response: (StatusCode, Value), detail: &str) {
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "CF-UnprocessableEntity",
        Some(detail),
    );
}

fn not_authorized(response: (StatusCode, Value)) {
    assert_error(response, StatusCode::FORBIDDEN, "CF-NotAuthorized", None);
}

fn not_found(response: (StatusCode, Value)) {
    assert_error(response, StatusCode::NOT_FOUND, "CF-ResourceNotFound", None);
}

/// A UAA user with a token.
async fn user(api: &Api, name: &str) -> (String, String) {
    let id = api
        .uaa
        .create_user(name, "a-password-1", &format!("{name}@example.com"))
        .await
        .unwrap();
    let token = api
        .uaa
        .password_grant("cf", name, "a-password-1", None)
        .await
        .unwrap()
        .access_token;
    (id, format!("bearer {token}"))
}

async fn role(api: &Api, kind: &str, user: &str, target: &str, guid: &str) {
    api.post(
        "/v3/roles",
        json!({
            "type": kind,
            "relationships": {"user": {"data": {"guid": user}}, target: {"data": {"guid": guid}}},
        }),
    )
    .await;
}

async fn quotas(api: Api) {
    // Every new org is on CF's default quota.
    let defaults = api.get("/v3/organization_quotas?names=default").await;
    let default = &defaults["resources"][0];
    assert_eq!(default["apps"]["total_memory_in_mb"], 10240, "{default}");
    assert_eq!(default["apps"]["total_instances"], Value::Null);
    assert_eq!(default["routes"]["total_routes"], 1000);
    assert_eq!(default["services"]["paid_services_allowed"], true);
    assert_eq!(default["domains"]["total_domains"], Value::Null);
    let org = api.post("/v3/organizations", json!({"name": "o"})).await;
    let org_guid = guid(&org);
    assert_eq!(
        org["relationships"]["quota"]["data"]["guid"],
        default["guid"]
    );
    let space_guid = guid(
        &api.post(
            "/v3/spaces",
            json!({"name": "s", "relationships": {"organization": {"data": {"guid": org_guid}}}}),
        )
        .await,
    );
    let other_org = guid(
        &api.post("/v3/organizations", json!({"name": "other"}))
            .await,
    );

    // Organization quotas: create, refuse bad input and duplicates, update, apply.
    let small = api
        .post(
            "/v3/organization_quotas",
            json!({"name": "small", "apps": {"total_instances": 2, "per_process_memory_in_mb": 512}}),
        )
        .await;
    let small_guid = guid(&small);
    assert_eq!(small["apps"]["total_instances"], 2);
    assert_eq!(small["apps"]["total_memory_in_mb"], Value::Null);
    assert_eq!(small["services"]["paid_services_allowed"], true);
    assert_eq!(small["relationships"]["organizations"]["data"], json!([]));
    unprocessable(
        api.call(
            Method::POST,
            "/v3/organization_quotas",
            Some(json!({"name": "small"})),
        )
        .await,
        "Organization Quota 'small' already exists.",
    );
    unprocessable(
        api.call(
            Method::POST,
            "/v3/organization_quotas",
            Some(json!({"name": "bad", "apps": {"total_instances": -2}})),
        )
        .await,
        "Apps Total instances must be greater than or equal to 0",
    );
    unprocessable(
        api.call(
            Method::POST,
            "/v3/organization_quotas",
            Some(json!({"apps": {}})),
        )
        .await,
        "Name can't be blank",
    );
    let (status, updated) = api
        .call(
            Method::PATCH,
            &format!("/v3/organization_quotas/{small_guid}"),
            Some(json!({"services": {"paid_services_allowed": false}, "routes": {"total_routes": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["services"]["paid_services_allowed"], false);
    assert_eq!(updated["routes"]["total_routes"], 1);
    assert_eq!(updated["apps"]["total_instances"], 2);
    unprocessable(
        api.call(
            Method::POST,
            &format!("/v3/organization_quotas/{small_guid}/relationships/organizations"),
            Some(json!({"data": [{"guid": "no-such-org"}]})),
        )
        .await,
        "Organizations with guids [\"no-such-org\"] do not exist, or you do not have access to them.",
    );
    let applied = api
        .post(
            &format!("/v3/organization_quotas/{small_guid}/relationships/organizations"),
            json!({"data": [{"guid": org_guid}]}),
        )
        .await;
    assert_eq!(applied["data"], json!([{"guid": org_guid}]), "{applied}");
    let org = api.get(&format!("/v3/organizations/{org_guid}")).await;
    assert_eq!(org["relationships"]["quota"]["data"]["guid"], small_guid);
    let listed = api
        .get(&format!(
            "/v3/organization_quotas?organization_guids={org_guid}"
        ))
        .await;
    assert_eq!(listed["pagination"]["total_results"], 1, "{listed}");
    assert_eq!(listed["resources"][0]["name"], "small");
    unprocessable(
        api.call(
            Method::DELETE,
            &format!("/v3/organization_quotas/{small_guid}"),
            None,
        )
        .await,
        "This quota is applied to one or more organizations. Remove this quota from all organizations before deleting.",
    );
    let unused = guid(
        &api.post("/v3/organization_quotas", json!({"name": "unused"}))
            .await,
    );
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v3/organization_quotas/{unused}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    not_found(
        api.call(
            Method::GET,
            &format!("/v3/organization_quotas/{unused}"),
            None,
        )
        .await,
    );

    // Who may do what.
    let (manager, manager_token) = user(&api, "manager").await;
    let (developer, developer_token) = user(&api, "developer").await;
    let (_, outsider_token) = user(&api, "outsider").await;
    role(
        &api,
        "organization_manager",
        &manager,
        "organization",
        &org_guid,
    )
    .await;
    role(
        &api,
        "organization_user",
        &developer,
        "organization",
        &org_guid,
    )
    .await;
    role(&api, "space_developer", &developer, "space", &space_guid).await;
    // Everyone reads org quotas, seeing only their orgs on them; only admins change them.
    let (status, seen) = api
        .call_as(
            &developer_token,
            Method::GET,
            &format!("/v3/organization_quotas/{small_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(
        seen["relationships"]["organizations"]["data"],
        json!([{"guid": org_guid}])
    );
    let (status, seen) = api
        .call_as(
            &outsider_token,
            Method::GET,
            &format!("/v3/organization_quotas/{small_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["relationships"]["organizations"]["data"], json!([]));
    for token in [&manager_token, &developer_token] {
        not_authorized(
            api.call_as(
                token,
                Method::POST,
                "/v3/organization_quotas",
                Some(json!({"name": "mine"})),
            )
            .await,
        );
        not_authorized(
            api.call_as(
                token,
                Method::PATCH,
                &format!("/v3/organization_quotas/{small_guid}"),
                Some(json!({"apps": {"total_instances": null}})),
            )
            .await,
        );
        not_authorized(
            api.call_as(
                token,
                Method::POST,
                &format!(
                    "/v3/organization_quotas/{}/relationships/organizations",
                    default["guid"].as_str().unwrap()
                ),
                Some(json!({"data": [{"guid": org_guid}]})),
            )
            .await,
        );
    }
    // Org managers create and apply space quotas in their org; developers may not.
    let new_space_quota = |name: &str, org: &str, limits: Value| {
        let mut body =
            json!({"name": name, "relationships": {"organization": {"data": {"guid": org}}}});
        body.as_object_mut()
            .unwrap()
            .extend(limits.as_object().unwrap().clone());
        body
    };
    not_authorized(
        api.call_as(
            &developer_token,
            Method::POST,
            "/v3/space_quotas",
            Some(new_space_quota("dev", &org_guid, json!({}))),
        )
        .await,
    );
    unprocessable(
        api.call_as(
            &manager_token,
            Method::POST,
            "/v3/space_quotas",
            Some(new_space_quota("elsewhere", &other_org, json!({}))),
        )
        .await,
        &format!(
            "Organization with guid '{other_org}' does not exist, or you do not have access to it."
        ),
    );
    let (status, space_quota) = api.call_as(&manager_token,
        Method::POST,
        "/v3/space_quotas",
        Some(new_space_quota(
            "tight",
            &org_guid,
            json!({"apps": {"total_instances": 1, "per_app_tasks": 0}, "routes": {"total_routes": 0}}),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{space_quota}");
    let space_quota_guid = guid(&space_quota);
    assert_eq!(
        space_quota["relationships"]["organization"]["data"]["guid"],
        org_guid
    );
    assert!(space_quota.get("domains").is_none(), "{space_quota}");
    let space_quota_path = format!("/v3/space_quotas/{space_quota_guid}");
    // Not yet on the developer's space: the developer does not see it.
    not_found(
        api.call_as(&developer_token, Method::GET, &space_quota_path, None)
            .await,
    );
    not_found(
        api.call_as(&outsider_token, Method::GET, &space_quota_path, None)
            .await,
    );
    let apply_path = format!("{space_quota_path}/relationships/spaces");
    not_found(
        api.call_as(
            &developer_token,
            Method::POST,
            &apply_path,
            Some(json!({"data": [{"guid": space_guid}]})),
        )
        .await,
    );
    let (status, applied) = api
        .call_as(
            &manager_token,
            Method::POST,
            &apply_path,
            Some(json!({"data": [{"guid": space_guid}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["data"], json!([{"guid": space_guid}]));
    let (status, seen) = api
        .call_as(&developer_token, Method::GET, &space_quota_path, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let (_, listed) = api
        .call_as(&developer_token, Method::GET, "/v3/space_quotas", None)
        .await;
    assert_eq!(listed["pagination"]["total_results"], 1, "{listed}");
    let (_, listed) = api
        .call_as(&outsider_token, Method::GET, "/v3/space_quotas", None)
        .await;
    assert_eq!(listed["pagination"]["total_results"], 0, "{listed}");
    not_authorized(
        api.call_as(
            &developer_token,
            Method::PATCH,
            &space_quota_path,
            Some(json!({"apps": {"total_instances": 5}})),
        )
        .await,
    );
    not_authorized(
        api.call_as(
            &developer_token,
            Method::DELETE,
            &format!("{apply_path}/{space_guid}"),
            None,
        )
        .await,
    );
    let space = api.get(&format!("/v3/spaces/{space_guid}")).await;
    assert_eq!(
        space["relationships"]["quota"]["data"]["guid"],
        space_quota_guid
    );
    let elsewhere_space = guid(
        &api.post(
            "/v3/spaces",
            json!({"name": "x", "relationships": {"organization": {"data": {"guid": other_org}}}}),
        )
        .await,
    );
    unprocessable(
        api.call(
            Method::POST,
            &apply_path,
            Some(json!({"data": [{"guid": elsewhere_space}]})),
        )
        .await,
        "Space quotas cannot be applied outside of their owning organization.",
    );

    // Enforcement. Routes: the space's quota (0) first, then the org's (1).
    let domains = api.get("/v3/domains?names=apps.test").await;
    let domain = domains["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let route = |host: &str| json!({"host": host, "relationships": {"space": {"data": {"guid": space_guid}}, "domain": {"data": {"guid": domain}}}});
    unprocessable(
        api.call(Method::POST, "/v3/routes", Some(route("r1")))
            .await,
        "Routes quota exceeded for space 's'.",
    );
    let (status, _) = api
        .call(
            Method::PATCH,
            &space_quota_path,
            Some(json!({"routes": {"total_routes": null}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    api.post("/v3/routes", route("r1")).await;
    unprocessable(
        api.call(Method::POST, "/v3/routes", Some(route("r2")))
            .await,
        "Routes quota exceeded for organization 'o'.",
    );

    // Processes: a stopped app scales freely; starting it counts its instances.
    let app = staged_app(&api, &space_guid, "app").await;
    let scale = format!("/v3/apps/{app}/processes/web/actions/scale");
    let (status, scaled) = api
        .call(Method::POST, &scale, Some(json!({"instances": 2})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{scaled}");
    unprocessable(
        api.call(Method::POST, &format!("/v3/apps/{app}/actions/start"), None)
            .await,
        "app_instance_limit space_app_instance_limit_exceeded",
    );
    let (status, _) = api
        .call(Method::DELETE, &format!("{apply_path}/{space_guid}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    unprocessable(
        api.call(Method::DELETE, &format!("{apply_path}/{space_guid}"), None)
            .await,
        &format!("Unable to remove quota from space with guid '{space_guid}'. Ensure the space quota is applied to this space."),
    );
    let started = api
        .post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    assert_eq!(started["state"], "STARTED");
    // The org allows 2 instances of at most 512 MB.
    unprocessable(
        api.call(Method::POST, &scale, Some(json!({"instances": 3})))
            .await,
        "app_instance_limit app_instance_limit_exceeded",
    );
    unprocessable(
        api.call(Method::POST, &scale, Some(json!({"memory_in_mb": 1024})))
            .await,
        "memory instance_memory_limit_exceeded",
    );
    let (status, _) = api
        .call(Method::POST, &scale, Some(json!({"instances": 1})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/v3/organization_quotas/{small_guid}"),
            Some(json!({"apps": {"total_memory_in_mb": 600}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    unprocessable(
        api.call(
            Method::POST,
            &scale,
            Some(json!({"instances": 2, "memory_in_mb": 512})),
        )
        .await,
        "memory quota_exceeded",
    );
    // Scaling down is never refused, even above a lowered quota.
    let (status, _) = api
        .call(Method::POST, &scale, Some(json!({"instances": 0})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Tasks: the org's per-process memory, then a space quota of no tasks.
    let tasks = format!("/v3/apps/{app}/tasks");
    unprocessable(
        api.call(
            Method::POST,
            &tasks,
            Some(json!({"command": "app.wasm task", "memory_in_mb": 1024})),
        )
        .await,
        "memory_in_mb exceeds organization memory quota, memory_in_mb exceeds organization instance memory quota",
    );
    api.post(&apply_path, json!({"data": [{"guid": space_guid}]}))
        .await;
    unprocessable(
        api.call(
            Method::POST,
            &tasks,
            Some(json!({"command": "app.wasm task", "memory_in_mb": 64})),
        )
        .await,
        "app_task_limit quota exceeded",
    );
    unprocessable(
        api.call(Method::DELETE, &space_quota_path, None).await,
        "This quota is applied to one or more spaces. Remove this quota from all spaces before deleting.",
    );
    let (status, _) = api
        .call(Method::DELETE, &format!("{apply_path}/{space_guid}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, task) = api
        .call(
            Method::POST,
            &tasks,
            Some(json!({"command": "app.wasm task", "memory_in_mb": 64})),
        )
        .await;
    assert!(status.is_success(), "{status} {task}");
    let (status, _) = api
        .call_as(&manager_token, Method::DELETE, &space_quota_path, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}
