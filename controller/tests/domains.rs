//! Domains: admins make shared domains, org managers private ones; a private domain is
//! invisible outside its org and takes routes only from its org's spaces; deleting a
//! domain deletes its routes.

mod common;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use wf_db::testing::Backend;

fn route(host: &str, domain: &str, space: &str) -> Value {
    json!({"host": host, "relationships": {"domain": {"data": {"guid": domain}}, "space": {"data": {"guid": space}}}})
}

#[tokio::test]
async fn shared_and_private_domains() {
    let api = common::start(Backend::Sqlite).await;
    let (org, space) = api.org_and_space("owner").await;
    let (other_org, other_space) = api.org_and_space("other").await;
    let (manager, manager_id) = api.new_user("manager").await;
    api.grant(&manager_id, "organization_manager", "organization", &org)
        .await;
    let (outsider, outsider_id) = api.new_user("outsider").await;
    api.grant(
        &outsider_id,
        "organization_user",
        "organization",
        &other_org,
    )
    .await;
    api.grant(&outsider_id, "space_developer", "space", &other_space)
        .await;

    // Shared domains are for admins.
    let (status, _) = api
        .call_as(
            &manager,
            Method::POST,
            "/v3/domains",
            Some(json!({"name": "shared.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let shared = api
        .post("/v3/domains", json!({"name": "shared.example"}))
        .await;
    assert_eq!(shared["relationships"]["organization"]["data"], Value::Null);
    for (body, detail) in [
        (json!({"name": "shared.example"}), "already in use"),
        (json!({"name": "nodots"}), "must be a domain"),
        (json!({"name": "Bad Name.example"}), "must be a domain"),
    ] {
        let (status, response) = api.call(Method::POST, "/v3/domains", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
        assert!(
            response["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains(detail),
            "{response}"
        );
    }

    // A private domain, made by the org's manager.
    let private = json!({"name": "owner.example", "relationships": {"organization": {"data": {"guid": org}}}});
    let (status, _) = api
        .call_as(
            &outsider,
            Method::POST,
            "/v3/domains",
            Some(private.clone()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an org the outsider cannot see"
    );
    let (status, domain) = api
        .call_as(&manager, Method::POST, "/v3/domains", Some(private))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{domain}");
    assert_eq!(
        domain["relationships"]["organization"]["data"]["guid"],
        org.as_str()
    );
    let guid = domain["guid"].as_str().unwrap();

    // Seen inside the org only.
    let names = |list: &Value| -> Vec<String> {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, mine) = api
        .call_as(&manager, Method::GET, "/v3/domains", None)
        .await;
    assert!(
        names(&mine).contains(&"owner.example".to_string()),
        "{mine}"
    );
    let (_, theirs) = api
        .call_as(&outsider, Method::GET, "/v3/domains", None)
        .await;
    assert!(
        !names(&theirs).contains(&"owner.example".to_string()),
        "{theirs}"
    );
    assert!(
        names(&theirs).contains(&"shared.example".to_string()),
        "{theirs}"
    );
    assert_eq!(
        api.call_as(&outsider, Method::GET, &format!("/v3/domains/{guid}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Routes on it come only from the org's spaces.
    let (status, _) = api
        .call(Method::POST, "/v3/routes", Some(route("www", guid, &space)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api
        .call(
            Method::POST,
            "/v3/routes",
            Some(route("www2", guid, &other_space)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Deleting it (its manager may) deletes its routes.
    let (status, _) = api
        .call_as(
            &outsider,
            Method::DELETE,
            &format!("/v3/domains/{guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call_as(
            &manager,
            Method::DELETE,
            &format!("/v3/domains/{guid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let routes = api.get(&format!("/v3/routes?space_guids={space}")).await;
    assert_eq!(routes["resources"], json!([]), "{routes}");
    let (status, _) = api
        .call_as(
            &manager,
            Method::DELETE,
            &format!("/v3/domains/{}", shared["guid"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "shared domains are the admins'"
    );
}
