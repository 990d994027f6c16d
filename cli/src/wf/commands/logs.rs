//! `wf logs`: reads an app's envelopes from the Log Cache (`/api/v1/read/<app guid>`)
//! and prints them as the cf CLI does; also tails staging logs for `push`.

use std::collections::HashSet;
use std::io::IsTerminal as _;
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
    let mut tail = LogTail::new(&guid, wf_loggregator::envelope::now_ns());
    loop {
        for e in tail.poll(client)? {
            print!("{}", format_envelope(&e, color));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
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
    fn a_tail_returns_each_envelope_once() {
        let mut tail = LogTail::new("app", 0);
        let a = envelope(10, "APP/PROC/WEB", "0", LogType::Out, "a");
        let b = envelope(20, "APP/PROC/WEB", "0", LogType::Out, "b");
        assert_eq!(tail.fresh(vec![a.clone()]), vec![a.clone()]);
        assert_eq!(tail.fresh(vec![a, b.clone()]), vec![b]);
        assert_eq!(tail.cursor, 20);
    }
}
