//! The broker side of managed service instances and their bindings: a runner that
//! takes up each instance or binding with a `pending` step (create, update, poll,
//! delete, orphan) whose `due_at` has passed, calls the broker (`osb`), and records the
//! outcome as CF's `last_operation` and in the operation's job. The steps live in the
//! database, so a restarted controller carries on where it stopped; polls back off
//! (honouring `Retry-After`) up to a maximum duration; a provision or bind that timed
//! out, failed with 5xx or answered garbage is followed by a deprovision or unbind
//! (orphan mitigation), retried until it goes through or the maximum duration passes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor, Target};
use crate::db::{
    self, Arg, Domain, Filter, JobState, Operation, Org, Route, RouteBinding, ServiceBinding,
    ServiceBroker, ServiceInstance, ServiceOffering, ServicePlan, Space,
};
use crate::error::ApiError;
use crate::osb::{self, BindOutcome, BindResource, LastOperation, OsbError, Outcome};
use crate::Controller;

/// How the controller talks to service brokers (CF's `broker_client_*` settings).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Longest wait for one broker answer (CF: 60 s).
    pub timeout: Duration,
    /// First wait between `last_operation` polls, doubled after each (CF: 60 s).
    pub poll_interval: Duration,
    /// Longest wait between polls, unless the broker's `Retry-After` asks for more
    /// (CF: 24 h).
    pub max_poll_interval: Duration,
    /// How long an operation may stay in progress before it fails (CF: 7 days).
    pub max_poll_duration: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(60),
            max_poll_interval: Duration::from_secs(24 * 3600),
            max_poll_duration: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The runner's shared state: the HTTP client, a wake-up for new work, and the rows
/// being worked on.
#[derive(Default)]
pub struct Runner {
    http: reqwest::Client,
    wake: tokio::sync::Notify,
    in_flight: Mutex<HashSet<String>>,
}

impl Runner {
    /// Makes the runner look for due steps now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Pending steps.
pub const CREATE: &str = "create";
pub const UPDATE: &str = "update";
pub const DELETE: &str = "delete";
const POLL: &str = "poll";
const ORPHAN: &str = "orphan";

pub const IN_PROGRESS: &str = "in progress";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// How long a step that failed on our side (not the broker's) waits before it is tried
/// again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

/// Takes up due steps until cancelled.
pub async fn run(controller: Arc<Controller>, cancel: CancellationToken) {
    let tick = controller
        .config
        .brokers
        .poll_interval
        .min(Duration::from_secs(1));
    loop {
        if let Err(e) = pass(&controller).await {
            tracing::error!(error = %e, "service broker operations");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = controller.operations.wake.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// The rows the runner works on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    Instance,
    /// A service credential binding (an app's or a key).
    Credential,
    /// A service route binding.
    Route,
}

impl Row {
    fn table(self) -> &'static str {
        match self {
            Row::Instance => "service_instances",
            Row::Credential => "service_credential_bindings",
            Row::Route => "service_route_bindings",
        }
    }
}

async fn pass(controller: &Arc<Controller>) -> Result<(), sqlx::Error> {
    let due = || {
        Filter::new()
            .clause("pending IS NOT NULL", vec![])
            .clause("due_at <= ?", vec![db::now().into()])
    };
    let instances: Vec<ServiceInstance> = controller.db.find(due()).await?;
    let bindings: Vec<ServiceBinding> = controller.db.find(due()).await?;
    let route_bindings: Vec<RouteBinding> = controller.db.find(due()).await?;
    let guids = instances
        .into_iter()
        .map(|i| (i.guid, Row::Instance))
        .chain(bindings.into_iter().map(|b| (b.guid, Row::Credential)))
        .chain(route_bindings.into_iter().map(|b| (b.guid, Row::Route)));
    for (guid, row) in guids {
        if !controller
            .operations
            .in_flight
            .lock()
            .expect("in-flight set")
            .insert(guid.clone())
        {
            continue;
        }
        let controller = controller.clone();
        tokio::spawn(async move {
            let outcome = match row {
                Row::Instance => instance_step(&controller, &guid).await,
                Row::Credential | Row::Route => binding_step(&controller, row, &guid).await,
            };
            if let Err(e) = outcome {
                // Not the broker's answer (that is recorded) but ours: a missing key, the
                // database. Tried again later rather than at every tick.
                tracing::error!(guid, error = ?e, "service broker operation step");
                let later = later(
                    controller
                        .config
                        .brokers
                        .max_poll_interval
                        .min(RETRY_AFTER_ERROR),
                );
                if let Err(e) = controller
                    .db
                    .update(row.table(), &guid, vec![("due_at", later.into())])
                    .await
                {
                    tracing::error!(guid, error = %e, "postponing a service broker operation step");
                }
            }
            controller
                .operations
                .in_flight
                .lock()
                .expect("in-flight set")
                .remove(&guid);
        });
    }
    Ok(())
}

/// The plan, offering and broker of a managed instance.
pub struct PlanContext {
    pub plan: ServicePlan,
    pub offering: ServiceOffering,
    pub broker: ServiceBroker,
}

impl PlanContext {
    pub async fn load(controller: &Controller, plan_guid: &str) -> Result<PlanContext, ApiError> {
        let plan = controller
            .db
            .get::<ServicePlan>(plan_guid)
            .await?
            .ok_or_else(|| ApiError::not_found("Service plan"))?;
        let offering = controller
            .db
            .get::<ServiceOffering>(&plan.service_offering_guid)
            .await?
            .ok_or_else(|| ApiError::not_found("Service offering"))?;
        let broker = controller
            .db
            .get::<ServiceBroker>(&offering.service_broker_guid)
            .await?
            .ok_or_else(|| ApiError::not_found("Service broker"))?;
        Ok(PlanContext {
            plan,
            offering,
            broker,
        })
    }

    pub fn ids(&self) -> osb::PlanIds<'_> {
        osb::PlanIds {
            service_id: &self.offering.broker_id,
            plan_id: &self.plan.broker_id,
        }
    }
}

/// A broker's decrypted basic-auth credentials.
pub struct BrokerAuth {
    pub username: String,
    pub password: String,
}

impl BrokerAuth {
    pub fn of(controller: &Controller, broker: &ServiceBroker) -> Result<BrokerAuth, ApiError> {
        let plain = controller
            .crypto
            .decrypt(&broker.authentication)
            .map_err(|e| {
                ApiError::Internal(format!("credentials of broker {}: {e}", broker.guid))
            })?;
        let value: Value = serde_json::from_str(&plain).map_err(|e| {
            ApiError::Internal(format!("credentials of broker {}: {e}", broker.guid))
        })?;
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
        Ok(BrokerAuth {
            username: field("username"),
            password: field("password"),
        })
    }

