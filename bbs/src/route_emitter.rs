//! The route-emitter: publishes `router.register` for every RUNNING, routable ActualLRP
//! whose DesiredLRP has `cf-router` routes, and `router.unregister` when such an instance
//! stops or its routes change.
//!
//! As Diego's, it keeps its routing table in memory and updates it from the BBS's
//! events: an ActualLRP event changes the registrations of that one instance, with the
//! DesiredLRP's routes as last seen; a DesiredLRP event re-reads that process. It
//! re-publishes the whole table every `register_interval` and whenever a router
//! announces itself on `router.start`, and re-reads the whole BBS every
//! [`SYNC_INTERVAL`] (and when it missed events) to heal any drift. A route whose route
//! service changes is registered again, never unregistered on the way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{interval, interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use wf_messaging::{Bus, Message, Subscription};
use wf_router::message::{RegistryMessage, REGISTER_SUBJECT, START_SUBJECT, UNREGISTER_SUBJECT};

use crate::models::*;
use crate::{ActualLrpFilter, Bbs, BbsError, DesiredLrpFilter};

/// The container port CF apps listen on, routed when a route names no mapped port.
const DEFAULT_CONTAINER_PORT: u16 = 8080;
/// How often the whole routing table is rebuilt from the BBS (Diego's `sync_interval`).
const SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// An ActualLRP row of a process: its index and presence.
type Slot = (u32, Presence);
/// The registrations of one process's instances.
type Instances = HashMap<Slot, Vec<RegistryMessage>>;

/// Runs the route-emitter until `cancel`.
pub(crate) async fn run(bbs: Arc<Bbs>, cancel: CancellationToken) {
    let mut events = bbs.subscribe();
    let mut router_starts = match bbs.bus.subscribe(START_SUBJECT).await {
        Ok(sub) => Some(sub),
        Err(e) => {
            tracing::warn!(error = %e, "route-emitter cannot hear router.start");
            None
        }
    };
    let register_interval = bbs.config.register_interval;
    let mut emitter = RouteEmitter {
        bbs,
        desired: HashMap::new(),
        table: HashMap::new(),
    };
    // The first sync is immediate; the first re-publication one interval later.
    let mut syncs = interval(SYNC_INTERVAL);
    let mut emits = interval_at(Instant::now() + register_interval, register_interval);
    for ticker in [&mut syncs, &mut emits] {
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    // A sync reads the BBS in its own task (seconds, at Diego's scale) while the events
    // that arrive meanwhile are kept, to be applied over its snapshot: the event stream
    // is never left to overflow.
    let mut syncing: Option<JoinHandle<Result<Snapshot, BbsError>>> = None;
    let mut held: Vec<BbsEvent> = Vec::new();
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = syncs.tick(), if syncing.is_none() => {
                syncing = Some(tokio::spawn(snapshot(emitter.bbs.clone())));
                Ok(())
            }
            snapshot = finished(&mut syncing) => {
                syncing = None;
                let result = match snapshot {
                    Ok(Ok(snapshot)) => {
                        emitter.apply(snapshot).await;
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(BbsError::Unavailable(format!("route-emitter sync: {e}"))),
                };
                for event in std::mem::take(&mut held) {
                    if let Err(e) = emitter.handle(event).await {
                        tracing::warn!(error = %e, "route-emitter cannot read the BBS");
                    }
                }
                result
            }
            _ = emits.tick() => {
                emitter.emit_all().await;
                Ok(())
            }
            event = events.recv() => match event {
                Ok(event) if syncing.is_some() => {
                    held.push(event);
                    Ok(())
                }
                Ok(event) => emitter.handle(event).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "route-emitter fell behind; resyncing");
                    if syncing.is_none() {
                        syncing = Some(tokio::spawn(snapshot(emitter.bbs.clone())));
                    }
                    Ok(())
                }
                Err(RecvError::Closed) => return,
            },
            start = next_message(&mut router_starts) => {
                if start.is_none() {
                    router_starts = None;
                }
                emitter.emit_all().await;
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "route-emitter cannot read the BBS");
        }
    }
}

/// The outcome of the sync under way, or never if none is.
async fn finished<T>(sync: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match sync {
        Some(sync) => sync.await,
        None => std::future::pending().await,
    }
}

