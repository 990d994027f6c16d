//! App commands: `apps`, `app`, `scale`, `start`, `stop`, `restart`, `delete`, `env`,
//! `set-env`, and the app summary and start wait that `push` shares.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{app_by_name, confirm, find_app, query_value, space_target, text, SpaceTarget};
use crate::wf::client::{Client, ClientError, Poll};
use crate::wf::output::{bytes, key_values, parse_megabytes, table};
use crate::wf::Error;

/// How long `start`, `restart` and `push` wait for a first RUNNING instance.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `wf apps [--labels SELECTOR]`.
pub fn apps(client: &mut Client, labels: Option<&str>) -> Result<(), Error> {
    let target = space_target(client)?;
    println!("Getting apps in {}...\n", target.describe());
    let space = query_value(&target.space.guid);
    let mut path = format!("/v3/apps?space_guids={space}&order_by=name");
    if let Some(selector) = labels {
        path.push_str(&format!("&label_selector={}", query_value(selector)));
    }
    let apps = client.list(&path)?;
    if apps.is_empty() {
        println!("No apps found");
        return Ok(());
    }
    let routes = client.list(&format!("/v3/routes?space_guids={space}"))?;
    let mut rows = Vec::new();
    for app in &apps {
        let guid = text(app, "guid");
        let state = text(app, "state");
        let processes = client.list(&format!("/v3/apps/{guid}/processes"))?;
        let mut summaries = Vec::new();
        for process in &processes {
            let instances = process["instances"].as_u64().unwrap_or_default();
            let running = if state == "STARTED" && instances > 0 {
                let stats = process_stats(client, text(process, "guid"))?;
                stats
                    .iter()
                    .filter(|s| text(s, "state") == "RUNNING")
                    .count()
            } else {
                0
            };
            summaries.push(format!("{}:{running}/{instances}", text(process, "type")));
        }
        rows.push(vec![
            text(app, "name").to_string(),
            state.to_ascii_lowercase(),
            summaries.join(", "),
            route_urls(&routes, guid).join(", "),
        ]);
    }
    print!(
        "{}",
        table(&["name", "requested state", "processes", "routes"], &rows)
    );
    Ok(())
}

pub fn app(client: &mut Client, name: &str, guid_only: bool) -> Result<(), Error> {
    let target = space_target(client)?;
    if guid_only {
        let app = app_by_name(client, &target, name)?;
        println!("{}", text(&app, "guid"));
        return Ok(());
    }
    println!(
        "Showing health and status for app {name} in {}...\n",
        target.describe()
    );
    let app = app_by_name(client, &target, name)?;
    print!("{}", summary(client, &app)?);
    Ok(())
}

pub fn scale(
    client: &mut Client,
    name: &str,
    instances: Option<u32>,
    memory: Option<String>,
    log_rate_limit: Option<String>,
) -> Result<(), Error> {
    let target = space_target(client)?;
    let memory = memory
        .as_deref()
        .map(parse_megabytes)
        .transpose()
        .map_err(Error::Failed)?;
    let log_rate = log_rate_limit
        .as_deref()
        .map(wf_controller::manifest::log_rate)
        .transpose()
        .map_err(Error::Failed)?;
    let app = app_by_name(client, &target, name)?;
    let guid = text(&app, "guid").to_string();
    if instances.is_none() && memory.is_none() && log_rate.is_none() {
        println!(
            "Showing current scale of app {name} in {}...\n",
            target.describe()
        );
        print!("{}", summary(client, &app)?);
        return Ok(());
    }
    println!("Scaling app {name} in {}...", target.describe());
    let mut body = serde_json::Map::new();
    if let Some(n) = instances {
        body.insert("instances".into(), json!(n));
    }
    if let Some(mb) = memory {
        body.insert("memory_in_mb".into(), json!(mb));
    }
    if let Some(rate) = log_rate {
        body.insert("log_rate_limit_in_bytes_per_second".into(), json!(rate));
    }
    client.post(
        &format!("/v3/apps/{guid}/processes/web/actions/scale"),
        &Value::Object(body),
    )?;
    // New memory and log limits only apply to new instances: restart, as the cf CLI does.
    if (memory.is_some() || log_rate.is_some()) && text(&app, "state") == "STARTED" {
        println!("Stopping app {name} in {}...", target.describe());
        client.post(&format!("/v3/apps/{guid}/actions/stop"), &json!({}))?;
        client.post(&format!("/v3/apps/{guid}/actions/start"), &json!({}))?;
        wait_until_running(client, &guid, name)?;
    }
    println!("OK\n");
    let app = client.get(&format!("/v3/apps/{guid}"))?;
    print!("{}", summary(client, &app)?);
    Ok(())
}

