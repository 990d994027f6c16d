//! Service instance commands: `create-user-provided-service` (`cups`),
//! `update-user-provided-service` (`uups`), `services`, `service`, `bind-service`,
//! `unbind-service` and `delete-service` (of user-provided and managed instances; the
//! broker's work is waited for), and `bind-route-service` and `unbind-route-service`
//! (route services; `--wait` waits for a managed instance's broker), with the cf
//! CLI's (v7+) arguments and messages.
//! Brokers, the marketplace and `create-service` are `marketplace`'s.

use serde_json::{json, Map, Value};

use super::routes::{find_domain, find_route, RouteArgs};
use super::{app_by_name, confirm, query_value, space_target, text, SpaceTarget};
use crate::wf::client::Client;
use crate::wf::output::{key_values, table};
use crate::wf::Error;

/// The options of `cups` and `uups`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UserProvidedArgs {
    /// Name of the service instance
    pub name: String,
    /// Credentials: a JSON object, a file holding one, or comma-separated names to be
    /// prompted for
    #[arg(short = 'p')]
    pub credentials: Option<String>,
    /// URL to which logs for bound applications will be streamed
    #[arg(short = 'l')]
    pub syslog_drain_url: Option<String>,
    /// URL to which requests for bound routes will be forwarded (https)
    #[arg(short = 'r')]
    pub route_service_url: Option<String>,
    /// User provided tags, comma separated
    #[arg(short = 't')]
    pub tags: Option<String>,
}

impl UserProvidedArgs {
    /// The request fields these options set.
    fn fields(&self) -> Result<Map<String, Value>, Error> {
        let mut fields = Map::new();
        if let Some(credentials) = &self.credentials {
            fields.insert("credentials".into(), parse_credentials(credentials)?);
        }
        if let Some(url) = &self.syslog_drain_url {
            fields.insert("syslog_drain_url".into(), json!(url));
        }
        if let Some(url) = &self.route_service_url {
            fields.insert("route_service_url".into(), json!(url));
        }
        if let Some(tags) = &self.tags {
            let tags: Vec<&str> = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            fields.insert("tags".into(), json!(tags));
        }
        Ok(fields)
    }
}

/// `-p`: inline JSON, a JSON file, or names to prompt for (as the cf CLI does).
fn parse_credentials(arg: &str) -> Result<Value, Error> {
    let trimmed = arg.trim();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| {
            Error::Failed(format!("Invalid configuration provided for -p flag: {e}"))
        });
    }
    let path = std::path::Path::new(trimmed);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Failed(format!("Cannot read {}: {e}", path.display())))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::Failed(format!("Invalid configuration provided for -p flag: {e}"))
        })?;
        return if value.is_object() {
            Ok(value)
        } else {
            Err(Error::Failed(
                "Invalid configuration provided for -p flag: the JSON must be an object".into(),
            ))
        };
    }
    let mut credentials = Map::new();
    for name in trimmed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let value = super::session::prompt(name, false)?;
        credentials.insert(name.to_string(), json!(value));
    }
    Ok(Value::Object(credentials))
}

fn find_instance(
    client: &mut Client,
    target: &SpaceTarget,
    name: &str,
) -> Result<Option<Value>, Error> {
    let found = client.list(&format!(
        "/v3/service_instances?names={}&space_guids={}",
        query_value(name),
        target.space.guid
    ))?;
    Ok(found.into_iter().find(|i| text(i, "name") == name))
}

fn instance_by_name(client: &mut Client, target: &SpaceTarget, name: &str) -> Result<Value, Error> {
    find_instance(client, target, name)?
        .ok_or_else(|| Error::Failed(format!("Service instance '{name}' not found")))
}

/// `wf cups NAME [-p CREDENTIALS] [-l URL] [-r URL] [-t TAGS]`.
pub fn create_user_provided(client: &mut Client, args: &UserProvidedArgs) -> Result<(), Error> {
    let target = space_target(client)?;
    let fields = args.fields()?;
    println!(
        "Creating user provided service {} in {}...",
        args.name,
        target.describe()
    );
    let mut body = json!({
        "type": "user-provided",
        "name": args.name,
        "relationships": {"space": {"data": {"guid": target.space.guid}}},
    });
    body.as_object_mut().expect("an object").extend(fields);
    client.post("/v3/service_instances", &body)?;
    println!("OK");
    Ok(())
}