    /// The OSB client for `url` with these credentials.
    pub fn client<'a>(&'a self, controller: &'a Controller, url: &'a str) -> osb::Broker<'a> {
        osb::Broker {
            http: controller.operations.http(),
            url,
            username: &self.username,
            password: &self.password,
            timeout: controller.config.brokers.timeout,
        }
    }
}

/// A decrypted JSON object column (parameters, credentials).
pub fn decrypt_object(
    controller: &Controller,
    stored: Option<&str>,
) -> Result<Option<Map<String, Value>>, ApiError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let plain = controller
        .crypto
        .decrypt(stored)
        .map_err(|e| ApiError::Internal(format!("decrypting a stored secret: {e}")))?;
    serde_json::from_str(&plain)
        .map(Some)
        .map_err(|e| ApiError::Internal(format!("a stored secret: {e}")))
}

pub fn encrypt_json(controller: &Controller, value: &Value) -> Result<Arg, ApiError> {
    controller
        .crypto
        .encrypt(&value.to_string())
        .map(Arg::Text)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The column values that start an operation of `kind` (its first step), finished
/// by `job` if any, on behalf of `user` if any.
pub fn start_values(
    kind: &str,
    job_guid: Option<&str>,
    user_guid: Option<&str>,
) -> Vec<(&'static str, Arg)> {
    let now = db::now();
    vec![
        ("last_operation_type", kind.into()),
        ("last_operation_state", IN_PROGRESS.into()),
        ("last_operation_description", Arg::Null),
        ("pending", kind.into()),
        ("due_at", now.clone().into()),
        ("attempts", 0.into()),
        ("operation_started_at", now.into()),
        ("broker_operation", Arg::Null),
        ("job_guid", job_guid.map(str::to_string).into()),
        ("operation_user_guid", user_guid.map(str::to_string).into()),
    ]
}

/// Unbinds the managed bindings of an app that is being deleted: each leaves the app
/// at once and is deleted once the broker has unbound it.
pub async fn unbind_app(controller: &Controller, app_guid: &str) -> Result<(), ApiError> {
    let bindings: Vec<ServiceBinding> = controller
        .db
        .find(
            Filter::new()
                .eq("app_guid", app_guid)
                .clause("last_operation_type IS NOT NULL", vec![]),
        )
        .await?;
    for binding in bindings {
        let mut values = start_values(DELETE, None, None);
        values.push(("app_guid", Arg::Null));
        controller
            .db
            .update("service_credential_bindings", &binding.guid, values)
            .await?;
    }
    controller.operations.wake();
    Ok(())
}

/// Unbinds the route binding of a route that is being deleted: a user-provided
/// instance's is deleted at once, a managed one's once the broker has unbound it.
pub async fn unbind_route(controller: &Controller, route_guid: &str) -> Result<(), ApiError> {
    let bindings: Vec<RouteBinding> = controller
        .db
        .find(Filter::new().eq("route_guid", route_guid))
        .await?;
    for binding in bindings {
        if binding.operation.kind.is_none() {
            remove_route_binding(controller, &binding).await?;
        } else if binding.operation.pending.as_deref() != Some(DELETE) {
            controller
                .db
                .update(
                    "service_route_bindings",
                    &binding.guid,
                    start_values(DELETE, None, None),
                )
                .await?;
        }
    }
    controller.operations.wake();
    Ok(())
}

/// Deprovisions the managed instances of a space that is being deleted (each is
/// deleted once the broker has deprovisioned it) and deletes its user-provided ones.
pub async fn delete_space_instances(
    controller: &Controller,
    space_guid: &str,
) -> Result<(), ApiError> {
    let instances: Vec<ServiceInstance> = controller
        .db
        .find(Filter::new().eq("space_guid", space_guid))
        .await?;
    for instance in instances {
        if instance.service_plan_guid.is_some() {
            controller
                .db
                .update(
                    "service_instances",
                    &instance.guid,
                    start_values(DELETE, None, None),
                )
                .await?;
        } else {
            remove_instance(controller, &instance.guid).await?;
        }
    }
    controller.operations.wake();
    Ok(())
}

/// When the next poll is due: `Retry-After` if the broker gave one, else the poll
/// interval doubled per attempt; both at most the maximum interval.
fn next_due(config: &BrokerConfig, attempts: i64, retry_after: Option<Duration>) -> String {
    let backoff = config
        .poll_interval
        .saturating_mul(1u32 << attempts.clamp(0, 20));
    let wait = retry_after.unwrap_or(backoff).min(config.max_poll_interval);
    later(wait)
}

fn later(wait: Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + wait;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.format(&format).unwrap_or_else(|_| db::now())
}

/// Whether an operation started at `started` has run out of time.
fn expired(config: &BrokerConfig, started: Option<&str>) -> bool {
    let started = started.map(db::unix_seconds).unwrap_or_default();
    let elapsed = time::OffsetDateTime::now_utc().unix_timestamp() - started;
    elapsed > i64::try_from(config.max_poll_duration.as_secs()).unwrap_or(i64::MAX)
}

/// Finishes the operation's job: COMPLETE, or FAILED with `error`.
async fn finish_job(
    controller: &Controller,
    job: Option<&str>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let Some(job) = job else {
        return Ok(());
    };
    let (state, errors) = match error {
        None => (JobState::Complete, json!([])),
        Some(detail) => (
            JobState::Failed,
            ApiError::unprocessable(detail).body()["errors"].clone(),
        ),
    };
    controller
        .db
        .update(
            "jobs",
            job,
            vec![
                ("state", state.into()),
                ("errors", errors.to_string().into()),
            ],
        )
        .await
        .map(|_| ())
}

/// The values that end an operation in `state` with `description`.
/// Ends the operation of row `guid` of `table` as failed with `detail`: on the row's
/// `last_operation` and on its job.
async fn fail_operation(
    controller: &Controller,
    table: &str,
    guid: &str,
    job: Option<&str>,
    detail: String,
) -> Result<(), sqlx::Error> {
    controller
        .db
        .update(table, guid, end_values(FAILED, Some(detail.clone())))
        .await?;
    finish_job(controller, job, Some(&detail)).await
}

fn end_values(state: &str, description: Option<String>) -> Vec<(&'static str, Arg)> {
    vec![
        ("last_operation_state", state.into()),
        ("last_operation_description", description.into()),
        ("pending", Arg::Null),
        ("due_at", Arg::Null),
    ]
}

fn orphan_values(state_description: String) -> Vec<(&'static str, Arg)> {
    vec![
        ("last_operation_state", FAILED.into()),
        ("last_operation_description", state_description.into()),
        ("pending", ORPHAN.into()),
        ("due_at", db::now().into()),
        ("attempts", 0.into()),
        ("operation_started_at", db::now().into()),
    ]
}

fn poll_values(
    config: &BrokerConfig,
    attempts: i64,
    retry_after: Option<Duration>,
    description: Option<String>,
) -> Vec<(&'static str, Arg)> {
    vec![
        ("pending", POLL.into()),
        ("attempts", (attempts + 1).into()),
        ("due_at", next_due(config, attempts, retry_after).into()),
        ("last_operation_description", description.into()),
    ]
}

async fn org_of(controller: &Controller, space_guid: &str) -> Result<(Space, Org), ApiError> {
    let space = controller
        .db
        .get::<Space>(space_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Space"))?;
    let org = controller
        .db
        .get::<Org>(&space.organization_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Organization"))?;
    Ok((space, org))
}

/// One step of an instance's operation.
async fn instance_step(controller: &Controller, guid: &str) -> Result<(), ApiError> {
    let Some(instance) = controller.db.get::<ServiceInstance>(guid).await? else {
        return Ok(());
    };
    let (Some(pending), Some(plan_guid)) = (
        instance.operation.pending.clone(),
        instance.service_plan_guid.clone(),
    ) else {
        return Ok(());
    };
    let plan = PlanContext::load(controller, &plan_guid).await?;
    let auth = BrokerAuth::of(controller, &plan.broker)?;
    let broker = auth.client(controller, &plan.broker.url);
    let config = &controller.config.brokers;
    let op = &instance.operation;
    let identity = op
        .user_guid
        .clone()
        .map(|user_id| osb::Identity { user_id });
    let job = op.job_guid.as_deref();
    let set =
        |values: Vec<(&'static str, Arg)>| controller.db.update("service_instances", guid, values);
    let fail = |detail: String| fail_operation(controller, "service_instances", guid, job, detail);
    match pending.as_str() {
        CREATE => {
            let (space, org) = org_of(controller, &instance.space_guid).await?;
            let parameters =
                decrypt_object(controller, instance.parameters.as_deref())?.map(Value::Object);
            let context = osb::Context {
                organization_guid: &org.guid,
                space_guid: &space.guid,
                instance_name: &instance.name,
            };
            let identity = identity.unwrap_or(osb::Identity {
                user_id: String::new(),
            });
            match broker
                .provision(guid, plan.ids(), context, parameters.as_ref(), &identity)
                .await
            {
                Ok(Outcome::Done { dashboard_url }) => {
                    let mut values = end_values(SUCCEEDED, None);
                    values.push(("dashboard_url", dashboard_url.into()));
                    set(values).await?;
                    finish_job(controller, job, None).await?;
                }
                Ok(Outcome::Async { operation }) => {
                    let mut values = poll_values(config, 0, None, None);
                    values.push(("broker_operation", operation.into()));
                    set(values).await?;
                }
                Err(e) => fail_instance(controller, &instance, e).await?,
            }
        }
        UPDATE => {
            let (space, org) = org_of(controller, &instance.space_guid).await?;
            let parameters =
                decrypt_object(controller, instance.parameters.as_deref())?.map(Value::Object);
            let context = osb::Context {
                organization_guid: &org.guid,
                space_guid: &space.guid,
                instance_name: &instance.name,
            };
            let identity = identity.unwrap_or(osb::Identity {
                user_id: String::new(),
            });
            match broker
                .update(guid, plan.ids(), context, parameters.as_ref(), &identity)
                .await
            {
                Ok(Outcome::Done { dashboard_url }) => {
                    let mut values = end_values(SUCCEEDED, None);
                    if dashboard_url.is_some() {
                        values.push(("dashboard_url", dashboard_url.into()));
                    }
                    set(values).await?;
                    finish_job(controller, job, None).await?;
                }
                Ok(Outcome::Async { operation }) => {
                    let mut values = poll_values(config, 0, None, None);
                    values.push(("broker_operation", operation.into()));
                    set(values).await?;
                }
                // A failed update leaves the instance as it was: no orphan to mitigate.
                Err(e) => {
                    fail(e.to_string()).await?;
                }
            }
        }
        POLL => {
            let answer = broker
                .last_operation(guid, None, plan.ids(), op.broker_operation.as_deref())
                .await;
            let deleting = op.kind.as_deref() == Some(DELETE);
            match answer {
                Ok(LastOperation::InProgress {
                    description,
                    retry_after,
                }) => {
                    if expired(config, op.started_at.as_deref()) {
                        fail(timed_out(config)).await?;
                    } else {
                        set(poll_values(config, op.attempts, retry_after, description)).await?;
                    }
                }
                Ok(LastOperation::Succeeded { .. }) | Ok(LastOperation::Gone) if deleting => {
                    remove_instance(controller, guid).await?;
                    finish_job(controller, job, None).await?;
                }
                Ok(LastOperation::Succeeded { description }) => {
                    set(end_values(SUCCEEDED, description)).await?;
                    finish_job(controller, job, None).await?;
                }
                Ok(LastOperation::Failed { description }) => {
                    let detail = description
                        .unwrap_or_else(|| "The service broker reported a failure".into());
                    fail(detail).await?;
                }
                Ok(LastOperation::Gone) => {
                    let detail = "The service broker reports the service instance gone".to_string();
                    fail(detail).await?;
                }
                // A poll that failed is tried again until the operation runs out of time.
                Err(e) => {
                    if expired(config, op.started_at.as_deref()) {
                        fail(e.to_string()).await?;
                    } else {
                        set(poll_values(
                            config,
                            op.attempts,
                            None,
                            op.description.clone(),
                        ))
                        .await?;
                    }
                }
            }
        }
        DELETE => match broker
            .deprovision(guid, plan.ids(), identity.as_ref())
            .await
        {
            Ok(Outcome::Done { .. }) => {
                remove_instance(controller, guid).await?;
                finish_job(controller, job, None).await?;
            }
            Ok(Outcome::Async { operation }) => {
                let mut values = poll_values(config, 0, None, None);
                values.push(("broker_operation", operation.into()));
                set(values).await?;
            }
            Err(e) => {
                fail(e.to_string()).await?;
            }
        },
        ORPHAN => match broker.deprovision(guid, plan.ids(), None).await {
            Ok(_) => {
                set(vec![("pending", Arg::Null), ("due_at", Arg::Null)]).await?;
            }
            Err(e) if expired(config, op.started_at.as_deref()) => {
                tracing::warn!(instance = guid, error = %e, "giving up orphan mitigation");
                set(vec![("pending", Arg::Null), ("due_at", Arg::Null)]).await?;
            }
            Err(_) => {
                set(vec![
                    ("attempts", (op.attempts + 1).into()),
                    ("due_at", next_due(config, op.attempts, None).into()),
                ])
                .await?;
            }
        },
        other => {
            tracing::error!(
                instance = guid,
                step = other,
                "unknown service operation step"
            );
            set(vec![("pending", Arg::Null)]).await?;
        }
    }
    Ok(())
}

fn timed_out(config: &BrokerConfig) -> String {
    format!(
        "The service broker did not finish the operation within {} seconds",
        config.max_poll_duration.as_secs()
    )
}

/// A provision that failed: the instance's create failed with the broker's error,
/// followed by orphan mitigation when the spec asks for it.
async fn fail_instance(
    controller: &Controller,
    instance: &ServiceInstance,
    e: OsbError,
) -> Result<(), ApiError> {
    let detail = e.to_string();
    let values = if e.needs_orphan_mitigation() {
        orphan_values(detail.clone())
    } else {
        end_values(FAILED, Some(detail.clone()))
    };
    controller
        .db
        .update("service_instances", &instance.guid, values)
        .await?;
    finish_job(
        controller,
        instance.operation.job_guid.as_deref(),
        Some(&detail),
    )
    .await?;
    Ok(())
}

async fn remove_instance(controller: &Controller, guid: &str) -> Result<(), sqlx::Error> {
    controller
        .db
        .delete_resources(
            "service_credential_bindings",
            Filter::new().eq("service_instance_guid", guid),
        )
        .await?;
    let route_bindings: Vec<RouteBinding> = controller
        .db
        .find(Filter::new().eq("service_instance_guid", guid))
        .await?;
    for binding in &route_bindings {
        remove_route_binding(controller, binding).await?;
    }
    controller
        .db
        .delete_resources("service_instances", Filter::new().eq("guid", guid))
        .await
        .map(|_| ())
}

/// A credential or route binding, as a binding step sees it.
enum Binding {
    Credential(ServiceBinding),
    Route(RouteBinding),
}

impl Binding {
    async fn load(
        controller: &Controller,
        row: Row,
        guid: &str,
    ) -> Result<Option<Binding>, sqlx::Error> {
        Ok(match row {
            Row::Route => controller
                .db
                .get::<RouteBinding>(guid)
                .await?
                .map(Binding::Route),
            Row::Credential => controller
                .db
                .get::<ServiceBinding>(guid)
                .await?
                .map(Binding::Credential),
            Row::Instance => None,
        })
    }

    fn instance_guid(&self) -> &str {
        match self {
            Binding::Credential(b) => &b.service_instance_guid,
            Binding::Route(b) => &b.service_instance_guid,
        }
    }

    fn parameters(&self) -> Option<&str> {
        match self {
            Binding::Credential(b) => b.parameters.as_deref(),
            Binding::Route(b) => b.parameters.as_deref(),
        }
    }

    fn operation(&self) -> &Operation {
        match self {
            Binding::Credential(b) => &b.operation,
            Binding::Route(b) => &b.operation,
        }
    }
}

/// The `bind_resource` route of a route binding: `host.domain/path` (`None` once the
/// route is gone).
async fn route_of(
    controller: &Controller,
    binding: &RouteBinding,
) -> Result<Option<String>, sqlx::Error> {
    let Some(route) = controller.db.get::<Route>(&binding.route_guid).await? else {
        return Ok(None);
    };
    let domain = controller.db.get::<Domain>(&route.domain_guid).await?;
    Ok(domain.map(|d| crate::api::route_url(&route.host, &d.name, &route.path)))
}

/// One step of a binding's operation.
async fn binding_step(controller: &Controller, row: Row, guid: &str) -> Result<(), ApiError> {
    let Some(binding) = Binding::load(controller, row, guid).await? else {
        return Ok(());
    };
    let Some(pending) = binding.operation().pending.clone() else {
        return Ok(());
    };
    let Some(instance) = controller
        .db
        .get::<ServiceInstance>(binding.instance_guid())
        .await?
    else {
        return Ok(());
    };
    let Some(plan_guid) = instance.service_plan_guid.clone() else {
        return Ok(());
    };
    let plan = PlanContext::load(controller, &plan_guid).await?;
    let auth = BrokerAuth::of(controller, &plan.broker)?;
    let broker = auth.client(controller, &plan.broker.url);
    let config = &controller.config.brokers;
    let op = binding.operation();
    let identity = op
        .user_guid
        .clone()
        .map(|user_id| osb::Identity { user_id });
    let job = op.job_guid.as_deref();
    let table = row.table();
    let set = |values: Vec<(&'static str, Arg)>| controller.db.update(table, guid, values);
    let fail = |detail: String| fail_operation(controller, table, guid, job, detail);
    let instance_guid = instance.guid.as_str();
    match pending.as_str() {
        CREATE => {
            let (space, org) = org_of(controller, &instance.space_guid).await?;
            let parameters = decrypt_object(controller, binding.parameters())?.map(Value::Object);
            let context = osb::Context {
                organization_guid: &org.guid,
                space_guid: &space.guid,
                instance_name: &instance.name,
            };
            let identity = identity.unwrap_or(osb::Identity {
                user_id: String::new(),
            });
            let route = match &binding {
                Binding::Route(b) => match route_of(controller, b).await? {
                    Some(route) => Some(route),
                    None => {
                        fail("The route is gone".into()).await?;
                        return Ok(());
                    }
                },
                Binding::Credential(_) => None,
            };
            let resource = match (&binding, &route) {
                (Binding::Credential(b), _) => b
                    .app_guid
                    .as_deref()
                    .map_or(BindResource::Key, BindResource::App),
                (Binding::Route(_), route) => {
                    BindResource::Route(route.as_deref().unwrap_or_default())
                }
            };
            let answer = broker
                .bind(
                    instance_guid,
                    guid,
                    plan.ids(),
                    context,
                    resource,
                    parameters.as_ref(),
                    &identity,
                )
                .await;
            match answer {
                Ok(BindOutcome::Done(credentials)) => {
                    bound(controller, &binding, guid, credentials).await?;
                }
                Ok(BindOutcome::Async { operation }) => {
                    let mut values = poll_values(config, 0, None, None);
                    values.push(("broker_operation", operation.into()));
                    set(values).await?;
                }
                Err(e) => {
                    let detail = e.to_string();
                    let values = if e.needs_orphan_mitigation() {
                        orphan_values(detail.clone())
                    } else {
                        end_values(FAILED, Some(detail.clone()))
                    };
                    set(values).await?;
                    finish_job(controller, job, Some(&detail)).await?;
                }
            }
        }
        POLL => {
            let answer = broker
                .last_operation(
                    instance_guid,
                    Some(guid),
                    plan.ids(),
                    op.broker_operation.as_deref(),
                )
                .await;
            let deleting = op.kind.as_deref() == Some(DELETE);
            match answer {
                Ok(LastOperation::InProgress {
                    description,
                    retry_after,
                }) if !expired(config, op.started_at.as_deref()) => {
                    set(poll_values(config, op.attempts, retry_after, description)).await?;
                }
                Ok(LastOperation::Succeeded { .. }) | Ok(LastOperation::Gone) if deleting => {
                    unbound(controller, &binding, guid).await?;
                    finish_job(controller, job, None).await?;
                }
                Ok(LastOperation::Succeeded { .. }) => {
                    match broker.fetch_binding(instance_guid, guid, plan.ids()).await {
                        Ok(credentials) => bound(controller, &binding, guid, credentials).await?,
                        Err(e) => {
                            set(orphan_values(e.to_string())).await?;
                            finish_job(controller, job, Some(&e.to_string())).await?;
                        }
                    }
                }
                Ok(LastOperation::InProgress { .. }) => {
                    fail(timed_out(config)).await?;
                }
                Ok(LastOperation::Failed { description }) => {
                    let detail = description
                        .unwrap_or_else(|| "The service broker reported a failure".into());
                    fail(detail).await?;
                }
                Ok(LastOperation::Gone) => {
                    let detail = "The service broker reports the binding gone".to_string();
                    fail(detail).await?;
                }
                Err(e) => {
                    if expired(config, op.started_at.as_deref()) {
                        fail(e.to_string()).await?;
                    } else {
                        set(poll_values(
                            config,
                            op.attempts,
                            None,
                            op.description.clone(),
                        ))
                        .await?;
                    }
                }
            }
        }
        DELETE => match broker
            .unbind(instance_guid, guid, plan.ids(), identity.as_ref())
            .await
        {
            Ok(Outcome::Done { .. }) => {
                unbound(controller, &binding, guid).await?;
                finish_job(controller, job, None).await?;
            }
            Ok(Outcome::Async { operation }) => {
                let mut values = poll_values(config, 0, None, None);
                values.push(("broker_operation", operation.into()));
                set(values).await?;
            }
            Err(e) => {
                fail(e.to_string()).await?;
            }
        },
        ORPHAN => match broker.unbind(instance_guid, guid, plan.ids(), None).await {
            Ok(_) => {
                set(vec![("pending", Arg::Null), ("due_at", Arg::Null)]).await?;
            }
            Err(e) if expired(config, op.started_at.as_deref()) => {
                tracing::warn!(binding = guid, error = %e, "giving up orphan mitigation");
                set(vec![("pending", Arg::Null), ("due_at", Arg::Null)]).await?;
            }
            Err(_) => {
                set(vec![
                    ("attempts", (op.attempts + 1).into()),
                    ("due_at", next_due(config, op.attempts, None).into()),
                ])
                .await?;
            }
        },
        other => {
            tracing::error!(
                binding = guid,
                step = other,
                "unknown service operation step"
            );
            set(vec![("pending", Arg::Null)]).await?;
        }
    }
    Ok(())
}

/// What CF's job says when a route binding's broker gives no route service.
const NO_ROUTE_SERVICE_URL: &str =
    "The service broker did not return a route_service_url for the route binding";

/// A bind that went through: a credential binding's credentials kept encrypted and
/// its app's drains synced; a route binding's route service handed to the route's
/// apps (a route binding without one is failed, and unbound).
async fn bound(
    controller: &Controller,
    binding: &Binding,
    guid: &str,
    credentials: osb::Credentials,
) -> Result<(), ApiError> {
    let job = binding.operation().job_guid.as_deref();
    match binding {
        Binding::Credential(binding) => {
            let mut values = end_values(SUCCEEDED, None);
            values.push((
                "credentials",
                encrypt_json(controller, &Value::Object(credentials.credentials))?,
            ));
            values.push(("syslog_drain_url", credentials.syslog_drain_url.into()));
            controller
                .db
                .update("service_credential_bindings", guid, values)
                .await?;
            finish_job(controller, job, None).await?;
            if let Some(app) = &binding.app_guid {
                crate::services::sync_app_drains(controller, app).await?;
            }
        }
        Binding::Route(binding) => {
            let Some(url) = credentials.route_service_url.filter(|u| !u.is_empty()) else {
                controller
                    .db
                    .update(
                        "service_route_bindings",
                        guid,
                        orphan_values(NO_ROUTE_SERVICE_URL.into()),
                    )
                    .await?;
                finish_job(controller, job, Some(NO_ROUTE_SERVICE_URL)).await?;
                return Ok(());
            };
            let mut values = end_values(SUCCEEDED, None);
            values.push(("route_service_url", url.into()));
            controller
                .db
                .update("service_route_bindings", guid, values)
                .await?;
            finish_job(controller, job, None).await?;
            crate::api::sync_route_apps(controller, &binding.route_guid).await?;
            record_route_binding(controller, binding, "create").await;
        }
    }
    Ok(())
}

/// Records `audit.service_route_binding.<action>` once the broker has done it (the
/// request recorded its `start_<action>`), by the user who asked.
async fn record_route_binding(controller: &Controller, binding: &RouteBinding, action: &str) {
    let instance = controller
        .db
        .get::<ServiceInstance>(&binding.service_instance_guid)
        .await;
    let Ok(Some(instance)) = instance else {
        return;
    };
    let actor = Actor {
        guid: binding.operation.user_guid.clone().unwrap_or_default(),
        kind: "user",
        name: String::new(),
    };
    let target = Target {
        kind: "service_route_binding",
        guid: &binding.guid,
        name: "",
    };
    let event = format!("audit.service_route_binding.{action}");
    audit::record_as(
        controller,
        &actor,
        &event,
        target,
        Some(&instance.space_guid),
        json!({}),
    )
    .await;
}

async fn unbound(controller: &Controller, binding: &Binding, guid: &str) -> Result<(), ApiError> {
    match binding {
        Binding::Credential(binding) => {
            controller
                .db
                .delete_resources(
                    "service_credential_bindings",
                    Filter::new().eq("guid", guid),
                )
                .await?;
            if let Some(app) = &binding.app_guid {
                crate::services::sync_app_drains(controller, app).await?;
            }
        }
        Binding::Route(binding) => {
            remove_route_binding(controller, binding).await?;
            if binding.operation.job_guid.is_some() {
                record_route_binding(controller, binding, "delete").await;
            }
        }
    }
    Ok(())
}

/// Deletes a route binding and takes its route service off the route's apps.
pub async fn remove_route_binding(
    controller: &Controller,
    binding: &RouteBinding,
) -> Result<(), sqlx::Error> {
    controller
        .db
        .delete_resources(
            "service_route_bindings",
            Filter::new().eq("guid", &binding.guid),
        )
        .await?;
    crate::api::sync_route_apps(controller, &binding.route_guid).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_and_honour_retry_after() {
        let config = BrokerConfig {
            poll_interval: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(60),
            ..BrokerConfig::default()
        };
        let seconds =
            |due: String| db::unix_seconds(&due) - time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((9..=10).contains(&seconds(next_due(&config, 0, None))));
        assert!((39..=40).contains(&seconds(next_due(&config, 2, None))));
        assert!(
            (59..=60).contains(&seconds(next_due(&config, 9, None))),
            "capped"
        );
        assert!((2..=3).contains(&seconds(next_due(&config, 5, Some(Duration::from_secs(3))))));
        assert!(!expired(&config, Some(&db::now())));
        assert!(expired(&config, Some("2020-01-01T00:00:00.000000Z")));
    }
}
