//! The BBS's HTTP API: how cells, the Cloud Controller and operators' tools reach the
//! BBS, in one process (`wfd dev`, on loopback) or across machines (`wfd bbs`).
//!
//! Diego's BBS speaks protobuf over HTTP POSTs; this API keeps its routes and verbs
//! with JSON bodies. Every operation is `POST /v1/<record>/<verb>` with a JSON request
//! and a JSON response; a failed operation answers an HTTP error status with
//! [`WireError`], Diego's error types. `GET /v1/events` streams [`crate::BbsEvent`]s as
//! server-sent events (`data: <json>`, tagged by `type`), as Diego's `/v1/events` does.
//! [`crate::BbsClient`] is the client. `GET /metrics` serves the BBS's Prometheus
//! metrics (the `metrics` module).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::models::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, CellPresence, DesiredLrp, DesiredLrpUpdate,
    NetInfo, Task, TaskDefinition,
};
use crate::{ActualLrpFilter, Bbs, BbsError, DesiredLrpFilter, TaskFilter};

/// Diego's BBS error types, as the body of a failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WireError {
    ResourceNotFound {
        message: String,
    },
    ResourceExists {
        record: String,
    },
    InvalidRecord {
        message: String,
    },
    InvalidStateTransition {
        record: String,
        from: String,
        to: String,
    },
    /// The BBS failed (its database, most likely); the call may be retried.
    UnknownError {
        message: String,
    },
}

impl From<BbsError> for WireError {
    fn from(e: BbsError) -> Self {
        match e {
            BbsError::NotFound(message) => WireError::ResourceNotFound { message },
            BbsError::AlreadyExists { record } => WireError::ResourceExists { record },
            BbsError::InvalidRecord(message) => WireError::InvalidRecord { message },
            BbsError::InvalidTransition { record, from, to } => {
                WireError::InvalidStateTransition { record, from, to }
            }
            other => WireError::UnknownError {
                message: other.to_string(),
            },
        }
    }
}

impl From<WireError> for BbsError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::ResourceNotFound { message } => BbsError::NotFound(message),
            WireError::ResourceExists { record } => BbsError::AlreadyExists { record },
            WireError::InvalidRecord { message } => BbsError::InvalidRecord(message),
            WireError::InvalidStateTransition { record, from, to } => {
                BbsError::InvalidTransition { record, from, to }
            }
            WireError::UnknownError { message } => BbsError::Remote(message),
        }
    }
}

