//! Bits in and out of the Cloud Controller: the resource cache (`resource_matches` and
//! uploads that name cached files), package download and copy (`cf copy-source`),
//! droplet upload (`cf push --droplet`), download (`cf download-droplet`) and copy,
//! with CF's errors and roles. On SQLite and, when `WF_TEST_POSTGRES_URL` names a
//! server, PostgreSQL.

use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use wf_db::testing::Backend;

mod common;

use common::{droplet_tgz, multipart, start, zip_of, Api};

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

/// A multipart upload of `zip` as `bits` and `resources` (JSON) as the resources.
fn with_resources(zip: &[u8], resources: &Value) -> Vec<u8> {
    let mut body =
        b"--XYZ\r\nContent-Disposition: form-data; name=\"bits\"; filename=\"app.zip\"\r\n\r\n"
            .to_vec();
    body.extend_from_slice(zip);
    body.extend_from_slice(
        format!("\r\n--XYZ\r\nContent-Disposition: form-data; name=\"resources\"\r\n\r\n{resources}\r\n--XYZ--\r\n")
            .as_bytes(),
    );
    body
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    hex::encode(sha1::Sha1::digest(bytes))
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

    // The resource cache: a file of 4 KiB or more that was uploaded once is matched,
    // and a later upload names it instead of sending it.
    let big = vec![7u8; 10_000];
    let small = b"tiny".to_vec();
    let mut package_body = relationship(&dest_app);
    package_body["type"] = json!("bits");
    let new_package = |body: Value| {
        let api = &api;
        let dev = dev.clone();
        async move {
            let (status, package) = api
                .call_as(&dev, Method::POST, "/v3/packages", Some(body))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{package}");
            package["guid"].as_str().unwrap().to_string()
        }
    };
    let first = new_package(package_body.clone()).await;
    let zip = zip_of(&[
        ("app.wasm", WASM),
        ("lib/big.bin", &big),
        ("small.txt", &small),
    ]);
    let (status, _, body) = upload(
        &api,
        &dev,
        &format!("/v3/packages/{first}/upload"),
        "app.zip",
        &zip,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resource =
        |sha1: String, size: usize| json!({"checksum": {"value": sha1}, "size_in_bytes": size});
    let asked = json!({"resources": [
        resource(sha1_hex(&big), big.len()),
        resource(sha1_hex(&small), small.len()),
        resource(sha1_hex(b"never uploaded but big enough"), 9_999),
    ]});
    let (status, matched) = api
        .call_as(&dev, Method::POST, "/v3/resource_matches", Some(asked))
        .await;
    assert_eq!(status, StatusCode::OK, "{matched}");
    assert_eq!(
        matched["resources"],
        json!([resource(sha1_hex(&big), big.len())])
    );
    let (status, err) = api
        .call_as(
            &dev,
            Method::POST,
            "/v3/resource_matches",
            Some(json!({"resources": [resource("xyz".into(), 1)]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    let second = new_package(package_body.clone()).await;
    let cached = json!([{"checksum": {"value": sha1_hex(&big)}, "size_in_bytes": big.len(), "path": "lib/big.bin", "mode": "0755"}]);
    let (status, _, body) = api
        .send_as(
            Some(&dev),
            Method::POST,
            &format!("/v3/packages/{second}/upload"),
            Some("multipart/form-data; boundary=XYZ"),
            with_resources(&zip_of(&[("app.wasm", WASM)]), &cached),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "READY");
    let bits = download(&api, &dev, &format!("/v3/packages/{second}/download")).await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bits.to_vec())).unwrap();
    let mut file = archive.by_name("lib/big.bin").unwrap();
    assert_eq!(file.unix_mode().map(|m| m & 0o777), Some(0o755));
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut content).unwrap();
    assert_eq!(content, big, "the cached file is in the package");
    drop(file);
    assert!(archive.by_name("app.wasm").is_ok());

    // A resource the cache does not hold, or a path out of the app, is refused.
    let third = new_package(package_body).await;
    for (resources, expected) in [
        (
            json!([{"checksum": {"value": sha1_hex(b"unknown")}, "size_in_bytes": 5000, "path": "x.bin"}]),
            "does not hold x.bin",
        ),
        (
            json!([{"checksum": {"value": sha1_hex(&big)}, "size_in_bytes": big.len(), "path": "../escape"}]),
            "unsafe path",
        ),
    ] {
        let (status, _, err) = api
            .send_as(
                Some(&dev),
                Method::POST,
                &format!("/v3/packages/{third}/upload"),
                Some("multipart/form-data; boundary=XYZ"),
                with_resources(&zip_of(&[("app.wasm", WASM)]), &resources),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert!(
            err["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{err}"
        );
    }
    assert_eq!(
        api.get(&format!("/v3/packages/{third}")).await["state"],
        "AWAITING_UPLOAD"
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
