//! The deployment updater (CF's): a deployment gives the app's web process a new
//! version (a new DesiredLRP) while the previous version's LRP keeps serving. Every
//! [`TICK`] the updater looks at each deployment under way: once all the instances the
//! new version was given are RUNNING, the new version gets up to `max_in_flight` more
//! and the old version keeps only what is still missing, so that running capacity
//! never drops below the process's instances. When the new version runs them all, the
//! old LRP goes and the deployment is DEPLOYED (FINALIZED). A canary deployment
//! (PREPAUSED) stops at its first running instance, PAUSED, with the old version
//! keeping every instance, until it is continued ([`resume`]) as a rolling one.
//!
//! [`shape_lrps`] is how nsync honours this: it sizes the new LRP and keeps the old one.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wf_bbs::{ActualLrpFilter, ActualLrpState, DesiredLrp};

use crate::db::{self, Deployment, DeploymentState, Filter, Process};
use crate::error::ApiError;
use crate::{nsync, Controller};

/// How often the updater looks at active deployments.
const TICK: Duration = Duration::from_millis(500);

/// What a deployment's LRPs should be given: (new instances, old instances), or `None`
/// once the new version runs everything (the deployment is done).
fn next_step(
    target: i64,
    new_instances: i64,
    running: i64,
    max_in_flight: i64,
) -> Option<(i64, i64)> {
    if running >= target {
        return None;
    }
    if running < new_instances {
        // Still starting what it was given: hold.
        return Some((new_instances, (target - running).max(0)));
    }
    let new = (running + max_in_flight.max(1)).min(target);
    Some((new, (target - running).max(0)))
}

/// The deployments under way (their LRPs are shaped by them).
async fn active(controller: &Controller) -> Result<Vec<Deployment>, sqlx::Error> {
    let states: Vec<String> = DeploymentState::ACTIVE
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    controller
        .db
        .find::<Deployment>(Filter::new().any_of("state", &states))
        .await
}

/// Sizes the LRPs of processes being deployed in `desired` (built from the CC
/// database): the new version runs its deployment's `new_instances`, and the previous
/// version's LRP (found in `existing`) stays with `old_instances`.
pub async fn shape_lrps(
    controller: &Controller,
    desired: &mut Vec<DesiredLrp>,
    existing: &[DesiredLrp],
) -> Result<(), sqlx::Error> {
    for deployment in active(controller).await? {
        let is_new = |lrp: &DesiredLrp| {
            nsync::process_guid_of(&lrp.process_guid) == deployment.process_guid
                && lrp.process_guid != deployment.old_lrp_guid
        };
        let Some(new) = desired.iter_mut().find(|lrp| is_new(lrp)) else {
            continue;
        };
        new.instances = clamp(deployment.new_instances);
        if deployment.old_instances > 0 {
            if let Some(old) = existing
                .iter()
                .find(|l| l.process_guid == deployment.old_lrp_guid)
            {
                desired.push(DesiredLrp {
                    instances: clamp(deployment.old_instances),
                    ..old.clone()
                });
            }
        }
    }
    Ok(())
}

fn clamp(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Runs the updater until cancelled.
pub async fn run(controller: Arc<Controller>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(e) = update_all(&controller).await {
                    tracing::warn!(error = %e, "the deployment updater failed; it tries again");
                }
            }
        }
    }
}

async fn update_all(controller: &Controller) -> Result<(), ApiError> {
    for deployment in active(controller).await? {
        if deployment.state != DeploymentState::Paused {
            update(controller, &deployment).await?;
        }
    }
    Ok(())
}

