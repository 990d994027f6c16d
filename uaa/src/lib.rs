//! UAA: the OAuth2/OIDC server. Issues RS256 JWTs for users (password, refresh_token and
//! authorization_code with PKCE after a browser login) and clients
//! (client_credentials), publishes its verification keys, answers
//! `/check_token`, `/introspect` and `/userinfo`, manages users and groups over SCIM and
//! clients over `/oauth/clients`, and hands the other components a [`TokenVerifier`]
//! that checks access tokens offline against those keys.
//!
//! Users, groups, clients, failed logins, login sessions and authorization codes live in SQL (SQLite or PostgreSQL); the
//! `admin` user and the `cf` client (and the `admin` client, when configured) are
//! (re)written on every open. One zone exists, `uaa`. `metrics` counts tokens and
//! failed logins for `/metrics`.
//!
//! Revocation works as in UAA: every token carries a `rev_sig` over the client's
//! secret and the user's id, password hash, email and name. Changing a password or
//! deleting a user changes or removes what it was computed from, so refresh tokens are
//! refused from then on and `/check_token` reports the access tokens as revoked. Access
//! tokens checked offline (by [`TokenVerifier::verify`]) stay valid until they expire,
//! as they do against a real UAA.

mod authorize;
mod clients;
mod http;
mod keys;
mod metrics;
mod scim;
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

pub use authorize::{Authorization, AuthorizeError, AuthorizeRequest, SessionUser};
pub use clients::{ClientDetails, ADMIN_CLIENT_ID};
pub use keys::{TokenKey, KEY_ID};
pub use metrics::METRICS_SCOPES;
pub use scim::{ScimGroup, ScimUser, UserChanges};
pub use tokens::{Claims, TokenError, TokenVerifier, CLOUD_CONTROLLER_AUDIENCE};

use clients::Client;
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

/// Groups that always exist besides the scopes above (UAA's and CF's usual ones).
const OTHER_GROUPS: &[&str] = &[
    "uaa.admin",
    "uaa.resource",
    "clients.write",
    "clients.secret",
    "clients.admin",
    "cloud_controller.admin_read_only",
    "cloud_controller.global_auditor",
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
    #[error("Unauthorized grant type: {0}")]
    UnauthorizedGrantType(String),
    #[error("Your account has been locked because of too many failed attempts to login.")]
    AccountLocked,
    #[error("Invalid refresh token: {0}")]
    InvalidRefreshToken(String),
    /// An authorization code that is unknown, used, expired, or not proven by PKCE.
    #[error("{0}")]
    InvalidCode(String),
    #[error("Invalid scope: {0}")]
    InvalidScope(String),
    #[error("Username already in use: {0}")]
    UsernameTaken(String),
    #[error(transparent)]
    Uaa(#[from] UaaError),
}

/// Why a SCIM (`/Users`, `/Groups`) or `/oauth/clients` operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScimError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("Invalid filter expression: {0}")]
    InvalidFilter(String),
    /// `If-Match` named another version than the stored one.
    #[error("Version mismatch: the resource was changed meanwhile")]
    VersionMismatch,
    #[error("Old password is incorrect")]
    OldPasswordIncorrect,
    #[error(transparent)]
    Uaa(#[from] UaaError),
}

/// UAA's lockout policy: after `lockout_after_failures` failed logins within
/// `count_failures_within` (none counts from before the user's last successful login),
/// logins are refused, the right password too, until `lockout_period` has passed since
/// the last failure. Failures count per user. UAA's defaults
/// (`authentication.policy.lockoutAfterFailures`, `countFailuresWithinSeconds`,
/// `lockoutPeriodSeconds`): 5 failures, 1,200 s, 300 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub lockout_after_failures: u32,
    pub count_failures_within: Duration,
    pub lockout_period: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            lockout_after_failures: 5,
            count_failures_within: Duration::from_secs(1200),
            lockout_period: Duration::from_secs(300),
        }
    }
}

