//! The message bus: one small publish/subscribe/request interface over NATS-style
//! subjects (`router.register`, `loggregator.envelopes`, ...).
//!
//! This crate owns the [`Bus`] API, the subject rules and both transports behind it:
//! [`Bus::in_process`] serves the single-process platform (`wfd dev`) and unit tests;
//! [`Bus::nats`] (async-nats against `nats-server`) serves the distributed mode. With the
//! `testing` feature, [`testing`] starts a throwaway `nats-server` for tests.
//!
//! Subjects follow NATS rules: tokens separated by `.`, `*` matches one token, `>`
//! matches one or more trailing tokens. Like NATS, a subscriber that cannot keep up
//! loses messages (counted in [`Bus::dropped`]) rather than slowing the publisher.
//!
//! A NATS bus reconnects forever; [`Bus::on_reconnect`] tells callers when it did, so
//! they can announce themselves again (as the router re-sends `router.start`).

mod in_process;
mod nats;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use in_process::InProcess;

/// How many messages a subscription buffers before new ones are dropped.
pub const SUBSCRIPTION_BUFFER: usize = 65_536;

/// How many publishes/subscribes a NATS bus queues while NATS is unreachable.
pub const OUTGOING_BUFFER: usize = 65_536;

/// How long a publish or subscribe on a NATS bus waits for room in a full
/// [`OUTGOING_BUFFER`] before failing with [`BusError::Unavailable`].
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Nobody subscribes to the subject of a request, so no reply can come.
    #[error("no subscriber for request {subject:?}")]
    NoResponders { subject: String },
    #[error("the bus is closed")]
    Closed,
    /// An entry of the server list given to [`Bus::nats`] is not a NATS URL.
    #[error("invalid NATS URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The first connection to NATS failed (reconnects after that never give up).
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        /// The servers tried, without credentials.
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// NATS has been unreachable long enough that the client's outgoing buffer is
    /// full; the message was not sent.
    #[error("NATS unreachable: could not queue {subject:?} within {waited:?}")]
    Unavailable { subject: String, waited: Duration },
    /// Any other failure reported by the NATS client (payload too large, ...).
    #[error("NATS {op} on {subject:?} failed: {source}")]
    Nats {
        op: &'static str,
        subject: String,
        #[source]
        source: async_nats::Error,
    },
}

/// A handle to the message bus; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    transport: Transport,
    status: Arc<Status>,
}

#[derive(Clone)]
enum Transport {
    InProcess(Arc<InProcess>),
    Nats(async_nats::Client),
}

/// What both transports report about themselves.
struct Status {
    dropped: AtomicU64,
    /// Reconnects so far; the in-process bus never sends.
    reconnects: watch::Sender<u64>,
}

impl Status {
    fn new() -> Arc<Status> {
        Arc::new(Status {
            dropped: AtomicU64::new(0),
            reconnects: watch::Sender::new(0),
        })
    }
}

/// A stream of messages on the subjects a subscription matches. Dropping it
/// unsubscribes.
pub struct Subscription {
    inner: SubscriptionInner,
}

enum SubscriptionInner {
    InProcess(in_process::Subscription),
    Nats(async_nats::Subscriber),
}

impl Subscription {
    /// The next message, or `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Message> {
        match &mut self.inner {
            SubscriptionInner::InProcess(sub) => sub.rx.recv().await,
            SubscriptionInner::Nats(sub) => sub.next().await.map(nats::message),
        }
    }
}

