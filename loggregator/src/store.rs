//! The log cache: recent envelopes per source id, bounded per source, fed from the bus.
//!
//! Like Log Cache, each source keeps its newest envelopes in timestamp order and drops
//! the oldest once full (counted as `expired`); reads select a time range and
//! envelope types and return at most `limit` envelopes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::FutureExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;

use crate::{Envelope, EnvelopeMessage, ENVELOPE_SUBJECT};

/// Envelopes kept per source id before the oldest are dropped.
pub const DEFAULT_MAX_ENVELOPES_PER_SOURCE: usize = 100_000;

/// Log Cache's default `limit` of a read.
pub const DEFAULT_READ_LIMIT: usize = 100;

/// Log Cache's largest `limit` of a read.
pub const MAX_READ_LIMIT: usize = 1000;

/// Log Cache `read` parameters.
#[derive(Debug, Clone, Default)]
pub struct ReadQuery {
    /// Nanoseconds, inclusive.
    pub start_time: Option<i64>,
    /// Nanoseconds, exclusive.
    pub end_time: Option<i64>,
    /// `LOG`, `COUNTER`, `GAUGE`; empty means all.
    pub envelope_types: Vec<String>,
    /// Default 100, max 1000.
    pub limit: Option<usize>,
    pub descending: bool,
}

/// What the log cache holds for one source, as `/api/v1/meta` reports it (int64 as
/// strings, like Log Cache's JSON gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceMeta {
    #[serde(with = "as_string")]
    pub count: u64,
    /// Envelopes dropped because the source was full.
    #[serde(with = "as_string")]
    pub expired: u64,
    #[serde(with = "as_string")]
    pub oldest_timestamp: i64,
    #[serde(with = "as_string")]
    pub newest_timestamp: i64,
}

#[derive(Default)]
struct SourceCache {
    /// Ordered by timestamp, oldest first.
    envelopes: VecDeque<Envelope>,
    expired: u64,
}

pub struct LogStore {
    max_per_source: usize,
    sources: RwLock<HashMap<String, SourceCache>>,
    bad_messages: AtomicU64,
    started: Instant,
}

impl LogStore {
    pub fn new(max_per_source: usize) -> LogStore {
        LogStore {
            max_per_source: max_per_source.max(1),
            sources: RwLock::new(HashMap::new()),
            bad_messages: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn ingest(&self, envelope: Envelope) {
        let mut sources = self
            .sources
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let cache = sources.entry(envelope.source_id.clone()).or_default();
        // Envelopes nearly always arrive in order; out-of-order ones are slotted in
        // after every envelope with the same or an earlier timestamp.
        let in_order = cache
            .envelopes
            .back()
            .is_none_or(|last| last.timestamp <= envelope.timestamp);
        if in_order {
            cache.envelopes.push_back(envelope);
        } else {
            let at = cache
                .envelopes
                .partition_point(|e| e.timestamp <= envelope.timestamp);
            cache.envelopes.insert(at, envelope);
        }
        while cache.envelopes.len() > self.max_per_source {
            cache.envelopes.pop_front();
            cache.expired += 1;
        }
    }

    /// Envelopes of `source_id` in timestamp order (reversed when descending).
    ///
    /// Ascending reads return the oldest `limit` envelopes of the range, descending
    /// reads the newest, as Log Cache does.
    pub fn read(&self, source_id: &str, query: &ReadQuery) -> Vec<Envelope> {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_READ_LIMIT)
            .min(MAX_READ_LIMIT);
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(cache) = sources.get(source_id) else {
            return Vec::new();
        };
        let envelopes = &cache.envelopes;
        let from = query
            .start_time
            .map_or(0, |t| envelopes.partition_point(|e| e.timestamp < t));
        let to = query.end_time.map_or(envelopes.len(), |t| {
            envelopes.partition_point(|e| e.timestamp < t)
        });
        if from >= to {
            return Vec::new();
        }
        let wanted = |e: &&Envelope| type_matches(e, &query.envelope_types);
        let range = envelopes.range(from..to);
        if query.descending {
            range.rev().filter(wanted).take(limit).cloned().collect()
        } else {
            range.filter(wanted).take(limit).cloned().collect()
        }
    }

    /// Per source id: how many envelopes are held and how many were dropped.
    pub fn meta(&self) -> BTreeMap<String, SourceMeta> {
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sources
            .iter()
            .map(|(id, cache)| {
                let ts = |e: Option<&Envelope>| e.map_or(0, |e| e.timestamp);
                let meta = SourceMeta {
                    count: cache.envelopes.len() as u64,
                    expired: cache.expired,
                    oldest_timestamp: ts(cache.envelopes.front()),
                    newest_timestamp: ts(cache.envelopes.back()),
                };
                (id.clone(), meta)
            })
            .collect()
    }

    /// Bus messages on [`ENVELOPE_SUBJECT`] that were not envelopes.
    pub fn bad_messages(&self) -> u64 {
        self.bad_messages.load(Ordering::Relaxed)
    }

    /// Seconds since this store was created (`vm_uptime` of `/api/v1/info`).
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn ingest_json(&self, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(envelope) => self.ingest(envelope),
            Err(e) => {
                let n = self.bad_messages.fetch_add(1, Ordering::Relaxed) + 1;
                // The first of a run is enough to diagnose a broken emitter.
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, bad_messages = n, "dropping a message that is not an envelope");
                }
            }
        }
    }
}

