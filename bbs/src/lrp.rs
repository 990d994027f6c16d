//! DesiredLRPs and ActualLRPs: desiring, scaling and removing LRPs, and the ActualLRP
//! lifecycle the reps drive (claim, start, crash, remove) with Diego's transitions.

use std::collections::{HashMap, HashSet};

use sqlx::AnyConnection;

use crate::claims::{self, Call};
use crate::models::*;
use crate::{
    db, new_guid, now_ns, restart, truncate_reason, validate_guid, ActualLrpFilter, Bbs, BbsError,
    Changes, DesiredLrpFilter, RepCall,
};

impl Bbs {
    /// Creates the DesiredLRP and its UNCLAIMED ActualLRPs, and asks for their auction.
    pub async fn desire_lrp(&self, mut lrp: DesiredLrp) -> Result<(), BbsError> {
        validate_guid("process_guid", &lrp.process_guid)?;
        if lrp.domain.is_empty() {
            return Err(BbsError::InvalidRecord("domain is empty".into()));
        }
        lrp.modification_tag = ModificationTag {
            epoch: new_guid(),
            index: 0,
        };
        let now = now_ns();
        let mut changes = Changes::default();
        {
            let mut tx = self.writer.begin().await?;
            if db::desired_lrp(&mut tx, &lrp.process_guid).await?.is_some() {
                return Err(BbsError::AlreadyExists {
                    record: format!("DesiredLRP {}", lrp.process_guid),
                });
            }
            db::put_desired_lrp(&mut tx, &lrp).await?;
            let existing = db::actual_lrps(&mut tx, &by_process(&lrp.process_guid)).await?;
            changes.events.push(BbsEvent::DesiredLrpCreated {
                desired_lrp: lrp.clone(),
            });
            create_missing(&mut tx, &lrp, &existing, now, &mut changes).await?;
            tx.commit().await?;
        }
        self.apply(changes);
        Ok(())
    }

