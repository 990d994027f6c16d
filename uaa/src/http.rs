//! UAA's HTTP API: the token endpoint, the verification keys, token checks
//! (`/check_token`, `/introspect`, `/userinfo`), the OpenID discovery document, the
//! browser login and `/oauth/authorize` ([`login`]), SCIM `/Users` and `/Groups`, and
//! `/oauth/clients`.
//! Errors are written in UAA's `{"error", "error_description"}` shape here (and in the
//! submodules through [`scim_error`]) and nowhere else.

mod clients;
mod login;
mod scim;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::clients::Client;
use crate::{Claims, GrantError, ScimError, TokenError, Uaa};

pub(crate) fn router(uaa: Arc<Uaa>) -> axum::Router {
    axum::Router::new()
        .route("/oauth/token", post(token))
        .route("/token_keys", get(token_keys))
        .route("/token_key", get(token_key))
        .route("/check_token", post(check_token))
        .route("/introspect", post(introspect))
        .route("/userinfo", get(userinfo).post(userinfo))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .merge(login::routes())
        .merge(scim::routes())
        .merge(clients::routes())
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

fn server_error(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "UAA request failed");
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "internal error",
    )
}

fn grant_error(e: GrantError) -> Response {
    let description = e.to_string();
    match e {
        GrantError::BadCredentials => {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", &description)
        }
        GrantError::BadClient | GrantError::UnauthorizedGrantType(_) => {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &description)
        }
        GrantError::AccountLocked => {
            oauth_error(StatusCode::UNAUTHORIZED, "unauthorized", &description)
        }
        GrantError::InvalidCode(_) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &description)
        }
        GrantError::InvalidRefreshToken(_) => {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", &description)
        }
        GrantError::InvalidScope(_) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &description)
        }
        GrantError::UsernameTaken(_) => {
            scim_error(ScimError::AlreadyExists(description), ResourceKind::Scim)
        }
        GrantError::Uaa(e) => server_error(&e),
    }
}

/// Which API a [`ScimError`] comes from: UAA names the errors of `/oauth/clients`
/// differently from SCIM's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    Scim,
    Client,
}

pub(crate) fn scim_error(e: ScimError, kind: ResourceKind) -> Response {
    let description = e.to_string();
    let (status, error) = match (&e, kind) {
        (ScimError::NotFound(_), ResourceKind::Scim) => {
            (StatusCode::NOT_FOUND, "scim_resource_not_found")
        }
        (ScimError::AlreadyExists(_), ResourceKind::Scim) => {
            (StatusCode::CONFLICT, "scim_resource_already_exists")
        }
        (ScimError::Invalid(_), ResourceKind::Scim) => {
            (StatusCode::BAD_REQUEST, "invalid_scim_resource")
        }
        (ScimError::NotFound(_), ResourceKind::Client) => (StatusCode::NOT_FOUND, "invalid_client"),
        (ScimError::AlreadyExists(_), ResourceKind::Client) => {
            (StatusCode::CONFLICT, "invalid_client")
        }
        (ScimError::Invalid(_), ResourceKind::Client) => {
            (StatusCode::BAD_REQUEST, "invalid_client")
        }
        (ScimError::InvalidFilter(_), _) => (StatusCode::BAD_REQUEST, "invalid_filter"),
        (ScimError::VersionMismatch, _) => (StatusCode::CONFLICT, "scim_resource_conflict"),
        (ScimError::OldPasswordIncorrect, _) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        (ScimError::Uaa(e), _) => return server_error(e),
    };
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description, "message": description })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The caller of a management endpoint: a valid, unrevoked access token of this UAA
/// (any audience: clients' tokens carry `clients`, `scim`, `uaa` rather than CC's).
pub(crate) async fn caller(uaa: &Uaa, headers: &HeaderMap) -> Result<Claims, Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(TokenError::Missing);
    match header {
        Ok(h) => uaa.checked_claims(h).await.map(|c| c.claims),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", &e.to_string());
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"UAA/oauth\""),
        );
        resp
    })
}

