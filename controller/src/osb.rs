//! The Open Service Broker API v2.17 client: catalog, provision, update, deprovision,
//! bind, fetch binding, unbind and `last_operation` calls to one broker, with the platform's headers
//! (`X-Broker-API-Version`, basic auth, originating and request identities), bounded
//! waits and bounded response bodies, and each status mapped as the spec says. What
//! to do with the outcome (polling, orphan mitigation) is `service_operations`'s.
//!
//! Response bodies may hold credentials: they are parsed, never logged, and an error
//! carries only the broker's `description` and `error` code.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub const API_VERSION: &str = "2.17";
/// Largest catalog read.
const MAX_CATALOG_BYTES: usize = 4 << 20;
/// Largest other response read.
const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OsbError {
    #[error("The service broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("The service broker could not be reached: {0}")]
    Unreachable(String),
    /// A 5xx, or a status the spec does not allow for the call.
    #[error("The service broker returned an invalid response: status {status}{}", describe(.description))]
    BadStatus {
        status: u16,
        description: Option<String>,
    },
    /// A 4xx the spec describes (400, 409, 422 ...), with the broker's error code.
    #[error("The service broker rejected the request: {}{}", .error.clone().unwrap_or_else(|| format!("status {status}")), describe(.description))]
    Rejected {
        status: u16,
        error: Option<String>,
        description: Option<String>,
    },
    #[error("The service broker returned a malformed response: {0}")]
    Malformed(String),
    #[error("The service broker's response is larger than {0} bytes")]
    TooLarge(usize),
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl OsbError {
    /// Whether the spec asks for orphan mitigation after a provision or bind that
    /// failed this way: the broker may have made the resource anyway.
    pub fn needs_orphan_mitigation(&self) -> bool {
        match self {
            OsbError::Timeout(_) | OsbError::Malformed(_) | OsbError::TooLarge(_) => true,
            OsbError::BadStatus { status, .. } => {
                *status >= 500 || *status == 200 || *status == 201
            }
            OsbError::Unreachable(_) | OsbError::Rejected { .. } => false,
        }
    }
}

/// Who the platform acts for (`X-Broker-API-Originating-Identity`).
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
}

/// A broker's address and credentials, and the HTTP client calls go through.
pub struct Broker<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    /// Each call's bound.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub services: Vec<CatalogService>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogService {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub bindable: bool,
    #[serde(default)]
    pub instances_retrievable: bool,
    #[serde(default)]
    pub bindings_retrievable: bool,
    #[serde(default)]
    pub plan_updateable: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    pub plans: Vec<CatalogPlan>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogPlan {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub free: Option<bool>,
    pub bindable: Option<bool>,
    pub plan_updateable: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// What a provision, update, deprovision or unbind came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done (200, 201; for deletes also 410 Gone), with the dashboard URL if any.
    Done { dashboard_url: Option<String> },
    /// The broker goes on asynchronously (202): poll `last_operation`.
    Async { operation: Option<String> },
}

/// What a binding gives the app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credentials {
    pub credentials: Map<String, Value>,
    pub syslog_drain_url: Option<String>,
    pub route_service_url: Option<String>,
    pub volume_mounts: Vec<Value>,
    /// The parameters the binding was made with (a fetched binding's).
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BindOutcome {
    Done(Credentials),
    Async { operation: Option<String> },
}

/// What a binding is for (its `bind_resource`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BindResource<'a> {
    /// An app (its guid).
    App(&'a str),
    /// A route, for a route service: `host.domain/path`.
    Route(&'a str),
    /// A service key.
    Key,
}

/// A `last_operation` answer.
#[derive(Debug, Clone, PartialEq)]
pub enum LastOperation {
    InProgress {
        description: Option<String>,
        retry_after: Option<Duration>,
    },
    Succeeded {
        description: Option<String>,
    },
    Failed {
        description: Option<String>,
    },
    /// 410: the resource is gone (the success of a delete).
    Gone,
}

/// The service and plan a call is about (catalog ids).
#[derive(Debug, Clone, Copy)]
pub struct PlanIds<'a> {
    pub service_id: &'a str,
    pub plan_id: &'a str,
}

