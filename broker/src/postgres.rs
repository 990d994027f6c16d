//! Instances and bindings on the PostgreSQL server, and the broker's record of them.
//!
//! An instance is a database `wf_<h>` owned by a role `wf_<h>_owner` that cannot log
//! in, where `<h>` is a hash of the instance id; nobody else may connect to it. A
//! binding is a login role `wf_<h>_bind` (hash of the binding id) with a random
//! password, a member of the owner whose session becomes the owner in that database
//! (`ALTER ROLE ... IN DATABASE ... SET role`), so every binding of an instance sees
//! and owns the same tables. The `wf_broker` schema of the admin database maps the ids
//! to these names (and keeps the binding's password, for fetching it again).
//!
//! Each change holds a PostgreSQL advisory lock on the instance for its whole run, on a
//! connection of its own, so concurrent calls about one instance, from one broker or
//! several, take turns; a dropped connection releases it. The steps are idempotent and
//! the record is written last (deleted last when dropping), so a call cut short is
//! finished by the platform's retry, and a deprovision or unbind drops what an
//! unrecorded, half-done provision or bind left behind.

use std::fmt;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _, Executor as _, Row as _};

use crate::catalog;
use crate::scram;
use crate::BrokerError;

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's bound on each statement (`statement_timeout`), lock waits included.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an unbind waits for the sessions of the dropped role to end.
const SESSIONS_END_TIMEOUT: Duration = Duration::from_secs(10);
/// Advisory lock key of creating the broker's tables.
const SCHEMA_LOCK: i64 = 0x7766_5f62_726f_6b65; // "wf_broke"

/// The broker's tables, created on start when missing.
const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS wf_broker;
CREATE TABLE IF NOT EXISTS wf_broker.instances (
    instance_id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    organization_guid TEXT NOT NULL,
    space_guid TEXT NOT NULL,
    database_name TEXT NOT NULL,
    owner_role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS wf_broker.bindings (
    binding_id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES wf_broker.instances ON DELETE CASCADE,
    app_guid TEXT,
    role_name TEXT NOT NULL,
    password TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
REVOKE ALL ON SCHEMA wf_broker FROM PUBLIC;
";

/// A provision request, checked by the API layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub service_id: String,
    pub plan_id: String,
    pub organization_guid: String,
    pub space_guid: String,
}

/// A bind request, checked by the API layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub service_id: String,
    pub plan_id: String,
    /// None for a service key.
    pub app_guid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioned {
    /// Made now (201).
    Created,
    /// It existed with the same attributes (200).
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Made now (201).
    Created(Credentials),
    /// It existed with the same attributes (200).
    Exists(Credentials),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Dropped (200).
    Deleted,
    /// The broker knew no such instance or binding (410).
    Gone,
}

/// What `GET /v2/service_instances/:id` tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub service_id: String,
    pub plan_id: String,
}

/// A binding's credentials, in the shape CF's PostgreSQL services use.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Credentials {
    pub uri: String,
    #[serde(rename = "jdbcUrl")]
    pub jdbc_url: String,
    pub hostname: String,
    pub port: u16,
    pub name: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A name this broker made: `wf_`, hex digits and a suffix. Shown double-quoted, as an
/// SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ident(String);

impl Ident {
    /// The database of instance `id`.
    fn database(instance_id: &str) -> Ident {
        Ident(format!("wf_{}", hash(instance_id)))
    }

    /// The role owning the database of instance `id`.
    fn owner(instance_id: &str) -> Ident {
        Ident(format!("wf_{}_owner", hash(instance_id)))
    }

    /// The login role of binding `id`.
    fn binding(binding_id: &str) -> Ident {
        Ident(format!("wf_{}_bind", hash(binding_id)))
    }

    fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only [a-z0-9_] by construction; quoted anyway, with quotes doubled.
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// 128 bits of SHA-256 of an id, in hex: names fit PostgreSQL's 63 bytes whatever the
/// id, and carry nothing of it.
fn hash(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..16])
}

