//! The BBS's Prometheus metrics: record counts read from the database with one cheap
//! aggregate query per table (`COUNT ... GROUP BY state`, so a scrape costs the same at
//! 250k ActualLRPs as at ten), and the convergence and auction counters kept in atomics
//! as the loops run. Served on the BBS API's `GET /metrics` ([`crate::api`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row as _;
use wf_metrics::{Exposition, Kind};

use crate::models::{ActualLrpState, TaskState};
use crate::{now_ns, Bbs, BbsError};

/// What the loops count as they run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    convergence_passes: AtomicU64,
    convergence_failures: AtomicU64,
    /// `f64` bits of the last pass's duration in seconds.
    last_convergence_seconds: AtomicU64,
    auctions: AtomicU64,
    lrps_auctioned: AtomicU64,
    tasks_auctioned: AtomicU64,
    lrp_placement_failures: AtomicU64,
    task_placement_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn convergence(&self, took: Duration, ok: bool) {
        self.convergence_passes.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.convergence_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.last_convergence_seconds
            .store(took.as_secs_f64().to_bits(), Ordering::Relaxed);
    }

    /// One auction of `lrps` ActualLRPs and `tasks` Tasks.
    pub(crate) fn auction(&self, lrps: usize, tasks: usize) {
        self.auctions.fetch_add(1, Ordering::Relaxed);
        self.lrps_auctioned
            .fetch_add(lrps as u64, Ordering::Relaxed);
        self.tasks_auctioned
            .fetch_add(tasks as u64, Ordering::Relaxed);
    }

    pub(crate) fn placement_failures(&self, lrps: usize, tasks: usize) {
        self.lrp_placement_failures
            .fetch_add(lrps as u64, Ordering::Relaxed);
        self.task_placement_failures
            .fetch_add(tasks as u64, Ordering::Relaxed);
    }
}

/// Record counts at one moment.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    desired_lrps: i64,
    desired_instances: i64,
    actual_lrps: Vec<(String, i64)>,
    tasks: Vec<(String, i64)>,
    cells: i64,
}

const ACTUAL_LRP_STATES: [ActualLrpState; 4] = [
    ActualLrpState::Unclaimed,
    ActualLrpState::Claimed,
    ActualLrpState::Running,
    ActualLrpState::Crashed,
];

const TASK_STATES: [TaskState; 4] = [
    TaskState::Pending,
    TaskState::Running,
    TaskState::Completed,
    TaskState::Resolving,
];

