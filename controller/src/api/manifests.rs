//! Space manifests: `POST /v3/spaces/:guid/actions/apply_manifest` (a job),
//! `POST /v3/spaces/:guid/manifest_diff` and `GET /v3/apps/:guid/manifest`.
//!
//! Applying a manifest is the V3 calls a client would make, one app after another:
//! create the app or update its lifecycle, set its environment, configure and scale its
//! processes, map its routes. They go through this API's own router with the caller's
//! token, so every step is validated and authorized exactly as if the client had made
//! it; the first failure fails the job with that step's CF error, prefixed with the
//! application's name. Processes the manifest names that the app does not have yet are
//! created (as CF does), and routes are created in the space when missing.

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request};
use axum::response::{IntoResponse as _, Response};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::apps::insert_process;
use super::{load_app, load_space_to, new_job, ok, ApiResult, Ctl};
use crate::auth::{Access, User};
use crate::db::{self, Filter, JobState, Process};
use crate::error::ApiError;
use crate::manifest::{self, AppManifest, Manifest, ProcessManifest};
use crate::nsync::AppContext;
use crate::Controller;

/// The manifest in a request body (YAML, as `Content-Type: application/x-yaml`).
fn parse_body(body: &Bytes) -> Result<Manifest, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::MessageParse("the manifest is not UTF-8".into()))?;
    manifest::parse(text).map_err(|e| ApiError::unprocessable(e.to_string()))
}

pub async fn apply_manifest(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let space = load_space_to(&controller, &user, &guid, Access::Develop).await?;
    let manifest = parse_body(&body)?;
    let (job, accepted) =
        new_job(&controller, "space.apply_manifest", JobState::Processing).await?;
    let applier = Applier {
        router: super::router(controller.clone()),
        authorization: headers.get(header::AUTHORIZATION).cloned(),
        controller: controller.clone(),
        space_guid: space.guid,
    };
    tokio::spawn(async move {
        let outcome = applier.apply(&manifest).await;
        let (state, errors) = match outcome {
            Ok(()) => (JobState::Complete, json!([])),
            Err(errors) => (JobState::Failed, errors),
        };
        let changes = vec![
            ("state", state.into()),
            ("errors", errors.to_string().into()),
            ("updated_at", db::now().into()),
        ];
        if let Err(e) = controller.db.update("jobs", &job, changes).await {
            tracing::error!(job, error = %e, "recording the outcome of apply_manifest");
        }
    });
    Ok(accepted)
}

/// `manifest_diff`: what applying the manifest would change, as JSON-patch-like
/// operations (`add`, `replace`, `remove`) on `/applications/<i>/<field>` with the
/// value it `was`.
pub async fn manifest_diff(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let space = load_space_to(&controller, &user, &guid, Access::Develop).await?;
    let manifest = parse_body(&body)?;
    let mut diff = Vec::new();
    for (i, wanted) in manifest.applications.iter().enumerate() {
        let filter = Filter::new()
            .eq("space_guid", &space.guid)
            .eq("name", wanted.name.trim());
        let current = match controller
            .db
            .find::<db::App>(filter)
            .await?
            .into_iter()
            .next()
        {
            Some(app) => current_manifest(&controller, &app).await?,
            None => AppManifest {
                name: wanted.name.clone(),
                ..AppManifest::default()
            },
        };
        let prefix = format!("/applications/{i}");
        // Processes are compared by type, wherever the manifest wrote their fields.
        let current_processes = current.process_configs();
        for (j, (kind, process)) in wanted.process_configs().into_iter().enumerate() {
            let was = current_processes
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, p)| serde_json::to_value(p).unwrap_or_default())
                .unwrap_or_else(|| json!({}));
            let mut process = serde_json::to_value(&process).unwrap_or_default();
            process["type"] = json!(kind);
            diff_objects(
                &format!("{prefix}/processes/{j}"),
                &was,
                &process,
                &mut diff,
            );
        }
        let strip = |app: &AppManifest| {
            let mut value = to_value(&AppManifest {
                web: ProcessManifest::default(),
                processes: None,
                ..app.clone()
            });
            if let Some(map) = value.as_object_mut() {
                map.remove("default-route");
                // CF keeps environment values as strings: `3` and `"3"` are the same.
                if app.env.is_some() {
                    map.insert("env".into(), json!(app.env_strings()));
                }
            }
            value
        };
        diff_objects(&prefix, &strip(&current), &strip(wanted), &mut diff);
    }
    Ok(ok(json!({ "diff": diff })))
}