/// The advisory lock key of an instance.
fn lock_key(instance_id: &str) -> i64 {
    let digest = Sha256::digest(format!("wf_broker instance {instance_id}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// `value` as an SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The PostgreSQL server the databases live on.
pub struct Postgres {
    admin: PgConnectOptions,
    /// Where the credentials say the server is.
    hostname: String,
    port: u16,
}

impl Postgres {
    /// Connects with the admin URL and creates the broker's tables if missing.
    pub async fn open(admin_url: &str) -> Result<Postgres, BrokerError> {
        // Parsed here first so that no error, sqlx's included, repeats the URL (and its
        // password).
        let url = url::Url::parse(admin_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"))
            .ok_or_else(|| {
                BrokerError::Config("the PostgreSQL URL is not a postgres:// URL".into())
            })?;
        let hostname = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| BrokerError::Config("the PostgreSQL URL names no host".into()))?;
        let port = url.port().unwrap_or(5432);
        let admin = PgConnectOptions::from_str(admin_url)
            .map_err(|_| BrokerError::Config("the PostgreSQL URL is not valid".into()))?
            .options([(
                "statement_timeout",
                STATEMENT_TIMEOUT.as_millis().to_string(),
            )])
            .application_name("wf-broker")
            // Statements carry password verifiers: never in the broker's logs.
            .disable_statement_logging();
        let postgres = Postgres {
            admin,
            hostname,
            port,
        };
        let mut conn = postgres.connect(None).await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        tx.commit().await?;
        conn.close().await?;
        Ok(postgres)
    }

    /// A connection of its own, as admin, to the admin database or `database`.
    async fn connect(&self, database: Option<&Ident>) -> Result<PgConnection, BrokerError> {
        let options = match database {
            Some(database) => self.admin.clone().database(database.name()),
            None => self.admin.clone(),
        };
        tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| BrokerError::Timeout(CONNECT_TIMEOUT))?
            .map_err(BrokerError::from)
    }

    /// A connection holding instance `instance_id`'s lock until it is closed or dropped.
    async fn lock(&self, instance_id: &str) -> Result<PgConnection, BrokerError> {
        let mut conn = self.connect(None).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock_key(instance_id))
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }

    /// Makes instance `instance_id`: its owner role and its database.
    pub async fn provision(
        &self,
        instance_id: &str,
        request: &Provision,
    ) -> Result<Provisioned, BrokerError> {
        check_provision(request)?;
        let mut conn = self.lock(instance_id).await?;
        let existing = sqlx::query(
            "SELECT service_id, plan_id, organization_guid, space_guid
             FROM wf_broker.instances WHERE instance_id = $1",
        )
        .bind(instance_id)
        .fetch_optional(&mut conn)
        .await?;
        if let Some(row) = existing {
            let existing = Provision {
                service_id: row.try_get("service_id")?,
                plan_id: row.try_get("plan_id")?,
                organization_guid: row.try_get("organization_guid")?,
                space_guid: row.try_get("space_guid")?,
            };
            return if existing == *request {
                Ok(Provisioned::Exists)
            } else {
                Err(BrokerError::Conflict(format!(
                    "service instance {instance_id} exists with other attributes"
                )))
            };
        }
        let (database, owner) = (Ident::database(instance_id), Ident::owner(instance_id));
        if !role_exists(&mut conn, &owner).await? {
            execute(&mut conn, &format!("CREATE ROLE {owner} NOLOGIN")).await?;
        }
        if !database_exists(&mut conn, &database).await? {
            execute(
                &mut conn,
                &format!("CREATE DATABASE {database} OWNER {owner}"),
            )
            .await?;
        }
        // New databases let every role connect; only the owner's members may.
        execute(
            &mut conn,
            &format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"),
        )
        .await?;
        sqlx::query(
            "INSERT INTO wf_broker.instances
             (instance_id, service_id, plan_id, organization_guid, space_guid, database_name, owner_role)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(instance_id)
        .bind(&request.service_id)
        .bind(&request.plan_id)
        .bind(&request.organization_guid)
        .bind(&request.space_guid)
        .bind(database.name())
        .bind(owner.name())
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        tracing::info!(instance_id, database = database.name(), "provisioned");
        Ok(Provisioned::Created)
    }

    /// Drops instance `instance_id`: its database (ending its sessions), the roles of
    /// its bindings and its owner.
    pub async fn deprovision(&self, instance_id: &str) -> Result<Deleted, BrokerError> {
        let mut conn = self.lock(instance_id).await?;
        let known = sqlx::query("SELECT 1 FROM wf_broker.instances WHERE instance_id = $1")
            .bind(instance_id)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        let (database, owner) = (Ident::database(instance_id), Ident::owner(instance_id));
        // Every binding role, recorded or left by a bind cut short: the owner's members.
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT m.rolname FROM pg_auth_members a
             JOIN pg_roles m ON m.oid = a.member JOIN pg_roles r ON r.oid = a.roleid
             WHERE r.rolname = $1 AND m.rolname LIKE 'wf\\_%\\_bind'",
        )
        .bind(owner.name())
        .fetch_all(&mut conn)
        .await?;
        let members: Vec<Ident> = members.into_iter().map(Ident).collect();
        for member in &members {
            end_sessions(&mut conn, member).await?;
        }
        execute(
            &mut conn,
            &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        )
        .await?;
        for member in &members {
            execute(&mut conn, &format!("DROP ROLE IF EXISTS {member}")).await?;
        }
        execute(&mut conn, &format!("DROP ROLE IF EXISTS {owner}")).await?;
        sqlx::query("DELETE FROM wf_broker.instances WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        if !known {
            return Ok(Deleted::Gone);
        }
        tracing::info!(instance_id, database = database.name(), "deprovisioned");
        Ok(Deleted::Deleted)
    }

    /// The instance, if the broker has it.
    pub async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, BrokerError> {
        let mut conn = self.connect(None).await?;
        let row = sqlx::query(
            "SELECT service_id, plan_id FROM wf_broker.instances WHERE instance_id = $1",
        )
        .bind(instance_id)
        .fetch_optional(&mut conn)
        .await?;
        conn.close().await?;
        row.map(|row| {
            Ok(Instance {
                service_id: row.try_get("service_id")?,
                plan_id: row.try_get("plan_id")?,
            })
        })
        .transpose()
    }

    /// Makes binding `binding_id` of instance `instance_id`: a login role with a new
    /// password, acting as the instance's owner in its database.
    pub async fn bind(
        &self,
        instance_id: &str,
        binding_id: &str,
        request: &Bind,
    ) -> Result<Bound, BrokerError> {
        catalog::check_ids(&request.service_id, &request.plan_id)
            .map_err(BrokerError::BadRequest)?;
        let mut conn = self.lock(instance_id).await?;
        let instance = sqlx::query(
            "SELECT service_id, plan_id FROM wf_broker.instances WHERE instance_id = $1",
        )
        .bind(instance_id)
        .fetch_optional(&mut conn)
        .await?
        .ok_or_else(|| BrokerError::NotFound(format!("no service instance {instance_id}")))?;
        let (service_id, plan_id): (String, String) = (
            instance.try_get("service_id")?,
            instance.try_get("plan_id")?,
        );
        if (service_id.as_str(), plan_id.as_str())
            != (request.service_id.as_str(), request.plan_id.as_str())
        {
            return Err(BrokerError::BadRequest(format!(
                "service instance {instance_id} is of another service or plan"
            )));
        }
        let existing = sqlx::query(
            "SELECT instance_id, app_guid, password FROM wf_broker.bindings WHERE binding_id = $1",
        )
        .bind(binding_id)
        .fetch_optional(&mut conn)
        .await?;
        if let Some(row) = existing {
            let same_instance = row.try_get::<String, _>("instance_id")? == instance_id;
            let same_app = row.try_get::<Option<String>, _>("app_guid")? == request.app_guid;
            if !(same_instance && same_app) {
                return Err(BrokerError::Conflict(format!(
                    "service binding {binding_id} exists with other attributes"
                )));
            }
            let password: String = row.try_get("password")?;
            conn.close().await?;
            return Ok(Bound::Exists(self.credentials(
                instance_id,
                binding_id,
                password,
            )));
        }
        let (database, owner, role) = (
            Ident::database(instance_id),
            Ident::owner(instance_id),
            Ident::binding(binding_id),
        );
        let password = scram::password();
        let verifier = literal(&scram::verifier(&password));
        if role_exists(&mut conn, &role).await? {
            // Left by a bind of this instance cut short (a role is made a member of its
            // owner as it is created); any other role of that name is not ours to take.
            if !is_member(&mut conn, &role, &owner).await? {
                return Err(BrokerError::Conflict(format!(
                    "service binding {binding_id} exists for another service instance"
                )));
            }
            execute(
                &mut conn,
                &format!("ALTER ROLE {role} LOGIN PASSWORD {verifier}"),
            )
            .await?;
        } else {
            execute(
                &mut conn,
                &format!("CREATE ROLE {role} LOGIN PASSWORD {verifier} IN ROLE {owner}"),
            )
            .await?;
        }
        execute(
            &mut conn,
            &format!("ALTER ROLE {role} IN DATABASE {database} SET role TO {owner}"),
        )
        .await?;
        sqlx::query(
            "INSERT INTO wf_broker.bindings (binding_id, instance_id, app_guid, role_name, password)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(binding_id)
        .bind(instance_id)
        .bind(&request.app_guid)
        .bind(role.name())
        .bind(&password)
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        tracing::info!(instance_id, binding_id, role = role.name(), "bound");
        Ok(Bound::Created(self.credentials(
            instance_id,
            binding_id,
            password,
        )))
    }

    /// Drops binding `binding_id`'s role, ending its sessions first.
    pub async fn unbind(
        &self,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<Deleted, BrokerError> {
        let mut conn = self.lock(instance_id).await?;
        let known = sqlx::query(
            "SELECT 1 FROM wf_broker.bindings WHERE binding_id = $1 AND instance_id = $2",
        )
        .bind(binding_id)
        .bind(instance_id)
        .fetch_optional(&mut conn)
        .await?
        .is_some();
        let (database, owner, role) = (
            Ident::database(instance_id),
            Ident::owner(instance_id),
            Ident::binding(binding_id),
        );
        // A role left by a bind cut short is dropped as well, but only one that belongs
        // to this instance: another instance's binding with this id is not ours to drop.
        if known || is_member(&mut conn, &role, &owner).await? {
            end_sessions(&mut conn, &role).await?;
            // Whatever the role made while not acting as the owner goes to the owner.
            if database_exists(&mut conn, &database).await? {
                let mut in_database = self.connect(Some(&database)).await?;
                execute(
                    &mut in_database,
                    &format!("REASSIGN OWNED BY {role} TO {owner}"),
                )
                .await?;
                execute(&mut in_database, &format!("DROP OWNED BY {role}")).await?;
                in_database.close().await?;
            }
            execute(&mut conn, &format!("DROP ROLE IF EXISTS {role}")).await?;
        }
        sqlx::query("DELETE FROM wf_broker.bindings WHERE binding_id = $1 AND instance_id = $2")
            .bind(binding_id)
            .bind(instance_id)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        if !known {
            return Ok(Deleted::Gone);
        }
        tracing::info!(instance_id, binding_id, role = role.name(), "unbound");
        Ok(Deleted::Deleted)
    }

    /// The credentials of a binding of `instance_id`, if the broker has it.
    pub async fn binding(
        &self,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<Option<Credentials>, BrokerError> {
        let mut conn = self.connect(None).await?;
        let password: Option<String> = sqlx::query_scalar(
            "SELECT password FROM wf_broker.bindings WHERE binding_id = $1 AND instance_id = $2",
        )
        .bind(binding_id)
        .bind(instance_id)
        .fetch_optional(&mut conn)
        .await?;
        conn.close().await?;
        Ok(password.map(|password| self.credentials(instance_id, binding_id, password)))
    }

    fn credentials(&self, instance_id: &str, binding_id: &str, password: String) -> Credentials {
        let name = Ident::database(instance_id).0;
        let username = Ident::binding(binding_id).0;
        let (hostname, port) = (self.hostname.clone(), self.port);
        // An IPv6 address goes in brackets in URLs.
        let host = if hostname.contains(':') {
            format!("[{hostname}]")
        } else {
            hostname.clone()
        };
        Credentials {
            uri: format!("postgres://{username}:{password}@{host}:{port}/{name}"),
            jdbc_url: format!(
                "jdbc:postgresql://{host}:{port}/{name}?user={username}&password={password}"
            ),
            hostname,
            port,
            name,
            username,
            password,
        }
    }
}

async fn execute(conn: &mut PgConnection, sql: &str) -> Result<(), BrokerError> {
    // Through the Executor trait: `RawSql::execute`'s own future is not `Send`.
    conn.execute(sqlx::raw_sql(sql)).await?;
    Ok(())
}

async fn role_exists(conn: &mut PgConnection, role: &Ident) -> Result<bool, BrokerError> {
    Ok(sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(role.name())
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

async fn database_exists(conn: &mut PgConnection, database: &Ident) -> Result<bool, BrokerError> {
    Ok(sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database.name())
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

async fn is_member(conn: &mut PgConnection, role: &Ident, of: &Ident) -> Result<bool, BrokerError> {
    Ok(sqlx::query(
        "SELECT 1 FROM pg_auth_members a
         JOIN pg_roles m ON m.oid = a.member JOIN pg_roles r ON r.oid = a.roleid
         WHERE m.rolname = $1 AND r.rolname = $2",
    )
    .bind(role.name())
    .bind(of.name())
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// Stops `role` logging in and ends its sessions, waiting (a bounded while) until they
/// are gone.
async fn end_sessions(conn: &mut PgConnection, role: &Ident) -> Result<(), BrokerError> {
    if !role_exists(conn, role).await? {
        return Ok(());
    }
    execute(conn, &format!("ALTER ROLE {role} NOLOGIN")).await?;
    let deadline = Instant::now() + SESSIONS_END_TIMEOUT;
    loop {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
        )
        .bind(role.name())
        .fetch_one(&mut *conn)
        .await?;
        if live == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BrokerError::Timeout(SESSIONS_END_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks done before any statement: the request's ids and attributes.
fn check_provision(request: &Provision) -> Result<(), BrokerError> {
    catalog::check_ids(&request.service_id, &request.plan_id).map_err(BrokerError::BadRequest)?;
    for (field, value) in [
        ("organization_guid", &request.organization_guid),
        ("space_guid", &request.space_guid),
    ] {
        if value.trim().is_empty() {
            return Err(BrokerError::BadRequest(format!(
                "{field} must not be empty"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_hashes_of_the_ids_and_fit_postgres() {
        let evil = "x\"; DROP DATABASE postgres; --".repeat(20);
        for ident in [
            Ident::database(&evil),
            Ident::owner(&evil),
            Ident::binding(&evil),
        ] {
            assert!(ident.name().len() <= 63, "{ident}");
            assert!(ident
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        assert_eq!(Ident::database("a"), Ident::database("a"));
        assert_ne!(Ident::database("a"), Ident::database("b"));
        assert_ne!(Ident::owner("a").name(), Ident::binding("a").name());
        assert_eq!(Ident("a\"b".into()).to_string(), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_ne!(lock_key("a"), lock_key("b"));
    }

    #[test]
    fn credentials_are_in_cf_shape_and_never_debug_printed() {
        let postgres = Postgres {
            admin: PgConnectOptions::new(),
            hostname: "db.internal".into(),
            port: 5433,
        };
        let credentials = postgres.credentials("i", "b", "pw123".into());
        let json = serde_json::to_value(&credentials).unwrap();
        let (name, user) = (Ident::database("i").0, Ident::binding("b").0);
        assert_eq!(
            json["uri"],
            format!("postgres://{user}:pw123@db.internal:5433/{name}")
        );
        assert_eq!(
            json["jdbcUrl"],
            format!("jdbc:postgresql://db.internal:5433/{name}?user={user}&password=pw123")
        );
        assert_eq!(json["hostname"], "db.internal");
        assert_eq!(json["port"], 5433);
        assert_eq!(json["name"], name);
        assert_eq!(json["username"], user);
        assert_eq!(json["password"], "pw123");
        assert!(!format!("{credentials:?}").contains("pw123"));

        let v6 = Postgres {
            hostname: "::1".into(),
            ..postgres
        };
        assert!(v6
            .credentials("i", "b", "p".into())
            .uri
            .contains("@[::1]:5433/"));
    }

    #[test]
    fn provision_requests_are_checked() {
        let good = Provision {
            service_id: catalog::SERVICE_ID.into(),
            plan_id: catalog::PLAN_ID.into(),
            organization_guid: "o".into(),
            space_guid: "s".into(),
        };
        assert!(check_provision(&good).is_ok());
        for bad in [
            Provision {
                plan_id: "other".into(),
                ..good.clone()
            },
            Provision {
                service_id: "other".into(),
                ..good.clone()
            },
            Provision {
                space_guid: " ".into(),
                ..good.clone()
            },
        ] {
            assert!(matches!(
                check_provision(&bad),
                Err(BrokerError::BadRequest(_))
            ));
        }
    }
}
