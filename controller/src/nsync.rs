//! nsync: keeps the BBS's DesiredLRPs (domain `cf-apps`) in step with the apps. A
//! started app with a current droplet has one DesiredLRP per process, with process guid
//! `<process guid>-<process version>`; a new version (restart, new droplet, new
//! environment, new memory) replaces the LRP. Handlers sync one app after each change;
//! [`run`] syncs everything every interval and keeps the domain fresh. An LRP is placed
//! in its space's isolation segment as it was when the LRP was desired: as in CF, a new
//! segment takes effect when the app restarts. A route bound to a route service carries
//! the service's URL; as any route change, it reaches the running LRP at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wf_bbs::{
    BbsError, CfRoute, CheckDefinition, CheckKind, DesiredLrp, DesiredLrpFilter, DesiredLrpUpdate,
    EnvVar, Routes, RunAction, CF_APPS_DOMAIN,
};

use crate::api::{isolation_segments, APP_PORT};
use crate::db::{
    self, App, AppState, Destination, Domain, Droplet, DropletState, Filter, IsolationSegment, Org,
    Process, Route, RouteBinding, Space,
};
use crate::signed_urls::droplet_download_path;
use crate::Controller;

/// How long the droplet URL in a DesiredLRP stays valid, counted from the droplet's
/// creation so that the URL (and so the LRP) stays the same from one sync to the next.
const DROPLET_URL_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;
/// How long an instance may take to pass its first health check.
const START_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum NsyncError {
    #[error("CC database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("BBS: {0}")]
    Bbs(#[from] BbsError),
}

/// The DesiredLRP process guid of a process's current version.
pub fn lrp_guid(process: &Process) -> String {
    format!("{}-{}", process.guid, process.version)
}

/// The CC process guid inside a DesiredLRP process guid (both parts are hyphenated uuids).
pub(crate) fn process_guid_of(lrp_guid: &str) -> &str {
    const VERSION_LEN: usize = 36;
    match lrp_guid.len().checked_sub(VERSION_LEN + 1) {
        Some(end) if lrp_guid.as_bytes().get(end) == Some(&b'-') => &lrp_guid[..end],
        _ => lrp_guid,
    }
}

/// An app with what its environment and routes are made of.
pub struct AppContext {
    pub app: App,
    pub space: Option<Space>,
    pub org: Option<Org>,
    /// `host.domain[/path]` of each route with a destination to the app.
    pub uris: Vec<String>,
    /// The route service URL of each of those routes bound to one.
    pub route_services: BTreeMap<String, String>,
    /// The running environment variable group (the app's own variables win).
    pub running_group: serde_json::Map<String, Value>,
    /// `VCAP_SERVICES`: what the app's service bindings give it.
    pub vcap_services: Value,
    /// The isolation segment its instances and tasks run in (`None`: the shared cells).
    pub isolation_segment: Option<IsolationSegment>,
}

impl AppContext {
    pub async fn load(controller: &Controller, app: App) -> Result<AppContext, sqlx::Error> {
        let space = controller.db.get::<Space>(&app.space_guid).await?;
        let org = match &space {
            Some(space) => controller.db.get::<Org>(&space.organization_guid).await?,
            None => None,
        };
        let destinations: Vec<Destination> = controller
            .db
            .find(Filter::new().eq("app_guid", &app.guid))
            .await?;
        let route_guids: BTreeSet<String> =
            destinations.into_iter().map(|d| d.route_guid).collect();
        let route_guids: Vec<String> = route_guids.into_iter().collect();
        let route_service_urls: BTreeMap<String, String> = controller
            .db
            .find::<RouteBinding>(
                Filter::new()
                    .any_of("route_guid", &route_guids)
                    .clause("route_service_url IS NOT NULL", vec![]),
            )
            .await?
            .into_iter()
            .filter_map(|b| Some((b.route_guid, b.route_service_url?)))
            .collect();
        let mut uris = Vec::new();
        let mut route_services = BTreeMap::new();
        for route in controller
            .db
            .find::<Route>(Filter::new().any_of("guid", &route_guids))
            .await?
        {
            if let Some(domain) = controller.db.get::<Domain>(&route.domain_guid).await? {
                let uri = crate::api::route_url(&route.host, &domain.name, &route.path);
                if let Some(url) = route_service_urls.get(&route.guid) {
                    route_services.insert(uri.clone(), url.clone());
                }
                uris.push(uri);
            }
        }
        uris.sort();
        uris.dedup();
        let running_group = crate::api::env_group_variables(controller, "running").await?;
        let vcap_services = crate::services::vcap_services(controller, &app.guid).await?;
        let isolation_segment = isolation_segments::for_space(controller, &app.space_guid).await?;
        Ok(AppContext {
            app,
            space,
            org,
            uris,
            route_services,
            running_group,
            vcap_services,
            isolation_segment,
        })
    }

    /// The placement tags of the app's instances and tasks: its isolation segment's name.
    pub fn placement_tags(&self) -> Vec<String> {
        isolation_segments::placement_tags(self.isolation_segment.as_ref())
    }

    /// The environment the app's instances and tasks run with: `VCAP_APPLICATION`,
    /// `VCAP_SERVICES` and the app's own variables.
    pub fn running_env(&self, process: Option<&Process>) -> Vec<EnvVar> {
        let mut env = vec![
            EnvVar {
                name: "VCAP_APPLICATION".into(),
                value: self.vcap_application(process).to_string(),
            },
            EnvVar {
                name: "VCAP_SERVICES".into(),
                value: self.vcap_services.to_string(),
            },
        ];
        let mut vars = self.running_group.clone();
        vars.extend(self.app.environment_variables.clone());
        for (name, value) in &vars {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            env.push(EnvVar {
                name: name.clone(),
                value,
            });
        }
        env
    }

    /// `VCAP_APPLICATION` (the cell adds the per-instance fields).
    pub fn vcap_application(&self, process: Option<&Process>) -> Value {
        let (space_id, space_name) = self
            .space
            .as_ref()
            .map(|s| (s.guid.as_str(), s.name.as_str()))
            .unzip();
        let (org_id, org_name) = self
            .org
            .as_ref()
            .map(|o| (o.guid.as_str(), o.name.as_str()))
            .unzip();
        json!({
            "application_id": self.app.guid,
            "application_name": self.app.name,
            "application_uris": self.uris,
            "application_version": process.map(|p| p.version.as_str()),
            "version": process.map(|p| p.version.as_str()),
            "name": self.app.name,
            "space_id": space_id,
            "space_name": space_name,
            "organization_id": org_id,
            "organization_name": org_name,
            "uris": self.uris,
            "limits": {
                "mem": process.map(|p| p.memory_in_mb),
                "disk": process.map(|p| p.disk_in_mb),
                "fds": 16_384,
            },
            "process_id": process.map(|p| p.guid.as_str()),
            "process_type": process.map(|p| p.process_type.as_str()),
            "users": null,
        })
    }
}

/// The DesiredLRP `process` should have now, if any: its app is started and has a
/// staged, uploaded current droplet.
async fn desired_lrp(
    controller: &Controller,
    process: &Process,
) -> Result<Option<DesiredLrp>, sqlx::Error> {
    let Some(app) = controller.db.get::<App>(&process.app_guid).await? else {
        return Ok(None);
    };
    if app.state != AppState::Started {
        return Ok(None);
    }
    let droplet = match &app.droplet_guid {
        Some(guid) => controller.db.get::<Droplet>(guid).await?,
        None => None,
    };
    let Some(droplet) = droplet.filter(|d| d.state == DropletState::Staged) else {
        return Ok(None);
    };
    let Some(checksum) = droplet.checksum.clone() else {
        return Ok(None);
    };
    let context = AppContext::load(controller, app).await?;
    Ok(Some(build_lrp(
        controller, &context, process, &droplet, checksum,
    )))
}

fn build_lrp(
    controller: &Controller,
    context: &AppContext,
    process: &Process,
    droplet: &Droplet,
    checksum: String,
) -> DesiredLrp {
    let app = &context.app;
    let env = context.running_env(Some(process));
    let command = process
        .command
        .clone()
        .or_else(|| droplet.process_types.get(&process.process_type).cloned())
        .unwrap_or_default();
    let expires = db::unix_seconds(&droplet.created_at) + DROPLET_URL_VALIDITY_SECS;
    let port = u16::try_from(APP_PORT).unwrap_or(8080);
    let routes = cf_routes(context, port);
    let check_kind = match process.health_check_type.as_str() {
        "process" => CheckKind::Process,
        "http" => CheckKind::Http,
        _ => CheckKind::Port,
    };
    let mut metric_tags = BTreeMap::new();
    metric_tags.insert("source_id".to_string(), app.guid.clone());
    metric_tags.insert("app_id".to_string(), app.guid.clone());
    metric_tags.insert("app_name".to_string(), app.name.clone());
    metric_tags.insert("process_id".to_string(), process.guid.clone());
    metric_tags.insert("process_type".to_string(), process.process_type.clone());
    if let Some(space) = &context.space {
        metric_tags.insert("space_id".to_string(), space.guid.clone());
        metric_tags.insert("space_name".to_string(), space.name.clone());
    }
    if let Some(org) = &context.org {
        metric_tags.insert("organization_id".to_string(), org.guid.clone());
        metric_tags.insert("organization_name".to_string(), org.name.clone());
    }
    let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    DesiredLrp {
        process_guid: lrp_guid(process),
        domain: CF_APPS_DOMAIN.to_string(),
        instances: clamp(process.instances),
        memory_mb: clamp(process.memory_in_mb),
        disk_mb: clamp(process.disk_in_mb),
        ports: vec![port],
        routes,
        start_timeout_ms: START_TIMEOUT_MS,
        check_definition: Some(CheckDefinition {
            kind: check_kind,
            port,
            path: (check_kind == CheckKind::Http).then(|| "/".to_string()),
            timeout_ms: 1_000,
            interval_ms: 30_000,
        }),
        log_guid: app.guid.clone(),
        log_source: format!("APP/PROC/{}", process.process_type.to_ascii_uppercase()),
        metric_tags,
        annotation: process.version.clone(),
        placement_tags: context.placement_tags(),
        action: RunAction {
            droplet_uri: controller
                .signer
                .url(&droplet_download_path(&droplet.guid), expires),
            droplet_sha256: checksum,
            command,
            env,
            log_rate_limit_bytes_per_second: u64::try_from(
                process.log_rate_limit_in_bytes_per_second,
            )
            .ok(),
        },
        modification_tag: Default::default(),
    }
}

/// The app's `cf-router` routes: one entry for the routes without a route service, one
/// per route service for the routes bound to it.
fn cf_routes(context: &AppContext, port: u16) -> Routes {
    let mut by_service: BTreeMap<Option<&String>, Vec<String>> = BTreeMap::new();
    for uri in &context.uris {
        by_service
            .entry(context.route_services.get(uri))
            .or_default()
            .push(uri.clone());
    }
    Routes {
        cf_router: by_service
            .into_iter()
            .map(|(route_service_url, hostnames)| CfRoute {
                hostnames,
                port,
                route_service_url: route_service_url.cloned(),
                isolation_segment: context.isolation_segment.as_ref().map(|s| s.name.clone()),
            })
            .collect(),
    }
}

/// One change to the BBS.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Desire(DesiredLrp),
    Update(String, DesiredLrpUpdate),
    /// The LRP must change in ways the BBS cannot update in place: the process gets a
    /// new version (a new LRP), and the old LRP goes.
    Replace {
        old: String,
        process_guid: String,
    },
    Remove(String),
}