pub fn start(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    println!("Starting app {name} in {}...", target.describe());
    if text(&app, "state") == "STARTED" {
        println!("\nApp '{name}' is already started.\n\nOK");
        return Ok(());
    }
    start_and_show(client, &app)
}

/// Starts `app`, waits for a RUNNING instance and prints the summary.
fn start_and_show(client: &mut Client, app: &Value) -> Result<(), Error> {
    let guid = text(app, "guid").to_string();
    let name = text(app, "name").to_string();
    client.post(&format!("/v3/apps/{guid}/actions/start"), &json!({}))?;
    println!("\nWaiting for app {name} to start...\n");
    wait_until_running(client, &guid, &name)?;
    let app = client.get(&format!("/v3/apps/{guid}"))?;
    print!("{}", summary(client, &app)?);
    Ok(())
}

pub fn stop(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    println!("Stopping app {name} in {}...", target.describe());
    if text(&app, "state") == "STOPPED" {
        println!("App '{name}' is already stopped.");
    } else {
        let guid = text(&app, "guid");
        client.post(&format!("/v3/apps/{guid}/actions/stop"), &json!({}))?;
    }
    println!("OK");
    Ok(())
}

pub fn restart(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    println!("Restarting app {name} in {}...", target.describe());
    if text(&app, "state") == "STARTED" {
        println!("\nStopping app...");
        let guid = text(&app, "guid");
        client.post(&format!("/v3/apps/{guid}/actions/stop"), &json!({}))?;
    }
    start_and_show(client, &app)
}

pub fn delete(
    client: &mut Client,
    name: &str,
    force: bool,
    delete_routes: bool,
) -> Result<(), Error> {
    let target = space_target(client)?;
    if !force && !confirm(&format!("Really delete the app {name}?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!("Deleting app {name} in {}...", target.describe());
    let Some(app) = find_app(client, &target, name)? else {
        println!("App '{name}' does not exist.");
        println!("OK");
        return Ok(());
    };
    let guid = text(&app, "guid").to_string();
    let routes = if delete_routes {
        app_routes(client, &target, &guid)?
    } else {
        Vec::new()
    };
    client.delete(&format!("/v3/apps/{guid}"))?;
    for route in routes {
        let route_guid = text(&route, "guid");
        match client.delete(&format!("/v3/routes/{route_guid}")) {
            Err(ClientError::Api(e)) if e.is_not_found() => {}
            other => other?,
        }
    }
    println!("OK");
    Ok(())
}

pub fn env(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Getting env variables for app {name} in {}...",
        target.describe()
    );
    let app = app_by_name(client, &target, name)?;
    let env = client.get(&format!("/v3/apps/{}/env", text(&app, "guid")))?;
    println!("OK\n");
    println!("System-Provided:");
    print!("{}", env_lines(&env["system_env_json"], true));
    print!("{}", env_lines(&env["application_env_json"], true));
    println!("\nUser-Provided:");
    print!("{}", env_lines(&env["environment_variables"], false));
    println!("\nRunning Environment Variable Groups:");
    print!("{}", env_lines(&env["running_env_json"], false));
    println!("\nStaging Environment Variable Groups:");
    print!("{}", env_lines(&env["staging_env_json"], false));
    Ok(())
}

pub fn set_env(client: &mut Client, name: &str, key: &str, value: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Setting env variable '{key}' for app {name} in {}...",
        target.describe()
    );
    let app = app_by_name(client, &target, name)?;
    client.patch(
        &format!("/v3/apps/{}/environment_variables", text(&app, "guid")),
        &json!({ "var": { key: value } }),
    )?;
    println!("OK");
    println!("TIP: Use 'wf restart {name}' to ensure your env variable changes take effect.");
    Ok(())
}

