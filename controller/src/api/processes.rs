//! Processes: scale, command and health check, and instance stats (CF's tps) read
//! from the ActualLRPs of the process's current DesiredLRP.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::Json;
use std::collections::HashMap;

use serde_json::{json, Value};
use wf_bbs::{ActualLrp, ActualLrpFilter, ActualLrpState, DesiredLrpFilter};
use wf_loggregator::{EnvelopeMessage, LogStore, ReadQuery, MAX_READ_LIMIT};

use super::{
    cf_time, href, load_app, metadata, ok, paginated, to_one, ApiResult, Ctl, JsonBody, ListParams,
};
use crate::audit;
use crate::auth::{Access, User};
use crate::db::{App, AppState, Arg, Filter, Process};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::{nsync, quotas, Controller};

/// CF's file descriptor quota of an instance.
const FDS_QUOTA: u64 = 16_384;
/// Most instances one process may ask for, until org quotas exist to bound them.
const MAX_INSTANCES: i64 = 1_000;

pub fn present_process(controller: &Controller, process: &Process) -> Value {
    let link = |suffix: &str| {
        href(
            controller,
            &format!("/v3/processes/{}{suffix}", process.guid),
        )
    };
    json!({
        "guid": process.guid,
        "type": process.process_type,
        "command": process.command,
        "instances": process.instances,
        "memory_in_mb": process.memory_in_mb,
        "disk_in_mb": process.disk_in_mb,
        "log_rate_limit_in_bytes_per_second": process.log_rate_limit_in_bytes_per_second,
        "health_check": {
            "type": process.health_check_type,
            "data": {"timeout": null, "invocation_timeout": null, "interval": null},
        },
        "readiness_health_check": {
            "type": "process",
            "data": {"invocation_timeout": null, "interval": null},
        },
        "relationships": {"app": to_one(Some(&process.app_guid)), "revision": {"data": null}},
        "metadata": metadata(),
        "created_at": cf_time(&process.created_at),
        "updated_at": cf_time(&process.updated_at),
        "links": {
            "self": link(""),
            "scale": {"href": format!("{}/v3/processes/{}/actions/scale", controller.base_url, process.guid), "method": "POST"},
            "app": href(controller, &format!("/v3/apps/{}", process.app_guid)),
            "stats": link("/stats"),
        },
    })
}

