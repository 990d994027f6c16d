//! The OSB API over HTTP: the routes, the checks every request passes (basic auth, then
//! `X-Broker-API-Version`), request bodies parsed into [`crate::postgres`]'s types, and
//! every [`BrokerError`] turned into the spec's status and `{"error", "description"}`
//! body, here and nowhere else.
//!
//! The wire types are the broker's own: the controller's OSB client (`wf_controller::osb`)
//! reads broker answers leniently, where a server must check what it is sent.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::postgres::{Bind, Bound, Deleted, Postgres, Provision, Provisioned};
use crate::{catalog, BrokerError};

/// The oldest API version this broker serves: fetching instances and bindings came in
/// 2.14. Any later 2.x is served as 2.17.
const MIN_MINOR_VERSION: u32 = 14;
/// Longest instance or binding id taken (the platform's are GUIDs).
const MAX_ID_LEN: usize = 255;

/// The user and password the platform must send, kept as a digest so that checking a
/// request takes the same time however much of it matches.
pub(crate) struct BasicAuth {
    digest: [u8; 32],
}

impl BasicAuth {
    pub(crate) fn new(username: &str, password: &str) -> BasicAuth {
        BasicAuth {
            digest: Sha256::digest(format!("{username}:{password}").as_bytes()).into(),
        }
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            });
        given.is_some_and(|pair| <[u8; 32]>::from(Sha256::digest(&pair)) == self.digest)
    }
}

#[derive(Clone)]
struct AppState {
    postgres: Arc<Postgres>,
    auth: Arc<BasicAuth>,
}

pub(crate) fn router(postgres: Arc<Postgres>, auth: Arc<BasicAuth>) -> Router {
    let state = AppState { postgres, auth };
    Router::new()
        .route("/v2/catalog", get(get_catalog))
        .route(
            "/v2/service_instances/{instance_id}",
            get(fetch_instance)
                .put(provision)
                .patch(update)
                .delete(deprovision),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}",
            get(fetch_binding).put(bind).delete(unbind),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), check_request))
        .with_state(state)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    description: String,
}

fn error_response(status: StatusCode, error: &str, description: String) -> Response {
    (status, Json(ErrorBody { error, description })).into_response()
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            BrokerError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            BrokerError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            BrokerError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            BrokerError::Config(_) | BrokerError::Database(_) | BrokerError::Timeout(_) => {
                tracing::error!(error = %self, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
            }
        };
        error_response(status, error, self.to_string())
    }
}

/// Basic auth first (401 says nothing else), then the API version (412).
async fn check_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.auth.accepts(request.headers()) {
        let mut response = error_response(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the broker's basic auth credentials are required".into(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"wf-broker\""),
        );
        return response;
    }
    if let Err(description) = check_version(request.headers().get("X-Broker-API-Version")) {
        return error_response(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            description,
        );
    }
    next.run(request).await
}

fn check_version(value: Option<&HeaderValue>) -> Result<(), String> {
    let Some(value) = value else {
        return Err(format!(
            "the X-Broker-API-Version header is missing; this broker serves 2.{MIN_MINOR_VERSION} and later"
        ));
    };
    let text = value.to_str().unwrap_or_default().trim();
    let version = text
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match version {
        Some((2, minor)) if minor >= MIN_MINOR_VERSION => Ok(()),
        _ => Err(format!(
            "X-Broker-API-Version {text:?} is not supported; this broker serves 2.{MIN_MINOR_VERSION} and later"
        )),
    }
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NotFound", "no such endpoint".into())
}

async fn get_catalog() -> Json<Value> {
    Json(catalog::catalog())
}

fn check_id(kind: &str, id: &str) -> Result<(), BrokerError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(BrokerError::BadRequest(format!(
            "the {kind} id must be 1 to {MAX_ID_LEN} printable characters"
        )));
    }
    Ok(())
}

fn instance_id(path: Result<Path<String>, PathRejection>) -> Result<String, BrokerError> {
    let Path(id) = path.map_err(|e| BrokerError::BadRequest(e.body_text()))?;
    check_id("service instance", &id)?;
    Ok(id)
}

