//! UAA's OAuth clients: their store (argon2-hashed secrets, scopes, authorities, grant
//! types), client authentication, the `client_credentials` grant and the management
//! operations behind `/oauth/clients`.
//!
//! Two clients are (re)written on every open: CF's public `cf` client, and the `admin`
//! client when [`crate::UaaConfig::admin_client_secret`] is set.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row as _};

use crate::users::{self, db_error, unix_now};
use crate::{GrantError, ScimError, TokenResponse, Uaa, UaaError, CF_CLIENT_ID, CF_CLIENT_SCOPES};

/// The id of the administrative client configured by `admin_client_secret`.
pub const ADMIN_CLIENT_ID: &str = "admin";

/// cf-deployment's `uaa_admin` client authorities, plus `uaa.resource` so that it may
/// call `/check_token` and `/introspect`.
const ADMIN_CLIENT_AUTHORITIES: &[&str] = &[
    "clients.read",
    "clients.write",
    "clients.secret",
    "clients.admin",
    "uaa.admin",
    "scim.read",
    "scim.write",
    "password.write",
    "uaa.resource",
];

/// Grant types a client may be given.
const KNOWN_GRANT_TYPES: &[&str] = &[
    "password",
    "refresh_token",
    "client_credentials",
    "authorization_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
];

/// A client as `/oauth/clients` shows it (UAA's field names); the secret is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientDetails {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub scope: Vec<String>,
    #[serde(default)]
    pub authorities: Vec<String>,
    #[serde(default)]
    pub authorized_grant_types: Vec<String>,
    #[serde(default, rename = "redirect_uri")]
    pub redirect_uris: Vec<String>,
    /// Seconds; the UAA-wide default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_validity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_validity: Option<u64>,
    /// Unix milliseconds, as UAA writes `lastModified`.
    #[serde(default, rename = "lastModified")]
    pub last_modified: i64,
}

/// A stored client: its details and the argon2 hash of its secret (empty for public
/// clients such as `cf`).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) details: ClientDetails,
    pub(crate) secret_hash: String,
}

impl Client {
    pub(crate) fn id(&self) -> &str {
        &self.details.client_id
    }
    pub(crate) fn has_grant(&self, grant: &str) -> bool {
        self.details
            .authorized_grant_types
            .iter()
            .any(|g| g == grant)
    }
    pub(crate) fn has_authority(&self, authority: &str) -> bool {
        self.details.authorities.iter().any(|a| a == authority)
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn client_from_row(row: &sqlx::any::AnyRow) -> Result<Client, UaaError> {
    let list = |column: &str| -> Result<Vec<String>, UaaError> {
        let s: String = row.try_get(column).map_err(db_error)?;
        Ok(s.split_whitespace().map(str::to_string).collect())
    };
    let validity = |column: &str| -> Result<Option<u64>, UaaError> {
        let v: Option<i64> = row.try_get(column).map_err(db_error)?;
        Ok(v.and_then(|v| u64::try_from(v).ok()))
    };
    Ok(Client {
        details: ClientDetails {
            client_id: row.try_get("client_id").map_err(db_error)?,
            scope: list("scopes")?,
            authorities: list("authorities")?,
            authorized_grant_types: list("grant_types")?,
            redirect_uris: list("redirect_uris")?,
            access_token_validity: validity("access_token_validity")?,
            refresh_token_validity: validity("refresh_token_validity")?,
            last_modified: row.try_get("last_modified").map_err(db_error)?,
        },
        secret_hash: row.try_get("secret_hash").map_err(db_error)?,
    })
}

const CLIENT_COLUMNS: &str = "client_id, secret_hash, scopes, authorities, grant_types, \
     redirect_uris, access_token_validity, refresh_token_validity, last_modified";

pub(crate) async fn find(pool: &AnyPool, client_id: &str) -> Result<Option<Client>, UaaError> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = $1");
    let row = sqlx::query(&sql)
        .bind(client_id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(client_from_row).transpose()
}

async fn list(pool: &AnyPool) -> Result<Vec<Client>, UaaError> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY client_id");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(client_from_row).collect()
}

fn validity_column(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Inserts `client`, or replaces it when `replace`; `Ok(false)` when it exists (insert)
/// or does not (replace).
async fn write(pool: &AnyPool, client: &Client, replace: bool) -> Result<bool, UaaError> {
    let d = &client.details;
    let sql = if replace {
        "UPDATE oauth_clients SET secret_hash = $2, scopes = $3, authorities = $4,
             grant_types = $5, redirect_uris = $6, access_token_validity = $7,
             refresh_token_validity = $8, last_modified = $9
         WHERE client_id = $1"
    } else {
        "INSERT INTO oauth_clients (client_id, secret_hash, scopes, authorities, grant_types,
             redirect_uris, access_token_validity, refresh_token_validity, last_modified)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    };
    let result = sqlx::query(sql)
        .bind(d.client_id.clone())
        .bind(client.secret_hash.clone())
        .bind(d.scope.join(" "))
        .bind(d.authorities.join(" "))
        .bind(d.authorized_grant_types.join(" "))
        .bind(d.redirect_uris.join(" "))
        .bind(validity_column(d.access_token_validity))
        .bind(validity_column(d.refresh_token_validity))
        .bind(d.last_modified)
        .execute(pool)
        .await;
    match result {
        Ok(r) => Ok(r.rows_affected() == 1),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(db_error(e)),
    }
}

async fn delete(pool: &AnyPool, client_id: &str) -> Result<bool, UaaError> {
    let r = sqlx::query("DELETE FROM oauth_clients WHERE client_id = $1")
        .bind(client_id.to_string())
        .execute(pool)
        .await
        .map_err(db_error)?;
    Ok(r.rows_affected() > 0)
}

fn now_millis() -> i64 {
    unix_now().saturating_mul(1000)
}

/// Rejects details `/oauth/clients` must not store: no id, blanks, unknown grant types.
fn validate(details: &ClientDetails) -> Result<(), ScimError> {
    let id = &details.client_id;
    if id.is_empty() || id.len() > 255 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ScimError::Invalid(
            "client_id must be a non-empty word".into(),
        ));
    }
    for grant in &details.authorized_grant_types {
        if !KNOWN_GRANT_TYPES.contains(&grant.as_str()) {
            return Err(ScimError::Invalid(format!(
                "{grant} is not an allowed grant type"
            )));
        }
    }
    let lists = [&details.scope, &details.authorities, &details.redirect_uris];
    if lists
        .iter()
        .flat_map(|l| l.iter())
        .any(|s| s.is_empty() || s.chars().any(char::is_whitespace))
    {
        return Err(ScimError::Invalid(
            "scopes, authorities and redirect URIs are single words".into(),
        ));
    }
    Ok(())
}