/// `wf uups NAME [-p CREDENTIALS] [-l URL] [-r URL] [-t TAGS]`.
pub fn update_user_provided(client: &mut Client, args: &UserProvidedArgs) -> Result<(), Error> {
    let target = space_target(client)?;
    let fields = args.fields()?;
    println!(
        "Updating user provided service {} in {}...",
        args.name,
        target.describe()
    );
    let instance = instance_by_name(client, &target, &args.name)?;
    if fields.is_empty() {
        println!("No flags specified. No changes were made.");
        println!("OK");
        return Ok(());
    }
    client.patch(
        &format!("/v3/service_instances/{}", text(&instance, "guid")),
        &Value::Object(fields),
    )?;
    println!("OK");
    println!(
        "TIP: Use 'wf restage' for any bound apps to ensure your env variable changes take effect"
    );
    Ok(())
}

/// The names of the apps bound to each instance guid.
fn bound_apps(client: &mut Client, instances: &[Value]) -> Result<Vec<Vec<String>>, Error> {
    let mut names = Vec::new();
    for instance in instances {
        let bindings = client.list(&format!(
            "/v3/service_credential_bindings?service_instance_guids={}&type=app",
            text(instance, "guid")
        ))?;
        let mut apps = Vec::new();
        for binding in bindings {
            if let Some(app) = binding["relationships"]["app"]["data"]["guid"].as_str() {
                if let Some(app) = client.get_optional(&format!("/v3/apps/{app}"))? {
                    apps.push(text(&app, "name").to_string());
                }
            }
        }
        apps.sort();
        names.push(apps);
    }
    Ok(names)
}

/// The offering and plan names of an instance (`user-provided` and none for those).
fn offering_and_plan(client: &mut Client, instance: &Value) -> Result<(String, String), Error> {
    let Some(plan) = instance["relationships"]["service_plan"]["data"]["guid"].as_str() else {
        return Ok((text(instance, "type").to_string(), String::new()));
    };
    let Some(plan) = client.get_optional(&format!("/v3/service_plans/{plan}"))? else {
        return Ok((String::new(), String::new()));
    };
    let offering = plan["relationships"]["service_offering"]["data"]["guid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let offering = client
        .get_optional(&format!("/v3/service_offerings/{offering}"))?
        .map(|o| text(&o, "name").to_string())
        .unwrap_or_default();
    Ok((offering, text(&plan, "name").to_string()))
}

fn last_operation(instance: &Value) -> String {
    let op = &instance["last_operation"];
    format!("{} {}", text(op, "type"), text(op, "state"))
        .trim()
        .to_string()
}

/// `wf services`.
pub fn services(client: &mut Client) -> Result<(), Error> {
    let target = space_target(client)?;
    println!("Getting service instances in {}...\n", target.describe());
    let instances = client.list(&format!(
        "/v3/service_instances?space_guids={}&order_by=name",
        target.space.guid
    ))?;
    if instances.is_empty() {
        println!("No service instances found.");
        return Ok(());
    }
    let apps = bound_apps(client, &instances)?;
    let mut rows = Vec::new();
    for (instance, apps) in instances.iter().zip(apps) {
        let (offering, plan) = offering_and_plan(client, instance)?;
        rows.push(vec![
            text(instance, "name").to_string(),
            offering,
            plan,
            apps.join(", "),
            last_operation(instance),
        ]);
    }
    print!(
        "{}",
        table(
            &["name", "offering", "plan", "bound apps", "last operation"],
            &rows
        )
    );
    Ok(())
}

/// `wf service NAME`.
pub fn service(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Showing info of service {name} in {}...\n",
        target.describe()
    );
    let instance = instance_by_name(client, &target, name)?;
    let apps = bound_apps(client, std::slice::from_ref(&instance))?.remove(0);
    let routes = bound_routes(client, &instance)?;
    let tags: Vec<&str> = instance["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if text(&instance, "type") == "managed" {
        let (offering, plan) = offering_and_plan(client, &instance)?;
        let op = &instance["last_operation"];
        print!(
            "{}",
            key_values(&[
                ("name", name.to_string()),
                ("guid", text(&instance, "guid").to_string()),
                ("type", "managed".to_string()),
                ("offering", offering),
                ("plan", plan),
                ("tags", tags.join(", ")),
                (
                    "dashboard url",
                    text(&instance, "dashboard_url").to_string()
                ),
                ("bound apps", apps.join(", ")),
                ("bound routes", routes.join(", ")),
                ("last operation", last_operation(&instance)),
                ("description", text(op, "description").to_string()),
            ])
        );
        return Ok(());
    }
    print!(
        "{}",
        key_values(&[
            ("name", name.to_string()),
            ("guid", text(&instance, "guid").to_string()),
            ("type", text(&instance, "type").to_string()),
            ("tags", tags.join(", ")),
            (
                "route service url",
                text(&instance, "route_service_url").to_string()
            ),
            (
                "syslog drain url",
                text(&instance, "syslog_drain_url").to_string()
            ),
            ("bound apps", apps.join(", ")),
            ("bound routes", routes.join(", ")),
        ])
    );
    Ok(())
}

