//! The CF V3 API (tasks included): its routes, the request extractors every handler shares (JSON
//! bodies, list parameters), CF's pagination, and the pieces of the resource shapes
//! (links, timestamps, metadata, relationships).

mod apps;
mod audit_events;
mod buildpacks;
mod builds;
mod deployments;
mod domains;
mod droplets;
mod env_groups;
mod feature_flags;
pub mod isolation_segments;
mod manifests;
mod orgs;
mod packages;
mod processes;
mod quotas;
mod revisions;
mod roles;
mod root;
mod routes;
mod service_bindings;
mod service_brokers;
pub mod service_instances;
mod service_offerings;
mod service_route_bindings;
mod stacks;
mod tasks;
mod usage_events;

pub use apps::STACK;
pub use buildpacks::for_staging as buildpacks_for_staging;
pub use env_groups::variables as env_group_variables;
pub use routes::{route_url, sync_route_apps, APP_PORT};
// For `crate::fuzzing`.
pub(crate) use droplets::MAX_UNPACKED_DROPLET_BYTES;
pub(crate) use manifests::split_route;
pub(crate) use service_brokers::check_catalog;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::auth::{Access, User};
use crate::db::{self, App, Filter, JobState, Page, Space};
use crate::error::ApiError;
use crate::Controller;

/// Largest package (and droplet) upload.
const MAX_PACKAGE_BYTES: usize = 1 << 30;
/// Largest buildpack upload.
const MAX_BUILDPACK_BYTES: usize = 1 << 30;
const DEFAULT_PER_PAGE: u32 = 50;
const MAX_PER_PAGE: u32 = 5000;

type Ctl = axum::extract::State<Arc<Controller>>;
type ApiResult = Result<Response, ApiError>;