/// `GET /v3/apps/:guid/manifest`: the app as a manifest (YAML).
pub async fn app_manifest(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    user.require_in_space(&app.space_guid, Access::ReadSecrets)?;
    let manifest = Manifest {
        version: Some(1),
        applications: vec![current_manifest(&controller, &app).await?],
    };
    let yaml = serde_yaml::to_string(&manifest)
        .map_err(|e| ApiError::Internal(format!("rendering a manifest: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-yaml"),
        )],
        yaml,
    )
        .into_response())
}

fn to_value(app: &AppManifest) -> Value {
    serde_json::to_value(app).unwrap_or_default()
}

/// Operations turning `current` into `wanted`, for the fields `wanted` sets (a
/// manifest leaves out what it does not change).
fn diff_objects(prefix: &str, current: &Value, wanted: &Value, out: &mut Vec<Value>) {
    let Some(wanted) = wanted.as_object() else {
        return;
    };
    for (key, value) in wanted {
        let path = format!("{prefix}/{key}");
        match current.get(key) {
            None | Some(Value::Null) if !value.is_null() => {
                out.push(json!({"op": "add", "path": path, "value": value}));
            }
            Some(was) if was != value && !value.is_null() => {
                out.push(json!({"op": "replace", "path": path, "was": was, "value": value}));
            }
            _ => {}
        }
    }
}

/// The app's state as a manifest: env, processes, routes.
async fn current_manifest(controller: &Controller, app: &db::App) -> Result<AppManifest, ApiError> {
    let mut processes = controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", &app.guid))
        .await?;
    processes.sort_by(|a, b| a.process_type.cmp(&b.process_type));
    // The app's route URLs as its instances see them (sorted).
    let routes: Vec<manifest::RouteManifest> = AppContext::load(controller, app.clone())
        .await?
        .uris
        .into_iter()
        .map(|route| manifest::RouteManifest { route })
        .collect();
    let env: BTreeMap<String, serde_yaml::Value> = app
        .environment_variables
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), serde_yaml::Value::String(v))
        })
        .collect();
    Ok(AppManifest {
        name: app.name.clone(),
        buildpacks: (!app.buildpacks.is_empty()).then(|| app.buildpacks.clone()),
        stack: Some(app.stack.clone()),
        env: (!env.is_empty()).then_some(env),
        metadata: crate::metadata::of(&controller.db, "apps", &app.guid).await?,
        no_route: routes.is_empty().then_some(true),
        routes: (!routes.is_empty()).then_some(routes),
        processes: Some(
            processes
                .iter()
                .map(|p| ProcessManifest {
                    process_type: Some(p.process_type.clone()),
                    instances: Some(p.instances),
                    memory: Some(format!("{}M", p.memory_in_mb)),
                    disk_quota: Some(format!("{}M", p.disk_in_mb)),
                    command: p.command.clone(),
                    health_check_type: Some(p.health_check_type.clone()),
                    log_rate_limit_per_second: Some(match p.log_rate_limit_in_bytes_per_second {
                        -1 => "-1".to_string(),
                        bytes => format!("{bytes}B"),
                    }),
                    ..ProcessManifest::default()
                })
                .collect(),
        ),
        ..AppManifest::default()
    })
}

/// Applies a manifest through the API's own router with the caller's token.
struct Applier {
    router: axum::Router,
    authorization: Option<HeaderValue>,
    controller: std::sync::Arc<Controller>,
    space_guid: String,
}

/// A failed step: the CF `errors` array of its response.
type StepError = Value;

impl Applier {
    async fn apply(&self, manifest: &Manifest) -> Result<(), StepError> {
        for app in &manifest.applications {
            let name = app.name.trim();
            self.apply_app(app)
                .await
                .map_err(|errors| prefix(errors, name))?;
        }
        Ok(())
    }

