//! Label commands, with the cf CLI's names and output: `labels`, `set-label` and
//! `unset-label` on apps, spaces, service instances and orgs (by name in the target, as
//! cf finds them), buildpacks, domains, stacks and service brokers. The controller
//! checks keys and values.

use serde_json::{json, Map, Value};

use super::session::find_named;
use super::{app_by_name, space_target, text};
use crate::wf::client::Client;
use crate::wf::output::table;
use crate::wf::Error;

/// The resource types the label commands take, by cf's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Resource {
    App,
    Space,
    Org,
    Buildpack,
    Domain,
    Stack,
    ServiceInstance,
    ServiceBroker,
}

/// A resource found by name: its API path and how progress lines name it.
struct Found {
    path: String,
    described: String,
}

fn find(client: &mut Client, resource: Resource, name: &str) -> Result<Found, Error> {
    let not_found = |what: &str| Error::Failed(format!("{what} '{name}' not found."));
    let (list, what, kind) = match resource {
        Resource::App => {
            let target = space_target(client)?;
            let app = app_by_name(client, &target, name)?;
            return Ok(Found {
                path: format!("/v3/apps/{}", text(&app, "guid")),
                described: format!("app {name} in {}", target.describe()),
            });
        }
        Resource::Space => {
            let target = space_target(client)?;
            let org = [("organization_guids", target.org.guid.as_str())];
            let space =
                find_named(client, "/v3/spaces", &org, name)?.ok_or_else(|| not_found("Space"))?;
            return Ok(Found {
                path: format!("/v3/spaces/{}", text(&space, "guid")),
                described: format!("space {name} in org {} as {}", target.org.name, target.user),
            });
        }
        Resource::ServiceInstance => {
            let target = space_target(client)?;
            let space = [("space_guids", target.space.guid.as_str())];
            let instance = find_named(client, "/v3/service_instances", &space, name)?
                .ok_or_else(|| not_found("Service instance"))?;
            return Ok(Found {
                path: format!("/v3/service_instances/{}", text(&instance, "guid")),
                described: format!("service-instance {name} in {}", target.describe()),
            });
        }
        Resource::Org => ("/v3/organizations", "Organization", "org"),
        Resource::Buildpack => ("/v3/buildpacks", "Buildpack", "buildpack"),
        Resource::Domain => ("/v3/domains", "Domain", "domain"),
        Resource::Stack => ("/v3/stacks", "Stack", "stack"),
        Resource::ServiceBroker => ("/v3/service_brokers", "Service broker", "service-broker"),
    };
    client.require_login()?;
    let found = find_named(client, list, &[], name)?.ok_or_else(|| not_found(what))?;
    Ok(Found {
        path: format!("{list}/{}", text(&found, "guid")),
        described: format!("{kind} {name} as {}", client.user_name()),
    })
}

/// `wf labels RESOURCE NAME`.
pub fn labels(client: &mut Client, resource: Resource, name: &str) -> Result<(), Error> {
    let found = find(client, resource, name)?;
    println!("Getting labels for {}...\n", found.described);
    let shown = client.get(&found.path)?;
    let labels = shown["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if labels.is_empty() {
        println!("No labels found.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = labels
        .iter()
        .map(|(k, v)| vec![k.clone(), v.as_str().unwrap_or_default().to_string()])
        .collect();
    print!("{}", table(&["key", "value"], &rows));
    Ok(())
}

/// The labels of `KEY=VALUE` arguments.
fn parse_pairs(pairs: &[String]) -> Result<Map<String, Value>, Error> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => Ok((key.to_string(), Value::String(value.to_string()))),
            None => Err(Error::Failed(format!(
                "Metadata error: no value provided for label '{pair}'"
            ))),
        })
        .collect()
}

/// `wf set-label RESOURCE NAME KEY=VALUE...`.
pub fn set_label(
    client: &mut Client,
    resource: Resource,
    name: &str,
    pairs: &[String],
) -> Result<(), Error> {
    let labels = parse_pairs(pairs)?;
    let found = find(client, resource, name)?;
    println!("Setting label(s) for {}...", found.described);
    client.patch(&found.path, &json!({"metadata": {"labels": labels}}))?;
    println!("OK");
    Ok(())
}

/// `wf unset-label RESOURCE NAME KEY...`.
pub fn unset_label(
    client: &mut Client,
    resource: Resource,
    name: &str,
    keys: &[String],
) -> Result<(), Error> {
    let found = find(client, resource, name)?;
    println!("Removing label(s) for {}...", found.described);
    let labels: Map<String, Value> = keys.iter().map(|k| (k.clone(), Value::Null)).collect();
    client.patch(&found.path, &json!({"metadata": {"labels": labels}}))?;
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_pairs_need_a_value() {
        let labels = parse_pairs(&["env=prod".into(), "empty=".into(), "a=b=c".into()]).unwrap();
        assert_eq!(
            Value::Object(labels),
            json!({"env": "prod", "empty": "", "a": "b=c"})
        );
        let err = parse_pairs(&["test-label".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Metadata error: no value provided for label 'test-label'"
        );
    }
}
