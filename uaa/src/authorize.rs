//! The browser side of UAA: login sessions (what the `JSESSIONID` cookie stands for)
//! and the `authorization_code` grant with PKCE (RFC 7636).
//!
//! A session is made by a successful login on the login page and lasts
//! [`SESSION_LIFETIME`]; it ends at logout, when the user's password changes, or when
//! the user is deleted or deactivated. `/oauth/authorize` turns a session into a
//! one-time code bound to the client, the redirect URI, the scopes and the PKCE
//! challenge; `/oauth/token` exchanges it within [`CODE_LIFETIME`]. Session ids and
//! codes are random 256-bit values stored only as their SHA-256.

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::clients::Client;
use crate::users::{self, db_error, unix_now, User};
use crate::{grantable_scopes, GrantError, TokenResponse, Uaa, UaaError};

/// UAA's default session idle timeout: 30 minutes.
pub const SESSION_LIFETIME_SECS: i64 = 1800;
/// UAA's authorization codes expire after 5 minutes.
pub const CODE_LIFETIME_SECS: i64 = 300;

/// An `/oauth/authorize` request (its query parameters).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AuthorizeRequest {
    #[serde(default)]
    pub response_type: String,
    #[serde(default)]
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// Why `/oauth/authorize` refused. The first two are shown to the user: redirecting to
/// an unverified URI would make UAA an open redirector. The others go back to the
/// client's redirect URI as `error=<code>` (RFC 6749 §4.1.2.1).
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("No client with requested id: {0}")]
    UnknownClient(String),
    #[error("Invalid redirect {0} did not match one of the registered values")]
    BadRedirectUri(String),
    #[error("Unsupported response types: {0}")]
    UnsupportedResponseType(String),
    #[error("The client is not allowed the authorization_code grant")]
    UnauthorizedClient,
    #[error("Invalid scope: {0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Uaa(#[from] UaaError),
}

impl AuthorizeError {
    /// The RFC 6749 error code sent back to the client, or `None` when the error must
    /// be shown to the user instead.
    pub fn redirect_code(&self) -> Option<&'static str> {
        match self {
            AuthorizeError::UnknownClient(_) | AuthorizeError::BadRedirectUri(_) => None,
            AuthorizeError::UnsupportedResponseType(_) => Some("unsupported_response_type"),
            AuthorizeError::UnauthorizedClient => Some("unauthorized_client"),
            AuthorizeError::InvalidScope(_) => Some("invalid_scope"),
            AuthorizeError::InvalidRequest(_) => Some("invalid_request"),
            AuthorizeError::Uaa(_) => Some("server_error"),
        }
    }
}

/// A granted authorization: where to send the browser with the code.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub redirect_uri: String,
    pub code: String,
}

