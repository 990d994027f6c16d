//! Deploying: a manifest is validated into a plan, then each instance group (one after
//! another when `serial`) is brought to it. Instances beyond the group's count are
//! deleted, missing ones created; an instance whose rendered spec or VM settings
//! changed is updated: drained and stopped, its VM recreated if needed (persistent
//! disk re-attached), the spec applied, its jobs started and watched. Changed
//! instances go canaries first, then in `max_in_flight` batches; a batch with a failing
//! instance stops the deploy and leaves the rest as they were. The same steps serve
//! recreate/restart/stop/start, cloud-check and the resurrector.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha1::Digest as _;

use super::db::{self, Instance, StoredRelease, VmConfig};
use super::{Director, DirectorError, TaskLog};
use crate::agent::{AgentState, ApplySpec, JobState, PackageSpec};
use crate::manifest::{self, GroupPlan, Plan, WatchTime};
use crate::release::{render_job, SpecValues};

/// How long a resurrected or started instance has to report running.
const DEFAULT_WATCH: WatchTime = WatchTime {
    min: Duration::ZERO,
    max: Duration::from_secs(120),
};

/// What `PUT /deployments/:name/jobs/...` asks of instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    Stop,
    Start,
    Restart,
    Recreate,
}

/// A problem cloud-check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub instance: String,
    pub vm_cid: String,
    /// `unresponsive_agent` or `missing_vm`.
    pub kind: String,
}

/// An instance with what its agent says right now, for `wf bosh instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    #[serde(flatten)]
    pub instance: Instance,
    /// The agent's job state, or `unresponsive agent`; empty without a VM.
    pub process_state: String,
}