/// `wf cancel-deployment APP`: rolls the app's active deployment back.
pub fn cancel_deployment(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Canceling deployment for app {name} in {}...",
        target.describe()
    );
    let app = app_by_name(client, &target, name)?;
    let active = client.list(&format!(
        "/v3/deployments?app_guids={}&status_values=ACTIVE",
        text(&app, "guid")
    ))?;
    let Some(deployment) = active.first() else {
        return Err(Error::Failed(format!(
            "No active deployment found for app {name}."
        )));
    };
    client.post(
        &format!(
            "/v3/deployments/{}/actions/cancel",
            text(deployment, "guid")
        ),
        &json!({}),
    )?;
    println!("OK");
    Ok(())
}

/// `wf unset-env APP NAME`.
pub fn unset_env(client: &mut Client, name: &str, key: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Removing env variable {key} from app {name} in {}...",
        target.describe()
    );
    let app = app_by_name(client, &target, name)?;
    let path = format!("/v3/apps/{}/environment_variables", text(&app, "guid"));
    let vars = client.get(&path)?;
    if vars["var"].get(key).is_none() {
        println!("Env variable {key} was not set.");
        println!("OK");
        return Ok(());
    }
    client.patch(&path, &json!({ "var": { key: null } }))?;
    println!("OK");
    println!("TIP: Use 'wf restart {name}' to ensure your env variable changes take effect.");
    Ok(())
}

/// The instance stats of a process (`GET /v3/processes/:guid/stats`).
pub(crate) fn process_stats(client: &mut Client, process_guid: &str) -> Result<Vec<Value>, Error> {
    let stats = client.get(&format!("/v3/processes/{process_guid}/stats"))?;
    Ok(stats["resources"].as_array().cloned().unwrap_or_default())
}

/// The URLs of the routes in `routes` with a destination on app `app_guid`.
fn route_urls(routes: &[Value], app_guid: &str) -> Vec<String> {
    routes
        .iter()
        .filter(|r| maps_app(r, app_guid))
        .map(route_url)
        .collect()
}

fn maps_app(route: &Value, app_guid: &str) -> bool {
    route["destinations"].as_array().is_some_and(|d| {
        d.iter()
            .any(|d| d["app"]["guid"].as_str() == Some(app_guid))
    })
}

pub(crate) fn route_url(route: &Value) -> String {
    match route["url"].as_str() {
        Some(url) if !url.is_empty() => url.to_string(),
        _ => format!("{}{}", text(route, "host"), text(route, "path")),
    }
}

/// The routes of the targeted space mapped to app `app_guid`.
fn app_routes(
    client: &mut Client,
    target: &SpaceTarget,
    app_guid: &str,
) -> Result<Vec<Value>, Error> {
    let routes = client.list(&format!(
        "/v3/routes?space_guids={}&app_guids={}",
        query_value(&target.space.guid),
        query_value(app_guid)
    ))?;
    Ok(routes
        .into_iter()
        .filter(|r| maps_app(r, app_guid))
        .collect())
}

/// Waits until the web process of app `guid` has a RUNNING instance; fails when every
/// instance crashed or after [`START_TIMEOUT`].
pub(crate) fn wait_until_running(client: &mut Client, guid: &str, name: &str) -> Result<(), Error> {
    let process = client.get(&format!("/v3/apps/{guid}/processes/web"))?;
    if process["instances"].as_u64() == Some(0) {
        return Ok(());
    }
    let process_guid = text(&process, "guid").to_string();
    let tip = format!("TIP: use 'wf logs {name} --recent' for more information");
    let deadline = Instant::now() + START_TIMEOUT;
    let mut poll = Poll::new();
    loop {
        match process_stats(client, &process_guid) {
            Ok(stats) => match start_outcome(&stats) {
                StartOutcome::Running => return Ok(()),
                StartOutcome::Crashed => {
                    return Err(Error::Failed(format!("Start unsuccessful\n\n{tip}")))
                }
                StartOutcome::Pending => {}
            },
            // Stats may be briefly unavailable while the API reschedules the process.
            Err(Error::Client(ClientError::Api(_))) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!("Start app timeout\n\n{tip}")));
        }
        poll.wait();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum StartOutcome {
    Running,
    Crashed,
    Pending,
}

