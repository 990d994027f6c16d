//! The router's metrics: request counts by status class, a latency histogram and
//! backend failure counters, kept in atomics (a few relaxed adds per request, no
//! per-request envelope) and rendered in Prometheus' text format on the status port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wf_metrics::{Exposition, Kind};

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Responses by status class: index 0 for 1xx ... 4 for 5xx.
    responses: [AtomicU64; 5],
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    pub(crate) backend_connect_errors: AtomicU64,
    pub(crate) backend_retries: AtomicU64,
    pub(crate) backend_timeouts: AtomicU64,
    pub(crate) websocket_upgrades: AtomicU64,
    pub(crate) access_log_dropped: AtomicU64,
}

impl Metrics {
    /// Counts one finished request.
    pub(crate) fn observe(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition of all metrics plus the route table's sizes.
    pub(crate) fn render(&self, routes: usize, endpoints: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut e = Exposition::new();
        let requests: u64 = self.responses.iter().map(get).sum();
        e.single(
            "wf_router_requests_total",
            Kind::Counter,
            "Requests served by the router.",
            requests,
        );
        e.family(
            "wf_router_responses_total",
            Kind::Counter,
            "Responses by status class.",
        );
        for (i, c) in self.responses.iter().enumerate() {
            let class = format!("{}xx", i + 1);
            e.sample(
                "wf_router_responses_total",
                &[("status_class", &class)],
                get(c),
            );
        }
        e.single(
            "wf_router_responses_5xx_total",
            Kind::Counter,
            "Responses with a 5xx status.",
            get(&self.responses[4]),
        );
        let duration = "wf_router_request_duration_seconds";
        let bucket = "wf_router_request_duration_seconds_bucket";
        e.family(
            duration,
            Kind::Histogram,
            "Time from request to the end of the response.",
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += get(&self.latency[i]);
            e.sample(bucket, &[("le", &bound.to_string())], cumulative);
        }
        cumulative += get(&self.latency[LATENCY_BUCKETS.len()]);
        e.sample(bucket, &[("le", "+Inf")], cumulative)
            .sample(
                "wf_router_request_duration_seconds_sum",
                &[],
                get(&self.latency_sum_micros) as f64 / 1e6,
            )
            .sample("wf_router_request_duration_seconds_count", &[], cumulative);
        let counters = [
            (
                "wf_router_backend_connect_errors_total",
                "Failed connections to backends.",
                get(&self.backend_connect_errors),
            ),
            (
                "wf_router_backend_retries_total",
                "Requests sent to another endpoint after a connection error.",
                get(&self.backend_retries),
            ),
            (
                "wf_router_backend_timeouts_total",
                "Backends that did not answer within the response timeout.",
                get(&self.backend_timeouts),
            ),
            (
                "wf_router_websocket_upgrades_total",
                "Connections upgraded (WebSocket or other protocols).",
                get(&self.websocket_upgrades),
            ),
            (
                "wf_router_access_log_dropped_total",
                "Access log lines dropped because the log pipeline was full.",
                get(&self.access_log_dropped),
            ),
        ];
        for (name, help, value) in counters {
            e.single(name, Kind::Counter, help, value);
        }
        e.single(
            "wf_router_total_routes",
            Kind::Gauge,
            "Routes in the route table.",
            routes,
        )
        .single(
            "wf_router_endpoints",
            Kind::Gauge,
            "Endpoints over all routes.",
            endpoints,
        );
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_classes_are_counted() {
        let m = Metrics::default();
        m.observe(200, Duration::from_micros(300));
        m.observe(200, Duration::from_millis(3));
        m.observe(502, Duration::from_secs(20));
        let text = m.render(7, 9);
        for line in [
            "wf_router_requests_total 3",
            "wf_router_responses_total{status_class=\"2xx\"} 2",
            "wf_router_responses_5xx_total 1",
            "wf_router_request_duration_seconds_bucket{le=\"0.0005\"} 1",
            "wf_router_request_duration_seconds_bucket{le=\"0.005\"} 2",
            "wf_router_request_duration_seconds_bucket{le=\"10\"} 2",
            "wf_router_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "wf_router_request_duration_seconds_count 3",
            "wf_router_total_routes 7",
            "wf_router_endpoints 9",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
