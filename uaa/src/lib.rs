//! UAA: the OAuth2 server. Issues RS256 JWTs for users (password and refresh_token
//! grants), publishes its verification keys, and hands the other components a
//! [`TokenVerifier`] that checks tokens offline against those keys.
//!
//! One client is known, CF's `cf` (empty secret), and one zone, `uaa`. Users live in
//! SQL (SQLite or PostgreSQL); the `admin` user is (re)created on every open.

mod http;
mod keys;
mod tokens;
mod users;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::AnyPool;

pub use keys::{TokenKey, KEY_ID};
pub use tokens::{Claims, TokenError, TokenVerifier, CLOUD_CONTROLLER_AUDIENCE};

use tokens::TokenClaims;
use users::User;

/// The CF CLI's OAuth client: public, empty secret.
pub const CF_CLIENT_ID: &str = "cf";

/// Scopes the `cf` client may request (cf-deployment's `cf` client).
const CF_CLIENT_SCOPES: &[&str] = &[
    "cloud_controller.read",
    "cloud_controller.write",
    "cloud_controller.admin",
    "cloud_controller.admin_read_only",
    "cloud_controller.global_auditor",
    "openid",
    "password.write",
    "scim.read",
    "scim.write",
    "doppler.firehose",
    "uaa.user",
    "clients.read",
    "network.admin",
    "network.write",
    "routing.router_groups.read",
    "routing.router_groups.write",
];

/// The `admin` user's groups.
const ADMIN_SCOPES: &[&str] = &[
    "cloud_controller.admin",
    "cloud_controller.read",
    "cloud_controller.write",
    "openid",
    "doppler.firehose",
    "scim.read",
    "scim.write",
    "uaa.user",
];

/// UAA's default groups of a new user.
const USER_SCOPES: &[&str] = &[
    "cloud_controller.read",
    "cloud_controller.write",
    "openid",
    "password.write",
    "scim.me",
    "uaa.user",
];

#[derive(Debug, thiserror::Error)]
pub enum UaaError {
    #[error("UAA database error: {0}")]
    Database(String),
    #[error("UAA signing key error: {0}")]
    Key(String),
    #[error("UAA password hashing error: {0}")]
    PasswordHash(String),
}

/// Why a token grant or user creation was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("Bad credentials")]
    BadCredentials,
    #[error("Bad client credentials")]
    BadClient,
    #[error("Invalid refresh token: {0}")]
    InvalidRefreshToken(String),
    #[error("Invalid scope: {0}")]
    InvalidScope(String),
    #[error("Username already in use: {0}")]
    UsernameTaken(String),
    #[error(transparent)]
    Uaa(#[from] UaaError),
}

#[derive(Debug, Clone)]
pub struct UaaConfig {
    /// `sqlite://path?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// The `iss` claim, CF style: `<uaa url>/oauth/token`.
    pub issuer: String,
    /// The `admin` user's password; the user is created or updated to it on open.
    pub admin_password: String,
    /// PEM of the RSA signing key; generated there on first open.
    pub signing_key_path: PathBuf,
    /// CF default: 12 hours... UAA's default is 43200 s.
    pub access_token_validity: Duration,
    pub refresh_token_validity: Duration,
}

impl Default for UaaConfig {
    fn default() -> Self {
        UaaConfig {
            database_url: "sqlite::memory:".into(),
            issuer: "http://localhost/oauth/token".into(),
            admin_password: "admin".into(),
            signing_key_path: PathBuf::from("uaa-signing-key.pem"),
            access_token_validity: Duration::from_secs(43_200),
            refresh_token_validity: Duration::from_secs(2_592_000),
        }
    }
}

/// The body of a successful `/oauth/token` response.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub refresh_token: String,
    pub expires_in: u64,
    /// Space-separated.
    pub scope: String,
    pub jti: String,
}

pub struct Uaa {
    config: UaaConfig,
    db: AnyPool,
    signing: keys::SigningKey,
    verifier: TokenVerifier,
}

impl Uaa {
    pub async fn open(config: UaaConfig) -> Result<Arc<Uaa>, UaaError> {
        let db = users::connect(&config.database_url).await?;
        let signing = keys::load_or_generate(config.signing_key_path.clone()).await?;
        let verifier =
            TokenVerifier::from_keys(&config.issuer, std::slice::from_ref(&signing.public))
                .map_err(|e| UaaError::Key(e.to_string()))?;
        let uaa = Uaa {
            config,
            db,
            signing,
            verifier,
        };
        uaa.ensure_admin().await?;
        Ok(Arc::new(uaa))
    }

    /// `/oauth/token`, `/token_keys`, `/token_key`, `/login` (JSON info),
    /// `/.well-known/openid-configuration` and `POST /Users`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// The public half of the signing key (`/token_key`).
    pub fn token_key(&self) -> &TokenKey {
        &self.signing.public
    }

