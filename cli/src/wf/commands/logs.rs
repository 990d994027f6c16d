//! `wf logs`: streams an app's envelopes from the RLP gateway (`/v2/read`, Server-Sent
//! Events) or, with `--recent`, reads them from the Log Cache (`/api/v1/read/<app guid>`),
//! and prints them as the cf CLI does; also tails staging logs for `push`.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, IsTerminal as _};
use std::time::Duration;

use serde_json::Value;
use wf_loggregator::{Envelope, EnvelopeMessage, LogType};

use super::{app_by_name, space_target};
use crate::wf::client::{Client, ClientError};
use crate::wf::Error;

/// The Log Cache's largest page.
const LIMIT: usize = 1000;
/// How far back each poll re-reads, so envelopes that reach the cache late are not lost.
const LOOKBACK_NS: i64 = 2_000_000_000;
/// How often a tail polls.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The first wait before reconnecting a lost stream; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(8);

/// Prints the app's logs: the recent ones with `recent`, else as they arrive until
/// interrupted (Ctrl-C ends the process, as with cf).
pub fn logs(client: &mut Client, name: &str, recent: bool) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    let guid = app["guid"].as_str().unwrap_or_default().to_string();
    println!(
        "Retrieving logs for app {name} in {}...\n",
        target.describe()
    );
    let color = std::io::stdout().is_terminal();
    if recent {
        let path = format!("/api/v1/read/{guid}?envelope_types=LOG&limit={LIMIT}&descending=true");
        let mut envelopes = read(client, &path)?;
        envelopes.reverse();
        for e in &envelopes {
            print!("{}", format_envelope(e, color));
        }
        return Ok(());
    }
    stream(client, &guid, color)
}

/// How one connection to the stream ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// The gateway said `closing` (it ends every stream after a while): reconnect now.
    Closing,
    /// The connection ended without a word.
    Lost,
}

/// Follows `/v2/read` for `guid`, reconnecting with backoff when the stream drops.
fn stream(client: &mut Client, guid: &str, color: bool) -> Result<(), Error> {
    let url = format!("{}/v2/read?source_id={guid}&log", client.log_cache_url()?);
    let mut wait = RECONNECT_FIRST;
    loop {
        let mut delivered = false;
        let why = match stream_once(client, &url, color, &mut delivered) {
            Ok(StreamEnd::Closing) => {
                wait = RECONNECT_FIRST;
                continue;
            }
            Ok(StreamEnd::Lost) => "the server closed the connection".to_string(),
            Err(ClientError::Api(e)) if e.status == 404 && e.title.is_empty() => {
                // A 404 without the gateway's error body: a platform without `/v2/read`.
                return poll_forever(client, guid, color);
            }
            Err(e) if is_retryable(&e) => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        if delivered {
            wait = RECONNECT_FIRST;
        }
        eprintln!(
            "Lost the log stream ({}); reconnecting in {} ms...",
            why.lines().next().unwrap_or_default(),
            wait.as_millis()
        );
        std::thread::sleep(wait);
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

/// Errors worth reconnecting after: the connection, or the server, not the request.
fn is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connection { .. } | ClientError::BadResponse { .. } => true,
        ClientError::Api(api) => api.status == 429 || api.status >= 500,
        _ => false,
    }
}

/// Reads one connection to the stream, printing log lines as their batches arrive.
/// `delivered` turns true once the gateway sent anything.
fn stream_once(
    client: &mut Client,
    url: &str,
    color: bool,
    delivered: &mut bool,
) -> Result<StreamEnd, ClientError> {
    let resp = client.get_stream(url)?;
    let mut reader = BufReader::new(resp);
    let mut parser = SseParser::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ClientError::Connection {
                message: e.to_string(),
            })?;
        if n == 0 {
            return Ok(StreamEnd::Lost);
        }
        let Some(event) = parser.line(&String::from_utf8_lossy(&line)) else {
            continue;
        };
        *delivered = true;
        match event {
            SseEvent::Message { event, data } => match event.as_str() {
                "" | "message" => {
                    for e in parse_stream_batch(&data) {
                        print!("{}", format_envelope(&e, color));
                    }
                }
                "closing" => return Ok(StreamEnd::Closing),
                // Heartbeats, and events this CLI does not know.
                _ => {}
            },
            SseEvent::Comment(comment) => {
                if comment.starts_with("dropped") {
                    eprintln!("({comment})");
                }
            }
        }
    }
}

