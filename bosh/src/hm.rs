//! The health monitor and its resurrector, in the director's process: it listens to
//! agents' heartbeats on `hm.agent.heartbeat.*`, counts an instance's agent as
//! unresponsive once it has been silent for `unresponsive_after`, and runs a
//! "scan and fix" task per deployment that recreates those instances' VMs (persistent
//! disk re-attached, last spec applied, started). Meltdown protection: when at least
//! `minimum_down` instances and `percent_threshold` percent of a deployment are
//! unresponsive at once, it does not resurrect and says so in a task's log instead
//! (bosh-monitor's defaults: 5 and 20%). It acts a moment after a deployment's first
//! unresponsive agent ([`HmConfig::settle`]), so that agents failing together count
//! together.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;

use crate::agent::HEARTBEAT_PREFIX;
use crate::director::{db, Director, DirectorError};

#[derive(Debug, Clone)]
pub struct HmConfig {
    /// Silence after which an agent is unresponsive (BOSH: 60 s).
    pub unresponsive_after: Duration,
    /// How often agents are checked.
    pub check_interval: Duration,
    /// Whether unresponsive instances are recreated (else only reported in the log).
    pub resurrector: bool,
    /// Below this many unresponsive instances there is no meltdown (bosh-monitor: 5).
    pub minimum_down: usize,
    /// The share of a deployment, in percent, that must be down for a meltdown
    /// (bosh-monitor: 20).
    pub percent_threshold: usize,
}

impl Default for HmConfig {
    fn default() -> Self {
        HmConfig {
            unresponsive_after: Duration::from_secs(60),
            check_interval: Duration::from_secs(5),
            resurrector: true,
            minimum_down: 5,
            percent_threshold: 20,
        }
    }
}

impl HmConfig {
    /// How long the resurrector waits after a deployment's first unresponsive agent
    /// before acting, so that agents that failed together (whose last heartbeats lie up
    /// to a heartbeat interval apart) count together for meltdown protection: two checks,
    /// and at least a third of `unresponsive_after` (about one heartbeat interval).
    pub fn settle(&self) -> Duration {
        (self.check_interval * 2).max(self.unresponsive_after / 3)
    }
}

/// Whether `down` unresponsive instances out of `total` is a meltdown.
pub fn melting_down(down: usize, total: usize, config: &HmConfig) -> bool {
    down >= config.minimum_down.max(1) && down * 100 >= config.percent_threshold * total
}

/// Runs until `cancel`.
pub(crate) async fn run(director: Arc<Director>, bus: Bus, cancel: CancellationToken) {
    let mut heartbeats = match bus.subscribe(&format!("{HEARTBEAT_PREFIX}*")).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "the health monitor cannot subscribe to heartbeats");
            return;
        }
    };
    let mut monitor = Monitor {
        director,
        last_heard: HashMap::new(),
        meltdowns: HashSet::new(),
        fixing: HashMap::new(),
        reported: HashMap::new(),
        first_down: HashMap::new(),
    };
    let mut tick = tokio::time::interval(monitor.director.config.hm.check_interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            message = heartbeats.next() => {
                let Some(message) = message else { return };
                if let Some(agent_id) = message.subject.strip_prefix(HEARTBEAT_PREFIX) {
                    monitor.last_heard.insert(agent_id.to_string(), Instant::now());
                }
            }
            _ = tick.tick() => {
                if let Err(e) = monitor.check().await {
                    tracing::warn!(error = %e, "health check failed");
                }
            }
        }
    }
}

struct Monitor {
    director: Arc<Director>,
    /// Agent id -> last heartbeat (or when the monitor first saw the agent, so a new VM
    /// gets `unresponsive_after` to send its first).
    last_heard: HashMap<String, Instant>,
    /// Deployments whose meltdown was reported.
    meltdowns: HashSet<String>,
    /// Deployment -> its resurrection task, while it runs.
    fixing: HashMap<String, i64>,
    /// Deployment -> the unresponsive instances last logged.
    reported: HashMap<String, Vec<String>>,
    /// Deployment -> when it was first seen with unresponsive agents.
    first_down: HashMap<String, Instant>,
}