impl Director {
    /// Validates `manifest` against the latest cloud config and what is uploaded.
    pub async fn plan(&self, manifest: &manifest::Manifest) -> Result<Plan, DirectorError> {
        let cloud = db::latest_cloud_config(&self.pool).await?.ok_or_else(|| {
            DirectorError::BadRequest("no cloud config: run update-cloud-config first".into())
        })?;
        let cloud = manifest::parse_cloud_config(&cloud)?;
        let releases: Vec<(String, String)> = db::releases(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.name, r.version))
            .collect();
        let stemcells: Vec<(String, String, String)> = db::stemcells(&self.pool)
            .await?
            .into_iter()
            .map(|s| (s.name, s.operating_system, s.version))
            .collect();
        Ok(manifest::plan(
            manifest,
            &cloud,
            &manifest::Uploaded {
                releases: &releases,
                stemcells: &stemcells,
            },
        )?)
    }

    /// Validates the manifest and starts the deploy task.
    pub async fn deploy(
        self: &Arc<Self>,
        yaml: String,
        recreate: bool,
    ) -> Result<i64, DirectorError> {
        let manifest = manifest::parse_manifest(&yaml)?;
        let plan = self.plan(&manifest).await?;
        let name = plan.name.clone();
        let director = self.clone();
        self.start_task("create deployment", Some(&name), move |task| async move {
            db::upsert_deployment(&director.pool, &plan.name, &yaml).await?;
            director.converge(&task, &plan, recreate).await?;
            Ok(format!("/deployments/{}", plan.name))
        })
        .await
    }

    async fn converge(
        self: &Arc<Self>,
        task: &TaskLog,
        plan: &Plan,
        recreate: bool,
    ) -> Result<(), DirectorError> {
        let releases = db::releases(&self.pool).await?;
        let stemcells = db::stemcells(&self.pool).await?;
        let groups: BTreeSet<&str> = plan.groups.iter().map(|g| g.name.as_str()).collect();
        for gone in db::instances(&self.pool, Some(&plan.name))
            .await?
            .into_iter()
            .filter(|i| !groups.contains(i.group.as_str()))
        {
            task.log(format!("Deleting unneeded instance {}", gone.name()))
                .await;
            self.delete_instance(&gone).await?;
        }
        let stemcell_cid = |group: &GroupPlan| {
            stemcells
                .iter()
                .find(|s| {
                    (s.name == group.stemcell.0 || s.operating_system == group.stemcell.0)
                        && s.version == group.stemcell.1
                })
                .map(|s| s.cid.clone())
        };
        if plan.serial {
            for group in &plan.groups {
                self.update_group(task, plan, group, &releases, stemcell_cid(group), recreate)
                    .await?;
            }
        } else {
            let updates = plan.groups.iter().map(|group| {
                self.update_group(task, plan, group, &releases, stemcell_cid(group), recreate)
            });
            for result in join_all(updates).await {
                result?;
            }
        }
        task.log("Deployment done").await;
        Ok(())
    }

    async fn update_group(
        self: &Arc<Self>,
        task: &TaskLog,
        plan: &Plan,
        group: &GroupPlan,
        releases: &[StoredRelease],
        stemcell_cid: Option<String>,
        recreate: bool,
    ) -> Result<(), DirectorError> {
        let stemcell_cid = stemcell_cid.ok_or_else(|| {
            DirectorError::Failed(format!(
                "stemcell {}/{} is gone",
                group.stemcell.0, group.stemcell.1
            ))
        })?;
        let existing = db::instances(&self.pool, Some(&plan.name)).await?;
        let mut current: BTreeMap<u32, Instance> = BTreeMap::new();
        for instance in existing.into_iter().filter(|i| i.group == group.name) {
            if instance.index >= group.instances {
                task.log(format!(
                    "Deleting unneeded instance {} ({})",
                    instance.name(),
                    instance.index
                ))
                .await;
                self.delete_instance(&instance).await?;
            } else {
                current.insert(instance.index, instance);
            }
        }
        let mut taken: BTreeSet<Ipv4Addr> = db::instances(&self.pool, None)
            .await?
            .iter()
            .filter_map(|i| i.ip.parse().ok())
            .collect();
        let no_ip = |index: u32| {
            DirectorError::Failed(format!(
                "no IP left on network '{}' for {}/{index}",
                group.network.name, group.name
            ))
        };
        for index in 0..group.instances {
            let az = group.azs.get(index as usize).cloned().unwrap_or_default();
            if let Some(instance) = current.get_mut(&index) {
                // An instance keeps its address unless the manifest gives it another
                // static IP or the network no longer holds it; a new address changes
                // its VM's networks, so its VM is recreated.
                if group.network.keeps(index, &instance.ip) {
                    continue;
                }
                let ip = group
                    .network
                    .ip_for(index, &instance.az, &taken)
                    .ok_or_else(|| no_ip(index))?;
                taken.insert(ip);
                task.log(format!(
                    "{} moves from {} to {ip}",
                    instance.name(),
                    instance.ip
                ))
                .await;
                instance.ip = ip.to_string();
                db::save_instance(&self.pool, instance).await?;
                continue;
            }
            let ip = group
                .network
                .ip_for(index, &az, &taken)
                .ok_or_else(|| no_ip(index))?;
            taken.insert(ip);
            let instance = Instance {
                id: uuid::Uuid::new_v4().to_string(),
                deployment: plan.name.clone(),
                group: group.name.clone(),
                index,
                az,
                ip: ip.to_string(),
                state: "started".into(),
                agent_id: None,
                vm_cid: None,
                disk_cid: None,
                vm_config: None,
                spec: None,
            };
            db::save_instance(&self.pool, &instance).await?;
            current.insert(index, instance);
        }
        let mut changed = Vec::new();
        for instance in current.into_values() {
            let spec = render_spec(plan, group, &instance, releases)?;
            let vm_config = vm_config(group, &instance, &stemcell_cid);
            let unchanged = instance.vm_cid.is_some()
                && !recreate
                && instance.vm_config.as_ref() == Some(&vm_config)
                && instance.spec.as_ref().map(|s| &s.configuration_hash)
                    == Some(&spec.configuration_hash);
            if !unchanged {
                changed.push((instance, spec, vm_config));
            }
        }
        if changed.is_empty() {
            task.log(format!("Instance group {}: no changes", group.name))
                .await;
            return Ok(());
        }
        let policy = &group.update;
        let max_in_flight = policy.max_in_flight.for_instances(group.instances);
        let batches = manifest::batches(changed.len(), policy.canaries, max_in_flight);
        let mut changed: Vec<Option<_>> = changed.into_iter().map(Some).collect();
        for (n, batch) in batches.iter().enumerate() {
            let canary = n == 0 && policy.canaries > 0;
            let watch = if canary {
                policy.canary_watch_time
            } else {
                policy.update_watch_time
            };
            let updates = batch.iter().map(|&i| {
                let (instance, spec, vm_config) = changed[i].take().expect("each once");
                let label = if canary { " (canary)" } else { "" };
                async move {
                    task.log(format!(
                        "Updating instance {} ({}){label}",
                        instance.name(),
                        instance.index
                    ))
                    .await;
                    let name = instance.name();
                    let outcome = self
                        .update_instance(task, instance, spec, vm_config, recreate, watch)
                        .await;
                    match &outcome {
                        Ok(()) => task.log(format!("Updated instance {name}{label}")).await,
                        Err(e) => {
                            task.log(format!("Failed updating instance {name}{label}: {e}"))
                                .await
                        }
                    }
                    outcome
                }
            });
            for outcome in join_all(updates).await {
                outcome?;
            }
        }
        Ok(())
    }

    /// Brings one instance to `spec` on a VM made with `vm_config`, then (unless it is
    /// stopped) starts it and watches it run.
    async fn update_instance(
        &self,
        task: &TaskLog,
        mut instance: Instance,
        spec: ApplySpec,
        vm_config: VmConfig,
        recreate: bool,
        watch: WatchTime,
    ) -> Result<(), DirectorError> {
        if instance.vm_cid.is_some() {
            let recreate = recreate || instance.vm_config.as_ref() != Some(&vm_config);
            let stopped = self.drain_and_stop(&instance).await;
            if recreate {
                if let Err(e) = stopped {
                    task.log(format!("{}: {e}; recreating anyway", instance.name()))
                        .await;
                }
                self.delete_vm(&mut instance).await?;
            } else {
                stopped?;
            }
        }
        instance.vm_config = Some(vm_config);
        if instance.vm_cid.is_none() {
            self.create_vm(task, &mut instance).await?;
        }
        self.apply_and_start(&mut instance, spec, watch).await
    }

    async fn apply_and_start(
        &self,
        instance: &mut Instance,
        spec: ApplySpec,
        watch: WatchTime,
    ) -> Result<(), DirectorError> {
        let agent_id = instance.agent_id.clone().expect("a VM has an agent");
        self.agent(
            &agent_id,
            "apply",
            vec![serde_json::to_value(&spec).expect("spec JSON")],
        )
        .await?;
        instance.spec = Some(spec);
        db::save_instance(&self.pool, instance).await?;
        if instance.state == "started" {
            self.agent(&agent_id, "start", vec![]).await?;
            self.watch(instance, watch).await?;
        }
        Ok(())
    }

    /// Waits `watch.min`, then until `watch.max` for the agent to report running.
    async fn watch(&self, instance: &Instance, watch: WatchTime) -> Result<(), DirectorError> {
        let agent_id = instance.agent_id.clone().unwrap_or_default();
        let started = Instant::now();
        tokio::time::sleep(watch.min).await;
        loop {
            let last = match self.agent_state(&agent_id).await {
                Ok(state) if state.job_state == JobState::Running => return Ok(()),
                Ok(state) => state.job_state.as_str().to_string(),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= watch.max {
                let jobs: Vec<&str> = instance
                    .spec
                    .iter()
                    .flat_map(|s| s.jobs.iter().map(|j| j.name.as_str()))
                    .collect();
                return Err(DirectorError::Failed(format!(
                    "'{}' ({}) is not running after update ({last} after {:?}). Review logs for failed jobs: {}",
                    instance.name(),
                    instance.index,
                    watch.max,
                    jobs.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn agent_state(&self, agent_id: &str) -> Result<AgentState, DirectorError> {
        let value = self
            .agent_within(agent_id, "get_state", vec![], Duration::from_secs(5))
            .await?;
        serde_json::from_value(value).map_err(|e| DirectorError::Agent {
            agent_id: agent_id.to_string(),
            method: "get_state".into(),
            message: format!("invalid state: {e}"),
        })
    }

    async fn drain_and_stop(&self, instance: &Instance) -> Result<(), DirectorError> {
        let Some(agent_id) = &instance.agent_id else {
            return Ok(());
        };
        self.agent(agent_id, "drain", vec![json!("update"), json!({})])
            .await?;
        self.agent(agent_id, "stop", vec![]).await?;
        Ok(())
    }

    /// Creates the instance's VM from its `vm_config`, waits for its agent and attaches
    /// its persistent disk (creating it the first time).
    async fn create_vm(
        &self,
        task: &TaskLog,
        instance: &mut Instance,
    ) -> Result<(), DirectorError> {
        let config = instance
            .vm_config
            .clone()
            .expect("vm_config is set before create_vm");
        let agent_id = uuid::Uuid::new_v4().to_string();
        task.log(format!("Creating VM for instance {}", instance.name()))
            .await;
        let disks: Vec<String> = instance.disk_cid.iter().cloned().collect();
        let (vm_cid, _) = self
            .cpi
            .create_vm(
                &agent_id,
                &config.stemcell_cid,
                &config.cloud_properties,
                &config.networks,
                &disks,
                &config.env,
            )
            .await?;
        instance.vm_cid = Some(vm_cid.clone());
        instance.agent_id = Some(agent_id.clone());
        db::save_instance(&self.pool, instance).await?;
        let metadata = json!({
            "director": self.config.name,
            "deployment": instance.deployment,
            "job": instance.group,
            "index": instance.index.to_string(),
            "id": instance.id,
            "name": instance.name(),
        });
        if let Err(e) = self.cpi.set_vm_metadata(&vm_cid, &metadata).await {
            if e.cloud_kind() != Some(crate::cpi::NOT_IMPLEMENTED) {
                return Err(e.into());
            }
        }
        self.wait_for_agent(&agent_id).await?;
        if config.persistent_disk > 0 {
            let disk = match &instance.disk_cid {
                Some(disk) => disk.clone(),
                None => {
                    let disk = self
                        .cpi
                        .create_disk(
                            config.persistent_disk,
                            &config.disk_cloud_properties,
                            Some(&vm_cid),
                        )
                        .await?;
                    instance.disk_cid = Some(disk.clone());
                    db::save_instance(&self.pool, instance).await?;
                    disk
                }
            };
            self.cpi.attach_disk(&vm_cid, &disk).await?;
            self.agent(&agent_id, "mount_disk", vec![json!(disk)])
                .await?;
        }
        Ok(())
    }

    async fn wait_for_agent(&self, agent_id: &str) -> Result<(), DirectorError> {
        let deadline = Instant::now() + self.config.agent_wait;
        loop {
            match self
                .agent_within(agent_id, "ping", vec![], Duration::from_secs(2))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(DirectorError::Failed(format!(
                        "timed out after {:?} waiting for agent {agent_id}: {e}",
                        self.config.agent_wait
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Deletes the instance's VM (one the CPI no longer knows counts as deleted).
    async fn delete_vm(&self, instance: &mut Instance) -> Result<(), DirectorError> {
        if let Some(vm) = instance.vm_cid.take() {
            match self.cpi.delete_vm(&vm).await {
                Err(e) if !e.is_not_found() => {
                    instance.vm_cid = Some(vm);
                    return Err(e.into());
                }
                _ => {}
            }
        }
        instance.agent_id = None;
        db::save_instance(&self.pool, instance).await
    }

    /// Stops the instance if its agent answers, deletes its VM and disk and its record.
    async fn delete_instance(&self, instance: &Instance) -> Result<(), DirectorError> {
        let mut instance = instance.clone();
        if let Some(agent_id) = &instance.agent_id {
            if self
                .agent_within(agent_id, "ping", vec![], Duration::from_secs(5))
                .await
                .is_ok()
            {
                if let Err(e) = self.drain_and_stop(&instance).await {
                    tracing::warn!(instance = %instance.name(), error = %e, "not stopped before deletion");
                }
            }
        }
        self.delete_vm(&mut instance).await?;
        if let Some(disk) = &instance.disk_cid {
            match self.cpi.delete_disk(disk).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        db::delete_instance(&self.pool, &instance.id).await
    }

    /// Starts the delete-deployment task.
    pub async fn delete_deployment(self: &Arc<Self>, name: &str) -> Result<i64, DirectorError> {
        self.deployment_manifest(name).await?;
        let (director, name) = (self.clone(), name.to_string());
        self.start_task(
            "delete deployment",
            Some(&name.clone()),
            move |task| async move {
                for instance in db::instances(&director.pool, Some(&name)).await? {
                    task.log(format!("Deleting instance {}", instance.name()))
                        .await;
                    director.delete_instance(&instance).await?;
                }
                db::delete_deployment(&director.pool, &name).await?;
                task.log(format!("Deleted deployment {name}")).await;
                Ok(format!("/deployments/{name}"))
            },
        )
        .await
    }

    pub async fn deployment_manifest(&self, name: &str) -> Result<String, DirectorError> {
        db::deployments(&self.pool)
            .await?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, manifest)| manifest)
            .ok_or_else(|| DirectorError::NotFound(format!("Deployment '{name}' doesn't exist")))
    }

    /// The deployment's instances with their agents' job states (asked concurrently).
    pub async fn instance_infos(
        &self,
        deployment: &str,
    ) -> Result<Vec<InstanceInfo>, DirectorError> {
        self.deployment_manifest(deployment).await?;
        let instances = db::instances(&self.pool, Some(deployment)).await?;
        Ok(join_all(instances.into_iter().map(|instance| async move {
            let process_state = match &instance.agent_id {
                None => String::new(),
                Some(agent_id) => match self.agent_state(agent_id).await {
                    Ok(state) => state.job_state.as_str().to_string(),
                    Err(_) => "unresponsive agent".into(),
                },
            };
            InstanceInfo {
                instance,
                process_state,
            }
        }))
        .await)
    }

    /// Starts a task that stops, starts, restarts or recreates the deployment's
    /// instances of `group` (all groups with `None`), or one of them (`id` or index).
    pub async fn change_instances(
        self: &Arc<Self>,
        deployment: &str,
        group: Option<String>,
        instance: Option<String>,
        action: InstanceAction,
    ) -> Result<i64, DirectorError> {
        self.deployment_manifest(deployment).await?;
        let selected: Vec<Instance> = db::instances(&self.pool, Some(deployment))
            .await?
            .into_iter()
            .filter(|i| group.as_ref().is_none_or(|g| &i.group == g))
            .filter(|i| {
                instance
                    .as_ref()
                    .is_none_or(|sel| &i.id == sel || &i.index.to_string() == sel)
            })
            .collect();
        if selected.is_empty() {
            return Err(DirectorError::NotFound("no instance matches".into()));
        }
        let verb = match action {
            InstanceAction::Stop => "stop",
            InstanceAction::Start => "start",
            InstanceAction::Restart => "restart",
            InstanceAction::Recreate => "recreate",
        };
        let director = self.clone();
        self.start_task(
            &format!("{verb} instances"),
            Some(deployment),
            move |task| async move {
                for mut instance in selected {
                    task.log(format!("{verb} {} ({})", instance.name(), instance.index))
                        .await;
                    let stop = matches!(action, InstanceAction::Stop | InstanceAction::Restart);
                    if stop && instance.agent_id.is_some() {
                        director.drain_and_stop(&instance).await?;
                    }
                    instance.state = if action == InstanceAction::Stop {
                        "stopped".into()
                    } else {
                        "started".into()
                    };
                    db::save_instance(&director.pool, &instance).await?;
                    match action {
                        InstanceAction::Stop => {}
                        InstanceAction::Start | InstanceAction::Restart => {
                            let agent_id = instance.agent_id.clone().ok_or_else(|| {
                                DirectorError::Failed(format!("{} has no VM", instance.name()))
                            })?;
                            director.agent(&agent_id, "start", vec![]).await?;
                            director.watch(&instance, DEFAULT_WATCH).await?;
                        }
                        InstanceAction::Recreate => director.recreate(&task, instance).await?,
                    }
                }
                Ok(String::new())
            },
        )
        .await
    }

    /// Recreates an instance's VM as it was (same VM settings, persistent disk
    /// re-attached, last spec applied) and starts it unless it is stopped: `recreate`,
    /// cloud-check's fix and the resurrector.
    pub async fn recreate(
        &self,
        task: &TaskLog,
        mut instance: Instance,
    ) -> Result<(), DirectorError> {
        let (Some(spec), Some(_)) = (instance.spec.clone(), instance.vm_config.clone()) else {
            return Err(DirectorError::Failed(format!(
                "{} was never deployed",
                instance.name()
            )));
        };
        if let Some(agent_id) = &instance.agent_id {
            if self
                .agent_within(agent_id, "ping", vec![], Duration::from_secs(5))
                .await
                .is_ok()
            {
                if let Err(e) = self.drain_and_stop(&instance).await {
                    task.log(format!("{}: {e}; recreating anyway", instance.name()))
                        .await;
                }
            }
        }
        self.delete_vm(&mut instance).await?;
        self.create_vm(task, &mut instance).await?;
        self.apply_and_start(&mut instance, spec, DEFAULT_WATCH)
            .await
    }

    /// Instances of `deployment` whose agent does not answer (or whose VM is gone).
    pub async fn scan(&self, deployment: &str) -> Result<Vec<(Instance, Problem)>, DirectorError> {
        let instances = db::instances(&self.pool, Some(deployment)).await?;
        let checks =
            instances
                .into_iter()
                .filter(|i| i.vm_cid.is_some())
                .map(|instance| async move {
                    let agent_id = instance.agent_id.clone().unwrap_or_default();
                    if self
                        .agent_within(&agent_id, "ping", vec![], Duration::from_secs(5))
                        .await
                        .is_ok()
                    {
                        return Ok(None);
                    }
                    let vm_cid = instance.vm_cid.clone().unwrap_or_default();
                    let kind = if self.cpi.has_vm(&vm_cid).await? {
                        "unresponsive_agent"
                    } else {
                        "missing_vm"
                    };
                    let problem = Problem {
                        instance: instance.name(),
                        vm_cid,
                        kind: kind.into(),
                    };
                    Ok::<_, DirectorError>(Some((instance, problem)))
                });
        let mut problems = Vec::new();
        for found in join_all(checks).await {
            problems.extend(found?);
        }
        Ok(problems)
    }

    /// Starts the cloud-check task: reports problems, and with `resolve` recreates the
    /// instances that have them. Its result is the problems as JSON.
    pub async fn cloud_check(
        self: &Arc<Self>,
        deployment: &str,
        resolve: bool,
    ) -> Result<i64, DirectorError> {
        self.deployment_manifest(deployment).await?;
        let (director, name) = (self.clone(), deployment.to_string());
        self.start_task("scan cloud", Some(deployment), move |task| async move {
            let problems = director.scan(&name).await?;
            task.log(format!("Found {} problems", problems.len())).await;
            for (instance, problem) in &problems {
                task.log(format!(
                    "{}: {} (VM {})",
                    problem.instance, problem.kind, problem.vm_cid
                ))
                .await;
                if resolve {
                    task.log(format!("Recreating {}", instance.name())).await;
                    director.recreate(&task, instance.clone()).await?;
                }
            }
            let list: Vec<&Problem> = problems.iter().map(|(_, p)| p).collect();
            Ok(serde_json::to_string(&list).expect("JSON"))
        })
        .await
    }
}

/// The apply spec of `instance`: each job rendered with its properties and the
/// instance's `spec` values, the release's packages, and a hash of it all.
fn render_spec(
    plan: &Plan,
    group: &GroupPlan,
    instance: &Instance,
    releases: &[StoredRelease],
) -> Result<ApplySpec, DirectorError> {
    let values = SpecValues {
        deployment: plan.name.clone(),
        name: group.name.clone(),
        index: instance.index,
        id: instance.id.clone(),
        az: instance.az.clone(),
        address: instance.ip.clone(),
        ip: instance.ip.clone(),
        bootstrap: instance.index == 0,
    };
    let mut jobs = Vec::new();
    let mut packages = BTreeMap::new();
    for job_ref in &group.jobs {
        let version = &plan.releases[&job_ref.release];
        let release = releases
            .iter()
            .find(|r| r.name == job_ref.release && &r.version == version)
            .ok_or_else(|| {
                DirectorError::Failed(format!("release {}/{version} is gone", job_ref.release))
            })?;
        let job = release
            .jobs
            .iter()
            .find(|j| j.spec.name == job_ref.name)
            .ok_or_else(|| {
                DirectorError::BadRequest(format!(
                    "instance_groups[{}].jobs: release '{}' has no job '{}'",
                    group.name, job_ref.release, job_ref.name
                ))
            })?;
        jobs.push(render_job(
            job,
            &release.name,
            &job_ref.properties,
            &values,
        )?);
        for name in &job.spec.packages {
            let package = release
                .packages
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| {
                    DirectorError::Failed(format!("release {} has no package {name}", release.name))
                })?;
            packages.insert(
                name.clone(),
                PackageSpec {
                    name: name.clone(),
                    version: package.version.clone(),
                    sha1: package.sha1.clone(),
                    blobstore_id: package.blobstore_id.clone(),
                },
            );
        }
    }
    let mut spec = ApplySpec {
        deployment: plan.name.clone(),
        name: group.name.clone(),
        index: instance.index,
        id: instance.id.clone(),
        az: (!instance.az.is_empty()).then(|| instance.az.clone()),
        networks: group
            .network
            .settings(instance.ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        jobs,
        packages,
        persistent_disk: group.persistent_disk,
        configuration_hash: String::new(),
    };
    let digest = sha1::Sha1::digest(serde_json::to_vec(&spec).expect("spec JSON"));
    spec.configuration_hash = hex::encode(digest);
    Ok(spec)
}

fn vm_config(group: &GroupPlan, instance: &Instance, stemcell_cid: &str) -> VmConfig {
    VmConfig {
        stemcell_cid: stemcell_cid.to_string(),
        cloud_properties: group.vm_cloud_properties.clone(),
        networks: group
            .network
            .settings(instance.ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        env: if group.env.is_null() {
            json!({})
        } else {
            group.env.clone()
        },
        persistent_disk: group.persistent_disk,
        disk_cloud_properties: group.disk_cloud_properties.clone(),
    }
}
