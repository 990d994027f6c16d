//! UAA's browser endpoints: the login page (`GET /login`, or its JSON prompts for the
//! cf CLI), the login form's target (`POST /login.do`), `/oauth/authorize` for the
//! `authorization_code` grant, `/logout.do`, and a home page at `/home` (not `/`, which
//! is the Cloud Controller's when both share a port, as in `wfd dev`).
//!
//! The session is the `JSESSIONID` cookie (HttpOnly, SameSite=Lax). The login form is
//! protected from cross-site posts by UAA's double-submit token: an `X-Uaa-Csrf`
//! cookie that the form must repeat as a field.

use std::sync::Arc;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use crate::authorize::SESSION_LIFETIME_SECS;
use crate::{AuthorizeError, AuthorizeRequest, GrantError, Uaa};

const SESSION_COOKIE: &str = "JSESSIONID";
const CSRF_COOKIE: &str = "X-Uaa-Csrf";

pub(super) fn routes() -> axum::Router<Arc<Uaa>> {
    axum::Router::new()
        .route("/home", get(home))
        .route("/login", get(login))
        .route("/login.do", post(login_do))
        .route("/oauth/authorize", get(authorize))
        .route("/logout.do", get(logout).post(logout))
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn set_cookie(resp: &mut Response, name: &str, value: &str, max_age: i64) {
    let cookie = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `/login` with `query` (form-encoded).
fn login_path(query: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    format!("/login?{query}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} - Wasmfoundry</title></head>\n<body>\n<h1>{title}</h1>\n{body}\n\
         </body></html>\n",
        title = escape(title)
    );
    let mut resp = (status, Html(html)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A post-login destination on this UAA only (a path, never `//host`); `/home` when
/// there is none.
fn local_path(target: Option<&str>) -> &str {
    match target {
        Some(t) if t.starts_with('/') && !t.starts_with("//") && !t.contains('\\') => t,
        _ => "/home",
    }
}

fn session_of<'a>(headers: &'a HeaderMap) -> Option<&'a str> {
    cookie(headers, SESSION_COOKIE)
}

fn server_error(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "UAA login request failed");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        "<p>Something went wrong. Please try again.</p>",
    )
}

/// `GET /home`: who is logged in, or the login page.
async fn home(State(uaa): State<Arc<Uaa>>, headers: HeaderMap) -> Response {
    let user = match session_of(&headers) {
        Some(s) => uaa.session_user(s).await,
        None => Ok(None),
    };
    match user {
        Ok(Some(user)) => page(
            StatusCode::OK,
            "Wasmfoundry",
            &format!(
                "<p>Logged in as <strong>{}</strong>.</p>\n<p><a href=\"/logout.do\">Sign out</a></p>",
                escape(&user.user_name)
            ),
        ),
        Ok(None) => redirect("/login"),
        Err(e) => server_error(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    error: Option<String>,
    form_redirect_uri: Option<String>,
}

/// `GET /login`: the JSON prompts for `Accept: application/json` (the cf CLI), else
/// the login form with a fresh CSRF token.
async fn login(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return login_info(&uaa);
    }
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let message = match query.error.as_deref() {
        Some("login_failure") => "<p role=\"alert\">Provided credentials are invalid. Please try again.</p>\n",
        Some("account_locked") => "<p role=\"alert\">Your account has been locked because of too many failed attempts to login.</p>\n",
        Some(_) => "<p role=\"alert\">Unable to log in.</p>\n",
        None => "",
    };
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let target = local_path(query.form_redirect_uri.as_deref());
    let body = format!(
        "{message}<form method=\"post\" action=\"/login.do\">\n\
         <input type=\"hidden\" name=\"{CSRF_COOKIE}\" value=\"{csrf}\">\n\
         <input type=\"hidden\" name=\"form_redirect_uri\" value=\"{target}\">\n\
         <label>Email or username <input name=\"username\" type=\"text\" autocomplete=\"username\" autofocus></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>",
        target = escape(target),
    );
    let mut resp = page(StatusCode::OK, "Sign in", &body);
    set_cookie(&mut resp, CSRF_COOKIE, &csrf, 86_400);
    resp
}

/// What `GET /login` with `Accept: application/json` tells the cf CLI.
fn login_info(uaa: &Uaa) -> Response {
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

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(rename = "X-Uaa-Csrf", default)]
    csrf: String,
    form_redirect_uri: Option<String>,
}

