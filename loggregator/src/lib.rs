//! Loggregator: log and metric envelopes, the log cache (recent envelopes per source),
//! and its read API.

pub mod api;
pub mod envelope;
pub mod store;

pub use api::{log_cache_router, AccessDecision, SourceAuthorizer};
pub use envelope::{Envelope, EnvelopeMessage, LogType, ENVELOPE_SUBJECT};
pub use store::{
    emit, spawn_ingest, LogStore, ReadQuery, SourceMeta, DEFAULT_MAX_ENVELOPES_PER_SOURCE,
    DEFAULT_READ_LIMIT, MAX_READ_LIMIT,
};