pub fn router(controller: Arc<Controller>) -> Router {
    Router::new()
        .route("/", get(root::root))
        .route("/v3", get(root::v3))
        .route("/v3/info", get(root::info))
        .route("/v3/jobs/{guid}", get(root::job))
        .route("/v3/resource_matches", post(root::resource_matches))
        .route(
            "/v3/organizations",
            get(orgs::list_orgs).post(orgs::create_org),
        )
        .route(
            "/v3/organizations/{guid}",
            get(orgs::show_org)
                .patch(orgs::update_org)
                .delete(orgs::delete_org),
        )
        .route(
            "/v3/spaces",
            get(orgs::list_spaces).post(orgs::create_space),
        )
        .route(
            "/v3/spaces/{guid}",
            get(orgs::show_space)
                .patch(orgs::update_space)
                .delete(orgs::delete_space),
        )
        .route("/v3/apps", get(apps::list).post(apps::create))
        .route(
            "/v3/apps/{guid}",
            get(apps::show).patch(apps::update).delete(apps::delete),
        )
        .route("/v3/apps/{guid}/actions/start", post(apps::start))
        .route("/v3/apps/{guid}/actions/stop", post(apps::stop))
        .route("/v3/apps/{guid}/actions/restart", post(apps::restart))
        .route(
            "/v3/apps/{guid}/relationships/current_droplet",
            get(apps::current_droplet_relationship).patch(apps::set_current_droplet),
        )
        .route(
            "/v3/apps/{guid}/droplets/current",
            get(apps::current_droplet),
        )
        .route("/v3/apps/{guid}/env", get(apps::env))
        .route("/v3/apps/{guid}/manifest", get(manifests::app_manifest))
        .route(
            "/v3/spaces/{guid}/actions/apply_manifest",
            post(manifests::apply_manifest),
        )
        .route(
            "/v3/spaces/{guid}/manifest_diff",
            post(manifests::manifest_diff),
        )
        .route(
            "/v3/apps/{guid}/environment_variables",
            get(apps::environment_variables).patch(apps::update_environment_variables),
        )
        .route("/v3/apps/{guid}/processes", get(processes::list_for_app))
        .route(
            "/v3/apps/{guid}/processes/{type}",
            get(processes::show_for_app).patch(processes::update_for_app),
        )
        .route(
            "/v3/apps/{guid}/processes/{type}/actions/scale",
            post(processes::scale_for_app),
        )
        .route(
            "/v3/apps/{guid}/processes/{type}/stats",
            get(processes::stats_for_app),
        )
        .route("/v3/apps/{guid}/packages", get(packages::list_for_app))
        .route("/v3/apps/{guid}/builds", get(builds::list_builds_for_app))
        .route("/v3/apps/{guid}/droplets", get(droplets::list_for_app))
        .route("/v3/apps/{guid}/routes", get(routes::list_for_app))
        .route("/v3/packages", get(packages::list).post(packages::create))
        .route(
            "/v3/packages/{guid}",
            get(packages::show).patch(packages::update),
        )
        .route("/v3/packages/{guid}/download", get(packages::download))
        .route(
            "/v3/packages/{guid}/upload",
            post(packages::upload).layer(DefaultBodyLimit::max(MAX_PACKAGE_BYTES)),
        )
        .route(
            "/v3/builds",
            get(builds::list_builds).post(builds::create_build),
        )
        .route(
            "/v3/builds/{guid}",
            get(builds::show_build).patch(builds::update_build),
        )
        .route("/v3/droplets", get(droplets::list).post(droplets::create))
        .route(
            "/v3/droplets/{guid}",
            get(droplets::show).patch(droplets::update),
        )
        .route(
            "/v3/droplets/{guid}/upload",
            post(droplets::upload).layer(DefaultBodyLimit::max(MAX_PACKAGE_BYTES)),
        )
        .route("/v3/droplets/{guid}/download", get(droplets::download))
        .route("/v3/processes", get(processes::list))
        .route(
            "/v3/processes/{guid}",
            get(processes::show).patch(processes::update),
        )
        .route("/v3/processes/{guid}/actions/scale", post(processes::scale))
        .route("/v3/processes/{guid}/stats", get(processes::stats))
        .route("/v3/routes", get(routes::list).post(routes::create))
        .route(
            "/v3/routes/{guid}",
            get(routes::show)
                .patch(routes::update)
                .delete(routes::delete),
        )
        .route(
            "/v3/routes/{guid}/destinations",
            get(routes::destinations)
                .post(routes::add_destinations)
                .patch(routes::replace_destinations),
        )
        .route(
            "/v3/routes/{guid}/destinations/{destination_guid}",
            delete(routes::remove_destination),
        )
        .route("/v3/roles", get(roles::list).post(roles::create))
        .route("/v3/roles/{guid}", get(roles::show).delete(roles::delete))
        .route("/v3/users", get(roles::list_users))
        .route(
            "/v3/users/{guid}",
            get(roles::show_user)
                .patch(roles::update_user)
                .delete(roles::delete_user),
        )
        .route(
            "/v3/apps/{guid}/tasks",
            get(tasks::list_for_app).post(tasks::create),
        )
        .route("/v3/tasks", get(tasks::list))
        .route("/v3/tasks/{guid}", get(tasks::show).patch(tasks::update))
        .route("/v3/tasks/{guid}/actions/cancel", post(tasks::cancel))
        .route(
            "/v3/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/v3/deployments/{guid}",
            get(deployments::show).patch(deployments::update),
        )
        .route(
            "/v3/deployments/{guid}/actions/cancel",
            post(deployments::cancel),
        )
        .route(
            "/v3/deployments/{guid}/actions/continue",
            post(deployments::continue_deployment),
        )
        .route("/v3/apps/{guid}/revisions", get(revisions::list_for_app))
        .route(
            "/v3/apps/{guid}/revisions/deployed",
            get(revisions::deployed),
        )
        .route(
            "/v3/revisions/{guid}",
            get(revisions::show).patch(revisions::update),
        )
        .route(
            "/v3/revisions/{guid}/environment_variables",
            get(revisions::environment_variables),
        )
        .route("/v3/feature_flags", get(feature_flags::list))
        .route(
            "/v3/feature_flags/{name}",
            get(feature_flags::show).patch(feature_flags::update),
        )
        .route(
            "/v3/environment_variable_groups/{name}",
            get(env_groups::show).patch(env_groups::update),
        )
        .route(
            "/v3/buildpacks",
            get(buildpacks::list).post(buildpacks::create),
        )
        .route(
            "/v3/buildpacks/{guid}",
            get(buildpacks::show)
                .patch(buildpacks::update)
                .delete(buildpacks::delete),
        )
        .route(
            "/v3/buildpacks/{guid}/upload",
            post(buildpacks::upload).layer(DefaultBodyLimit::max(MAX_BUILDPACK_BYTES)),
        )
        .route("/v3/stacks", get(stacks::list))
        .route("/v3/stacks/{guid}", get(stacks::show).patch(stacks::update))
        .route("/v3/app_usage_events", get(usage_events::list))
        .route("/v3/app_usage_events/{guid}", get(usage_events::show))
        .route(
            "/v3/app_usage_events/actions/destructively_purge_all_and_reseed",
            post(usage_events::purge_and_reseed),
        )
        .route("/v3/audit_events", get(audit_events::list))
        .route("/v3/audit_events/{guid}", get(audit_events::show))
        .route(
            "/v3/organization_quotas",
            get(quotas::list_org_quotas).post(quotas::create_org_quota),
        )
        .route(
            "/v3/organization_quotas/{guid}",
            get(quotas::show_org_quota)
                .patch(quotas::update_org_quota)
                .delete(quotas::delete_org_quota),
        )
        .route(
            "/v3/organization_quotas/{guid}/relationships/organizations",
            post(quotas::apply_org_quota),
        )
        .route(
            "/v3/space_quotas",
            get(quotas::list_space_quotas).post(quotas::create_space_quota),
        )
        .route(
            "/v3/space_quotas/{guid}",
            get(quotas::show_space_quota)
                .patch(quotas::update_space_quota)
                .delete(quotas::delete_space_quota),
        )
        .route(
            "/v3/space_quotas/{guid}/relationships/spaces",
            post(quotas::apply_space_quota),
        )
        .route(
            "/v3/space_quotas/{guid}/relationships/spaces/{space_guid}",
            delete(quotas::remove_space_quota),
        )
        .route(
            "/v3/service_instances",
            get(service_instances::list).post(service_instances::create),
        )
        .route(
            "/v3/service_instances/{guid}",
            get(service_instances::show)
                .patch(service_instances::update)
                .delete(service_instances::delete),
        )
        .route(
            "/v3/service_instances/{guid}/credentials",
            get(service_instances::credentials),
        )
        .route(
            "/v3/service_credential_bindings",
            get(service_bindings::list).post(service_bindings::create),
        )
        .route(
            "/v3/service_credential_bindings/{guid}",
            get(service_bindings::show)
                .patch(service_bindings::update)
                .delete(service_bindings::delete),
        )
        .route(
            "/v3/service_credential_bindings/{guid}/details",
            get(service_bindings::details),
        )
        .route(
            "/v3/service_route_bindings",
            get(service_route_bindings::list).post(service_route_bindings::create),
        )
        .route(
            "/v3/service_route_bindings/{guid}",
            get(service_route_bindings::show)
                .patch(service_route_bindings::update)
                .delete(service_route_bindings::delete),
        )
        .route(
            "/v3/service_route_bindings/{guid}/parameters",
            get(service_route_bindings::parameters),
        )
        .route(
            "/v3/service_brokers",
            get(service_brokers::list).post(service_brokers::create),
        )
        .route(
            "/v3/service_brokers/{guid}",
            get(service_brokers::show)
                .patch(service_brokers::update)
                .delete(service_brokers::delete),
        )
        .route(
            "/v3/service_offerings",
            get(service_offerings::list_offerings),
        )
        .route(
            "/v3/service_offerings/{guid}",
            get(service_offerings::show_offering).patch(service_offerings::update_offering),
        )
        .route("/v3/service_plans", get(service_offerings::list_plans))
        .route(
            "/v3/service_plans/{guid}",
            get(service_offerings::show_plan).patch(service_offerings::update_plan),
        )
        .route(
            "/v3/service_plans/{guid}/visibility",
            get(service_offerings::visibility)
                .patch(service_offerings::replace_visibility)
                .post(service_offerings::append_visibility),
        )
        .route(
            "/v3/service_plans/{guid}/visibility/{org_guid}",
            delete(service_offerings::remove_visibility),
        )
        .route(
            "/v3/isolation_segments",
            get(isolation_segments::list).post(isolation_segments::create),
        )
        .route(
            "/v3/isolation_segments/{guid}",
            get(isolation_segments::show)
                .patch(isolation_segments::update)
                .delete(isolation_segments::delete),
        )
        .route(
            "/v3/isolation_segments/{guid}/organizations",
            get(isolation_segments::list_organizations),
        )
        .route(
            "/v3/isolation_segments/{guid}/relationships/organizations",
            get(isolation_segments::organizations).post(isolation_segments::entitle),
        )
        .route(
            "/v3/isolation_segments/{guid}/relationships/organizations/{org_guid}",
            delete(isolation_segments::revoke),
        )
        .route(
            "/v3/isolation_segments/{guid}/relationships/spaces",
            get(isolation_segments::spaces),
        )
        .route(
            "/v3/organizations/{guid}/relationships/default_isolation_segment",
            get(isolation_segments::show_org_default).patch(isolation_segments::set_org_default),
        )
        .route(
            "/v3/spaces/{guid}/relationships/isolation_segment",
            get(isolation_segments::show_space_segment)
                .patch(isolation_segments::set_space_segment),
        )
        .route("/v3/domains", get(domains::list).post(domains::create))
        .route(
            "/v3/domains/{guid}",
            get(domains::show)
                .patch(domains::update)
                .delete(domains::delete),
        )
        .with_state(controller)
}

