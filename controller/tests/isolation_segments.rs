//! Isolation segments through the API: CF's `shared` segment, create/read/update/delete
//! with CF's refusals, entitling and revoking orgs, an org's default and a space's
//! segment, who may do what (admin, org manager, org user, space developer, outsider),
//! and placement: an app's LRP, tasks and staging carry its segment's placement tag,
//! the stats show it, and a new segment reaches the app when it restarts. On SQLite,
//! and on PostgreSQL when `WF_TEST_POSTGRES_URL` is set.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use wf_bbs::{DesiredLrp, DesiredLrpFilter, CF_APPS_DOMAIN};
use wf_db::testing::Backend;

mod common;

use common::{staged_app, start, Api};

const SHARED: &str = "933b4c58-120b-499a-b85d-4b6fc9e2903b";

#[tokio::test]
async fn isolation_segments_on_sqlite() {
    isolation_segments(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn isolation_segments_on_postgres() {
    // Skipped unless WF_TEST_POSTGRES_URL is set.
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        isolation_segments(start(Backend::Postgres).await).await;
    }
}

fn guid(v: &Value) -> String {
    v["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("no guid: {v}"))
        .to_string()
}

fn error(response: (StatusCode, Value), status: StatusCode, title: &str, detail: Option<&str>) {
    let (got, body) = response;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["errors"][0]["title"], title, "{body}");
    if let Some(detail) = detail {
        assert_eq!(body["errors"][0]["detail"], detail, "{body}");
    }
}

fn unprocessable(response: (StatusCode, Value), detail: &str) {
    error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "CF-UnprocessableEntity",
        Some(detail),
    );
}

fn forbidden(response: (StatusCode, Value)) {
    error(response, StatusCode::FORBIDDEN, "CF-NotAuthorized", None);
}

fn not_found(response: (StatusCode, Value)) {
    error(response, StatusCode::NOT_FOUND, "CF-ResourceNotFound", None);
}

fn names(list: &Value) -> Vec<String> {
    list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn data_guids(relationship: &Value) -> Vec<String> {
    relationship["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a to-many relationship: {relationship}"))
        .iter()
        .map(guid)
        .collect()
}

async fn lrps_of(api: &Api, app: &str) -> Vec<DesiredLrp> {
    let filter = DesiredLrpFilter {
        domain: Some(CF_APPS_DOMAIN.into()),
        ..Default::default()
    };
    api.bbs
        .desired_lrps(&filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|lrp| lrp.log_guid == app)
        .collect()
}

