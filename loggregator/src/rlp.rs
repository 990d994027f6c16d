//! The RLP gateway's streaming read: `GET /v2/read?source_id=..&log&counter&gauge&timer&event`
//! as Server-Sent Events (`data: {"batch":[...]}`), fed live from the log cache's ingest.
//!
//! Access is the [`SourceAuthorizer`]'s, asked once per selected source id. Without a
//! `source_id` the stream is the firehose: every source, allowed only to a token the
//! authorizer lets read [`FIREHOSE_SOURCE_ID`] (`doppler.firehose` / admin); others get
//! 403. Each reader has its own bounded buffer: a reader that falls behind loses the
//! oldest envelopes, told in an SSE comment (`: dropped N envelopes ...`) and counted
//! in [`crate::StoreStats::stream_dropped`], and never slows ingest down.
//! `event: heartbeat` frames keep idle connections alive, and after
//! [`RlpConfig::stream_lifetime`] the stream ends with `event: closing` so that clients
//! reconnect (and re-authorize), as the RLP gateway does.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::api::{authorization, error};
use crate::store::type_matches;
use crate::{AccessDecision, Envelope, LogStore, SourceAuthorizer};

/// The source id the [`SourceAuthorizer`] is asked about for the firehose (a stream
/// without `source_id`): allowed means the token may read every source.
pub const FIREHOSE_SOURCE_ID: &str = "*";

/// The envelope types `/v2/read` selects by bare query flags.
const ENVELOPE_TYPES: [&str; 5] = ["log", "counter", "gauge", "timer", "event"];

/// Stream timing and batching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlpConfig {
    /// Between `event: heartbeat` frames: 15 s, as the RLP gateway.
    pub heartbeat_interval: Duration,
    /// How long one stream lasts before `event: closing`: 14 min, as the RLP gateway.
    pub stream_lifetime: Duration,
    /// Most envelopes in one `data:` batch: 100. A batch holds what is already waiting,
    /// so a quiet stream sends each envelope at once and a busy one sends fewer frames.
    pub max_batch: usize,
}

impl Default for RlpConfig {
    fn default() -> Self {
        RlpConfig {
            heartbeat_interval: Duration::from_secs(15),
            stream_lifetime: Duration::from_secs(14 * 60),
            max_batch: 100,
        }
    }
}

/// A `/v2/read` query that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("no envelope type selected: add one or more of log, counter, gauge, timer, event")]
    NoEnvelopeTypes,
    #[error("source_id must not be empty")]
    EmptySourceId,
}

/// What one stream selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The source ids to stream; `None` is the firehose.
    pub source_ids: Option<BTreeSet<String>>,
    /// Upper-case envelope types (`LOG`, `COUNTER`, ...), never empty.
    pub envelope_types: Vec<String>,
}

impl Selector {
    /// Parses `/v2/read` parameters: repeated `source_id`s and bare type flags.
    pub fn parse(params: &[(String, String)]) -> Result<Selector, SelectorError> {
        let mut source_ids = BTreeSet::new();
        let mut envelope_types = Vec::new();
        for (name, value) in params {
            if name == "source_id" {
                if value.is_empty() {
                    return Err(SelectorError::EmptySourceId);
                }
                source_ids.insert(value.clone());
            } else if ENVELOPE_TYPES.contains(&name.as_str()) {
                let upper = name.to_ascii_uppercase();
                if !envelope_types.contains(&upper) {
                    envelope_types.push(upper);
                }
            }
        }
        if envelope_types.is_empty() {
            return Err(SelectorError::NoEnvelopeTypes);
        }
        Ok(Selector {
            source_ids: (!source_ids.is_empty()).then_some(source_ids),
            envelope_types,
        })
    }

    pub fn is_firehose(&self) -> bool {
        self.source_ids.is_none()
    }

    pub fn matches(&self, envelope: &Envelope) -> bool {
        self.source_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&envelope.source_id))
            && type_matches(envelope, &self.envelope_types)
    }
}

struct RlpState {
    store: Arc<LogStore>,
    auth: Arc<dyn SourceAuthorizer>,
    config: RlpConfig,
}

/// `/v2/read` with the RLP gateway's timing.
pub fn rlp_router(store: Arc<LogStore>, auth: Arc<dyn SourceAuthorizer>) -> axum::Router {
    rlp_router_with_config(store, auth, RlpConfig::default())
}

pub fn rlp_router_with_config(
    store: Arc<LogStore>,
    auth: Arc<dyn SourceAuthorizer>,
    config: RlpConfig,
) -> axum::Router {
    axum::Router::new()
        .route("/v2/read", get(read))
        .with_state(Arc::new(RlpState {
            store,
            auth,
            config,
        }))
}