/// `POST /login.do`: checks the CSRF token and the credentials (under the lockout
/// policy), starts a session and goes on to `form_redirect_uri`.
async fn login_do(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "<p>Expected the login form.</p>",
        );
    };
    let csrf_ok = cookie(&headers, CSRF_COOKIE).is_some_and(|c| c == form.csrf);
    if !csrf_ok {
        return page(
            StatusCode::FORBIDDEN,
            "Invalid login request",
            "<p>The login form expired or was not sent from this site. <a href=\"/login\">Try again</a>.</p>",
        );
    }
    let target = local_path(form.form_redirect_uri.as_deref());
    let retry = |error: &str| {
        let mut query = vec![("error", error)];
        if target != "/home" {
            query.push(("form_redirect_uri", target));
        }
        redirect(&login_path(&query))
    };
    match uaa.login(&form.username, &form.password).await {
        Ok(session) => {
            let mut resp = redirect(target);
            set_cookie(&mut resp, SESSION_COOKIE, &session, SESSION_LIFETIME_SECS);
            resp
        }
        Err(GrantError::AccountLocked) => retry("account_locked"),
        Err(GrantError::Uaa(e)) => server_error(&e),
        Err(_) => retry("login_failure"),
    }
}

/// `GET /oauth/authorize`: a code for a logged-in user (UAA's clients here are
/// auto-approved), the login page first for anyone else; errors go back to the
/// client's redirect URI once it is verified, and are shown otherwise.
async fn authorize(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    query: Result<Query<AuthorizeRequest>, QueryRejection>,
) -> Response {
    let Ok(Query(request)) = query else {
        return page(
            StatusCode::BAD_REQUEST,
            "Invalid authorization request",
            "<p>The authorization request is malformed.</p>",
        );
    };
    let session = session_of(&headers).unwrap_or_default();
    let outcome = match uaa.authorize(session, &request).await {
        Ok(Some(authorization)) => Ok(authorization),
        Ok(None) => {
            let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            return redirect(&login_path(&[("form_redirect_uri", here)]));
        }
        Err(e) => Err(e),
    };
    let (redirect_uri, params) = match outcome {
        Ok(a) => (a.redirect_uri, vec![("code", a.code)]),
        Err(AuthorizeError::Uaa(e)) => return server_error(&e),
        Err(e) => match e.redirect_code() {
            // The redirect URI was verified before any of these errors.
            Some(code) => match uaa.authorize_redirect_uri(&request).await {
                Ok(uri) => (
                    uri,
                    vec![
                        ("error", code.to_string()),
                        ("error_description", e.to_string()),
                    ],
                ),
                Err(e) => return authorize_error_page(&e),
            },
            None => return authorize_error_page(&e),
        },
    };
    let Ok(mut url) = url::Url::parse(&redirect_uri) else {
        return authorize_error_page(&AuthorizeError::BadRedirectUri(redirect_uri));
    };
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &params {
            pairs.append_pair(k, v);
        }
        if let Some(state) = &request.state {
            pairs.append_pair("state", state);
        }
    }
    redirect(url.as_str())
}

fn authorize_error_page(e: &AuthorizeError) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Invalid authorization request",
        &format!("<p>{}</p>", escape(&e.to_string())),
    )
}

#[derive(Debug, Default, Deserialize)]
struct LogoutQuery {
    redirect: Option<String>,
    client_id: Option<String>,
}

