//! The log cache: recent envelopes per source id, bounded per source by count and bytes
//! and in the number of sources, fed from the bus; and the live fan-out of every ingested
//! envelope to stream readers (the RLP gateway).
//!
//! Like Log Cache, each source keeps its newest envelopes in timestamp order and drops
//! the oldest once full (counted as `expired`), and the whole store keeps within a byte
//! budget by dropping the oldest envelopes of all sources (also `expired`); reads select
//! a time range and envelope types and return at most `limit` envelopes. Like
//! Loggregator, ingest never waits for a reader: a reader that falls behind loses
//! envelopes, and the loss is counted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wf_messaging::Bus;
use wf_metrics::{Exposition, Kind};

use crate::{Envelope, EnvelopeBatch, EnvelopeMessage, LogBatch, ENVELOPE_SUBJECT};

/// Envelopes kept per source id before the oldest are dropped.
pub const DEFAULT_MAX_ENVELOPES_PER_SOURCE: usize = 100_000;

/// Approximate bytes kept in the whole store ([`LogStoreConfig::max_bytes`]).
pub const DEFAULT_MAX_BYTES: usize = 512 << 20;

/// A store over its byte budget prunes down to this share of it (per cent), so that
/// the next prune waits for a tenth of the budget to arrive: ingest stays O(1)
/// amortised however full the store runs.
const PRUNE_TO_PERCENT: usize = 90;

/// Log Cache's default `limit` of a read.
pub const DEFAULT_READ_LIMIT: usize = 100;

/// Log Cache's largest `limit` of a read.
pub const MAX_READ_LIMIT: usize = 1000;

/// How the log cache is bounded. Zero limits count as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogStoreConfig {
    /// Envelopes kept per source id: 100,000, Log Cache's `MAX_PER_SOURCE` default.
    pub max_envelopes_per_source: usize,
    /// Approximate bytes kept per source id ([`Envelope::approximate_size`]): 16 MiB.
    /// Log Cache bounds memory as a share of the VM's; a per-source bound also keeps one
    /// chatty app from pushing everyone else's logs out. The newest envelope of a source
    /// is always kept, however large.
    pub max_bytes_per_source: usize,
    /// Source ids kept: 10,000. A new source beyond that evicts the source updated least
    /// recently.
    pub max_sources: usize,
    /// Approximate bytes kept in the whole store: 512 MiB ([`DEFAULT_MAX_BYTES`]). The
    /// per-source bounds alone allow 16 MiB x 10,000 sources; Log Cache instead fills a
    /// share of its VM's memory (`MEMORY_LIMIT_PERCENT`, 50 on a VM of its own) and,
    /// when over it, drops the oldest envelopes across all sources. Ours shares the
    /// controller's process, so the default is a fixed size: a container-metric
    /// envelope counts ~1 KB (and takes 2-2.4 KB of resident memory), so 512 MiB holds
    /// half a million of them, 12 minutes of metrics from 10,000 instances reporting
    /// every 15 s, in 1.0-1.3 GiB of RSS (`examples/store_budget.rs`). When the total
    /// passes this, the oldest envelopes of the whole store are dropped (counted as
    /// `expired`) until it is at 90% of it; a source left empty is dropped (counted as
    /// evicted).
    pub max_bytes: usize,
    /// Envelopes buffered for every stream reader: 16,384. A reader further behind than
    /// that loses the oldest and is told how many (Loggregator's ring-buffer diodes).
    pub stream_buffer: usize,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            max_envelopes_per_source: DEFAULT_MAX_ENVELOPES_PER_SOURCE,
            max_bytes_per_source: 16 << 20,
            max_sources: 10_000,
            stream_buffer: 16_384,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

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
    /// Envelopes dropped because the source was full (by count or by bytes).
    #[serde(with = "as_string")]
    pub expired: u64,
    #[serde(with = "as_string")]
    pub oldest_timestamp: i64,
    #[serde(with = "as_string")]
    pub newest_timestamp: i64,
}