    /// Scales (creating or retiring ActualLRPs at once), re-routes or re-annotates.
    pub async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: DesiredLrpUpdate,
    ) -> Result<(), BbsError> {
        let now = now_ns();
        let mut changes = Changes::default();
        {
            let mut tx = self.writer.begin().await?;
            let before = db::desired_lrp(&mut tx, process_guid)
                .await?
                .ok_or_else(|| desired_not_found(process_guid))?;
            let mut after = before.clone();
            if let Some(instances) = update.instances {
                after.instances = instances;
            }
            if let Some(routes) = update.routes {
                after.routes = routes;
            }
            if let Some(annotation) = update.annotation {
                after.annotation = annotation;
            }
            if let Some(metric_tags) = update.metric_tags {
                after.metric_tags = metric_tags;
            }
            if after == before {
                return Ok(());
            }
            after.modification_tag.index += 1;
            db::put_desired_lrp(&mut tx, &after).await?;
            if after.instances != before.instances {
                let actuals = db::actual_lrps(&mut tx, &by_process(process_guid)).await?;
                create_missing(&mut tx, &after, &actuals, now, &mut changes).await?;
                let cells = db::rep_urls(&mut tx, now).await?;
                for actual in actuals {
                    if actual.key.index >= after.instances {
                        retire(&mut tx, actual, &cells, &mut changes).await?;
                    }
                }
            }
            changes
                .events
                .insert(0, BbsEvent::DesiredLrpChanged { before, after });
            tx.commit().await?;
        }
        self.apply(changes);
        Ok(())
    }

    /// Removes the DesiredLRP and retires all of its ActualLRPs.
    pub async fn remove_desired_lrp(&self, process_guid: &str) -> Result<(), BbsError> {
        let now = now_ns();
        let mut changes = Changes::default();
        {
            let mut tx = self.writer.begin().await?;
            let desired = db::desired_lrp(&mut tx, process_guid)
                .await?
                .ok_or_else(|| desired_not_found(process_guid))?;
            db::delete_desired_lrp(&mut tx, process_guid).await?;
            changes.events.push(BbsEvent::DesiredLrpRemoved {
                desired_lrp: desired,
            });
            let cells = db::rep_urls(&mut tx, now).await?;
            for actual in db::actual_lrps(&mut tx, &by_process(process_guid)).await? {
                retire(&mut tx, actual, &cells, &mut changes).await?;
            }
            tx.commit().await?;
        }
        self.apply(changes);
        Ok(())
    }

    pub async fn desired_lrps(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Result<Vec<DesiredLrp>, BbsError> {
        let mut conn = self.pool.acquire().await?;
        db::desired_lrps(&mut conn, filter).await
    }

    pub async fn desired_lrp_by_process_guid(
        &self,
        process_guid: &str,
    ) -> Result<DesiredLrp, BbsError> {
        let mut conn = self.pool.acquire().await?;
        db::desired_lrp(&mut conn, process_guid)
            .await?
            .ok_or_else(|| desired_not_found(process_guid))
    }

    // --- ActualLRPs (called by reps) ---

    pub async fn actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>, BbsError> {
        let mut conn = self.pool.acquire().await?;
        db::actual_lrps(&mut conn, filter).await
    }

    pub async fn claim_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        claims::submit(&self.claims, key, Call::Claim(instance_key.clone())).await
    }

    /// The instance runs. The SUSPECT or EVACUATING instance it replaces is deleted at
    /// once: a suspect whose cell is back is stopped there, and a draining cell learns
    /// on its next evacuate call that it may stop its instance.
    pub async fn start_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: NetInfo,
    ) -> Result<(), BbsError> {
        claims::submit(
            &self.claims,
            key,
            Call::Start(instance_key.clone(), net_info),
        )
        .await
    }

    /// A draining cell hands over its instance (Diego's EvacuateRunningActualLRP and
    /// EvacuateClaimedActualLRP). A RUNNING instance is copied to an EVACUATING row,
    /// which stays routed, while the ORDINARY row is auctioned again; a CLAIMED one is
    /// simply auctioned again. Answers whether the cell should keep the instance
    /// running: true until its replacement runs.
    pub async fn evacuate_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: NetInfo,
    ) -> Result<bool, BbsError> {
        validate_instance_key(instance_key)?;
        let now = now_ns();
        let mut changes = Changes::default();
        let keep = {
            let mut tx = self.writer.begin().await?;
            let held = db::actual_lrp(&mut tx, key)
                .await?
                .filter(|a| a.instance_key == *instance_key);
            let keep = match held {
                Some(ordinary) if ordinary.state == ActualLrpState::Running => {
                    let mut evacuating = ordinary.clone();
                    evacuating.net_info = net_info;
                    let mut rows = Vec::new();
                    put_copy(evacuating, Presence::Evacuating, &mut rows, &mut changes);
                    reauction(ordinary, now, &mut rows, &mut changes);
                    db::put_actual_lrps(&mut tx, &rows).await?;
                    true
                }
                Some(ordinary) => {
                    let mut rows = Vec::new();
                    reauction(ordinary, now, &mut rows, &mut changes);
                    db::put_actual_lrps(&mut tx, &rows).await?;
                    false
                }
                None => db::actual_lrp_with_presence(&mut tx, key, Presence::Evacuating)
                    .await?
                    .is_some_and(|a| a.instance_key == *instance_key),
            };
            tx.commit().await?;
            keep
        };
        self.apply(changes);
        Ok(keep)
    }

    /// Records a crash and applies CF's restart rule (immediate restart for the first
    /// crashes, then backoff; never after 200). The crash of an instance no longer
    /// desired removes its ActualLRP instead.
    pub async fn crash_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<(), BbsError> {
        let now = now_ns();
        let mut changes = Changes::default();
        {
            let mut tx = self.writer.begin().await?;
            let mut actual = db::actual_lrp(&mut tx, key)
                .await?
                .ok_or_else(|| actual_not_found(key))?;
            let holds = matches!(
                actual.state,
                ActualLrpState::Claimed | ActualLrpState::Running
            ) && actual.instance_key == *instance_key;
            if !holds {
                // A suspect or evacuating instance that crashes is simply gone: its
                // replacement takes over.
                let Some(copy) = held_copy(&mut tx, key, instance_key).await? else {
                    return Err(transition_error(&actual, ActualLrpState::Crashed));
                };
                db::delete_actual_lrp_with_presence(&mut tx, key, copy.presence).await?;
                tx.commit().await?;
                changes
                    .events
                    .push(BbsEvent::ActualLrpRemoved { actual_lrp: copy });
                self.apply(changes);
                return Ok(());
            }
            let before = actual.clone();
            actual.crash_count = restart::next_crash_count(&actual, now);
            actual.state = ActualLrpState::Crashed;
            actual.instance_key = ActualLrpInstanceKey::default();
            actual.net_info = NetInfo::default();
            actual.crash_reason = truncate_reason(reason);
            actual.since = now;
            actual.routable = false;
            actual.modification_tag.index += 1;
            changes.events.push(BbsEvent::ActualLrpChanged {
                before,
                after: actual.clone(),
            });
            changes.events.push(BbsEvent::ActualLrpCrashed {
                actual_lrp: actual.clone(),
            });
            let desired = db::desired_lrp(&mut tx, &key.process_guid).await?;
            if !desired.is_some_and(|d| key.index < d.instances) {
                db::delete_actual_lrp(&mut tx, key).await?;
                changes
                    .events
                    .push(BbsEvent::ActualLrpRemoved { actual_lrp: actual });
            } else if restart::should_restart(actual.crash_count, actual.since, now) {
                let mut rows = Vec::new();
                reauction(actual, now, &mut rows, &mut changes);
                db::put_actual_lrps(&mut tx, &rows).await?;
            } else {
                db::put_actual_lrp(&mut tx, &actual).await?;
            }
            tx.commit().await?;
        }
        self.apply(changes);
        Ok(())
    }

    /// Removes the ActualLRP held by `instance_key` (the instance stopped on its cell).
    pub async fn remove_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        let mut changes = Changes::default();
        {
            let mut tx = self.writer.begin().await?;
            let ordinary = db::actual_lrp(&mut tx, key)
                .await?
                .filter(|a| a.instance_key == *instance_key);
            let actual = match ordinary {
                Some(actual) => actual,
                None => held_copy(&mut tx, key, instance_key)
                    .await?
                    .ok_or_else(|| {
                        BbsError::NotFound(format!(
                            "ActualLRP {}/{} held by instance {:?}",
                            key.process_guid, key.index, instance_key.instance_guid
                        ))
                    })?,
            };
            db::delete_actual_lrp_with_presence(&mut tx, key, actual.presence).await?;
            changes
                .events
                .push(BbsEvent::ActualLrpRemoved { actual_lrp: actual });
            tx.commit().await?;
        }
        self.apply(changes);
        Ok(())
    }
}