/// What `desired` (from the CC database) vs `existing` (in the BBS) needs.
fn plan(desired: Vec<DesiredLrp>, existing: Vec<DesiredLrp>) -> Vec<Step> {
    let mut existing: BTreeMap<String, DesiredLrp> = existing
        .into_iter()
        .map(|lrp| (lrp.process_guid.clone(), lrp))
        .collect();
    let mut steps = Vec::new();
    for mut want in desired {
        if let Some(have) = existing.get(&want.process_guid) {
            keep_placement(&mut want, have);
        }
        match existing.remove(&want.process_guid) {
            None => steps.push(Step::Desire(want)),
            Some(have) if fixed_part(&have) != fixed_part(&want) => steps.push(Step::Replace {
                process_guid: process_guid_of(&want.process_guid).to_string(),
                old: have.process_guid,
            }),
            Some(have) => {
                let update = DesiredLrpUpdate {
                    instances: (have.instances != want.instances).then_some(want.instances),
                    routes: (have.routes != want.routes).then(|| want.routes.clone()),
                    annotation: (have.annotation != want.annotation)
                        .then(|| want.annotation.clone()),
                    metric_tags: (have.metric_tags != want.metric_tags)
                        .then(|| want.metric_tags.clone()),
                };
                if update != DesiredLrpUpdate::default() {
                    steps.push(Step::Update(want.process_guid, update));
                }
            }
        }
    }
    steps.extend(existing.into_keys().map(Step::Remove));
    steps
}

