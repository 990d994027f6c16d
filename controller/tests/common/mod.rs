//! The harness the API tests share: a Cloud Controller on a real BBS (over its HTTP
//! API) and a real UAA, each on its own database of the chosen backend, called through
//! the controller's router without sockets; its blobstore is a local directory unless
//! a test configures another (`moto` gives an S3-compatible one).

pub mod moto;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use wf_bbs::{Bbs, BbsConfig};
use wf_controller::{Controller, ControllerConfig};
use wf_db::testing::{Backend, TestDatabase};
use wf_messaging::Bus;
use wf_uaa::{Uaa, UaaConfig};

pub struct Api {
    router: axum::Router,
    /// The admin's `bearer` token.
    pub token: String,
    /// For tests that play the cell's part (not every test binary does).
    #[allow(dead_code)]
    pub bbs: Arc<Bbs>,
    /// For tests that manage users (not every test binary does).
    #[allow(dead_code)]
    pub uaa: Arc<Uaa>,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
    /// The CC, BBS and UAA databases, dropped after the rest.
    _databases: [TestDatabase; 3],
}

impl Drop for Api {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[allow(dead_code)] // not every test binary starts with the defaults
pub async fn start(backend: Backend) -> Api {
    start_with(backend, |_| {}).await
}

/// [`start`], with the controller's configuration changed by `configure` first.
pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut ControllerConfig)) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let databases = [
        backend.database().await,
        backend.database().await,
        backend.database().await,
    ];
    let [cc_db, bbs_db, uaa_db] = databases.each_ref().map(|db| db.url().to_string());
    let bus = Bus::in_process();
    let bbs_config = BbsConfig {
        database_url: bbs_db,
        ..Default::default()
    };
    let bbs = Bbs::open(bbs_config, bus.clone()).await.unwrap();
    let cancel = CancellationToken::new();
    let bbs_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bbs_client = wf_bbs::BbsClient::new(vec![format!(
        "http://{}",
        bbs_listener.local_addr().unwrap()
    )])
    .unwrap();
    tokio::spawn({
        let (bbs, cancel) = (bbs.clone(), cancel.clone());
        async move { bbs.serve(bbs_listener, cancel).await }
    });
    let uaa = Uaa::open(UaaConfig {
        database_url: uaa_db,
        admin_password: "pw".into(),
        signing_key_path: dir.path().join("key.pem"),
        ..Default::default()
    })
    .await
    .unwrap();
    let token = uaa
        .password_grant("cf", "admin", "pw", None)
        .await
        .unwrap()
        .access_token;
    let logs = Arc::new(wf_loggregator::LogStore::new(1000));
    let mut config = ControllerConfig {
        database_url: cc_db,
        blobstore_dir: dir.path().join("blobs"),
        external_url: "http://cc.test".into(),
        apps_domain: "apps.test".into(),
        sync_interval: Duration::from_secs(1),
        ..Default::default()
    };
    configure(&mut config);
    let controller = Controller::open(config, bbs_client, bus, uaa.verifier(), logs)
        .await
        .unwrap();
    controller.run(cancel.clone());
    Api {
        router: controller.router(),
        token: format!("bearer {token}"),
        bbs,
        uaa,
        _dir: dir,
        cancel,
        _databases: databases,
    }
}

/// A droplet tgz as the stager writes one: `droplet.json` and `app.wasm`.
#[allow(dead_code)] // not every test binary uploads droplets
pub fn droplet_tgz(wasm: &[u8], process_types: serde_json::Value) -> Vec<u8> {
    let metadata = serde_json::json!({
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

/// A zip of `entries` (name, bytes), as a client would upload it.
#[allow(dead_code)] // not every test binary uploads zips
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A `multipart/form-data; boundary=XYZ` package upload: `bytes` as `bits`, no resources.
#[allow(dead_code)] // not every test binary uploads bits
pub fn multipart(filename: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--XYZ\r\nContent-Disposition: form-data; name=\"bits\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(
        b"\r\n--XYZ\r\nContent-Disposition: form-data; name=\"resources\"\r\n\r\n[]\r\n--XYZ--\r\n",
    );
    body
}

impl Api {
    /// A request with the admin's token when `auth`.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        auth: bool,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let token = auth.then_some(self.token.as_str());
        self.send_as(token, method, uri, content_type, body).await
    }

    /// A request with `token` (a `bearer ...` header value), or none.
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    /// A GET without a token (a signed blob URL): the status, and the body's bytes or
    /// the error that cut it off.
    #[allow(dead_code)] // not every test binary downloads blobs
    pub async fn download(&self, uri: &str) -> (StatusCode, Result<bytes::Bytes, axum::Error>) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await;
        (status, body.map(|collected| collected.to_bytes()))
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, _, json) = self.send(method, uri, None, body, true).await;
        (status, json)
    }

    pub async fn get(&self, uri: &str) -> Value {
        let (status, body) = self.call(Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }

    pub async fn post(&self, uri: &str, body: Value) -> Value {
        let (status, response) = self.call(Method::POST, uri, Some(body)).await;
        assert!(status.is_success(), "POST {uri}: {status} {response}");
        response
    }
}