impl IntoResponse for WireError {
    fn into_response(self) -> Response {
        let status = match self {
            WireError::ResourceNotFound { .. } => StatusCode::NOT_FOUND,
            WireError::ResourceExists { .. } | WireError::InvalidStateTransition { .. } => {
                StatusCode::CONFLICT
            }
            WireError::InvalidRecord { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            WireError::UnknownError { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(self)).into_response()
    }
}

type Reply<T> = Result<Json<T>, WireError>;

/// The empty response of an operation that answers nothing but success.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Serialize, Deserialize)]
pub struct DesireLrpRequest {
    pub desired_lrp: DesiredLrp,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpdateDesiredLrpRequest {
    pub process_guid: String,
    pub update: DesiredLrpUpdate,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessGuidRequest {
    pub process_guid: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DesiredLrpsResponse {
    pub desired_lrps: Vec<DesiredLrp>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ActualLrpsResponse {
    pub actual_lrps: Vec<ActualLrp>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
}

/// Also the request of `/v1/actual_lrps/evacuate`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
    pub actual_lrp_net_info: NetInfo,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EvacuateResponse {
    pub keep_container: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CrashActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
    pub error_message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DesireTaskRequest {
    pub task_guid: String,
    pub domain: String,
    pub task_definition: TaskDefinition,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TaskGuidRequest {
    pub task_guid: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TaskResponse {
    pub task: Task,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TasksResponse {
    pub tasks: Vec<Task>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StartTaskRequest {
    pub task_guid: String,
    pub cell_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StartTaskResponse {
    pub should_start: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CompleteTaskRequest {
    pub task_guid: String,
    pub cell_id: String,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpsertDomainRequest {
    pub domain: String,
    pub ttl_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CellPresenceRequest {
    pub cell_presence: CellPresence,
    pub ttl_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CellIdRequest {
    pub cell_id: String,
}

/// The BBS API over `bbs`; event streams end when `stop` is cancelled.
pub fn router(bbs: Arc<Bbs>, stop: CancellationToken) -> Router {
    Router::new()
        .route("/ping", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics))
        .route("/v1/events", get(events))
        .route("/v1/desired_lrp/desire", post(desire_lrp))
        .route("/v1/desired_lrp/update", post(update_desired_lrp))
        .route("/v1/desired_lrp/remove", post(remove_desired_lrp))
        .route("/v1/desired_lrps/list", post(desired_lrps))
        .route("/v1/actual_lrps/list", post(actual_lrps))
        .route("/v1/actual_lrps/claim", post(claim_actual_lrp))
        .route("/v1/actual_lrps/start", post(start_actual_lrp))
        .route("/v1/actual_lrps/crash", post(crash_actual_lrp))
        .route("/v1/actual_lrps/evacuate", post(evacuate_actual_lrp))
        .route("/v1/actual_lrps/remove", post(remove_actual_lrp))
        .route("/v1/tasks/desire", post(desire_task))
        .route("/v1/tasks/list", post(tasks))
        .route("/v1/tasks/get_by_task_guid", post(task_by_guid))
        .route("/v1/tasks/start", post(start_task))
        .route("/v1/tasks/complete", post(complete_task))
        .route("/v1/tasks/cancel", post(cancel_task))
        .route("/v1/tasks/resolving", post(resolving_task))
        .route("/v1/tasks/delete", post(delete_task))
        .route("/v1/domains/upsert", post(upsert_domain))
        .route("/v1/cells/presence", post(set_cell_presence))
        .route("/v1/cells/remove", post(remove_cell_presence))
        .layer(Extension(stop))
        .with_state(bbs)
}

/// `GET /metrics`: [`Bbs::metrics`] in Prometheus' text format. The BBS API is
/// internal (cells, the controller, operators' tools), so it needs no token.
async fn metrics(State(bbs): State<Arc<Bbs>>) -> Response {
    match bbs.metrics().await {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, wf_metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(WireError::from(e))).into_response(),
    }
}

fn done(result: Result<(), BbsError>) -> Reply<Empty> {
    result.map(|()| Json(Empty {})).map_err(WireError::from)
}

async fn desire_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<DesireLrpRequest>,
) -> Reply<Empty> {
    done(bbs.desire_lrp(req.desired_lrp).await)
}

async fn update_desired_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<UpdateDesiredLrpRequest>,
) -> Reply<Empty> {
    done(bbs.update_desired_lrp(&req.process_guid, req.update).await)
}

async fn remove_desired_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<ProcessGuidRequest>,
) -> Reply<Empty> {
    done(bbs.remove_desired_lrp(&req.process_guid).await)
}

async fn desired_lrps(
    State(bbs): State<Arc<Bbs>>,
    Json(filter): Json<DesiredLrpFilter>,
) -> Reply<DesiredLrpsResponse> {
    let desired_lrps = bbs.desired_lrps(&filter).await?;
    Ok(Json(DesiredLrpsResponse { desired_lrps }))
}

async fn actual_lrps(
    State(bbs): State<Arc<Bbs>>,
    Json(filter): Json<ActualLrpFilter>,
) -> Reply<ActualLrpsResponse> {
    let actual_lrps = bbs.actual_lrps(&filter).await?;
    Ok(Json(ActualLrpsResponse { actual_lrps }))
}

async fn claim_actual_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<ActualLrpRequest>,
) -> Reply<Empty> {
    done(
        bbs.claim_actual_lrp(&req.actual_lrp_key, &req.actual_lrp_instance_key)
            .await,
    )
}

async fn start_actual_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<StartActualLrpRequest>,
) -> Reply<Empty> {
    done(
        bbs.start_actual_lrp(
            &req.actual_lrp_key,
            &req.actual_lrp_instance_key,
            req.actual_lrp_net_info,
        )
        .await,
    )
}

async fn evacuate_actual_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<StartActualLrpRequest>,
) -> Reply<EvacuateResponse> {
    let keep_container = bbs
        .evacuate_actual_lrp(
            &req.actual_lrp_key,
            &req.actual_lrp_instance_key,
            req.actual_lrp_net_info,
        )
        .await?;
    Ok(Json(EvacuateResponse { keep_container }))
}

async fn crash_actual_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<CrashActualLrpRequest>,
) -> Reply<Empty> {
    done(
        bbs.crash_actual_lrp(
            &req.actual_lrp_key,
            &req.actual_lrp_instance_key,
            &req.error_message,
        )
        .await,
    )
}

async fn remove_actual_lrp(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<ActualLrpRequest>,
) -> Reply<Empty> {
    done(
        bbs.remove_actual_lrp(&req.actual_lrp_key, &req.actual_lrp_instance_key)
            .await,
    )
}

async fn desire_task(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<DesireTaskRequest>,
) -> Reply<Empty> {
    done(
        bbs.desire_task(&req.task_guid, &req.domain, req.task_definition)
            .await,
    )
}

async fn tasks(
    State(bbs): State<Arc<Bbs>>,
    Json(filter): Json<TaskFilter>,
) -> Reply<TasksResponse> {
    let tasks = bbs.tasks(&filter).await?;
    Ok(Json(TasksResponse { tasks }))
}

async fn task_by_guid(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<TaskGuidRequest>,
) -> Reply<TaskResponse> {
    let task = bbs.task_by_guid(&req.task_guid).await?;
    Ok(Json(TaskResponse { task }))
}

async fn start_task(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<StartTaskRequest>,
) -> Reply<StartTaskResponse> {
    let should_start = bbs.start_task(&req.task_guid, &req.cell_id).await?;
    Ok(Json(StartTaskResponse { should_start }))
}

async fn complete_task(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<CompleteTaskRequest>,
) -> Reply<Empty> {
    done(
        bbs.complete_task(
            &req.task_guid,
            &req.cell_id,
            req.failed,
            &req.failure_reason,
            &req.result,
        )
        .await,
    )
}

async fn cancel_task(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<TaskGuidRequest>,
) -> Reply<Empty> {
    done(bbs.cancel_task(&req.task_guid).await)
}

async fn resolving_task(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<TaskGuidRequest>,
) -> Reply<Empty> {
    done(bbs.resolving_task(&req.task_guid).await)
}

async fn delete_task(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<TaskGuidRequest>,
) -> Reply<Empty> {
    done(bbs.delete_task(&req.task_guid).await)
}

async fn upsert_domain(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<UpsertDomainRequest>,
) -> Reply<Empty> {
    done(
        bbs.upsert_domain(&req.domain, Duration::from_millis(req.ttl_ms))
            .await,
    )
}

async fn set_cell_presence(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<CellPresenceRequest>,
) -> Reply<Empty> {
    done(
        bbs.set_cell_presence(&req.cell_presence, Duration::from_millis(req.ttl_ms))
            .await,
    )
}

async fn remove_cell_presence(
    State(bbs): State<Arc<Bbs>>,
    Json(req): Json<CellIdRequest>,
) -> Reply<Empty> {
    done(bbs.remove_cell_presence(&req.cell_id).await)
}

/// Every event from the moment of the call. A subscriber that falls behind by more
/// than the event buffer loses the oldest events and is told so by a `lagged` event;
/// subscribers heal by listing the records again, as Diego's do after a reconnect.
async fn events(
    State(bbs): State<Arc<Bbs>>,
    Extension(stop): Extension<CancellationToken>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = bbs.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(event) => Event::default()
                .json_data(&event)
                .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
            Err(RecvError::Lagged(missed)) => Event::default()
                .event(LAGGED_EVENT)
                .data(missed.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    // Ends with the server, which waits for open responses before it stops.
    let stream = stream.take_until(stop.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The SSE event that tells a subscriber it missed events.
pub(crate) const LAGGED_EVENT: &str = "lagged";
