//! Managed services: service brokers (`create-service-broker`, `service-brokers`,
//! `update-service-broker`, `delete-service-broker`), plan access
//! (`enable-service-access`, `disable-service-access`), `marketplace`, `create-service`,
//! `update-service` and service keys (`create-service-key`, `service-key`, `delete-service-key`), with
//! the cf CLI's (v7+) arguments and messages.

use serde_json::{json, Value};

use super::{confirm, query_value, space_target, text};
use crate::wf::client::Client;
use crate::wf::output::table;
use crate::wf::Error;

fn broker_by_name(client: &mut Client, name: &str) -> Result<Value, Error> {
    client
        .first(&format!("/v3/service_brokers?names={}", query_value(name)))?
        .ok_or_else(|| Error::Failed(format!("Service broker '{name}' not found")))
}

fn authentication(user: &str, password: &str) -> Value {
    json!({"type": "basic", "credentials": {"username": user, "password": password}})
}

/// `wf create-service-broker NAME USER PASS URL [--space-scoped]`.
pub fn create_broker(
    client: &mut Client,
    name: &str,
    user: &str,
    password: &str,
    url: &str,
    space_scoped: bool,
) -> Result<(), Error> {
    let mut body =
        json!({"name": name, "url": url, "authentication": authentication(user, password)});
    if space_scoped {
        let target = space_target(client)?;
        println!(
            "Creating service broker {name} in {} as {}...",
            target.describe(),
            client.user_name()
        );
        body["relationships"] = json!({"space": {"data": {"guid": target.space.guid}}});
    } else {
        println!(
            "Creating service broker {name} as {}...",
            client.user_name()
        );
    }
    client.post("/v3/service_brokers", &body)?;
    println!("OK");
    Ok(())
}

/// `wf update-service-broker NAME USER PASS URL`.
pub fn update_broker(
    client: &mut Client,
    name: &str,
    user: &str,
    password: &str,
    url: &str,
) -> Result<(), Error> {
    println!(
        "Updating service broker {name} as {}...",
        client.user_name()
    );
    let broker = broker_by_name(client, name)?;
    let resp = client.call(
        reqwest::Method::PATCH,
        &format!("/v3/service_brokers/{}", text(&broker, "guid")),
        Some(&json!({"url": url, "authentication": authentication(user, password)})),
    )?;
    if let Some(job) = resp.location.filter(|_| resp.status == 202) {
        client.wait_for_job(&job)?;
    }
    println!("OK");
    Ok(())
}

