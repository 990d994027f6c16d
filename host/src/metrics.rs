//! Container metrics: for each running ActualLRP instance, the share of one core its
//! wasm used over the last period, its memory and `/tmp` usage and their quotas.
//! Every `container_metrics_interval` (Diego's 15 s) they are sampled and sent to
//! loggregator as one gauge per instance with CF's names (`cpu` in percent, `memory`,
//! `disk`, `memory_quota`, `disk_quota` in bytes), from the app's log guid and the
//! instance's index, tagged with the DesiredLRP's metric tags; the rep's
//! `GET /container_metrics` answers the latest figures (Diego's
//! `ContainerMetricsCollection`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use wf_loggregator::envelope::{Gauge, GaugeValue};
use wf_loggregator::{Envelope, EnvelopeMessage};

use crate::cell::Cell;
use crate::sandbox::InstanceUsage;

/// One instance whose metrics the cell reports.
pub struct MeteredInstance {
    pub process_guid: String,
    pub instance_guid: String,
    pub index: u32,
    /// The app guid: where its gauges go.
    pub log_guid: String,
    /// The DesiredLRP's metric tags, on every gauge.
    pub tags: BTreeMap<String, String>,
    pub memory_quota_bytes: u64,
    pub disk_quota_bytes: u64,
    pub usage: Arc<InstanceUsage>,
}

struct Tracked {
    instance: MeteredInstance,
    /// The last sample's time, the CPU time then, and the CPU share over the period
    /// before it.
    last: Mutex<CpuSample>,
}

#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    cpu_time: Duration,
    fraction: f64,
}

/// The figures of one instance (Diego's `ContainerMetrics`, keyed as the rep's JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LrpMetrics {
    pub process_guid: String,
    pub instance_guid: String,
    pub index: u32,
    pub metric_guid: String,
    /// CPU time over wall time in the last period (1.0: one whole core).
    pub cpu_usage_fraction: f64,
    /// CPU time since the instance started, in nanoseconds.
    pub absolute_cpu_usage: u64,
    pub memory_usage_bytes: u64,
    pub memory_quota_bytes: u64,
    pub disk_usage_bytes: u64,
    pub disk_quota_bytes: u64,
    #[serde(skip)]
    tags: BTreeMap<String, String>,
}

/// The rep's `GET /container_metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerMetricsCollection {
    pub cell_id: String,
    pub lrps: Vec<LrpMetrics>,
}

/// The usage of every instance the cell reports, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageTotals {
    /// CPU shares over the last period (1.0: one whole core).
    pub cpu_fraction: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// The instances the cell reports metrics for, by instance guid.
#[derive(Default)]
pub struct ContainerMetrics {
    instances: Mutex<HashMap<String, Arc<Tracked>>>,
}

/// Reports an instance's metrics until dropped.
pub struct Registration<'a> {
    metrics: &'a ContainerMetrics,
    instance_guid: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.metrics.instances().remove(&self.instance_guid);
    }
}

impl ContainerMetrics {
    fn instances(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Tracked>>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports `instance` from now until the registration is dropped.
    pub fn register(&self, instance: MeteredInstance) -> Registration<'_> {
        let instance_guid = instance.instance_guid.clone();
        let last = CpuSample {
            at: Instant::now(),
            cpu_time: instance.usage.cpu_time(),
            fraction: 0.0,
        };
        let tracked = Arc::new(Tracked {
            instance,
            last: Mutex::new(last),
        });
        self.instances().insert(instance_guid.clone(), tracked);
        Registration {
            metrics: self,
            instance_guid,
        }
    }

    /// Starts a new period for every instance: the CPU share is the CPU time spent
    /// since the last sample over the time passed since.
    pub fn sample(&self) -> Vec<LrpMetrics> {
        let now = Instant::now();
        self.snapshot(|tracked| {
            let mut last = tracked.last.lock().unwrap_or_else(|e| e.into_inner());
            let cpu_time = tracked.instance.usage.cpu_time();
            *last = CpuSample {
                at: now,
                cpu_time,
                fraction: cpu_fraction(
                    cpu_time.saturating_sub(last.cpu_time),
                    now.saturating_duration_since(last.at),
                ),
            };
            last.fraction
        })
    }

    /// The figures as they are now, with the CPU share of the last full period.
    pub fn collection(&self, cell_id: &str) -> ContainerMetricsCollection {
        ContainerMetricsCollection {
            cell_id: cell_id.to_string(),
            lrps: self.snapshot(|tracked| {
                tracked
                    .last
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fraction
            }),
        }
    }

    /// The running instances' usage summed, for the rep's `/metrics`.
    pub fn totals(&self) -> UsageTotals {
        let tracked: Vec<Arc<Tracked>> = self.instances().values().cloned().collect();
        tracked.iter().fold(UsageTotals::default(), |mut sum, t| {
            sum.cpu_fraction += t.last.lock().unwrap_or_else(|e| e.into_inner()).fraction;
            sum.memory_bytes += t.instance.usage.memory_bytes();
            sum.disk_bytes += t.instance.usage.disk_bytes();
            sum
        })
    }

