//! The director's HTTP API, on BOSH's routes: `/info`, `/releases`, `/stemcells`,
//! `/cloud_configs`, `/deployments` (with `/instances`, `/vms`, `/jobs/...` state
//! changes and `/cloud_check`), `/tasks` (with `/output`), and `/blobs/:id` where
//! agents fetch packages. Everything but `/info` and `/blobs` needs the `admin` user's
//! basic auth. Changes answer 202 with the task that carries them out; errors are
//! `{"code", "description"}` as BOSH's.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::Digest as _;

use super::db::{self, Stemcell, StoredPackage, StoredRelease};
use super::deploy::InstanceAction;
use super::{Director, DirectorError};

/// The largest release or stemcell upload (a release carries the `wfd` binary).
const MAX_UPLOAD_BYTES: usize = 2 << 30;

type ApiResult = Result<Response, DirectorError>;

impl IntoResponse for DirectorError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            DirectorError::NotFound(_) => (StatusCode::NOT_FOUND, 70000),
            DirectorError::BadRequest(_)
            | DirectorError::Manifest(_)
            | DirectorError::Release(_) => (StatusCode::BAD_REQUEST, 40000),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, 100),
        };
        (
            status,
            Json(json!({"code": code, "description": self.to_string()})),
        )
            .into_response()
    }
}

pub fn router(director: Arc<Director>) -> Router {
    let protected = Router::new()
        .route("/releases", post(upload_release).get(releases))
        .route("/stemcells", post(upload_stemcell).get(stemcells))
        .route(
            "/cloud_configs",
            post(update_cloud_config).get(cloud_configs),
        )
        .route("/deployments", post(deploy).get(deployments))
        .route(
            "/deployments/{name}",
            get(deployment).delete(delete_deployment),
        )
        .route("/deployments/{name}/instances", get(instances))
        .route("/deployments/{name}/vms", get(vms))
        .route("/deployments/{name}/jobs/{group}", put(change_group))
        .route(
            "/deployments/{name}/jobs/{group}/{instance}",
            put(change_instance),
        )
        .route("/deployments/{name}/cloud_check", post(cloud_check))
        .route("/tasks", get(tasks))
        .route("/tasks/{id}", get(task))
        .route("/tasks/{id}/output", get(task_output))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .route_layer(middleware::from_fn_with_state(
            director.clone(),
            require_admin,
        ));
    Router::new()
        .route("/info", get(info))
        .route("/blobs/{id}", get(blob))
        .merge(protected)
        .with_state(director)
}

async fn require_admin(
    State(director): State<Arc<Director>>,
    request: Request,
    next: Next,
) -> Response {
    let expected = format!("admin:{}", director.config.admin_password);
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        });
    if given.as_deref() == Some(expected.as_bytes()) && !director.config.admin_password.is_empty() {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"BOSH Director\"")],
        Json(json!({"code": 401, "description": "Not authorized"})),
    )
        .into_response()
}

async fn info(State(director): State<Arc<Director>>) -> Json<Value> {
    Json(json!({
        "name": director.config.name,
        "uuid": director.uuid,
        "version": env!("CARGO_PKG_VERSION"),
        "cpi": director.config.cpi.first(),
        "user_authentication": {"type": "basic", "options": {}},
        "features": {"resurrector": director.config.hm.resurrector},
    }))
}

async fn blob(State(director): State<Arc<Director>>, Path(id): Path<String>) -> ApiResult {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(DirectorError::NotFound("no such blob".into()));
    }
    let file = tokio::fs::File::open(director.config.blobstore_dir.join(&id))
        .await
        .map_err(|_| DirectorError::NotFound("no such blob".into()))?;
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok(Body::from_stream(stream).into_response())
}

fn accepted(id: i64) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/tasks/{id}"))],
        Json(json!({"id": id, "state": "processing"})),
    )
        .into_response()
}

