//! Loggregator: log and metric envelopes, the log cache (recent envelopes per source),
//! and its read API.

pub mod envelope;

pub use envelope::{Envelope, EnvelopeMessage, LogType, ENVELOPE_SUBJECT};