/// Store-wide counters, for operators and `/metrics` ([`StoreStats::write_metrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Envelopes ingested since the store was created.
    pub ingested: u64,
    /// Stream readers (RLP gateway streams, syslog drains' dispatcher) now attached.
    pub stream_readers: u64,
    pub sources: u64,
    pub envelopes: u64,
    /// Approximate bytes held.
    pub bytes: u64,
    /// Envelopes dropped because their source was full or the store over its byte
    /// budget, summed over all sources ever.
    pub expired: u64,
    /// Sources dropped whole (to make room for new ones, or left empty by the byte
    /// budget), and the envelopes the former held.
    pub evicted_sources: u64,
    pub evicted_envelopes: u64,
    /// Envelopes stream readers lost because they fell behind.
    pub stream_dropped: u64,
    /// Bus messages that were not envelopes.
    pub bad_messages: u64,
}

impl StoreStats {
    /// Writes the log cache's sizes and loss counters as Prometheus metrics.
    pub fn write_metrics(&self, e: &mut Exposition) {
        let families: [(&str, Kind, &str, u64); 10] = [
            (
                "log_cache_envelopes_ingested_total",
                Kind::Counter,
                "Envelopes ingested by the log cache.",
                self.ingested,
            ),
            (
                "log_cache_envelopes_stored",
                Kind::Gauge,
                "Envelopes held in the log cache.",
                self.envelopes,
            ),
            (
                "log_cache_bytes_stored",
                Kind::Gauge,
                "Approximate bytes held in the log cache.",
                self.bytes,
            ),
            (
                "log_cache_sources",
                Kind::Gauge,
                "Source ids with envelopes in the log cache.",
                self.sources,
            ),
            (
                "log_cache_stream_readers",
                Kind::Gauge,
                "Stream readers attached to the log cache's live stream.",
                self.stream_readers,
            ),
            (
                "log_cache_envelopes_expired_total",
                Kind::Counter,
                "Envelopes dropped because their source was full or the store over its budget.",
                self.expired,
            ),
            (
                "log_cache_sources_evicted_total",
                Kind::Counter,
                "Sources dropped whole: for new ones, or emptied by the byte budget.",
                self.evicted_sources,
            ),
            (
                "log_cache_envelopes_evicted_total",
                Kind::Counter,
                "Envelopes dropped with their evicted source.",
                self.evicted_envelopes,
            ),
            (
                "log_cache_stream_dropped_total",
                Kind::Counter,
                "Envelopes stream readers lost because they fell behind.",
                self.stream_dropped,
            ),
            (
                "log_cache_bad_messages_total",
                Kind::Counter,
                "Bus messages on the envelope subject that were not envelopes.",
                self.bad_messages,
            ),
        ];
        for (name, kind, help, value) in families {
            e.single(name, kind, help, value);
        }
    }
}

#[derive(Default)]
struct SourceCache {
    /// Ordered by timestamp, oldest first.
    envelopes: VecDeque<Envelope>,
    /// Sum of [`Envelope::approximate_size`] of `envelopes`.
    bytes: usize,
    expired: u64,
    /// Ingest sequence number of the last envelope, for evicting the stalest source.
    updated: u64,
}

#[derive(Default)]
struct Sources {
    by_id: HashMap<String, SourceCache>,
    /// Envelopes ingested so far; orders sources by last update.
    sequence: u64,
    /// Sums over `by_id` of their envelopes and bytes.
    envelopes: usize,
    bytes: usize,
}

pub struct LogStore {
    config: LogStoreConfig,
    sources: RwLock<Sources>,
    /// Every ingested envelope, for stream readers.
    stream: broadcast::Sender<Arc<Envelope>>,
    expired: AtomicU64,
    evicted_sources: AtomicU64,
    evicted_envelopes: AtomicU64,
    stream_dropped: AtomicU64,
    bad_messages: AtomicU64,
    started: Instant,
}

impl LogStore {
    /// A store keeping `max_per_source` envelopes per source, other bounds as in
    /// [`LogStoreConfig::default`].
    pub fn new(max_per_source: usize) -> LogStore {
        LogStore::with_config(LogStoreConfig {
            max_envelopes_per_source: max_per_source,
            ..LogStoreConfig::default()
        })
    }