fn start_outcome(stats: &[Value]) -> StartOutcome {
    if stats.iter().any(|s| text(s, "state") == "RUNNING") {
        StartOutcome::Running
    } else if !stats.is_empty() && stats.iter().all(|s| text(s, "state") == "CRASHED") {
        StartOutcome::Crashed
    } else {
        StartOutcome::Pending
    }
}

/// The app summary the cf CLI prints after `push`, `start` and for `app`.
pub(crate) fn summary(client: &mut Client, app: &Value) -> Result<String, Error> {
    let guid = text(app, "guid").to_string();
    let routes = client.list(&format!("/v3/routes?app_guids={}", query_value(&guid)))?;
    let droplet = client.get_optional(&format!("/v3/apps/{guid}/droplets/current"))?;
    let droplet = droplet.unwrap_or(Value::Null);
    let buildpacks: Vec<String> = droplet["buildpacks"]
        .as_array()
        .map(|bps| {
            bps.iter()
                .filter_map(|b| b["name"].as_str().or_else(|| b["buildpack_name"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let started = text(app, "state") == "STARTED";
    let mut processes = Vec::new();
    for listed in client.list(&format!("/v3/apps/{guid}/processes"))? {
        // A process shown alone has its start command (a list leaves it out).
        let process = client.get(&format!("/v3/processes/{}", text(&listed, "guid")))?;
        let stats = if started {
            process_stats(client, text(&process, "guid"))?
        } else {
            Vec::new()
        };
        processes.push((process, stats));
    }
    let mut header = vec![
        ("name", text(app, "name").to_string()),
        ("requested state", text(app, "state").to_ascii_lowercase()),
    ];
    // As cf: the segment the instances run in, when it is not the shared one.
    let segment = processes
        .iter()
        .flat_map(|(_, stats)| stats)
        .find_map(|s| s["isolation_segment"].as_str());
    if let Some(segment) = segment {
        header.push(("isolation segment", segment.to_string()));
    }
    header.extend([
        ("routes", route_urls(&routes, &guid).join(", ")),
        ("last uploaded", text(&droplet, "created_at").to_string()),
        ("stack", text(&droplet, "stack").to_string()),
        ("buildpacks", buildpacks.join(", ")),
    ]);
    let mut out = key_values(&header);
    for (process, stats) in processes {
        out.push('\n');
        out.push_str(&process_summary(
            &process,
            &stats,
            time::OffsetDateTime::now_utc(),
        ));
    }
    out.push_str(&super::deployments::active_deployment_lines(
        client,
        &guid,
        text(app, "name"),
    )?);
    Ok(out)
}

/// One process of the app summary: its scale and a table of its instances.
fn process_summary(process: &Value, stats: &[Value], now: time::OffsetDateTime) -> String {
    let instances = process["instances"].as_u64().unwrap_or_default();
    let running = stats
        .iter()
        .filter(|s| text(s, "state") == "RUNNING")
        .count();
    let memory = process["memory_in_mb"].as_u64().unwrap_or_default();
    let mut out = key_values(&[
        ("type", text(process, "type").to_string()),
        ("sidecars", String::new()),
        ("instances", format!("{running}/{instances}")),
        ("memory usage", format!("{memory}M")),
        ("start command", text(process, "command").to_string()),
    ]);
    let live: Vec<&Value> = stats
        .iter()
        .filter(|s| text(s, "state") != "DOWN")
        .collect();
    if live.is_empty() {
        out.push_str("There are no running instances of this process.\n");
        return out;
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let usage = &s["usage"];
            let since = match (text(s, "state"), s["uptime"].as_i64()) {
                ("RUNNING", Some(uptime)) => {
                    let at = now - time::Duration::seconds(uptime);
                    format_since(at)
                }
                _ => String::new(),
            };
            let cpu = usage["cpu"].as_f64().unwrap_or_default() * 100.0;
            let quota = |key: &str| s[key].as_u64().map(bytes).unwrap_or_else(|| "0".into());
            vec![
                format!("#{}", s["index"].as_u64().unwrap_or_default()),
                text(s, "state").to_ascii_lowercase(),
                since,
                format!("{cpu:.1}%"),
                format!(
                    "{} of {}",
                    bytes(usage["mem"].as_u64().unwrap_or_default()),
                    quota("mem_quota")
                ),
                format!(
                    "{} of {}",
                    bytes(usage["disk"].as_u64().unwrap_or_default()),
                    quota("disk_quota")
                ),
                s["details"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["", "state", "since", "cpu", "memory", "disk", "details"],
        &rows,
    ));
    out
}

fn format_since(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// `KEY: value` lines of an env JSON object, sorted; JSON values pretty-printed (with a
/// blank line after each) when `pretty`, as `cf env` shows VCAP_* variables.
fn env_lines(vars: &Value, pretty: bool) -> String {
    let Some(map) = vars.as_object() else {
        return String::new();
    };
    let sorted: BTreeMap<&String, &Value> = map.iter().collect();
    let mut out = String::new();
    for (k, v) in sorted {
        let v = match v {
            Value::String(s) => s.clone(),
            other if pretty => serde_json::to_string_pretty(other).unwrap_or_default(),
            other => other.to_string(),
        };
        out.push_str(&format!("{k}: {v}\n"));
        if pretty {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_outcome_follows_the_instances() {
        let s = |state: &str| json!({ "state": state });
        assert_eq!(start_outcome(&[]), StartOutcome::Pending);
        assert_eq!(
            start_outcome(&[s("STARTING"), s("RUNNING")]),
            StartOutcome::Running
        );
        assert_eq!(
            start_outcome(&[s("CRASHED"), s("CRASHED")]),
            StartOutcome::Crashed
        );
        assert_eq!(
            start_outcome(&[s("CRASHED"), s("STARTING")]),
            StartOutcome::Pending
        );
    }

    #[test]
    fn the_process_summary_lists_instances() {
        let now = time::macros::datetime!(2026-11-25 14:00:00 UTC);
        let process =
            json!({"type": "web", "instances": 2, "memory_in_mb": 256, "command": "app.wasm"});
        let stats = vec![
            json!({"index": 0, "state": "RUNNING", "uptime": 60, "usage": {"cpu": 0.012, "mem": 1 << 20, "disk": 0}, "mem_quota": 256u64 << 20, "disk_quota": 1u64 << 30}),
            json!({"index": 1, "state": "STARTING", "usage": {}}),
        ];
        let out = process_summary(&process, &stats, now);
        assert!(out.contains("instances:       1/2"), "{out}");
        assert!(
            out.contains("#0   running    2026-11-25T13:59:00Z   1.2%   1M of 256M   0 of 1G"),
            "{out}"
        );
        assert!(out.contains("#1   starting"), "{out}");
        let stopped = process_summary(&process, &[], now);
        assert!(
            stopped.contains("There are no running instances"),
            "{stopped}"
        );
    }

    #[test]
    fn routes_are_matched_by_destination() {
        let routes = vec![
            json!({"url": "a.apps.x", "destinations": [{"app": {"guid": "g1"}}]}),
            json!({"host": "b", "destinations": []}),
        ];
        assert_eq!(route_urls(&routes, "g1"), vec!["a.apps.x"]);
        assert!(route_urls(&routes, "g2").is_empty());
    }

    #[test]
    fn env_lines_are_sorted() {
        assert_eq!(env_lines(&json!({"B": "2", "A": 1}), false), "A: 1\nB: 2\n");
        assert_eq!(env_lines(&json!({"V": {}}), true), "V: {}\n\n");
        assert_eq!(env_lines(&Value::Null, false), "");
    }
}
