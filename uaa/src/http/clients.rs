//! `/oauth/clients`: list, get, create, update, delete and change the secret of OAuth
//! clients, for tokens with `clients.read` / `clients.write` (`clients.secret` for
//! secrets), `clients.admin` or `uaa.admin`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{caller, require_scope, scim_error, ResourceKind};
use crate::{ClientDetails, ScimError, Uaa};

const READ: &[&str] = &["clients.read", "clients.admin", "uaa.admin"];
const WRITE: &[&str] = &["clients.write", "clients.admin", "uaa.admin"];
const SECRET: &[&str] = &["clients.secret", "clients.admin", "uaa.admin"];

pub(super) fn routes() -> axum::Router<Arc<Uaa>> {
    axum::Router::new()
        .route("/oauth/clients", get(list).post(create))
        .route(
            "/oauth/clients/{id}",
            get(get_one).put(update).delete(remove),
        )
        .route("/oauth/clients/{id}/secret", put(change_secret))
}

fn error(e: ScimError) -> Response {
    scim_error(e, ResourceKind::Client)
}

async fn authorized(uaa: &Uaa, headers: &HeaderMap, scopes: &[&str]) -> Result<(), Response> {
    let claims = caller(uaa, headers).await?;
    require_scope(&claims, scopes)
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    b.map(|Json(b)| b)
        .map_err(|e| error(ScimError::Invalid(e.body_text())))
}

async fn list(State(uaa): State<Arc<Uaa>>, headers: HeaderMap) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, READ).await {
        return resp;
    }
    match uaa.list_clients().await {
        Ok(clients) => Json(json!({
            "resources": clients,
            "startIndex": 1,
            "itemsPerPage": clients.len(),
            "totalResults": clients.len(),
            "schemas": ["http://cloudfoundry.org/schema/scim/oauth-clients-1.0"],
        }))
        .into_response(),
        Err(e) => error(ScimError::Uaa(e)),
    }
}

async fn get_one(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, READ).await {
        return resp;
    }
    match uaa.get_client(&id).await {
        Ok(client) => Json(client).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(flatten)]
    details: ClientDetails,
    #[serde(default)]
    client_secret: String,
}

async fn create(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    b: Result<Json<CreateBody>, JsonRejection>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, WRITE).await {
        return resp;
    }
    let b = match body(b) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match uaa.create_client(b.details, &b.client_secret).await {
        Ok(client) => (StatusCode::CREATED, Json(client)).into_response(),
        Err(e) => error(e),
    }
}

async fn update(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ClientDetails>, JsonRejection>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, WRITE).await {
        return resp;
    }
    let mut details = match body(b) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if !details.client_id.is_empty() && details.client_id != id {
        return error(ScimError::Invalid(
            "client_id does not match the URL".into(),
        ));
    }
    details.client_id = id;
    match uaa.update_client(details).await {
        Ok(client) => Json(client).into_response(),
        Err(e) => error(e),
    }
}

async fn remove(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, WRITE).await {
        return resp;
    }
    match uaa.delete_client(&id).await {
        Ok(client) => Json(client).into_response(),
        Err(e) => error(e),
    }
}

async fn change_secret(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<HashMap<String, String>>, JsonRejection>,
) -> Response {
    if let Err(resp) = authorized(&uaa, &headers, SECRET).await {
        return resp;
    }
    let b = match body(b) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(secret) = b.get("secret") else {
        return error(ScimError::Invalid("secret is required".into()));
    };
    match uaa.change_client_secret(&id, secret).await {
        Ok(()) => Json(json!({ "status": "ok", "message": "secret updated" })).into_response(),
        Err(e) => error(e),
    }
}