/// 403 unless the token has one of `scopes`.
pub(crate) fn require_scope(claims: &Claims, scopes: &[&str]) -> Result<(), Response> {
    if scopes.iter().any(|s| claims.has_scope(s)) {
        Ok(())
    } else {
        Err(insufficient_scope(scopes))
    }
}

/// 403 `insufficient_scope`, naming the scopes that would do.
pub(crate) fn insufficient_scope(scopes: &[&str]) -> Response {
    let mut resp = (
        StatusCode::FORBIDDEN,
        Json(json!({
            "error": "insufficient_scope",
            "error_description": "Insufficient scope for this resource",
            "scope": scopes.join(" "),
        })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The client id and secret of a request: HTTP basic auth (`cf:`), else, when `form` is
/// given, its `client_id` and `client_secret` fields.
fn client_credentials(
    headers: &HeaderMap,
    form: Option<&HashMap<String, String>>,
) -> Result<(String, String), GrantError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
    match (basic, form) {
        (Some((_, creds)), _) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(creds.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(GrantError::BadClient)?;
            let (id, secret) = decoded.split_once(':').ok_or(GrantError::BadClient)?;
            Ok((id.to_string(), secret.to_string()))
        }
        (None, Some(form)) => Ok((
            form.get("client_id")
                .cloned()
                .ok_or(GrantError::BadClient)?,
            form.get("client_secret").cloned().unwrap_or_default(),
        )),
        (None, None) => Err(GrantError::BadClient),
    }
}

async fn authenticate(
    uaa: &Uaa,
    headers: &HeaderMap,
    form: Option<&HashMap<String, String>>,
) -> Result<Client, Response> {
    let (id, secret) = client_credentials(headers, form).map_err(grant_error)?;
    uaa.authenticated_client(&id, &secret)
        .await
        .map_err(grant_error)
}

fn form_body(
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<HashMap<String, String>, Response> {
    form.map(|Form(f)| f).map_err(|_| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected a form-encoded body",
        )
    })
}

fn no_store(body: impl serde::Serialize) -> Response {
    let mut resp = Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

async fn token(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = match form_body(form) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let client = match authenticate(&uaa, &headers, Some(&form)).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let client = client.id();
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
            uaa.password_grant(client, username, password, field("scope"))
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
            uaa.refresh_grant(client, refresh_token).await
        }
        Some("client_credentials") => uaa.client_credentials_grant(client, field("scope")).await,
        Some("authorization_code") => {
            let Some(code) = field("code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code is required",
                );
            };
            uaa.authorization_code_grant(
                client,
                code,
                field("redirect_uri"),
                field("code_verifier"),
            )
            .await
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
        Ok(tokens) => no_store(tokens),
        Err(e) => grant_error(e),
    }
}

/// JWKS of every verification key, with an ETag so that resource servers can poll cheaply.
async fn token_keys(State(uaa): State<Arc<Uaa>>, headers: HeaderMap) -> Response {
    let body = json!({ "keys": uaa.token_keys() }).to_string();
    let digest = Sha256::digest(body.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, value);
    }
    resp
}

async fn token_key(State(uaa): State<Arc<Uaa>>) -> Response {
    Json(uaa.token_key()).into_response()
}

/// The client of `/check_token` and `/introspect`: basic auth, `uaa.resource` authority.
async fn resource_server(uaa: &Uaa, headers: &HeaderMap) -> Result<(), Response> {
    let client = authenticate(uaa, headers, None).await?;
    if client.has_authority("uaa.resource") {
        Ok(())
    } else {
        Err(oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the client needs the uaa.resource authority",
        ))
    }
}

/// `POST /check_token` (form `token`, optional `scopes`): the token's claims when it is
/// valid and not revoked.
async fn check_token(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    if let Err(resp) = resource_server(&uaa, &headers).await {
        return resp;
    }
    let form = match form_body(form) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Some(token) = form.get("token").filter(|t| !t.trim().is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let claims = match uaa.checked_claims(token).await {
        Ok(c) => c,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_token", &e.to_string()),
    };
    let required = form.get("scopes").map(String::as_str).unwrap_or_default();
    let missing: Vec<&str> = required
        .split([',', ' '])
        .filter(|s| !s.is_empty() && !claims.claims.has_scope(s))
        .collect();
    if !missing.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("Some requested scopes are missing: {}", missing.join(",")),
        );
    }
    no_store(claims)
}

