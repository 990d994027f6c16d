//! Bits in and out of the Cloud Controller: package download and copy
//! (`cf copy-source`), droplet upload (`cf push --droplet`), download
//! (`cf download-droplet`) and copy, with CF's errors and roles. On SQLite and, when
//! `WF_TEST_POSTGRES_URL` names a server, PostgreSQL.

use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use wf_db::testing::Backend;

mod common;

use common::{multipart, start, Api};

const WASM: &[u8] = b"\0asm\x01\0\0\0";

#[tokio::test]
async fn bits_on_sqlite() {
    bits(start(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn bits_on_postgres() {
    // Skipped, with a note, unless WF_TEST_POSTGRES_URL is set.
    if wf_db::testing::backends().contains(&Backend::Postgres) {
        bits(start(Backend::Postgres).await).await;
    }
}

/// A droplet tgz as the stager writes one: `droplet.json` and `app.wasm`.
fn droplet_tgz(wasm: &[u8], process_types: Value) -> Vec<u8> {
    let metadata = json!({
        "kind": "server",
        "wasm": "app.wasm",
        "wasm_sha256": wf_buildpacks::sha256_hex(wasm),
        "buildpack": "wasm_buildpack",
        "buildpacks": ["wasm_buildpack"],
        "process_types": process_types,
    })
    .to_string();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, bytes) in [("droplet.json", metadata.as_bytes()), ("app.wasm", wasm)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Follows a `302` from `uri` (as `token`) to the signed blob link; the bits.
async fn download(api: &Api, token: &str, uri: &str) -> bytes::Bytes {
    let (status, headers, body) = api
        .send_as(Some(token), Method::GET, uri, None, vec![])
        .await;
    assert_eq!(status, StatusCode::FOUND, "{uri}: {body}");
    let location = headers[header::LOCATION].to_str().unwrap();
    let (status, bits) = api
        .download(location.strip_prefix("http://cc.test").unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{location}");
    bits.unwrap()
}

async fn upload(
    api: &Api,
    token: &str,
    uri: &str,
    name: &str,
    bytes: &[u8],
) -> (StatusCode, http::HeaderMap, Value) {
    api.send_as(
        Some(token),
        Method::POST,
        uri,
        Some("multipart/form-data; boundary=XYZ"),
        multipart(name, bytes),
    )
    .await
}

async fn bits(api: Api) {
    let (_, space) = api.org_and_space("o").await;
    let (dev, dev_id) = api.new_user("dev").await;
    let (auditor, auditor_id) = api.new_user("auditor").await;
    let org = api.get(&format!("/v3/spaces/{space}")).await["relationships"]["organization"]
        ["data"]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    for (id, role) in [(&dev_id, "space_developer"), (&auditor_id, "space_auditor")] {
        api.grant(id, "organization_user", "organization", &org)
            .await;
        api.grant(id, role, "space", &space).await;
    }
    let (_, other_space) = api.org_and_space("elsewhere").await;
    let app = |name: &'static str, space: String| {
        let api = &api;
        async move {
            let body = json!({"name": name, "relationships": {"space": {"data": {"guid": space}}}});
            api.post("/v3/apps", body).await["guid"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (source_app, dest_app) = (
        app("source", space.clone()).await,
        app("dest", space.clone()).await,
    );
    let foreign_app = app("foreign", other_space).await;

    // A package with bits: downloaded through a signed link, and copied to another app.
    let relationship = |app: &str| json!({"relationships": {"app": {"data": {"guid": app}}}});
    let mut package_body = relationship(&source_app);
    package_body["type"] = json!("bits");
    let (status, package) = api
        .call_as(&dev, Method::POST, "/v3/packages", Some(package_body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{package}");
    let package = package["guid"].as_str().unwrap().to_string();
    let (status, _, err) = api
        .send_as(
            Some(&dev),
            Method::GET,
            &format!("/v3/packages/{package}/download"),
            None,
            vec![],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "nothing uploaded yet: {err}"
    );
    let (status, _, uploaded) = upload(
        &api,
        &dev,
        &format!("/v3/packages/{package}/upload"),
        "app.wasm",
        WASM,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let bits = download(&api, &dev, &format!("/v3/packages/{package}/download")).await;
    assert!(!bits.is_empty());
    let (status, _, denied) = api
        .send_as(
            Some(&auditor),
            Method::GET,
            &format!("/v3/packages/{package}/download"),
            None,
            vec![],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an auditor reads no bits: {denied}"
    );

    let (status, copy) = api
        .call_as(
            &dev,
            Method::POST,
            &format!("/v3/packages?source_guid={package}"),
            Some(relationship(&dest_app)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{copy}");
    assert_eq!(copy["state"], "READY");
    assert_eq!(
        copy["relationships"]["app"]["data"]["guid"],
        dest_app.as_str()
    );
    assert_eq!(copy["data"]["checksum"], uploaded["data"]["checksum"]);
    let copied = copy["guid"].as_str().unwrap();
    assert_eq!(
        download(&api, &dev, &format!("/v3/packages/{copied}/download")).await,
        bits
    );
    let (status, _) = api
        .call_as(
            &dev,
            Method::POST,
            &format!("/v3/packages?source_guid={package}"),
            Some(relationship(&foreign_app)),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the target app is not the developer's"
    );
    let (status, err) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/packages?source_guid=nope",
            Some(relationship(&dest_app)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        err["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("source package"),
        "{err}"
    );

    // A droplet made elsewhere: created, refused when its bits are not a droplet,
    // staged when they are, with the process types it was created with.
    let mut droplet_body = relationship(&source_app);
    droplet_body["process_types"] = json!({"web": "app.wasm", "worker": "app.wasm --work"});
    let (status, droplet) = api
        .call_as(&dev, Method::POST, "/v3/droplets", Some(droplet_body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{droplet}");
    assert_eq!(droplet["state"], "AWAITING_UPLOAD");
    let droplet_guid = droplet["guid"].as_str().unwrap().to_string();
    let upload_uri = format!("/v3/droplets/{droplet_guid}/upload");
    assert!(droplet["links"]["upload"]["href"]
        .as_str()
        .unwrap()
        .ends_with(&upload_uri));
    let (status, _, err) = upload(&api, &dev, &upload_uri, "droplet.tgz", b"not a droplet").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("invalid droplet"),
        "{err}"
    );
    let (status, _, err) = upload(&api, &auditor, &upload_uri, "droplet.tgz", b"x").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(
        api.get(&format!("/v3/droplets/{droplet_guid}")).await["state"],
        "AWAITING_UPLOAD"
    );

    let tgz = droplet_tgz(WASM, json!({"web": "app.wasm"}));
    let (status, headers, staged) = upload(&api, &dev, &upload_uri, "droplet.tgz", &tgz).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{staged}");
    assert!(headers[header::LOCATION]
        .to_str()
        .unwrap()
        .contains("/v3/jobs/"));
    assert_eq!(staged["state"], "STAGED");
    assert_eq!(staged["checksum"]["value"], wf_buildpacks::sha256_hex(&tgz));
    assert_eq!(staged["process_types"]["worker"], "app.wasm --work");
    assert_eq!(staged["buildpacks"][0]["name"], "wasm_buildpack");
    let (status, _, again) = upload(&api, &dev, &upload_uri, "droplet.tgz", &tgz).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "uploaded once: {again}"
    );

    // Downloaded as it was uploaded; only by those who may push the app.
    let download_uri = format!("/v3/droplets/{droplet_guid}/download");
    assert_eq!(download(&api, &dev, &download_uri).await, tgz);
    let (status, _, _) = api
        .send_as(Some(&auditor), Method::GET, &download_uri, None, vec![])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Copied to another app: staged at once, the same bits, assignable and startable.
    let (status, copy) = api
        .call_as(
            &dev,
            Method::POST,
            &format!("/v3/droplets?source_guid={droplet_guid}"),
            Some(relationship(&dest_app)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{copy}");
    assert_eq!(copy["state"], "STAGED");
    assert_eq!(copy["checksum"], staged["checksum"]);
    let copied = copy["guid"].as_str().unwrap().to_string();
    assert_eq!(
        download(&api, &dev, &format!("/v3/droplets/{copied}/download")).await,
        tgz
    );
    let (status, assigned) = api
        .call_as(
            &dev,
            Method::PATCH,
            &format!("/v3/apps/{dest_app}/relationships/current_droplet"),
            Some(json!({"data": {"guid": copied}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{assigned}");
    let (status, started) = api
        .call_as(
            &dev,
            Method::POST,
            &format!("/v3/apps/{dest_app}/actions/start"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");

    // A droplet still awaiting its bits is neither downloaded nor copied.
    let (_, waiting) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/droplets",
            Some(relationship(&source_app)),
        )
        .await;
    let waiting = waiting["guid"].as_str().unwrap();
    let (status, _, _) = api
        .send_as(
            Some(&dev),
            Method::GET,
            &format!("/v3/droplets/{waiting}/download"),
            None,
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api
        .call_as(
            &dev,
            Method::POST,
            &format!("/v3/droplets?source_guid={waiting}"),
            Some(relationship(&dest_app)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/droplets",
            Some(relationship(&foreign_app)),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not the developer's app"
    );
}