fn binding_ids(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), BrokerError> {
    let Path((instance_id, binding_id)) =
        path.map_err(|e| BrokerError::BadRequest(e.body_text()))?;
    check_id("service instance", &instance_id)?;
    check_id("service binding", &binding_id)?;
    Ok((instance_id, binding_id))
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, BrokerError> {
    serde_json::from_slice(body)
        .map_err(|e| BrokerError::BadRequest(format!("the request body is not valid: {e}")))
}

/// The plan takes no parameters: `parameters` may be absent, null or `{}` only.
fn check_no_parameters(parameters: &Option<Value>) -> Result<(), BrokerError> {
    match parameters {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) if map.is_empty() => Ok(()),
        Some(_) => Err(BrokerError::BadRequest(format!(
            "the {} plan takes no parameters",
            catalog::PLAN_NAME
        ))),
    }
}

/// `service_id` and `plan_id` of a query: required on deletes, optional on fetches,
/// and the catalog's when given.
#[derive(Deserialize)]
struct IdsQuery {
    service_id: Option<String>,
    plan_id: Option<String>,
}

impl IdsQuery {
    fn check(
        query: Result<Query<IdsQuery>, QueryRejection>,
        required: bool,
    ) -> Result<(), BrokerError> {
        let Query(query) = query.map_err(|e| BrokerError::BadRequest(e.body_text()))?;
        match (query.service_id, query.plan_id) {
            (Some(service_id), Some(plan_id)) => {
                catalog::check_ids(&service_id, &plan_id).map_err(BrokerError::BadRequest)
            }
            (None, None) if !required => Ok(()),
            _ => Err(BrokerError::BadRequest(
                "the service_id and plan_id query parameters are required".into(),
            )),
        }
    }
}

#[derive(Deserialize)]
struct ProvisionBody {
    service_id: String,
    plan_id: String,
    organization_guid: String,
    space_guid: String,
    #[serde(default)]
    parameters: Option<Value>,
}

fn empty(status: StatusCode) -> Response {
    (status, Json(Value::Object(Map::new()))).into_response()
}