impl LockoutPolicy {
    /// The earliest failed login (unix seconds) that still counts at `now`.
    pub fn counted_since(&self, now: i64) -> i64 {
        now.saturating_sub(secs(self.count_failures_within))
    }

    /// Whether a user is locked out at `now` with `failures` failed logins counted (since
    /// [`LockoutPolicy::counted_since`]), the latest at `latest_failure`.
    pub fn locks(&self, failures: i64, latest_failure: Option<i64>, now: i64) -> bool {
        let Some(latest) = latest_failure else {
            return false;
        };
        failures >= i64::from(self.lockout_after_failures)
            && now < latest.saturating_add(secs(self.lockout_period))
    }
}

/// Whole seconds of `d`, for comparing with the unix times in the database.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A key that signed tokens before a rotation and still verifies them: a PKCS#8 RSA
/// private key or a `BEGIN PUBLIC KEY` PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    pub kid: String,
    pub path: PathBuf,
}

/// `Debug` shows no secret: not the admin password nor the client secret, nor a database
/// URL's password.
#[derive(Clone)]
pub struct UaaConfig {
    /// `sqlite://path?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// The `iss` claim, CF style: `<uaa url>/oauth/token`.
    pub issuer: String,
    /// The `admin` user's password; the user is created or updated to it on open.
    pub admin_password: String,
    /// PEM of the RSA signing key; generated there on first open.
    pub signing_key_path: PathBuf,
    /// The `kid` of the signing key. Rotating: point `signing_key_path` at a new file
    /// with a new `kid`, and list the old key in `previous_keys`. Default `key-1`.
    pub signing_key_id: String,
    /// Keys that no longer sign but still verify, until removed from this list.
    pub previous_keys: Vec<PreviousKey>,
    /// UAA's default access token lifetime: 43200 s (12 hours).
    pub access_token_validity: Duration,
    /// UAA's default refresh token lifetime: 2592000 s (30 days).
    pub refresh_token_validity: Duration,
    /// The secret of the `admin` client (client_credentials, uaa.admin, clients.*,
    /// scim.*); no admin client when `None` (the default).
    pub admin_client_secret: Option<String>,
    /// Failed-login lockout; UAA's defaults.
    pub lockout: LockoutPolicy,
}

impl std::fmt::Debug for UaaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaaConfig")
            .field("database_url", &wf_db::redacted_url(&self.database_url))
            .field("issuer", &self.issuer)
            .field("signing_key_path", &self.signing_key_path)
            .field("signing_key_id", &self.signing_key_id)
            .field("previous_keys", &self.previous_keys)
            .field("access_token_validity", &self.access_token_validity)
            .field("refresh_token_validity", &self.refresh_token_validity)
            .field("admin_client", &self.admin_client_secret.is_some())
            .field("lockout", &self.lockout)
            .finish_non_exhaustive()
    }
}

impl Default for UaaConfig {
    fn default() -> Self {
        UaaConfig {
            database_url: "sqlite::memory:".into(),
            issuer: "http://localhost/oauth/token".into(),
            admin_password: "admin".into(),
            signing_key_path: PathBuf::from("uaa-signing-key.pem"),
            signing_key_id: KEY_ID.into(),
            previous_keys: Vec::new(),
            access_token_validity: Duration::from_secs(43_200),
            refresh_token_validity: Duration::from_secs(2_592_000),
            admin_client_secret: None,
            lockout: LockoutPolicy::default(),
        }
    }
}

/// The body of a successful `/oauth/token` response.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Empty (and left out of the JSON) for client_credentials tokens.
    #[serde(skip_serializing_if = "String::is_empty")]
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
    /// Every verification key, the signing key's first (`/token_keys`).
    keys: Vec<TokenKey>,
    verifier: TokenVerifier,
    /// Tokens issued and failed logins, for `/metrics`.
    counters: metrics::Counters,
}