/// Whether `envelope` is of one of `types` (`LOG`, `COUNTER`, `GAUGE`, `TIMER`,
/// `EVENT`, any case); no types means every envelope.
fn type_matches(envelope: &Envelope, types: &[String]) -> bool {
    if types.is_empty() {
        return true;
    }
    let kind = match envelope.message {
        EnvelopeMessage::Log(_) => "LOG",
        EnvelopeMessage::Counter(_) => "COUNTER",
        EnvelopeMessage::Gauge(_) => "GAUGE",
    };
    types.iter().any(|t| t.eq_ignore_ascii_case(kind))
}

/// Feeds `store` from `ENVELOPE_SUBJECT` until cancelled.
pub fn spawn_ingest(
    bus: Bus,
    store: Arc<LogStore>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sub = match bus.subscribe(ENVELOPE_SUBJECT).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(error = %e, "log cache cannot subscribe to envelopes");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                msg = sub.next() => match msg {
                    Some(msg) => store.ingest_json(&msg.payload),
                    None => return,
                },
            }
        }
    })
}

/// Publishes one envelope on the bus (fire and forget).
///
/// Works outside async code too: a publish that completes without waiting (the
/// in-process bus) is done here; one that must wait is spawned on the current runtime.
pub fn emit(bus: &Bus, envelope: &Envelope) {
    let payload = match serde_json::to_vec(envelope) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialize an envelope");
            return;
        }
    };
    let bus = bus.clone();
    let mut publish = Box::pin(async move {
        if let Err(e) = bus.publish(ENVELOPE_SUBJECT, payload).await {
            tracing::debug!(error = %e, "cannot publish an envelope");
        }
    });
    if (&mut publish).now_or_never().is_none() {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(publish);
            }
            Err(_) => tracing::debug!("dropping an envelope: no runtime to publish it on"),
        }
    }
}

mod as_string {
    use serde::Serializer;

    pub fn serialize<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::{Counter, LogType};

    fn log_at(source: &str, ts: i64, line: &str) -> Envelope {
        let mut e = Envelope::log(source, "0", "APP/PROC/WEB", LogType::Out, line);
        e.timestamp = ts;
        e
    }

    fn counter_at(source: &str, ts: i64) -> Envelope {
        let mut e = log_at(source, ts, "");
        e.message = EnvelopeMessage::Counter(Counter {
            name: "requests".into(),
            delta: 1,
            total: 1,
        });
        e
    }

