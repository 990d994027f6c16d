//! The blobstore on a real S3-compatible server (moto), and orphaned blob cleanup
//! driven by a running Cloud Controller, on a local directory and on S3. The S3 tests
//! are skipped, with a note, without `moto_server` (unless `WF_REQUIRE_S3` is set).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use http::{Method, StatusCode};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore, PutPayload};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use wf_bbs::{RunAction, TaskAction, TaskDefinition};
use wf_controller::blobstore::{BlobError, Blobstore};
use wf_db::testing::Backend;

mod common;

use common::moto::MotoS3;
use common::{multipart, start_with, Api};

async fn read_all(blobs: &Blobstore, key: &Key, sha256: &str) -> Result<Vec<u8>, BlobError> {
    let mut blob = blobs.get(key, sha256).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = blob.chunks.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn s3_blobs_round_trip_and_are_checked_against_their_sha256() {
    let Some(s3) = MotoS3::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut missing = s3.config();
    missing.bucket = "no-such-bucket".into();
    let refused = Blobstore::open(dir.path(), Some(&missing)).await;
    assert!(
        matches!(refused, Err(BlobError::Bucket { .. })),
        "{:?}",
        refused.err()
    );
    let blobs = Blobstore::open(dir.path(), Some(&s3.config()))
        .await
        .unwrap();
    let bucket = s3.store();

    // A small blob (one put) and one above the 5 MiB part size (a multipart upload).
    let small = b"droplet bytes".to_vec();
    let large: Vec<u8> = (0..11 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    for (guid, data) in [("d-small", &small), ("d-large", &large)] {
        let key = blobs.droplet_key(guid);
        let tmp = blobs.temp_path();
        let chunks = futures::stream::iter(
            data.chunks(1 << 20)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))),
        );
        let written = blobs.write_stream(&tmp, chunks).await.unwrap();
        assert_eq!(written, sha256(data));

        // The wrong recorded sha256: refused, and nothing appears in the bucket.
        let refused = blobs.put_file(&tmp, &key, &"00".repeat(32)).await;
        assert!(
            matches!(refused, Err(BlobError::ChecksumMismatch { .. })),
            "{refused:?}"
        );
        assert!(matches!(
            bucket.head(&key).await,
            Err(object_store::Error::NotFound { .. })
        ));

        blobs.put_file(&tmp, &key, &written).await.unwrap();
        blobs.remove_temp(&tmp).await.unwrap();
        let stored = bucket.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(stored.len(), data.len());
        assert_eq!(&read_all(&blobs, &key, &written).await.unwrap(), data);
        assert_eq!(blobs.sha256(&key).await.unwrap(), written);

        // Changed in the bucket behind the blobstore's back: an error, not the bytes.
        let mut corrupt = data.clone();
        corrupt[data.len() / 2] ^= 1;
        bucket.put(&key, PutPayload::from(corrupt)).await.unwrap();
        let read = read_all(&blobs, &key, &written).await;
        assert!(
            matches!(read, Err(BlobError::ChecksumMismatch { .. })),
            "{:?}",
            read.map(|b| b.len())
        );
    }
    let listed: Vec<ObjectMeta> = blobs
        .list(wf_controller::blobstore::BlobKind::Droplet)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);

    let key = blobs.droplet_key("d-small");
    blobs.delete(&key).await.unwrap();
    assert!(matches!(
        read_all(&blobs, &key, "00").await,
        Err(BlobError::NotFound(_))
    ));
    blobs.delete(&key).await.unwrap();
}

#[tokio::test]
async fn orphaned_blobs_are_cleaned_up_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    std::fs::create_dir_all(&root).unwrap();
    let store = Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
    orphaned_blobs_are_cleaned_up(store, |config| config.blobstore_dir = root.clone()).await;
}

#[tokio::test]
async fn orphaned_blobs_are_cleaned_up_on_s3() {
    let Some(s3) = MotoS3::start() else {
        return;
    };
    let config = s3.config();
    orphaned_blobs_are_cleaned_up(s3.store(), |c| c.blobstore_s3 = Some(config)).await;
}