impl Uaa {
    pub async fn open(config: UaaConfig) -> Result<Arc<Uaa>, UaaError> {
        let db = users::connect(&config.database_url).await?;
        let signing = keys::load_or_generate(
            config.signing_key_path.clone(),
            config.signing_key_id.clone(),
        )
        .await?;
        let mut all_keys = vec![signing.public.clone()];
        for previous in &config.previous_keys {
            if all_keys.iter().any(|k| k.kid == previous.kid) {
                return Err(UaaError::Key(format!(
                    "key id {} is used twice",
                    previous.kid
                )));
            }
            all_keys.push(
                keys::load_verification_key(previous.path.clone(), previous.kid.clone()).await?,
            );
        }
        let verifier = TokenVerifier::from_keys(&config.issuer, &all_keys)
            .map_err(|e| UaaError::Key(e.to_string()))?;
        let uaa = Uaa {
            config,
            db,
            signing,
            keys: all_keys,
            verifier,
            counters: metrics::Counters::default(),
        };
        uaa.ensure_groups().await?;
        uaa.ensure_admin().await?;
        uaa.ensure_clients().await?;
        Ok(Arc::new(uaa))
    }

    /// All of UAA's HTTP API: `/oauth/token`, `/token_keys`, `/token_key`,
    /// `/check_token`, `/introspect`, `/userinfo`, the login page and `/login.do`,
    /// `/oauth/authorize`, `/logout.do`, `/.well-known/openid-configuration`, SCIM
    /// `/Users` and `/Groups`, `/oauth/clients`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// The public half of the active signing key (`/token_key`).
    pub fn token_key(&self) -> &TokenKey {
        &self.signing.public
    }

    /// Every key that verifies tokens, the active one first (`/token_keys`).
    pub fn token_keys(&self) -> &[TokenKey] {
        &self.keys
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
                let mut changed = false;
                if !users::verify_password(password, &admin.password_hash).await {
                    admin.password_hash = users::hash_password(password).await?;
                    admin.password_last_modified = users::unix_now();
                    changed = true;
                }
                for scope in scopes {
                    if !admin.scopes.contains(&scope) {
                        admin.scopes.push(scope);
                        changed = true;
                    }
                }
                if changed && !users::update(&self.db, &admin).await? {
                    return Err(UaaError::Database(
                        "the admin user changed while it was updated".into(),
                    ));
                }
                Ok(())
            }
            None => {
                let admin = User::new(
                    "admin",
                    users::hash_password(password).await?,
                    "admin",
                    scopes,
                );
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
        let user = User::new(
            username,
            users::hash_password(password).await?,
            email,
            USER_SCOPES.iter().map(|s| s.to_string()).collect(),
        );
        if users::insert(&self.db, &user).await? {
            Ok(user.id)
        } else {
            Err(GrantError::UsernameTaken(username.to_string()))
        }
    }

    /// The `password` grant for `client_id`; `scope` narrows the token's scopes. The
    /// caller authenticated the client (`/oauth/token` does). Wrong passwords count
    /// towards the [`LockoutPolicy`]; a locked account is refused even with the right one.
    pub async fn password_grant(
        &self,
        client_id: &str,
        username: &str,
        password: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let client = self.client_for_grant(client_id, "password").await?;
        let user = self.authenticate_user(username, password).await?;
        let scopes = grantable_scopes(&client, &user, scope)?;
        self.issue(&client, Some(&user), scopes, "password", None)
    }

    /// Whether the user's failed logins lock it out now.
    async fn is_locked(&self, user_id: &str) -> Result<bool, UaaError> {
        let policy = &self.config.lockout;
        let now = users::unix_now();
        let (count, latest) =
            users::failed_logins_since(&self.db, user_id, policy.counted_since(now)).await?;
        Ok(policy.locks(count, latest, now))
    }

