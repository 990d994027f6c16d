//! Route and domain commands: `routes`, `create-route`, `delete-route`, `map-route`,
//! `unmap-route`, `domains`, `create-private-domain`, `create-shared-domain` and
//! `delete-private-domain` / `delete-shared-domain`, with the cf CLI's (v7+) arguments
//! and messages. `routes` shows the service instance a route is bound to.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{app_by_name, confirm, query_value, space_target, text, SpaceTarget};
use crate::wf::client::Client;
use crate::wf::output::table;
use crate::wf::Error;

/// A route as the commands name it: `DOMAIN [--hostname HOST] [--path PATH]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RouteArgs {
    /// The route's domain
    pub domain: String,
    /// Hostname of the route (none for a route on the domain itself)
    #[arg(long = "hostname", short = 'n')]
    pub hostname: Option<String>,
    /// Path of the route, e.g. /api
    #[arg(long)]
    pub path: Option<String>,
}

impl RouteArgs {
    pub(super) fn url(&self) -> String {
        let host = self
            .hostname
            .as_deref()
            .map(|h| format!("{h}."))
            .unwrap_or_default();
        format!(
            "{host}{}{}",
            self.domain,
            self.path.as_deref().unwrap_or_default()
        )
    }
}

pub(super) fn find_domain(client: &mut Client, name: &str) -> Result<Value, Error> {
    let domains = client.list(&format!("/v3/domains?names={}", query_value(name)))?;
    domains
        .into_iter()
        .find(|d| text(d, "name") == name)
        .ok_or_else(|| Error::Failed(format!("Domain '{name}' not found.")))
}

/// The route `args` names, if it exists.
pub(super) fn find_route(
    client: &mut Client,
    domain: &Value,
    args: &RouteArgs,
) -> Result<Option<Value>, Error> {
    let host = args.hostname.clone().unwrap_or_default();
    let path = args.path.clone().unwrap_or_default();
    // An empty `paths=` would match no path at all: the path is compared here.
    let found = client.list(&format!(
        "/v3/routes?domain_guids={}&hosts={}",
        query_value(text(domain, "guid")),
        query_value(&host)
    ))?;
    Ok(found
        .into_iter()
        .find(|r| text(r, "host") == host && text(r, "path") == path))
}

fn create(
    client: &mut Client,
    target: &SpaceTarget,
    domain: &Value,
    args: &RouteArgs,
) -> Result<Value, Error> {
    let mut body = json!({
        "host": args.hostname.clone().unwrap_or_default(),
        "relationships": {
            "domain": {"data": {"guid": text(domain, "guid")}},
            "space": {"data": {"guid": target.space.guid}},
        },
    });
    if let Some(path) = &args.path {
        body["path"] = json!(path);
    }
    Ok(client.post("/v3/routes", &body)?)
}

/// `wf create-route DOMAIN [--hostname HOST] [--path PATH]` in the targeted space.
pub fn create_route(client: &mut Client, args: &RouteArgs) -> Result<(), Error> {
    let target = space_target(client)?;
    let url = args.url();
    println!("Creating route {url} for {}...", target.describe());
    let domain = find_domain(client, &args.domain)?;
    if find_route(client, &domain, args)?.is_some() {
        println!("Route {url} already exists.");
        println!("OK");
        return Ok(());
    }
    create(client, &target, &domain, args)?;
    println!("Route {url} has been created.");
    println!("OK");
    Ok(())
}

/// `wf delete-route DOMAIN [--hostname HOST] [--path PATH] [-f]`.
pub fn delete_route(client: &mut Client, args: &RouteArgs, force: bool) -> Result<(), Error> {
    space_target(client)?;
    let url = args.url();
    if !force && !confirm(&format!("Really delete the route {url}?")) {
        return Ok(());
    }
    println!("Deleting route {url}...");
    let domain = find_domain(client, &args.domain)?;
    match find_route(client, &domain, args)? {
        Some(route) => client.delete(&format!("/v3/routes/{}", text(&route, "guid")))?,
        None => println!(
            "Unable to delete. Route with domain '{}' not found.",
            args.domain
        ),
    }
    println!("OK");
    Ok(())
}

/// `wf map-route APP DOMAIN [--hostname HOST] [--path PATH]`: creates the route in the
/// targeted space when it does not exist.
pub fn map_route(client: &mut Client, app: &str, args: &RouteArgs) -> Result<(), Error> {
    let target = space_target(client)?;
    let url = args.url();
    println!(
        "Mapping route {url} to app {app} in {}...",
        target.describe()
    );
    let app = app_by_name(client, &target, app)?;
    let domain = find_domain(client, &args.domain)?;
    let route = match find_route(client, &domain, args)? {
        Some(route) => route,
        None => {
            println!("Creating route {url}...");
            create(client, &target, &domain, args)?
        }
    };
    client.post(
        &format!("/v3/routes/{}/destinations", text(&route, "guid")),
        &json!({"destinations": [{"app": {"guid": text(&app, "guid")}}]}),
    )?;
    println!("OK");
    Ok(())
}

