//! `wf push`: creates the app if needed, maps its default route, uploads the bits,
//! stages them (tracing the staging logs), sets the droplet, scales, starts, and waits
//! for a running instance, as `cf push` does.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::apps::{maps_app, summary, wait_until_running};
use super::logs::{payload_lines, LogTail};
use super::{find_app, query_value, space_target, text, SpaceTarget};
use crate::wf::client::{Client, ClientError, Poll};
use crate::wf::output::parse_megabytes;
use crate::wf::{package, Error, PushArgs};

/// How long the API may take to process uploaded bits.
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long staging may take.
const STAGING_TIMEOUT: Duration = Duration::from_secs(15 * 60);

pub fn push(client: &mut Client, args: PushArgs) -> Result<(), Error> {
    let target = space_target(client)?;
    let name = args.name.as_str();
    let memory = args
        .memory
        .as_deref()
        .map(parse_megabytes)
        .transpose()
        .map_err(Error::Failed)?;
    let path = match &args.path {
        Some(p) => p.clone(),
        None => std::env::current_dir()
            .map_err(|e| Error::Failed(format!("Cannot read the current directory: {e}")))?,
    };
    if client
        .get_optional(&format!("/v3/spaces/{}", target.space.guid))?
        .is_none()
    {
        return Err(Error::Failed(format!(
            "Space '{}' not found: it may have been deleted. Use 'wf target -s SPACE' to target another space.",
            target.space.name
        )));
    }
    println!("Pushing app {name} to {}...", target.describe());
    println!("Packaging files to upload...");
    let bits = package::package(&path)?;

    let existing = find_app(client, &target, name)?;
    let was_started = existing
        .as_ref()
        .is_some_and(|a| text(a, "state") == "STARTED");
    let app = match existing {
        Some(app) => {
            println!("Updating app {name}...");
            if !args.buildpacks.is_empty() {
                let lifecycle = lifecycle(&args.buildpacks);
                client.patch(
                    &format!("/v3/apps/{}", text(&app, "guid")),
                    &json!({ "lifecycle": lifecycle }),
                )?;
            }
            app
        }
        None => {
            println!("Creating app {name}...");
            client.post(
                "/v3/apps",
                &json!({
                    "name": name,
                    "lifecycle": lifecycle(&args.buildpacks),
                    "relationships": {"space": {"data": {"guid": target.space.guid}}}
                }),
            )?
        }
    };
    let guid = text(&app, "guid").to_string();
    if guid.is_empty() {
        return Err(Error::Failed(format!(
            "The API did not return a guid for app '{name}'."
        )));
    }

    if !args.no_route {
        let host = match (&args.hostname, args.random_route) {
            (Some(host), _) => host.clone(),
            (None, true) => random_host(name),
            (None, false) => route_host(name),
        };
        map_default_route(client, &target, &guid, name, &host)?;
    }

    println!("Uploading files...");
    let package = client.post(
        "/v3/packages",
        &json!({"type": "bits", "relationships": {"app": {"data": {"guid": guid}}}}),
    )?;
    let package_guid = text(&package, "guid").to_string();
    client.upload_bits(&package_guid, bits)?;
    println!("Waiting for API to complete processing files...");
    wait_for_package(client, &package_guid)?;

    println!("\nStaging app and tracing logs...");
    let droplet_guid = stage(client, &guid, &package_guid)?;
    client.patch(
        &format!("/v3/apps/{guid}/relationships/current_droplet"),
        &json!({"data": {"guid": droplet_guid}}),
    )?;

    if args.instances.is_some() || memory.is_some() {
        let mut scale = serde_json::Map::new();
        if let Some(n) = args.instances {
            scale.insert("instances".into(), json!(n));
        }
        if let Some(mb) = memory {
            scale.insert("memory_in_mb".into(), json!(mb));
        }
        client.post(
            &format!("/v3/apps/{guid}/processes/web/actions/scale"),
            &Value::Object(scale),
        )?;
    }

    if !args.no_start {
        if was_started {
            println!("Stopping app {name}...");
            client.post(&format!("/v3/apps/{guid}/actions/stop"), &json!({}))?;
        }
        client.post(&format!("/v3/apps/{guid}/actions/start"), &json!({}))?;
        println!("\nWaiting for app {name} to start...\n");
        wait_until_running(client, &guid, name)?;
    }
    let app = client.get(&format!("/v3/apps/{guid}"))?;
    print!("{}", summary(client, &app)?);
    Ok(())
}

fn lifecycle(buildpacks: &[String]) -> Value {
    json!({"type": "buildpack", "data": {"buildpacks": buildpacks}})
}