/// Gives `want` the isolation segment `have` was desired in: as in CF, a space's new
/// segment reaches an app's instances when the app restarts (a new process version, a
/// new LRP), not while the LRP runs.
fn keep_placement(want: &mut DesiredLrp, have: &DesiredLrp) {
    want.placement_tags = have.placement_tags.clone();
    for route in &mut want.routes.cf_router {
        route.isolation_segment = have.placement_tags.first().cloned();
    }
}

/// The fields of a DesiredLRP the BBS cannot update. The route URIs in
/// `VCAP_APPLICATION` and `VCAP_SERVICES` do not count: as in CF, a route change
/// re-routes running instances without restarting them, and a new service binding
/// waits for the app's restart; their environment catches up then.
fn fixed_part(lrp: &DesiredLrp) -> DesiredLrp {
    let mut fixed = DesiredLrp {
        instances: 0,
        routes: Routes::default(),
        annotation: String::new(),
        metric_tags: BTreeMap::new(),
        modification_tag: Default::default(),
        ..lrp.clone()
    };
    fixed.action.env.retain(|v| v.name != "VCAP_SERVICES");
    for var in fixed
        .action
        .env
        .iter_mut()
        .filter(|v| v.name == "VCAP_APPLICATION")
    {
        if let Ok(Value::Object(mut vcap)) = serde_json::from_str::<Value>(&var.value) {
            vcap.remove("uris");
            vcap.remove("application_uris");
            var.value = Value::Object(vcap).to_string();
        }
    }
    fixed
}