impl Api {
    /// A JSON call as `token` (a `bearer ...` value): (status, body).
    #[allow(dead_code)]
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, _, json) = self.send_as(Some(token), method, uri, None, body).await;
        (status, json)
    }

    /// A new UAA user; their `bearer` token and user id (their CC guid).
    #[allow(dead_code)] // not every test binary makes users
    pub async fn new_user(&self, name: &str) -> (String, String) {
        let id = self
            .uaa
            .create_user(name, "a-password-1", &format!("{name}@x.test"))
            .await
            .unwrap();
        let token = self
            .uaa
            .password_grant("cf", name, "a-password-1", None)
            .await
            .unwrap()
            .access_token;
        (format!("bearer {token}"), id)
    }

    /// Gives `user_id` the role `kind` in the org or space `guid` (`target`:
    /// `organization` or `space`).
    #[allow(dead_code)]
    pub async fn grant(&self, user_id: &str, kind: &str, target: &str, guid: &str) {
        self.post(
            "/v3/roles",
            serde_json::json!({
                "type": kind,
                "relationships": {"user": {"data": {"guid": user_id}}, target: {"data": {"guid": guid}}},
            }),
        )
        .await;
    }

    /// A new org and a space in it; their guids.
    #[allow(dead_code)]
    pub async fn org_and_space(&self, org: &str) -> (String, String) {
        let org = self
            .post("/v3/organizations", serde_json::json!({"name": org}))
            .await;
        let org = org["guid"].as_str().unwrap().to_string();
        let space = self
            .post(
                "/v3/spaces",
                serde_json::json!({"name": "s", "relationships": {"organization": {"data": {"guid": org}}}}),
            )
            .await;
        (org, space["guid"].as_str().unwrap().to_string())
    }
}

/// An app in `space` with a staged droplet, the cell's part of staging played here.
#[allow(dead_code)] // not every test binary stages apps
pub async fn staged_app(api: &Api, space: &str, name: &str) -> String {
    let guid = |v: &Value| v["guid"].as_str().unwrap().to_string();
    let app = guid(
        &api.post(
            "/v3/apps",
            serde_json::json!({"name": name, "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await,
    );
    let package = guid(
        &api.post(
            "/v3/packages",
            serde_json::json!({"type": "bits", "relationships": {"app": {"data": {"guid": app}}}}),
        )
        .await,
    );
    let (status, _, uploaded) = api
        .send(
            Method::POST,
            &format!("/v3/packages/{package}/upload"),
            Some("multipart/form-data; boundary=XYZ"),
            multipart("app.wasm", b"\0asm\x01\0\0\0"),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let build = guid(
        &api.post(
            "/v3/builds",
            serde_json::json!({"package": {"guid": package}}),
        )
        .await,
    );
    let task = api.bbs.task_by_guid(&build).await.unwrap();
    let wf_bbs::TaskAction::Stage(stage) = task.definition.action else {
        panic!("not a staging task")
    };
    let upload = stage
        .droplet_upload_uri
        .strip_prefix("http://cc.test")
        .unwrap();
    let (status, _, _) = api
        .send(Method::PUT, upload, None, b"droplet".to_vec(), false)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.bbs.start_task(&build, "cell-0").await.unwrap();
    let result = serde_json::json!({"kind": "server", "wasm": "app.wasm", "wasm_sha256": "ab",
        "buildpack": "wasm_buildpack", "process_types": {"web": "app.wasm"}});
    api.bbs
        .complete_task(&build, "cell-0", false, "", &result.to_string())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let droplet = loop {
        let build = api.get(&format!("/v3/builds/{build}")).await;
        if build["state"] == "STAGED" {
            break build["droplet"]["guid"].as_str().unwrap().to_string();
        }
        assert_ne!(build["state"], "FAILED", "{build}");
        assert!(
            std::time::Instant::now() < deadline,
            "never staged: {build}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (status, body) = api
        .call(
            Method::PATCH,
            &format!("/v3/apps/{app}/relationships/current_droplet"),
            Some(serde_json::json!({"data": {"guid": droplet}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app
}