/// Makes sure route `<host>.<shared domain>` exists and is mapped to the app.
fn map_default_route(
    client: &mut Client,
    target: &SpaceTarget,
    app_guid: &str,
    name: &str,
    host: &str,
) -> Result<(), Error> {
    let domains = client.list("/v3/domains")?;
    let Some(domain) = domains.iter().find(|d| is_shared(d)) else {
        println!("No shared domain found: the app gets no route.");
        return Ok(());
    };
    let domain_guid = text(domain, "guid").to_string();
    let domain_name = text(domain, "name").to_string();
    let candidates = client.list(&format!(
        "/v3/routes?hosts={}&domain_guids={}",
        query_value(&host),
        query_value(&domain_guid)
    ))?;
    let existing = candidates.into_iter().find(|r| {
        text(r, "host") == host
            && r["relationships"]["domain"]["data"]["guid"].as_str() == Some(&domain_guid)
            && text(r, "path").is_empty()
    });
    let route = match existing {
        Some(route) => route,
        None => {
            println!("Creating route {host}.{domain_name}...");
            client.post(
                "/v3/routes",
                &json!({
                    "host": host,
                    "relationships": {
                        "domain": {"data": {"guid": domain_guid}},
                        "space": {"data": {"guid": target.space.guid}}
                    }
                }),
            )?
        }
    };
    if !maps_app(&route, app_guid) {
        println!("Mapping route {host}.{domain_name} to app {name}...");
        client.post(
            &format!("/v3/routes/{}/destinations", text(&route, "guid")),
            &json!({"destinations": [{"app": {"guid": app_guid}}]}),
        )?;
    }
    Ok(())
}

/// A shared (not org-private), external domain.
fn is_shared(domain: &Value) -> bool {
    domain["relationships"]["organization"]["data"].is_null()
        && domain["internal"].as_bool() != Some(true)
}

/// A host for `--random-route`: the default host with a random suffix.
fn random_host(name: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString as _};
    let suffix = Alphanumeric
        .sample_string(&mut rand::thread_rng(), 8)
        .to_ascii_lowercase();
    format!("{}-{suffix}", route_host(name))
}

/// The default host of an app: its name, lower-cased, with characters a hostname cannot
/// hold replaced by `-`, as the cf CLI does.
fn route_host(name: &str) -> String {
    let host: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    host.trim_matches('-').to_string()
}

fn wait_for_package(client: &mut Client, package_guid: &str) -> Result<(), Error> {
    let deadline = Instant::now() + PACKAGE_TIMEOUT;
    let mut poll = Poll::new();
    loop {
        let package = client.get(&format!("/v3/packages/{package_guid}"))?;
        match text(&package, "state") {
            "READY" => return Ok(()),
            "FAILED" | "EXPIRED" => {
                return Err(Error::Failed(format!(
                    "The package of the app is {}.",
                    text(&package, "state")
                )))
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout {
                what: "the API to process the uploaded files".into(),
                seconds: PACKAGE_TIMEOUT.as_secs(),
            }
            .into());
        }
        poll.wait();
    }
}

/// Creates a build of the package and waits for it, printing the staging logs; returns
/// the droplet guid.
fn stage(client: &mut Client, app_guid: &str, package_guid: &str) -> Result<String, Error> {
    let mut tail = LogTail::new(app_guid, wf_loggregator::envelope::now_ns());
    let build = client.post("/v3/builds", &json!({"package": {"guid": package_guid}}))?;
    let build_guid = text(&build, "guid").to_string();
    let deadline = Instant::now() + STAGING_TIMEOUT;
    let mut poll = Poll::new();
    loop {
        print_staging_logs(client, &mut tail);
        let build = client.get(&format!("/v3/builds/{build_guid}"))?;
        match text(&build, "state") {
            "STAGED" => {
                print_staging_logs(client, &mut tail);
                let droplet = build["droplet"]["guid"].as_str().unwrap_or_default();
                if droplet.is_empty() {
                    return Err(Error::Failed(
                        "The build is STAGED but has no droplet.".into(),
                    ));
                }
                return Ok(droplet.to_string());
            }
            "FAILED" => {
                print_staging_logs(client, &mut tail);
                let error = match text(&build, "error") {
                    "" => "StagingError - Staging failed".to_string(),
                    e => e.to_string(),
                };
                return Err(Error::Failed(error));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout {
                what: "staging".into(),
                seconds: STAGING_TIMEOUT.as_secs(),
            }
            .into());
        }
        poll.wait();
    }
}

/// Prints the new STG lines; the logs are a courtesy, so reading them may fail quietly.
fn print_staging_logs(client: &mut Client, tail: &mut LogTail) {
    let Ok(envelopes) = tail.poll(client) else {
        return;
    };
    for e in envelopes.iter().filter(|e| e.source_type() == Some("STG")) {
        for line in payload_lines(e) {
            println!("   {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_sanitized_app_names() {
        assert_eq!(route_host("hello"), "hello");
        assert_eq!(route_host("My_App.v2"), "my-app-v2");
        assert_eq!(route_host("_x_"), "x");
    }

    #[test]
    fn only_shared_external_domains_take_default_routes() {
        assert!(is_shared(
            &json!({"name": "apps.x", "internal": false, "relationships": {"organization": {"data": null}}})
        ));
        assert!(is_shared(&json!({"name": "apps.x"})));
        assert!(!is_shared(&json!({"internal": true})));
        assert!(!is_shared(
            &json!({"relationships": {"organization": {"data": {"guid": "o"}}}})
        ));
    }
}