impl Uaa {
    /// Writes the built-in clients: `cf` always, `admin` when it has a secret. An
    /// unchanged admin secret keeps its hash, so its tokens survive a restart.
    pub(crate) async fn ensure_clients(&self) -> Result<(), UaaError> {
        let cf = Client {
            details: ClientDetails {
                client_id: CF_CLIENT_ID.into(),
                scope: strings(CF_CLIENT_SCOPES),
                authorities: vec!["uaa.none".into()],
                authorized_grant_types: strings(&["password", "refresh_token"]),
                redirect_uris: Vec::new(),
                access_token_validity: None,
                refresh_token_validity: None,
                last_modified: now_millis(),
            },
            secret_hash: String::new(),
        };
        self.upsert_client(cf).await?;
        let Some(secret) = &self.config.admin_client_secret else {
            return Ok(());
        };
        let secret_hash = match find(&self.db, ADMIN_CLIENT_ID).await? {
            Some(old) if users::verify_password(secret, &old.secret_hash).await => old.secret_hash,
            _ => users::hash_password(secret).await?,
        };
        let admin = Client {
            details: ClientDetails {
                client_id: ADMIN_CLIENT_ID.into(),
                scope: vec!["uaa.none".into()],
                authorities: strings(ADMIN_CLIENT_AUTHORITIES),
                authorized_grant_types: vec!["client_credentials".into()],
                redirect_uris: Vec::new(),
                access_token_validity: None,
                refresh_token_validity: None,
                last_modified: now_millis(),
            },
            secret_hash,
        };
        self.upsert_client(admin).await
    }

    async fn upsert_client(&self, client: Client) -> Result<(), UaaError> {
        if !write(&self.db, &client, true).await? && !write(&self.db, &client, false).await? {
            // Inserted by a concurrent open between the two statements: write again.
            write(&self.db, &client, true).await?;
        }
        Ok(())
    }

    /// The client `client_id` if `secret` is its secret (empty for public clients).
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<ClientDetails, GrantError> {
        self.authenticated_client(client_id, secret)
            .await
            .map(|c| c.details)
    }

    pub(crate) async fn authenticated_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Client, GrantError> {
        let client = find(&self.db, client_id)
            .await?
            .ok_or(GrantError::BadClient)?;
        let ok = if client.secret_hash.is_empty() {
            secret.is_empty()
        } else {
            users::verify_password(secret, &client.secret_hash).await
        };
        if ok {
            Ok(client)
        } else {
            Err(GrantError::BadClient)
        }
    }

