//! The route-emitter: publishes `router.register` for every RUNNING, routable ActualLRP
//! whose DesiredLRP has `cf-router` routes, and `router.unregister` when such an instance
//! stops or its routes change. It re-publishes every route each `register_interval` and
//! whenever a router announces itself on `router.start`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use wf_messaging::{Message, Subscription};
use wf_router::message::{RegistryMessage, REGISTER_SUBJECT, START_SUBJECT, UNREGISTER_SUBJECT};

use crate::models::*;
use crate::{ActualLrpFilter, Bbs, BbsError, DesiredLrpFilter};

/// The container port CF apps listen on, routed when a route names no mapped port.
const DEFAULT_CONTAINER_PORT: u16 = 8080;

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
    let mut emitter = RouteEmitter {
        bbs: bbs.clone(),
        table: HashMap::new(),
    };
    let mut ticker = tokio::time::interval(bbs.config.register_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            // The first tick is immediate: the initial sync.
            _ = ticker.tick() => emitter.sync(true).await,
            event = events.recv() => match event {
                Ok(event) => match routing_process(&event) {
                    Some(process_guid) => emitter.refresh(process_guid).await,
                    None => Ok(()),
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "route-emitter fell behind; resyncing");
                    emitter.sync(false).await
                }
                Err(RecvError::Closed) => return,
            },
            start = next_message(&mut router_starts) => {
                if start.is_none() {
                    router_starts = None;
                }
                emitter.sync(true).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "route-emitter cannot read the BBS");
        }
    }
}

async fn next_message(sub: &mut Option<Subscription>) -> Option<Message> {
    match sub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// The process whose routes `event` may change.
fn routing_process(event: &BbsEvent) -> Option<&str> {
    let running = |a: &ActualLrp| a.state == ActualLrpState::Running;
    match event {
        BbsEvent::DesiredLrpChanged { before, after }
            if before.routes == after.routes && before.metric_tags == after.metric_tags =>
        {
            None
        }
        BbsEvent::DesiredLrpCreated { desired_lrp }
        | BbsEvent::DesiredLrpRemoved { desired_lrp } => Some(&desired_lrp.process_guid),
        BbsEvent::DesiredLrpChanged { after, .. } => Some(&after.process_guid),
        BbsEvent::ActualLrpChanged { before, after } if running(before) || running(after) => {
            Some(&after.key.process_guid)
        }
        BbsEvent::ActualLrpRemoved { actual_lrp } if running(actual_lrp) => {
            Some(&actual_lrp.key.process_guid)
        }
        _ => None,
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

struct RouteEmitter {
    bbs: Arc<Bbs>,
    /// What is registered now, by process guid.
    table: HashMap<String, Vec<RegistryMessage>>,
}

impl RouteEmitter {
    /// Recomputes the routes of one process from the BBS and publishes the difference.
    async fn refresh(&mut self, process_guid: &str) -> Result<(), BbsError> {
        let filter = DesiredLrpFilter {
            process_guids: Some(vec![process_guid.to_string()]),
            ..Default::default()
        };
        let desired = self.bbs.desired_lrps(&filter).await?;
        let actuals = self
            .bbs
            .actual_lrps(&ActualLrpFilter {
                process_guid: Some(process_guid.to_string()),
                ..Default::default()
            })
            .await?;
        let wanted: Vec<RegistryMessage> = desired
            .first()
            .map(|d| actuals.iter().flat_map(|a| registrations(d, a)).collect())
            .unwrap_or_default();
        let current = self.table.remove(process_guid).unwrap_or_default();
        self.publish_difference(&current, &wanted, false).await;
        if !wanted.is_empty() {
            self.table.insert(process_guid.to_string(), wanted);
        }
        Ok(())
    }

    /// Recomputes every route; publishes the difference, or with `all` every route.
    async fn sync(&mut self, all: bool) -> Result<(), BbsError> {
        let desired = self.bbs.desired_lrps(&DesiredLrpFilter::default()).await?;
        let actuals = self.bbs.actual_lrps(&ActualLrpFilter::default()).await?;
        let by_guid: HashMap<&str, &DesiredLrp> = desired
            .iter()
            .map(|d| (d.process_guid.as_str(), d))
            .collect();
        let mut wanted: HashMap<String, Vec<RegistryMessage>> = HashMap::new();
        for actual in &actuals {
            if let Some(desired) = by_guid.get(actual.key.process_guid.as_str()) {
                let messages = registrations(desired, actual);
                if !messages.is_empty() {
                    wanted
                        .entry(actual.key.process_guid.clone())
                        .or_default()
                        .extend(messages);
                }
            }
        }
        let old = std::mem::take(&mut self.table);
        for (process_guid, current) in &old {
            let new = wanted
                .get(process_guid)
                .map(Vec::as_slice)
                .unwrap_or_default();
            self.publish_difference(current, new, all).await;
        }
        for (process_guid, new) in &wanted {
            if !old.contains_key(process_guid) {
                self.publish_difference(&[], new, all).await;
            }
        }
        self.table = wanted;
        Ok(())
    }

    async fn publish_difference(
        &self,
        current: &[RegistryMessage],
        wanted: &[RegistryMessage],
        all: bool,
    ) {
        for gone in current.iter().filter(|m| !wanted.contains(m)) {
            self.publish(UNREGISTER_SUBJECT, gone).await;
        }
        for message in wanted.iter().filter(|m| all || !current.contains(m)) {
            self.publish(REGISTER_SUBJECT, message).await;
        }
    }

    async fn publish(&self, subject: &str, message: &RegistryMessage) {
        let payload = match serde_json::to_vec(message) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a route registration");
                return;
            }
        };
        if let Err(e) = self.bbs.bus.publish(subject, payload).await {
            tracing::warn!(error = %e, subject, "cannot publish a route registration");
        }
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