async fn isolation_segments(api: Api) {
    // CF's shared segment is there from the start; it can be neither changed nor deleted.
    let shared = api.get(&format!("/v3/isolation_segments/{SHARED}")).await;
    assert_eq!(shared["name"], "shared");
    unprocessable(
        api.call(
            Method::PATCH,
            &format!("/v3/isolation_segments/{SHARED}"),
            Some(json!({"name": "other"})),
        )
        .await,
        "Cannot update the shared Isolation Segment",
    );
    unprocessable(
        api.call(
            Method::DELETE,
            &format!("/v3/isolation_segments/{SHARED}"),
            None,
        )
        .await,
        "Cannot delete the shared Isolation Segment",
    );

    // Create: names unique whatever their case, labels as on other resources.
    let iso1 = api
        .post(
            "/v3/isolation_segments",
            json!({"name": "iso1", "metadata": {"labels": {"tier": "gold"}}}),
        )
        .await;
    let iso1_guid = guid(&iso1);
    assert_eq!(iso1["metadata"]["labels"]["tier"], "gold");
    assert_eq!(
        iso1["links"]["organizations"]["href"],
        format!("http://cc.test/v3/isolation_segments/{iso1_guid}/organizations")
    );
    let taken = "Isolation Segment names are case insensitive and must be unique";
    unprocessable(
        api.call(
            Method::POST,
            "/v3/isolation_segments",
            Some(json!({"name": "ISO1"})),
        )
        .await,
        taken,
    );
    unprocessable(
        api.call(Method::POST, "/v3/isolation_segments", Some(json!({})))
            .await,
        "Name can't be blank",
    );
    let iso2_guid = guid(
        &api.post("/v3/isolation_segments", json!({"name": "iso2"}))
            .await,
    );
    unprocessable(
        api.call(
            Method::PATCH,
            &format!("/v3/isolation_segments/{iso2_guid}"),
            Some(json!({"name": "Iso1"})),
        )
        .await,
        taken,
    );
    let renamed = api
        .call(
            Method::PATCH,
            &format!("/v3/isolation_segments/{iso2_guid}"),
            Some(json!({"name": "iso-two", "metadata": {"annotations": {"note": "n"}}})),
        )
        .await;
    assert_eq!(renamed.0, StatusCode::OK, "{}", renamed.1);
    assert_eq!(renamed.1["name"], "iso-two");
    assert_eq!(renamed.1["metadata"]["annotations"]["note"], "n");
    let renamed = api
        .call(
            Method::PATCH,
            &format!("/v3/isolation_segments/{iso2_guid}"),
            Some(json!({"name": "iso2"})),
        )
        .await;
    assert_eq!(renamed.0, StatusCode::OK, "{}", renamed.1);

    // Lists: filters, label selector, order and pages.
    let all = api.get("/v3/isolation_segments?order_by=name").await;
    assert_eq!(names(&all), ["iso1", "iso2", "shared"]);
    let page = api.get("/v3/isolation_segments?per_page=1&page=2").await;
    assert_eq!(page["pagination"]["total_results"], 3);
    assert_eq!(page["pagination"]["total_pages"], 3);
    assert_eq!(names(&page).len(), 1);
    let named = api.get("/v3/isolation_segments?names=iso2,nope").await;
    assert_eq!(names(&named), ["iso2"]);
    let by_guid = api
        .get(&format!("/v3/isolation_segments?guids={iso1_guid}"))
        .await;
    assert_eq!(names(&by_guid), ["iso1"]);
    let gold = api
        .get("/v3/isolation_segments?label_selector=tier=gold")
        .await;
    assert_eq!(names(&gold), ["iso1"]);

    // Entitling orgs.
    let (org, space) = api.org_and_space("o1").await;
    let (other_org, other_space) = api.org_and_space("o2").await;
    let orgs_path = format!("/v3/isolation_segments/{iso1_guid}/relationships/organizations");
    error(
        api.call(
            Method::POST,
            &orgs_path,
            Some(json!({"data": [{"guid": "no-such-org"}]})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "CF-ResourceNotFound",
        Some("Organization guids: [\"no-such-org\"] cannot be found"),
    );
    unprocessable(
        api.call(Method::POST, &orgs_path, Some(json!({"data": "x"})))
            .await,
        "Data must be an array of objects with a guid",
    );
    let entitled = api.post(&orgs_path, json!({"data": [{"guid": org}]})).await;
    assert_eq!(data_guids(&entitled), [org.as_str()]);
    assert_eq!(
        entitled["links"]["self"]["href"],
        format!("http://cc.test{orgs_path}")
    );
    // Entitling again changes nothing.
    let again = api.post(&orgs_path, json!({"data": [{"guid": org}]})).await;
    assert_eq!(data_guids(&again), [org.as_str()]);
    api.post(
        &format!("/v3/isolation_segments/{iso2_guid}/relationships/organizations"),
        json!({"data": [{"guid": org}, {"guid": other_org}]}),
    )
    .await;
    let listed = api
        .get(&format!("/v3/isolation_segments/{iso1_guid}/organizations"))
        .await;
    assert_eq!(names(&listed), ["o1"]);
    let of_org = api
        .get(&format!(
            "/v3/isolation_segments?organization_guids={other_org}"
        ))
        .await;
    assert_eq!(names(&of_org), ["iso2"]);

    // The org's default and the space's segment: only among the org's entitlements.
    let default_path = format!("/v3/organizations/{org}/relationships/default_isolation_segment");
    assert_eq!(api.get(&default_path).await["data"], Value::Null);
    unprocessable(
        api.call(
            Method::PATCH,
            &format!("/v3/organizations/{other_org}/relationships/default_isolation_segment"),
            Some(json!({"data": {"guid": iso1_guid}})),
        )
        .await,
        &format!(
            "Unable to assign isolation segment with guid '{iso1_guid}'. Ensure it has been \
             entitled to the organization."
        ),
    );
    let set = api
        .call(
            Method::PATCH,
            &default_path,
            Some(json!({"data": {"guid": iso1_guid}})),
        )
        .await;
    assert_eq!(set.0, StatusCode::OK, "{}", set.1);
    assert_eq!(set.1["data"]["guid"], iso1_guid);
    assert_eq!(api.get(&default_path).await["data"]["guid"], iso1_guid);
    let space_path = format!("/v3/spaces/{other_space}/relationships/isolation_segment");
    unprocessable(
        api.call(
            Method::PATCH,
            &space_path,
            Some(json!({"data": {"guid": iso1_guid}})),
        )
        .await,
        &format!(
            "Unable to assign isolation segment with guid '{iso1_guid}'. Ensure it has been \
             entitled to the organization that this space belongs to."
        ),
    );
    let space_path = format!("/v3/spaces/{space}/relationships/isolation_segment");
    let set = api
        .call(
            Method::PATCH,
            &space_path,
            Some(json!({"data": {"guid": iso1_guid}})),
        )
        .await;
    assert_eq!(set.0, StatusCode::OK, "{}", set.1);
    assert_eq!(api.get(&space_path).await["data"]["guid"], iso1_guid);
    let spaces = api
        .get(&format!(
            "/v3/isolation_segments/{iso1_guid}/relationships/spaces"
        ))
        .await;
    assert_eq!(data_guids(&spaces), [space.as_str()]);

    // Roles: org managers set defaults and space segments; readers see what is
    // entitled to their orgs; only admins create, entitle and revoke.
    let (manager, manager_id) = api.new_user("manager").await;
    api.grant(&manager_id, "organization_manager", "organization", &org)
        .await;
    let (developer, developer_id) = api.new_user("developer").await;
    api.grant(
        &developer_id,
        "organization_user",
        "organization",
        &other_org,
    )
    .await;
    api.grant(&developer_id, "space_developer", "space", &other_space)
        .await;
    let (outsider, _) = api.new_user("outsider").await;
    let seen = |token: String| {
        let api = &api;
        async move {
            let (status, list) = api
                .call_as(
                    &token,
                    Method::GET,
                    "/v3/isolation_segments?order_by=name",
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{list}");
            names(&list)
        }
    };
    assert_eq!(seen(manager.clone()).await, ["iso1", "iso2"]);
    assert_eq!(seen(developer.clone()).await, ["iso2"]);
    assert!(seen(outsider.clone()).await.is_empty());
    not_found(
        api.call_as(
            &developer,
            Method::GET,
            &format!("/v3/isolation_segments/{iso1_guid}"),
            None,
        )
        .await,
    );
    // A reader sees only the entitled orgs they see.
    let (status, orgs) = api
        .call_as(
            &developer,
            Method::GET,
            &format!("/v3/isolation_segments/{iso2_guid}/relationships/organizations"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{orgs}");
    assert_eq!(data_guids(&orgs), [other_org.as_str()]);
    forbidden(
        api.call_as(
            &manager,
            Method::POST,
            "/v3/isolation_segments",
            Some(json!({"name": "mine"})),
        )
        .await,
    );
    forbidden(
        api.call_as(
            &manager,
            Method::POST,
            &orgs_path,
            Some(json!({"data": [{"guid": org}]})),
        )
        .await,
    );
    forbidden(
        api.call_as(
            &manager,
            Method::DELETE,
            &format!("/v3/isolation_segments/{iso1_guid}"),
            None,
        )
        .await,
    );
    let (status, body) = api
        .call_as(
            &manager,
            Method::PATCH,
            &default_path,
            Some(json!({"data": {"guid": iso2_guid}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .call_as(
            &manager,
            Method::PATCH,
            &default_path,
            Some(json!({"data": {"guid": iso1_guid}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    forbidden(
        api.call_as(
            &developer,
            Method::PATCH,
            &format!("/v3/spaces/{other_space}/relationships/isolation_segment"),
            Some(json!({"data": {"guid": iso2_guid}})),
        )
        .await,
    );
    not_found(
        api.call_as(&outsider, Method::GET, &default_path, None)
            .await,
    );

    // Placement: the space's segment, as placement tag, route segment and in the stats.
    let app = staged_app(&api, &space, "isolated").await;
    let build = api.get(&format!("/v3/apps/{app}/builds")).await;
    let build = guid(&build["resources"][0]);
    api.post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    let lrps = lrps_of(&api, &app).await;
    assert_eq!(lrps.len(), 1);
    assert_eq!(lrps[0].placement_tags, ["iso1"]);
    let stats = api.get(&format!("/v3/processes/{app}/stats")).await;
    assert_eq!(
        stats["resources"][0]["isolation_segment"], "iso1",
        "{stats}"
    );
    let task = api
        .post(
            &format!("/v3/apps/{app}/tasks"),
            json!({"command": "app.wasm task"}),
        )
        .await;
    let task = api.bbs.task_by_guid(&guid(&task)).await.unwrap();
    assert_eq!(task.definition.placement_tags, ["iso1"]);
    // The staging task (long gone) was placed there too: a new build shows it.
    let restage = api
        .post(
            "/v3/builds",
            json!({"package": {"guid": api.get(&format!("/v3/builds/{build}")).await["package"]["guid"]}}),
        )
        .await;
    let staging = api.bbs.task_by_guid(&guid(&restage)).await.unwrap();
    assert_eq!(staging.definition.placement_tags, ["iso1"]);

    // A new segment waits for the restart; then the org's default applies.
    api.call(Method::PATCH, &space_path, Some(json!({"data": null})))
        .await;
    api.call(
        Method::PATCH,
        &default_path,
        Some(json!({"data": {"guid": iso2_guid}})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // two bulk syncs
    let lrps = lrps_of(&api, &app).await;
    assert_eq!(lrps.len(), 1);
    assert_eq!(lrps[0].placement_tags, ["iso1"], "not before a restart");
    api.post(&format!("/v3/apps/{app}/actions/restart"), json!({}))
        .await;
    let lrps = lrps_of(&api, &app).await;
    assert_eq!(lrps.len(), 1);
    assert_eq!(lrps[0].placement_tags, ["iso2"]);
    // With no segment at all, the shared cells (no tags).
    api.call(Method::PATCH, &default_path, Some(json!({"data": null})))
        .await;
    api.post(&format!("/v3/apps/{app}/actions/restart"), json!({}))
        .await;
    let lrps = lrps_of(&api, &app).await;
    assert!(lrps[0].placement_tags.is_empty());
    let stats = api.get(&format!("/v3/processes/{app}/stats")).await;
    assert_eq!(stats["resources"][0]["isolation_segment"], Value::Null);

    // Revoking: refused while the org's default or a space uses it.
    api.call(
        Method::PATCH,
        &default_path,
        Some(json!({"data": {"guid": iso1_guid}})),
    )
    .await;
    api.call(
        Method::PATCH,
        &space_path,
        Some(json!({"data": {"guid": iso1_guid}})),
    )
    .await;
    let revoke = format!("{orgs_path}/{org}");
    unprocessable(
        api.call(Method::DELETE, &revoke, None).await,
        "Cannot remove the entitlement while this Isolation Segment is assigned as the \
         Default Isolation Segment for the Organization.",
    );
    api.call(Method::PATCH, &default_path, Some(json!({"data": null})))
        .await;
    unprocessable(
        api.call(Method::DELETE, &revoke, None).await,
        "Cannot remove the entitlement while this Isolation Segment is assigned to any \
         Spaces. Currently assigned to: 's'",
    );
    forbidden(api.call_as(&manager, Method::DELETE, &revoke, None).await);
    // Deleting: refused while orgs are entitled.
    unprocessable(
        api.call(
            Method::DELETE,
            &format!("/v3/isolation_segments/{iso1_guid}"),
            None,
        )
        .await,
        "Revoke the Organization entitlements for your Isolation Segment.",
    );
    api.call(Method::PATCH, &space_path, Some(json!({"data": null})))
        .await;
    let (status, body) = api.call(Method::DELETE, &revoke, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(data_guids(&api.get(&orgs_path).await).is_empty());
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/v3/isolation_segments/{iso1_guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    not_found(
        api.call(
            Method::GET,
            &format!("/v3/isolation_segments/{iso1_guid}"),
            None,
        )
        .await,
    );
    // The shared segment entitled to an org without a default becomes its default.
    api.post(
        &format!("/v3/isolation_segments/{SHARED}/relationships/organizations"),
        json!({"data": [{"guid": other_org}]}),
    )
    .await;
    let default = api
        .get(&format!(
            "/v3/organizations/{other_org}/relationships/default_isolation_segment"
        ))
        .await;
    assert_eq!(default["data"]["guid"], SHARED);
    // Deleting an org takes its entitlements with it.
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/v3/organizations/{other_org}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let orgs = api
        .get(&format!(
            "/v3/isolation_segments/{iso2_guid}/relationships/organizations"
        ))
        .await;
    assert_eq!(data_guids(&orgs), [org]);
}
