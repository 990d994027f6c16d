//! The rep's `GET /metrics`: the cell's totals in Prometheus' text format: instances by
//! phase, capacity and what is left of it, starting containers, tasks, and the sums of
//! the container metrics. Per-instance figures stay in `/container_metrics` and the
//! gauge envelopes, so the series here do not grow with the number of apps.

use wf_bbs::rep::CellState;
use wf_metrics::{Exposition, Kind};

use crate::app_logs::LogCounters;
use crate::cell::PhaseCounts;
use crate::metrics::UsageTotals;

const MIB: u64 = 1 << 20;

/// The exposition of one cell.
pub(crate) fn render(
    state: &CellState,
    phases: &PhaseCounts,
    usage: &UsageTotals,
    logs: &LogCounters,
) -> String {
    let mut e = Exposition::new();
    let cell = state.cell_id.as_str();
    e.family(
        "wf_cell_lrp_instances",
        Kind::Gauge,
        "LRP instances on the cell by phase (RESERVED, CLAIMED: starting, RUNNING).",
    );
    for (phase, n) in [
        ("RESERVED", phases.reserved),
        ("CLAIMED", phases.claimed),
        ("RUNNING", phases.running),
    ] {
        e.sample(
            "wf_cell_lrp_instances",
            &[("cell_id", cell), ("phase", phase)],
            n,
        );
    }
    let labels = [("cell_id", cell)];
    let gauges: [(&str, &str, u64); 10] = [
        (
            "wf_cell_starting_containers",
            "Containers reserved or claimed but not yet running.",
            u64::from(state.starting_container_count),
        ),
        (
            "wf_cell_tasks",
            "Tasks held by the cell (staging among them).",
            state.tasks.len() as u64,
        ),
        (
            "wf_cell_memory_capacity_bytes",
            "Memory the cell offers to instances and tasks.",
            state.total_resources.memory_mb * MIB,
        ),
        (
            "wf_cell_memory_available_bytes",
            "Memory not reserved by instances or tasks.",
            state.available_resources.memory_mb * MIB,
        ),
        (
            "wf_cell_disk_capacity_bytes",
            "Disk the cell offers to instances and tasks.",
            state.total_resources.disk_mb * MIB,
        ),
        (
            "wf_cell_disk_available_bytes",
            "Disk not reserved by instances or tasks.",
            state.available_resources.disk_mb * MIB,
        ),
        (
            "wf_cell_containers_capacity",
            "Containers the cell may hold.",
            state.total_resources.containers,
        ),
        (
            "wf_cell_containers_available",
            "Containers the cell may still start.",
            state.available_resources.containers,
        ),
        (
            "wf_cell_instance_memory_bytes",
            "Memory used by the cell's running instances, summed.",
            usage.memory_bytes,
        ),
        (
            "wf_cell_instance_disk_bytes",
            "Disk used by the cell's running instances, summed.",
            usage.disk_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        e.family(name, Kind::Gauge, help)
            .sample(name, &labels, value);
    }
    e.family(
        "wf_cell_instance_cpu_ratio",
        Kind::Gauge,
        "CPU used by the cell's running instances over the last period, in cores.",
    )
    .sample("wf_cell_instance_cpu_ratio", &labels, usage.cpu_fraction);
    e.family(
        "wf_cell_evacuating",
        Kind::Gauge,
        "1 while the cell evacuates.",
    )
    .sample("wf_cell_evacuating", &labels, u64::from(state.evacuating));
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    e.family(
        "wf_cell_app_log_lines_total",
        Kind::Counter,
        "App log lines the instances' log rate limits let through.",
    )
    .sample("wf_cell_app_log_lines_total", &labels, get(&logs.admitted));
    e.family(
        "wf_cell_app_log_lines_dropped_total",
        Kind::Counter,
        "App log lines dropped by the instances' log rate limits or a full log buffer.",
    )
    .sample(
        "wf_cell_app_log_lines_dropped_total",
        &labels,
        get(&logs.dropped),
    );
    e.finish()
}

#[cfg(test)]
mod tests {
    use wf_bbs::Resources;

    use super::*;

    #[test]
    fn renders_capacity_phases_and_usage() {
        let state = CellState {
            cell_id: "cell-0".into(),
            rep_url: String::new(),
            zone: "z1".into(),
            available_resources: Resources {
                memory_mb: 768,
                disk_mb: 1024,
                containers: 98,
            },
            total_resources: Resources {
                memory_mb: 1024,
                disk_mb: 2048,
                containers: 100,
            },
            lrps: vec![],
            tasks: vec!["t1".into()],
            starting_container_count: 1,
            evacuating: false,
            placement_tags: vec![],
        };
        let phases = PhaseCounts {
            reserved: 0,
            claimed: 1,
            running: 1,
        };
        let usage = UsageTotals {
            cpu_fraction: 0.5,
            memory_bytes: 4096,
            disk_bytes: 10,
        };
        let logs = LogCounters::default();
        logs.admitted
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        logs.dropped
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let text = render(&state, &phases, &usage, &logs);
        for line in [
            "wf_cell_lrp_instances{cell_id=\"cell-0\",phase=\"RUNNING\"} 1",
            "wf_cell_lrp_instances{cell_id=\"cell-0\",phase=\"CLAIMED\"} 1",
            "wf_cell_starting_containers{cell_id=\"cell-0\"} 1",
            "wf_cell_tasks{cell_id=\"cell-0\"} 1",
            "wf_cell_memory_capacity_bytes{cell_id=\"cell-0\"} 1073741824",
            "wf_cell_memory_available_bytes{cell_id=\"cell-0\"} 805306368",
            "wf_cell_containers_available{cell_id=\"cell-0\"} 98",
            "wf_cell_instance_memory_bytes{cell_id=\"cell-0\"} 4096",
            "wf_cell_instance_cpu_ratio{cell_id=\"cell-0\"} 0.5",
            "wf_cell_evacuating{cell_id=\"cell-0\"} 0",
            "wf_cell_app_log_lines_total{cell_id=\"cell-0\"} 7",
            "wf_cell_app_log_lines_dropped_total{cell_id=\"cell-0\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