    /// UAA's URL: the issuer without `/oauth/token`.
    pub fn url(&self) -> &str {
        self.config
            .issuer
            .strip_suffix("/oauth/token")
            .unwrap_or(&self.config.issuer)
    }

    async fn ensure_admin(&self) -> Result<(), UaaError> {
        let scopes: Vec<String> = ADMIN_SCOPES.iter().map(|s| s.to_string()).collect();
        let password = &self.config.admin_password;
        match users::find_by_username(&self.db, "admin").await? {
            Some(mut admin) => {
                if !users::verify_password(password, &admin.password_hash).await {
                    admin.password_hash = users::hash_password(password).await?;
                }
                admin.scopes = scopes;
                users::update_credentials(&self.db, &admin).await
            }
            None => {
                let admin = User {
                    id: uuid::Uuid::new_v4().to_string(),
                    username: "admin".into(),
                    password_hash: users::hash_password(password).await?,
                    email: "admin".into(),
                    scopes,
                };
                users::insert(&self.db, &admin).await.map(|_| ())
            }
        }
    }

    /// Creates a user with UAA's default groups; returns its id.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        email: &str,
    ) -> Result<String, GrantError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_string(),
            password_hash: users::hash_password(password).await?,
            email: email.to_string(),
            scopes: USER_SCOPES.iter().map(|s| s.to_string()).collect(),
        };
        if users::insert(&self.db, &user).await? {
            Ok(user.id)
        } else {
            Err(GrantError::UsernameTaken(username.to_string()))
        }
    }

    /// The `password` grant for `client_id`; `scope` narrows the token's scopes.
    pub async fn password_grant(
        &self,
        client_id: &str,
        username: &str,
        password: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        check_client(client_id)?;
        let user = users::find_by_username(&self.db, username)
            .await?
            .ok_or(GrantError::BadCredentials)?;
        if !users::verify_password(password, &user.password_hash).await {
            return Err(GrantError::BadCredentials);
        }
        let scopes = grantable_scopes(&user, scope)?;
        self.issue(client_id, &user, scopes, "password", None)
    }

    /// The `refresh_token` grant: a new access token for the same user and scopes, as
    /// long as the refresh token is valid and the user's credentials did not change.
    pub async fn refresh_grant(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<TokenResponse, GrantError> {
        check_client(client_id)?;
        let invalid = |why: &str| GrantError::InvalidRefreshToken(why.to_string());
        let claims: TokenClaims = self
            .verifier
            .decode(refresh_token.trim(), None)
            .map_err(|e| GrantError::InvalidRefreshToken(e.to_string()))?;
        if !claims.is_refresh() {
            return Err(invalid("not a refresh token"));
        }
        if claims.claims.cid != client_id {
            return Err(invalid("issued to another client"));
        }
        let user = users::find_by_id(&self.db, &claims.claims.user_id)
            .await?
            .ok_or_else(|| invalid("the user no longer exists"))?;
        if rev_sig(client_id, &user) != claims.rev_sig {
            return Err(invalid("revoked"));
        }
        // Scopes the user lost since are dropped.
        let scopes = claims
            .claims
            .scope
            .into_iter()
            .filter(|s| user.scopes.contains(s))
            .collect();
        let mut response = self.issue(
            client_id,
            &user,
            scopes,
            &claims.claims.grant_type,
            Some(claims.auth_time),
        )?;
        // UAA's refresh tokens are not rotated.
        response.refresh_token = refresh_token.trim().to_string();
        Ok(response)
    }

    fn issue(
        &self,
        client_id: &str,
        user: &User,
        scopes: Vec<String>,
        grant_type: &str,
        auth_time: Option<i64>,
    ) -> Result<TokenResponse, GrantError> {
        let now = users::unix_now();
        let access_validity = self.config.access_token_validity.as_secs();
        let access_jti = uuid::Uuid::new_v4().to_string();
        let access = self.claims(
            client_id,
            user,
            &scopes,
            grant_type,
            now,
            auth_time,
            access_jti.clone(),
            access_validity,
        );
        let refresh_jti = format!("{}-r", uuid::Uuid::new_v4().simple());
        let refresh = self.claims(
            client_id,
            user,
            &scopes,
            grant_type,
            now,
            auth_time,
            refresh_jti,
            self.config.refresh_token_validity.as_secs(),
        );
        Ok(TokenResponse {
            access_token: self.sign(&access)?,
            token_type: "bearer",
            refresh_token: self.sign(&refresh)?,
            expires_in: access_validity,
            scope: scopes.join(" "),
            jti: access_jti,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn claims(
        &self,
        client_id: &str,
        user: &User,
        scopes: &[String],
        grant_type: &str,
        now: i64,
        auth_time: Option<i64>,
        jti: String,
        validity_secs: u64,
    ) -> TokenClaims {
        TokenClaims {
            claims: Claims {
                jti,
                sub: user.id.clone(),
                user_id: user.id.clone(),
                user_name: user.username.clone(),
                email: user.email.clone(),
                scope: scopes.to_vec(),
                client_id: client_id.to_string(),
                cid: client_id.to_string(),
                grant_type: grant_type.to_string(),
                iss: self.config.issuer.clone(),
                aud: audience(client_id, scopes),
                iat: now,
                exp: now.saturating_add(i64::try_from(validity_secs).unwrap_or(i64::MAX)),
                origin: "uaa".into(),
                zid: "uaa".into(),
            },
            azp: client_id.to_string(),
            auth_time: auth_time.unwrap_or(now),
            rev_sig: rev_sig(client_id, user),
        }
    }

    fn sign(&self, claims: &TokenClaims) -> Result<String, UaaError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_string());
        header.jku = Some(format!("{}/token_keys", self.url()));
        jsonwebtoken::encode(&header, claims, &self.signing.encoding)
            .map_err(|e| UaaError::Key(format!("signing a token: {e}")))
    }
}

fn check_client(client_id: &str) -> Result<(), GrantError> {
    if client_id == CF_CLIENT_ID {
        Ok(())
    } else {
        Err(GrantError::BadClient)
    }
}

/// The user's scopes the `cf` client may carry, narrowed to `requested` when given.
fn grantable_scopes(user: &User, requested: Option<&str>) -> Result<Vec<String>, GrantError> {
    let allowed: Vec<String> = user
        .scopes
        .iter()
        .filter(|s| CF_CLIENT_SCOPES.contains(&s.as_str()))
        .cloned()
        .collect();
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(allowed);
    };
    let mut scopes = Vec::new();
    for scope in requested.split_whitespace() {
        if !allowed.iter().any(|a| a == scope) {
            return Err(GrantError::InvalidScope(scope.to_string()));
        }
        scopes.push(scope.to_string());
    }
    Ok(scopes)
}