    /// The `refresh_token` grant: a new access token for the same user and scopes, as
    /// long as the refresh token is valid and the user's credentials did not change.
    pub async fn refresh_grant(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<TokenResponse, GrantError> {
        let client = self.client_for_grant(client_id, "refresh_token").await?;
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
        if rev_sig(&client, Some(&user)) != claims.rev_sig {
            return Err(invalid("revoked"));
        }
        if !user.active {
            return Err(invalid("the user is not active"));
        }
        // Scopes the user lost since are dropped.
        let scopes = claims
            .claims
            .scope
            .into_iter()
            .filter(|s| user.scopes.contains(s))
            .collect();
        let mut response = self.issue(
            &client,
            Some(&user),
            scopes,
            &claims.claims.grant_type,
            claims.auth_time,
        )?;
        // UAA's refresh tokens are not rotated.
        response.refresh_token = refresh_token.trim().to_string();
        Ok(response)
    }

    /// What `/check_token` answers: the token's claims if it is a valid access token of
    /// this UAA (any audience) that has not been revoked.
    pub async fn check_token(&self, token: &str) -> Result<Claims, TokenError> {
        self.checked_claims(token).await.map(|c| c.claims)
    }

    /// The claims of a valid, unrevoked access token, UAA-internal ones included.
    pub(crate) async fn checked_claims(
        &self,
        token_or_bearer: &str,
    ) -> Result<TokenClaims, TokenError> {
        let token = tokens::strip_bearer(token_or_bearer)?;
        let claims: TokenClaims = self.verifier.decode(token, None)?;
        if claims.is_refresh() {
            return Err(TokenError::Invalid(
                "a refresh token is not an access token".into(),
            ));
        }
        self.check_revoked(&claims).await?;
        Ok(claims)
    }

    /// Whether the token was revoked: its client or user is gone, or their credentials
    /// changed since it was issued (`rev_sig`). Only online checks can see this.
    pub(crate) async fn check_revoked(&self, claims: &TokenClaims) -> Result<(), TokenError> {
        let revoked = || TokenError::Invalid("the token has been revoked".into());
        let db_failed = |e: UaaError| {
            tracing::error!(error = %e, "checking a token's revocation");
            TokenError::Invalid("the token could not be checked".into())
        };
        let client = clients::find(&self.db, &claims.claims.cid)
            .await
            .map_err(db_failed)?
            .ok_or_else(revoked)?;
        let user = if claims.claims.user_id.is_empty() {
            None
        } else {
            let user = users::find_by_id(&self.db, &claims.claims.user_id)
                .await
                .map_err(db_failed)?
                .ok_or_else(revoked)?;
            if !user.active {
                return Err(revoked());
            }
            Some(user)
        };
        if rev_sig(&client, user.as_ref()) == claims.rev_sig {
            Ok(())
        } else {
            Err(revoked())
        }
    }

    /// Signs an access token, and a refresh token when there is a user and the client
    /// has the `refresh_token` grant.
    fn issue(
        &self,
        client: &Client,
        user: Option<&User>,
        scopes: Vec<String>,
        grant_type: &str,
        auth_time: Option<i64>,
    ) -> Result<TokenResponse, GrantError> {
        self.counters.token_issued(grant_type);
        let now = users::unix_now();
        let access_validity = client
            .details
            .access_token_validity
            .unwrap_or(self.config.access_token_validity.as_secs());
        let access_jti = uuid::Uuid::new_v4().to_string();
        let access = self.claims(
            client,
            user,
            &scopes,
            grant_type,
            now,
            auth_time,
            access_jti.clone(),
            access_validity,
        );
        let refresh_token = match user {
            Some(user) if client.has_grant("refresh_token") => {
                let refresh_validity = client
                    .details
                    .refresh_token_validity
                    .unwrap_or(self.config.refresh_token_validity.as_secs());
                let refresh = self.claims(
                    client,
                    Some(user),
                    &scopes,
                    grant_type,
                    now,
                    auth_time,
                    format!("{}-r", uuid::Uuid::new_v4().simple()),
                    refresh_validity,
                );
                self.sign(&refresh)?
            }
            _ => String::new(),
        };
        Ok(TokenResponse {
            access_token: self.sign(&access)?,
            token_type: "bearer",
            refresh_token,
            expires_in: access_validity,
            scope: scopes.join(" "),
            jti: access_jti,
        })
    }

    /// A token's claims: a user's (`sub` = user id) or, without a user, the client's
    /// own (`sub` = client id, `authorities` = its scopes, no user claims).
    #[allow(clippy::too_many_arguments)]
    fn claims(
        &self,
        client: &Client,
        user: Option<&User>,
        scopes: &[String],
        grant_type: &str,
        now: i64,
        auth_time: Option<i64>,
        jti: String,
        validity_secs: u64,
    ) -> TokenClaims {
        let client_id = client.id().to_string();
        let (sub, user_id, user_name, email, origin, authorities) = match user {
            Some(u) => (
                u.id.clone(),
                u.id.clone(),
                u.username.clone(),
                u.email.clone(),
                "uaa".to_string(),
                Vec::new(),
            ),
            None => (
                client_id.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                scopes.to_vec(),
            ),
        };
        TokenClaims {
            claims: Claims {
                jti,
                sub,
                user_id,
                user_name,
                email,
                scope: scopes.to_vec(),
                authorities,
                client_id: client_id.clone(),
                cid: client_id.clone(),
                grant_type: grant_type.to_string(),
                iss: self.config.issuer.clone(),
                aud: audience(&client_id, scopes),
                iat: now,
                exp: now.saturating_add(i64::try_from(validity_secs).unwrap_or(i64::MAX)),
                origin,
                zid: "uaa".into(),
            },
            azp: client_id,
            auth_time: user.map(|_| auth_time.unwrap_or(now)),
            rev_sig: rev_sig(client, user),
        }
    }

    fn sign(&self, claims: &TokenClaims) -> Result<String, UaaError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.signing.public.kid.clone());
        header.jku = Some(format!("{}/token_keys", self.url()));
        jsonwebtoken::encode(&header, claims, &self.signing.encoding)
            .map_err(|e| UaaError::Key(format!("signing a token: {e}")))
    }
}