/// What a sync read from the BBS: the DesiredLRPs, and the registrations they want.
struct Snapshot {
    desired: HashMap<String, DesiredLrp>,
    table: HashMap<String, Instances>,
}

/// Reads every DesiredLRP and ActualLRP and computes the routing table they want.
async fn snapshot(bbs: Arc<Bbs>) -> Result<Snapshot, BbsError> {
    let desired: HashMap<String, DesiredLrp> = bbs
        .desired_lrps(&DesiredLrpFilter::default())
        .await?
        .into_iter()
        .map(|d| (d.process_guid.clone(), d))
        .collect();
    let actuals = bbs.actual_lrps(&ActualLrpFilter::default()).await?;
    let mut table: HashMap<String, Instances> = HashMap::new();
    for actual in &actuals {
        if let Some(desired) = desired.get(&actual.key.process_guid) {
            let messages = registrations(desired, actual);
            if !messages.is_empty() {
                table
                    .entry(actual.key.process_guid.clone())
                    .or_default()
                    .insert(slot(actual), messages);
            }
        }
    }
    Ok(Snapshot { desired, table })
}

async fn next_message(sub: &mut Option<Subscription>) -> Option<Message> {
    match sub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// The registrations one RUNNING instance of `desired` needs: one per hostname.
pub(crate) fn registrations(desired: &DesiredLrp, actual: &ActualLrp) -> Vec<RegistryMessage> {
    if actual.state != ActualLrpState::Running || !actual.routable {
        return Vec::new();
    }
    let mut tags: BTreeMap<String, String> = desired.metric_tags.clone();
    tags.insert("component".into(), "route-emitter".into());
    let mut messages = Vec::new();
    for route in &desired.routes.cf_router {
        let Some(port) = host_port(&actual.net_info, route.port) else {
            continue;
        };
        for hostname in &route.hostnames {
            messages.push(RegistryMessage {
                host: actual.net_info.address.clone(),
                port,
                uris: vec![hostname.clone()],
                app: Some(desired.log_guid.clone()).filter(|g| !g.is_empty()),
                route_service_url: route.route_service_url.clone(),
                private_instance_id: Some(actual.instance_key.instance_guid.clone()),
                private_instance_index: Some(actual.key.index.to_string()),
                isolation_segment: route.isolation_segment.clone(),
                endpoint_updated_at_ns: Some(actual.since),
                tags: tags.clone(),
                ..Default::default()
            });
        }
    }
    messages
}

/// The host port mapped to `container_port`, else to 8080, else the first mapping.
fn host_port(net_info: &NetInfo, container_port: u16) -> Option<u16> {
    let mapped = |port: u16| {
        net_info
            .ports
            .iter()
            .find(|m| m.container_port == port)
            .map(|m| m.host_port)
    };
    mapped(container_port)
        .or_else(|| mapped(DEFAULT_CONTAINER_PORT))
        .or_else(|| net_info.ports.first().map(|m| m.host_port))
}

fn slot(actual: &ActualLrp) -> Slot {
    (actual.key.index, actual.presence)
}

struct RouteEmitter {
    bbs: Arc<Bbs>,
    /// The DesiredLRPs by process guid, as last read or announced.
    desired: HashMap<String, DesiredLrp>,
    /// What is registered now, by process guid.
    table: HashMap<String, Instances>,
}

impl RouteEmitter {
    /// Updates the table for one BBS event.
    async fn handle(&mut self, event: BbsEvent) -> Result<(), BbsError> {
        match event {
            BbsEvent::DesiredLrpChanged { before, after }
                if before.routes == after.routes && before.metric_tags == after.metric_tags =>
            {
                Ok(())
            }
            BbsEvent::DesiredLrpCreated { desired_lrp: lrp }
            | BbsEvent::DesiredLrpChanged { after: lrp, .. } => {
                self.refresh(&lrp.process_guid).await
            }
            BbsEvent::DesiredLrpRemoved { desired_lrp } => {
                self.desired.remove(&desired_lrp.process_guid);
                self.replace_process(&desired_lrp.process_guid, Instances::new())
                    .await;
                Ok(())
            }
            BbsEvent::ActualLrpCreated { actual_lrp } => self.update_instance(&actual_lrp).await,
            BbsEvent::ActualLrpChanged { before, after } => {
                if slot(&before) != slot(&after) {
                    self.replace_instance(&before, Vec::new()).await;
                }
                self.update_instance(&after).await
            }
            BbsEvent::ActualLrpRemoved { actual_lrp } => {
                self.replace_instance(&actual_lrp, Vec::new()).await;
                Ok(())
            }
            BbsEvent::ActualLrpCrashed { .. }
            | BbsEvent::TaskCreated { .. }
            | BbsEvent::TaskChanged { .. }
            | BbsEvent::TaskRemoved { .. } => Ok(()),
        }
    }

    /// Recomputes the registrations of one instance from its DesiredLRP's routes; a
    /// running instance of a process not known yet re-reads that process.
    async fn update_instance(&mut self, actual: &ActualLrp) -> Result<(), BbsError> {
        let wanted = match self.desired.get(&actual.key.process_guid) {
            Some(desired) => registrations(desired, actual),
            None if actual.state == ActualLrpState::Running => {
                return self.refresh(&actual.key.process_guid).await;
            }
            None => Vec::new(),
        };
        self.replace_instance(actual, wanted).await;
        Ok(())
    }

    /// Sets the registrations of `actual`'s row and publishes the difference. An
    /// endpoint another row of the process still registers stays registered: when an
    /// instance becomes EVACUATING (or SUSPECT) its endpoint moves to the copy's row,
    /// and the router must not lose it in between.
    async fn replace_instance(&mut self, actual: &ActualLrp, wanted: Vec<RegistryMessage>) {
        let process_guid = &actual.key.process_guid;
        let instances = self.table.entry(process_guid.clone()).or_default();
        let current = if wanted.is_empty() {
            instances.remove(&slot(actual))
        } else {
            instances.insert(slot(actual), wanted.clone())
        }
        .unwrap_or_default();
        let bus = &self.bbs.bus;
        for message in wanted.iter().filter(|m| !current.contains(m)) {
            publish(bus, REGISTER_SUBJECT, message).await;
        }
        for gone in current.iter().filter(|m| !wanted.contains(m)) {
            if !instances.values().flatten().any(|m| same_endpoint(m, gone)) {
                publish(bus, UNREGISTER_SUBJECT, gone).await;
            }
        }
        if instances.is_empty() {
            self.table.remove(process_guid);
        }
    }

    /// Re-reads one process from the BBS and publishes the difference.
    async fn refresh(&mut self, process_guid: &str) -> Result<(), BbsError> {
        let filter = DesiredLrpFilter {
            process_guids: Some(vec![process_guid.to_string()]),
            ..Default::default()
        };
        let desired = self.bbs.desired_lrps(&filter).await?.pop();
        let actuals = self
            .bbs
            .actual_lrps(&ActualLrpFilter {
                process_guid: Some(process_guid.to_string()),
                ..Default::default()
            })
            .await?;
        let mut wanted = Instances::new();
        if let Some(desired) = desired {
            for actual in &actuals {
                let messages = registrations(&desired, actual);
                if !messages.is_empty() {
                    wanted.insert(slot(actual), messages);
                }
            }
            self.desired.insert(process_guid.to_string(), desired);
        } else {
            self.desired.remove(process_guid);
        }
        self.replace_process(process_guid, wanted).await;
        Ok(())
    }

    /// Sets the registrations of one process and publishes the difference.
    async fn replace_process(&mut self, process_guid: &str, wanted: Instances) {
        let current = self.table.remove(process_guid).unwrap_or_default();
        publish_process_difference(&self.bbs.bus, &current, &wanted).await;
        if !wanted.is_empty() {
            self.table.insert(process_guid.to_string(), wanted);
        }
    }

    /// Takes the table of a sync's snapshot and publishes the difference.
    async fn apply(&mut self, snapshot: Snapshot) {
        let none = Instances::new();
        for (process_guid, current) in &self.table {
            let new = snapshot.table.get(process_guid).unwrap_or(&none);
            publish_process_difference(&self.bbs.bus, current, new).await;
        }
        for (process_guid, new) in &snapshot.table {
            if !self.table.contains_key(process_guid) {
                publish_process_difference(&self.bbs.bus, &none, new).await;
            }
        }
        self.desired = snapshot.desired;
        self.table = snapshot.table;
    }

    /// Publishes every registration in the table.
    async fn emit_all(&self) {
        for instances in self.table.values() {
            for message in instances.values().flatten() {
                publish(&self.bbs.bus, REGISTER_SUBJECT, message).await;
            }
        }
    }
}

/// Publishes what changes from `current` to `wanted` for one process: registrations
/// first, then unregistrations of endpoints no row wants any more (an endpoint moving
/// between rows is never unregistered).
async fn publish_process_difference(bus: &Bus, current: &Instances, wanted: &Instances) {
    if current == wanted {
        return;
    }
    for (slot, messages) in wanted {
        let old = current.get(slot).map(Vec::as_slice).unwrap_or_default();
        for message in messages.iter().filter(|m| !old.contains(m)) {
            publish(bus, REGISTER_SUBJECT, message).await;
        }
    }
    for (slot, messages) in current {
        let new = wanted.get(slot).map(Vec::as_slice).unwrap_or_default();
        for gone in messages.iter().filter(|m| !new.contains(m)) {
            if !wanted.values().flatten().any(|m| same_endpoint(m, gone)) {
                publish(bus, UNREGISTER_SUBJECT, gone).await;
            }
        }
    }
}

/// Whether `a` and `b` register the same endpoint on the same routes (what the routes
/// carry, their route service say, may differ). The router unregisters an endpoint by
/// route and instance, so replacing a registration by one with a new route service is
/// a re-registration only: unregistering the old one would drop the endpoint.
fn same_endpoint(a: &RegistryMessage, b: &RegistryMessage) -> bool {
    a.uris == b.uris
        && a.private_instance_id == b.private_instance_id
        && (a.private_instance_id.is_some() || (a.host == b.host && a.port == b.port))
}

async fn publish(bus: &Bus, subject: &str, message: &RegistryMessage) {
    let payload = match serde_json::to_vec(message) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a route registration");
            return;
        }
    };
    if let Err(e) = bus.publish(subject, payload).await {
        tracing::warn!(error = %e, subject, "cannot publish a route registration");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use wf_messaging::Bus;

    use super::*;
    use crate::testing::*;

    async fn next_json(sub: &mut Subscription) -> serde_json::Value {
        let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a route message within 5 s")
            .expect("the bus is open");
        serde_json::from_slice(&message.payload).unwrap()
    }

    #[tokio::test]
    async fn registers_running_instances_and_unregisters_removed_ones() {
        for db in databases().await {
            let bus = Bus::in_process();
            let mut registers = bus.subscribe(REGISTER_SUBJECT).await.unwrap();
            let mut unregisters = bus.subscribe(UNREGISTER_SUBJECT).await.unwrap();
            let bbs = open(&db, bus.clone()).await;
            // The instance's cell is present: convergence leaves its instance alone
            // (a missing cell would make it SUSPECT, changing its `since`).
            let cell = FakeRep::start("cell-0", "z1", 4096).await;
            bbs.set_cell_presence(&cell.presence(), Duration::from_secs(60))
                .await
                .unwrap();
            let cancel = CancellationToken::new();
            let running = bbs.run(cancel.clone());

            bbs.desire_lrp(desired("web", 1)).await.unwrap();
            let ik = instance("i-0", "cell-0");
            bbs.claim_actual_lrp(&key("web", 0), &ik).await.unwrap();
            bbs.start_actual_lrp(&key("web", 0), &ik, net_info(61001))
                .await
                .unwrap();

            let since = actual(&bbs, "web", 0).await.unwrap().since;
            let expected = json!({
                "host": "127.0.0.1",
                "port": 61001,
                "uris": ["web.apps.localhost"],
                "app": "app-guid",
                "private_instance_id": "i-0",
                "private_instance_index": "0",
                "endpoint_updated_at_ns": since,
                "tags": {"app_name": "hello", "component": "route-emitter"},
            });
            assert_eq!(next_json(&mut registers).await, expected);

            // A router that (re)starts gets every route again.
            bus.publish(START_SUBJECT, r#"{"id":"0-x","hosts":["127.0.0.1"],"minimumRegisterIntervalInSeconds":20,"pruneThresholdInSeconds":120}"#)
                .await
                .unwrap();
            assert_eq!(next_json(&mut registers).await, expected);

            bbs.remove_desired_lrp("web").await.unwrap();
            assert_eq!(next_json(&mut unregisters).await, expected);

            cancel.cancel();
            running.await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_endpoint_moving_to_an_evacuating_copy_stays_registered() {
        let db = databases().await.remove(0);
        let bus = Bus::in_process();
        let mut unregisters = bus.subscribe(UNREGISTER_SUBJECT).await.unwrap();
        let bbs = open(&db, bus.clone()).await;
        bbs.desire_lrp(desired("web", 1)).await.unwrap();
        let ik = instance("i-0", "cell-0");
        bbs.claim_actual_lrp(&key("web", 0), &ik).await.unwrap();
        bbs.start_actual_lrp(&key("web", 0), &ik, net_info(61001))
            .await
            .unwrap();
        let running = actual(&bbs, "web", 0).await.unwrap();
        let evacuating = ActualLrp {
            presence: Presence::Evacuating,
            ..running.clone()
        };
        let replacement = crate::lrp::unclaimed(key("web", 0), running.since + 1);
        let mut emitter = RouteEmitter {
            bbs: bbs.clone(),
            desired: HashMap::from([("web".to_string(), desired("web", 1))]),
            table: HashMap::new(),
        };
        for event in [
            BbsEvent::ActualLrpCreated {
                actual_lrp: running.clone(),
            },
            BbsEvent::ActualLrpCreated {
                actual_lrp: evacuating.clone(),
            },
            BbsEvent::ActualLrpChanged {
                before: running,
                after: replacement,
            },
        ] {
            emitter.handle(event).await.unwrap();
        }
        let quiet = tokio::time::timeout(Duration::from_millis(200), unregisters.next()).await;
        assert!(
            quiet.is_err(),
            "the endpoint left the router mid-evacuation"
        );
        emitter
            .handle(BbsEvent::ActualLrpRemoved {
                actual_lrp: evacuating,
            })
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut unregisters).await["private_instance_id"],
            "i-0"
        );
    }

    #[tokio::test]
    async fn a_new_route_service_reregisters_without_unregistering() {
        let db = databases().await.remove(0);
        let bus = Bus::in_process();
        let mut registers = bus.subscribe(REGISTER_SUBJECT).await.unwrap();
        let mut unregisters = bus.subscribe(UNREGISTER_SUBJECT).await.unwrap();
        let bbs = open(&db, bus.clone()).await;
        bbs.desire_lrp(desired("web", 1)).await.unwrap();
        let ik = instance("i-0", "cell-0");
        bbs.claim_actual_lrp(&key("web", 0), &ik).await.unwrap();
        bbs.start_actual_lrp(&key("web", 0), &ik, net_info(61001))
            .await
            .unwrap();
        let mut emitter = RouteEmitter {
            bbs: bbs.clone(),
            desired: HashMap::new(),
            table: HashMap::new(),
        };
        emitter.refresh("web").await.unwrap();
        assert!(next_json(&mut registers).await["route_service_url"].is_null());
        let mut routes = desired("web", 1).routes;
        routes.cf_router[0].route_service_url = Some("https://rs.example/x".into());
        bbs.update_desired_lrp(
            "web",
            DesiredLrpUpdate {
                routes: Some(routes),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        emitter.refresh("web").await.unwrap();
        assert_eq!(
            next_json(&mut registers).await["route_service_url"],
            "https://rs.example/x"
        );
        let quiet = tokio::time::timeout(Duration::from_millis(200), unregisters.next()).await;
        assert!(quiet.is_err(), "the endpoint was unregistered");
    }

    #[test]
    fn only_running_routable_instances_register() {
        let desired = desired("web", 1);
        let mut actual = crate::lrp::unclaimed(key("web", 0), 7);
        assert!(registrations(&desired, &actual).is_empty());
        actual.state = ActualLrpState::Running;
        actual.routable = true;
        actual.instance_key = instance("i-0", "cell-0");
        actual.net_info = NetInfo {
            address: "10.0.0.5".into(),
            ports: vec![
                PortMapping {
                    container_port: 2222,
                    host_port: 61000,
                },
                PortMapping {
                    container_port: 8080,
                    host_port: 61001,
                },
            ],
            instance_address: String::new(),
        };
        let messages = registrations(&desired, &actual);
        assert_eq!(messages.len(), 1);
        assert_eq!(
            (messages[0].host.as_str(), messages[0].port),
            ("10.0.0.5", 61001)
        );
    }
}