/// The Log Cache polled every [`POLL_INTERVAL`], for platforms without `/v2/read`.
fn poll_forever(client: &mut Client, guid: &str, color: bool) -> Result<(), Error> {
    let mut tail = LogTail::new(guid, wf_loggregator::envelope::now_ns());
    loop {
        for e in tail.poll(client)? {
            print!("{}", format_envelope(&e, color));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// What a Server-Sent Events stream delivers.
#[derive(Debug, PartialEq, Eq)]
enum SseEvent {
    /// A dispatched event: its `event:` name (empty for plain messages) and its data
    /// lines joined by newlines.
    Message { event: String, data: String },
    /// A `:` comment line (the gateway reports dropped envelopes this way).
    Comment(String),
}

/// Assembles SSE events line by line, per the HTML spec's event-stream rules.
#[derive(Debug, Default)]
struct SseParser {
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Takes one line (with or without its line ending); answers an event when this
    /// line completes one.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(SseEvent::Message { event, data });
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Some(SseEvent::Comment(comment.trim().to_string()));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// The log envelopes of one `{"batch":[...]}` frame in timestamp order; anything else
/// (other kinds, malformed JSON) is skipped.
fn parse_stream_batch(data: &str) -> Vec<Envelope> {
    let Ok(frame) = serde_json::from_str::<Value>(data) else {
        return Vec::new();
    };
    let mut batch: Vec<Envelope> = frame["batch"]
        .as_array()
        .map(|batch| {
            batch
                .iter()
                .filter_map(|e| serde_json::from_value(e.clone()).ok())
                .filter(|e: &Envelope| matches!(e.message, EnvelopeMessage::Log(_)))
                .collect()
        })
        .unwrap_or_default();
    batch.sort_by_key(|e| e.timestamp);
    batch
}

/// Reads one page of the Log Cache; envelopes of kinds this CLI does not know are skipped.
fn read(client: &mut Client, path: &str) -> Result<Vec<Envelope>, ClientError> {
    let url = format!("{}{path}", client.log_cache_url()?);
    let page = client.get(&url)?;
    Ok(parse_batch(&page))
}

fn parse_batch(page: &Value) -> Vec<Envelope> {
    page["envelopes"]["batch"]
        .as_array()
        .map(|batch| {
            batch
                .iter()
                .filter_map(|e| serde_json::from_value(e.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Follows an app's logs forward in time, printing each envelope once.
pub(crate) struct LogTail {
    source_id: String,
    /// Newest timestamp seen.
    cursor: i64,
    /// Whether the last poll filled a whole page (then the next one starts at the cursor).
    full: bool,
    /// Envelopes already returned within the look-back window.
    seen: HashSet<(i64, String, Vec<u8>)>,
}

impl LogTail {
    /// A tail of `source_id` from `start_ns` on.
    pub fn new(source_id: &str, start_ns: i64) -> LogTail {
        LogTail {
            source_id: source_id.to_string(),
            cursor: start_ns,
            full: false,
            seen: HashSet::new(),
        }
    }

    /// The envelopes that arrived since the last poll, oldest first.
    pub fn poll(&mut self, client: &mut Client) -> Result<Vec<Envelope>, ClientError> {
        let start = if self.full {
            self.cursor
        } else {
            self.cursor.saturating_sub(LOOKBACK_NS)
        };
        let path = format!(
            "/api/v1/read/{}?envelope_types=LOG&limit={LIMIT}&start_time={start}",
            self.source_id
        );
        let mut batch = read(client, &path)?;
        self.full = batch.len() >= LIMIT;
        batch.sort_by_key(|e| e.timestamp);
        Ok(self.fresh(batch))
    }

    /// Keeps the envelopes not returned before, and forgets those out of the window.
    fn fresh(&mut self, batch: Vec<Envelope>) -> Vec<Envelope> {
        let mut fresh = Vec::new();
        for e in batch {
            let key = (e.timestamp, e.instance_id.clone(), payload(&e).to_vec());
            if self.seen.insert(key) {
                self.cursor = self.cursor.max(e.timestamp);
                fresh.push(e);
            }
        }
        let horizon = self.cursor.saturating_sub(LOOKBACK_NS);
        self.seen.retain(|(ts, _, _)| *ts >= horizon);
        fresh
    }
}

fn payload(e: &Envelope) -> &[u8] {
    match &e.message {
        EnvelopeMessage::Log(log) => &log.payload,
        _ => &[],
    }
}

/// The lines of a log envelope's payload (a trailing newline ends the last line).
pub(crate) fn payload_lines(e: &Envelope) -> Vec<String> {
    let text = String::from_utf8_lossy(payload(e));
    let text = text.trim_end_matches(['\n', '\r']);
    text.split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// An envelope in the cf CLI's format, one line per payload line:
/// `   2026-11-25T14:00:00.00+0000 [APP/PROC/WEB/0] OUT hello`; ERR lines red when `color`.
/// Envelopes that are not logs print nothing.
pub fn format_envelope(e: &Envelope, color: bool) -> String {
    let EnvelopeMessage::Log(log) = &e.message else {
        return String::new();
    };
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:2]"
    );
    let stamp = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.timestamp))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default();
    let source_type = e.source_type().unwrap_or("");
    let instance = if e.instance_id.is_empty() {
        "0"
    } else {
        e.instance_id.as_str()
    };
    let (kind, red) = match log.log_type {
        LogType::Out => ("OUT", false),
        LogType::Err => ("ERR", color),
    };
    payload_lines(e)
        .into_iter()
        .map(|line| {
            let line = format!("   {stamp}+0000 [{source_type}/{instance}] {kind} {line}");
            if red {
                format!("\x1b[31m{line}\x1b[0m\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(
        ts: i64,
        source_type: &str,
        instance: &str,
        log_type: LogType,
        payload: &str,
    ) -> Envelope {
        let mut e = Envelope::log("app", instance, source_type, log_type, payload);
        e.timestamp = ts;
        e
    }

    #[test]
    fn formats_lines_like_the_cf_cli() {
        // 2026-11-25T14:00:00.123Z
        let ts = 1_795_615_200_123_000_000;
        let e = envelope(ts, "APP/PROC/WEB", "0", LogType::Out, "hello\n");
        assert_eq!(
            format_envelope(&e, false),
            "   2026-11-25T14:00:00.12+0000 [APP/PROC/WEB/0] OUT hello\n"
        );
        let e = envelope(ts, "STG", "", LogType::Err, "a\nb");
        assert_eq!(
            format_envelope(&e, false),
            "   2026-11-25T14:00:00.12+0000 [STG/0] ERR a\n   2026-11-25T14:00:00.12+0000 [STG/0] ERR b\n"
        );
        assert!(format_envelope(&e, true).starts_with("\x1b[31m"));
    }

    #[test]
    fn parses_a_log_cache_page_skipping_unknown_envelopes() {
        let e = envelope(5, "RTR", "1", LogType::Out, "GET /");
        let page = serde_json::json!({"envelopes": {"batch": [
            serde_json::to_value(&e).unwrap(),
            {"timestamp": "6", "source_id": "app", "timer": {"name": "x"}}
        ]}});
        assert_eq!(parse_batch(&page), vec![e]);
        assert!(parse_batch(&Value::Null).is_empty());
    }

    #[test]
    fn parses_server_sent_events() {
        let mut p = SseParser::default();
        let mut events = Vec::new();
        let stream = "event: heartbeat\r\ndata: 1\r\n\r\n: dropped 3 envelopes\n\ndata: {\"a\":1}\ndata:2\n\nevent: lonely\n\nid: 7\ndata\n\n";
        for line in stream.split_inclusive('\n') {
            events.extend(p.line(line));
        }
        assert_eq!(
            events,
            vec![
                SseEvent::Message {
                    event: "heartbeat".into(),
                    data: "1".into()
                },
                SseEvent::Comment("dropped 3 envelopes".into()),
                SseEvent::Message {
                    event: String::new(),
                    data: "{\"a\":1}\n2".into()
                },
                SseEvent::Message {
                    event: String::new(),
                    data: String::new()
                },
            ]
        );
    }

    #[test]
    fn parses_a_stream_batch_keeping_logs_in_timestamp_order() {
        let b = envelope(20, "APP/PROC/WEB", "0", LogType::Out, "b");
        let a = envelope(10, "RTR", "1", LogType::Out, "a");
        let data = serde_json::json!({"batch": [
            serde_json::to_value(&b).unwrap(),
            {"timestamp": "6", "source_id": "app", "timer": {"name": "x"}},
            {"timestamp": "7", "source_id": "app", "counter": {"name": "x", "delta": "1", "total": "1"}},
            serde_json::to_value(&a).unwrap(),
        ]});
        assert_eq!(parse_stream_batch(&data.to_string()), vec![a, b]);
        assert!(parse_stream_batch("not json").is_empty());
        assert!(parse_stream_batch("{}").is_empty());
    }

    #[test]
    fn retries_only_what_a_retry_can_fix() {
        use crate::wf::client::ApiError;
        assert!(is_retryable(&ClientError::Connection {
            message: "reset".into()
        }));
        assert!(is_retryable(&ApiError::from_response(502, "").into()));
        assert!(!is_retryable(&ApiError::from_response(401, "").into()));
        assert!(!is_retryable(&ClientError::NotLoggedIn));
    }

    #[test]
    fn a_tail_returns_each_envelope_once() {
        let mut tail = LogTail::new("app", 0);
        let a = envelope(10, "APP/PROC/WEB", "0", LogType::Out, "a");
        let b = envelope(20, "APP/PROC/WEB", "0", LogType::Out, "b");
        assert_eq!(tail.fresh(vec![a.clone()]), vec![a.clone()]);
        assert_eq!(tail.fresh(vec![a, b.clone()]), vec![b]);
        assert_eq!(tail.cursor, 20);
    }
}