/// The URLs of the routes bound to an instance.
fn bound_routes(client: &mut Client, instance: &Value) -> Result<Vec<String>, Error> {
    let bindings = client.list(&format!(
        "/v3/service_route_bindings?service_instance_guids={}",
        text(instance, "guid")
    ))?;
    let mut urls = Vec::new();
    for binding in bindings {
        let route = text(&binding["relationships"]["route"]["data"], "guid");
        if let Some(route) = client.get_optional(&format!("/v3/routes/{route}"))? {
            urls.push(text(&route, "url").to_string());
        }
    }
    urls.sort();
    Ok(urls)
}

/// The route `args` names and the route binding between it and `instance`, if any.
fn route_binding(
    client: &mut Client,
    route: &RouteArgs,
    instance: &Value,
) -> Result<(Value, Option<Value>), Error> {
    let domain = find_domain(client, &route.domain)?;
    let found = find_route(client, &domain, route)?.ok_or_else(|| {
        Error::Failed(format!(
            "Route with host '{}', domain '{}' and path '{}' not found.",
            route.hostname.as_deref().unwrap_or_default(),
            route.domain,
            route.path.as_deref().unwrap_or_default()
        ))
    })?;
    let binding = client
        .list(&format!(
            "/v3/service_route_bindings?route_guids={}&service_instance_guids={}",
            text(&found, "guid"),
            text(instance, "guid")
        ))?
        .into_iter()
        .next();
    Ok((found, binding))
}

/// `wf bind-route-service DOMAIN [--hostname H] [--path P] INSTANCE [-c JSON] [--wait]`.
pub fn bind_route_service(
    client: &mut Client,
    route: &RouteArgs,
    instance: &str,
    config: Option<&str>,
    wait: bool,
) -> Result<(), Error> {
    let target = space_target(client)?;
    let url = route.url();
    println!(
        "Binding route {url} to service instance {instance} in {} as {}...",
        target.describe(),
        client.user_name()
    );
    let instance_value = instance_by_name(client, &target, instance)?;
    let (found, existing) = route_binding(client, route, &instance_value)?;
    if existing.is_some() {
        println!("Route {url} is already bound to service instance {instance}.");
        println!("OK");
        return Ok(());
    }
    let mut body = json!({
        "relationships": {
            "route": {"data": {"guid": text(&found, "guid")}},
            "service_instance": {"data": {"guid": text(&instance_value, "guid")}},
        },
    });
    if let Some(parameters) = super::marketplace::parameters(config)? {
        body["parameters"] = parameters;
    }
    let resp = client.call(
        reqwest::Method::POST,
        "/v3/service_route_bindings",
        Some(&body),
    )?;
    match resp.location.filter(|_| resp.status == 202) {
        Some(job) if wait => client.wait_for_job(&job)?,
        Some(_) => println!("Binding in progress."),
        None => {}
    }
    println!("OK");
    Ok(())
}