/// With cleanup every 100 ms and no grace period: blobs no record points to go, and
/// every blob a record, a build in progress or a BBS task needs stays. `store` is the
/// blobstore's key space seen directly.
async fn orphaned_blobs_are_cleaned_up(
    store: Arc<dyn ObjectStore>,
    blobstore: impl FnOnce(&mut wf_controller::ControllerConfig),
) {
    let api = start_with(Backend::Sqlite, |config| {
        blobstore(config);
        config.orphaned_blobs_interval = Duration::from_millis(100);
        config.orphaned_blobs_grace = Duration::ZERO;
    })
    .await;

    // An app with a READY package and a build in progress whose droplet is uploaded.
    let org = api.post("/v3/organizations", json!({"name": "o"})).await;
    let space = api
        .post("/v3/spaces", json!({"name": "s", "relationships": {"organization": {"data": {"guid": org["guid"]}}}}))
        .await;
    let app = api
        .post(
            "/v3/apps",
            json!({"name": "a", "relationships": {"space": {"data": {"guid": space["guid"]}}}}),
        )
        .await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let package_guid = upload_package(&api, &app_guid).await;
    let build = api
        .post("/v3/builds", json!({"package": {"guid": package_guid}}))
        .await;
    let build_guid = build["guid"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v3/builds/{build_guid}")).await["state"],
        "STAGING"
    );
    let stage = match api
        .bbs
        .task_by_guid(build_guid)
        .await
        .unwrap()
        .definition
        .action
    {
        TaskAction::Stage(stage) => stage,
        other => panic!("not a staging task: {other:?}"),
    };
    let upload = stage
        .droplet_upload_uri
        .strip_prefix("http://cc.test")
        .unwrap();
    let (status, _, _) = api
        .send(Method::PUT, upload, None, b"droplet".to_vec(), false)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let droplet_guid = droplet_of(&stage.droplet_upload_uri);

    // A BBS task runs a droplet whose record is gone.
    let running_guid = "d-of-a-running-task";
    api.bbs
        .desire_task(
            "t-running",
            "cf-tasks",
            TaskDefinition {
                memory_mb: 64,
                disk_mb: 64,
                action: TaskAction::Run(RunAction {
                    droplet_uri: format!(
                        "http://cc.test/internal/v4/droplets/{running_guid}/download?expires=1&signature=00"
                    ),
                    droplet_sha256: "00".repeat(32),
                    command: String::new(),
                    env: vec![],
                    log_rate_limit_bytes_per_second: None,
                }),
                log_guid: app_guid.clone(),
                log_source: "APP/TASK/t".into(),
                annotation: String::new(),
                placement_tags: vec![],
            },
        )
        .await
        .unwrap();

    let needed = [
        format!("packages/{package_guid}.zip"),
        format!("droplets/{droplet_guid}.tgz"),
        format!("droplets/{running_guid}.tgz"),
        format!("buildpack_cache/{app_guid}/wasm.tgz"),
        format!("resources/ab/cd/{}", "abcd".repeat(10)),
    ];
    let orphans = [
        "packages/p-gone.zip",
        "droplets/d-gone.tgz",
        "buildpack_cache/a-gone/wasm.tgz",
        "buildpacks/b-gone.zip",
    ];
    for key in needed[2..].iter().map(String::as_str).chain(orphans) {
        store
            .put(&Key::from(key), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let keys = keys(&store).await;
        if orphans.iter().all(|o| !keys.contains(&o.to_string())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans were not deleted: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut expected = needed.to_vec();
    expected.sort();
    assert_eq!(keys(&store).await, expected);
}

#[tokio::test]
async fn blobs_that_do_not_match_their_sha256_are_not_served_to_cells() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let api = start_with(Backend::Sqlite, |config| {
        config.blobstore_dir = root.clone()
    })
    .await;
    let org = api.post("/v3/organizations", json!({"name": "o"})).await;
    let space = api
        .post("/v3/spaces", json!({"name": "s", "relationships": {"organization": {"data": {"guid": org["guid"]}}}}))
        .await;
    let app = api
        .post(
            "/v3/apps",
            json!({"name": "a", "relationships": {"space": {"data": {"guid": space["guid"]}}}}),
        )
        .await;
    let package_guid = upload_package(&api, app["guid"].as_str().unwrap()).await;
    let build = api
        .post("/v3/builds", json!({"package": {"guid": package_guid}}))
        .await;
    let task = api
        .bbs
        .task_by_guid(build["guid"].as_str().unwrap())
        .await
        .unwrap();
    let TaskAction::Stage(stage) = task.definition.action else {
        panic!("not a staging task");
    };
    let package_uri = stage.package_uri.strip_prefix("http://cc.test").unwrap();

    let (status, served) = api.download(package_uri).await;
    assert_eq!(status, StatusCode::OK);
    let zip = served.unwrap();
    let package = api.get(&format!("/v3/packages/{package_guid}")).await;
    assert_eq!(package["data"]["checksum"]["value"], sha256(&zip));

    let mut corrupt = zip.to_vec();
    corrupt[0] ^= 1;
    std::fs::write(root.join(format!("packages/{package_guid}.zip")), corrupt).unwrap();
    let (_, served) = api.download(package_uri).await;
    let err = served.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not match its recorded sha256"),
        "{err}"
    );
}

/// A package of the app with uploaded bits (a bare wasm); returns its guid.
async fn upload_package(api: &Api, app_guid: &str) -> String {
    let package = api
        .post(
            "/v3/packages",
            json!({"type": "bits", "relationships": {"app": {"data": {"guid": app_guid}}}}),
        )
        .await;
    let guid = package["guid"].as_str().unwrap().to_string();
    let (status, _, uploaded): (_, _, Value) = api
        .send(
            Method::POST,
            &format!("/v3/packages/{guid}/upload"),
            Some("multipart/form-data; boundary=XYZ"),
            multipart("app.wasm", b"\0asm\x01\0\0\0"),
            true,
        )
        .await;
    assert_eq!(
        (status, &uploaded["state"]),
        (StatusCode::OK, &json!("READY"))
    );
    guid
}

/// The droplet guid in a droplet upload URL.
fn droplet_of(url: &str) -> String {
    let path = url.split("/internal/v4/droplets/").nth(1).unwrap();
    path.split('/').next().unwrap().to_string()
}

async fn keys(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    let listed: Vec<ObjectMeta> = store.list(None).try_collect().await.unwrap();
    let mut keys: Vec<String> = listed
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|k| !k.starts_with("tmp/"))
        .collect();
    keys.sort();
    keys
}