/// TLS to NATS (`nats-server`'s `tls` block): the CA the server's certificate must be
/// signed by, and this client's certificate and key when the server verifies clients
/// (`verify: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    pub ca: std::path::PathBuf,
    /// (certificate, key) PEM files.
    pub client_certificate: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Bus {
    /// A bus that lives in this process only.
    pub fn in_process() -> Self {
        Bus {
            transport: Transport::InProcess(Arc::new(InProcess::default())),
            status: Status::new(),
        }
    }

    /// A bus over NATS. `urls` is a comma-separated list of `nats://[user:pass@]host:port`
    /// (`tls://` for TLS; a user without a password is a token). Fails if no server
    /// accepts the first connection; after that the client reconnects forever, to any
    /// server of the list, and resubscribes by itself (see [`Bus::on_reconnect`]).
    ///
    /// Publishing never waits for subscribers: a subscription that does not keep up
    /// loses messages once [`SUBSCRIPTION_BUFFER`] are waiting (counted in
    /// [`Bus::dropped`]); the connection keeps reading, so the server never sees this
    /// process as a slow consumer because of it. While NATS is unreachable, publishes and
    /// subscribes queue in the client (up to [`OUTGOING_BUFFER`] of them) and are
    /// sent on reconnect; once that queue is full they fail with
    /// [`BusError::Unavailable`] after [`SEND_TIMEOUT`] instead of blocking.
    pub async fn nats(urls: &str) -> Result<Bus, BusError> {
        Bus::nats_with_tls(urls, None).await
    }

    /// [`Bus::nats`] over TLS with `tls`'s CA (and client certificate, for a
    /// `nats-server` that verifies clients); `None`: as the URLs say.
    pub async fn nats_with_tls(urls: &str, tls: Option<&NatsTls>) -> Result<Bus, BusError> {
        let status = Status::new();
        let client = nats::connect(urls, status.clone(), tls).await?;
        Ok(Bus {
            transport: Transport::Nats(client),
            status,
        })
    }

    /// Publishes `payload` on `subject` to every matching subscription.
    pub async fn publish(&self, subject: &str, payload: impl Into<Bytes>) -> Result<(), BusError> {
        parse_subject(subject, false)?;
        match &self.transport {
            Transport::InProcess(bus) => {
                bus.publish(subject, None, payload.into(), &self.status);
                Ok(())
            }
            Transport::Nats(client) => nats::publish(client, subject, payload.into()).await,
        }
    }

    /// Subscribes to `subject`, which may hold `*` and `>` wildcards.
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        let pattern = parse_subject(subject, true)?;
        let inner = match &self.transport {
            Transport::InProcess(bus) => SubscriptionInner::InProcess(bus.subscribe(pattern)),
            Transport::Nats(client) => {
                SubscriptionInner::Nats(nats::subscribe(client, subject).await?)
            }
        };
        Ok(Subscription { inner })
    }

    /// Publishes a request and waits up to `timeout` for the first reply. Fails at once
    /// with [`BusError::NoResponders`] if nobody subscribes to `subject`.
    pub async fn request(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        parse_subject(subject, false)?;
        let reply = match &self.transport {
            Transport::InProcess(bus) => {
                tokio::time::timeout(timeout, bus.request(subject, payload.into(), &self.status))
                    .await
            }
            Transport::Nats(client) => {
                tokio::time::timeout(timeout, nats::request(client, subject, payload.into())).await
            }
        };
        reply.unwrap_or_else(|_| {
            Err(BusError::RequestTimeout {
                subject: subject.to_string(),
                timeout,
            })
        })
    }

    /// Messages dropped so far because a subscriber's buffer was full. On NATS this
    /// counts the client's slow-consumer events, so it is a lower bound.
    pub fn dropped(&self) -> u64 {
        self.status.dropped.load(Ordering::Relaxed)
    }

    /// How many times the bus has reconnected to NATS; it changes on every reconnect, so
    /// a caller waits with `changed()` and then announces itself again. This bus's
    /// subscriptions are restored on the new connection before anything it sends after
    /// the change. The in-process bus never reconnects: its value stays 0 and
    /// `changed()` never returns while the bus lives.
    pub fn on_reconnect(&self) -> watch::Receiver<u64> {
        self.status.reconnects.subscribe()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_subjects_are_refused() {
        for s in ["", "a..b", "a.>.b", "a b", "a*"] {
            assert!(parse_subject(s, true).is_err(), "{s:?}");
        }
        assert!(parse_subject("a.*", false).is_err());
    }
}
