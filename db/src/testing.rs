//! Databases for tests (cargo feature `testing`, which the other crates enable in their
//! dev-dependencies only).
//!
//! Storage tests run once per [`Backend`] that [`backends`] lists: SQLite (an in-memory
//! database) always, and PostgreSQL when `WF_TEST_POSTGRES_URL` names a server, such as
//! `postgres://postgres@127.0.0.1:5432/postgres` (CI starts one in `.ci/run`). Each
//! PostgreSQL database is a fresh `wf_test_<uuid>` on that server, dropped when its
//! [`TestDatabase`] is. When the variable is set the PostgreSQL runs are not optional:
//! a server that cannot be reached fails the test.
//!
//! ```text
//! for db in wf_db::testing::databases().await {
//!     let pool = wf_db::open(db.url(), MIGRATIONS).await.unwrap();
//!     // ...
//! }
//! ```

use std::fmt;
use std::io::Write as _;
use std::sync::Once;
use std::time::Duration;

use sqlx::{AnyConnection, Connection as _};

/// The variable naming the PostgreSQL server tests create their databases on.
pub const POSTGRES_ENV: &str = "WF_TEST_POSTGRES_URL";

/// How long dropping a test database may take before it is left behind.
const DROP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// The server of `WF_TEST_POSTGRES_URL`, if it is set (and not empty).
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// The backends to run storage tests on: SQLite, and PostgreSQL when configured (a note
/// on stderr says when it is not).
pub fn backends() -> Vec<Backend> {
    if postgres_server().is_some() {
        vec![Backend::Sqlite, Backend::Postgres]
    } else {
        note_sqlite_only();
        vec![Backend::Sqlite]
    }
}

/// One fresh, empty database on each of [`backends`].
pub async fn databases() -> Vec<TestDatabase> {
    let mut databases = Vec::new();
    for backend in backends() {
        databases.push(backend.database().await);
    }
    databases
}

/// A fresh, empty PostgreSQL database, or `None` when `WF_TEST_POSTGRES_URL` is unset.
/// Panics when the server cannot be reached.
pub async fn postgres() -> Option<TestDatabase> {
    match postgres_server() {
        Some(server) => Some(create_postgres(&server).await),
        None => {
            note_sqlite_only();
            None
        }
    }
}

impl Backend {
    /// A fresh, empty database on this backend. Panics for PostgreSQL when
    /// `WF_TEST_POSTGRES_URL` is unset or its server cannot be reached.
    pub async fn database(self) -> TestDatabase {
        match self {
            Backend::Sqlite => TestDatabase {
                url: "sqlite::memory:".to_string(),
                backend: self,
                cleanup: None,
            },
            Backend::Postgres => {
                let server =
                    postgres_server().unwrap_or_else(|| panic!("{POSTGRES_ENV} is not set"));
                create_postgres(&server).await
            }
        }
    }
}

/// A database a test owns; a PostgreSQL one is dropped (best effort, forcibly
/// disconnecting whatever still uses it) when this is.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: Backend,
    /// The server URL and the database's name.
    cleanup: Option<(String, String)>,
}

impl TestDatabase {
    /// The URL to open, for [`crate::open`].
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl fmt::Display for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.backend, self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.cleanup.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on: the DROP gets
        // a thread and a runtime of its own.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let drop = async {
                    let mut conn = AnyConnection::connect(&server).await?;
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    sqlx::raw_sql(&sql).execute(&mut conn).await?;
                    conn.close().await
                };
                match tokio::time::timeout(DROP_TIMEOUT, drop).await {
                    Ok(result) => result.map_err(|e| format!("dropping {name}: {e}")),
                    Err(_) => Err(format!("dropping {name}: timed out")),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            let _ = writeln!(std::io::stderr(), "note: test database left behind: {e}");
        }
    }
}

async fn create_postgres(server: &str) -> TestDatabase {
    sqlx::any::install_default_drivers();
    let name = format!("wf_test_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(server)
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={server:?} is not a URL: {e}"));
    url.set_path(&format!("/{name}"));
    let mut conn = AnyConnection::connect(server)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}: cannot connect to {server}: {e}"));
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| {
            panic!("{POSTGRES_ENV}: cannot create database {name} on {server}: {e}")
        });
    let _ = conn.close().await;
    TestDatabase {
        url: url.to_string(),
        backend: Backend::Postgres,
        cleanup: Some((server.to_string(), name)),
    }
}

fn note_sqlite_only() {
    static NOTE: Once = Once::new();
    // Straight to stderr: the test harness captures `eprintln!`.
    NOTE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: {POSTGRES_ENV} is unset, so database tests run on SQLite only; set it to a \
             PostgreSQL server (postgres://postgres@127.0.0.1:5432/postgres) to run them on \
             PostgreSQL too"
        );
    });
}