    /// One V3 call; a non-2xx answer is its `errors`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, StepError> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        let request = request
            .body(body)
            .map_err(|e| internal(&format!("building a request: {e}")))?;
        let response: Response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(json)
        } else {
            Err(json
                .get("errors")
                .cloned()
                .unwrap_or_else(|| internal(&format!("{status}"))))
        }
    }

    async fn apply_app(&self, app: &AppManifest) -> Result<(), StepError> {
        let name = app.name.trim();
        let space = &self.space_guid;
        let found = self
            .call(
                Method::GET,
                &format!("/v3/apps?names={}&space_guids={space}", enc(name)),
                None,
            )
            .await?;
        let lifecycle = app
            .buildpacks
            .as_ref()
            .map(|b| json!({"type": "buildpack", "data": {"buildpacks": b}}));
        let mut changes = serde_json::Map::new();
        if let Some(lifecycle) = lifecycle {
            changes.insert("lifecycle".into(), lifecycle);
        }
        if let Some(metadata) = &app.metadata {
            changes.insert("metadata".into(), metadata.clone());
        }
        let guid = match found["resources"][0]["guid"].as_str() {
            Some(guid) => {
                if !changes.is_empty() {
                    self.call(
                        Method::PATCH,
                        &format!("/v3/apps/{guid}"),
                        Some(Value::Object(changes)),
                    )
                    .await?;
                }
                guid.to_string()
            }
            None => {
                let mut body = changes;
                body.insert("name".into(), json!(name));
                body.insert(
                    "relationships".into(),
                    json!({"space": {"data": {"guid": space}}}),
                );
                let created = self
                    .call(Method::POST, "/v3/apps", Some(Value::Object(body)))
                    .await?;
                created["guid"].as_str().unwrap_or_default().to_string()
            }
        };
        let env = app.env_strings();
        if !env.is_empty() {
            self.call(
                Method::PATCH,
                &format!("/v3/apps/{guid}/environment_variables"),
                Some(json!({ "var": env })),
            )
            .await?;
        }
        for (kind, process) in app.process_configs() {
            self.apply_process(&guid, &kind, &process).await?;
        }
        if let Some(services) = app.services.as_ref().filter(|s| !s.is_empty()) {
            let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
            return Err(json!([{
                "code": 10008,
                "title": "CF-UnprocessableEntity",
                "detail": format!("Service instance(s) not found: {}", names.join(", ")),
            }]));
        }
        self.apply_routes(&guid, app).await
    }

    async fn apply_process(
        &self,
        app_guid: &str,
        kind: &str,
        p: &ProcessManifest,
    ) -> Result<(), StepError> {
        let path = format!("/v3/apps/{app_guid}/processes/{}", enc(kind));
        let process = match self.call(Method::GET, &path, None).await {
            Ok(process) => process,
            Err(_) => {
                // A type the app does not have yet: CF creates it.
                insert_process(&self.controller, app_guid, &db::new_guid(), kind)
                    .await
                    .map_err(|e| e.body()["errors"].clone())?;
                self.call(Method::GET, &path, None).await?
            }
        };
        let guid = process["guid"].as_str().unwrap_or_default();
        let mut update = serde_json::Map::new();
        if let Some(command) = &p.command {
            update.insert("command".into(), json!(command));
        }
        if let Some(kind) = &p.health_check_type {
            // `none` is CF's old name of `process`.
            let kind = if kind == "none" {
                "process"
            } else {
                kind.as_str()
            };
            update.insert("health_check".into(), json!({"type": kind}));
        }
        if !update.is_empty() {
            self.call(
                Method::PATCH,
                &format!("/v3/processes/{guid}"),
                Some(Value::Object(update)),
            )
            .await?;
        }
        let mut scale = serde_json::Map::new();
        if let Some(n) = p.instances {
            scale.insert("instances".into(), json!(n));
        }
        for (field, size) in [("memory_in_mb", &p.memory), ("disk_in_mb", &p.disk_quota)] {
            if let Some(size) = size {
                let mb = manifest::megabytes(size).map_err(|e| unprocessable(&e))?;
                scale.insert(field.into(), json!(mb));
            }
        }
        if let Some(rate) = &p.log_rate_limit_per_second {
            let rate = manifest::log_rate(rate).map_err(|e| unprocessable(&e))?;
            scale.insert("log_rate_limit_in_bytes_per_second".into(), json!(rate));
        }
        if !scale.is_empty() {
            self.call(
                Method::POST,
                &format!("/v3/processes/{guid}/actions/scale"),
                Some(Value::Object(scale)),
            )
            .await?;
        }
        Ok(())
    }

    async fn apply_routes(&self, app_guid: &str, app: &AppManifest) -> Result<(), StepError> {
        let mapped = self
            .call(Method::GET, &format!("/v3/apps/{app_guid}/routes"), None)
            .await?;
        let mapped = mapped["resources"].as_array().cloned().unwrap_or_default();
        if app.no_route == Some(true) {
            for route in &mapped {
                let route_guid = route["guid"].as_str().unwrap_or_default();
                let dests = self
                    .call(
                        Method::GET,
                        &format!("/v3/routes/{route_guid}/destinations"),
                        None,
                    )
                    .await?;
                for dest in dests["destinations"].as_array().into_iter().flatten() {
                    if dest.pointer("/app/guid").and_then(Value::as_str) == Some(app_guid) {
                        let dest_guid = dest["guid"].as_str().unwrap_or_default();
                        self.call(
                            Method::DELETE,
                            &format!("/v3/routes/{route_guid}/destinations/{dest_guid}"),
                            None,
                        )
                        .await?;
                    }
                }
            }
            return Ok(());
        }
        let domains = self.call(Method::GET, "/v3/domains", None).await?;
        let domains = domains["resources"].as_array().cloned().unwrap_or_default();
        let mut wanted: Vec<(String, String, String)> = Vec::new();
        for route in app.routes.iter().flatten() {
            wanted.push(split_route(&route.route, &domains).ok_or_else(|| {
                unprocessable(&format!(
                    "The route '{}' did not match any existing domains.",
                    route.route
                ))
            })?);
        }
        let name = app.name.trim();
        let generated = if app.random_route == Some(true) {
            Some(manifest::random_host(name))
        } else if app.default_route == Some(true) {
            Some(manifest::route_host(name))
        } else {
            None
        };
        if let (true, Some(host)) = (wanted.is_empty() && mapped.is_empty(), generated) {
            let shared = domains.iter().find(|d| {
                d.pointer("/relationships/organization/data")
                    .is_none_or(Value::is_null)
                    && d["internal"].as_bool() != Some(true)
            });
            if let Some(domain) = shared {
                wanted.push((
                    host,
                    domain["guid"].as_str().unwrap_or_default().to_string(),
                    String::new(),
                ));
            }
        }
        for (host, domain_guid, path) in wanted {
            let existing = self
                .call(
                    Method::GET,
                    &format!("/v3/routes?hosts={}&domain_guids={domain_guid}", enc(&host)),
                    None,
                )
                .await?;
            let existing = existing["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["host"] == host.as_str() && r["path"] == path.as_str())
                .cloned();
            let route = match existing {
                Some(route) => route,
                None => {
                    self.call(
                        Method::POST,
                        "/v3/routes",
                        Some(json!({
                            "host": host,
                            "path": path,
                            "relationships": {
                                "domain": {"data": {"guid": domain_guid}},
                                "space": {"data": {"guid": self.space_guid}},
                            },
                        })),
                    )
                    .await?
                }
            };
            let route_guid = route["guid"].as_str().unwrap_or_default();
            self.call(
                Method::POST,
                &format!("/v3/routes/{route_guid}/destinations"),
                Some(json!({"destinations": [{"app": {"guid": app_guid}}]})),
            )
            .await?;
        }
        Ok(())
    }
}

