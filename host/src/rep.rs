//! The rep's HTTP API (see `wf_bbs::rep`): the auctioneer reads the cell's state and
//! offers work; the BBS stops instances and cancels tasks; `/container_metrics` answers
//! what each instance uses; `/metrics` the cell's totals in Prometheus' text format
//! (the rep's port is internal, reached by the BBS and operators, so it needs no token).
//! Handlers delegate to [`Cell`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use wf_bbs::rep::{CellState, Work};

use crate::cell::Cell;
use crate::metrics::ContainerMetricsCollection;

pub fn router(cell: Arc<Cell>) -> Router {
    Router::new()
        .route("/state", get(state))
        .route("/work", post(work))
        .route("/container_metrics", get(container_metrics))
        .route("/metrics", get(metrics))
        .route(
            "/v1/lrps/{process_guid}/instances/{instance_guid}/stop",
            post(stop_lrp),
        )
        .route("/v1/tasks/{task_guid}/cancel", post(cancel_task))
        .route("/evacuate", post(evacuate))
        .route("/ping", get(|| async { StatusCode::OK }))
        .with_state(cell)
}

async fn state(State(cell): State<Arc<Cell>>) -> Json<CellState> {
    Json(cell.state())
}

async fn metrics(State(cell): State<Arc<Cell>>) -> impl IntoResponse {
    let text = crate::prometheus::render(
        &cell.state(),
        &cell.phase_counts(),
        &cell.metrics.totals(),
        &cell.app_logs,
    );
    ([(header::CONTENT_TYPE, wf_metrics::CONTENT_TYPE)], text)
}

async fn container_metrics(State(cell): State<Arc<Cell>>) -> Json<ContainerMetricsCollection> {
    Json(cell.metrics.collection(&cell.config.cell_id))
}

async fn work(State(cell): State<Arc<Cell>>, Json(work): Json<Work>) -> Json<Work> {
    Json(cell.perform(work))
}

async fn stop_lrp(
    State(cell): State<Arc<Cell>>,
    Path((process_guid, instance_guid)): Path<(String, String)>,
) -> StatusCode {
    if cell.stop_lrp(&process_guid, &instance_guid) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn cancel_task(State(cell): State<Arc<Cell>>, Path(task_guid): Path<String>) -> StatusCode {
    if cell.cancel_task(&task_guid) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::NOT_FOUND
    }
}

/// Starts the evacuation (202), or finds it under way (202 too: draining is idempotent).
async fn evacuate(State(cell): State<Arc<Cell>>) -> StatusCode {
    cell.evacuate();
    StatusCode::ACCEPTED
}
