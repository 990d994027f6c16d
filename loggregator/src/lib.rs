//! Loggregator: log and metric envelopes, the log cache (recent envelopes per source),
//! its read API, the RLP gateway's live stream of what is ingested, syslog drains, and
//! the metrics collector view over every component's `/metrics`.

pub mod api;
pub mod collector;
pub mod envelope;
pub mod rlp;
pub mod store;
pub mod syslog;

pub use api::{log_cache_router, AccessDecision, SourceAuthorizer};
pub use collector::{
    Collector, LocalMetrics, MetricsTarget, TargetError, TargetSource, DEFAULT_SCRAPE_TIMEOUT,
};
pub use envelope::{Envelope, EnvelopeBatch, EnvelopeMessage, LogBatch, LogType, ENVELOPE_SUBJECT};
pub use rlp::{
    rlp_router, rlp_router_with_config, RlpConfig, Selector, SelectorError, FIREHOSE_SOURCE_ID,
};
pub use store::{
    emit, emit_log_batch, spawn_ingest, LogStore, LogStoreConfig, ReadQuery, SourceMeta,
    StoreStats, DEFAULT_MAX_ENVELOPES_PER_SOURCE, DEFAULT_READ_LIMIT, MAX_READ_LIMIT,
};
pub use syslog::{
    DrainScheme, DrainStats, DrainType, DrainUrl, DrainUrlError, SyslogConfig, SyslogDrains,
    SyslogError,
};