impl Monitor {
    async fn check(&mut self) -> Result<(), DirectorError> {
        let config = self.director.config.hm.clone();
        let instances = db::instances(self.director.pool(), None).await?;
        let now = Instant::now();
        let known: HashSet<&str> = instances
            .iter()
            .filter_map(|i| i.agent_id.as_deref())
            .collect();
        self.last_heard.retain(|id, _| known.contains(id.as_str()));
        let mut by_deployment: HashMap<String, (usize, Vec<db::Instance>)> = HashMap::new();
        for instance in &instances {
            let Some(agent_id) = &instance.agent_id else {
                continue;
            };
            let heard = *self.last_heard.entry(agent_id.clone()).or_insert(now);
            let entry = by_deployment
                .entry(instance.deployment.clone())
                .or_default();
            entry.0 += 1;
            if now.duration_since(heard) > config.unresponsive_after {
                entry.1.push(instance.clone());
            }
        }
        for (deployment, (total, down)) in by_deployment {
            if down.is_empty() {
                self.meltdowns.remove(&deployment);
                self.reported.remove(&deployment);
                self.first_down.remove(&deployment);
                continue;
            }
            let names: Vec<String> = down.iter().map(db::Instance::name).collect();
            if self.reported.get(&deployment) != Some(&names) {
                tracing::warn!(%deployment, instances = ?names, "unresponsive agents");
                self.reported.insert(deployment.clone(), names.clone());
            }
            let since = *self.first_down.entry(deployment.clone()).or_insert(now);
            if now.duration_since(since) < config.settle() {
                continue;
            }
            if let Some(task) = self.fixing.get(&deployment) {
                let running = db::task_by_id(self.director.pool(), *task)
                    .await?
                    .is_some_and(|(t, _)| t.state == "processing");
                if running {
                    continue;
                }
                self.fixing.remove(&deployment);
            }
            if !config.resurrector {
                continue;
            }
            if melting_down(down.len(), total, &config) {
                if self.meltdowns.insert(deployment.clone()) {
                    let message = format!(
                        "Meltdown: {} of {total} instances of deployment '{deployment}' are unresponsive ({}); not resurrecting",
                        down.len(),
                        names.join(", ")
                    );
                    self.director
                        .start_task("resurrection", Some(&deployment), move |task| async move {
                            task.log(&message).await;
                            Err(DirectorError::Failed(message))
                        })
                        .await?;
                }
                continue;
            }
            self.meltdowns.remove(&deployment);
            let director = self.director.clone();
            let silent = config.unresponsive_after;
            let task = self
                .director
                .start_task("scan and fix", Some(&deployment), move |task| async move {
                    let mut failed = Vec::new();
                    for instance in down {
                        task.log(format!(
                            "Resurrecting {} ({}): agent unresponsive for over {silent:?}",
                            instance.name(),
                            instance.index
                        ))
                        .await;
                        let name = instance.name();
                        // A deploy or recreate may have replaced the VM meanwhile.
                        let current = db::instances(director.pool(), Some(&instance.deployment))
                            .await?
                            .into_iter()
                            .find(|i| i.id == instance.id && i.agent_id == instance.agent_id);
                        let Some(instance) = current else {
                            task.log(format!("{name} was replaced meanwhile")).await;
                            continue;
                        };
                        if let Err(e) = director.recreate(&task, instance).await {
                            task.log(format!("Resurrecting {name} failed: {e}")).await;
                            failed.push(name);
                        }
                    }
                    if failed.is_empty() {
                        Ok(String::new())
                    } else {
                        Err(DirectorError::Failed(format!(
                            "not resurrected: {}",
                            failed.join(", ")
                        )))
                    }
                })
                .await?;
            self.fixing.insert(deployment, task);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meltdown_needs_both_a_count_and_a_share() {
        let config = HmConfig::default();
        assert!(
            !melting_down(1, 2, &config),
            "2 instances never melt down at minimum 5"
        );
        assert!(!melting_down(5, 100, &config));
        assert!(melting_down(5, 25, &config));
        assert!(melting_down(6, 10, &config));
        let small = HmConfig {
            minimum_down: 2,
            percent_threshold: 50,
            ..HmConfig::default()
        };
        assert!(!melting_down(1, 3, &small));
        assert!(melting_down(2, 3, &small));
        assert!(melting_down(2, 4, &small));
        assert!(!melting_down(2, 5, &small));
        assert_eq!(HmConfig::default().settle(), Duration::from_secs(20));
    }
}
