//! The message bus: one small publish/subscribe/request interface over NATS-style
//! subjects (`router.register`, `loggregator.envelopes`, ...).
//!
//! [`Bus::in_process`] serves the single-process platform (`wfd dev`) and unit tests;
//! a NATS implementation (async-nats against `nats-server`) serves the distributed mode.
//! Subjects follow NATS rules: tokens separated by `.`, `*` matches one token, `>`
//! matches one or more trailing tokens. Like NATS, a subscriber that cannot keep up
//! loses messages (counted in [`Bus::dropped`]) rather than slowing the publisher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// How many messages a subscription buffers before new ones are dropped.
pub const SUBSCRIPTION_BUFFER: usize = 65_536;

/// A message as delivered to a subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    /// Where a reply goes, for request/reply.
    pub reply: Option<String>,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    #[error("no reply to {subject:?} within {timeout:?}")]
    RequestTimeout { subject: String, timeout: Duration },
    #[error("the bus is closed")]
    Closed,
}

/// A handle to the message bus; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<InProcess>,
}

struct InProcess {
    subscribers: RwLock<Vec<Subscriber>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

struct Subscriber {
    id: u64,
    pattern: Vec<String>,
    tx: mpsc::Sender<Message>,
}

/// A stream of messages on the subjects a subscription matches. Dropping it
/// unsubscribes.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Message>,
    bus: Arc<InProcess>,
}

impl Subscription {
    /// The next message, or `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut subs) = self.bus.subscribers.write() {
            subs.retain(|s| s.id != self.id);
        }
    }
}

impl Bus {
    /// A bus that lives in this process only.
    pub fn in_process() -> Self {
        Bus {
            inner: Arc::new(InProcess {
                subscribers: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(1),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Publishes `payload` on `subject` to every matching subscription.
    pub async fn publish(&self, subject: &str, payload: impl Into<Bytes>) -> Result<(), BusError> {
        self.publish_with_reply(subject, None, payload.into())
    }

    fn publish_with_reply(
        &self,
        subject: &str,
        reply: Option<String>,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let tokens = parse_subject(subject, false)?;
        let subs = self
            .inner
            .subscribers
            .read()
            .map_err(|_| BusError::Closed)?;
        for sub in subs.iter().filter(|s| matches(&s.pattern, &tokens)) {
            let msg = Message {
                subject: subject.to_string(),
                reply: reply.clone(),
                payload: payload.clone(),
            };
            if sub.tx.try_send(msg).is_err() {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Subscribes to `subject`, which may hold `*` and `>` wildcards.
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        let pattern = parse_subject(subject, true)?;
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .subscribers
            .write()
            .map_err(|_| BusError::Closed)?
            .push(Subscriber { id, pattern, tx });
        Ok(Subscription {
            id,
            rx,
            bus: self.inner.clone(),
        })
    }

    /// Publishes a request and waits for the first reply.
    pub async fn request(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let inbox = format!("_INBOX.{id}");
        let mut sub = self.subscribe(&inbox).await?;
        self.publish_with_reply(subject, Some(inbox), payload.into())?;
        match tokio::time::timeout(timeout, sub.next()).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(BusError::Closed),
            Err(_) => Err(BusError::RequestTimeout {
                subject: subject.to_string(),
                timeout,
            }),
        }
    }

    /// Messages dropped so far because a subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

fn parse_subject(subject: &str, allow_wildcards: bool) -> Result<Vec<String>, BusError> {
    let invalid = || BusError::InvalidSubject(subject.to_string());
    if subject.is_empty() || subject.contains(char::is_whitespace) {
        return Err(invalid());
    }
    let tokens: Vec<String> = subject.split('.').map(str::to_string).collect();
    for (i, t) in tokens.iter().enumerate() {
        let wildcard = t == "*" || t == ">";
        if t.is_empty()
            || (wildcard && !allow_wildcards)
            || (t == ">" && i + 1 != tokens.len())
            || (!wildcard && (t.contains('*') || t.contains('>')))
        {
            return Err(invalid());
        }
    }
    Ok(tokens)
}

fn matches(pattern: &[String], subject: &[String]) -> bool {
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
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(matches(&toks("router.register"), &toks("router.register")));
        assert!(matches(&toks("router.*"), &toks("router.register")));
        assert!(!matches(&toks("router.*"), &toks("router.register.x")));
        assert!(matches(&toks("router.>"), &toks("router.register.x")));
        assert!(!matches(&toks("router.>"), &toks("router")));
        assert!(!matches(&toks("router.register"), &toks("router")));
    }

    #[test]
    fn bad_subjects_are_refused() {
        for s in ["", "a..b", "a.>.b", "a b", "a*"] {
            assert!(parse_subject(s, true).is_err(), "{s:?}");
        }
        assert!(parse_subject("a.*", false).is_err());
    }

    #[tokio::test]
    async fn publish_reaches_matching_subscribers_only() {
        let bus = Bus::in_process();
        let mut all = bus.subscribe("router.*").await.unwrap();
        let mut other = bus.subscribe("logs").await.unwrap();
        bus.publish("router.register", "x").await.unwrap();
        assert_eq!(all.next().await.unwrap().payload, "x");
        assert!(other.rx.try_recv().is_err());
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
        });
        let reply = bus
            .request("router.greet", "", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reply.payload, "hello");
        let err = bus
            .request("nobody.home", "", Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::RequestTimeout { .. }));
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = Bus::in_process();
        let sub = bus.subscribe("a").await.unwrap();
        drop(sub);
        bus.publish("a", "x").await.unwrap();
        assert!(bus.inner.subscribers.read().unwrap().is_empty());
    }
}