// --- extractors ---

/// A JSON request body. Unlike axum's `Json` it needs no content type (CF clients and
/// `curl -d` often send none), and its failures are CF errors: a body that is not JSON
/// is CF-MessageParseError, JSON of the wrong shape CF-UnprocessableEntity.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::MessageParse(e.body_text()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Unprocessable(e.to_string()),
        _ => ApiError::MessageParse(e.to_string()),
    })
}

/// The body of a PATCH that changes only a resource's labels and annotations.
#[derive(Debug, serde::Deserialize)]
pub struct MetadataBody {
    pub metadata: Option<Value>,
}

/// The query of a list request: filters, `page`, `per_page` and `order_by`.
pub struct ListParams {
    path: String,
    params: Vec<(String, String)>,
    page: Page,
}

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::BadQueryParameter(e.body_text()))?;
        ListParams::parse(parts.uri.path(), params)
    }
}

impl ListParams {
    fn parse(path: &str, params: Vec<(String, String)>) -> Result<ListParams, ApiError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let number = |name: &str, default: u32, max: u32| -> Result<u32, ApiError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadQueryParameter(format!("{name} must be between 1 and {max}"))
                    }),
            }
        };
        let page = number("page", 1, u32::MAX)?;
        let per_page = number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
        let order = get("order_by").unwrap_or("created_at");
        let (order_by, descending) = match order.strip_prefix('-') {
            Some(field) => (field, true),
            None => (order.trim_start_matches('+'), false),
        };
        let page = Page {
            page,
            per_page,
            order_by: order_by.to_string(),
            descending,
        };
        Ok(ListParams {
            path: path.to_string(),
            params,
            page,
        })
    }

    /// The values of a comma-list filter, if it was given.
    pub fn values(&self, name: &str) -> Option<Vec<String>> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    }

    /// The `include` values, checked against what the endpoint can include
    /// (CF-BadQueryParameter otherwise).
    pub fn includes(&self, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
        let wanted = self.values("include").unwrap_or_default();
        match wanted.iter().find(|w| !allowed.contains(&w.as_str())) {
            Some(bad) => Err(ApiError::BadQueryParameter(format!(
                "Invalid included resource: '{bad}'. Valid included resources are: {}",
                allowed
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            None => Ok(wanted),
        }
    }

    /// Adds `column IN (values of param)` when `param` was given.
    pub fn filter(&self, filter: Filter, param: &str, column: &str) -> Filter {
        match self.values(param) {
            Some(values) => filter.any_of(column, &values),
            None => filter,
        }
    }

    /// Adds `column IN (select)` with the values of `param` when it was given.
    pub fn filter_in(&self, filter: Filter, param: &str, column: &str, select: &str) -> Filter {
        match self.values(param) {
            Some(values) => filter.in_select(column, select, &values),
            None => filter,
        }
    }

    /// Adds the `label_selector` requirements, when one was given, on the resources of
    /// `resource_type` (their table) whose guid is in `guid`.
    pub fn label_selector(&self, filter: Filter, resource_type: &str) -> Result<Filter, ApiError> {
        let Some((_, selector)) = self.params.iter().find(|(k, _)| k == "label_selector") else {
            return Ok(filter);
        };
        let requirements =
            crate::metadata::parse_selector(selector).map_err(ApiError::BadQueryParameter)?;
        Ok(filter.label_selector("guid", resource_type, &requirements))
    }

    fn page_href(&self, controller: &Controller, page: u64) -> Value {
        let mut query: Vec<String> = self
            .params
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        query.push(format!("page={page}"));
        query.push(format!("per_page={}", self.page.per_page));
        json!({"href": format!("{}{}?{}", controller.base_url, self.path, query.join("&"))})
    }
}

/// Percent-encodes a query component.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A CF list response.
pub fn paginated(
    controller: &Controller,
    params: &ListParams,
    total: u64,
    resources: Vec<Value>,
) -> Response {
    paginated_with(controller, params, total, resources, None)
}

/// A page of resources with the related resources `include` asked for.
pub fn paginated_with(
    controller: &Controller,
    params: &ListParams,
    total: u64,
    resources: Vec<Value>,
    included: Option<Value>,
) -> Response {
    let per_page = u64::from(params.page.per_page);
    let total_pages = total.div_ceil(per_page).max(1);
    let page = u64::from(params.page.page);
    let next = (page < total_pages).then(|| params.page_href(controller, page + 1));
    let previous = (page > 1).then(|| params.page_href(controller, (page - 1).min(total_pages)));
    let mut body = json!({
        "pagination": {
            "total_results": total,
            "total_pages": total_pages,
            "first": params.page_href(controller, 1),
            "last": params.page_href(controller, total_pages),
            "next": next,
            "previous": previous,
        },
        "resources": resources,
    });
    if let Some(included) = included {
        body["included"] = included;
    }
    Json(body).into_response()
}

// --- shape pieces ---

pub fn href(controller: &Controller, path: &str) -> Value {
    json!({"href": format!("{}{path}", controller.base_url)})
}

/// A stored timestamp as CF shows it: RFC 3339 UTC to the second.
pub fn cf_time(stored: &str) -> String {
    match stored.get(..19) {
        Some(seconds) => format!("{seconds}Z"),
        None => stored.to_string(),
    }
}

pub fn metadata() -> Value {
    json!({"labels": {}, "annotations": {}})
}

pub fn to_one(guid: Option<&str>) -> Value {
    match guid {
        Some(guid) => json!({"data": {"guid": guid}}),
        None => json!({"data": null}),
    }
}

pub fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub fn ok(body: Value) -> Response {
    Json(body).into_response()
}

/// The guids of a `{"data": [{"guid"}]}` to-many relationship body.
pub fn to_many_guids(body: &Value) -> Result<Vec<String>, ApiError> {
    let invalid = || ApiError::unprocessable("Data must be an array of objects with a guid");
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    data.iter()
        .map(|item| item.get("guid").and_then(Value::as_str).map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(invalid)
}

/// `[{"guid"}, ...]`: the data of a to-many relationship.
pub fn guid_list(guids: &[String]) -> Value {
    Value::Array(guids.iter().map(|g| json!({"guid": g})).collect())
}

/// The answer to a to-many relationship request: what the user sees of it now.
pub fn relationship(controller: &Controller, path: &str, guids: &[String]) -> Value {
    json!({"data": guid_list(guids), "links": {"self": href(controller, path)}})
}

/// The guid at `relationships.<name>.data.guid` of a request body.
pub fn relationship_guid(body: &Value, name: &str) -> Option<String> {
    body.pointer(&format!("/relationships/{name}/data/guid"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

// --- loading with authorization ---

/// A space the user can see (else 404).
pub async fn load_space(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<Space, ApiError> {
    load_space_to(controller, user, guid, Access::Read).await
}

/// A space the user may do `access` in: 404 if they cannot see it, 403 if they see
/// it but may not.
pub async fn load_space_to(
    controller: &Controller,
    user: &User,
    guid: &str,
    access: Access,
) -> Result<Space, ApiError> {
    match controller.db.get::<Space>(guid).await? {
        Some(space) if user.can_access_space(&space.guid) => {
            user.require_in_space(&space.guid, access)?;
            Ok(space)
        }
        _ => Err(ApiError::not_found("Space")),
    }
}

/// An app the user can see (else 404).
pub async fn load_app(controller: &Controller, user: &User, guid: &str) -> Result<App, ApiError> {
    load_app_to(controller, user, guid, Access::Read).await
}

/// An app the user may change (space_developer): 404 if they cannot see it, 403 if
/// they see it but may not change it.
pub async fn load_app_for_write(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<App, ApiError> {
    load_app_to(controller, user, guid, Access::Develop).await
}

/// An app whose environment the user may read (space developers, admins and global
/// auditors): 404 if they cannot see it, 403 if they may not.
pub async fn load_app_secrets(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<App, ApiError> {
    load_app_to(controller, user, guid, Access::ReadSecrets).await
}

/// An app the user may do `access` to: 404 if they cannot see it, 403 if they see it
/// but may not.
pub async fn load_app_to(
    controller: &Controller,
    user: &User,
    guid: &str,
    access: Access,
) -> Result<App, ApiError> {
    match controller.db.get::<App>(guid).await? {
        Some(app) if user.can_access_space(&app.space_guid) => {
            user.require_in_space(&app.space_guid, access)?;
            Ok(app)
        }
        _ => Err(ApiError::not_found("App")),
    }
}

/// Records a finished asynchronous operation and answers `202 Accepted` pointing at
/// its job (the work itself is done by the time the client polls).
pub async fn finished_job(controller: &Controller, operation: &str) -> ApiResult {
    new_job(controller, operation, JobState::Complete)
        .await
        .map(|(_, accepted)| accepted)
}

/// How long the link a bits download (`/v3/packages/:guid/download`,
/// `/v3/droplets/:guid/download`) redirects to stays valid.
const DOWNLOAD_URL_VALIDITY_SECS: i64 = 3600;

/// `302 Found` to a signed link for the blob download `path` (an `/internal/v4/...`
/// path), valid for an hour.
pub fn redirect_to_blob(controller: &Controller, path: &str) -> Response {
    let expires = crate::signed_urls::now_unix() + DOWNLOAD_URL_VALIDITY_SECS;
    let url = controller.signer.url(path, expires);
    (StatusCode::FOUND, [(header::LOCATION, url)]).into_response()
}

/// `202 Accepted` with `body` (the resource), pointing at a finished job for
/// `operation`: an upload done by the time the client polls.
pub async fn accepted_with(controller: &Controller, operation: &str, body: Value) -> ApiResult {
    let (_, accepted) = new_job(controller, operation, JobState::Complete).await?;
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Some(location) = accepted.headers().get(header::LOCATION).cloned() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Records a job in `state`; its guid, and the `202 Accepted` pointing at it.
pub async fn new_job(
    controller: &Controller,
    operation: &str,
    state: JobState,
) -> Result<(String, Response), ApiError> {
    let guid = db::new_guid();
    let now = db::now();
    controller
        .db
        .insert(
            "jobs",
            vec![
                ("guid", guid.clone().into()),
                ("operation", operation.into()),
                ("state", state.into()),
                ("errors", "[]".into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
    let location = format!("{}/v3/jobs/{guid}", controller.base_url);
    let accepted = (StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response();
    Ok((guid, accepted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_json_are_parse_errors() {
        let err = parse_json::<Value>(b"{not json").unwrap_err();
        assert!(matches!(err, ApiError::MessageParse(_)), "{err:?}");
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Named {
            name: String,
        }
        let err = parse_json::<Named>(br#"{"name": 3}"#).unwrap_err();
        assert!(matches!(err, ApiError::Unprocessable(_)), "{err:?}");
        assert_eq!(parse_json::<Value>(b"  ").unwrap(), json!({}));
    }

    #[test]
    fn list_params_parse_paging_and_filters() {
        let params = vec![
            ("names".to_string(), "a,b,".to_string()),
            ("order_by".to_string(), "-name".to_string()),
            ("per_page".to_string(), "2".to_string()),
        ];
        let list = ListParams::parse("/v3/apps", params).unwrap();
        assert_eq!(
            list.values("names"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(list.values("space_guids"), None);
        assert_eq!(
            list.page,
            Page {
                page: 1,
                per_page: 2,
                order_by: "name".into(),
                descending: true
            }
        );

        let bad = ListParams::parse("/v3/apps", vec![("per_page".into(), "0".into())]);
        assert!(matches!(bad, Err(ApiError::BadQueryParameter(_))));
        let bad = ListParams::parse("/v3/apps", vec![("page".into(), "x".into())]);
        assert!(matches!(bad, Err(ApiError::BadQueryParameter(_))));
    }

    #[test]
    fn timestamps_show_to_the_second() {
        assert_eq!(
            cf_time("2026-11-24T15:00:00.123456Z"),
            "2026-11-24T15:00:00Z"
        );
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
