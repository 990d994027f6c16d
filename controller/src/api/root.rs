//! The API root (`/`, `/v3`, `/v3/info`), jobs, and resource matching.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::{cf_time, href, ok, ApiResult, Ctl, JsonBody};
use crate::auth::User;
use crate::db::Job;
use crate::error::ApiError;
use crate::Controller;

/// The CC API version this controller speaks (CF V3).
const API_VERSION: &str = "3.180.0";

pub async fn root(State(controller): Ctl) -> ApiResult {
    let base = &controller.base_url;
    let ws = base.replacen("http", "ws", 1);
    let uaa = controller.config.uaa_url.trim_end_matches('/');
    Ok(ok(json!({"links": {
        "self": {"href": base},
        "bits_service": null,
        "cloud_controller_v2": null,
        "cloud_controller_v3": {"href": format!("{base}/v3"), "meta": {"version": API_VERSION}},
        "network_policy_v0": null,
        "network_policy_v1": null,
        "login": {"href": uaa},
        "uaa": {"href": uaa},
        "credhub": null,
        "routing": null,
        "logging": {"href": ws},
        "log_cache": {"href": base},
        "log_stream": null,
        "app_ssh": null,
    }})))
}

pub async fn v3(State(controller): Ctl) -> ApiResult {
    let link = |path: &str| href(&controller, &format!("/v3{path}"));
    Ok(ok(json!({"links": {
        "self": link(""),
        "apps": link("/apps"),
        "builds": link("/builds"),
        "domains": link("/domains"),
        "droplets": link("/droplets"),
        "info": link("/info"),
        "organizations": link("/organizations"),
        "packages": link("/packages"),
        "processes": link("/processes"),
        "resource_matches": link("/resource_matches"),
        "routes": link("/routes"),
        "spaces": link("/spaces"),
    }})))
}

pub async fn info(State(controller): Ctl) -> ApiResult {
    Ok(ok(json!({
        "build": env!("CARGO_PKG_VERSION"),
        "cli_version": {"minimum": null, "recommended": null},
        "custom": {},
        "description": "Wasmfoundry: a Cloud Foundry-style platform running apps as WebAssembly",
        "name": "wasmfoundry",
        "version": 3,
        "osbapi_version": null,
        "links": {"self": href(&controller, "/v3/info"), "support": null},
    })))
}

pub async fn job(State(controller): Ctl, _user: User, Path(guid): Path<String>) -> ApiResult {
    let job: Job = controller
        .db
        .get(&guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Job"))?;
    Ok(ok(present_job(&controller, &job)))
}

fn present_job(controller: &Controller, job: &Job) -> Value {
    json!({
        "guid": job.guid,
        "created_at": cf_time(&job.created_at),
        "updated_at": cf_time(&job.updated_at),
        "operation": job.operation,
        "state": job.state.as_str(),
        "errors": job.errors,
        "warnings": [],
        "links": {"self": href(controller, &format!("/v3/jobs/{}", job.guid))},
    })
}

/// `POST /v3/resource_matches`: which of the files named (`{"resources": [{"checksum":
/// {"value": sha1}, "size_in_bytes"}]}`) the resource cache holds; a push need not
/// upload those.
pub async fn resource_matches(
    State(controller): Ctl,
    _user: User,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let resources = body
        .get("resources")
        .cloned()
        .ok_or_else(|| ApiError::unprocessable("Resources must be an array"))?;
    let resources = crate::resource_cache::parse(resources)?;
    let held = crate::resource_cache::matches(&controller, resources).await?;
    Ok(ok(json!({"resources": held})))
}