    /// The client `client_id`, which must have been given `grant`. Callers authenticate
    /// the client first (`/oauth/token` does).
    pub(crate) async fn client_for_grant(
        &self,
        client_id: &str,
        grant: &str,
    ) -> Result<Client, GrantError> {
        let client = find(&self.db, client_id)
            .await?
            .ok_or(GrantError::BadClient)?;
        if client.has_grant(grant) {
            Ok(client)
        } else {
            Err(GrantError::UnauthorizedGrantType(grant.to_string()))
        }
    }

    /// The `client_credentials` grant: a token for the client itself (`sub` = client
    /// id) carrying its authorities, narrowed to `scope` when given; no refresh token.
    pub async fn client_credentials_grant(
        &self,
        client_id: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let client = self
            .client_for_grant(client_id, "client_credentials")
            .await?;
        let allowed: Vec<String> = client
            .details
            .authorities
            .iter()
            .filter(|a| a.as_str() != "uaa.none")
            .cloned()
            .collect();
        let scopes = crate::narrow_scopes(allowed, scope)?;
        self.issue(&client, None, scopes, "client_credentials", None)
    }

    /// Every client (`GET /oauth/clients`).
    pub async fn list_clients(&self) -> Result<Vec<ClientDetails>, UaaError> {
        Ok(list(&self.db)
            .await?
            .into_iter()
            .map(|c| c.details)
            .collect())
    }

    pub async fn get_client(&self, client_id: &str) -> Result<ClientDetails, ScimError> {
        find(&self.db, client_id)
            .await?
            .map(|c| c.details)
            .ok_or_else(|| ScimError::NotFound(format!("No client with requested id: {client_id}")))
    }

    /// Registers a client; an empty `secret` makes it public.
    pub async fn create_client(
        &self,
        mut details: ClientDetails,
        secret: &str,
    ) -> Result<ClientDetails, ScimError> {
        validate(&details)?;
        if details.authorized_grant_types.is_empty() {
            return Err(ScimError::Invalid(
                "authorized_grant_types must not be empty".into(),
            ));
        }
        if secret.is_empty()
            && details
                .authorized_grant_types
                .iter()
                .any(|g| g == "client_credentials")
        {
            return Err(ScimError::Invalid(
                "a client_credentials client needs a secret".into(),
            ));
        }
        details.last_modified = now_millis();
        let secret_hash = if secret.is_empty() {
            String::new()
        } else {
            users::hash_password(secret).await?
        };
        let client = Client {
            details,
            secret_hash,
        };
        if write(&self.db, &client, false).await? {
            Ok(client.details)
        } else {
            Err(ScimError::AlreadyExists(format!(
                "Client already exists: {}",
                client.id()
            )))
        }
    }

    /// Replaces a client's details; its secret stays.
    pub async fn update_client(
        &self,
        mut details: ClientDetails,
    ) -> Result<ClientDetails, ScimError> {
        validate(&details)?;
        let old = find(&self.db, &details.client_id).await?.ok_or_else(|| {
            ScimError::NotFound(format!(
                "No client with requested id: {}",
                details.client_id
            ))
        })?;
        details.last_modified = now_millis();
        let client = Client {
            details,
            secret_hash: old.secret_hash,
        };
        if write(&self.db, &client, true).await? {
            Ok(client.details)
        } else {
            Err(ScimError::NotFound(format!(
                "No client with requested id: {}",
                client.id()
            )))
        }
    }

    /// Sets a client's secret, which revokes the tokens issued to it (`rev_sig`).
    pub async fn change_client_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<(), ScimError> {
        let mut client = find(&self.db, client_id).await?.ok_or_else(|| {
            ScimError::NotFound(format!("No client with requested id: {client_id}"))
        })?;
        client.secret_hash = if secret.is_empty() {
            String::new()
        } else {
            users::hash_password(secret).await?
        };
        client.details.last_modified = now_millis();
        write(&self.db, &client, true).await?;
        Ok(())
    }

    /// Removes a client; the tokens issued to it stop passing `/check_token`.
    pub async fn delete_client(&self, client_id: &str) -> Result<ClientDetails, ScimError> {
        let details = self.get_client(client_id).await?;
        if delete(&self.db, client_id).await? {
            Ok(details)
        } else {
            Err(ScimError::NotFound(format!(
                "No client with requested id: {client_id}"
            )))
        }
    }
}