/// `wf unbind-route-service DOMAIN [--hostname H] [--path P] INSTANCE [-f] [--wait]`.
pub fn unbind_route_service(
    client: &mut Client,
    route: &RouteArgs,
    instance: &str,
    force: bool,
    wait: bool,
) -> Result<(), Error> {
    let target = space_target(client)?;
    let url = route.url();
    if !force
        && !confirm(&format!(
            "Really unbind route {url} from service instance {instance}?"
        ))
    {
        println!("Unbind cancelled");
        return Ok(());
    }
    println!(
        "Unbinding route {url} from service instance {instance} in {} as {}...",
        target.describe(),
        client.user_name()
    );
    let instance_value = instance_by_name(client, &target, instance)?;
    let (_, binding) = route_binding(client, route, &instance_value)?;
    let Some(binding) = binding else {
        println!("Route {url} was not bound to service instance {instance}.");
        println!("OK");
        return Ok(());
    };
    let resp = client.call(
        reqwest::Method::DELETE,
        &format!("/v3/service_route_bindings/{}", text(&binding, "guid")),
        None,
    )?;
    match resp.location.filter(|_| resp.status == 202) {
        Some(job) if wait => client.wait_for_job(&job)?,
        Some(_) => println!("Unbinding in progress."),
        None => {}
    }
    println!("OK");
    Ok(())
}

/// `wf bind-service APP INSTANCE [--binding-name NAME]`.
pub fn bind_service(
    client: &mut Client,
    app: &str,
    instance: &str,
    binding_name: Option<&str>,
) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Binding service instance {instance} to app {app} in {}...",
        target.describe()
    );
    let app_value = app_by_name(client, &target, app)?;
    let instance_value = instance_by_name(client, &target, instance)?;
    let body = json!({
        "type": "app",
        "name": binding_name,
        "relationships": {
            "app": {"data": {"guid": text(&app_value, "guid")}},
            "service_instance": {"data": {"guid": text(&instance_value, "guid")}},
        },
    });
    match client.post("/v3/service_credential_bindings", &body) {
        Ok(_) => {}
        Err(e) if e.to_string().contains("already bound") => {
            println!("App {app} is already bound to service instance {instance}.");
            println!("OK");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    println!("OK\n");
    println!("TIP: Use 'wf restage {app}' to ensure your env variable changes take effect");
    Ok(())
}

/// `wf unbind-service APP INSTANCE`.
pub fn unbind_service(client: &mut Client, app: &str, instance: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Unbinding app {app} from service {instance} in {}...",
        target.describe()
    );
    let app_value = app_by_name(client, &target, app)?;
    let instance_value = instance_by_name(client, &target, instance)?;
    let bindings = client.list(&format!(
        "/v3/service_credential_bindings?app_guids={}&service_instance_guids={}",
        text(&app_value, "guid"),
        text(&instance_value, "guid")
    ))?;
    match bindings.first() {
        Some(binding) => client.delete(&format!(
            "/v3/service_credential_bindings/{}",
            text(binding, "guid")
        ))?,
        None => println!("Binding between {instance} and {app} did not exist"),
    }
    println!("OK");
    Ok(())
}

/// `wf delete-service NAME [-f]`.
pub fn delete_service(client: &mut Client, name: &str, force: bool) -> Result<(), Error> {
    let target = space_target(client)?;
    if !force && !confirm(&format!("Really delete the service instance {name}?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!(
        "Deleting service instance {name} in {}...",
        target.describe()
    );
    match find_instance(client, &target, name)? {
        Some(instance) => {
            client.delete(&format!(
                "/v3/service_instances/{}",
                text(&instance, "guid")
            ))?;
            println!("\nService instance {name} deleted.");
        }
        None => println!("\nService instance {name} did not exist."),
    }
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_inline_or_from_a_file() {
        assert_eq!(
            parse_credentials(r#"{"user":"u","port":5432}"#).unwrap(),
            json!({"user": "u", "port": 5432})
        );
        assert!(parse_credentials("{not json").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.json");
        std::fs::write(&file, r#"{"uri":"postgres://x"}"#).unwrap();
        assert_eq!(
            parse_credentials(file.to_str().unwrap()).unwrap(),
            json!({"uri": "postgres://x"})
        );
        std::fs::write(&file, "[1]").unwrap();
        assert!(parse_credentials(file.to_str().unwrap()).is_err());
    }
}