/// Where an instance lives (the `context` the broker gets).
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub organization_guid: &'a str,
    pub space_guid: &'a str,
    pub instance_name: &'a str,
}

impl Context<'_> {
    fn json(&self) -> Value {
        json!({
            "platform": "cloudfoundry",
            "organization_guid": self.organization_guid,
            "space_guid": self.space_guid,
            "instance_name": self.instance_name,
        })
    }
}

#[derive(Deserialize, Default)]
struct BrokerError {
    error: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, Default)]
struct AsyncBody {
    operation: Option<String>,
    dashboard_url: Option<String>,
}

#[derive(Deserialize)]
struct LastOperationBody {
    state: String,
    description: Option<String>,
}

#[derive(Deserialize, Default)]
struct BindingBody {
    credentials: Option<Map<String, Value>>,
    syslog_drain_url: Option<String>,
    route_service_url: Option<String>,
    volume_mounts: Option<Vec<Value>>,
    parameters: Option<Map<String, Value>>,
}

impl From<BindingBody> for Credentials {
    fn from(b: BindingBody) -> Credentials {
        Credentials {
            credentials: b.credentials.unwrap_or_default(),
            syslog_drain_url: b.syslog_drain_url,
            route_service_url: b.route_service_url,
            volume_mounts: b.volume_mounts.unwrap_or_default(),
            parameters: b.parameters.unwrap_or_default(),
        }
    }
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    fn parse<T: DeserializeOwned>(&self) -> Result<T, OsbError> {
        serde_json::from_slice(&self.body).map_err(|e| OsbError::Malformed(e.to_string()))
    }

    /// A body that may be empty (`{}`) but must otherwise be the JSON of `T`.
    fn parse_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, OsbError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        self.parse()
    }

    /// The error of a status the call does not treat as success.
    fn error(&self) -> OsbError {
        let body: BrokerError = serde_json::from_slice(&self.body).unwrap_or_default();
        let status = self.status.as_u16();
        if self.status.is_client_error() {
            OsbError::Rejected {
                status,
                error: body.error,
                description: body.description,
            }
        } else {
            OsbError::BadStatus {
                status,
                description: body.description,
            }
        }
    }
}

