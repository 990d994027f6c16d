//! `include`: lists of apps and spaces carry their spaces and orgs under `included`,
//! as the cf CLI asks for them; an unknown include is CF-BadQueryParameter.

mod common;

use http::{Method, StatusCode};
use serde_json::json;
use wf_db::testing::Backend;

#[tokio::test]
async fn lists_include_their_spaces_and_orgs() {
    let api = common::start(Backend::Sqlite).await;
    let (org, space) = api.org_and_space("inc").await;
    api.post(
        "/v3/apps",
        json!({"name": "a", "relationships": {"space": {"data": {"guid": space}}}}),
    )
    .await;

    let apps = api
        .get(&format!(
            "/v3/apps?space_guids={space}&include=space,space.organization"
        ))
        .await;
    assert_eq!(
        apps["included"]["spaces"][0]["guid"],
        space.as_str(),
        "{apps}"
    );
    assert_eq!(
        apps["included"]["organizations"][0]["guid"],
        org.as_str(),
        "{apps}"
    );
    let plain = api.get(&format!("/v3/apps?space_guids={space}")).await;
    assert!(plain.get("included").is_none(), "{plain}");

    let spaces = api
        .get(&format!("/v3/spaces?guids={space}&include=organization"))
        .await;
    assert_eq!(
        spaces["included"]["organizations"][0]["name"], "inc",
        "{spaces}"
    );
    assert!(spaces["included"].get("spaces").is_none(), "{spaces}");

    let (status, body) = api
        .call(Method::GET, "/v3/apps?include=droplet", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["title"], "CF-BadQueryParameter");
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("'space', 'space.organization'"),
        "{body}"
    );
}