async fn load_process(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<(Process, App), ApiError> {
    let process: Process = controller
        .db
        .get(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Process"))?;
    let app = load_app(controller, user, &process.app_guid)
        .await
        .map_err(|_| ApiError::not_found("Process"))?;
    Ok((process, app))
}

async fn load_app_process(
    controller: &Controller,
    user: &User,
    app_guid: &str,
    process_type: &str,
) -> Result<(Process, App), ApiError> {
    let app = load_app(controller, user, app_guid).await?;
    let process = controller
        .db
        .find::<Process>(
            Filter::new()
                .eq("app_guid", &app.guid)
                .eq("type", process_type),
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Process"))?;
    Ok((process, app))
}

/// A process as CF shows it, with its labels and annotations; without a command of
/// its own, its command is the one its app's current droplet gives its type (the
/// buildpack's or the Procfile's), as CF shows it.
async fn show_process(controller: &Controller, process: &Process) -> Result<Value, ApiError> {
    let mut shown = present_process(controller, process);
    if process.command.is_none() {
        shown["command"] = json!(detected_command(controller, process).await?);
    }
    Ok(metadata::filled(&controller.db, "processes", shown).await?)
}

/// The start command the app's current droplet gives `process`'s type, if any.
async fn detected_command(
    controller: &Controller,
    process: &Process,
) -> Result<Option<String>, ApiError> {
    let Some(app) = controller.db.get::<App>(&process.app_guid).await? else {
        return Ok(None);
    };
    let Some(droplet_guid) = app.droplet_guid else {
        return Ok(None);
    };
    let droplet = controller
        .db
        .get::<crate::db::Droplet>(&droplet_guid)
        .await?;
    Ok(droplet
        .and_then(|d| d.process_types.get(&process.process_type).cloned())
        .filter(|command| !command.is_empty()))
}

async fn list_filtered(controller: &Controller, params: &ListParams, filter: Filter) -> ApiResult {
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "app_guids", "app_guid");
    let filter = params.filter(filter, "types", "type");
    let filter = params.label_selector(filter, "processes")?;
    let (total, processes) = controller.db.list::<Process>(filter, &params.page).await?;
    let mut resources: Vec<Value> = processes
        .iter()
        .map(|p| present_process(controller, p))
        .collect();
    metadata::fill(&controller.db, "processes", &mut resources).await?;
    Ok(paginated(controller, params, total, resources))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    list_filtered(
        &controller,
        &params,
        user.scope_apps(Filter::new(), "app_guid"),
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
    list_filtered(
        &controller,
        &params,
        Filter::new().eq("app_guid", &app.guid),
    )
    .await
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (process, _) = load_process(&controller, &user, &guid).await?;
    Ok(ok(show_process(&controller, &process).await?))
}

pub async fn show_for_app(
    State(controller): Ctl,
    user: User,
    Path((guid, process_type)): Path<(String, String)>,
) -> ApiResult {
    let (process, _) = load_app_process(&controller, &user, &guid, &process_type).await?;
    Ok(ok(show_process(&controller, &process).await?))
}

/// A validated scale request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scale {
    instances: Option<i64>,
    memory_in_mb: Option<i64>,
    disk_in_mb: Option<i64>,
    /// -1 for no limit of the process's own.
    log_rate_limit_in_bytes_per_second: Option<i64>,
}

fn parse_scale(body: &Value) -> Result<Scale, ApiError> {
    let field = |name: &str, label: &str, min: i64| -> Result<Option<i64>, ApiError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_i64() {
                Some(n) if n >= min => Ok(Some(n)),
                Some(_) if min <= 0 => Err(ApiError::unprocessable(format!(
                    "{label} must be greater than or equal to {min}"
                ))),
                Some(_) => Err(ApiError::unprocessable(format!(
                    "{label} must be greater than 0"
                ))),
                None => Err(ApiError::unprocessable(format!("{label} is not a number"))),
            },
        }
    };
    let instances = field("instances", "Instances", 0)?;
    if instances.is_some_and(|n| n > MAX_INSTANCES) {
        return Err(ApiError::unprocessable(format!(
            "Instances must be less than or equal to {MAX_INSTANCES}"
        )));
    }
    let log_rate = field(
        "log_rate_limit_in_bytes_per_second",
        "Log rate limit in bytes per second",
        -1,
    )?;
    Ok(Scale {
        instances,
        memory_in_mb: field("memory_in_mb", "Memory in mb", 1)?,
        disk_in_mb: field("disk_in_mb", "Disk in mb", 1)?,
        log_rate_limit_in_bytes_per_second: log_rate,
    })
}

/// An audit event of the process's app, with CF's process data.
async fn record_process_event(
    controller: &Controller,
    user: &User,
    event: &str,
    process: &Process,
    request: &Value,
) {
    let Ok(Some(app)) = controller.db.get::<App>(&process.app_guid).await else {
        return;
    };
    let data = json!({
        "process_guid": process.guid,
        "process_type": process.process_type,
        "request": request,
    });
    audit::record_app(controller, user, event, &app, data).await;
}

async fn scale_process(
    controller: &Controller,
    user: &User,
    process: Process,
    body: &Value,
) -> ApiResult {
    let scale = parse_scale(body)?;
    quotas::check_scale(controller, &process, scale.instances, scale.memory_in_mb).await?;
    let mut changes = Vec::new();
    if let Some(instances) = scale.instances {
        changes.push(("instances", Arg::Int(instances)));
    }
    let mut fresh = false;
    if let Some(memory) = scale.memory_in_mb {
        fresh |= memory != process.memory_in_mb;
        changes.push(("memory_in_mb", Arg::Int(memory)));
    }
    if let Some(disk) = scale.disk_in_mb {
        fresh |= disk != process.disk_in_mb;
        changes.push(("disk_in_mb", Arg::Int(disk)));
    }
    if let Some(rate) = scale.log_rate_limit_in_bytes_per_second {
        fresh |= rate != process.log_rate_limit_in_bytes_per_second;
        changes.push(("log_rate_limit_in_bytes_per_second", Arg::Int(rate)));
    }
    if !changes.is_empty() {
        if fresh {
            changes.push(("version", crate::db::new_guid().into()));
        }
        controller
            .db
            .update("processes", &process.guid, changes)
            .await?;
        nsync::sync_app(controller, &process.app_guid).await;
        controller.emit_log(
            &process.app_guid,
            "API",
            &format!(
                "Scaling process {} of app with guid {}: {body}",
                process.process_type, process.app_guid
            ),
        );
        record_process_event(controller, user, "audit.app.process.scale", &process, body).await;
        if let Some(app) = controller.db.get::<App>(&process.app_guid).await? {
            if app.state == AppState::Started {
                let before = [(
                    process.guid.clone(),
                    (process.instances, process.memory_in_mb),
                )];
                let before = Some((AppState::Started, &before[..]));
                super::usage_events::record(
                    controller,
                    &app,
                    AppState::Started,
                    before,
                    Some(&process.guid),
                )
                .await;
            }
        }
    }
    let process: Process = controller
        .db
        .get(&process.guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Process"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(show_process(controller, &process).await?),
    )
        .into_response())
}

