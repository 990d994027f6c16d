//! UAA's HTTP API: the token endpoint, the verification keys, the JSON login info the
//! cf CLI reads, and a minimal SCIM `POST /Users`. OAuth errors are written in
//! RFC 6749's `{"error", "error_description"}` shape here and nowhere else.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::{GrantError, TokenError, Uaa};

pub(crate) fn router(uaa: Arc<Uaa>) -> axum::Router {
    axum::Router::new()
        .route("/oauth/token", post(token))
        .route("/token_keys", get(token_keys))
        .route("/token_key", get(token_key))
        .route("/login", get(login))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/Users", post(create_user))
        .with_state(uaa)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn grant_error(e: GrantError) -> Response {
    let description = e.to_string();
    match e {
        GrantError::BadCredentials => oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", &description),
        GrantError::BadClient => oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &description),
        GrantError::InvalidRefreshToken(_) => oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", &description),
        GrantError::InvalidScope(_) => oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &description),
        GrantError::UsernameTaken(_) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": "scim_resource_already_exists", "error_description": description, "message": description })),
        )
            .into_response(),
        GrantError::Uaa(e) => {
            tracing::error!(error = %e, "UAA request failed");
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
        }
    }
}

/// The client of a token request: HTTP basic auth (`cf:`), else the `client_id` and
/// `client_secret` form fields. Only public clients exist, so the secret must be empty.
fn client_id(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<String, GrantError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
    let (id, secret) = match basic {
        Some((_, creds)) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(creds.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(GrantError::BadClient)?;
            let (id, secret) = decoded.split_once(':').ok_or(GrantError::BadClient)?;
            (id.to_string(), secret.to_string())
        }
        None => (
            form.get("client_id")
                .cloned()
                .ok_or(GrantError::BadClient)?,
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if !secret.is_empty() {
        return Err(GrantError::BadClient);
    }
    Ok(id)
}

async fn token(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected a form-encoded body",
        );
    };
    let client = match client_id(&headers, &form) {
        Ok(c) => c,
        Err(e) => return grant_error(e),
    };
    let field = |name: &str| form.get(name).map(String::as_str);
    let result = match field("grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "username and password are required",
                );
            };
            uaa.password_grant(&client, username, password, field("scope"))
                .await
        }
        Some("refresh_token") => {
            let Some(refresh_token) = field("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            uaa.refresh_grant(&client, refresh_token).await
        }
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            )
        }
    };
    match result {
        Ok(tokens) => {
            let mut resp = Json(tokens).into_response();
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            resp
        }
        Err(e) => grant_error(e),
    }
}

async fn token_keys(State(uaa): State<Arc<Uaa>>) -> Response {
    Json(json!({ "keys": [uaa.token_key()] })).into_response()
}

async fn token_key(State(uaa): State<Arc<Uaa>>) -> Response {
    Json(uaa.token_key()).into_response()
}

/// What `GET /login` with `Accept: application/json` tells the cf CLI.
async fn login(State(uaa): State<Arc<Uaa>>) -> Response {
    let url = uaa.url();
    Json(json!({
        "app": { "version": env!("CARGO_PKG_VERSION") },
        "links": { "uaa": url, "login": url, "passwd": "/forgot_password", "register": "/create_account" },
        "zone_name": "uaa",
        "entityID": "uaa",
        "prompts": {
            "username": ["text", "Email"],
            "password": ["password", "Password"],
        },
    }))
    .into_response()
}

