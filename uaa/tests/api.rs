//! UAA's HTTP API as its clients use it: the admin client's client_credentials token
//! managing clients, users and groups; token checks and revocation; lockout; key
//! rotation. Every test runs on SQLite and, when `WF_TEST_POSTGRES_URL` is set, on
//! PostgreSQL.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;
use wf_uaa::{PreviousKey, TokenError, Uaa, UaaConfig};

struct Server {
    uaa: Arc<Uaa>,
    app: axum::Router,
}

fn config(url: &str, dir: &tempfile::TempDir) -> UaaConfig {
    UaaConfig {
        database_url: url.to_string(),
        issuer: "http://uaa.test/oauth/token".into(),
        admin_password: "adminpw".into(),
        signing_key_path: dir.path().join("key-1.pem"),
        admin_client_secret: Some("adminsecret".into()),
        ..Default::default()
    }
}

async fn start(config: UaaConfig) -> Server {
    let uaa = Uaa::open(config).await.unwrap();
    let app = uaa.router();
    Server { uaa, app }
}

fn basic(id: &str, secret: &str) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    format!("Basic {creds}")
}

impl Server {
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn form(&self, path: &str, auth: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::post(path)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Authorization", auth)
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    /// `method path` with a bearer token and an optional JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("bearer {token}"))
            .header("Content-Type", "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(req.body(body).unwrap()).await
    }

    async fn admin_client_token(&self) -> String {
        let (status, body) = self
            .form(
                "/oauth/token",
                &basic("admin", "adminsecret"),
                "grant_type=client_credentials",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        self.form(
            "/oauth/token",
            &basic("cf", ""),
            &format!("grant_type=password&username={user}&password={password}"),
        )
        .await
    }

    async fn check(&self, token: &str) -> (StatusCode, Value) {
        self.form(
            "/check_token",
            &basic("admin", "adminsecret"),
            &format!("token={token}"),
        )
        .await
    }
}

/// Runs `test` on a SQLite file (so that it survives reopening) and, when configured,
/// on a fresh PostgreSQL database.
async fn each_database(test: impl AsyncFn(&str, &tempfile::TempDir)) {
    for db in wf_db::testing::databases().await {
        let dir = tempfile::tempdir().unwrap();
        let url = match db.backend() {
            wf_db::testing::Backend::Sqlite => {
                format!("sqlite://{}?mode=rwc", dir.path().join("uaa.db").display())
            }
            wf_db::testing::Backend::Postgres => db.url().to_string(),
        };
        test(&url, &dir).await;
    }
}

#[tokio::test]
async fn client_credentials_and_client_management() {
    each_database(async |url, dir| {
        let s = start(config(url, dir)).await;
        let (status, body) = s
            .form("/oauth/token", &basic("admin", "wrong"), "grant_type=client_credentials")
            .await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));

        let (status, body) = s
            .form("/oauth/token", &basic("admin", "adminsecret"), "grant_type=client_credentials")
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
        let admin = body["access_token"].as_str().unwrap().to_string();
        let (status, claims) = s.check(&admin).await;
        assert_eq!(status, StatusCode::OK, "{claims}");
        assert_eq!(claims["sub"], "admin");
        assert_eq!(claims["grant_type"], "client_credentials");
        assert!(claims.get("user_id").is_none() && claims.get("user_name").is_none());
        assert!(claims["authorities"].as_array().unwrap().contains(&json!("clients.write")));
        // Narrowed to a requested scope.
        let (_, body) = s
            .form("/oauth/token", &basic("admin", "adminsecret"), "grant_type=client_credentials&scope=scim.read")
            .await;
        assert_eq!(body["scope"], "scim.read");

        // A new client: created, listed, used, updated, its secret changed (revoking
        // its tokens), deleted.
        let client = json!({
            "client_id": "app", "client_secret": "appsecret",
            "scope": ["uaa.none"], "authorities": ["cloud_controller.read", "uaa.resource"],
            "authorized_grant_types": ["client_credentials"],
        });
        let (status, body) = s.call("POST", "/oauth/clients", &admin, Some(client.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(body.get("client_secret").is_none());
        assert_eq!(s.call("POST", "/oauth/clients", &admin, Some(client)).await.0, StatusCode::CONFLICT);
        let bad = json!({"client_id": "x y", "authorized_grant_types": ["client_credentials"], "client_secret": "s"});
        assert_eq!(s.call("POST", "/oauth/clients", &admin, Some(bad)).await.0, StatusCode::BAD_REQUEST);
        let (_, list) = s.call("GET", "/oauth/clients", &admin, None).await;
        let ids: Vec<&str> = list["resources"].as_array().unwrap().iter().map(|c| c["client_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["admin", "app", "cf"]);

        let (status, body) = s
            .form("/oauth/token", &basic("app", "appsecret"), "grant_type=client_credentials")
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let app_token = body["access_token"].as_str().unwrap().to_string();
        let claims = s.uaa.verifier().verify(&app_token).unwrap();
        assert!(!claims.is_user());
        assert_eq!(claims.sub, "app");
        // The app client may check tokens itself (uaa.resource).
        let (status, _) = s
            .form("/check_token", &basic("app", "appsecret"), &format!("token={app_token}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = s
            .form("/check_token", &basic("cf", ""), &format!("token={app_token}"))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "cf lacks uaa.resource");

        let update = json!({"scope": ["uaa.none"], "authorities": ["cloud_controller.admin"], "authorized_grant_types": ["client_credentials"]});
        let (status, body) = s.call("PUT", "/oauth/clients/app", &admin, Some(update)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["authorities"], json!(["cloud_controller.admin"]));

        let (status, _) = s
            .call("PUT", "/oauth/clients/app/secret", &admin, Some(json!({"secret": "new"})))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(s.check(&app_token).await.0, StatusCode::BAD_REQUEST, "revoked by the new secret");
        assert_eq!(
            s.form("/oauth/token", &basic("app", "appsecret"), "grant_type=client_credentials").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            s.form("/oauth/token", &basic("app", "new"), "grant_type=client_credentials").await.0,
            StatusCode::OK
        );

        // Users' tokens may not manage clients.
        let (_, body) = s.login("admin", "adminpw").await;
        let user_token = body["access_token"].as_str().unwrap();
        assert_eq!(s.call("GET", "/oauth/clients", user_token, None).await.0, StatusCode::FORBIDDEN, "clients.read only");
        assert_eq!(s.call("DELETE", "/oauth/clients/app", user_token, None).await.0, StatusCode::FORBIDDEN);
        assert_eq!(s.call("GET", "/oauth/clients", "garbage", None).await.0, StatusCode::UNAUTHORIZED);

        assert_eq!(s.call("DELETE", "/oauth/clients/app", &admin, None).await.0, StatusCode::OK);
        assert_eq!(s.call("GET", "/oauth/clients/app", &admin, None).await.0, StatusCode::NOT_FOUND);

        // Reopening keeps the admin client's secret hash, so its tokens stay valid.
        drop(s);
        let s = start(config(url, dir)).await;
        assert_eq!(s.check(&admin).await.0, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn check_token_introspect_userinfo_and_discovery() {
    each_database(async |url, dir| {
        let s = start(config(url, dir)).await;
        let (_, body) = s.login("admin", "adminpw").await;
        let token = body["access_token"].as_str().unwrap().to_string();
        let refresh = body["refresh_token"].as_str().unwrap().to_string();

        let (status, claims) = s.check(&token).await;
        assert_eq!(status, StatusCode::OK, "{claims}");
        assert_eq!(claims["user_name"], "admin");
        assert!(claims["rev_sig"].is_string());
        let (status, body) = s
            .form(
                "/check_token",
                &basic("admin", "adminsecret"),
                &format!("token={token}&scopes=openid,uaa.admin"),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_scope"))
        );
        for bad in [refresh.as_str(), "garbage"] {
            let (status, body) = s.check(bad).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_token"))
            );
        }
        assert_eq!(
            s.form(
                "/check_token",
                &basic("admin", "nope"),
                &format!("token={token}")
            )
            .await
            .0,
            StatusCode::UNAUTHORIZED
        );

        let (status, body) = s
            .form(
                "/introspect",
                &basic("admin", "adminsecret"),
                &format!("token={token}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (body["active"].as_bool(), body["username"].as_str()),
            (Some(true), Some("admin"))
        );
        assert!(body["scope"].as_str().unwrap().contains("openid"));
        let (status, body) = s
            .form(
                "/introspect",
                &basic("admin", "adminsecret"),
                "token=nonsense",
            )
            .await;
        assert_eq!((status, body), (StatusCode::OK, json!({"active": false})));

        let (status, info) = s.call("GET", "/userinfo", &token, None).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(
            (info["user_name"].as_str(), info["email"].as_str()),
            (Some("admin"), Some("admin"))
        );
        assert_eq!(info["sub"], info["user_id"]);
        let (_, body) = s
            .form(
                "/oauth/token",
                &basic("cf", ""),
                "grant_type=password&username=admin&password=adminpw&scope=uaa.user",
            )
            .await;
        let no_openid = body["access_token"].as_str().unwrap();
        assert_eq!(
            s.call("GET", "/userinfo", no_openid, None).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            s.call("GET", "/userinfo", "x", None).await.0,
            StatusCode::UNAUTHORIZED
        );

        let (_, discovery) = s
            .send(
                Request::get("/.well-known/openid-configuration")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(discovery["issuer"], "http://uaa.test/oauth/token");
        for (key, value) in [
            ("jwks_uri", "http://uaa.test/token_keys"),
            ("userinfo_endpoint", "http://uaa.test/userinfo"),
            ("end_session_endpoint", "http://uaa.test/logout.do"),
            ("introspection_endpoint", "http://uaa.test/introspect"),
        ] {
            assert_eq!(discovery[key], value);
        }
        for key in [
            "authorization_endpoint",
            "response_types_supported",
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
        ] {
            assert!(!discovery[key].is_null(), "{key}");
        }
    })
    .await;
}

#[tokio::test]
async fn scim_users_groups_and_revocation() {
    each_database(async |url, dir| {
        let s = start(config(url, dir)).await;
        let (_, body) = s.login("admin", "adminpw").await;
        let admin = body["access_token"].as_str().unwrap().to_string();

        let user = json!({"userName": "dev", "password": "pw1", "emails": [{"value": "dev@example.com"}],
            "name": {"givenName": "Dee", "familyName": "Vee"}});
        let (status, created) = s.call("POST", "/Users", &admin, Some(user)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["name"]["givenName"], "Dee");
        assert_eq!(created["meta"]["version"], 0);
        assert!(created["groups"].as_array().unwrap().iter().any(|g| g["display"] == "cloud_controller.read"));
        s.call("POST", "/Users", &admin, Some(json!({"userName": "other", "password": "x"}))).await;

        let (status, list) = s
            .call("GET", "/Users?filter=userName%20eq%20%22DEV%22&attributes=id,userName", &admin, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["totalResults"], 1);
        assert_eq!(list["resources"][0], json!({"id": id, "userName": "dev"}));
        let (_, all) = s.call("GET", "/Users?count=1&startIndex=2", &admin, None).await;
        assert_eq!((all["totalResults"].as_u64(), all["resources"].as_array().unwrap().len()), (Some(3), 1));
        let (status, body) = s.call("GET", "/Users?filter=password%20eq%20%22x%22", &admin, None).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_filter")));

        // dev logs in; reads itself but not others; cannot manage users.
        let (status, body) = s.login("dev", "pw1").await;
        assert_eq!(status, StatusCode::OK);
        let dev = body["access_token"].as_str().unwrap().to_string();
        let dev_refresh = body["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(s.call("GET", &format!("/Users/{id}"), &dev, None).await.0, StatusCode::OK);
        assert_eq!(s.call("GET", "/Users", &dev, None).await.0, StatusCode::FORBIDDEN);
        assert_eq!(s.call("DELETE", &format!("/Users/{id}"), &dev, None).await.0, StatusCode::FORBIDDEN);

        // PATCH with a stale If-Match conflicts; with the right one it applies.
        let patch = |v: &str| {
            Request::patch(format!("/Users/{id}"))
                .header("Authorization", format!("bearer {admin}"))
                .header("Content-Type", "application/json")
                .header("If-Match", v)
                .body(Body::from(json!({"name": {"familyName": "Vance"}}).to_string()))
                .unwrap()
        };
        assert_eq!(s.send(patch("\"7\"")).await.0, StatusCode::CONFLICT);
        let (status, patched) = s.send(patch("\"0\"")).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!((patched["name"]["familyName"].as_str(), patched["name"]["givenName"].as_str()), (Some("Vance"), Some("Dee")));
        assert_eq!(patched["meta"]["version"], 1);
        let (status, body) = s.call("PUT", &format!("/Users/{id}"), &admin, Some(json!({"userName": "other"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(s.call("PUT", &format!("/Users/{id}"), &admin, Some(json!({"emails": []}))).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(s.call("GET", "/Users/nobody", &admin, None).await.0, StatusCode::NOT_FOUND);

        // Groups: list with filter, add dev to cloud_controller.admin, see it, remove it.
        let (_, groups) = s
            .call("GET", "/Groups?filter=displayName%20eq%20%22cloud_controller.admin%22", &admin, None)
            .await;
        assert_eq!(groups["totalResults"], 1, "{groups}");
        let group = groups["resources"][0]["id"].as_str().unwrap().to_string();
        let member = json!({"origin": "uaa", "type": "USER", "value": id});
        let members = format!("/Groups/{group}/members");
        let (status, body) = s.call("POST", &members, &admin, Some(member.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(s.call("POST", &members, &admin, Some(member)).await.0, StatusCode::CONFLICT);
        let (_, list) = s.call("GET", &members, &admin, None).await;
        assert!(list.as_array().unwrap().iter().any(|m| m["value"] == id.as_str()));
        let (_, body) = s.login("dev", "pw1").await;
        assert!(body["scope"].as_str().unwrap().contains("cloud_controller.admin"));
        assert_eq!(s.call("DELETE", &format!("{members}/{id}"), &admin, None).await.0, StatusCode::OK);
        assert_eq!(s.call("DELETE", &format!("{members}/{id}"), &admin, None).await.0, StatusCode::NOT_FOUND);
        let (_, body) = s.login("dev", "pw1").await;
        assert!(!body["scope"].as_str().unwrap().contains("cloud_controller.admin"));
        let (status, body) = s.call("POST", "/Groups", &admin, Some(json!({"displayName": "app.deploy"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        // Changing the password: wrong old password refused; then old tokens are revoked
        // online, refresh is refused, and offline verification still passes until expiry.
        let pw = format!("/Users/{id}/password");
        let (status, body) = s.call("PUT", &pw, &dev, Some(json!({"oldPassword": "nope", "password": "pw2"}))).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
        let (_, fresh) = s.login("dev", "pw1").await;
        let dev = fresh["access_token"].as_str().unwrap().to_string();
        assert_eq!(s.check(&dev).await.0, StatusCode::OK);
        let (status, body) = s.call("PUT", &pw, &dev, Some(json!({"oldPassword": "pw1", "password": "pw2"}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = s.check(&dev).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_token")));
        assert!(matches!(s.uaa.check_token(&dev).await, Err(TokenError::Invalid(_))));
        assert!(s.uaa.verifier().verify(&dev).is_ok(), "offline checks cannot see revocation");
        assert_eq!(s.call("GET", &format!("/Users/{id}"), &dev, None).await.0, StatusCode::UNAUTHORIZED);
        let (status, _) = s
            .form("/oauth/token", &basic("cf", ""), &format!("grant_type=refresh_token&refresh_token={dev_refresh}"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(s.login("dev", "pw1").await.0, StatusCode::UNAUTHORIZED);
        let (status, body) = s.login("dev", "pw2").await;
        assert_eq!(status, StatusCode::OK);
        let dev = body["access_token"].as_str().unwrap().to_string();
        // Another user's password needs uaa.admin (the admin client has it).
        assert_eq!(
            s.call("PUT", &pw, &admin, Some(json!({"password": "pw3"}))).await.0,
            StatusCode::FORBIDDEN
        );
        let client = s.admin_client_token().await;
        assert_eq!(s.call("PUT", &pw, &client, Some(json!({"password": "pw3"}))).await.0, StatusCode::OK);
        assert_eq!(s.check(&dev).await.0, StatusCode::BAD_REQUEST);
        let (_, body) = s.login("dev", "pw3").await;
        let dev = body["access_token"].as_str().unwrap().to_string();

        // Deleting revokes too.
        let (status, _) = s.call("DELETE", &format!("/Users/{id}"), &admin, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(s.check(&dev).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(s.login("dev", "pw3").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(s.call("DELETE", &format!("/Users/{id}"), &admin, None).await.0, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn five_failed_logins_lock_the_account() {
    each_database(async |url, dir| {
        let s = start(config(url, dir)).await;
        s.uaa.create_user("victim", "right", "v@example.com").await.unwrap();
        // A success in between resets the count.
        for _ in 0..4 {
            assert_eq!(s.login("victim", "wrong").await.0, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(s.login("victim", "right").await.0, StatusCode::OK);
        for _ in 0..5 {
            let (status, body) = s.login("victim", "wrong").await;
            assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_grant")));
        }
        let (status, body) = s.login("victim", "right").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({"error": "unauthorized", "error_description": "Your account has been locked because of too many failed attempts to login."})
        );
        // Other users are unaffected, and the lock survives a restart (it is in the DB).
        assert_eq!(s.login("admin", "adminpw").await.0, StatusCode::OK);
        drop(s);
        let s = start(config(url, dir)).await;
        assert_eq!(s.login("victim", "right").await.0, StatusCode::UNAUTHORIZED);
        // With a short lockout period it ends.
        drop(s);
        let mut short = config(url, dir);
        short.lockout.lockout_period = std::time::Duration::ZERO;
        let s = start(short).await;
        let (status, body) = s.login("victim", "right").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    })
    .await;
}

#[tokio::test]
async fn rotated_keys_keep_verifying_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("uaa.db").display());
    let s = start(config(&url, &dir)).await;
    let (_, body) = s.login("admin", "adminpw").await;
    let old = body["access_token"].as_str().unwrap().to_string();
    drop(s);

    // Rotate: a new signing key `key-2`; `key-1` only verifies.
    let rotated = UaaConfig {
        signing_key_path: dir.path().join("key-2.pem"),
        signing_key_id: "key-2".into(),
        previous_keys: vec![PreviousKey {
            kid: "key-1".into(),
            path: dir.path().join("key-1.pem"),
        }],
        ..config(&url, &dir)
    };
    let s = start(rotated.clone()).await;
    let (_, body) = s.login("admin", "adminpw").await;
    let new = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
        Some("key-2")
    );
    assert!(s.uaa.verifier().verify(&old).is_ok());
    assert!(s.uaa.verifier().verify(&new).is_ok());
    let (_, jwks) = s
        .send(Request::get("/token_keys").body(Body::empty()).unwrap())
        .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["key-2", "key-1"]);
    let (_, key) = s
        .send(Request::get("/token_key").body(Body::empty()).unwrap())
        .await;
    assert_eq!(key["kid"], "key-2");
    // A resource server with the published keys accepts both.
    let keys: Vec<wf_uaa::TokenKey> = serde_json::from_value(jwks["keys"].clone()).unwrap();
    let verifier = wf_uaa::TokenVerifier::from_keys("http://uaa.test/oauth/token", &keys).unwrap();
    assert!(verifier.verify(&old).is_ok() && verifier.verify(&new).is_ok());
    // ETag: unchanged keys answer 304.
    let resp = s
        .app
        .clone()
        .oneshot(Request::get("/token_keys").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let etag = resp.headers()["etag"].clone();
    let resp = s
        .app
        .clone()
        .oneshot(
            Request::get("/token_keys")
                .header("If-None-Match", etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    drop(s);

    // Removed: old tokens stop verifying.
    let s = start(UaaConfig {
        previous_keys: Vec::new(),
        ..rotated.clone()
    })
    .await;
    assert!(s.uaa.verifier().verify(&old).is_err());
    assert!(s.uaa.verifier().verify(&new).is_ok());
    drop(s);
    // A kid used twice is refused.
    let clash = UaaConfig {
        previous_keys: vec![PreviousKey {
            kid: "key-2".into(),
            path: dir.path().join("key-1.pem"),
        }],
        ..rotated
    };
    assert!(Uaa::open(clash).await.is_err());
}