/// `wf service-brokers`.
pub fn brokers(client: &mut Client) -> Result<(), Error> {
    println!("Getting service brokers as {}...\n", client.user_name());
    let brokers = client.list("/v3/service_brokers?order_by=name")?;
    if brokers.is_empty() {
        println!("No service brokers found");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = brokers
        .iter()
        .map(|b| vec![text(b, "name").to_string(), text(b, "url").to_string()])
        .collect();
    print!("{}", table(&["name", "url"], &rows));
    Ok(())
}

/// `wf delete-service-broker NAME [-f]`.
pub fn delete_broker(client: &mut Client, name: &str, force: bool) -> Result<(), Error> {
    if !force && !confirm(&format!("Really delete the service broker {name}?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!(
        "Deleting service broker {name} as {}...",
        client.user_name()
    );
    match client.first(&format!("/v3/service_brokers?names={}", query_value(name)))? {
        Some(broker) => client.delete(&format!("/v3/service_brokers/{}", text(&broker, "guid")))?,
        None => println!("Service broker '{name}' does not exist."),
    }
    println!("OK");
    Ok(())
}

/// The plans of an offering (all, or the one named).
fn plans(client: &mut Client, offering: &str, plan: Option<&str>) -> Result<Vec<Value>, Error> {
    let mut path = format!(
        "/v3/service_plans?service_offering_names={}",
        query_value(offering)
    );
    if let Some(plan) = plan {
        path.push_str(&format!("&names={}", query_value(plan)));
    }
    let found = client.list(&path)?;
    if found.is_empty() {
        return Err(Error::Failed(match plan {
            Some(plan) => format!("The plan {plan} could not be found for service {offering}"),
            None => format!("Service offering '{offering}' not found"),
        }));
    }
    Ok(found)
}

/// `wf enable-service-access OFFERING [-p PLAN] [-o ORG]`: public, or visible in ORG.
pub fn enable_access(
    client: &mut Client,
    offering: &str,
    plan: Option<&str>,
    org: Option<&str>,
) -> Result<(), Error> {
    println!(
        "Enabling access to service {offering} as {}...",
        client.user_name()
    );
    let org_guid = match org {
        Some(org) => Some(
            client
                .first(&format!("/v3/organizations?names={}", query_value(org)))?
                .map(|o| text(&o, "guid").to_string())
                .ok_or_else(|| Error::Failed(format!("Organization '{org}' not found")))?,
        ),
        None => None,
    };
    for plan in plans(client, offering, plan)? {
        let path = format!("/v3/service_plans/{}/visibility", text(&plan, "guid"));
        match &org_guid {
            Some(org) if text(&plan, "visibility_type") != "public" => {
                client.post(
                    &path,
                    &json!({"type": "organization", "organizations": [{"guid": org}]}),
                )?;
            }
            Some(_) => {}
            None => {
                client.patch(&path, &json!({"type": "public"}))?;
            }
        }
    }
    println!("OK");
    Ok(())
}

/// `wf disable-service-access OFFERING [-p PLAN] [-o ORG]`: admin-only, or not in ORG.
pub fn disable_access(
    client: &mut Client,
    offering: &str,
    plan: Option<&str>,
    org: Option<&str>,
) -> Result<(), Error> {
    println!(
        "Disabling access to service {offering} as {}...",
        client.user_name()
    );
    let org_guid = match org {
        Some(org) => Some(
            client
                .first(&format!("/v3/organizations?names={}", query_value(org)))?
                .map(|o| text(&o, "guid").to_string())
                .ok_or_else(|| Error::Failed(format!("Organization '{org}' not found")))?,
        ),
        None => None,
    };
    for plan in plans(client, offering, plan)? {
        let path = format!("/v3/service_plans/{}/visibility", text(&plan, "guid"));
        match &org_guid {
            Some(org) if text(&plan, "visibility_type") == "organization" => {
                client.delete(&format!("{path}/{org}"))?;
            }
            Some(_) => {}
            None => {
                client.patch(&path, &json!({"type": "admin"}))?;
            }
        }
    }
    println!("OK");
    Ok(())
}

/// `wf marketplace [-e OFFERING]`.
pub fn marketplace(client: &mut Client, offering: Option<&str>) -> Result<(), Error> {
    if let Some(offering) = offering {
        println!(
            "Getting service plan information for service offering {offering} as {}...\n",
            client.user_name()
        );
        let rows: Vec<Vec<String>> = plans(client, offering, None)?
            .iter()
            .map(|p| {
                vec![
                    text(p, "name").to_string(),
                    text(p, "description").to_string(),
                    if p["free"] == json!(true) {
                        "free"
                    } else {
                        "paid"
                    }
                    .to_string(),
                ]
            })
            .collect();
        print!("{}", table(&["plan", "description", "free or paid"], &rows));
        return Ok(());
    }
    println!(
        "Getting all service offerings as {}...\n",
        client.user_name()
    );
    let offerings = client.list("/v3/service_offerings?order_by=name")?;
    if offerings.is_empty() {
        println!("No service offerings found.");
        return Ok(());
    }
    let mut rows = Vec::new();
    for offering in &offerings {
        let plans = client.list(&format!(
            "/v3/service_plans?service_offering_guids={}",
            text(offering, "guid")
        ))?;
        let names: Vec<&str> = plans.iter().map(|p| text(p, "name")).collect();
        let broker = client.get(&format!(
            "/v3/service_brokers/{}",
            offering["relationships"]["service_broker"]["data"]["guid"]
                .as_str()
                .unwrap_or_default()
        ))?;
        rows.push(vec![
            text(offering, "name").to_string(),
            names.join(", "),
            text(offering, "description").to_string(),
            text(&broker, "name").to_string(),
        ]);
    }
    print!(
        "{}",
        table(&["offering", "plans", "description", "broker"], &rows)
    );
    println!("\nTIP: Use 'wf marketplace -e SERVICE_OFFERING' to view descriptions of individual plans of a given service offering.");
    Ok(())
}

/// `-c`: inline JSON or a file holding it.
pub(super) fn parameters(arg: Option<&str>) -> Result<Option<Value>, Error> {
    let Some(arg) = arg else {
        return Ok(None);
    };
    let text = if std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg)
            .map_err(|e| Error::Failed(format!("Cannot read {arg}: {e}")))?
    } else {
        arg.to_string()
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Failed(format!("Invalid configuration provided for -c flag: {e}")))?;
    Ok(Some(value))
}

/// `wf create-service OFFERING PLAN NAME [-c JSON] [-t TAGS] [--wait]`.
pub fn create_service(
    client: &mut Client,
    offering: &str,
    plan: &str,
    name: &str,
    config: Option<&str>,
    tags: Option<&str>,
    wait: bool,
) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Creating service instance {name} in {} as {}...",
        target.describe(),
        client.user_name()
    );
    let plan = plans(client, offering, Some(plan))?.remove(0);
    let mut body = json!({
        "type": "managed",
        "name": name,
        "relationships": {
            "space": {"data": {"guid": target.space.guid}},
            "service_plan": {"data": {"guid": text(&plan, "guid")}},
        },
    });
    if let Some(parameters) = parameters(config)? {
        body["parameters"] = parameters;
    }
    if let Some(tags) = tags {
        let tags: Vec<&str> = tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        body["tags"] = json!(tags);
    }
    let resp = client.call(reqwest::Method::POST, "/v3/service_instances", Some(&body))?;
    match resp.location.filter(|_| wait) {
        Some(job) => {
            client.wait_for_job(&job)?;
            println!("\nService instance {name} created.");
        }
        None => println!("\nCreate in progress. Use 'wf services' or 'wf service {name}' to check operation status."),
    }
    println!("OK");
    Ok(())
}