async fn read(
    State(state): State<Arc<RlpState>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let selector = match Selector::parse(&params) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let auth = authorization(&headers);
    let asked: Vec<&str> = match &selector.source_ids {
        Some(ids) => ids.iter().map(String::as_str).collect(),
        None => vec![FIREHOSE_SOURCE_ID],
    };
    for source_id in asked {
        match state.auth.can_read(auth, source_id).await {
            AccessDecision::Allowed => {}
            AccessDecision::Unauthenticated => {
                return error(StatusCode::UNAUTHORIZED, "unauthorized")
            }
            AccessDecision::Denied if selector.is_firehose() => {
                return error(
                    StatusCode::FORBIDDEN,
                    "reading every source needs the doppler.firehose or logs.admin scope",
                )
            }
            AccessDecision::Denied => return error(StatusCode::NOT_FOUND, "not found"),
        }
    }
    // Subscribed before the response starts: whatever is ingested once the client has
    // the headers reaches it.
    let reader = Reader::new(state.store.clone(), selector, &state.config);
    Sse::new(reader.into_stream()).into_response()
}

/// One connected stream; dropped (and unsubscribed) when the client goes away.
struct Reader {
    rx: Receiver<Arc<Envelope>>,
    store: Arc<LogStore>,
    selector: Selector,
    max_batch: usize,
    heartbeat: Interval,
    closing: Pin<Box<Sleep>>,
    /// Lost envelopes not yet told to the client.
    unreported_drops: u64,
    done: bool,
}

#[derive(Serialize)]
struct Batch<'a> {
    batch: Vec<&'a Envelope>,
}

impl Reader {
    fn new(store: Arc<LogStore>, selector: Selector, config: &RlpConfig) -> Reader {
        let rx = store.subscribe();
        let period = config.heartbeat_interval.max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Reader {
            rx,
            store,
            selector,
            max_batch: config.max_batch.max(1),
            heartbeat,
            closing: Box::pin(tokio::time::sleep(config.stream_lifetime)),
            unreported_drops: 0,
            done: false,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut reader| async move {
            let event = reader.next_event().await?;
            Some((Ok(event), reader))
        })
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if self.unreported_drops > 0 {
                let n = std::mem::take(&mut self.unreported_drops);
                return Some(
                    Event::default()
                        .comment(format!("dropped {n} envelopes: this reader fell behind")),
                );
            }
            tokio::select! {
                biased;
                _ = &mut self.closing => {
                    self.done = true;
                    return Some(Event::default().event("closing").data("closing"));
                }
                _ = self.heartbeat.tick() => {
                    return Some(
                        Event::default()
                            .event("heartbeat")
                            .data(crate::envelope::now_ns().to_string()),
                    );
                }
                received = self.rx.recv() => match received {
                    Ok(envelope) if self.selector.matches(&envelope) => {
                        let batch = self.batch_from(envelope);
                        if let Some(event) = batch_event(&batch) {
                            return Some(event);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => self.lost(n),
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// `first` and the matching envelopes already waiting, up to `max_batch`.
    fn batch_from(&mut self, first: Arc<Envelope>) -> Vec<Arc<Envelope>> {
        let mut batch = vec![first];
        // Bounded so a flood of other sources' envelopes cannot hold one batch open.
        let mut looked_at = 0;
        while batch.len() < self.max_batch && looked_at < self.max_batch * 16 {
            looked_at += 1;
            match self.rx.try_recv() {
                Ok(envelope) if self.selector.matches(&envelope) => batch.push(envelope),
                Ok(_) => {}
                Err(TryRecvError::Lagged(n)) => self.lost(n),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        batch
    }

    fn lost(&mut self, n: u64) {
        self.unreported_drops += n;
        self.store.count_stream_drops(n);
    }
}

fn batch_event(batch: &[Arc<Envelope>]) -> Option<Event> {
    let batch = Batch {
        batch: batch.iter().map(|e| e.as_ref()).collect(),
    };
    match Event::default().json_data(&batch) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialize an envelope batch");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Counter, EnvelopeMessage, LogType};

    fn params(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect()
    }

    #[test]
    fn parses_sources_and_type_flags() {
        let s = Selector::parse(&params("source_id=a&source_id=b&log&gauge&shard_id=x")).unwrap();
        assert_eq!(
            s.source_ids,
            Some(BTreeSet::from(["a".to_string(), "b".to_string()]))
        );
        assert_eq!(s.envelope_types, vec!["LOG", "GAUGE"]);
        assert!(!s.is_firehose());
        assert!(Selector::parse(&params("log")).unwrap().is_firehose());
    }

    #[test]
    fn rejects_a_query_without_types_or_with_an_empty_source() {
        assert_eq!(
            Selector::parse(&params("source_id=a")),
            Err(SelectorError::NoEnvelopeTypes)
        );
        assert_eq!(
            Selector::parse(&params("source_id=&log")),
            Err(SelectorError::EmptySourceId)
        );
    }

    #[test]
    fn matches_by_source_and_type() {
        let s = Selector::parse(&params("source_id=a&log")).unwrap();
        let log = Envelope::log("a", "0", "APP/PROC/WEB", LogType::Out, "x");
        assert!(s.matches(&log));
        let mut other = log.clone();
        other.source_id = "b".into();
        assert!(!s.matches(&other));
        let mut counter = log.clone();
        counter.message = EnvelopeMessage::Counter(Counter {
            name: "n".into(),
            delta: 1,
            total: 1,
        });
        assert!(!s.matches(&counter));
        assert!(Selector::parse(&params("counter"))
            .unwrap()
            .matches(&counter));
    }
}