impl Bbs {
    /// The BBS's metrics in Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, BbsError> {
        let counts = self.counts().await?;
        Ok(self.render(&counts))
    }

    async fn counts(&self) -> Result<Counts, BbsError> {
        let mut conn = self.pool.acquire().await?;
        let desired = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(instances), 0) AS BIGINT) FROM desired_lrps",
        )
        .fetch_one(&mut *conn)
        .await?;
        let by_state = |table: &str| {
            format!("SELECT state, COUNT(*) FROM {table} GROUP BY state ORDER BY state")
        };
        let actual_lrps = sqlx::query(&by_state("actual_lrps"))
            .fetch_all(&mut *conn)
            .await?;
        let tasks = sqlx::query(&by_state("tasks"))
            .fetch_all(&mut *conn)
            .await?;
        let cells = sqlx::query("SELECT COUNT(*) FROM cell_presences WHERE expires_at > $1")
            .bind(now_ns())
            .fetch_one(&mut *conn)
            .await?;
        let pairs = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<(String, i64)>, BbsError> {
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        };
        Ok(Counts {
            desired_lrps: desired.try_get(0)?,
            desired_instances: desired.try_get(1)?,
            actual_lrps: pairs(actual_lrps)?,
            tasks: pairs(tasks)?,
            cells: cells.try_get(0)?,
        })
    }

    fn render(&self, counts: &Counts) -> String {
        let c = &self.counters;
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let count_of = |pairs: &[(String, i64)], state: &str| {
            pairs
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n)
        };
        let mut e = Exposition::new();
        e.single(
            "wf_bbs_desired_lrps",
            Kind::Gauge,
            "DesiredLRPs.",
            counts.desired_lrps,
        )
        .single(
            "wf_bbs_desired_lrp_instances",
            Kind::Gauge,
            "Instances desired over all DesiredLRPs.",
            counts.desired_instances,
        );
        e.family(
            "wf_bbs_actual_lrps",
            Kind::Gauge,
            "ActualLRPs by state (evacuating and suspect copies included).",
        );
        for state in ACTUAL_LRP_STATES {
            let state = state.as_str();
            e.sample(
                "wf_bbs_actual_lrps",
                &[("state", state)],
                count_of(&counts.actual_lrps, state),
            );
        }
        e.family("wf_bbs_tasks", Kind::Gauge, "Tasks by state.");
        for state in TASK_STATES {
            let state = state.as_str();
            e.sample(
                "wf_bbs_tasks",
                &[("state", state)],
                count_of(&counts.tasks, state),
            );
        }
        e.single(
            "wf_bbs_cells",
            Kind::Gauge,
            "Cells whose presence has not expired.",
            counts.cells,
        )
        .single(
            "wf_bbs_convergence_passes_total",
            Kind::Counter,
            "Convergence passes run.",
            get(&c.convergence_passes),
        )
        .single(
            "wf_bbs_convergence_failures_total",
            Kind::Counter,
            "Convergence passes that failed.",
            get(&c.convergence_failures),
        )
        .single(
            "wf_bbs_convergence_last_duration_seconds",
            Kind::Gauge,
            "How long the last convergence pass took.",
            f64::from_bits(get(&c.last_convergence_seconds)),
        )
        .single(
            "wf_bbs_auctions_total",
            Kind::Counter,
            "Auctions run (one per batch of work).",
            get(&c.auctions),
        )
        .single(
            "wf_bbs_auctioned_lrps_total",
            Kind::Counter,
            "ActualLRPs put up for auction.",
            get(&c.lrps_auctioned),
        )
        .single(
            "wf_bbs_auctioned_tasks_total",
            Kind::Counter,
            "Tasks put up for auction.",
            get(&c.tasks_auctioned),
        )
        .single(
            "wf_bbs_lrp_placement_failures_total",
            Kind::Counter,
            "ActualLRPs an auction could not place.",
            get(&c.lrp_placement_failures),
        )
        .single(
            "wf_bbs_task_placement_failures_total",
            Kind::Counter,
            "Tasks an auction could not place.",
            get(&c.task_placement_failures),
        );
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use wf_messaging::Bus;

    use super::*;
    use crate::testing::*;

    #[tokio::test]
    async fn counts_records_by_state_and_renders_the_counters() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_lrp(desired("web", 3)).await.unwrap();
            bbs.desire_lrp(desired("worker", 2)).await.unwrap();
            bbs.counters.convergence(Duration::from_millis(250), true);
            bbs.counters.auction(5, 1);
            bbs.counters.placement_failures(2, 0);
            let text = bbs.metrics().await.unwrap();
            for line in [
                "wf_bbs_desired_lrps 2",
                "wf_bbs_desired_lrp_instances 5",
                "wf_bbs_actual_lrps{state=\"UNCLAIMED\"} 5",
                "wf_bbs_actual_lrps{state=\"RUNNING\"} 0",
                "wf_bbs_tasks{state=\"PENDING\"} 0",
                "wf_bbs_cells 0",
                "wf_bbs_convergence_passes_total 1",
                "wf_bbs_convergence_last_duration_seconds 0.25",
                "wf_bbs_auctioned_lrps_total 5",
                "wf_bbs_auctioned_tasks_total 1",
                "wf_bbs_lrp_placement_failures_total 2",
            ] {
                assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
            }
        }
    }
}