/// Makes `copy` of an ActualLRP under `presence` (SUSPECT or EVACUATING), to be stored
/// beside its ORDINARY row: added to `rows`, which the caller writes.
pub(crate) fn put_copy(
    mut copy: ActualLrp,
    presence: Presence,
    rows: &mut Vec<ActualLrp>,
    changes: &mut Changes,
) {
    copy.presence = presence;
    copy.modification_tag.index += 1;
    rows.push(copy.clone());
    changes
        .events
        .push(BbsEvent::ActualLrpCreated { actual_lrp: copy });
}

/// Puts `actual` back to UNCLAIMED (added to `rows`, which the caller writes) and queues
/// its auction.
pub(crate) fn reauction(
    mut actual: ActualLrp,
    now: i64,
    rows: &mut Vec<ActualLrp>,
    changes: &mut Changes,
) {
    let before = actual.clone();
    unclaim(&mut actual, now);
    rows.push(actual.clone());
    changes.auction_lrps.push(actual.key.clone());
    changes.events.push(BbsEvent::ActualLrpChanged {
        before,
        after: actual,
    });
}

/// The SUSPECT or EVACUATING copy at `key`, if `instance_key` holds it.
async fn held_copy(
    conn: &mut AnyConnection,
    key: &ActualLrpKey,
    instance_key: &ActualLrpInstanceKey,
) -> Result<Option<ActualLrp>, BbsError> {
    for presence in [Presence::Suspect, Presence::Evacuating] {
        let copy = db::actual_lrp_with_presence(conn, key, presence)
            .await?
            .filter(|a| a.instance_key == *instance_key);
        if copy.is_some() {
            return Ok(copy);
        }
    }
    Ok(None)
}