async fn upload_release(State(director): State<Arc<Director>>, body: Bytes) -> ApiResult {
    let release = tokio::task::spawn_blocking(move || crate::release::read_release(&body))
        .await
        .map_err(|e| DirectorError::Failed(e.to_string()))??;
    let mut packages = Vec::new();
    for (entry, blob) in &release.packages {
        let blobstore_id = uuid::Uuid::new_v4().to_string();
        tokio::fs::write(director.config.blobstore_dir.join(&blobstore_id), blob)
            .await
            .map_err(|e| DirectorError::Blobstore(e.to_string()))?;
        packages.push(StoredPackage {
            name: entry.name.clone(),
            version: entry.version.clone(),
            sha1: entry.sha1.clone(),
            blobstore_id,
        });
    }
    let stored = StoredRelease {
        name: release.manifest.name.clone(),
        version: release.manifest.version.clone(),
        jobs: release.jobs,
        packages,
    };
    let created = db::insert_release(director.pool(), &stored).await?;
    if !created {
        for package in &stored.packages {
            let _ =
                tokio::fs::remove_file(director.config.blobstore_dir.join(&package.blobstore_id))
                    .await;
        }
    }
    Ok(
        Json(json!({"name": stored.name, "version": stored.version, "created": created}))
            .into_response(),
    )
}

async fn releases(State(director): State<Arc<Director>>) -> ApiResult {
    let mut by_name: Vec<(String, Vec<Value>)> = Vec::new();
    for release in db::releases(director.pool()).await? {
        let version = json!({"version": release.version,
            "job_names": release.jobs.iter().map(|j| j.spec.name.clone()).collect::<Vec<_>>()});
        match by_name.iter_mut().find(|(n, _)| *n == release.name) {
            Some((_, versions)) => versions.push(version),
            None => by_name.push((release.name, vec![version])),
        }
    }
    let list: Vec<Value> = by_name
        .into_iter()
        .map(|(name, versions)| json!({"name": name, "release_versions": versions}))
        .collect();
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
struct StemcellManifest {
    name: String,
    version: crate::manifest::NumberOrText,
    operating_system: String,
    #[serde(default)]
    cloud_properties: Value,
}

async fn upload_stemcell(State(director): State<Arc<Director>>, body: Bytes) -> ApiResult {
    let digest = hex::encode(sha1::Sha1::digest(&body));
    let dir = director
        .config
        .blobstore_dir
        .join(format!("stemcell-{digest}"));
    let unpack_dir = dir.clone();
    let manifest =
        tokio::task::spawn_blocking(move || -> Result<StemcellManifest, DirectorError> {
            let bad = |e: &dyn std::fmt::Display| {
                DirectorError::BadRequest(format!("not a stemcell tarball: {e}"))
            };
            std::fs::create_dir_all(&unpack_dir).map_err(|e| bad(&e))?;
            tar::Archive::new(flate2::read::GzDecoder::new(&body[..]))
                .unpack(&unpack_dir)
                .map_err(|e| bad(&e))?;
            let text = std::fs::read_to_string(unpack_dir.join("stemcell.MF"))
                .map_err(|_| bad(&"no stemcell.MF"))?;
            serde_yaml::from_str(&text).map_err(|e| bad(&e))
        })
        .await
        .map_err(|e| DirectorError::Failed(e.to_string()))??;
    let version = match &manifest.version {
        crate::manifest::NumberOrText::Number(n) => n.to_string(),
        crate::manifest::NumberOrText::Text(s) => s.clone(),
    };
    let known = db::stemcells(director.pool())
        .await?
        .into_iter()
        .any(|s| s.name == manifest.name && s.version == version);
    if !known {
        let image = dir.join("image");
        let cid = director
            .cpi
            .create_stemcell(&image.display().to_string(), &manifest.cloud_properties)
            .await?;
        db::insert_stemcell(
            director.pool(),
            &Stemcell {
                name: manifest.name.clone(),
                version: version.clone(),
                operating_system: manifest.operating_system.clone(),
                cid,
            },
        )
        .await?;
    }
    Ok(Json(json!({"name": manifest.name, "version": version, "created": !known})).into_response())
}

async fn stemcells(State(director): State<Arc<Director>>) -> ApiResult {
    Ok(Json(db::stemcells(director.pool()).await?).into_response())
}

async fn update_cloud_config(State(director): State<Arc<Director>>, body: String) -> ApiResult {
    crate::manifest::parse_cloud_config(&body)?;
    db::insert_cloud_config(director.pool(), &body).await?;
    Ok(StatusCode::CREATED.into_response())
}

async fn cloud_configs(State(director): State<Arc<Director>>) -> ApiResult {
    let latest = db::latest_cloud_config(director.pool()).await?;
    let list: Vec<Value> = latest
        .into_iter()
        .map(|c| json!({"properties": c}))
        .collect();
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
struct DeployQuery {
    #[serde(default)]
    recreate: bool,
}

async fn deploy(
    State(director): State<Arc<Director>>,
    Query(q): Query<DeployQuery>,
    body: String,
) -> ApiResult {
    Ok(accepted(director.deploy(body, q.recreate).await?))
}

async fn deployments(State(director): State<Arc<Director>>) -> ApiResult {
    let mut list = Vec::new();
    for (name, manifest) in db::deployments(director.pool()).await? {
        let parsed: Value = serde_yaml::from_str(&manifest).unwrap_or_default();
        list.push(
            json!({"name": name, "releases": parsed["releases"], "stemcells": parsed["stemcells"]}),
        );
    }
    Ok(Json(list).into_response())
}

async fn deployment(State(director): State<Arc<Director>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(json!({"manifest": director.deployment_manifest(&name).await?})).into_response())
}

async fn delete_deployment(
    State(director): State<Arc<Director>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(accepted(director.delete_deployment(&name).await?))
}

async fn instances(State(director): State<Arc<Director>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(director.instance_infos(&name).await?).into_response())
}

