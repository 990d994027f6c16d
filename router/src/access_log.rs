//! Gorouter's access log: one line per request in CF's format, also sent as a log line
//! of the app (source type `RTR`) so `cf logs` shows it.
//!
//! Per-request telemetry was Gorouter's main CPU cost, so a request only hands its
//! record to a bounded channel ([`AccessLogger::submit`]); a single task formats the
//! lines and publishes the envelopes in batches (one bus message a batch). When the
//! channel is full, records are dropped and counted rather than slowing requests down
//! (loggregator's rule).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use wf_loggregator::{LogBatch, LogType};
use wf_messaging::Bus;

use crate::metrics::Metrics;
use crate::table::Endpoint;

/// Records waiting to be published before new ones are dropped.
const QUEUE: usize = 16_384;
/// Records formatted and published per wake-up of the publishing task.
const BATCH: usize = 512;
const TARGET: &str = "wf_router::access";

/// A finished request, as queued for the publishing task.
struct Finished {
    record: AccessRecord,
    bytes_sent: u64,
    response_time: Duration,
}

/// The per-request side of the access log: cheap to clone, never blocks.
#[derive(Clone)]
pub(crate) struct AccessLogger {
    tx: mpsc::Sender<Finished>,
    metrics: Arc<Metrics>,
}

impl AccessLogger {
    /// The logger and the task that publishes its records; the task ends once every
    /// logger clone is dropped and the queue is empty.
    pub(crate) fn new(
        bus: Bus,
        metrics: Arc<Metrics>,
    ) -> (AccessLogger, impl std::future::Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AccessLogger { tx, metrics }, publish(rx, bus))
    }

    /// Counts the request in the metrics and queues its access log line.
    pub(crate) fn submit(&self, record: AccessRecord, bytes_sent: u64, response_time: Duration) {
        self.metrics.observe(record.status, response_time);
        let for_app = record.app_id().is_some();
        if !for_app && !tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
            return;
        }
        let finished = Finished {
            record,
            bytes_sent,
            response_time,
        };
        if self.tx.try_send(finished).is_err() {
            Metrics::count(&self.metrics.access_log_dropped);
        }
    }
}

async fn publish(mut rx: mpsc::Receiver<Finished>, bus: Bus) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // One bus message for the batch's RTR envelopes (some 800 bytes of JSON each,
        // 400 KiB at most), sized once.
        let mut envelopes = LogBatch::with_capacity(batch.len() * 1024);
        for f in batch.drain(..) {
            f.record
                .finish(f.bytes_sent, f.response_time, &mut envelopes);
        }
        wf_loggregator::emit_log_batch(&bus, envelopes);
        // Let request handling run between batches.
        tokio::task::yield_now().await;
    }
}

/// What is known about a request when its response starts; the bytes sent and the
/// total time are added when the response body is done. Header values are kept as
/// they are (cheap to clone) and only turned into text for the line.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessRecord {
    pub(crate) host: String,
    pub(crate) started_at: Option<OffsetDateTime>,
    pub(crate) method: Method,
    pub(crate) uri: String,
    pub(crate) proto: &'static str,
    pub(crate) status: u16,
    pub(crate) bytes_received: u64,
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
    /// The client's `ip:port`, as text made once per connection.
    pub(crate) remote_addr: Option<Arc<str>>,
    /// The endpoint that served the request: its address, app and instance.
    pub(crate) endpoint: Option<Arc<Endpoint>>,
    /// Where the request went when not to an endpoint (a route service).
    pub(crate) backend_addr: Option<String>,
    pub(crate) x_forwarded_for: Option<HeaderValue>,
    pub(crate) x_forwarded_proto: Option<HeaderValue>,
    pub(crate) vcap_request_id: Option<HeaderValue>,
    /// Time spent in the router before the request went to the backend.
    pub(crate) gorouter_time: Duration,
    pub(crate) router_error: Option<String>,
}

impl AccessRecord {
    /// The app the request went to: the line is its log too.
    fn app_id(&self) -> Option<&str> {
        self.endpoint
            .as_ref()
            .and_then(|e| e.app_id.as_deref())
            .filter(|a| !a.is_empty())
    }

    /// The index of the instance the request went to.
    fn app_index(&self) -> Option<&str> {
        self.endpoint
            .as_ref()
            .and_then(|e| e.instance_index.as_deref())
    }

