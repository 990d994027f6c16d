//! `wf routes`: the routes of the targeted space and the apps they lead to.

use std::collections::HashMap;

use super::{query_value, space_target, text};
use crate::wf::client::Client;
use crate::wf::output::table;
use crate::wf::Error;

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
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["space", "host", "domain", "port", "path", "protocol", "apps"],
            &rows
        )
    );
    Ok(())
}