    fn snapshot(&self, cpu_fraction: impl Fn(&Tracked) -> f64) -> Vec<LrpMetrics> {
        let tracked: Vec<Arc<Tracked>> = self.instances().values().cloned().collect();
        let mut lrps: Vec<LrpMetrics> = tracked
            .iter()
            .map(|t| {
                let i = &t.instance;
                LrpMetrics {
                    process_guid: i.process_guid.clone(),
                    instance_guid: i.instance_guid.clone(),
                    index: i.index,
                    metric_guid: i.log_guid.clone(),
                    cpu_usage_fraction: cpu_fraction(t),
                    absolute_cpu_usage: u64::try_from(i.usage.cpu_time().as_nanos())
                        .unwrap_or(u64::MAX),
                    memory_usage_bytes: i.usage.memory_bytes(),
                    memory_quota_bytes: i.memory_quota_bytes,
                    disk_usage_bytes: i.usage.disk_bytes(),
                    disk_quota_bytes: i.disk_quota_bytes,
                    tags: i.tags.clone(),
                }
            })
            .collect();
        lrps.sort_by(|a, b| (&a.process_guid, a.index).cmp(&(&b.process_guid, b.index)));
        lrps
    }
}

fn cpu_fraction(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    cpu.as_secs_f64() / wall.as_secs_f64()
}

/// The gauge envelope of one instance's figures, as Diego's rep emits it.
pub fn gauge(metrics: &LrpMetrics) -> Envelope {
    let value = |unit: &str, value: f64| GaugeValue {
        unit: unit.to_string(),
        value,
    };
    let mut gauges = BTreeMap::new();
    gauges.insert(
        "cpu".to_string(),
        value("percentage", metrics.cpu_usage_fraction * 100.0),
    );
    for (name, bytes) in [
        ("memory", metrics.memory_usage_bytes),
        ("memory_quota", metrics.memory_quota_bytes),
        ("disk", metrics.disk_usage_bytes),
        ("disk_quota", metrics.disk_quota_bytes),
    ] {
        gauges.insert(name.to_string(), value("bytes", bytes as f64));
    }
    Envelope {
        timestamp: wf_loggregator::envelope::now_ns(),
        source_id: metrics.metric_guid.clone(),
        instance_id: metrics.index.to_string(),
        tags: metrics.tags.clone(),
        message: EnvelopeMessage::Gauge(Gauge { metrics: gauges }),
    }
}

/// Samples every instance and emits its gauge every interval until `stop`.
pub async fn emit_loop(cell: Arc<Cell>, stop: CancellationToken) {
    let period = cell.config.container_metrics_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for metrics in cell.metrics.sample() {
            wf_loggregator::emit(&cell.bus, &gauge(&metrics));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(usage: Arc<InstanceUsage>) -> MeteredInstance {
        let mut tags = BTreeMap::new();
        tags.insert("app_name".to_string(), "hello".to_string());
        MeteredInstance {
            process_guid: "pg-1".into(),
            instance_guid: "ig-1".into(),
            index: 2,
            log_guid: "app-guid".into(),
            tags,
            memory_quota_bytes: 64 << 20,
            disk_quota_bytes: 1 << 30,
            usage,
        }
    }

    #[test]
    fn cpu_is_the_share_of_a_core_over_the_period() {
        let metrics = ContainerMetrics::default();
        let usage = Arc::new(InstanceUsage::default());
        let registration = metrics.register(instance(usage.clone()));
        std::thread::sleep(Duration::from_millis(50));
        // As if the instance ran for far longer than the period: the share exceeds 1.
        usage.add_cpu_time(Duration::from_secs(10));
        let sampled = metrics.sample();
        assert_eq!(sampled.len(), 1);
        assert!(sampled[0].cpu_usage_fraction > 1.0, "{sampled:?}");
        assert_eq!(
            metrics.collection("cell-1").lrps[0].cpu_usage_fraction,
            sampled[0].cpu_usage_fraction,
            "the rep answers the last period's share"
        );
        // Nothing ran since: the next period's share is 0.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(metrics.sample()[0].cpu_usage_fraction, 0.0);
        assert_eq!(metrics.sample()[0].absolute_cpu_usage, 10_000_000_000);
        drop(registration);
        assert!(metrics.sample().is_empty());
    }

    #[test]
    fn gauges_carry_cf_names_units_and_the_instance() {
        let metrics = ContainerMetrics::default();
        let _registration = metrics.register(instance(Arc::new(InstanceUsage::default())));
        let lrp = metrics.collection("cell-1").lrps.remove(0);
        let envelope = gauge(&lrp);
        assert_eq!(envelope.source_id, "app-guid");
        assert_eq!(envelope.instance_id, "2");
        assert_eq!(envelope.tags["app_name"], "hello");
        let EnvelopeMessage::Gauge(gauge) = envelope.message else {
            panic!("not a gauge");
        };
        let units: Vec<(&str, &str)> = gauge
            .metrics
            .iter()
            .map(|(name, v)| (name.as_str(), v.unit.as_str()))
            .collect();
        assert_eq!(
            units,
            [
                ("cpu", "percentage"),
                ("disk", "bytes"),
                ("disk_quota", "bytes"),
                ("memory", "bytes"),
                ("memory_quota", "bytes")
            ]
        );
        assert_eq!(gauge.metrics["memory_quota"].value, (64u64 << 20) as f64);
        let json = serde_json::to_value(metrics.collection("cell-1")).unwrap();
        assert_eq!(json["cell_id"], "cell-1");
        assert_eq!(json["lrps"][0]["metric_guid"], "app-guid");
        assert_eq!(json["lrps"][0]["memory_quota_bytes"], 64u64 << 20);
        assert!(json["lrps"][0].get("tags").is_none());
    }
}
