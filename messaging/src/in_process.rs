//! The in-process transport: subscribers in a list, matched against each publish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{BusError, Message, Status, SUBSCRIPTION_BUFFER};

pub(crate) struct InProcess {
    subscribers: RwLock<Vec<Subscriber>>,
    next_id: AtomicU64,
}

impl Default for InProcess {
    fn default() -> Self {
        InProcess {
            subscribers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }
}

struct Subscriber {
    id: u64,
    pattern: Vec<String>,
    tx: mpsc::Sender<Message>,
}

/// Unsubscribes when dropped.
pub(crate) struct Subscription {
    id: u64,
    pub(crate) rx: mpsc::Receiver<Message>,
    bus: Arc<InProcess>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut subs) = self.bus.subscribers.write() {
            subs.retain(|s| s.id != self.id);
        }
    }
}

impl InProcess {
    /// Delivers to every matching subscriber without waiting: a full buffer drops the
    /// message (counted in `status`). Returns how many subscribers matched.
    pub(crate) fn publish(
        &self,
        subject: &str,
        reply: Option<String>,
        payload: Bytes,
        status: &Status,
    ) -> usize {
        let tokens: Vec<&str> = subject.split('.').collect();
        let Ok(subs) = self.subscribers.read() else {
            return 0;
        };
        let mut matched = 0;
        for sub in subs.iter().filter(|s| matches(&s.pattern, &tokens)) {
            matched += 1;
            let msg = Message {
                subject: subject.to_string(),
                reply: reply.clone(),
                payload: payload.clone(),
            };
            if sub.tx.try_send(msg).is_err() {
                status.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        matched
    }

    pub(crate) fn subscribe(self: &Arc<Self>, pattern: Vec<String>) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut subs) = self.subscribers.write() {
            subs.push(Subscriber { id, pattern, tx });
        }
        Subscription {
            id,
            rx,
            bus: self.clone(),
        }
    }

    /// Publishes with a fresh inbox as the reply subject and waits for the first reply
    /// (the caller bounds the wait).
    pub(crate) async fn request(
        self: &Arc<Self>,
        subject: &str,
        payload: Bytes,
        status: &Status,
    ) -> Result<Message, BusError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let inbox = format!("_INBOX.{id}");
        let mut sub = self.subscribe(vec!["_INBOX".to_string(), id.to_string()]);
        if self.publish(subject, Some(inbox), payload, status) == 0 {
            return Err(BusError::NoResponders {
                subject: subject.to_string(),
            });
        }
        sub.rx.recv().await.ok_or(BusError::Closed)
    }
}

fn matches(pattern: &[String], subject: &[&str]) -> bool {
    let mut p = pattern.iter();
    let mut s = subject.iter();
    loop {
        match (p.next(), s.next()) {
            (Some(pt), Some(_)) if pt == ">" => return true,
            (Some(pt), Some(st)) if pt == "*" || pt == st => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Bus, Transport};

    fn pattern(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    fn subject(s: &str) -> Vec<&str> {
        s.split('.').collect()
    }

    fn subscriber_count(bus: &Bus) -> usize {
        match &bus.transport {
            Transport::InProcess(bus) => bus.subscribers.read().unwrap().len(),
            Transport::Nats(_) => unreachable!(),
        }
    }

    #[test]
    fn wildcards_follow_nats_rules() {
        let m = |p: &str, s: &str| matches(&pattern(p), &subject(s));
        assert!(m("router.register", "router.register"));
        assert!(m("router.*", "router.register"));
        assert!(!m("router.*", "router.register.x"));
        assert!(m("router.>", "router.register.x"));
        assert!(!m("router.>", "router"));
        assert!(!m("router.register", "router"));
    }

    #[tokio::test]
    async fn publish_reaches_matching_subscribers_only() {
        let bus = Bus::in_process();
        let mut all = bus.subscribe("router.*").await.unwrap();
        let mut other = bus.subscribe("logs").await.unwrap();
        bus.publish("router.register", "x").await.unwrap();
        assert_eq!(all.next().await.unwrap().payload, "x");
        let nothing = tokio::time::timeout(Duration::from_millis(20), other.next()).await;
        assert!(nothing.is_err());
    }

    #[tokio::test]
    async fn request_gets_the_reply() {
        let bus = Bus::in_process();
        let mut greet = bus.subscribe("router.greet").await.unwrap();
        let responder = bus.clone();
        tokio::spawn(async move {
            let msg = greet.next().await.unwrap();
            responder
                .publish(msg.reply.as_deref().unwrap(), "hello")
                .await
                .unwrap();
            // Keeps the subscription so the next request times out rather than finding
            // no responder.
            greet.next().await
        });
        let reply = bus
            .request("router.greet", "", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reply.payload, "hello");
        let err = bus
            .request("router.greet", "", Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::RequestTimeout { .. }), "{err}");
        let err = bus
            .request("nobody.home", "", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::NoResponders { .. }), "{err}");
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = Bus::in_process();
        let sub = bus.subscribe("a").await.unwrap();
        assert_eq!(subscriber_count(&bus), 1);
        drop(sub);
        assert_eq!(subscriber_count(&bus), 0);
    }

    #[tokio::test]
    async fn a_full_subscriber_loses_messages_without_blocking_the_publisher() {
        let bus = Bus::in_process();
        let _sub = bus.subscribe("a").await.unwrap();
        for _ in 0..SUBSCRIPTION_BUFFER + 3 {
            bus.publish("a", "x").await.unwrap();
        }
        assert_eq!(bus.dropped(), 3);
        assert_eq!(*bus.on_reconnect().borrow(), 0);
    }
}