/// The user's scopes the client may carry, narrowed to `requested` when given.
fn grantable_scopes(
    client: &Client,
    user: &User,
    requested: Option<&str>,
) -> Result<Vec<String>, GrantError> {
    let allowed: Vec<String> = user
        .scopes
        .iter()
        .filter(|s| client.details.scope.contains(s))
        .cloned()
        .collect();
    narrow_scopes(allowed, requested)
}

/// `allowed`, or the space-separated `requested` scopes when given (each must be allowed).
pub(crate) fn narrow_scopes(
    allowed: Vec<String>,
    requested: Option<&str>,
) -> Result<Vec<String>, GrantError> {
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(allowed);
    };
    let mut scopes = Vec::new();
    for scope in requested.split_whitespace() {
        if !allowed.iter().any(|a| a == scope) {
            return Err(GrantError::InvalidScope(scope.to_string()));
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
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

/// A short hash over what identifies the credentials behind a token (UAA hashes the
/// same fields): the client's id and secret (hash), and the user's id, password hash,
/// email and name when there is a user.
fn rev_sig(client: &Client, user: Option<&User>) -> String {
    let mut h = Sha256::new();
    let mut parts = vec![client.id(), client.secret_hash.as_str()];
    if let Some(user) = user {
        parts.extend([
            user.id.as_str(),
            user.password_hash.as_str(),
            user.email.as_str(),
            user.username.as_str(),
        ]);
    }
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_file(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}?mode=rwc", dir.path().join("uaa.db").display())
    }

    /// The databases the user store is tested on: a SQLite file in `dir`, and a fresh
    /// PostgreSQL database when `WF_TEST_POSTGRES_URL` is set (dropped with its guard).
    async fn test_databases(
        dir: &tempfile::TempDir,
    ) -> Vec<(String, Option<wf_db::testing::TestDatabase>)> {
        let mut databases = vec![(sqlite_file(dir), None)];
        if let Some(db) = wf_db::testing::postgres().await {
            databases.push((db.url().to_string(), Some(db)));
        }
        databases
    }

    fn test_config(database_url: &str, dir: &tempfile::TempDir, admin_password: &str) -> UaaConfig {
        UaaConfig {
            database_url: database_url.to_string(),
            issuer: "http://uaa.test/oauth/token".into(),
            admin_password: admin_password.into(),
            signing_key_path: dir.path().join("key.pem"),
            ..Default::default()
        }
    }

    pub(crate) async fn open_test_uaa(dir: &tempfile::TempDir) -> Arc<Uaa> {
        Uaa::open(test_config(&sqlite_file(dir), dir, "s3cret"))
            .await
            .unwrap()
    }

    #[test]
    fn lockout_matches_uaas_policy() {
        let policy = LockoutPolicy::default();
        assert_eq!(
            (
                policy.lockout_after_failures,
                policy.count_failures_within.as_secs(),
                policy.lockout_period.as_secs()
            ),
            (5, 1200, 300)
        );
        let now = 10_000;
        assert_eq!(policy.counted_since(now), now - 1200);
        // Four failures lock nothing; the fifth locks for 300 s after itself.
        assert!(!policy.locks(4, Some(now), now));
        assert!(policy.locks(5, Some(now - 10), now));
        assert!(policy.locks(5, Some(now - 299), now));
        assert!(!policy.locks(5, Some(now - 300), now));
        assert!(!policy.locks(0, None, now));
        let strict = LockoutPolicy {
            lockout_after_failures: 1,
            count_failures_within: Duration::from_secs(60),
            lockout_period: Duration::from_secs(3600),
        };
        assert!(strict.locks(1, Some(now - 3599), now));
        assert_eq!(strict.counted_since(now), now - 60);
    }

    #[tokio::test]
    async fn failures_count_per_user_and_the_lock_ends_with_its_period() {
        let dir = tempfile::tempdir().unwrap();
        let config = UaaConfig {
            lockout: LockoutPolicy {
                lockout_after_failures: 3,
                count_failures_within: Duration::from_secs(60),
                lockout_period: Duration::from_secs(2),
            },
            ..test_config(&sqlite_file(&dir), &dir, "s3cret")
        };
        let uaa = Uaa::open(config).await.unwrap();
        uaa.create_user("alice", "right", "a@example.com")
            .await
            .unwrap();
        uaa.create_user("bob", "right", "b@example.com")
            .await
            .unwrap();
        for _ in 0..3 {
            let err = uaa.authenticate_user("alice", "wrong").await.unwrap_err();
            assert!(matches!(err, GrantError::BadCredentials), "{err}");
        }
        let err = uaa.authenticate_user("alice", "right").await.unwrap_err();
        assert!(matches!(err, GrantError::AccountLocked), "{err}");
        // Bob's logins are his own.
        uaa.authenticate_user("bob", "right").await.unwrap();
        // Two seconds after the last failure the right password works again, and clears
        // the count: one more failure does not lock.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while uaa.authenticate_user("alice", "right").await.is_err() {
            assert!(std::time::Instant::now() < deadline, "still locked");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(uaa.authenticate_user("alice", "wrong").await.is_err());
        uaa.authenticate_user("alice", "right").await.unwrap();
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

        // A token for another audience (no cloud_controller scope) is not the CC's.
        let openid_only = uaa
            .password_grant("cf", "admin", "s3cret", Some("openid"))
            .await
            .unwrap()
            .access_token;
        assert!(matches!(
            uaa.verifier().verify(&openid_only),
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
        let cf = clients::find(&uaa.db, "cf").await.unwrap().unwrap();
        let claims = uaa.claims(
            &cf,
            Some(&admin),
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
        for (url, _db) in test_databases(&dir).await {
            refresh_until_the_password_changes(&url, &dir).await;
        }
    }

    async fn refresh_until_the_password_changes(database_url: &str, dir: &tempfile::TempDir) {
        let uaa = Uaa::open(test_config(database_url, dir, "s3cret"))
            .await
            .unwrap();
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
        let reopened = Uaa::open(test_config(database_url, dir, "changed"))
            .await
            .unwrap();
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
        for (url, _db) in test_databases(&dir).await {
            created_users_on(&url, &dir).await;
        }
    }

    async fn created_users_on(database_url: &str, dir: &tempfile::TempDir) {
        let uaa = Uaa::open(test_config(database_url, dir, "s3cret"))
            .await
            .unwrap();
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
