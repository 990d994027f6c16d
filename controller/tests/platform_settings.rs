//! Feature flags, environment variable groups and stacks: CF's defaults, admin-only changes,
//! and their effect (a disabled feature refused with CF-FeatureDisabled; users
//! creating orgs under user_org_creation; group variables in the app's environment).

mod common;

use http::{Method, StatusCode};
use serde_json::json;
use wf_db::testing::Backend;

use common::Api;

/// A space developer in a new org and space: their `bearer` token and the space guid.
async fn developer(api: &Api, name: &str) -> (String, String) {
    let (token, user_id) = api.new_user(name).await;
    let (org, space) = api.org_and_space(&format!("{name}-org")).await;
    api.grant(&user_id, "organization_user", "organization", &org)
        .await;
    api.grant(&user_id, "space_developer", "space", &space)
        .await;
    (token, space)
}

#[tokio::test]
async fn feature_flags_have_cf_defaults_and_admins_switch_them() {
    let api = common::start(Backend::Sqlite).await;
    let flags = api.get("/v3/feature_flags").await;
    let resources = flags["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 17, "{flags}");
    let flag = |name: &str| {
        resources
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(flag("app_scaling")["enabled"], true);
    assert_eq!(flag("user_org_creation")["enabled"], false);
    assert_eq!(
        api.call(Method::GET, "/v3/feature_flags/nope", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let (dev, space) = developer(&api, "flagdev").await;
    let app = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/apps",
            Some(json!({"name": "a", "relationships": {"space": {"data": {"guid": space}}}})),
        )
        .await
        .1;
    let scale = format!(
        "/v3/apps/{}/processes/web/actions/scale",
        app["guid"].as_str().unwrap()
    );
    let (status, body) = api
        .call_as(
            &dev,
            Method::PATCH,
            "/v3/feature_flags/app_scaling",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(
        (status, body["errors"][0]["title"].as_str()),
        (StatusCode::FORBIDDEN, Some("CF-NotAuthorized"))
    );

    let (status, body) = api
        .call(
            Method::PATCH,
            "/v3/feature_flags/app_scaling",
            Some(json!({"enabled": false, "custom_error_message": "scaling is frozen"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["enabled"], false);
    let (status, body) = api
        .call_as(&dev, Method::POST, &scale, Some(json!({"instances": 2})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errors"][0]["title"], "CF-FeatureDisabled");
    assert_eq!(body["errors"][0]["code"], 330002);
    assert_eq!(body["errors"][0]["detail"], "scaling is frozen");
    // Admins are not bound by flags.
    assert_eq!(
        api.call(Method::POST, &scale, Some(json!({"instances": 2})))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    api.call(
        Method::PATCH,
        "/v3/feature_flags/app_scaling",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(
        api.call_as(&dev, Method::POST, &scale, Some(json!({"instances": 1})))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let (status, _) = api
        .call(
            Method::PATCH,
            "/v3/feature_flags/app_scaling",
            Some(json!({"enabled": "yes"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // user_org_creation: users create orgs and manage them.
    let (status, body) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/organizations",
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(
        (status, body["errors"][0]["title"].as_str()),
        (StatusCode::FORBIDDEN, Some("CF-NotAuthorized"))
    );
    api.call(
        Method::PATCH,
        "/v3/feature_flags/user_org_creation",
        Some(json!({"enabled": true})),
    )
    .await;
    let (status, org) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/organizations",
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    let org_guid = org["guid"].as_str().unwrap();
    let (status, _) = api
        .call_as(
            &dev,
            Method::PATCH,
            &format!("/v3/organizations/{org_guid}"),
            Some(json!({"name": "mine2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the creator manages the org");
}

#[tokio::test]
async fn environment_variable_groups_reach_the_apps_environment() {
    let api = common::start(Backend::Sqlite).await;
    let running = api.get("/v3/environment_variable_groups/running").await;
    assert_eq!(running["var"], json!({}), "{running}");
    assert_eq!(
        api.call(Method::GET, "/v3/environment_variable_groups/other", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = api
        .call(
            Method::PATCH,
            "/v3/environment_variable_groups/running",
            Some(json!({"var": {"REGION": "eu", "SHARED": "group"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.call(
        Method::PATCH,
        "/v3/environment_variable_groups/staging",
        Some(json!({"var": {"MIRROR": "local"}})),
    )
    .await;

    let (dev, space) = developer(&api, "groupdev").await;
    let (status, _) = api
        .call_as(
            &dev,
            Method::PATCH,
            "/v3/environment_variable_groups/running",
            Some(json!({"var": {"X": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let app = api.call_as(&dev,
        Method::POST,
        "/v3/apps",
        Some(json!({"name": "g", "environment_variables": {"SHARED": "app"}, "relationships": {"space": {"data": {"guid": space}}}})),
    )
    .await
    .1;
    let env = api
        .get(&format!("/v3/apps/{}/env", app["guid"].as_str().unwrap()))
        .await;
    assert_eq!(
        env["running_env_json"],
        json!({"REGION": "eu", "SHARED": "group"}),
        "{env}"
    );
    assert_eq!(env["staging_env_json"], json!({"MIRROR": "local"}), "{env}");
    assert_eq!(
        env["environment_variables"],
        json!({"SHARED": "app"}),
        "{env}"
    );
    // Removing a variable with null.
    let body = api
        .call(
            Method::PATCH,
            "/v3/environment_variable_groups/running",
            Some(json!({"var": {"REGION": null}})),
        )
        .await
        .1;
    assert_eq!(body["var"], json!({"SHARED": "group"}), "{body}");
}

#[tokio::test]
async fn the_one_stack_is_wasm() {
    let api = common::start(Backend::Sqlite).await;
    let stacks = api.get("/v3/stacks").await;
    assert_eq!(stacks["pagination"]["total_results"], 1, "{stacks}");
    let stack = &stacks["resources"][0];
    assert_eq!(
        (stack["name"].as_str(), stack["default"].as_bool()),
        (Some("wasm"), Some(true))
    );
    let guid = stack["guid"].as_str().unwrap();
    assert_eq!(api.get(&format!("/v3/stacks/{guid}")).await["name"], "wasm");
    assert_eq!(
        api.get("/v3/stacks?names=cflinuxfs4").await["resources"],
        json!([])
    );
    assert_eq!(
        api.call(Method::GET, "/v3/stacks/nope", None).await.0,
        StatusCode::NOT_FOUND
    );
}