/// A logged-in browser's user.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user_id: String,
    pub user_name: String,
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(secret: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `verifier` answers `challenge` by `method` (RFC 7636 §4.6). Verifiers are
/// 43-128 characters of `[A-Za-z0-9-._~]`.
fn pkce_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed {
        return false;
    }
    let computed = match method {
        "S256" => digest(verifier),
        "plain" => verifier.to_string(),
        _ => return false,
    };
    // Constant time: the challenge is public, but the comparison need not leak.
    computed.len() == challenge.len()
        && computed
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether `uri` is allowed by one of the client's registered redirect URIs: equal, or
/// under a registration ending in `**` (UAA's wildcard).
fn redirect_allowed(client: &Client, uri: &str) -> bool {
    client
        .details
        .redirect_uris
        .iter()
        .any(|registered| match registered.strip_suffix("**") {
            Some(prefix) => uri.starts_with(prefix),
            None => registered == uri,
        })
}

impl Uaa {
    /// Checks a username and password under the lockout policy: the user when they
    /// match (failures cleared), else the failure is counted.
    pub(crate) async fn authenticate_user(
        &self,
        username: &str,
        password: &str,
    ) -> Result<User, GrantError> {
        let user = users::find_by_username(&self.db, username)
            .await?
            .ok_or(GrantError::BadCredentials)?;
        if self.is_locked(&user.id).await? {
            self.counters.locked_attempt();
            return Err(GrantError::AccountLocked);
        }
        if !users::verify_password(password, &user.password_hash).await {
            self.counters.failed_login();
            users::record_failed_login(&self.db, &user.id, unix_now()).await?;
            return Err(GrantError::BadCredentials);
        }
        if !user.active {
            return Err(GrantError::BadCredentials);
        }
        users::clear_failed_logins(&self.db, &user.id).await?;
        Ok(user)
    }

    /// Logs a browser in: a new session id for the `JSESSIONID` cookie.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, GrantError> {
        let user = self.authenticate_user(username, password).await?;
        let session = random_secret();
        let now = unix_now();
        sqlx::query(
            "INSERT INTO login_sessions (id_hash, user_id, password_fingerprint, auth_time,
                 expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest(&session))
        .bind(user.id.clone())
        .bind(digest(&user.password_hash))
        .bind(now)
        .bind(now + SESSION_LIFETIME_SECS)
        .execute(&self.db)
        .await
        .map_err(db_error)?;
        Ok(session)
    }

    /// The user and login time of a live session, extending it (an idle timeout).
    async fn session(&self, session: &str) -> Result<Option<(User, i64)>, UaaError> {
        let now = unix_now();
        let id_hash = digest(session);
        let row = sqlx::query(
            "SELECT user_id, password_fingerprint, auth_time FROM login_sessions
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash.clone())
        .bind(now)
        .fetch_optional(&self.db)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let user_id: String = row.try_get("user_id").map_err(db_error)?;
        let fingerprint: String = row.try_get("password_fingerprint").map_err(db_error)?;
        let auth_time: i64 = row.try_get("auth_time").map_err(db_error)?;
        let user = users::find_by_id(&self.db, &user_id).await?;
        match user {
            Some(user) if user.active && digest(&user.password_hash) == fingerprint => {
                sqlx::query("UPDATE login_sessions SET expires_at = $2 WHERE id_hash = $1")
                    .bind(id_hash)
                    .bind(now + SESSION_LIFETIME_SECS)
                    .execute(&self.db)
                    .await
                    .map_err(db_error)?;
                Ok(Some((user, auth_time)))
            }
            _ => {
                self.logout(session).await?;
                Ok(None)
            }
        }
    }

    /// Who a session cookie belongs to, if it is live.
    pub async fn session_user(&self, session: &str) -> Result<Option<SessionUser>, UaaError> {
        Ok(self.session(session).await?.map(|(user, _)| SessionUser {
            user_id: user.id,
            user_name: user.username,
        }))
    }

    /// Ends a session (and, while at it, every expired one).
    pub async fn logout(&self, session: &str) -> Result<(), UaaError> {
        sqlx::query("DELETE FROM login_sessions WHERE id_hash = $1 OR expires_at <= $2")
            .bind(digest(session))
            .bind(unix_now())
            .execute(&self.db)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Whether `client_id` may be sent to `uri` after logout (a registered redirect URI).
    pub async fn logout_redirect_allowed(
        &self,
        client_id: &str,
        uri: &str,
    ) -> Result<bool, UaaError> {
        let client = crate::clients::find(&self.db, client_id).await?;
        Ok(client.is_some_and(|c| redirect_allowed(&c, uri)))
    }

    /// Validates an `/oauth/authorize` request without a session: the redirect URI the
    /// browser may be sent to with an error, or an error to show.
    pub async fn authorize_redirect_uri(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<String, AuthorizeError> {
        let client = crate::clients::find(&self.db, &request.client_id)
            .await?
            .ok_or_else(|| AuthorizeError::UnknownClient(request.client_id.clone()))?;
        let redirect_uri = match &request.redirect_uri {
            Some(uri) if redirect_allowed(&client, uri) => uri.clone(),
            Some(uri) => return Err(AuthorizeError::BadRedirectUri(uri.clone())),
            // Without one, the client's only registered, non-wildcard URI.
            None => match client.details.redirect_uris.as_slice() {
                [only] if !only.ends_with("**") => only.clone(),
                _ => return Err(AuthorizeError::BadRedirectUri("(none)".into())),
            },
        };
        Ok(redirect_uri)
    }

    /// Grants an authorization code to the session's user for `request`.
    pub async fn authorize(
        &self,
        session: &str,
        request: &AuthorizeRequest,
    ) -> Result<Option<Authorization>, AuthorizeError> {
        let redirect_uri = self.authorize_redirect_uri(request).await?;
        let Some((user, auth_time)) = self.session(session).await? else {
            return Ok(None);
        };
        let client = crate::clients::find(&self.db, &request.client_id)
            .await?
            .ok_or_else(|| AuthorizeError::UnknownClient(request.client_id.clone()))?;
        if request.response_type != "code" {
            return Err(AuthorizeError::UnsupportedResponseType(
                request.response_type.clone(),
            ));
        }
        if !client.has_grant("authorization_code") {
            return Err(AuthorizeError::UnauthorizedClient);
        }
        let (challenge, method) = match (&request.code_challenge, &request.code_challenge_method) {
            (None, None) if client.secret_hash.is_empty() => {
                return Err(AuthorizeError::InvalidRequest(
                    "public clients must use PKCE (code_challenge)".into(),
                ))
            }
            (None, None) => (String::new(), String::new()),
            (Some(c), m) => {
                let method = m.as_deref().unwrap_or("plain");
                if method != "S256" && method != "plain" {
                    return Err(AuthorizeError::InvalidRequest(format!(
                        "Unsupported code challenge method: {method}"
                    )));
                }
                let valid = (43..=128).contains(&c.len())
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                if !valid {
                    return Err(AuthorizeError::InvalidRequest(
                        "Code challenge length must between 43 and 128 and use only [A-Z],[a-z],[0-9],_,.,-,~ characters".into(),
                    ));
                }
                (c.clone(), method.to_string())
            }
            (None, Some(_)) => {
                return Err(AuthorizeError::InvalidRequest(
                    "code_challenge_method without code_challenge".into(),
                ))
            }
        };
        let scopes =
            grantable_scopes(&client, &user, request.scope.as_deref()).map_err(|e| match e {
                GrantError::InvalidScope(s) => AuthorizeError::InvalidScope(s),
                GrantError::Uaa(e) => AuthorizeError::Uaa(e),
                other => AuthorizeError::InvalidRequest(other.to_string()),
            })?;
        let code = random_secret();
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri,
                 scopes, code_challenge, code_challenge_method, auth_time, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(digest(&code))
        .bind(client.id().to_string())
        .bind(user.id.clone())
        // What the token request must repeat: the URI as given, or "" when defaulted.
        .bind(request.redirect_uri.clone().unwrap_or_default())
        .bind(scopes.join(" "))
        .bind(challenge)
        .bind(method)
        .bind(auth_time)
        .bind(unix_now() + CODE_LIFETIME_SECS)
        .execute(&self.db)
        .await
        .map_err(db_error)?;
        Ok(Some(Authorization { redirect_uri, code }))
    }

    /// The `authorization_code` grant: exchanges a code (once) for tokens. The client
    /// must be the one the code was issued to, repeat the redirect URI it gave, and
    /// prove the PKCE challenge when there was one.
    pub async fn authorization_code_grant(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let client = self
            .client_for_grant(client_id, "authorization_code")
            .await?;
        let invalid = |why: &str| GrantError::InvalidCode(why.to_string());
        // Deleting first makes the code single-use even under concurrent exchanges.
        let row = sqlx::query(
            "DELETE FROM authorization_codes WHERE code_hash = $1
             RETURNING client_id, user_id, redirect_uri, scopes, code_challenge,
                       code_challenge_method, auth_time, expires_at",
        )
        .bind(digest(code.trim()))
        .fetch_optional(&self.db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| invalid(&format!("Invalid authorization code: {}", code.trim())))?;
        let get = |column: &str| -> Result<String, GrantError> {
            Ok(row.try_get::<String, _>(column).map_err(db_error)?)
        };
        let expires_at: i64 = row.try_get("expires_at").map_err(db_error)?;
        let auth_time: i64 = row.try_get("auth_time").map_err(db_error)?;
        if expires_at <= unix_now() {
            return Err(invalid("the authorization code expired"));
        }
        if get("client_id")? != client.id() {
            return Err(invalid("the code was issued to another client"));
        }
        let expected_uri = get("redirect_uri")?;
        if !expected_uri.is_empty() && redirect_uri != Some(expected_uri.as_str()) {
            return Err(invalid("Redirect URI mismatch."));
        }
        let challenge = get("code_challenge")?;
        if !challenge.is_empty() {
            let method = get("code_challenge_method")?;
            let Some(verifier) = code_verifier else {
                return Err(invalid("Code verifier not provided"));
            };
            if !pkce_matches(&method, &challenge, verifier) {
                return Err(invalid("Invalid code verifier"));
            }
        }
        let user = users::find_by_id(&self.db, &get("user_id")?)
            .await?
            .filter(|u| u.active)
            .ok_or_else(|| invalid("the user no longer exists"))?;
        // Scopes the user lost since the code was issued are dropped.
        let scopes = get("scopes")?
            .split_whitespace()
            .filter(|s| user.scopes.iter().any(|u| u == s))
            .map(str::to_string)
            .collect();
        self.issue(
            &client,
            Some(&user),
            scopes,
            "authorization_code",
            Some(auth_time),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches("S256", challenge, verifier));
        assert!(!pkce_matches(
            "S256",
            challenge,
            &verifier.replace('d', "e")
        ));
        assert!(!pkce_matches("plain", challenge, verifier));
        assert!(pkce_matches("plain", verifier, verifier));
        assert!(!pkce_matches("S256", challenge, "short"));
        assert!(!pkce_matches("S512", challenge, verifier));
    }
}