/// `/logout.do`: ends the session; goes to `redirect` when it is a registered redirect
/// URI of `client_id`, else to the login page.
async fn logout(
    State(uaa): State<Arc<Uaa>>,
    headers: HeaderMap,
    query: Result<Query<LogoutQuery>, QueryRejection>,
) -> Response {
    if let Some(session) = session_of(&headers) {
        if let Err(e) = uaa.logout(session).await {
            return server_error(&e);
        }
    }
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let target = match (&query.client_id, &query.redirect) {
        (Some(client), Some(target)) => match uaa.logout_redirect_allowed(client, target).await {
            Ok(true) => target.clone(),
            Ok(false) => "/login".to_string(),
            Err(e) => return server_error(&e),
        },
        _ => "/login".to_string(),
    };
    let mut resp = redirect(&target);
    set_cookie(&mut resp, SESSION_COOKIE, "", 0);
    resp
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use crate::tests::open_test_uaa;
    use crate::ClientDetails;

    use super::*;

    struct Browser {
        app: axum::Router,
        cookies: Vec<(String, String)>,
    }

    struct Reply {
        status: StatusCode,
        location: String,
        body: String,
    }

    impl Browser {
        /// Sends a request with the browser's cookies and keeps the ones set.
        async fn send(&mut self, req: axum::http::request::Builder, body: &str) -> Reply {
            let cookies: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let req = req
                .header(header::COOKIE, cookies.join("; "))
                .body(Body::from(body.to_string()))
                .unwrap();
            let resp = self.app.clone().oneshot(req).await.unwrap();
            for set in resp.headers().get_all(header::SET_COOKIE) {
                let pair = set.to_str().unwrap().split(';').next().unwrap();
                let (k, v) = pair.split_once('=').unwrap();
                self.cookies.retain(|(name, _)| name != k);
                if !v.is_empty() {
                    self.cookies.push((k.to_string(), v.to_string()));
                }
            }
            let status = resp.status();
            let location = resp
                .headers()
                .get(header::LOCATION)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            Reply {
                status,
                location,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        }

        async fn get(&mut self, uri: &str) -> Reply {
            self.send(Request::get(uri), "").await
        }

        async fn post_form(&mut self, uri: &str, form: &[(&str, &str)]) -> Reply {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            let req = Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            self.send(req, &body).await
        }

        fn cookie(&self, name: &str) -> Option<String> {
            self.cookies
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }

        /// Opens the login page (for `target`) and submits it.
        async fn log_in(&mut self, target: &str, username: &str, password: &str) -> Reply {
            let page = self
                .get(&format!("/login?form_redirect_uri={}", enc(target)))
                .await;
            assert_eq!(page.status, StatusCode::OK);
            assert!(page.body.contains("action=\"/login.do\""), "{}", page.body);
            let csrf = self.cookie(CSRF_COOKIE).expect("a CSRF cookie");
            self.post_form(
                "/login.do",
                &[
                    ("username", username),
                    ("password", password),
                    (CSRF_COOKIE, &csrf),
                    ("form_redirect_uri", target),
                ],
            )
            .await
        }
    }

    fn enc(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    fn query_param(url: &str, name: &str) -> Option<String> {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const REDIRECT: &str = "https://dashboard.example.com/callback";

    fn authorize_url(state: &str) -> String {
        format!(
            "/oauth/authorize?response_type=code&client_id=dashboard&redirect_uri={}\
             &scope=openid+cloud_controller.read&state={state}\
             &code_challenge={CHALLENGE}&code_challenge_method=S256",
            enc(REDIRECT)
        )
    }

    async fn exchange(
        app: &axum::Router,
        code: &str,
        verifier: &str,
    ) -> (StatusCode, serde_json::Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "authorization_code"),
                ("client_id", "dashboard"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ])
            .finish();
        let req = Request::post("/oauth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn browser_login_authorization_code_with_pkce_and_logout() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        // A public (secret-less) client, as single-page apps and CLIs are.
        uaa.create_client(
            ClientDetails {
                client_id: "dashboard".into(),
                scope: vec!["openid".into(), "cloud_controller.read".into()],
                authorities: vec!["uaa.none".into()],
                authorized_grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                redirect_uris: vec!["https://dashboard.example.com/**".into()],
                access_token_validity: None,
                refresh_token_validity: None,
                last_modified: 0,
            },
            "",
        )
        .await
        .unwrap();
        let app = uaa.router();
        let mut browser = Browser {
            app: app.clone(),
            cookies: Vec::new(),
        };

        // Not logged in: to the login page, which comes back to the request afterwards.
        let first = browser.get(&authorize_url("xyz")).await;
        assert_eq!(first.status, StatusCode::FOUND);
        assert!(
            first.location.starts_with("/login?form_redirect_uri="),
            "{}",
            first.location
        );
        let target = query_param(
            &format!("http://uaa{}", first.location),
            "form_redirect_uri",
        )
        .unwrap();
        assert_eq!(target, authorize_url("xyz"));

        // A wrong password goes back to the form with an error; no session.
        let failed = browser.log_in(&target, "admin", "wrong").await;
        assert_eq!(failed.status, StatusCode::FOUND);
        assert!(
            failed.location.contains("error=login_failure"),
            "{}",
            failed.location
        );
        assert!(browser.cookie(SESSION_COOKIE).is_none());
        // A form without the CSRF cookie's value is refused.
        let forged = browser
            .post_form(
                "/login.do",
                &[
                    ("username", "admin"),
                    ("password", "s3cret"),
                    (CSRF_COOKIE, "guess"),
                ],
            )
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);

        let logged_in = browser.log_in(&target, "admin", "s3cret").await;
        assert_eq!(
            (logged_in.status, logged_in.location.as_str()),
            (StatusCode::FOUND, target.as_str())
        );
        assert!(browser.cookie(SESSION_COOKIE).is_some());
        let home = browser.get("/home").await;
        assert!(
            home.body.contains("Logged in as <strong>admin</strong>"),
            "{}",
            home.body
        );

        let granted = browser.get(&target).await;
        assert_eq!(granted.status, StatusCode::FOUND);
        assert!(
            granted.location.starts_with(REDIRECT),
            "{}",
            granted.location
        );
        assert_eq!(
            query_param(&granted.location, "state").as_deref(),
            Some("xyz")
        );
        let code = query_param(&granted.location, "code").unwrap();

        // The wrong verifier fails and burns the code; a new code with the right one works once.
        let (status, body) = exchange(&app, &code, &VERIFIER.replace('d', "e")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{body}"
        );
        let (status, _) = exchange(&app, &code, VERIFIER).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a code is single-use");
        let code = query_param(&browser.get(&authorize_url("s2")).await.location, "code").unwrap();
        let (status, body) = exchange(&app, &code, VERIFIER).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let claims = uaa
            .verifier()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            (
                claims.grant_type.as_str(),
                claims.user_name.as_str(),
                claims.cid.as_str()
            ),
            ("authorization_code", "admin", "dashboard")
        );
        assert_eq!(body["scope"], "openid cloud_controller.read");
        assert!(body["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
        let (status, _) = exchange(&app, &code, VERIFIER).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a code is single-use");

        // Errors after the redirect URI is verified go back to the client...
        let bad_scope = browser
            .get(&authorize_url("s3").replace("cloud_controller.read", "scim.write"))
            .await;
        assert_eq!(
            query_param(&bad_scope.location, "error").as_deref(),
            Some("invalid_scope")
        );
        assert_eq!(
            query_param(&bad_scope.location, "state").as_deref(),
            Some("s3")
        );
        let no_pkce = browser
            .get(&authorize_url("s4").replace("&code_challenge=", "&x="))
            .await;
        assert_eq!(
            query_param(&no_pkce.location, "error").as_deref(),
            Some("invalid_request"),
            "{}",
            no_pkce.location
        );
        // ...but an unregistered redirect URI is never followed.
        let open_redirect = browser
            .get(&authorize_url("s5").replace(&enc(REDIRECT), &enc("https://evil.example.com/")))
            .await;
        assert_eq!(
            (open_redirect.status, open_redirect.location.as_str()),
            (StatusCode::BAD_REQUEST, "")
        );

        // Logout ends the session and goes only to a registered URI.
        let out = browser
            .get(&format!(
                "/logout.do?client_id=dashboard&redirect={}",
                enc(REDIRECT)
            ))
            .await;
        assert_eq!(
            (out.status, out.location.as_str()),
            (StatusCode::FOUND, REDIRECT)
        );
        assert!(browser.cookie(SESSION_COOKIE).is_none());
        assert!(browser
            .get(&authorize_url("s6"))
            .await
            .location
            .starts_with("/login?"));
        browser.log_in("/home", "admin", "s3cret").await;
        let out = browser
            .get("/logout.do?client_id=dashboard&redirect=https://evil.example.com/")
            .await;
        assert_eq!(out.location, "/login");
    }

    #[tokio::test]
    async fn a_password_change_ends_browser_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let id = uaa
            .create_user("dev", "old-password", "dev@example.com")
            .await
            .unwrap();
        let session = uaa.login("dev", "old-password").await.unwrap();
        assert_eq!(
            uaa.session_user(&session).await.unwrap().unwrap().user_id,
            id
        );
        uaa.change_password(&id, Some("old-password"), "new-password")
            .await
            .unwrap();
        assert!(uaa.session_user(&session).await.unwrap().is_none());
        uaa.logout(&session).await.unwrap();
    }
}