pub async fn scale(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let (process, app) = load_process(&controller, &user, &guid).await?;
    user.require_in_space(&app.space_guid, Access::Operate)?;
    super::feature_flags::require(&controller, &user, "app_scaling").await?;
    scale_process(&controller, &user, process, &body).await
}

pub async fn scale_for_app(
    State(controller): Ctl,
    user: User,
    Path((guid, process_type)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let (process, app) = load_app_process(&controller, &user, &guid, &process_type).await?;
    user.require_in_space(&app.space_guid, Access::Operate)?;
    super::feature_flags::require(&controller, &user, "app_scaling").await?;
    scale_process(&controller, &user, process, &body).await
}

async fn update_process(
    controller: &Controller,
    user: &User,
    process: Process,
    body: &Value,
) -> ApiResult {
    let labels = MetadataUpdate::parse(body.get("metadata"))?;
    let mut changes = Vec::new();
    match body.get("command") {
        None => {}
        Some(Value::Null) => changes.push(("command", Arg::Null)),
        Some(Value::String(command)) => changes.push(("command", command.clone().into())),
        Some(_) => return Err(ApiError::unprocessable("Command must be a string")),
    }
    if let Some(kind) = body.pointer("/health_check/type") {
        match kind.as_str() {
            Some(kind @ ("port" | "process" | "http")) => {
                changes.push(("health_check_type", kind.into()))
            }
            _ => {
                return Err(ApiError::unprocessable(
                    "Health check type must be 'port', 'process', or 'http'",
                ))
            }
        }
    }
    if !changes.is_empty() {
        changes.push(("version", crate::db::new_guid().into()));
        controller
            .db
            .update("processes", &process.guid, changes)
            .await?;
        crate::revisions::record(controller, &process.app_guid).await?;
        nsync::sync_app(controller, &process.app_guid).await;
        record_process_event(controller, user, "audit.app.process.update", &process, body).await;
    }
    labels
        .apply(&controller.db, "processes", &process.guid)
        .await?;
    let process: Process = controller
        .db
        .get(&process.guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Process"))?;
    Ok(ok(show_process(controller, &process).await?))
}

pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let (process, app) = load_process(&controller, &user, &guid).await?;
    user.require_in_space(&app.space_guid, Access::Operate)?;
    update_process(&controller, &user, process, &body).await
}

pub async fn update_for_app(
    State(controller): Ctl,
    user: User,
    Path((guid, process_type)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let (process, app) = load_app_process(&controller, &user, &guid, &process_type).await?;
    user.require_in_space(&app.space_guid, Access::Operate)?;
    update_process(&controller, &user, process, &body).await
}

pub async fn stats(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let (process, app) = load_process(&controller, &user, &guid).await?;
    stats_of(&controller, &process, &app).await
}

pub async fn stats_for_app(
    State(controller): Ctl,
    user: User,
    Path((guid, process_type)): Path<(String, String)>,
) -> ApiResult {
    let (process, app) = load_app_process(&controller, &user, &guid, &process_type).await?;
    stats_of(&controller, &process, &app).await
}

async fn stats_of(controller: &Controller, process: &Process, app: &App) -> ApiResult {
    let (actuals, segment) = if app.state == AppState::Started {
        let lrp_guid = nsync::lrp_guid(process);
        let filter = ActualLrpFilter {
            process_guid: Some(lrp_guid.clone()),
            ..Default::default()
        };
        let actuals = controller.bbs.actual_lrps(&filter).await?;
        // As CC: the segment is the DesiredLRP's placement tag.
        let filter = DesiredLrpFilter {
            process_guids: Some(vec![lrp_guid]),
            ..Default::default()
        };
        let desired = controller.bbs.desired_lrps(&filter).await?;
        let segment = desired
            .into_iter()
            .next()
            .and_then(|lrp| lrp.placement_tags.into_iter().next());
        (actuals, segment)
    } else {
        (Vec::new(), None)
    };
    let now = time::OffsetDateTime::now_utc();
    let usage = latest_usage(&controller.logs, app, process);
    let resources = instance_stats(process, &actuals, &usage, now, segment.as_deref());
    Ok(ok(json!({"resources": resources})))
}

/// One instance's latest container metrics, from the cell's gauges in the log cache
/// (as CC reads Log Cache): cpu as a fraction of a core, memory and disk in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Usage {
    cpu: f64,
    mem: f64,
    disk: f64,
}

/// The newest [`Usage`] of each index of `process`.
fn latest_usage(logs: &LogStore, app: &App, process: &Process) -> HashMap<String, Usage> {
    let query = ReadQuery {
        envelope_types: vec!["GAUGE".to_string()],
        limit: Some(MAX_READ_LIMIT),
        descending: true,
        ..Default::default()
    };
    let mut usage = HashMap::new();
    for envelope in logs.read(&app.guid, &query) {
        let EnvelopeMessage::Gauge(gauge) = &envelope.message else {
            continue;
        };
        let ours = envelope.tags.get("process_id") == Some(&process.guid);
        let Some(cpu) = gauge.metrics.get("cpu").filter(|_| ours) else {
            continue;
        };
        let value = |name: &str| gauge.metrics.get(name).map_or(0.0, |g| g.value);
        // Newest first: the first gauge seen for an index wins.
        usage.entry(envelope.instance_id.clone()).or_insert(Usage {
            cpu: cpu.value / 100.0,
            mem: value("memory"),
            disk: value("disk"),
        });
    }
    usage
}

/// One stats entry per desired index: the best ActualLRP at that index, or DOWN; all
/// in `isolation_segment` (`None`: the shared cells).
fn instance_stats(
    process: &Process,
    actuals: &[ActualLrp],
    usage: &HashMap<String, Usage>,
    now: time::OffsetDateTime,
    isolation_segment: Option<&str>,
) -> Vec<Value> {
    let count = u32::try_from(process.instances).unwrap_or_default();
    let mb = |n: i64| u64::try_from(n).unwrap_or_default() * 1024 * 1024;
    let now_ns = i64::try_from(now.unix_timestamp_nanos()).unwrap_or_default();
    let time = cf_time(
        &now.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    );
    (0..count)
        .map(|index| {
            let rank = |a: &ActualLrp| match a.state {
                ActualLrpState::Running => 3,
                ActualLrpState::Claimed => 2,
                ActualLrpState::Unclaimed => 1,
                ActualLrpState::Crashed => 0,
            };
            let actual = actuals
                .iter()
                .filter(|a| a.key.index == index)
                .max_by_key(|a| rank(a));
            let (state, host, ports, uptime, details) = match actual {
                None => ("DOWN", String::new(), vec![], 0, None),
                Some(a) => {
                    let state = match a.state {
                        ActualLrpState::Running => "RUNNING",
                        ActualLrpState::Claimed | ActualLrpState::Unclaimed => "STARTING",
                        ActualLrpState::Crashed => "CRASHED",
                    };
                    let ports: Vec<Value> = a
                        .net_info
                        .ports
                        .iter()
                        .map(|p| {
                            json!({
                                "external": p.host_port,
                                "internal": p.container_port,
                                "external_tls_proxy_port": null,
                                "internal_tls_proxy_port": null,
                            })
                        })
                        .collect();
                    let uptime = if a.state == ActualLrpState::Running {
                        (now_ns - a.since).max(0) / 1_000_000_000
                    } else {
                        0
                    };
                    let details = [&a.crash_reason, &a.placement_error]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .cloned();
                    (state, a.net_info.address.clone(), ports, uptime, details)
                }
            };
            let used = usage
                .get(&index.to_string())
                .copied()
                .filter(|_| state == "RUNNING")
                .unwrap_or_default();
            json!({
                "type": process.process_type,
                "index": index,
                "state": state,
                "host": host,
                "instance_ports": ports,
                "uptime": uptime,
                "mem_quota": mb(process.memory_in_mb),
                "disk_quota": mb(process.disk_in_mb),
                "fds_quota": FDS_QUOTA,
                "log_rate_limit": process.log_rate_limit_in_bytes_per_second,
                "isolation_segment": isolation_segment,
                "details": details,
                "usage": {"time": time, "cpu": used.cpu, "mem": used.mem as u64, "disk": used.disk as u64, "log_rate": 0},
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use wf_bbs::{ActualLrpInstanceKey, ActualLrpKey, NetInfo, PortMapping, Presence};

    use super::*;

    #[test]
    fn scale_requests_are_validated() {
        assert_eq!(
            parse_scale(&json!({"instances": 3, "memory_in_mb": 128})).unwrap(),
            Scale {
                instances: Some(3),
                memory_in_mb: Some(128),
                disk_in_mb: None,
                log_rate_limit_in_bytes_per_second: None,
            }
        );
        assert_eq!(
            parse_scale(&json!({"instances": 0})).unwrap().instances,
            Some(0)
        );
        let err = parse_scale(&json!({"instances": -1})).unwrap_err();
        assert!(
            err.to_string()
                .contains("Instances must be greater than or equal to 0"),
            "{err}"
        );
        assert!(parse_scale(&json!({"memory_in_mb": 0})).is_err());
        assert!(parse_scale(&json!({"disk_in_mb": -5})).is_err());
        assert!(parse_scale(&json!({"instances": "three"})).is_err());
        assert!(parse_scale(&json!({"instances": 1_000_000})).is_err());
        let rate = parse_scale(&json!({"log_rate_limit_in_bytes_per_second": -1})).unwrap();
        assert_eq!(rate.log_rate_limit_in_bytes_per_second, Some(-1));
        let err = parse_scale(&json!({"log_rate_limit_in_bytes_per_second": -2})).unwrap_err();
        assert!(
            err.to_string()
                .contains("Log rate limit in bytes per second must be greater than or equal to -1"),
            "{err}"
        );
    }

    fn process(instances: i64) -> Process {
        Process {
            guid: "p".into(),
            app_guid: "p".into(),
            process_type: "web".into(),
            command: None,
            instances,
            memory_in_mb: 256,
            disk_in_mb: 1024,
            health_check_type: "port".into(),
            log_rate_limit_in_bytes_per_second: -1,
            version: "v".into(),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn actual(index: u32, state: ActualLrpState, since: i64) -> ActualLrp {
        ActualLrp {
            key: ActualLrpKey {
                process_guid: "p-v".into(),
                index,
                domain: "cf-apps".into(),
            },
            instance_key: ActualLrpInstanceKey {
                instance_guid: "i".into(),
                cell_id: "cell-0".into(),
            },
            net_info: NetInfo {
                address: "127.0.0.1".into(),
                ports: vec![PortMapping {
                    container_port: 8080,
                    host_port: 61000,
                }],
                instance_address: String::new(),
            },
            crash_count: 0,
            crash_reason: String::new(),
            placement_error: String::new(),
            state,
            since,
            modification_tag: Default::default(),
            presence: Presence::Ordinary,
            routable: true,
        }
    }

    #[test]
    fn stats_show_each_desired_index() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let actuals = vec![
            actual(0, ActualLrpState::Crashed, 0),
            actual(0, ActualLrpState::Running, 990_000_000_000),
            actual(1, ActualLrpState::Unclaimed, 0),
            actual(5, ActualLrpState::Running, 0),
        ];
        let usage: HashMap<String, Usage> = [
            (
                "0",
                Usage {
                    cpu: 0.25,
                    mem: 1e6,
                    disk: 2e6,
                },
            ),
            (
                "1",
                Usage {
                    cpu: 0.5,
                    mem: 3e6,
                    disk: 4e6,
                },
            ),
        ]
        .into_iter()
        .map(|(i, u)| (i.to_string(), u))
        .collect();
        let stats = instance_stats(&process(3), &actuals, &usage, now, None);
        assert_eq!(stats.len(), 3);
        assert_eq!(stats[0]["usage"]["cpu"], 0.25);
        assert_eq!(stats[0]["usage"]["mem"], 1_000_000);
        assert_eq!(stats[0]["usage"]["disk"], 2_000_000);
        // Only a running instance has usage.
        assert_eq!(stats[1]["usage"]["mem"], 0);
        assert_eq!(stats[0]["state"], "RUNNING");
        assert_eq!(stats[0]["uptime"], 10);
        assert_eq!(stats[0]["host"], "127.0.0.1");
        assert_eq!(stats[0]["instance_ports"][0]["external"], 61000);
        assert_eq!(stats[0]["mem_quota"], 256 * 1024 * 1024);
        assert_eq!(stats[1]["state"], "STARTING");
        assert_eq!(stats[2]["state"], "DOWN");
    }
}