impl Broker<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        identity: Option<&Identity>,
        limit: usize,
    ) -> Result<Reply, OsbError> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method, &url)
            .query(query)
            .timeout(self.timeout)
            .basic_auth(self.username, Some(self.password))
            .header("X-Broker-API-Version", API_VERSION)
            .header(
                "X-Broker-API-Request-Identity",
                uuid::Uuid::new_v4().to_string(),
            );
        if let Some(identity) = identity {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(json!({"user_id": identity.user_id}).to_string());
            request = request.header(
                "X-Broker-API-Originating-Identity",
                format!("cloudfoundry {encoded}"),
            );
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let send_and_read = async {
            let mut response = request.send().await.map_err(|e| self.transport(e))?;
            let status = response.status();
            let retry_after = retry_after(
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            );
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
                if body.len() + chunk.len() > limit {
                    return Err(OsbError::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Reply {
                status,
                retry_after,
                body,
            })
        };
        // reqwest's timeout covers the body too; this bounds the whole exchange anyway.
        tokio::time::timeout(self.timeout, send_and_read)
            .await
            .map_err(|_| OsbError::Timeout(self.timeout))?
    }

    fn transport(&self, e: reqwest::Error) -> OsbError {
        if e.is_timeout() {
            return OsbError::Timeout(self.timeout);
        }
        // Without the URL: it is the operator's, but the cause chain says enough.
        let e = e.without_url();
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        OsbError::Unreachable(cause)
    }

    /// `GET /v2/catalog`.
    pub async fn catalog(&self) -> Result<Catalog, OsbError> {
        let reply = self
            .call(
                reqwest::Method::GET,
                "/v2/catalog",
                &[],
                None,
                None,
                MAX_CATALOG_BYTES,
            )
            .await?;
        catalog_reply(&reply)
    }

    /// `PUT /v2/service_instances/:id?accepts_incomplete=true`.
    pub async fn provision(
        &self,
        instance_id: &str,
        ids: PlanIds<'_>,
        context: Context<'_>,
        parameters: Option<&Value>,
        identity: &Identity,
    ) -> Result<Outcome, OsbError> {
        let mut body = json!({
            "service_id": ids.service_id,
            "plan_id": ids.plan_id,
            "organization_guid": context.organization_guid,
            "space_guid": context.space_guid,
            "context": context.json(),
        });
        if let Some(parameters) = parameters {
            body["parameters"] = parameters.clone();
        }
        let reply = self
            .call(
                reqwest::Method::PUT,
                &format!("/v2/service_instances/{instance_id}"),
                &[("accepts_incomplete", "true")],
                Some(&body),
                Some(identity),
                MAX_BODY_BYTES,
            )
            .await?;
        instance_outcome(&reply, false)
    }

    /// `PATCH /v2/service_instances/:id?accepts_incomplete=true`: new parameters on the
    /// same plan.
    pub async fn update(
        &self,
        instance_id: &str,
        ids: PlanIds<'_>,
        context: Context<'_>,
        parameters: Option<&Value>,
        identity: &Identity,
    ) -> Result<Outcome, OsbError> {
        let mut body = json!({
            "service_id": ids.service_id,
            "plan_id": ids.plan_id,
            "context": context.json(),
            "previous_values": {
                "service_id": ids.service_id,
                "plan_id": ids.plan_id,
                "organization_id": context.organization_guid,
                "space_id": context.space_guid,
            },
        });
        if let Some(parameters) = parameters {
            body["parameters"] = parameters.clone();
        }
        let reply = self
            .call(
                reqwest::Method::PATCH,
                &format!("/v2/service_instances/{instance_id}"),
                &[("accepts_incomplete", "true")],
                Some(&body),
                Some(identity),
                MAX_BODY_BYTES,
            )
            .await?;
        instance_outcome(&reply, false)
    }

    /// `DELETE /v2/service_instances/:id?service_id&plan_id&accepts_incomplete=true`
    /// (410 Gone is done).
    pub async fn deprovision(
        &self,
        instance_id: &str,
        ids: PlanIds<'_>,
        identity: Option<&Identity>,
    ) -> Result<Outcome, OsbError> {
        let reply = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v2/service_instances/{instance_id}"),
                &[
                    ("service_id", ids.service_id),
                    ("plan_id", ids.plan_id),
                    ("accepts_incomplete", "true"),
                ],
                None,
                identity,
                MAX_BODY_BYTES,
            )
            .await?;
        instance_outcome(&reply, true)
    }

    /// `PUT /v2/service_instances/:id/service_bindings/:bid?accepts_incomplete=true`
    /// for an app, a route or a service key.
    #[allow(clippy::too_many_arguments)]
    pub async fn bind(
        &self,
        instance_id: &str,
        binding_id: &str,
        ids: PlanIds<'_>,
        context: Context<'_>,
        resource: BindResource<'_>,
        parameters: Option<&Value>,
        identity: &Identity,
    ) -> Result<BindOutcome, OsbError> {
        let mut body = json!({
            "service_id": ids.service_id,
            "plan_id": ids.plan_id,
            "context": context.json(),
            "bind_resource": {},
        });
        match resource {
            BindResource::App(app_guid) => {
                body["app_guid"] = json!(app_guid);
                body["bind_resource"] = json!({"app_guid": app_guid});
            }
            BindResource::Route(route) => body["bind_resource"] = json!({"route": route}),
            BindResource::Key => {}
        }
        if let Some(parameters) = parameters {
            body["parameters"] = parameters.clone();
        }
        let reply = self
            .call(
                reqwest::Method::PUT,
                &format!("/v2/service_instances/{instance_id}/service_bindings/{binding_id}"),
                &[("accepts_incomplete", "true")],
                Some(&body),
                Some(identity),
                MAX_BODY_BYTES,
            )
            .await?;
        bind_reply(&reply)
    }

    /// `GET /v2/service_instances/:id/service_bindings/:bid` (after an async bind).
    pub async fn fetch_binding(
        &self,
        instance_id: &str,
        binding_id: &str,
        ids: PlanIds<'_>,
    ) -> Result<Credentials, OsbError> {
        let reply = self
            .call(
                reqwest::Method::GET,
                &format!("/v2/service_instances/{instance_id}/service_bindings/{binding_id}"),
                &[("service_id", ids.service_id), ("plan_id", ids.plan_id)],
                None,
                None,
                MAX_BODY_BYTES,
            )
            .await?;
        fetch_binding_reply(&reply)
    }

    /// `DELETE /v2/service_instances/:id/service_bindings/:bid?...` (410 Gone is done).
    pub async fn unbind(
        &self,
        instance_id: &str,
        binding_id: &str,
        ids: PlanIds<'_>,
        identity: Option<&Identity>,
    ) -> Result<Outcome, OsbError> {
        let reply = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v2/service_instances/{instance_id}/service_bindings/{binding_id}"),
                &[
                    ("service_id", ids.service_id),
                    ("plan_id", ids.plan_id),
                    ("accepts_incomplete", "true"),
                ],
                None,
                identity,
                MAX_BODY_BYTES,
            )
            .await?;
        instance_outcome(&reply, true)
    }

    /// `GET .../last_operation` of an instance, or of one of its bindings.
    pub async fn last_operation(
        &self,
        instance_id: &str,
        binding_id: Option<&str>,
        ids: PlanIds<'_>,
        operation: Option<&str>,
    ) -> Result<LastOperation, OsbError> {
        let path = match binding_id {
            Some(b) => {
                format!("/v2/service_instances/{instance_id}/service_bindings/{b}/last_operation")
            }
            None => format!("/v2/service_instances/{instance_id}/last_operation"),
        };
        let mut query = vec![("service_id", ids.service_id), ("plan_id", ids.plan_id)];
        if let Some(operation) = operation {
            query.push(("operation", operation));
        }
        let reply = self
            .call(
                reqwest::Method::GET,
                &path,
                &query,
                None,
                None,
                MAX_BODY_BYTES,
            )
            .await?;
        last_operation_reply(&reply)
    }
}