    fn timestamps(envelopes: &[Envelope]) -> Vec<i64> {
        envelopes.iter().map(|e| e.timestamp).collect()
    }

    #[test]
    fn reads_in_timestamp_order_even_when_ingested_out_of_order() {
        let store = LogStore::new(10);
        for ts in [3, 1, 2, 5, 4] {
            store.ingest(log_at("app", ts, "x"));
        }
        let all = store.read("app", &ReadQuery::default());
        assert_eq!(timestamps(&all), vec![1, 2, 3, 4, 5]);
        let desc = store.read(
            "app",
            &ReadQuery {
                descending: true,
                limit: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(timestamps(&desc), vec![5, 4]);
        assert!(store.read("other", &ReadQuery::default()).is_empty());
    }

    #[test]
    fn read_selects_range_types_and_limit() {
        let store = LogStore::new(100);
        for ts in 1..=10 {
            store.ingest(log_at("app", ts, "x"));
        }
        store.ingest(counter_at("app", 6));
        let q = ReadQuery {
            start_time: Some(3),
            end_time: Some(7),
            ..Default::default()
        };
        assert_eq!(timestamps(&store.read("app", &q)), vec![3, 4, 5, 6, 6]);
        let q = ReadQuery {
            envelope_types: vec!["counter".into()],
            ..Default::default()
        };
        assert_eq!(timestamps(&store.read("app", &q)), vec![6]);
        let q = ReadQuery {
            envelope_types: vec!["LOG".into()],
            limit: Some(3),
            ..Default::default()
        };
        assert_eq!(timestamps(&store.read("app", &q)), vec![1, 2, 3]);
        let q = ReadQuery {
            start_time: Some(8),
            end_time: Some(8),
            ..Default::default()
        };
        assert!(store.read("app", &q).is_empty());
    }

    #[test]
    fn limit_defaults_to_100_and_is_capped_at_1000() {
        let store = LogStore::new(5000);
        for ts in 0..2000 {
            store.ingest(log_at("app", ts, "x"));
        }
        assert_eq!(store.read("app", &ReadQuery::default()).len(), 100);
        let q = ReadQuery {
            limit: Some(5000),
            ..Default::default()
        };
        assert_eq!(store.read("app", &q).len(), 1000);
    }

    #[test]
    fn full_sources_drop_the_oldest_and_count_them_expired() {
        let store = LogStore::new(3);
        for ts in 1..=5 {
            store.ingest(log_at("app", ts, "x"));
        }
        store.ingest(log_at("api", 9, "x"));
        assert_eq!(
            timestamps(&store.read("app", &ReadQuery::default())),
            vec![3, 4, 5]
        );
        let meta = store.meta();
        assert_eq!(
            meta["app"],
            SourceMeta {
                count: 3,
                expired: 2,
                oldest_timestamp: 3,
                newest_timestamp: 5
            }
        );
        assert_eq!(meta["api"].count, 1);
        let json = serde_json::to_value(&meta["app"]).unwrap();
        assert_eq!(json["oldestTimestamp"], "3");
    }

    #[tokio::test]
    async fn emitted_envelopes_reach_the_store_and_bad_messages_are_counted() {
        let bus = Bus::in_process();
        let store = Arc::new(LogStore::new(10));
        let cancel = CancellationToken::new();
        let task = spawn_ingest(bus.clone(), store.clone(), cancel.clone());
        // Wait until the subscription exists so the messages are not published to nobody.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            emit(&bus, &log_at("app", 1, "hello"));
            if !store.read("app", &ReadQuery::default()).is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "envelope never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bus.publish(ENVELOPE_SUBJECT, "not json").await.unwrap();
        while store.bad_messages() == 0 {
            assert!(Instant::now() < deadline, "bad message not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        task.await.unwrap();
    }
}