    pub fn with_config(config: LogStoreConfig) -> LogStore {
        let config = LogStoreConfig {
            max_envelopes_per_source: config.max_envelopes_per_source.max(1),
            max_bytes_per_source: config.max_bytes_per_source.max(1),
            max_sources: config.max_sources.max(1),
            stream_buffer: config.stream_buffer.max(1),
            max_bytes: config.max_bytes.max(1),
        };
        let (stream, _) = broadcast::channel(config.stream_buffer);
        LogStore {
            config,
            sources: RwLock::new(Sources::default()),
            stream,
            expired: AtomicU64::new(0),
            evicted_sources: AtomicU64::new(0),
            evicted_envelopes: AtomicU64::new(0),
            stream_dropped: AtomicU64::new(0),
            bad_messages: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn config(&self) -> &LogStoreConfig {
        &self.config
    }

    /// Keeps `envelope` and hands it to every stream reader; never waits for a reader.
    pub fn ingest(&self, envelope: Envelope) {
        let streamed = (self.stream.receiver_count() > 0).then(|| Arc::new(envelope.clone()));
        free(self.keep(envelope));
        if let Some(envelope) = streamed {
            // Fails only when the last reader left meanwhile.
            let _ = self.stream.send(envelope);
        }
    }

    /// Keeps `envelope`; returns the envelopes a prune dropped, for the caller to free.
    fn keep(&self, envelope: Envelope) -> Vec<Envelope> {
        let size = envelope.approximate_size();
        let mut guard = self
            .sources
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sources = &mut *guard;
        sources.sequence += 1;
        if !sources.by_id.contains_key(&envelope.source_id)
            && sources.by_id.len() >= self.config.max_sources
        {
            self.evict_stalest(sources);
        }
        let cache = sources.by_id.entry(envelope.source_id.clone()).or_default();
        cache.updated = sources.sequence;
        cache.bytes += size;
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
        let mut expired = 0;
        let mut freed = 0;
        while cache.envelopes.len() > self.config.max_envelopes_per_source
            || (cache.bytes > self.config.max_bytes_per_source && cache.envelopes.len() > 1)
        {
            let Some(oldest) = cache.envelopes.pop_front() else {
                break;
            };
            let oldest = oldest.approximate_size();
            cache.bytes = cache.bytes.saturating_sub(oldest);
            freed += oldest;
            expired += 1;
        }
        if expired > 0 {
            cache.expired += expired;
            self.expired.fetch_add(expired, Ordering::Relaxed);
        }
        sources.envelopes = (sources.envelopes + 1).saturating_sub(expired as usize);
        sources.bytes = (sources.bytes + size).saturating_sub(freed);
        if sources.bytes > self.config.max_bytes {
            self.prune(sources)
        } else {
            Vec::new()
        }
    }

    /// Drops the oldest envelopes of the whole store, by timestamp, until it holds
    /// [`PRUNE_TO_PERCENT`] of its byte budget, as Log Cache's truncation does when
    /// memory runs short: every source keeps its newest envelopes, and the sources that
    /// stopped sending (whose envelopes are all old) go first. A source left empty is
    /// dropped. The last envelope of the store is kept, however large.
    ///
    /// O(sources + dropped x log sources), once per tenth of the budget ingested.
    fn prune(&self, sources: &mut Sources) -> Vec<Envelope> {
        let started = Instant::now();
        let target = self.config.max_bytes / 100 * PRUNE_TO_PERCENT;
        let mut oldest: BinaryHeap<Reverse<(i64, String)>> = sources
            .by_id
            .iter()
            .filter_map(|(id, cache)| {
                Some(Reverse((cache.envelopes.front()?.timestamp, id.clone())))
            })
            .collect();
        let (mut dropped, mut emptied) = (Vec::new(), 0u64);
        while sources.bytes > target && sources.envelopes > 1 {
            let Some(Reverse((_, id))) = oldest.pop() else {
                break;
            };
            let Some(cache) = sources.by_id.get_mut(&id) else {
                continue;
            };
            let Some(envelope) = cache.envelopes.pop_front() else {
                continue;
            };
            let size = envelope.approximate_size();
            cache.bytes = cache.bytes.saturating_sub(size);
            cache.expired += 1;
            sources.bytes = sources.bytes.saturating_sub(size);
            sources.envelopes -= 1;
            dropped.push(envelope);
            match cache.envelopes.front() {
                Some(next) => oldest.push(Reverse((next.timestamp, id))),
                None => {
                    sources.by_id.remove(&id);
                    emptied += 1;
                }
            }
        }
        self.expired
            .fetch_add(dropped.len() as u64, Ordering::Relaxed);
        self.evicted_sources.fetch_add(emptied, Ordering::Relaxed);
        tracing::debug!(
            dropped = dropped.len(),
            emptied_sources = emptied,
            bytes = sources.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log cache pruned its oldest envelopes to keep within its byte budget"
        );
        dropped
    }

    /// Drops the source updated least recently. A linear scan, but only when a new
    /// source arrives at the cap, so the ingest of known sources stays O(1).
    fn evict_stalest(&self, sources: &mut Sources) {
        let Some(stalest) = sources
            .by_id
            .iter()
            .min_by_key(|(_, cache)| cache.updated)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        if let Some(cache) = sources.by_id.remove(&stalest) {
            sources.envelopes = sources.envelopes.saturating_sub(cache.envelopes.len());
            sources.bytes = sources.bytes.saturating_sub(cache.bytes);
            self.evicted_sources.fetch_add(1, Ordering::Relaxed);
            self.evicted_envelopes
                .fetch_add(cache.envelopes.len() as u64, Ordering::Relaxed);
            tracing::debug!(source_id = %stalest, envelopes = cache.envelopes.len(), "log cache evicted a source to make room");
        }
    }

    /// A receiver of every envelope ingested from now on. It holds at most
    /// `stream_buffer` unread envelopes; a receiver further behind gets
    /// `RecvError::Lagged(n)` (report `n` with [`LogStore::count_stream_drops`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.stream.subscribe()
    }

    /// Stream readers connected now.
    pub fn stream_readers(&self) -> usize {
        self.stream.receiver_count()
    }

    /// Records `n` envelopes a stream reader lost by falling behind.
    pub fn count_stream_drops(&self, n: u64) {
        self.stream_dropped.fetch_add(n, Ordering::Relaxed);
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
        let Some(cache) = sources.by_id.get(source_id) else {
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
            .by_id
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

    /// Store-wide sizes and loss counters.
    pub fn stats(&self) -> StoreStats {
        let (ingested, sources, envelopes, bytes) = {
            let sources = self
                .sources
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (
                sources.sequence,
                sources.by_id.len() as u64,
                sources.envelopes as u64,
                sources.bytes as u64,
            )
        };
        StoreStats {
            ingested,
            stream_readers: self.stream.receiver_count() as u64,
            sources,
            envelopes,
            bytes,
            expired: self.expired.load(Ordering::Relaxed),
            evicted_sources: self.evicted_sources.load(Ordering::Relaxed),
            evicted_envelopes: self.evicted_envelopes.load(Ordering::Relaxed),
            stream_dropped: self.stream_dropped.load(Ordering::Relaxed),
            bad_messages: self.bad_messages(),
        }
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
        match EnvelopeBatch::decode(payload) {
            Ok(envelopes) => envelopes.into_iter().for_each(|e| self.ingest(e)),
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

/// Frees what a prune dropped, after the lock is released and, for more than a few,
/// on a thread of their own: freeing a tenth of the budget (50,000 metric envelopes of
/// 512 MiB) took 0.3 s, which neither readers nor the ingest task (on the async
/// runtime) should wait for.
fn free(dropped: Vec<Envelope>) {
    if dropped.len() < 1024 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("log-cache-free".into())
        .spawn(move || drop(dropped));
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "freeing pruned envelopes inline");
    }
}

/// Whether `envelope` is of one of `types` (`LOG`, `COUNTER`, `GAUGE`, `TIMER`,
/// `EVENT`, any case); no types means every envelope.
pub(crate) fn type_matches(envelope: &Envelope, types: &[String]) -> bool {
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
    publish(bus, serde_json::to_vec(envelope));
}

/// Publishes `batch` on the bus as one message, as [`emit`] does one envelope. Keep
/// batches well under the bus's largest message (NATS: 1 MB by default).
pub fn emit_log_batch(bus: &Bus, batch: LogBatch) {
    if !batch.is_empty() {
        publish(bus, Ok(batch.into_json()));
    }
}

fn publish(bus: &Bus, payload: serde_json::Result<Vec<u8>>) {
    let payload = match payload {
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

    #[test]
    fn sources_are_bounded_by_bytes_too() {
        let one = log_at("app", 1, "0123456789").approximate_size();
        let store = LogStore::with_config(LogStoreConfig {
            max_bytes_per_source: 3 * one,
            ..LogStoreConfig::default()
        });
        for ts in 1..=5 {
            store.ingest(log_at("app", ts, "0123456789"));
        }
        assert_eq!(
            timestamps(&store.read("app", &ReadQuery::default())),
            vec![3, 4, 5]
        );
        assert_eq!(store.meta()["app"].expired, 2);
        let stats = store.stats();
        assert_eq!((stats.envelopes, stats.expired), (3, 2));
        assert_eq!(stats.bytes, 3 * one as u64);
        // One envelope larger than the bound is still kept: it is the newest there is.
        store.ingest(log_at("app", 6, "x".repeat(10 * one).as_str()));
        assert_eq!(
            timestamps(&store.read("app", &ReadQuery::default())),
            vec![6]
        );
        assert_eq!(store.meta()["app"].expired, 5);
    }

    #[test]
    fn a_new_source_beyond_the_cap_evicts_the_least_recently_updated() {
        let store = LogStore::with_config(LogStoreConfig {
            max_sources: 2,
            ..LogStoreConfig::default()
        });
        store.ingest(log_at("a", 1, "x"));
        store.ingest(log_at("a", 2, "x"));
        store.ingest(log_at("b", 3, "x"));
        // `a` is written again, so `b` is now the stalest.
        store.ingest(log_at("a", 4, "x"));
        store.ingest(log_at("c", 5, "x"));
        let meta = store.meta();
        assert_eq!(meta.keys().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(meta["a"].count, 3);
        let stats = store.stats();
        assert_eq!((stats.evicted_sources, stats.evicted_envelopes), (1, 1));
        assert_eq!(stats.sources, 2);
    }

    /// Store-wide totals match the sources', every envelope ingested is held or counted
    /// as dropped, and meta agrees with what reads return.
    fn assert_consistent(store: &LogStore) {
        let stats = store.stats();
        {
            let sources = store.sources.read().unwrap();
            let bytes: usize = sources.by_id.values().map(|c| c.bytes).sum();
            let held: usize = sources.by_id.values().map(|c| c.envelopes.len()).sum();
            let sizes: usize = sources
                .by_id
                .values()
                .flat_map(|c| c.envelopes.iter().map(Envelope::approximate_size))
                .sum();
            assert_eq!((sources.bytes, sources.envelopes), (bytes, held));
            assert_eq!(bytes, sizes);
        }
        assert_eq!(
            stats.ingested,
            stats.envelopes + stats.expired + stats.evicted_envelopes
        );
        let meta = store.meta();
        assert_eq!(meta.len() as u64, stats.sources);
        assert_eq!(meta.values().map(|m| m.count).sum::<u64>(), stats.envelopes);
        for (id, m) in &meta {
            assert!(m.count > 0, "{id}: no empty sources are listed");
            let q = ReadQuery {
                limit: Some(MAX_READ_LIMIT),
                ..Default::default()
            };
            let read = store.read(id, &q);
            assert_eq!(
                read.len() as u64,
                m.count.min(MAX_READ_LIMIT as u64),
                "{id}"
            );
            assert_eq!(read[0].timestamp, m.oldest_timestamp, "{id}");
            let newest = store.read(
                id,
                &ReadQuery {
                    descending: true,
                    limit: Some(1),
                    ..Default::default()
                },
            );
            assert_eq!(newest[0].timestamp, m.newest_timestamp, "{id}");
        }
    }

    #[test]
    fn the_whole_store_keeps_within_its_byte_budget_across_many_sources() {
        let one = log_at("app-0000", 1, "0123456789").approximate_size();
        let budget = 1000 * one;
        let store = LogStore::with_config(LogStoreConfig {
            max_bytes: budget,
            ..LogStoreConfig::default()
        });
        // 2,000 sources, each well within its own bounds, twenty rounds: 40 times the
        // budget arrives.
        let mut ts = 0;
        for _round in 0..20 {
            for source in 0..2000 {
                ts += 1;
                store.ingest(log_at(&format!("app-{source:04}"), ts, "0123456789"));
                assert!(
                    store.stats().bytes as usize <= budget,
                    "over budget at {ts}"
                );
            }
        }
        let stats = store.stats();
        assert_eq!(stats.ingested, 40_000);
        // Pruned to 90% at most a tenth of the budget ago.
        assert!(stats.bytes as usize >= budget * 8 / 10, "{stats:?}");
        assert!(stats.expired >= 39_000, "{stats:?}");
        // What is left is the newest: the oldest envelope held is younger than every
        // envelope dropped.
        let meta = store.meta();
        let oldest_held = meta.values().map(|m| m.oldest_timestamp).min().unwrap();
        assert!(oldest_held > ts - 1000, "{oldest_held} vs {ts}");
        assert_consistent(&store);
    }

    #[test]
    fn the_byte_budget_drops_idle_sources_first_and_keeps_an_active_one_newest() {
        let one = log_at("idle-000", 1, "0123456789").approximate_size();
        let store = LogStore::with_config(LogStoreConfig {
            max_bytes: 500 * one,
            ..LogStoreConfig::default()
        });
        // 100 sources sent four envelopes each, long ago, then stopped.
        for ts in 0..400 {
            store.ingest(log_at(&format!("idle-{:03}", ts % 100), ts, "0123456789"));
        }
        // One app keeps logging, in bursts with stale (out of order) envelopes too.
        for ts in 1000..3000 {
            store.ingest(log_at("active", ts, "0123456789"));
            if ts % 100 == 0 {
                store.ingest(log_at("active", ts - 50, "0123456789"));
            }
            assert_within_budget(&store, 500 * one);
        }
        let meta = store.meta();
        assert!(
            !meta.keys().any(|id| id.starts_with("idle-")),
            "the idle sources' envelopes were the oldest: {:?}",
            meta.keys().take(5).collect::<Vec<_>>()
        );
        let stats = store.stats();
        assert_eq!(
            stats.evicted_sources, 100,
            "emptied sources count as evicted"
        );
        assert_eq!(
            stats.evicted_envelopes, 0,
            "their envelopes count as expired"
        );
        // The active source holds its newest envelopes, none missing at the top.
        let newest = store.read(
            "active",
            &ReadQuery {
                descending: true,
                limit: Some(410),
                ..Default::default()
            },
        );
        let expected: Vec<i64> = (2600..3000).rev().collect();
        // The late envelopes (at 2950, 2850, ...) sit beside their namesakes.
        let mut got = timestamps(&newest);
        got.dedup();
        got.truncate(expected.len());
        assert_eq!(got, expected);
        assert_eq!(meta["active"].newest_timestamp, 2999);
        assert_eq!(
            meta["active"].expired,
            stats.expired - 400,
            "the active source's own drops are counted on it"
        );
        assert_consistent(&store);
    }

    fn assert_within_budget(store: &LogStore, budget: usize) {
        let stats = store.stats();
        assert!(stats.bytes as usize <= budget, "{stats:?}");
    }

    #[test]
    fn one_envelope_over_the_whole_budget_is_still_kept() {
        let store = LogStore::with_config(LogStoreConfig {
            max_bytes: 100,
            ..LogStoreConfig::default()
        });
        store.ingest(log_at("a", 1, "x"));
        store.ingest(log_at("b", 2, &"x".repeat(1000)));
        assert!(store.read("a", &ReadQuery::default()).is_empty());
        assert_eq!(timestamps(&store.read("b", &ReadQuery::default())), vec![2]);
        let stats = store.stats();
        assert_eq!((stats.envelopes, stats.expired, stats.sources), (1, 1, 1));
        assert_consistent(&store);
    }

    #[test]
    fn stats_count_ingested_envelopes_and_readers_and_render_as_metrics() {
        let store = LogStore::with_config(LogStoreConfig {
            max_envelopes_per_source: 2,
            ..LogStoreConfig::default()
        });
        let _reader = store.subscribe();
        for ts in 1..=3 {
            store.ingest(log_at("app", ts, "x"));
        }
        let stats = store.stats();
        assert_eq!(
            (
                stats.ingested,
                stats.envelopes,
                stats.expired,
                stats.stream_readers
            ),
            (3, 2, 1, 1)
        );
        let mut e = wf_metrics::Exposition::new();
        stats.write_metrics(&mut e);
        let text = e.finish();
        for line in [
            "log_cache_envelopes_ingested_total 3",
            "log_cache_envelopes_stored 2",
            "log_cache_envelopes_expired_total 1",
            "log_cache_stream_readers 1",
            "log_cache_sources 1",
            "# TYPE log_cache_stream_dropped_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn zero_limits_count_as_one() {
        let store = LogStore::with_config(LogStoreConfig {
            max_envelopes_per_source: 0,
            max_bytes_per_source: 0,
            max_sources: 0,
            stream_buffer: 0,
            max_bytes: 0,
        });
        store.ingest(log_at("a", 1, "x"));
        store.ingest(log_at("b", 2, "x"));
        store.ingest(log_at("b", 3, "x"));
        assert_eq!(timestamps(&store.read("b", &ReadQuery::default())), vec![3]);
        assert!(store.read("a", &ReadQuery::default()).is_empty());
    }

    #[tokio::test]
    async fn stream_readers_get_new_envelopes_and_a_lagging_one_never_blocks_ingest() {
        let store = LogStore::with_config(LogStoreConfig {
            stream_buffer: 4,
            ..LogStoreConfig::default()
        });
        store.ingest(log_at("app", 1, "before"));
        let mut rx = store.subscribe();
        assert_eq!(store.stream_readers(), 1);
        for ts in 2..=11 {
            store.ingest(log_at("app", ts, "x"));
        }
        // The reader never read while ten arrived: it lost the six oldest, ingest went on.
        assert_eq!(store.read("app", &ReadQuery::default()).len(), 11);
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(6))
        ));
        assert_eq!(rx.recv().await.unwrap().timestamp, 8);
        drop(rx);
        assert_eq!(store.stream_readers(), 0);
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
        // A batch is one message; its envelopes are kept in order.
        let mut batch = LogBatch::default();
        for n in 2..5 {
            let line = format!("line {n}");
            batch.push(
                "batched",
                "0",
                "APP/PROC/WEB",
                LogType::Out,
                line.as_bytes(),
            );
        }
        emit_log_batch(&bus, batch);
        bus.publish(ENVELOPE_SUBJECT, "not json").await.unwrap();
        bus.publish(ENVELOPE_SUBJECT, r#"{"batch": [{"no": "envelope"}]}"#)
            .await
            .unwrap();
        while store.bad_messages() < 2 {
            assert!(Instant::now() < deadline, "bad messages not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let batched = store.read("batched", &ReadQuery::default());
        let lines: Vec<_> = batched
            .iter()
            .map(|e| match &e.message {
                EnvelopeMessage::Log(log) => String::from_utf8_lossy(&log.payload).into_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, ["line 2", "line 3", "line 4"]);
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_batch_is_told_from_an_envelope_by_its_first_key() {
        assert!(EnvelopeBatch::is_batch(br#"{"batch":[]}"#));
        assert!(EnvelopeBatch::is_batch(b" {\n  \"batch\": []}"));
        assert!(!EnvelopeBatch::is_batch(br#"{"timestamp":"1","batch":[]}"#));
        assert!(!EnvelopeBatch::is_batch(b"[]"));
        assert!(!EnvelopeBatch::is_batch(b""));
    }
}