/// `wf unmap-route APP DOMAIN [--hostname HOST] [--path PATH]`.
pub fn unmap_route(client: &mut Client, app: &str, args: &RouteArgs) -> Result<(), Error> {
    let target = space_target(client)?;
    let url = args.url();
    println!(
        "Removing route {url} from app {app} in {}...",
        target.describe()
    );
    let app = app_by_name(client, &target, app)?;
    let domain = find_domain(client, &args.domain)?;
    let route = find_route(client, &domain, args)?.ok_or_else(|| {
        Error::Failed(format!(
            "Route with host '{}', domain '{}' and path '{}' not found.",
            args.hostname.as_deref().unwrap_or_default(),
            args.domain,
            args.path.as_deref().unwrap_or_default()
        ))
    })?;
    let route_guid = text(&route, "guid").to_string();
    let destinations = client.get(&format!("/v3/routes/{route_guid}/destinations"))?;
    let mine: Vec<String> = destinations["destinations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["app"]["guid"].as_str() == Some(text(&app, "guid")))
        .map(|d| text(d, "guid").to_string())
        .collect();
    if mine.is_empty() {
        println!("Route to be unmapped is not currently mapped to the application.");
    }
    for guid in mine {
        client.delete(&format!("/v3/routes/{route_guid}/destinations/{guid}"))?;
    }
    println!("OK");
    Ok(())
}

/// `wf create-private-domain ORG DOMAIN` (org managers) or, without an org,
/// `wf create-shared-domain DOMAIN` (admins).
pub fn create_domain(client: &mut Client, org: Option<&str>, domain: &str) -> Result<(), Error> {
    client.require_login()?;
    let mut body = json!({ "name": domain });
    match org {
        Some(org) => {
            println!(
                "Creating private domain {domain} for org {org} as {}...",
                client.user_name()
            );
            let found = super::session::find_named(client, "/v3/organizations", &[], org)?
                .ok_or_else(|| Error::Failed(format!("Organization '{org}' not found.")))?;
            body["relationships"] =
                json!({"organization": {"data": {"guid": text(&found, "guid")}}});
        }
        None => println!(
            "Creating shared domain {domain} as {}...",
            client.user_name()
        ),
    }
    client.post("/v3/domains", &body)?;
    println!("OK");
    Ok(())
}

/// `wf delete-private-domain DOMAIN` / `wf delete-shared-domain DOMAIN` (`-f`): the
/// domain and its routes.
pub fn delete_domain(client: &mut Client, domain: &str, force: bool) -> Result<(), Error> {
    client.require_login()?;
    if !force
        && !confirm(&format!(
            "Really delete the domain {domain} and all its routes?"
        ))
    {
        return Ok(());
    }
    println!("Deleting domain {domain} as {}...", client.user_name());
    let found = find_domain(client, domain)?;
    client.delete(&format!("/v3/domains/{}", text(&found, "guid")))?;
    println!("OK");
    Ok(())
}

/// `wf domains`: the domains the targeted org may use.
pub fn domains(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    let org = client.config().org.clone().ok_or_else(|| {
        Error::Failed("No org targeted, use 'wf target -o ORG' to target an org.".into())
    })?;
    println!(
        "Getting domains in org {} as {}...\n",
        org.name,
        client.user_name()
    );
    let domains = client.list("/v3/domains")?;
    if domains.is_empty() {
        println!("No domains found.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = domains
        .iter()
        .map(|d| {
            let private = !d["relationships"]["organization"]["data"].is_null();
            vec![
                text(d, "name").to_string(),
                if private { "private" } else { "shared" }.to_string(),
                if d["internal"].as_bool() == Some(true) {
                    "true"
                } else {
                    ""
                }
                .to_string(),
                d["supported_protocols"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["name", "availability", "internal", "protocols"], &rows)
    );
    Ok(())
}

pub fn routes(client: &mut Client) -> Result<(), Error> {
    let target = space_target(client)?;
    println!("Getting routes for {}...\n", target.describe());
    let space = query_value(&target.space.guid);
    let routes = client.list(&format!("/v3/routes?space_guids={space}"))?;
    if routes.is_empty() {
        println!("No routes found.");
        return Ok(());
    }
    let domains: HashMap<String, String> = client
        .list("/v3/domains")?
        .iter()
        .map(|d| (text(d, "guid").to_string(), text(d, "name").to_string()))
        .collect();
    let apps: HashMap<String, String> = client
        .list(&format!("/v3/apps?space_guids={space}"))?
        .iter()
        .map(|a| (text(a, "guid").to_string(), text(a, "name").to_string()))
        .collect();
    let instances: HashMap<String, String> = client
        .list(&format!("/v3/service_instances?space_guids={space}"))?
        .iter()
        .map(|i| (text(i, "guid").to_string(), text(i, "name").to_string()))
        .collect();
    let route_guids: Vec<&str> = routes.iter().map(|r| text(r, "guid")).collect();
    let route_services: HashMap<String, String> = client
        .list(&format!(
            "/v3/service_route_bindings?route_guids={}",
            route_guids.join(",")
        ))?
        .iter()
        .map(|b| {
            let data = &b["relationships"];
            let instance = text(&data["service_instance"]["data"], "guid");
            (
                text(&data["route"]["data"], "guid").to_string(),
                instances.get(instance).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let domain_guid = r["relationships"]["domain"]["data"]["guid"]
                .as_str()
                .unwrap_or_default();
            let mut app_names: Vec<String> = r["destinations"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .filter_map(|d| d["app"]["guid"].as_str())
                        .map(|g| apps.get(g).cloned().unwrap_or_else(|| g.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            app_names.dedup();
            vec![
                target.space.name.clone(),
                text(r, "host").to_string(),
                domains.get(domain_guid).cloned().unwrap_or_default(),
                r["port"]
                    .as_u64()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                text(r, "path").to_string(),
                text(r, "protocol").to_string(),
                app_names.join(", "),
                route_services
                    .get(text(r, "guid"))
                    .cloned()
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "space",
                "host",
                "domain",
                "port",
                "path",
                "protocol",
                "apps",
                "service instance"
            ],
            &rows
        )
    );
    Ok(())
}