async fn update(controller: &Controller, deployment: &Deployment) -> Result<(), ApiError> {
    let Some(process) = controller
        .db
        .get::<Process>(&deployment.process_guid)
        .await?
    else {
        return finish(controller, deployment, "DEPLOYED").await;
    };
    let filter = ActualLrpFilter {
        process_guid: Some(nsync::lrp_guid(&process)),
        ..Default::default()
    };
    let running = controller
        .bbs
        .actual_lrps(&filter)
        .await?
        .iter()
        .filter(|lrp| lrp.state == ActualLrpState::Running)
        .count();
    let running = i64::try_from(running).unwrap_or(i64::MAX);
    if deployment.state == DeploymentState::Prepaused {
        // The canary: paused once its instance runs, the old version keeping the rest.
        if running >= deployment.new_instances {
            set_state(controller, deployment, DeploymentState::Paused, "PAUSED").await?;
        }
        return Ok(());
    }
    let step = next_step(
        process.instances,
        deployment.new_instances,
        running,
        deployment.max_in_flight,
    );
    match step {
        None => finish(controller, deployment, "DEPLOYED").await,
        Some((new, old)) if (new, old) != (deployment.new_instances, deployment.old_instances) => {
            controller
                .db
                .update(
                    "deployments",
                    &deployment.guid,
                    vec![
                        ("new_instances", db::Arg::Int(new)),
                        ("old_instances", db::Arg::Int(old)),
                        ("updated_at", db::now().into()),
                    ],
                )
                .await?;
            nsync::sync_processes(controller, vec![process.guid]).await;
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// A PAUSED canary goes on as a rolling deployment (its next tick grows the new version).
pub async fn resume(controller: &Controller, deployment: &Deployment) -> Result<(), ApiError> {
    set_state(
        controller,
        deployment,
        DeploymentState::Deploying,
        "DEPLOYING",
    )
    .await
}

async fn set_state(
    controller: &Controller,
    deployment: &Deployment,
    state: DeploymentState,
    reason: &str,
) -> Result<(), ApiError> {
    controller
        .db
        .update(
            "deployments",
            &deployment.guid,
            vec![("state", state.into()), ("status_reason", reason.into())],
        )
        .await?;
    Ok(())
}

/// Ends a deployment with `reason` (`DEPLOYED` or `SUPERSEDED`); nsync then lets the old
/// version's LRP go.
pub async fn finish(
    controller: &Controller,
    deployment: &Deployment,
    reason: &str,
) -> Result<(), ApiError> {
    controller
        .db
        .update(
            "deployments",
            &deployment.guid,
            vec![
                ("state", DeploymentState::Deployed.into()),
                ("status_value", "FINALIZED".into()),
                ("status_reason", reason.into()),
                ("old_instances", db::Arg::Int(0)),
                ("updated_at", db::now().into()),
            ],
        )
        .await?;
    nsync::sync_processes(controller, vec![deployment.process_guid.clone()]).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_never_drops_below_the_target() {
        // target 3: new 1 starting, old keeps 3.
        assert_eq!(next_step(3, 1, 0, 1), Some((1, 3)));
        // new 1 running: new gets 2, old keeps the 2 still missing.
        assert_eq!(next_step(3, 1, 1, 1), Some((2, 2)));
        assert_eq!(next_step(3, 2, 1, 1), Some((2, 2)));
        assert_eq!(next_step(3, 2, 2, 1), Some((3, 1)));
        assert_eq!(next_step(3, 3, 3, 1), None);
        assert_eq!(next_step(0, 0, 0, 1), None);
        // max_in_flight 2: two more at a time.
        assert_eq!(next_step(5, 1, 1, 2), Some((3, 4)));
        for max_in_flight in 1..4 {
            for target in 1..6 {
                let (mut new, mut running) = (max_in_flight.min(target), 0);
                while let Some((n, old)) = next_step(target, new, running, max_in_flight) {
                    assert!(
                        running + old >= target,
                        "capacity dropped at {running}/{target}"
                    );
                    assert!(n - running <= max_in_flight, "too many in flight");
                    new = n;
                    running = (running + 1).min(new);
                }
                assert_eq!(running, target);
            }
        }
    }
}
