//! Routes, their destinations (which apps a route sends traffic to) and domains.
//! Destination changes reach the router through nsync: they change the `cf-router`
//! routes of the apps' DesiredLRPs. Deleting a route unbinds its route service.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cf_time, created, finished_job, href, load_app, load_space_to, metadata, ok, paginated,
    relationship_guid, to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::audit::{self, Target};
use crate::auth::{Access, User};
use crate::db::{self, App, Arg, Destination, Domain, Filter, Route};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::{nsync, Controller};

/// The port apps listen on inside their instance (CF: 8080).
pub const APP_PORT: i64 = 8080;

/// `host.domain/path` (or `domain/path` without a host).
pub fn route_url(host: &str, domain: &str, path: &str) -> String {
    if host.is_empty() {
        format!("{domain}{path}")
    } else {
        format!("{host}.{domain}{path}")
    }
}

fn present_destination(destination: &Destination) -> Value {
    json!({
        "guid": destination.guid,
        "app": {"guid": destination.app_guid, "process": {"type": destination.process_type}},
        "weight": null,
        "port": destination.port,
        "protocol": "http1",
    })
}

async fn present_route(controller: &Controller, route: &Route) -> Result<Value, ApiError> {
    let domain = controller.db.get::<Domain>(&route.domain_guid).await?;
    let domain_name = domain.map(|d| d.name).unwrap_or_default();
    let destinations: Vec<Destination> = controller
        .db
        .find(Filter::new().eq("route_guid", &route.guid))
        .await?;
    let link = |suffix: &str| href(controller, &format!("/v3/routes/{}{suffix}", route.guid));
    Ok(json!({
        "guid": route.guid,
        "protocol": "http",
        "port": null,
        "host": route.host,
        "path": route.path,
        "url": route_url(&route.host, &domain_name, &route.path),
        "created_at": cf_time(&route.created_at),
        "updated_at": cf_time(&route.updated_at),
        "destinations": destinations.iter().map(present_destination).collect::<Vec<_>>(),
        "relationships": {
            "space": to_one(Some(&route.space_guid)),
            "domain": to_one(Some(&route.domain_guid)),
        },
        "metadata": metadata(),
        "links": {
            "self": link(""),
            "space": href(controller, &format!("/v3/spaces/{}", route.space_guid)),
            "domain": href(controller, &format!("/v3/domains/{}", route.domain_guid)),
            "destinations": link("/destinations"),
        },
    }))
}

/// Routes as CF shows them, with their labels and annotations.
pub(super) async fn present_routes(
    controller: &Controller,
    routes: &[Route],
) -> Result<Vec<Value>, ApiError> {
    let mut resources = Vec::with_capacity(routes.len());
    for route in routes {
        resources.push(present_route(controller, route).await?);
    }
    metadata::fill(&controller.db, "routes", &mut resources).await?;
    Ok(resources)
}

/// One route as CF shows it.
async fn show_route(controller: &Controller, route: Route) -> Result<Value, ApiError> {
    let mut shown = present_routes(controller, &[route]).await?;
    Ok(shown.pop().unwrap_or_default())
}

async fn load_route(controller: &Controller, user: &User, guid: &str) -> Result<Route, ApiError> {
    match controller.db.get::<Route>(guid).await? {
        Some(route) if user.can_access_space(&route.space_guid) => Ok(route),
        _ => Err(ApiError::not_found("Route")),
    }
}

async fn list_filtered(controller: &Controller, params: &ListParams, filter: Filter) -> ApiResult {
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "hosts", "host");
    let filter = params.filter(filter, "paths", "path");
    let filter = params.filter(filter, "domain_guids", "domain_guid");
    let filter = params.filter(filter, "space_guids", "space_guid");
    let filter = params.filter_in(
        filter,
        "organization_guids",
        "space_guid",
        "SELECT guid FROM spaces WHERE organization_guid IN ({})",
    );
    let filter = params.filter_in(
        filter,
        "app_guids",
        "guid",
        "SELECT route_guid FROM route_destinations WHERE app_guid IN ({})",
    );
    let filter = params.label_selector(filter, "routes")?;
    let (total, routes) = controller.db.list::<Route>(filter, &params.page).await?;
    let resources = present_routes(controller, &routes).await?;
    Ok(paginated(controller, params, total, resources))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    list_filtered(
        &controller,
        &params,
        user.scope_spaces(Filter::new(), "space_guid"),
    )
    .await
}