async fn openid_configuration(State(uaa): State<Arc<Uaa>>) -> Response {
    let url = uaa.url();
    Json(json!({
        "issuer": format!("{url}/oauth/token"),
        "token_endpoint": format!("{url}/oauth/token"),
        "jwks_uri": format!("{url}/token_keys"),
        "end_session_endpoint": format!("{url}/logout.do"),
        "grant_types_supported": ["password", "refresh_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScimUserRequest {
    user_name: String,
    password: String,
    #[serde(default)]
    emails: Vec<ScimEmail>,
}

#[derive(Debug, Deserialize)]
struct ScimEmail {
    value: String,
}

/// SCIM `POST /Users`, for tokens with `scim.write`.
async fn create_user(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    body: Result<Json<ScimUserRequest>, JsonRejection>,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(TokenError::Missing)
        .and_then(|h| uaa.verifier().verify(h));
    match bearer {
        Ok(claims) if claims.has_scope("scim.write") => {}
        Ok(_) => {
            return oauth_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "scim.write is required",
            )
        }
        Err(e) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", &e.to_string()),
    }
    let invalid = |msg: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_scim_resource", "error_description": msg, "message": msg })),
        )
            .into_response()
    };
    let req = match body {
        Ok(Json(req)) => req,
        Err(e) => return invalid(&e.body_text()),
    };
    if req.user_name.trim().is_empty() || req.password.is_empty() {
        return invalid("userName and password are required");
    }
    let email = req
        .emails
        .first()
        .map_or_else(|| req.user_name.clone(), |e| e.value.clone());
    match uaa.create_user(&req.user_name, &req.password, &email).await {
        Ok(id) => (
            StatusCode::CREATED,
            Json(json!({
                "id": id,
                "userName": req.user_name,
                "emails": [{ "value": email, "primary": true }],
                "origin": "uaa",
                "zoneId": "uaa",
                "active": true,
                "verified": true,
                "meta": { "version": 0 },
                "schemas": ["urn:scim:schemas:core:1.0"],
            })),
        )
            .into_response(),
        Err(e) => grant_error(e),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use crate::tests::open_test_uaa;

    use super::*;

    async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn form_post(body: &str, basic: Option<&str>) -> Request<Body> {
        let mut req = Request::post("/oauth/token")
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(b) = basic {
            req = req.header("Authorization", b);
        }
        req.body(Body::from(body.to_string())).unwrap()
    }

    #[tokio::test]
    async fn cf_cli_login_refresh_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let app = uaa.router();
        let cf = Some("Basic Y2Y6"); // base64("cf:")

        let (status, body) = send(
            &app,
            form_post("grant_type=password&username=admin&password=s3cret", cf),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "bearer");
        assert!(body["scope"]
            .as_str()
            .unwrap()
            .contains("cloud_controller.admin"));
        assert!(body["expires_in"].as_u64().unwrap() > 0);
        let access = body["access_token"].as_str().unwrap().to_string();
        assert!(uaa.verifier().verify(&access).is_ok());

        let refresh = body["refresh_token"].as_str().unwrap();
        let (status, body) = send(
            &app,
            form_post(
                &format!(
                    "client_id=cf&client_secret=&grant_type=refresh_token&refresh_token={refresh}"
                ),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["access_token"].is_string());

        let (status, body) = send(
            &app,
            form_post("grant_type=password&username=admin&password=bad", cf),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(body["error_description"], "Bad credentials");
        let (status, body) = send(&app, form_post("grant_type=client_credentials", cf)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
        );
        let (status, body) = send(
            &app,
            form_post(
                "grant_type=password&username=admin&password=s3cret",
                Some("Basic ZXZpbDp4"),
            ),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client"))
        );
        let (status, _) = send(
            &app,
            form_post("grant_type=password&username=admin&password=s3cret", None),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = send(
            &app,
            Request::post("/oauth/token")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // A new user through SCIM, then its login.
        let user =
            json!({"userName": "dev", "password": "pw", "emails": [{"value": "dev@example.com"}]});
        let scim = |token: Option<&str>| {
            let mut req = Request::post("/Users").header("Content-Type", "application/json");
            if let Some(t) = token {
                req = req.header("Authorization", format!("bearer {t}"));
            }
            req.body(Body::from(user.to_string())).unwrap()
        };
        assert_eq!(send(&app, scim(None)).await.0, StatusCode::UNAUTHORIZED);
        let (status, body) = send(&app, scim(Some(&access))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["userName"], "dev");
        assert_eq!(
            send(&app, scim(Some(&access))).await.0,
            StatusCode::CONFLICT
        );
        let (status, body) = send(
            &app,
            form_post("grant_type=password&username=dev&password=pw", cf),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let dev = body["access_token"].as_str().unwrap();
        assert_eq!(send(&app, scim(Some(dev))).await.0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn keys_and_login_info_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let app = uaa.router();
        let (status, body) = send(
            &app,
            Request::get("/token_keys").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let key = &body["keys"][0];
        assert_eq!(
            (
                key["kty"].as_str(),
                key["alg"].as_str(),
                key["use"].as_str()
            ),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        assert_eq!(key["kid"], "key-1");
        let keys: Vec<crate::TokenKey> = serde_json::from_value(body["keys"].clone()).unwrap();
        let verifier =
            crate::TokenVerifier::from_keys("http://uaa.test/oauth/token", &keys).unwrap();
        let token = uaa
            .password_grant("cf", "admin", "s3cret", None)
            .await
            .unwrap()
            .access_token;
        assert!(verifier.verify(&token).is_ok());

        let (_, body) = send(
            &app,
            Request::get("/token_key").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(body["kid"], "key-1");
        let (_, body) = send(&app, Request::get("/login").body(Body::empty()).unwrap()).await;
        assert_eq!(body["prompts"]["password"][0], "password");
        assert_eq!(body["links"]["uaa"], "http://uaa.test");
    }
}
