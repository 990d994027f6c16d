//! Org and space commands: `create-org`, `orgs`, `delete-org`, `create-space`,
//! `spaces`, `delete-space`.

use serde_json::{json, Value};

use super::session::find_named;
use super::{confirm, query_value, text};
use crate::wf::client::Client;
use crate::wf::config::Target;
use crate::wf::output::table;
use crate::wf::Error;

pub fn create_org(client: &mut Client, name: &str) -> Result<(), Error> {
    client.require_login()?;
    println!("Creating org {name} as {}...", client.user_name());
    if find_named(client, "/v3/organizations", &[], name)?.is_some() {
        println!("Organization '{name}' already exists.");
        println!("OK");
        return Ok(());
    }
    client.post("/v3/organizations", &json!({ "name": name }))?;
    println!("OK\n");
    println!("TIP: Use 'wf target -o \"{name}\"' to target new org");
    Ok(())
}

pub fn orgs(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    println!("Getting orgs as {}...\n", client.user_name());
    let orgs = client.list("/v3/organizations?order_by=name")?;
    if orgs.is_empty() {
        println!("No orgs found.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = orgs
        .iter()
        .map(|o| vec![text(o, "name").to_string()])
        .collect();
    print!("{}", table(&["name"], &rows));
    Ok(())
}

pub fn delete_org(client: &mut Client, name: &str, force: bool) -> Result<(), Error> {
    client.require_login()?;
    if !force && !confirm(&format!("Really delete the org {name}, including its spaces, apps, service instances, routes, private domains and space-scoped service brokers?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!("Deleting org {name} as {}...", client.user_name());
    let Some(org) = find_named(client, "/v3/organizations", &[], name)? else {
        println!("Org '{name}' does not exist.");
        println!("OK");
        return Ok(());
    };
    let guid = text(&org, "guid").to_string();
    client.delete(&format!("/v3/organizations/{guid}"))?;
    if client.config().org.as_ref().is_some_and(|o| o.guid == guid) {
        let config = client.config_mut();
        config.org = None;
        config.space = None;
        client.save_config()?;
    }
    println!("OK");
    Ok(())
}

/// The org named `name`, or the targeted org when `name` is `None`.
fn org_or_target(client: &mut Client, name: Option<String>) -> Result<Target, Error> {
    match name {
        Some(name) => {
            let org = find_named(client, "/v3/organizations", &[], &name)?
                .ok_or_else(|| Error::Failed(format!("Organization '{name}' not found.")))?;
            Ok(Target {
                guid: text(&org, "guid").to_string(),
                name,
            })
        }
        None => client.config().org.clone().ok_or_else(|| {
            Error::Failed("No org targeted, use 'wf target -o ORG' to target an org.".into())
        }),
    }
}

pub fn create_space(client: &mut Client, name: &str, org: Option<String>) -> Result<(), Error> {
    client.require_login()?;
    let org = org_or_target(client, org)?;
    println!(
        "Creating space {name} in org {} as {}...",
        org.name,
        client.user_name()
    );
    let filter = [("organization_guids", org.guid.as_str())];
    if find_named(client, "/v3/spaces", &filter, name)?.is_some() {
        println!("Space '{name}' already exists.");
        println!("OK");
        return Ok(());
    }
    let body = json!({
        "name": name,
        "relationships": {"organization": {"data": {"guid": org.guid}}}
    });
    client.post("/v3/spaces", &body)?;
    println!("OK\n");
    println!(
        "TIP: Use 'wf target -o \"{}\" -s \"{name}\"' to target new space",
        org.name
    );
    Ok(())
}

pub fn spaces(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    let org = org_or_target(client, None)?;
    println!(
        "Getting spaces in org {} as {}...\n",
        org.name,
        client.user_name()
    );
    let spaces: Vec<Value> = client.list(&format!(
        "/v3/spaces?organization_guids={}&order_by=name",
        query_value(&org.guid)
    ))?;
    if spaces.is_empty() {
        println!("No spaces found.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = spaces
        .iter()
        .map(|s| vec![text(s, "name").to_string()])
        .collect();
    print!("{}", table(&["name"], &rows));
    Ok(())
}

pub fn delete_space(
    client: &mut Client,
    name: &str,
    org: Option<String>,
    force: bool,
) -> Result<(), Error> {
    client.require_login()?;
    let org = org_or_target(client, org)?;
    if !force && !confirm(&format!("Really delete the space {name}?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!(
        "Deleting space {name} in org {} as {}...",
        org.name,
        client.user_name()
    );
    let filter = [("organization_guids", org.guid.as_str())];
    let Some(space) = find_named(client, "/v3/spaces", &filter, name)? else {
        println!("Space '{name}' does not exist.");
        println!("OK");
        return Ok(());
    };
    let guid = text(&space, "guid").to_string();
    client.delete(&format!("/v3/spaces/{guid}"))?;
    if client
        .config()
        .space
        .as_ref()
        .is_some_and(|s| s.guid == guid)
    {
        client.config_mut().space = None;
        client.save_config()?;
        println!("TIP: No space targeted, use 'wf target -s' to target a space.");
    }
    println!("OK");
    Ok(())
}