pub async fn list_for_app(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let app = load_app(&controller, &user, &guid).await?;
    let filter = Filter::new().in_select(
        "guid",
        "SELECT route_guid FROM route_destinations WHERE app_guid IN ({})",
        &[app.guid],
    );
    list_filtered(&controller, &params, filter).await
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let route = load_route(&controller, &user, &guid).await?;
    Ok(ok(show_route(&controller, route).await?))
}

/// `PATCH /v3/routes/:guid`: a route's metadata, by those who may change its routes.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let route = load_route(&controller, &user, &guid).await?;
    user.require_in_space(&route.space_guid, Access::Operate)?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "routes", &route.guid).await?;
    Ok(ok(show_route(&controller, route).await?))
}

#[derive(Debug, Deserialize)]
pub struct CreateRoute {
    host: Option<String>,
    path: Option<String>,
    #[serde(default)]
    relationships: Value,
    metadata: Option<Value>,
}

/// A DNS label: lowercase letters, digits and dashes, not at the ends.
fn valid_host(host: &str) -> bool {
    host.len() <= 63
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !host.starts_with('-')
        && !host.ends_with('-')
}

fn valid_path(path: &str) -> bool {
    path.is_empty()
        || (path.starts_with('/')
            && path.len() > 1
            && !path.ends_with('/')
            && !path.contains(['?', '#', ' ']))
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateRoute>,
) -> ApiResult {
    let host = body.host.unwrap_or_default().to_ascii_lowercase();
    let path = body.path.unwrap_or_default();
    if !valid_host(&host) {
        return Err(ApiError::unprocessable(format!(
            "Host '{host}' must be a DNS label: at most 63 lowercase letters, digits and dashes."
        )));
    }
    if !valid_path(&path) {
        return Err(ApiError::unprocessable(format!(
            "Path '{path}' must start with '/' and not end with one."
        )));
    }
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let relationships = json!({"relationships": body.relationships});
    let space = match relationship_guid(&relationships, "space") {
        Some(guid) => match load_space_to(&controller, &user, &guid, Access::Operate).await {
            Ok(space) => Some(space),
            Err(e @ ApiError::NotAuthorized(_)) => return Err(e),
            Err(_) => None,
        },
        None => None,
    };
    let Some(space) = space else {
        return Err(ApiError::unprocessable(
            "Invalid space. Ensure that the space exists and you have access to it.",
        ));
    };
    super::feature_flags::require(&controller, &user, "route_creation").await?;
    crate::quotas::check_route(&controller, &space).await?;
    let domain = match relationship_guid(&relationships, "domain") {
        Some(guid) => controller.db.get::<Domain>(&guid).await?,
        None => None,
    };
    // A private domain serves only its own org's spaces.
    let domain = domain.filter(|d| {
        d.organization_guid
            .as_ref()
            .is_none_or(|org| *org == space.organization_guid)
    });
    let Some(domain) = domain else {
        return Err(ApiError::unprocessable(
            "Invalid domain. Ensure that the domain exists and you have access to it.",
        ));
    };
    let taken = || {
        ApiError::unprocessable(format!(
            "Route already exists with host '{host}'{} for domain '{}'.",
            if path.is_empty() {
                String::new()
            } else {
                format!(" and path '{path}'")
            },
            domain.name
        ))
    };
    let same = Filter::new()
        .eq("host", &host)
        .eq("domain_guid", &domain.guid)
        .eq("path", &path);
    if !controller.db.find::<Route>(same).await?.is_empty() {
        return Err(taken());
    }
    let guid = db::new_guid();
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "routes",
            vec![
                ("guid", guid.clone().into()),
                ("host", host.clone().into()),
                ("path", path.clone().into()),
                ("domain_guid", domain.guid.clone().into()),
                ("space_guid", space.guid.into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => return Err(taken()),
        other => other?,
    }
    labels.apply(&controller.db, "routes", &guid).await?;
    let route = load_route(&controller, &user, &guid).await?;
    record_route_event(&controller, &user, "audit.route.create", &route).await;
    Ok(created(show_route(&controller, route).await?))
}

/// An audit event of a route (named `host.domain/path`).
async fn record_route_event(controller: &Controller, user: &User, event: &str, route: &Route) {
    let url = route_name(controller, route).await;
    let target = Target {
        kind: "route",
        guid: &route.guid,
        name: &url,
    };
    audit::record(
        controller,
        user,
        event,
        target,
        Some(&route.space_guid),
        json!({}),
    )
    .await;
}

/// An app's `audit.app.map-route` / `audit.app.unmap-route`.
async fn record_mapping_event(
    controller: &Controller,
    user: &User,
    event: &str,
    route: &Route,
    app_guid: &str,
    process_type: &str,
) {
    let Ok(Some(app)) = controller.db.get::<App>(app_guid).await else {
        return;
    };
    let data = json!({
        "route_guid": route.guid,
        "route": route_name(controller, route).await,
        "process_type": process_type,
    });
    audit::record_app(controller, user, event, &app, data).await;
}

/// `host.domain/path` of a route.
async fn route_name(controller: &Controller, route: &Route) -> String {
    let domain = controller
        .db
        .get::<Domain>(&route.domain_guid)
        .await
        .ok()
        .flatten()
        .map(|d| d.name)
        .unwrap_or_default();
    route_url(&route.host, &domain, &route.path)
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let route = load_route(&controller, &user, &guid).await?;
    user.require_in_space(&route.space_guid, Access::Operate)?;
    delete_route(&controller, &route).await?;
    record_route_event(&controller, &user, "audit.route.delete-request", &route).await;
    finished_job(&controller, "route.delete").await
}

/// Deletes a route and its destinations, and re-routes the apps it pointed at.
pub async fn delete_route(controller: &Controller, route: &Route) -> Result<(), ApiError> {
    let destinations: Vec<Destination> = controller
        .db
        .find(Filter::new().eq("route_guid", &route.guid))
        .await?;
    controller
        .db
        .delete_where(
            "route_destinations",
            Filter::new().eq("route_guid", &route.guid),
        )
        .await?;
    controller
        .db
        .delete_resources("routes", Filter::new().eq("guid", &route.guid))
        .await?;
    crate::service_operations::unbind_route(controller, &route.guid).await?;
    sync_apps(controller, destinations.iter().map(|d| d.app_guid.clone())).await;
    Ok(())
}

/// Re-routes the apps `route_guid` sends traffic to (its route service changed).
pub async fn sync_route_apps(controller: &Controller, route_guid: &str) -> Result<(), sqlx::Error> {
    let destinations: Vec<Destination> = controller
        .db
        .find(Filter::new().eq("route_guid", route_guid))
        .await?;
    sync_apps(controller, destinations.into_iter().map(|d| d.app_guid)).await;
    Ok(())
}

async fn sync_apps(controller: &Controller, app_guids: impl IntoIterator<Item = String>) {
    for app_guid in app_guids.into_iter().collect::<BTreeSet<_>>() {
        nsync::sync_app(controller, &app_guid).await;
    }
}

async fn present_destinations(controller: &Controller, route: &Route) -> ApiResult {
    let destinations: Vec<Destination> = controller
        .db
        .find(Filter::new().eq("route_guid", &route.guid))
        .await?;
    Ok(ok(json!({
        "destinations": destinations.iter().map(present_destination).collect::<Vec<_>>(),
        "links": {
            "self": href(controller, &format!("/v3/routes/{}/destinations", route.guid)),
            "route": href(controller, &format!("/v3/routes/{}", route.guid)),
        },
    })))
}

pub async fn destinations(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let route = load_route(&controller, &user, &guid).await?;
    present_destinations(&controller, &route).await
}

#[derive(Debug, Deserialize)]
pub struct DestinationsBody {
    #[serde(default)]
    destinations: Vec<DestinationBody>,
}

#[derive(Debug, Deserialize)]
pub struct DestinationBody {
    app: DestinationApp,
    port: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct DestinationApp {
    guid: String,
    process: Option<DestinationProcess>,
}

#[derive(Debug, Deserialize)]
pub struct DestinationProcess {
    #[serde(rename = "type")]
    kind: String,
}

/// Checks the requested destinations: apps the user can see, in the route's space.
async fn wanted_destinations(
    controller: &Controller,
    user: &User,
    route: &Route,
    body: DestinationsBody,
) -> Result<Vec<(String, String, i64)>, ApiError> {
    let mut wanted = Vec::new();
    for destination in body.destinations {
        let app = load_app(controller, user, &destination.app.guid)
            .await
            .map_err(|_| {
                ApiError::unprocessable(format!(
                    "App with guid '{}' does not exist.",
                    destination.app.guid
                ))
            })?;
        if app.space_guid != route.space_guid {
            return Err(ApiError::unprocessable(
                "Routes can only be mapped to apps in the same space.",
            ));
        }
        let process_type = destination
            .app
            .process
            .map(|p| p.kind)
            .unwrap_or_else(|| "web".to_string());
        let port = destination.port.unwrap_or(APP_PORT);
        if port != APP_PORT {
            return Err(ApiError::unprocessable(format!(
                "Destination port must be {APP_PORT}."
            )));
        }
        wanted.push((app.guid, process_type, port));
    }
    Ok(wanted)
}

async fn insert_destination(
    controller: &Controller,
    route: &Route,
    (app_guid, process_type, port): (String, String, i64),
) -> Result<(), ApiError> {
    let now = db::now();
    controller
        .db
        .insert(
            "route_destinations",
            vec![
                ("guid", db::new_guid().into()),
                ("route_guid", route.guid.clone().into()),
                ("app_guid", app_guid.into()),
                ("process_type", process_type.into()),
                ("port", Arg::Int(port)),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
    Ok(())
}

/// Adds destinations (ones already there are kept once).
pub async fn add_destinations(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<DestinationsBody>,
) -> ApiResult {
    let route = load_route(&controller, &user, &guid).await?;
    user.require_in_space(&route.space_guid, Access::Operate)?;
    let wanted = wanted_destinations(&controller, &user, &route, body).await?;
    let existing: Vec<Destination> = controller
        .db
        .find(Filter::new().eq("route_guid", &route.guid))
        .await?;
    let mut touched = Vec::new();
    for destination in wanted {
        let known = existing.iter().any(|d| {
            d.app_guid == destination.0
                && d.process_type == destination.1
                && d.port == destination.2
        });
        if !known
            && !touched
                .iter()
                .any(|t: &(String, String, i64)| *t == destination)
        {
            touched.push(destination.clone());
            insert_destination(&controller, &route, destination.clone()).await?;
            let (app_guid, process_type, _) = &destination;
            record_mapping_event(
                &controller,
                &user,
                "audit.app.map-route",
                &route,
                app_guid,
                process_type,
            )
            .await;
        }
    }
    sync_apps(&controller, touched.into_iter().map(|d| d.0)).await;
    present_destinations(&controller, &route).await
}

/// Replaces all destinations of the route.
pub async fn replace_destinations(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<DestinationsBody>,
) -> ApiResult {
    let route = load_route(&controller, &user, &guid).await?;
    user.require_in_space(&route.space_guid, Access::Operate)?;
    let wanted = wanted_destinations(&controller, &user, &route, body).await?;
    let existing: Vec<Destination> = controller
        .db
        .find(Filter::new().eq("route_guid", &route.guid))
        .await?;
    controller
        .db
        .delete_where(
            "route_destinations",
            Filter::new().eq("route_guid", &route.guid),
        )
        .await?;
    let mut apps: Vec<String> = existing.into_iter().map(|d| d.app_guid).collect();
    let mut inserted: Vec<(String, String, i64)> = Vec::new();
    for destination in wanted {
        if !inserted.contains(&destination) {
            apps.push(destination.0.clone());
            inserted.push(destination.clone());
            insert_destination(&controller, &route, destination).await?;
        }
    }
    sync_apps(&controller, apps).await;
    present_destinations(&controller, &route).await
}

pub async fn remove_destination(
    State(controller): Ctl,
    user: User,
    Path((guid, destination_guid)): Path<(String, String)>,
) -> ApiResult {
    let route = load_route(&controller, &user, &guid).await?;
    user.require_in_space(&route.space_guid, Access::Operate)?;
    let destination = controller
        .db
        .get::<Destination>(&destination_guid)
        .await?
        .filter(|d| d.route_guid == route.guid)
        .ok_or_else(|| ApiError::not_found("Destination"))?;
    controller
        .db
        .delete_where(
            "route_destinations",
            Filter::new().eq("guid", &destination.guid),
        )
        .await?;
    let (app_guid, process_type) = (&destination.app_guid, &destination.process_type);
    record_mapping_event(
        &controller,
        &user,
        "audit.app.unmap-route",
        &route,
        app_guid,
        process_type,
    )
    .await;
    sync_apps(&controller, [destination.app_guid]).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_paths_are_checked() {
        assert!(valid_host("hello"));
        assert!(valid_host("my-app-2"));
        assert!(valid_host(""));
        assert!(!valid_host("Hello!"));
        assert!(!valid_host("-x"));
        assert!(!valid_host(&"a".repeat(64)));
        assert!(valid_path(""));
        assert!(valid_path("/api"));
        assert!(!valid_path("api"));
        assert!(!valid_path("/api/"));
        assert_eq!(route_url("hello", "apps.test", ""), "hello.apps.test");
        assert_eq!(route_url("", "apps.test", "/x"), "apps.test/x");
    }
}