async fn apply(controller: &Controller, steps: Vec<Step>) -> Result<(), NsyncError> {
    for step in steps {
        match step {
            Step::Desire(lrp) => {
                tracing::info!(process_guid = %lrp.process_guid, instances = lrp.instances, "desiring LRP");
                controller.bbs.desire_lrp(lrp).await?;
            }
            Step::Update(process_guid, update) => {
                tracing::info!(%process_guid, ?update.instances, "updating LRP");
                controller
                    .bbs
                    .update_desired_lrp(&process_guid, update)
                    .await?;
            }
            Step::Replace { old, process_guid } => {
                controller
                    .db
                    .update(
                        "processes",
                        &process_guid,
                        vec![("version", db::new_guid().into())],
                    )
                    .await?;
                if let Some(process) = controller.db.get::<Process>(&process_guid).await? {
                    if let Some(lrp) = desired_lrp(controller, &process).await? {
                        tracing::info!(old = %old, new = %lrp.process_guid, "replacing LRP");
                        controller.bbs.desire_lrp(lrp).await?;
                    }
                }
                remove(controller, &old).await?;
            }
            Step::Remove(process_guid) => remove(controller, &process_guid).await?,
        }
    }
    Ok(())
}

async fn remove(controller: &Controller, process_guid: &str) -> Result<(), NsyncError> {
    tracing::info!(%process_guid, "removing LRP");
    match controller.bbs.remove_desired_lrp(process_guid).await {
        Ok(()) | Err(BbsError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn existing_lrps(controller: &Controller) -> Result<Vec<DesiredLrp>, BbsError> {
    let filter = DesiredLrpFilter {
        domain: Some(CF_APPS_DOMAIN.to_string()),
        ..Default::default()
    };
    controller.bbs.desired_lrps(&filter).await
}

/// Brings the LRPs of `process_guids` in line with the database (processes that are
/// gone lose their LRPs).
async fn sync_some(
    controller: &Controller,
    process_guids: &BTreeSet<String>,
) -> Result<(), NsyncError> {
    let _one_at_a_time = controller.nsync_lock.lock().await;
    let guids: Vec<String> = process_guids.iter().cloned().collect();
    let mut desired = Vec::new();
    for process in controller
        .db
        .find::<Process>(Filter::new().any_of("guid", &guids))
        .await?
    {
        desired.extend(desired_lrp(controller, &process).await?);
    }
    let existing: Vec<DesiredLrp> = existing_lrps(controller)
        .await?
        .into_iter()
        .filter(|lrp| process_guids.contains(process_guid_of(&lrp.process_guid)))
        .collect();
    crate::deployments::shape_lrps(controller, &mut desired, &existing).await?;
    apply(controller, plan(desired, existing)).await
}

/// Syncs the given processes; failures are logged (the bulk sync retries them).
pub async fn sync_processes(controller: &Controller, process_guids: Vec<String>) {
    let guids: BTreeSet<String> = process_guids.into_iter().collect();
    if let Err(e) = sync_some(controller, &guids).await {
        tracing::warn!(error = %e, "nsync could not update the LRPs of {guids:?}; the bulk sync will retry");
    }
}

/// Syncs every process of `app_guid`.
pub async fn sync_app(controller: &Controller, app_guid: &str) {
    match controller
        .db
        .find::<Process>(Filter::new().eq("app_guid", app_guid))
        .await
    {
        Ok(processes) => {
            sync_processes(controller, processes.into_iter().map(|p| p.guid).collect()).await
        }
        Err(e) => {
            tracing::warn!(app = app_guid, error = %e, "nsync cannot read the app's processes")
        }
    }
}

/// One bulk pass: every DesiredLRP of `cf-apps` against every started process.
async fn bulk_sync(controller: &Controller) -> Result<(), NsyncError> {
    let _one_at_a_time = controller.nsync_lock.lock().await;
    let started = Filter::new().clause(
        "app_guid IN (SELECT guid FROM apps WHERE state = ? AND droplet_guid IS NOT NULL)",
        vec![AppState::Started.into()],
    );
    let mut desired = Vec::new();
    for process in controller.db.find::<Process>(started).await? {
        desired.extend(desired_lrp(controller, &process).await?);
    }
    let existing = existing_lrps(controller).await?;
    crate::deployments::shape_lrps(controller, &mut desired, &existing).await?;
    apply(controller, plan(desired, existing)).await
}

/// Bulk syncs at start and every `sync_interval`, then marks `cf-apps` fresh for two
/// intervals (the BBS only removes unknown LRPs of a fresh domain).
pub async fn run(controller: Arc<Controller>, cancel: CancellationToken) {
    let interval = controller.config.sync_interval;
    loop {
        match bulk_sync(&controller).await {
            Ok(()) => {
                if let Err(e) = controller
                    .bbs
                    .upsert_domain(CF_APPS_DOMAIN, interval * 2)
                    .await
                {
                    tracing::warn!(error = %e, "nsync cannot refresh the cf-apps domain");
                }
            }
            Err(e) => tracing::warn!(error = %e, "nsync bulk sync failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "6f1c1f3e-7d4b-4f7e-9a53-1f0c2b7a9e10";
    const V1: &str = "0b6d1f7c-2a7e-4c53-8d2e-5b0f3c9a1d21";
    const V2: &str = "9a2e4c6b-1d3f-4e5a-8b7c-6d5e4f3a2b10";

    fn lrp(version: &str, instances: u32) -> DesiredLrp {
        DesiredLrp {
            process_guid: format!("{P}-{version}"),
            domain: CF_APPS_DOMAIN.into(),
            instances,
            memory_mb: 256,
            disk_mb: 1024,
            ports: vec![8080],
            routes: Routes::default(),
            start_timeout_ms: START_TIMEOUT_MS,
            check_definition: None,
            log_guid: P.into(),
            log_source: "APP/PROC/WEB".into(),
            metric_tags: BTreeMap::new(),
            annotation: String::new(),
            placement_tags: vec![],
            action: RunAction {
                droplet_uri: "http://cc/d".into(),
                droplet_sha256: "00".repeat(32),
                command: "app.wasm".into(),
                env: vec![],
                log_rate_limit_bytes_per_second: None,
            },
            modification_tag: Default::default(),
        }
    }

    #[test]
    fn lrp_guids_carry_the_process_guid() {
        assert_eq!(process_guid_of(&format!("{P}-{V1}")), P);
        assert_eq!(process_guid_of("short"), "short");
    }

    #[test]
    fn plan_creates_missing_and_removes_extra_lrps() {
        let steps = plan(vec![lrp(V2, 1)], vec![lrp(V1, 1)]);
        assert_eq!(
            steps,
            vec![Step::Desire(lrp(V2, 1)), Step::Remove(format!("{P}-{V1}"))]
        );
        assert_eq!(plan(vec![lrp(V1, 2)], vec![lrp(V1, 2)]), vec![]);
    }

    #[test]
    fn plan_updates_instances_and_routes_in_place() {
        let mut want = lrp(V1, 3);
        want.routes.cf_router.push(CfRoute {
            hostnames: vec!["hello.apps.test".into()],
            port: 8080,
            route_service_url: None,
            isolation_segment: None,
        });
        let mut have = lrp(V1, 1);
        have.modification_tag.index = 7;
        let steps = plan(vec![want.clone()], vec![have]);
        assert_eq!(
            steps,
            vec![Step::Update(
                want.process_guid.clone(),
                DesiredLrpUpdate {
                    instances: Some(3),
                    routes: Some(want.routes.clone()),
                    ..Default::default()
                }
            )]
        );
    }

    #[test]
    fn route_uris_in_the_environment_do_not_restart_instances() {
        let vcap = |uris: &[&str]| EnvVar {
            name: "VCAP_APPLICATION".into(),
            value: json!({"application_name": "a", "uris": uris, "application_uris": uris})
                .to_string(),
        };
        let mut want = lrp(V1, 1);
        want.action.env.push(vcap(&["a.apps.test"]));
        let mut have = lrp(V1, 1);
        have.action.env.push(vcap(&[]));
        assert_eq!(plan(vec![want], vec![have]), vec![]);
    }

    #[test]
    fn a_new_isolation_segment_waits_for_a_new_lrp() {
        let mut want = lrp(V1, 2);
        want.placement_tags = vec!["iso1".into()];
        want.routes.cf_router.push(CfRoute {
            hostnames: vec!["a.apps.test".into()],
            port: 8080,
            route_service_url: None,
            isolation_segment: Some("iso1".into()),
        });
        let mut have = lrp(V1, 1);
        have.routes = want.routes.clone();
        have.routes.cf_router[0].isolation_segment = None;
        let steps = plan(vec![want.clone()], vec![have]);
        assert_eq!(
            steps,
            vec![Step::Update(
                want.process_guid.clone(),
                DesiredLrpUpdate {
                    instances: Some(2),
                    ..Default::default()
                }
            )],
            "the running LRP stays where it is"
        );
        let mut new = want.clone();
        new.process_guid = format!("{P}-{V2}");
        assert_eq!(
            plan(vec![new.clone()], vec![lrp(V1, 1)]),
            vec![Step::Desire(new), Step::Remove(format!("{P}-{V1}"))],
            "a new version is placed in the segment"
        );
    }

    #[test]
    fn routes_bound_to_a_route_service_get_an_entry_of_their_own() {
        let context = AppContext {
            app: App {
                guid: "a".into(),
                name: "a".into(),
                space_guid: "s".into(),
                state: AppState::Started,
                buildpacks: vec![],
                stack: String::new(),
                environment_variables: Default::default(),
                droplet_guid: None,
                created_at: String::new(),
                updated_at: String::new(),
            },
            space: None,
            org: None,
            uris: vec![
                "a.apps.test".into(),
                "b.apps.test".into(),
                "c.apps.test/x".into(),
            ],
            route_services: BTreeMap::from([("b.apps.test".into(), "https://rs.test".into())]),
            running_group: Default::default(),
            vcap_services: json!({}),
            isolation_segment: None,
        };
        let route = |hostnames: &[&str], url: Option<&str>| CfRoute {
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            port: 8080,
            route_service_url: url.map(str::to_string),
            isolation_segment: None,
        };
        assert_eq!(
            cf_routes(&context, 8080).cf_router,
            vec![
                route(&["a.apps.test", "c.apps.test/x"], None),
                route(&["b.apps.test"], Some("https://rs.test")),
            ]
        );
        let plain = AppContext {
            route_services: BTreeMap::new(),
            ..context
        };
        assert_eq!(
            cf_routes(&plain, 8080).cf_router,
            vec![route(
                &["a.apps.test", "b.apps.test", "c.apps.test/x"],
                None
            )],
            "one entry, as before route services"
        );
    }

    #[test]
    fn plan_replaces_lrps_whose_fixed_part_changed() {
        let mut want = lrp(V1, 1);
        want.action.droplet_uri = "http://cc:9000/d".into();
        let steps = plan(vec![want], vec![lrp(V1, 1)]);
        assert_eq!(
            steps,
            vec![Step::Replace {
                old: format!("{P}-{V1}"),
                process_guid: P.into()
            }]
        );
    }
}
