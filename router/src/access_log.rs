//! Gorouter's access log: one line per request in CF's format, also sent as a log line
//! of the app (source type `RTR`) so `cf logs` shows it.
//!
//! Per-request telemetry was Gorouter's main CPU cost, so a request only hands its
//! record to a bounded channel ([`AccessLogger::submit`]); a single task formats the
//! lines and publishes the envelopes in batches. When the channel is full, records are
//! dropped and counted rather than slowing requests down (loggregator's rule).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use wf_loggregator::{Envelope, LogType};
use wf_messaging::Bus;

use crate::metrics::Metrics;

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
        let for_app = record.app_id.as_deref().is_some_and(|a| !a.is_empty());
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
        for f in batch.drain(..) {
            f.record.finish(&bus, f.bytes_sent, f.response_time);
        }
        // Let request handling run between batches.
        tokio::task::yield_now().await;
    }
}

/// What is known about a request when its response starts; the bytes sent and the
/// total time are added when the response body is done.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessRecord {
    pub(crate) host: String,
    pub(crate) started_at: Option<OffsetDateTime>,
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) proto: String,
    pub(crate) status: u16,
    pub(crate) bytes_received: u64,
    pub(crate) referer: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) remote_addr: String,
    pub(crate) backend_addr: Option<String>,
    pub(crate) x_forwarded_for: Option<String>,
    pub(crate) x_forwarded_proto: Option<String>,
    pub(crate) vcap_request_id: String,
    /// Time spent in the router before the request went to the backend.
    pub(crate) gorouter_time: Duration,
    pub(crate) app_id: Option<String>,
    pub(crate) app_index: Option<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) router_error: Option<String>,
}

impl AccessRecord {
    /// The line, as Gorouter writes it.
    pub(crate) fn line(&self, bytes_sent: u64, response_time: Duration) -> String {
        let q = |v: &Option<String>| {
            format!(
                "\"{}\"",
                v.as_deref().filter(|s| !s.is_empty()).unwrap_or("-")
            )
        };
        let timestamp = self
            .started_at
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
                ))
                .ok()
            })
            .unwrap_or_else(|| "-".to_string());
        format!(
            "{host} - [{timestamp}] \"{method} {uri} {proto}\" {status} {received} {bytes_sent} {referer} {agent} \"{remote}\" {backend} x_forwarded_for:{xff} x_forwarded_proto:{xfp} vcap_request_id:\"{rid}\" response_time:{rt:.6} gorouter_time:{gt:.6} app_id:{app} app_index:{index} instance_id:{instance} x_cf_routererror:{err}",
            host = self.host,
            method = self.method,
            uri = self.uri,
            proto = self.proto,
            status = self.status,
            received = self.bytes_received,
            referer = q(&self.referer),
            agent = q(&self.user_agent),
            remote = self.remote_addr,
            backend = q(&self.backend_addr),
            xff = q(&self.x_forwarded_for),
            xfp = q(&self.x_forwarded_proto),
            rid = self.vcap_request_id,
            rt = response_time.as_secs_f64(),
            gt = self.gorouter_time.min(response_time).as_secs_f64(),
            app = q(&self.app_id),
            index = q(&self.app_index),
            instance = q(&self.instance_id),
            err = q(&self.router_error),
        )
    }

    /// Writes the line to the router's log and, for app routes, to the app's logs.
    pub(crate) fn finish(&self, bus: &Bus, bytes_sent: u64, response_time: Duration) {
        let line = self.line(bytes_sent, response_time);
        tracing::debug!(target: TARGET, "{line}");
        if let Some(app_id) = self.app_id.as_deref().filter(|a| !a.is_empty()) {
            let index = self.app_index.as_deref().unwrap_or_default();
            wf_loggregator::emit(
                bus,
                &Envelope::log(app_id, index, "RTR", LogType::Out, line),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_gorouter_format() {
        let record = AccessRecord {
            host: "hello.apps.localhost".into(),
            started_at: Some(time::macros::datetime!(2024-01-02 03:04:05.123456789 UTC)),
            method: "GET".into(),
            uri: "/path?x=1".into(),
            proto: "HTTP/1.1".into(),
            status: 200,
            bytes_received: 0,
            user_agent: Some("curl/8".into()),
            remote_addr: "127.0.0.1:5000".into(),
            backend_addr: Some("127.0.0.1:61000".into()),
            x_forwarded_for: Some("127.0.0.1".into()),
            x_forwarded_proto: Some("http".into()),
            vcap_request_id: "rid".into(),
            gorouter_time: Duration::from_micros(150),
            app_id: Some("app-guid".into()),
            app_index: Some("0".into()),
            instance_id: Some("iid".into()),
            ..Default::default()
        };
        assert_eq!(
            record.line(12, Duration::from_millis(3)),
            "hello.apps.localhost - [2024-01-02T03:04:05.123456789Z] \"GET /path?x=1 HTTP/1.1\" 200 0 12 \"-\" \"curl/8\" \"127.0.0.1:5000\" \"127.0.0.1:61000\" x_forwarded_for:\"127.0.0.1\" x_forwarded_proto:\"http\" vcap_request_id:\"rid\" response_time:0.003000 gorouter_time:0.000150 app_id:\"app-guid\" app_index:\"0\" instance_id:\"iid\" x_cf_routererror:\"-\""
        );
    }
}