/// `POST /introspect` (RFC 7662): `{"active": false}` for anything not a valid,
/// unrevoked access token, else `active: true` with the token's claims.
async fn introspect(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    if let Err(resp) = resource_server(&uaa, &headers).await {
        return resp;
    }
    let form = match form_body(form) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Some(token) = form.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let claims = match uaa.checked_claims(token).await {
        Ok(c) => c,
        Err(_) => return no_store(json!({ "active": false })),
    };
    let mut body = serde_json::to_value(&claims).unwrap_or_else(|_| json!({}));
    if let Some(map) = body.as_object_mut() {
        map.insert("active".into(), json!(true));
        map.insert("token_type".into(), json!("bearer"));
        map.insert("username".into(), json!(claims.claims.user_name));
        map.insert("scope".into(), json!(claims.claims.scope.join(" ")));
    }
    no_store(body)
}

/// `GET /userinfo`: the user behind a token with the `openid` scope.
async fn userinfo(State(uaa): State<Arc<Uaa>>, headers: HeaderMap) -> Response {
    let claims = match caller(&uaa, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(resp) = require_scope(&claims, &["openid"]) {
        return resp;
    }
    let user = match uaa.get_user(&claims.user_id).await {
        Ok(u) => u,
        Err(ScimError::Uaa(e)) => return server_error(&e),
        Err(_) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token has no user",
            )
        }
    };
    let (given, family) = (&user.name.given_name, &user.name.family_name);
    let name = format!("{given} {family}").trim().to_string();
    no_store(json!({
        "user_id": user.id,
        "sub": user.id,
        "user_name": user.user_name,
        "given_name": given,
        "family_name": family,
        "name": name,
        "email": user.emails.first().map(|e| e.value.clone()).unwrap_or_default(),
        "email_verified": user.verified,
        "origin": user.origin,
        "zid": user.zone_id,
        "previous_logon_time": null,
    }))
}

/// The OpenID Provider metadata (OpenID Connect Discovery 1.0), as UAA publishes it.
async fn openid_configuration(State(uaa): State<Arc<Uaa>>) -> Response {
    let url = uaa.url();
    Json(json!({
        "issuer": format!("{url}/oauth/token"),
        "authorization_endpoint": format!("{url}/oauth/authorize"),
        "token_endpoint": format!("{url}/oauth/token"),
        "userinfo_endpoint": format!("{url}/userinfo"),
        "jwks_uri": format!("{url}/token_keys"),
        "end_session_endpoint": format!("{url}/logout.do"),
        "introspection_endpoint": format!("{url}/introspect"),
        "scopes_supported": ["openid", "profile", "email", "phone", "roles", "user_attributes"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "id_token_encryption_alg_values_supported": ["none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "grant_types_supported": ["authorization_code", "password", "client_credentials", "refresh_token"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "claim_types_supported": ["normal"],
        "claims_supported": [
            "sub", "user_name", "origin", "iss", "auth_time", "amr", "acr", "client_id",
            "aud", "zid", "grant_type", "user_id", "azp", "scope", "exp", "iat", "jti",
            "rev_sig", "cid", "given_name", "family_name", "phone_number", "email"
        ],
        "claims_parameter_supported": false,
        "service_documentation": "http://docs.cloudfoundry.org/api/uaa/",
        "ui_locales_supported": ["en-US"],
    }))
    .into_response()
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
            (StatusCode::UNAUTHORIZED, Some("invalid_client"))
        );
        let (status, body) = send(&app, form_post("grant_type=implicit", cf)).await;
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
        let (_, body) = send(
            &app,
            Request::get("/login")
                .header("Accept", "application/json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(body["prompts"]["password"][0], "password");
        assert_eq!(body["links"]["uaa"], "http://uaa.test");
    }
}