/// `wf update-service NAME [-c JSON] [-t TAGS] [--wait]`: new parameters go to the
/// broker.
pub fn update_service(
    client: &mut Client,
    name: &str,
    config: Option<&str>,
    tags: Option<&str>,
    wait: bool,
) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Updating service instance {name} in {} as {}...",
        target.describe(),
        client.user_name()
    );
    let instance = client
        .list(&format!(
            "/v3/service_instances?names={}&space_guids={}",
            query_value(name),
            target.space.guid
        ))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Failed(format!("Service instance '{name}' not found")))?;
    let mut body = json!({});
    if let Some(parameters) = parameters(config)? {
        body["parameters"] = parameters;
    }
    if let Some(tags) = tags {
        let tags: Vec<&str> = tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        body["tags"] = json!(tags);
    }
    if body == json!({}) {
        println!("No flags specified. No changes were made.");
        println!("OK");
        return Ok(());
    }
    let resp = client.call(
        reqwest::Method::PATCH,
        &format!("/v3/service_instances/{}", text(&instance, "guid")),
        Some(&body),
    )?;
    match resp.location.filter(|_| resp.status == 202) {
        Some(job) if wait => {
            client.wait_for_job(&job)?;
            println!("\nUpdate of service instance {name} completed.");
        }
        Some(_) => println!(
            "\nUpdate in progress. Use 'wf services' or 'wf service {name}' to check operation status."
        ),
        None => {}
    }
    println!("OK");
    Ok(())
}

fn key_by_name(client: &mut Client, instance: &str, key: &str) -> Result<Option<Value>, Error> {
    let target = space_target(client)?;
    let instance = client
        .list(&format!(
            "/v3/service_instances?names={}&space_guids={}",
            query_value(instance),
            target.space.guid
        ))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Failed(format!("Service instance '{instance}' not found")))?;
    Ok(client.first(&format!(
        "/v3/service_credential_bindings?type=key&names={}&service_instance_guids={}",
        query_value(key),
        text(&instance, "guid")
    ))?)
}

/// `wf create-service-key INSTANCE KEY [-c JSON]`.
pub fn create_key(
    client: &mut Client,
    instance: &str,
    key: &str,
    config: Option<&str>,
) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Creating service key {key} for service instance {instance} as {}...",
        client.user_name()
    );
    let found = client
        .list(&format!(
            "/v3/service_instances?names={}&space_guids={}",
            query_value(instance),
            target.space.guid
        ))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Failed(format!("Service instance '{instance}' not found")))?;
    let mut body = json!({
        "type": "key",
        "name": key,
        "relationships": {"service_instance": {"data": {"guid": text(&found, "guid")}}},
    });
    if let Some(parameters) = parameters(config)? {
        body["parameters"] = parameters;
    }
    client.post("/v3/service_credential_bindings", &body)?;
    println!("OK");
    Ok(())
}

/// `wf service-key INSTANCE KEY`: the key's credentials as JSON.
pub fn show_key(client: &mut Client, instance: &str, key: &str) -> Result<(), Error> {
    println!(
        "Getting key {key} for service instance {instance} as {}...\n",
        client.user_name()
    );
    let found = key_by_name(client, instance, key)?.ok_or_else(|| {
        Error::Failed(format!(
            "No service key {key} found for service instance {instance}"
        ))
    })?;
    let details = client.get(&format!(
        "/v3/service_credential_bindings/{}/details",
        text(&found, "guid")
    ))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&details["credentials"]).unwrap_or_default()
    );
    Ok(())
}

/// `wf delete-service-key INSTANCE KEY [-f]`.
pub fn delete_key(
    client: &mut Client,
    instance: &str,
    key: &str,
    force: bool,
) -> Result<(), Error> {
    if !force && !confirm(&format!("Really delete the service key {key}?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!(
        "Deleting key {key} for service instance {instance} as {}...",
        client.user_name()
    );
    match key_by_name(client, instance, key)? {
        Some(found) => client.delete(&format!(
            "/v3/service_credential_bindings/{}",
            text(&found, "guid")
        ))?,
        None => println!("Service key {key} does not exist for service instance {instance}."),
    }
    println!("OK");
    Ok(())
}
