//! The built-in service broker (`wfd broker`): an Open Service Broker API v2.17 server
//! that offers PostgreSQL databases on one configured PostgreSQL server. Provisioning
//! makes a database and a role that owns it; binding makes a login role with a random
//! password that acts as that owner in that database; unbinding and deprovisioning
//! drop what they made. Everything synchronous: each call answers when it is done.
//!
//! What the broker remembers (which instance is which database, which binding which
//! role) lives in the `wf_broker` schema of the admin database on that same server, so
//! the process itself is stateless and several may serve one server. Database and role
//! names are derived from the platform's ids (`wf_<hex>`), never from user text.
//! A binding's password is kept in that schema (which only the admin role may read),
//! for fetching the binding again, and goes out in the binding's credentials only: the
//! server is sent its SCRAM-SHA-256 verifier, and statement logging is off on the
//! broker's connections.
//!
//! [`catalog`] is the offering, [`postgres`] the work on the server (callable without
//! HTTP), `api` the OSB HTTP layer with its checks and error bodies.

mod api;
pub mod catalog;
pub mod postgres;
mod scram;

use std::sync::Arc;

pub use postgres::{Bind, Bound, Credentials, Deleted, Instance, Postgres, Provision, Provisioned};

/// OSB API errors of the broker, in the spec's terms; `api` maps each to its status and
/// the spec's `{"error", "description"}` body in one place.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Malformed or missing input, or ids the catalog does not have (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such instance or binding (404).
    #[error("{0}")]
    NotFound(String),
    /// The id exists with other attributes (409).
    #[error("{0}")]
    Conflict(String),
    /// The configuration cannot work (at start).
    #[error("{0}")]
    Config(String),
    /// The PostgreSQL server refused or failed a statement. Its message, never a
    /// statement (statements carry password verifiers) or a connection URL.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The PostgreSQL server did not answer in time.
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// What `wfd broker` is given.
#[derive(Clone)]
pub struct BrokerConfig {
    /// `postgres://user:password@host:port/database` of a superuser (or a role with
    /// CREATEDB and CREATEROLE that may act as the roles it creates). The databases are
    /// made on this server, the broker's own tables in this database; the host and port
    /// are those the credentials name.
    pub postgres_url: String,
    /// HTTP basic auth the platform must send (`wf create-service-broker NAME USER PASS`).
    pub username: String,
    pub password: String,
}

/// The broker: its PostgreSQL work and the HTTP API in front of it.
#[derive(Clone)]
pub struct Broker {
    postgres: Arc<Postgres>,
    auth: Arc<api::BasicAuth>,
}

impl Broker {
    /// Connects to the server and creates the broker's tables if they are missing.
    pub async fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        if config.username.is_empty() || config.password.is_empty() {
            return Err(BrokerError::Config(
                "the broker's basic auth username and password must not be empty".into(),
            ));
        }
        let postgres = Postgres::open(&config.postgres_url).await?;
        Ok(Broker {
            postgres: Arc::new(postgres),
            auth: Arc::new(api::BasicAuth::new(&config.username, &config.password)),
        })
    }

    /// The PostgreSQL side, for callers that skip HTTP (tests).
    pub fn postgres(&self) -> &Postgres {
        &self.postgres
    }

    /// The OSB API: `/v2/catalog`, `/v2/service_instances/...` and their bindings.
    pub fn router(&self) -> axum::Router {
        api::router(self.postgres.clone(), self.auth.clone())
    }
}