/// `Retry-After` in seconds (the only form the OSB spec uses); anything else is none.
pub(crate) fn retry_after(header: Option<&str>) -> Option<Duration> {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The catalog in a `GET /v2/catalog` answer.
pub(crate) fn catalog_reply(reply: &Reply) -> Result<Catalog, OsbError> {
    if reply.status != StatusCode::OK {
        return Err(reply.error());
    }
    reply.parse()
}

/// A bind answer: credentials (200, 201), or an operation to poll (202).
pub(crate) fn bind_reply(reply: &Reply) -> Result<BindOutcome, OsbError> {
    match reply.status {
        StatusCode::OK | StatusCode::CREATED => {
            let body: BindingBody = reply.parse().map_err(|_| OsbError::BadStatus {
                status: reply.status.as_u16(),
                description: Some("the binding is not valid JSON".into()),
            })?;
            Ok(BindOutcome::Done(body.into()))
        }
        StatusCode::ACCEPTED => {
            let body: AsyncBody = reply.parse_or_default()?;
            Ok(BindOutcome::Async {
                operation: body.operation,
            })
        }
        _ => Err(reply.error()),
    }
}

/// The credentials of a fetched binding.
pub(crate) fn fetch_binding_reply(reply: &Reply) -> Result<Credentials, OsbError> {
    if reply.status != StatusCode::OK {
        return Err(reply.error());
    }
    Ok(reply.parse::<BindingBody>()?.into())
}

/// A `last_operation` answer.
pub(crate) fn last_operation_reply(reply: &Reply) -> Result<LastOperation, OsbError> {
    match reply.status {
        StatusCode::OK => {
            let body: LastOperationBody = reply.parse()?;
            match body.state.as_str() {
                "in progress" => Ok(LastOperation::InProgress {
                    description: body.description,
                    retry_after: reply.retry_after,
                }),
                "succeeded" => Ok(LastOperation::Succeeded {
                    description: body.description,
                }),
                "failed" => Ok(LastOperation::Failed {
                    description: body.description,
                }),
                other => Err(OsbError::Malformed(format!(
                    "unknown last operation state {other:?}"
                ))),
            }
        }
        StatusCode::GONE => Ok(LastOperation::Gone),
        _ => Err(reply.error()),
    }
}

/// Provision, update, deprovision and unbind answers: 200/201 done, 202 async; for
/// deletes 410 Gone is done too.
pub(crate) fn instance_outcome(reply: &Reply, delete: bool) -> Result<Outcome, OsbError> {
    match reply.status {
        StatusCode::OK | StatusCode::CREATED => {
            let body: AsyncBody = reply.parse_or_default().map_err(|_| OsbError::BadStatus {
                status: reply.status.as_u16(),
                description: Some("the response is not valid JSON".into()),
            })?;
            Ok(Outcome::Done {
                dashboard_url: body.dashboard_url,
            })
        }
        StatusCode::GONE if delete => Ok(Outcome::Done {
            dashboard_url: None,
        }),
        StatusCode::ACCEPTED => {
            let body: AsyncBody = reply.parse_or_default()?;
            Ok(Outcome::Async {
                operation: body.operation,
            })
        }
        _ => Err(reply.error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};

    /// A broker on loopback that answers every request with `status` and `body` (or
    /// never, for `None`), and records what it was sent.
    async fn broker(
        answer: Option<(u16, &'static str)>,
    ) -> (String, Arc<Mutex<Vec<(String, HeaderMap)>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let seen = recorded.clone();
            async move {
                let target = format!("{} {}", request.method(), request.uri());
                seen.lock()
                    .unwrap()
                    .push((target, request.headers().clone()));
                match answer {
                    Some((status, body)) => (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("retry-after", "7")],
                        body,
                    )
                        .into_response(),
                    None => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        "late".into_response()
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    const IDS: PlanIds<'static> = PlanIds {
        service_id: "svc",
        plan_id: "plan",
    };
    const CONTEXT: Context<'static> = Context {
        organization_guid: "org",
        space_guid: "space",
        instance_name: "db",
    };

    async fn provision(answer: Option<(u16, &'static str)>) -> Result<Outcome, OsbError> {
        let (url, _) = broker(answer).await;
        let http = reqwest::Client::new();
        let client = Broker {
            http: &http,
            url: &url,
            username: "u",
            password: "p",
            timeout: Duration::from_millis(500),
        };
        let identity = Identity {
            user_id: "user-1".into(),
        };
        client.provision("i1", IDS, CONTEXT, None, &identity).await
    }

    #[tokio::test]
    async fn requests_carry_the_platform_headers() {
        let (url, seen) = broker(Some((201, "{}"))).await;
        let http = reqwest::Client::new();
        let client = Broker {
            http: &http,
            url: &url,
            username: "u",
            password: "p",
            timeout: Duration::from_secs(5),
        };
        let identity = Identity {
            user_id: "user-1".into(),
        };
        client
            .provision("i1", IDS, CONTEXT, Some(&json!({"a": 1})), &identity)
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        let (target, headers) = &seen[0];
        assert_eq!(
            target,
            "PUT /v2/service_instances/i1?accepts_incomplete=true"
        );
        assert_eq!(headers["x-broker-api-version"], "2.17");
        assert_eq!(headers["authorization"], "Basic dTpw");
        let identity = headers["x-broker-api-originating-identity"]
            .to_str()
            .unwrap();
        let encoded = identity.strip_prefix("cloudfoundry ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap(),
            json!({"user_id": "user-1"})
        );
        let request_id = headers["x-broker-api-request-identity"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(request_id).is_ok());
    }

    #[tokio::test]
    async fn provision_statuses_map_as_the_spec_says() {
        assert_eq!(
            provision(Some((201, r#"{"dashboard_url": "https://d"}"#)))
                .await
                .unwrap(),
            Outcome::Done {
                dashboard_url: Some("https://d".into())
            }
        );
        assert_eq!(
            provision(Some((200, ""))).await.unwrap(),
            Outcome::Done {
                dashboard_url: None
            }
        );
        assert_eq!(
            provision(Some((202, r#"{"operation": "op-1"}"#)))
                .await
                .unwrap(),
            Outcome::Async {
                operation: Some("op-1".into())
            }
        );
        let conflict = provision(Some((409, "{}"))).await.unwrap_err();
        assert!(matches!(conflict, OsbError::Rejected { status: 409, .. }));
        assert!(!conflict.needs_orphan_mitigation());
        let required = provision(Some((
            422,
            r#"{"error": "AsyncRequired", "description": "needs async"}"#,
        )))
        .await
        .unwrap_err();
        assert_eq!(
            required.to_string(),
            "The service broker rejected the request: AsyncRequired: needs async"
        );
        for answer in [
            Some((500, "{}")),
            Some((201, "not json")),
            Some((418, "{}")),
            None,
        ] {
            let err = provision(answer).await.unwrap_err();
            let mitigate = !matches!(answer, Some((418, _)));
            assert_eq!(err.needs_orphan_mitigation(), mitigate, "{answer:?}: {err}");
        }
        assert!(matches!(
            provision(None).await.unwrap_err(),
            OsbError::Timeout(_)
        ));
    }

    #[tokio::test]
    async fn last_operation_honours_retry_after_and_gone() {
        let http = reqwest::Client::new();
        for (answer, expected) in [
            (
                (200, r#"{"state": "in progress", "description": "50%"}"#),
                LastOperation::InProgress {
                    description: Some("50%".into()),
                    retry_after: Some(Duration::from_secs(7)),
                },
            ),
            (
                (200, r#"{"state": "failed", "description": "no disk"}"#),
                LastOperation::Failed {
                    description: Some("no disk".into()),
                },
            ),
            ((410, "{}"), LastOperation::Gone),
        ] {
            let (url, seen) = broker(Some(answer)).await;
            let client = Broker {
                http: &http,
                url: &url,
                username: "u",
                password: "p",
                timeout: Duration::from_secs(5),
            };
            let got = client
                .last_operation("i1", None, IDS, Some("op 1"))
                .await
                .unwrap();
            assert_eq!(got, expected);
            assert_eq!(
                seen.lock().unwrap()[0].0,
                "GET /v2/service_instances/i1/last_operation?service_id=svc&plan_id=plan&operation=op+1"
            );
        }
        let (url, _) = broker(Some((200, r#"{"state": "weird"}"#))).await;
        let client = Broker {
            http: &http,
            url: &url,
            username: "u",
            password: "p",
            timeout: Duration::from_secs(5),
        };
        assert!(matches!(
            client.last_operation("i1", None, IDS, None).await,
            Err(OsbError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn bind_returns_credentials_and_deletes_treat_gone_as_done() {
        let http = reqwest::Client::new();
        let (url, seen) = broker(Some((
            201,
            r#"{"credentials": {"uri": "x://y"}, "syslog_drain_url": "syslog://d"}"#,
        )))
        .await;
        let client = Broker {
            http: &http,
            url: &url,
            username: "u",
            password: "p",
            timeout: Duration::from_secs(5),
        };
        let identity = Identity {
            user_id: "u1".into(),
        };
        let BindOutcome::Done(credentials) = client
            .bind(
                "i1",
                "b1",
                IDS,
                CONTEXT,
                BindResource::App("app-1"),
                None,
                &identity,
            )
            .await
            .unwrap()
        else {
            panic!("not done")
        };
        assert_eq!(credentials.credentials["uri"], "x://y");
        assert_eq!(credentials.syslog_drain_url.as_deref(), Some("syslog://d"));
        assert_eq!(
            seen.lock().unwrap()[0].0,
            "PUT /v2/service_instances/i1/service_bindings/b1?accepts_incomplete=true"
        );

        let (url, _) = broker(Some((410, "{}"))).await;
        let client = Broker {
            http: &http,
            url: &url,
            username: "u",
            password: "p",
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            client.unbind("i1", "b1", IDS, None).await.unwrap(),
            Outcome::Done {
                dashboard_url: None
            }
        );
        assert_eq!(
            client.deprovision("i1", IDS, None).await.unwrap(),
            Outcome::Done {
                dashboard_url: None
            }
        );
    }

    #[tokio::test]
    async fn large_bodies_are_refused() {
        static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let big: &'static str = BIG.get_or_init(|| "x".repeat(MAX_BODY_BYTES + 10));
        let err = provision(Some((201, big))).await.unwrap_err();
        assert!(matches!(err, OsbError::TooLarge(_)), "{err}");
    }
}