async fn vms(State(director): State<Arc<Director>>, Path(name): Path<String>) -> ApiResult {
    let mut infos = director.instance_infos(&name).await?;
    infos.retain(|i| i.instance.vm_cid.is_some());
    Ok(Json(infos).into_response())
}

#[derive(Deserialize)]
struct StateQuery {
    state: String,
}

fn action(state: &str) -> Result<InstanceAction, DirectorError> {
    match state {
        "stopped" => Ok(InstanceAction::Stop),
        "started" => Ok(InstanceAction::Start),
        "restart" => Ok(InstanceAction::Restart),
        "recreate" => Ok(InstanceAction::Recreate),
        other => Err(DirectorError::BadRequest(format!(
            "unknown state '{other}' (stopped, started, restart, recreate)"
        ))),
    }
}

async fn change_group(
    State(director): State<Arc<Director>>,
    Path((name, group)): Path<(String, String)>,
    Query(q): Query<StateQuery>,
) -> ApiResult {
    let group = (group != "*").then_some(group);
    Ok(accepted(
        director
            .change_instances(&name, group, None, action(&q.state)?)
            .await?,
    ))
}

async fn change_instance(
    State(director): State<Arc<Director>>,
    Path((name, group, instance)): Path<(String, String, String)>,
    Query(q): Query<StateQuery>,
) -> ApiResult {
    Ok(accepted(
        director
            .change_instances(&name, Some(group), Some(instance), action(&q.state)?)
            .await?,
    ))
}

#[derive(Deserialize)]
struct CloudCheckQuery {
    #[serde(default)]
    resolve: bool,
}

async fn cloud_check(
    State(director): State<Arc<Director>>,
    Path(name): Path<String>,
    Query(q): Query<CloudCheckQuery>,
) -> ApiResult {
    Ok(accepted(director.cloud_check(&name, q.resolve).await?))
}

#[derive(Deserialize)]
struct TasksQuery {
    deployment: Option<String>,
    limit: Option<i64>,
}

async fn tasks(State(director): State<Arc<Director>>, Query(q): Query<TasksQuery>) -> ApiResult {
    let list = db::tasks(
        director.pool(),
        q.deployment.as_deref(),
        q.limit.unwrap_or(30).clamp(1, 1000),
    )
    .await?;
    Ok(Json(list).into_response())
}

async fn task(State(director): State<Arc<Director>>, Path(id): Path<i64>) -> ApiResult {
    let (task, _) = db::task_by_id(director.pool(), id)
        .await?
        .ok_or_else(|| DirectorError::NotFound(format!("Task {id} not found")))?;
    Ok(Json(task).into_response())
}

async fn task_output(State(director): State<Arc<Director>>, Path(id): Path<i64>) -> ApiResult {
    let (_, log) = db::task_by_id(director.pool(), id)
        .await?
        .ok_or_else(|| DirectorError::NotFound(format!("Task {id} not found")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response())
}