fn by_process(process_guid: &str) -> ActualLrpFilter {
    ActualLrpFilter {
        process_guid: Some(process_guid.to_string()),
        ..Default::default()
    }
}

fn desired_not_found(process_guid: &str) -> BbsError {
    BbsError::NotFound(format!("DesiredLRP {process_guid}"))
}

pub(crate) fn actual_not_found(key: &ActualLrpKey) -> BbsError {
    BbsError::NotFound(format!("ActualLRP {}/{}", key.process_guid, key.index))
}

fn transition_error(actual: &ActualLrp, to: ActualLrpState) -> BbsError {
    BbsError::InvalidTransition {
        record: format!("ActualLRP {}/{}", actual.key.process_guid, actual.key.index),
        from: actual.state.as_str().to_string(),
        to: to.as_str().to_string(),
    }
}

/// A new UNCLAIMED ActualLRP.
pub(crate) fn unclaimed(key: ActualLrpKey, now: i64) -> ActualLrp {
    ActualLrp {
        key,
        instance_key: ActualLrpInstanceKey::default(),
        net_info: NetInfo::default(),
        crash_count: 0,
        crash_reason: String::new(),
        placement_error: String::new(),
        state: ActualLrpState::Unclaimed,
        since: now,
        modification_tag: ModificationTag {
            epoch: new_guid(),
            index: 0,
        },
        presence: Presence::Ordinary,
        routable: false,
    }
}

/// Back to UNCLAIMED for another auction; the crash history stays.
pub(crate) fn unclaim(actual: &mut ActualLrp, now: i64) {
    actual.state = ActualLrpState::Unclaimed;
    actual.instance_key = ActualLrpInstanceKey::default();
    actual.net_info = NetInfo::default();
    actual.placement_error.clear();
    actual.routable = false;
    actual.since = now;
    actual.modification_tag.index += 1;
}

pub(crate) fn claim(
    actual: &mut ActualLrp,
    instance_key: &ActualLrpInstanceKey,
    now: i64,
) -> Result<bool, BbsError> {
    validate_instance_key(instance_key)?;
    let same = actual.instance_key == *instance_key;
    match actual.state {
        ActualLrpState::Claimed if same => return Ok(false),
        ActualLrpState::Unclaimed | ActualLrpState::Crashed => {}
        ActualLrpState::Running if same => {}
        _ => return Err(transition_error(actual, ActualLrpState::Claimed)),
    }
    actual.state = ActualLrpState::Claimed;
    actual.instance_key = instance_key.clone();
    actual.net_info = NetInfo::default();
    actual.placement_error.clear();
    actual.routable = false;
    actual.since = now;
    Ok(true)
}

pub(crate) fn start(
    actual: &mut ActualLrp,
    instance_key: &ActualLrpInstanceKey,
    net_info: NetInfo,
    now: i64,
) -> Result<bool, BbsError> {
    validate_instance_key(instance_key)?;
    let same = actual.instance_key == *instance_key;
    match actual.state {
        ActualLrpState::Running if same && actual.net_info == net_info => return Ok(false),
        ActualLrpState::Unclaimed | ActualLrpState::Crashed => {}
        ActualLrpState::Claimed | ActualLrpState::Running if same => {}
        _ => return Err(transition_error(actual, ActualLrpState::Running)),
    }
    if actual.state != ActualLrpState::Running {
        actual.since = now;
    }
    actual.state = ActualLrpState::Running;
    actual.instance_key = instance_key.clone();
    actual.net_info = net_info;
    actual.placement_error.clear();
    actual.routable = true;
    Ok(true)
}