async fn provision(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, BrokerError> {
    let instance_id = instance_id(path)?;
    let body: ProvisionBody = parse_body(&body)?;
    check_no_parameters(&body.parameters)?;
    let request = Provision {
        service_id: body.service_id,
        plan_id: body.plan_id,
        organization_guid: body.organization_guid,
        space_guid: body.space_guid,
    };
    Ok(
        match state.postgres.provision(&instance_id, &request).await? {
            Provisioned::Created => empty(StatusCode::CREATED),
            Provisioned::Exists => empty(StatusCode::OK),
        },
    )
}

fn deleted(outcome: Deleted) -> Response {
    match outcome {
        Deleted::Deleted => empty(StatusCode::OK),
        Deleted::Gone => empty(StatusCode::GONE),
    }
}

async fn deprovision(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<IdsQuery>, QueryRejection>,
) -> Result<Response, BrokerError> {
    let instance_id = instance_id(path)?;
    IdsQuery::check(query, true)?;
    Ok(deleted(state.postgres.deprovision(&instance_id).await?))
}

async fn fetch_instance(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<IdsQuery>, QueryRejection>,
) -> Result<Response, BrokerError> {
    let instance_id = instance_id(path)?;
    IdsQuery::check(query, false)?;
    match state.postgres.instance(&instance_id).await? {
        Some(instance) => Ok(Json(instance).into_response()),
        None => Err(BrokerError::NotFound(format!(
            "no service instance {instance_id}"
        ))),
    }
}

#[derive(Deserialize)]
struct UpdateBody {
    service_id: String,
    #[serde(default)]
    plan_id: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// An update can change nothing (one plan, no parameters): 200 for a known instance,
/// so that `wf update-service` without changes succeeds and one with `-c` is told why not.
async fn update(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, BrokerError> {
    let instance_id = instance_id(path)?;
    let body: UpdateBody = parse_body(&body)?;
    check_no_parameters(&body.parameters)?;
    let plan_id = body.plan_id.as_deref().unwrap_or(catalog::PLAN_ID);
    catalog::check_ids(&body.service_id, plan_id).map_err(BrokerError::BadRequest)?;
    match state.postgres.instance(&instance_id).await? {
        Some(_) => Ok(empty(StatusCode::OK)),
        None => Err(BrokerError::NotFound(format!(
            "no service instance {instance_id}"
        ))),
    }
}

#[derive(Deserialize)]
struct BindBody {
    service_id: String,
    plan_id: String,
    #[serde(default)]
    app_guid: Option<String>,
    #[serde(default)]
    bind_resource: Option<BindResource>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct BindResource {
    #[serde(default)]
    app_guid: Option<String>,
}

async fn bind(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, BrokerError> {
    let (instance_id, binding_id) = binding_ids(path)?;
    let body: BindBody = parse_body(&body)?;
    check_no_parameters(&body.parameters)?;
    let request = Bind {
        service_id: body.service_id,
        plan_id: body.plan_id,
        // `bind_resource.app_guid` since 2.10; the top-level field is deprecated.
        app_guid: body
            .bind_resource
            .and_then(|resource| resource.app_guid)
            .or(body.app_guid),
    };
    let (status, credentials) = match state
        .postgres
        .bind(&instance_id, &binding_id, &request)
        .await?
    {
        Bound::Created(credentials) => (StatusCode::CREATED, credentials),
        Bound::Exists(credentials) => (StatusCode::OK, credentials),
    };
    Ok((status, Json(json!({ "credentials": credentials }))).into_response())
}

async fn unbind(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<IdsQuery>, QueryRejection>,
) -> Result<Response, BrokerError> {
    let (instance_id, binding_id) = binding_ids(path)?;
    IdsQuery::check(query, true)?;
    Ok(deleted(
        state.postgres.unbind(&instance_id, &binding_id).await?,
    ))
}

async fn fetch_binding(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<IdsQuery>, QueryRejection>,
) -> Result<Response, BrokerError> {
    let (instance_id, binding_id) = binding_ids(path)?;
    IdsQuery::check(query, false)?;
    match state.postgres.binding(&instance_id, &binding_id).await? {
        Some(credentials) => Ok(Json(json!({ "credentials": credentials })).into_response()),
        None => Err(BrokerError::NotFound(format!(
            "no service binding {binding_id} of service instance {instance_id}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    #[test]
    fn basic_auth_takes_the_right_pair_only() {
        let auth = BasicAuth::new("broker", "s3cret");
        let encode = |pair: &str| base64::engine::general_purpose::STANDARD.encode(pair);
        assert!(auth.accepts(&headers(&format!("Basic {}", encode("broker:s3cret")))));
        assert!(auth.accepts(&headers(&format!("basic {}", encode("broker:s3cret")))));
        for bad in [
            format!("Basic {}", encode("broker:wrong")),
            format!("Basic {}", encode("other:s3cret")),
            format!("Bearer {}", encode("broker:s3cret")),
            "Basic !!!".to_string(),
            "Basic".to_string(),
        ] {
            assert!(!auth.accepts(&headers(&bad)), "{bad}");
        }
        assert!(!auth.accepts(&HeaderMap::new()));
    }

    #[test]
    fn api_versions_from_2_14_are_served() {
        let check = |v: &str| check_version(Some(&HeaderValue::from_str(v).unwrap()));
        assert!(check("2.17").is_ok());
        assert!(check("2.14").is_ok());
        assert!(check("2.99").is_ok());
        for bad in ["2.13", "1.17", "3.0", "2", "two.seventeen", ""] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert!(check_version(None).unwrap_err().contains("missing"));
    }

    #[test]
    fn ids_and_parameters_are_checked() {
        assert!(check_id("service instance", "a-guid").is_ok());
        assert!(check_id("service instance", "").is_err());
        assert!(check_id("service instance", &"x".repeat(256)).is_err());
        assert!(check_id("service instance", "a\nb").is_err());
        assert!(check_no_parameters(&None).is_ok());
        assert!(check_no_parameters(&Some(json!({}))).is_ok());
        assert!(check_no_parameters(&Some(json!({"size": 1}))).is_err());
        assert!(check_no_parameters(&Some(json!([1]))).is_err());
    }

    #[test]
    fn errors_have_the_spec_shape() {
        let response = BrokerError::Conflict("exists".into()).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let response = BrokerError::BadRequest("bad".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: ProvisionBody = parse_body(&Bytes::from_static(
            br#"{"service_id":"s","plan_id":"p","organization_guid":"o","space_guid":"g","context":{}}"#,
        ))
        .unwrap();
        assert_eq!(body.plan_id, "p");
        assert!(matches!(
            parse_body::<ProvisionBody>(&Bytes::from_static(b"{not json")),
            Err(BrokerError::BadRequest(_))
        ));
        assert!(matches!(
            parse_body::<ProvisionBody>(&Bytes::from_static(br#"{"service_id":"s"}"#)),
            Err(BrokerError::BadRequest(_))
        ));
    }
}