    /// The line, as Gorouter writes it, built in one buffer.
    pub(crate) fn line(&self, bytes_sent: u64, response_time: Duration) -> String {
        fn quoted(line: &mut String, value: Option<&str>) {
            line.push('"');
            line.push_str(value.filter(|s| !s.is_empty()).unwrap_or("-"));
            line.push('"');
        }
        fn text(value: &Option<HeaderValue>) -> Option<&str> {
            value.as_ref().and_then(|v| v.to_str().ok())
        }
        // Numbers are written with `itoa` and padded by hand: this runs for every
        // request, and `core::fmt` was most of its cost.
        let mut line = String::with_capacity(512 + self.host.len() + self.uri.len());
        line.push_str(&self.host);
        line.push_str(" - [");
        match self.started_at {
            Some(t) => {
                push_padded(&mut line, t.year().unsigned_abs(), 4);
                line.push('-');
                push_padded(&mut line, u8::from(t.month()).into(), 2);
                line.push('-');
                push_padded(&mut line, t.day().into(), 2);
                line.push('T');
                push_padded(&mut line, t.hour().into(), 2);
                line.push(':');
                push_padded(&mut line, t.minute().into(), 2);
                line.push(':');
                push_padded(&mut line, t.second().into(), 2);
                line.push('.');
                push_padded(&mut line, t.nanosecond(), 9);
                line.push('Z');
            }
            None => line.push('-'),
        }
        line.push_str("] \"");
        line.push_str(self.method.as_str());
        line.push(' ');
        line.push_str(&self.uri);
        line.push(' ');
        line.push_str(self.proto);
        line.push_str("\" ");
        let mut number = itoa::Buffer::new();
        line.push_str(number.format(self.status));
        line.push(' ');
        line.push_str(number.format(self.bytes_received));
        line.push(' ');
        line.push_str(number.format(bytes_sent));
        line.push(' ');
        quoted(&mut line, text(&self.referer));
        line.push(' ');
        quoted(&mut line, text(&self.user_agent));
        line.push(' ');
        quoted(&mut line, self.remote_addr.as_deref());
        line.push(' ');
        let endpoint = self.endpoint.as_deref();
        quoted(
            &mut line,
            endpoint
                .map(|e| e.addr.as_str())
                .or(self.backend_addr.as_deref()),
        );
        line.push_str(" x_forwarded_for:");
        quoted(&mut line, text(&self.x_forwarded_for));
        line.push_str(" x_forwarded_proto:");
        quoted(&mut line, text(&self.x_forwarded_proto));
        line.push_str(" vcap_request_id:");
        quoted(&mut line, text(&self.vcap_request_id));
        line.push_str(" response_time:");
        push_seconds(&mut line, response_time);
        line.push_str(" gorouter_time:");
        push_seconds(&mut line, self.gorouter_time.min(response_time));
        line.push_str(" app_id:");
        quoted(&mut line, self.app_id());
        line.push_str(" app_index:");
        quoted(&mut line, self.app_index());
        line.push_str(" instance_id:");
        quoted(&mut line, endpoint.map(|e| e.instance_id.as_str()));
        line.push_str(" x_cf_routererror:");
        quoted(&mut line, self.router_error.as_deref());
        line
    }

    /// Writes the line to the router's log and, for app routes, adds it to `envelopes`
    /// as the app's `RTR` log envelope.
    fn finish(&self, bytes_sent: u64, response_time: Duration, envelopes: &mut LogBatch) {
        let line = self.line(bytes_sent, response_time);
        tracing::debug!(target: TARGET, "{line}");
        if let Some(app_id) = self.app_id() {
            let index = self.app_index().unwrap_or_default();
            envelopes.push(app_id, index, "RTR", LogType::Out, line.as_bytes());
        }
    }
}

/// `duration` in seconds with six decimals, rounded to the microsecond: what `{:.6}`
/// of its `f64` seconds gives, with integer arithmetic (this runs on every request).
fn push_seconds(line: &mut String, duration: Duration) {
    let micros = (duration.as_nanos() + 500) / 1000;
    line.push_str(itoa::Buffer::new().format(micros / 1_000_000));
    line.push('.');
    push_padded(line, (micros % 1_000_000) as u32, 6);
}

/// `value` in decimal, zero-padded to `width` digits.
fn push_padded(line: &mut String, value: u32, width: usize) {
    let mut number = itoa::Buffer::new();
    let digits = number.format(value);
    for _ in digits.len()..width {
        line.push('0');
    }
    line.push_str(digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_rounded_to_the_microsecond() {
        for (nanos, text) in [
            (0, "0.000000"),
            (150_000, "0.000150"),
            (1_234_567, "0.001235"),
            (2_000_000_499, "2.000000"),
            (61_999_999_500, "62.000000"),
        ] {
            let mut line = String::new();
            push_seconds(&mut line, Duration::from_nanos(nanos));
            assert_eq!(line, text);
            assert_eq!(
                line,
                format!("{:.6}", Duration::from_nanos(nanos).as_secs_f64())
            );
        }
    }

    #[test]
    fn line_has_gorouter_format() {
        let record = AccessRecord {
            host: "hello.apps.localhost".into(),
            started_at: Some(time::macros::datetime!(2024-01-02 03:04:05.123456789 UTC)),
            method: Method::GET,
            uri: "/path?x=1".into(),
            proto: "HTTP/1.1",
            status: 200,
            bytes_received: 0,
            user_agent: Some(HeaderValue::from_static("curl/8")),
            remote_addr: Some("127.0.0.1:5000".into()),
            endpoint: Some(Arc::new(Endpoint::new(
                "127.0.0.1:61000".into(),
                Some("app-guid".into()),
                Some("0".into()),
                "iid".into(),
            ))),
            x_forwarded_for: Some(HeaderValue::from_static("127.0.0.1")),
            x_forwarded_proto: Some(HeaderValue::from_static("http")),
            vcap_request_id: Some(HeaderValue::from_static("rid")),
            gorouter_time: Duration::from_micros(150),
            ..Default::default()
        };
        assert_eq!(
            record.line(12, Duration::from_millis(3)),
            "hello.apps.localhost - [2024-01-02T03:04:05.123456789Z] \"GET /path?x=1 HTTP/1.1\" 200 0 12 \"-\" \"curl/8\" \"127.0.0.1:5000\" \"127.0.0.1:61000\" x_forwarded_for:\"127.0.0.1\" x_forwarded_proto:\"http\" vcap_request_id:\"rid\" response_time:0.003000 gorouter_time:0.000150 app_id:\"app-guid\" app_index:\"0\" instance_id:\"iid\" x_cf_routererror:\"-\""
        );
    }
}