fn validate_instance_key(instance_key: &ActualLrpInstanceKey) -> Result<(), BbsError> {
    if instance_key.instance_guid.is_empty() || instance_key.cell_id.is_empty() {
        return Err(BbsError::InvalidRecord(
            "instance_guid and cell_id must be set".into(),
        ));
    }
    Ok(())
}

/// Creates UNCLAIMED ActualLRPs for the indices of `desired` that `existing` lacks.
pub(crate) async fn create_missing(
    conn: &mut AnyConnection,
    desired: &DesiredLrp,
    existing: &[ActualLrp],
    now: i64,
    changes: &mut Changes,
) -> Result<(), BbsError> {
    let have: HashSet<u32> = existing.iter().map(|a| a.key.index).collect();
    let missing = (0..desired.instances)
        .filter(|i| !have.contains(i))
        .map(|index| ActualLrpKey {
            process_guid: desired.process_guid.clone(),
            index,
            domain: desired.domain.clone(),
        });
    let mut rows = Vec::new();
    for key in missing {
        create_unclaimed(key, now, &mut rows, changes);
    }
    db::put_actual_lrps(conn, &rows).await
}

/// A new UNCLAIMED ActualLRP at `key` (added to `rows`, which the caller writes), queued
/// for auction.
pub(crate) fn create_unclaimed(
    key: ActualLrpKey,
    now: i64,
    rows: &mut Vec<ActualLrp>,
    changes: &mut Changes,
) {
    let actual = unclaimed(key, now);
    rows.push(actual.clone());
    changes.auction_lrps.push(actual.key.clone());
    changes
        .events
        .push(BbsEvent::ActualLrpCreated { actual_lrp: actual });
}

/// Retires an ActualLRP no longer desired: rows without a running instance go at once;
/// a CLAIMED or RUNNING instance is stopped by its rep, which then removes the row
/// (or the row goes at once if its cell is gone).
pub(crate) async fn retire(
    conn: &mut AnyConnection,
    actual: ActualLrp,
    cells: &HashMap<String, String>,
    changes: &mut Changes,
) -> Result<(), BbsError> {
    if stop_on_cell(&actual, cells, changes) {
        return Ok(());
    }
    db::delete_actual_lrp(conn, &actual.key).await?;
    changes
        .events
        .push(BbsEvent::ActualLrpRemoved { actual_lrp: actual });
    Ok(())
}