/// UAA's `aud`: the client id and each scope's resource (the part before its last
/// dot), without `uaa.none`.
fn audience(client_id: &str, scopes: &[String]) -> Vec<String> {
    let mut aud = vec![client_id.to_string()];
    let mut seen = BTreeSet::from([client_id.to_string()]);
    for scope in scopes.iter().filter(|s| s.as_str() != "uaa.none") {
        let resource = scope.rsplit_once('.').map_or(scope.as_str(), |(r, _)| r);
        if seen.insert(resource.to_string()) {
            aud.push(resource.to_string());
        }
    }
    aud
}

/// A short hash over what identifies the user's credentials (UAA hashes the same
/// fields); the client secret is always empty.
fn rev_sig(client_id: &str, user: &User) -> String {
    let mut h = Sha256::new();
    for part in [
        client_id,
        "",
        &user.id,
        &user.password_hash,
        &user.email,
        &user.username,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_config(dir: &tempfile::TempDir, admin_password: &str) -> UaaConfig {
        UaaConfig {
            database_url: format!("sqlite://{}?mode=rwc", dir.path().join("uaa.db").display()),
            issuer: "http://uaa.test/oauth/token".into(),
            admin_password: admin_password.into(),
            signing_key_path: dir.path().join("key.pem"),
            ..Default::default()
        }
    }

    pub(crate) async fn open_test_uaa(dir: &tempfile::TempDir) -> Arc<Uaa> {
        Uaa::open(test_config(dir, "s3cret")).await.unwrap()
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_carry_cf_claims() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let resp = uaa
            .password_grant("cf", "admin", "s3cret", None)
            .await
            .unwrap();
        assert_eq!(resp.token_type, "bearer");
        assert!(resp.scope.split(' ').any(|s| s == "cloud_controller.admin"));

        let claims = uaa
            .verifier()
            .verify(&format!("bearer {}", resp.access_token))
            .unwrap();
        assert!(claims.is_admin());
        assert_eq!(claims.user_name, "admin");
        assert_eq!(claims.jti, resp.jti);
        assert_eq!(claims.iss, "http://uaa.test/oauth/token");
        assert_eq!(claims.cid, "cf");
        assert_eq!(
            (claims.origin.as_str(), claims.zid.as_str()),
            ("uaa", "uaa")
        );
        for aud in ["cf", "cloud_controller", "openid", "scim", "doppler"] {
            assert!(
                claims.aud.iter().any(|a| a == aud),
                "{aud} in {:?}",
                claims.aud
            );
        }
        let header = jsonwebtoken::decode_header(&resp.access_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("key-1"));
        assert_eq!(header.jku.as_deref(), Some("http://uaa.test/token_keys"));

        // The refresh token is not an access token.
        assert!(matches!(
            uaa.verifier().verify(&resp.refresh_token),
            Err(TokenError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn tampered_forged_and_foreign_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let token = uaa
            .password_grant("cf", "admin", "s3cret", None)
            .await
            .unwrap()
            .access_token;
        let parts: Vec<&str> = token.split('.').collect();
        let reversed: String = parts[1].chars().rev().collect();
        let tampered = format!("{}.{}.{}", parts[0], reversed, parts[2]);
        assert!(matches!(
            uaa.verifier().verify(&tampered),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            uaa.verifier().verify("bearer "),
            Err(TokenError::Missing)
        ));
        assert!(uaa.verifier().verify("garbage").is_err());

        // alg none and HS256 (signed with the public key as secret) are refused.
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(uaa.verifier().verify(&none).is_err());
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(uaa.token_key().value.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            uaa.verifier().verify(&hs),
            Err(TokenError::Invalid(_))
        ));

        // Another issuer with the same key is not trusted.
        let other = TokenVerifier::from_keys(
            "http://elsewhere/oauth/token",
            std::slice::from_ref(uaa.token_key()),
        )
        .unwrap();
        assert!(other.verify(&token).is_err());
    }

    #[tokio::test]
    async fn wrong_passwords_unknown_users_and_clients_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        assert!(matches!(
            uaa.password_grant("cf", "admin", "nope", None).await,
            Err(GrantError::BadCredentials)
        ));
        assert!(matches!(
            uaa.password_grant("cf", "ghost", "s3cret", None).await,
            Err(GrantError::BadCredentials)
        ));
        assert!(matches!(
            uaa.password_grant("evil", "admin", "s3cret", None).await,
            Err(GrantError::BadClient)
        ));
        assert!(matches!(
            uaa.password_grant("cf", "admin", "s3cret", Some("uaa.admin"))
                .await,
            Err(GrantError::InvalidScope(_))
        ));
        let narrowed = uaa
            .password_grant("cf", "admin", "s3cret", Some("openid"))
            .await
            .unwrap();
        assert_eq!(narrowed.scope, "openid");
    }

    #[tokio::test]
    async fn expired_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let admin = users::find_by_username(&uaa.db, "admin")
            .await
            .unwrap()
            .unwrap();
        let scopes = vec!["cloud_controller.admin".to_string()];
        let long_ago = users::unix_now() - 3600;
        let claims = uaa.claims(
            "cf",
            &admin,
            &scopes,
            "password",
            long_ago,
            None,
            "jti-1".into(),
            60,
        );
        let token = uaa.sign(&claims).unwrap();
        assert_eq!(
            uaa.verifier().verify(&token).unwrap_err(),
            TokenError::Expired
        );
    }

    #[tokio::test]
    async fn refresh_grant_issues_a_new_access_token_until_the_password_changes() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        let first = uaa
            .password_grant("cf", "admin", "s3cret", None)
            .await
            .unwrap();
        let refreshed = uaa.refresh_grant("cf", &first.refresh_token).await.unwrap();
        assert_ne!(refreshed.jti, first.jti);
        assert_eq!(refreshed.scope, first.scope);
        assert_eq!(refreshed.refresh_token, first.refresh_token);
        assert!(uaa
            .verifier()
            .verify(&refreshed.access_token)
            .unwrap()
            .is_admin());

        assert!(matches!(
            uaa.refresh_grant("cf", &first.access_token).await,
            Err(GrantError::InvalidRefreshToken(_))
        ));
        drop(uaa);

        // Reopening with a new admin password keeps the key but revokes old tokens.
        let reopened = Uaa::open(test_config(&dir, "changed")).await.unwrap();
        assert!(reopened
            .password_grant("cf", "admin", "s3cret", None)
            .await
            .is_err());
        assert!(reopened.verifier().verify(&first.access_token).is_ok());
        assert!(matches!(
            reopened.refresh_grant("cf", &first.refresh_token).await,
            Err(GrantError::InvalidRefreshToken(_))
        ));
    }

    #[tokio::test]
    async fn created_users_get_default_scopes_and_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let uaa = open_test_uaa(&dir).await;
        uaa.create_user("dev", "pw", "dev@example.com")
            .await
            .unwrap();
        assert!(matches!(
            uaa.create_user("dev", "x", "").await,
            Err(GrantError::UsernameTaken(_))
        ));
        let resp = uaa.password_grant("cf", "dev", "pw", None).await.unwrap();
        let claims = uaa.verifier().verify(&resp.access_token).unwrap();
        assert!(!claims.is_admin());
        assert!(claims.has_scope("cloud_controller.write"));
        assert!(!claims.has_scope("scim.me"), "not a cf client scope");
    }
}