/// `host.domain[/path]` as (host, domain guid, path), by the longest matching domain.
pub(crate) fn split_route(route: &str, domains: &[Value]) -> Option<(String, String, String)> {
    let route = route
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let (authority, path) = match route.find('/') {
        Some(i) => (&route[..i], route[i..].trim_end_matches('/').to_string()),
        None => (route, String::new()),
    };
    let hostname = authority
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    domains
        .iter()
        .filter_map(|d| {
            let name = d["name"].as_str()?;
            let host = if hostname == name {
                ""
            } else {
                hostname.strip_suffix(name)?.strip_suffix('.')?
            };
            Some((
                name.len(),
                host.to_string(),
                d["guid"].as_str()?.to_string(),
            ))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, host, guid)| (host, guid, path))
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn internal(detail: &str) -> StepError {
    ApiError::Internal(detail.to_string()).body()["errors"].clone()
}

fn unprocessable(detail: &str) -> StepError {
    ApiError::unprocessable(detail).body()["errors"].clone()
}

/// Prefixes each error's detail with the application, as CF's manifest errors read.
fn prefix(mut errors: StepError, app: &str) -> StepError {
    for e in errors.as_array_mut().into_iter().flatten() {
        if let Some(detail) = e.get("detail").and_then(Value::as_str) {
            e["detail"] = json!(format!("For application '{app}': {detail}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_on_the_longest_domain() {
        let domains = vec![
            json!({"name": "example.com", "guid": "d1"}),
            json!({"name": "apps.example.com", "guid": "d2"}),
        ];
        let split = |r: &str| split_route(r, &domains);
        assert_eq!(
            split("web.apps.example.com"),
            Some(("web".into(), "d2".into(), String::new()))
        );
        assert_eq!(
            split("www.example.com/api/"),
            Some(("www".into(), "d1".into(), "/api".into()))
        );
        assert_eq!(
            split("apps.example.com"),
            Some((String::new(), "d2".into(), String::new()))
        );
        assert_eq!(split("web.other.org"), None);
        assert_eq!(split("xexample.com"), None);
    }

    #[test]
    fn diffs_name_only_what_the_manifest_changes() {
        let current = json!({"name": "a", "env": {"A": "1"}, "stack": "wasm"});
        let wanted = json!({"name": "a", "env": {"A": "2"}, "routes": [{"route": "x.y"}]});
        let mut out = Vec::new();
        diff_objects("/applications/0", &current, &wanted, &mut out);
        assert_eq!(
            out,
            vec![
                json!({"op": "replace", "path": "/applications/0/env", "was": {"A": "1"}, "value": {"A": "2"}}),
                json!({"op": "add", "path": "/applications/0/routes", "value": [{"route": "x.y"}]}),
            ]
        );
    }
}