/// Asks the rep of the cell holding `actual` (if CLAIMED or RUNNING there, and the cell
/// is present) to stop the instance; false if there is nothing to stop.
pub(crate) fn stop_on_cell(
    actual: &ActualLrp,
    cells: &HashMap<String, String>,
    changes: &mut Changes,
) -> bool {
    let on_cell = matches!(
        actual.state,
        ActualLrpState::Claimed | ActualLrpState::Running
    );
    let Some(rep_url) = cells.get(&actual.instance_key.cell_id).filter(|_| on_cell) else {
        return false;
    };
    changes.rep_calls.push(RepCall::StopLrp {
        rep_url: rep_url.clone(),
        process_guid: actual.key.process_guid.clone(),
        instance_guid: actual.instance_key.instance_guid.clone(),
    });
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wf_messaging::Bus;

    use super::*;
    use crate::testing::*;

    #[tokio::test]
    async fn desire_creates_unclaimed_instances() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let mut events = bbs.subscribe();
            bbs.desire_lrp(desired("web-v1", 3)).await.unwrap();

            let actuals = bbs.actual_lrps(&by_process("web-v1")).await.unwrap();
            let indices: Vec<u32> = actuals.iter().map(|a| a.key.index).collect();
            assert_eq!(indices, vec![0, 1, 2]);
            assert!(actuals.iter().all(|a| a.state == ActualLrpState::Unclaimed));
            assert!(matches!(
                events.recv().await.unwrap(),
                BbsEvent::DesiredLrpCreated { .. }
            ));
            assert!(matches!(
                events.recv().await.unwrap(),
                BbsEvent::ActualLrpCreated { .. }
            ));

            let stored = bbs.desired_lrp_by_process_guid("web-v1").await.unwrap();
            assert!(!stored.modification_tag.epoch.is_empty());
            assert!(matches!(
                bbs.desire_lrp(desired("web-v1", 1)).await,
                Err(BbsError::AlreadyExists { .. })
            ));
            assert!(matches!(
                bbs.desire_lrp(desired("bad guid!", 1)).await,
                Err(BbsError::InvalidRecord(_))
            ));
        }
    }

    #[tokio::test]
    async fn claim_start_and_crash_follow_the_restart_rule() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_lrp(desired("web-v1", 1)).await.unwrap();
            let key = key("web-v1", 0);

            for crash in 1..=3u32 {
                let ik = instance(&format!("i-{crash}"), "cell-0");
                bbs.claim_actual_lrp(&key, &ik).await.unwrap();
                assert!(matches!(
                    bbs.claim_actual_lrp(&key, &instance("other", "cell-1"))
                        .await,
                    Err(BbsError::InvalidTransition { .. })
                ));
                bbs.start_actual_lrp(&key, &ik, net_info(61000))
                    .await
                    .unwrap();
                let running = actual(&bbs, "web-v1", 0).await.unwrap();
                assert_eq!(running.state, ActualLrpState::Running);
                assert_eq!(running.instance_key, ik);
                assert!(running.routable);

                bbs.crash_actual_lrp(&key, &ik, "Exited with status 1")
                    .await
                    .unwrap();
                let crashed = actual(&bbs, "web-v1", 0).await.unwrap();
                assert_eq!(crashed.crash_count, crash);
                assert_eq!(crashed.crash_reason, "Exited with status 1");
                assert!(crashed.instance_key.is_empty());
                assert_eq!(crashed.net_info, NetInfo::default());
                // The first crashes go straight back to the auction; the third waits.
                let expected = if crash < 3 {
                    ActualLrpState::Unclaimed
                } else {
                    ActualLrpState::Crashed
                };
                assert_eq!(crashed.state, expected, "after crash {crash}");
            }
            // A crashed instance cannot crash again.
            assert!(matches!(
                bbs.crash_actual_lrp(&key, &instance("i-3", "cell-0"), "again")
                    .await,
                Err(BbsError::InvalidTransition { .. })
            ));
        }
    }

    #[tokio::test]
    async fn scale_down_stops_running_extras_and_deletes_unclaimed_ones() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let rep = FakeRep::start("cell-0", "z1", 4096).await;
            bbs.set_cell_presence(&rep.presence(), Duration::from_secs(60))
                .await
                .unwrap();
            bbs.desire_lrp(desired("web-v1", 3)).await.unwrap();
            for index in 0..2 {
                let ik = instance(&format!("i-{index}"), "cell-0");
                bbs.claim_actual_lrp(&key("web-v1", index), &ik)
                    .await
                    .unwrap();
                bbs.start_actual_lrp(&key("web-v1", index), &ik, net_info(61000 + index as u16))
                    .await
                    .unwrap();
            }

            let update = DesiredLrpUpdate {
                instances: Some(1),
                ..Default::default()
            };
            bbs.update_desired_lrp("web-v1", update).await.unwrap();

            assert!(
                actual(&bbs, "web-v1", 2).await.is_none(),
                "unclaimed extra deleted"
            );
            eventually("the rep to stop index 1", || async {
                rep.stops.lock().unwrap().clone() == vec![("web-v1".to_string(), "i-1".to_string())]
            })
            .await;
            // The rep reports the instance gone.
            bbs.remove_actual_lrp(&key("web-v1", 1), &instance("i-1", "cell-0"))
                .await
                .unwrap();
            let left = bbs.actual_lrps(&by_process("web-v1")).await.unwrap();
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].state, ActualLrpState::Running);

            // Removing the DesiredLRP stops the rest.
            bbs.remove_desired_lrp("web-v1").await.unwrap();
            eventually("the rep to stop index 0", || async {
                rep.stops.lock().unwrap().len() == 2
            })
            .await;
            // An instance that crashes once it is no longer desired is not restarted.
            bbs.crash_actual_lrp(&key("web-v1", 0), &instance("i-0", "cell-0"), "stopped")
                .await
                .unwrap();
            assert!(bbs
                .actual_lrps(&by_process("web-v1"))
                .await
                .unwrap()
                .is_empty());
        }
    }

    #[tokio::test]
    async fn evacuation_keeps_the_instance_until_its_replacement_runs() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_lrp(desired("web-v1", 2)).await.unwrap();
            let (draining, other) = (instance("i-0", "cell-0"), instance("i-1", "cell-1"));
            let key0 = key("web-v1", 0);
            bbs.claim_actual_lrp(&key0, &draining).await.unwrap();
            bbs.start_actual_lrp(&key0, &draining, net_info(61000))
                .await
                .unwrap();
            // A CLAIMED instance is just auctioned again.
            let key1 = key("web-v1", 1);
            bbs.claim_actual_lrp(&key1, &draining).await.unwrap();
            let keep = bbs
                .evacuate_actual_lrp(&key1, &draining, net_info(61001))
                .await
                .unwrap();
            assert!(!keep, "{db}");
            assert_eq!(
                actual(&bbs, "web-v1", 1).await.unwrap().state,
                ActualLrpState::Unclaimed
            );

            // A RUNNING one stays, EVACUATING and routable, while index 0 is re-placed.
            for _ in 0..2 {
                assert!(bbs
                    .evacuate_actual_lrp(&key0, &draining, net_info(61000))
                    .await
                    .unwrap());
            }
            let rows = bbs.actual_lrps(&by_process("web-v1")).await.unwrap();
            let evacuating: Vec<_> = rows
                .iter()
                .filter(|a| a.presence == Presence::Evacuating)
                .collect();
            assert_eq!(evacuating.len(), 1, "{db}");
            assert_eq!(evacuating[0].instance_key, draining);
            assert!(evacuating[0].routable);
            assert_eq!(
                actual(&bbs, "web-v1", 0).await.unwrap().state,
                ActualLrpState::Unclaimed
            );

            // The replacement runs: the copy goes, and the draining cell may stop.
            bbs.claim_actual_lrp(&key0, &other).await.unwrap();
            bbs.start_actual_lrp(&key0, &other, net_info(62000))
                .await
                .unwrap();
            assert!(!bbs
                .evacuate_actual_lrp(&key0, &draining, net_info(61000))
                .await
                .unwrap());
            let rows = bbs.actual_lrps(&by_process("web-v1")).await.unwrap();
            assert!(
                rows.iter().all(|a| a.presence == Presence::Ordinary),
                "{db}: {rows:?}"
            );
        }
    }

    #[tokio::test]
    async fn update_changes_routes_and_bumps_the_modification_tag() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_lrp(desired("web-v1", 1)).await.unwrap();
            let update = DesiredLrpUpdate {
                routes: Some(Routes::default()),
                ..Default::default()
            };
            bbs.update_desired_lrp("web-v1", update).await.unwrap();
            let lrp = bbs.desired_lrp_by_process_guid("web-v1").await.unwrap();
            assert!(lrp.routes.cf_router.is_empty());
            assert_eq!(lrp.modification_tag.index, 1);
            assert!(matches!(
                bbs.update_desired_lrp("missing", DesiredLrpUpdate::default())
                    .await,
                Err(BbsError::NotFound(_))
            ));
        }
    }
}
