//! The platform's SQL databases (CC_DB, the BBS database, UAA's): opening a pool on
//! SQLite (the embedded default) or PostgreSQL from a URL, and applying a component's
//! migrations with sqlx's migrator. Each component keeps its migrations as numbered SQL
//! files in its own `migrations/` folder, embedded into its binary with
//! [`embed_migrations!`]; the SQL stays portable (`$N` placeholders, TEXT and BIGINT).

use std::borrow::Cow;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::AnyPoolOptions;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Transaction};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// How long SQLite waits for another writer before giving up with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One migration, embedded at compile time.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    pub version: i64,
    /// The file's stem, sqlx style: `0001_initial`.
    pub name: &'static str,
    pub sql: &'static str,
}

impl EmbeddedMigration {
    /// The part of the name after the version: `initial`.
    fn description(&self) -> &'static str {
        self.name
            .split_once('_')
            .map_or(self.name, |(_, description)| description)
    }
}

/// Embeds the calling crate's `migrations/<name>.sql` files:
/// `embed_migrations!(1 => "0001_initial", 2 => "0002_tasks")`.
#[macro_export]
macro_rules! embed_migrations {
    ($($version:literal => $name:literal),+ $(,)?) => {
        &[$($crate::EmbeddedMigration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $name, ".sql")),
        }),+]
    };
}

#[derive(Debug)]
struct Embedded(&'static [EmbeddedMigration]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|m| {
                    Migration::new(
                        m.version,
                        Cow::Borrowed(m.description()),
                        MigrationType::Simple,
                        Cow::Borrowed(m.sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// `url` with its password, in the user info or a `password=` query parameter (as
/// libpq takes it), replaced by `REDACTED`: what logs and `Debug` may show of a database
/// URL. A URL that does not parse shows as a placeholder, in case it held one.
pub fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(unparsable database URL)".to_string();
    };
    if parsed.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = parsed.set_password(Some("REDACTED"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "REDACTED".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Opens a pool on `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, `postgres://...`)
/// and brings its schema up to date with `migrations`. SQLite files run in WAL mode
/// (`synchronous = NORMAL`) with a busy timeout; an in-memory SQLite database keeps exactly one connection
/// (each connection would otherwise be a database of its own).
pub async fn open(url: &str, migrations: &'static [EmbeddedMigration]) -> Result<AnyPool, DbError> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let memory = sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
    let mut options = AnyPoolOptions::new();
    options = if memory {
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options.max_connections(8)
    };
    if sqlite {
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                let pragma = format!("PRAGMA busy_timeout = {}", SQLITE_BUSY_TIMEOUT.as_millis());
                sqlx::query(&pragma).execute(&mut *conn).await?;
                // SQLite's advice for WAL: commits survive any crash of the process and
                // are synced at checkpoints; only a power loss may lose the last ones.
                // Syncing every commit cost 2.5x in the scheduler simulation.
                sqlx::query("PRAGMA synchronous = NORMAL")
                    .execute(&mut *conn)
                    .await?;
                // Statement journals (multi-row writes inside savepoints) in memory, not
                // in a temp file created and deleted each time; pages read through a
                // shared memory map rather than a read call each; checkpoints every
                // 16 MB of WAL rather than 4 MB, so a page written by many commits is
                // copied back once. Together a third of the BBS's CPU time at Diego's
                // scale (docs/performance.md).
                for pragma in [
                    "PRAGMA temp_store = MEMORY",
                    "PRAGMA mmap_size = 1073741824",
                    "PRAGMA wal_autocheckpoint = 4000",
                ] {
                    sqlx::query(pragma).fetch_optional(&mut *conn).await?;
                }
                Ok(())
            })
        });
    }
    let pool = options.connect(url).await.map_err(DbError::Connect)?;
    if sqlite && !memory {
        sqlx::query("PRAGMA journal_mode = WAL")
            .fetch_optional(&pool)
            .await
            .map_err(DbError::Connect)?;
    }
    Migrator::new(Embedded(migrations))
        .await?
        .run(&pool)
        .await?;
    Ok(pool)
}

/// Begins a transaction that will write, on a connection of `pool`.
///
/// Use it for every transaction that writes, above all one that reads first. On SQLite
/// this is `BEGIN IMMEDIATE`, which takes the write lock at once (waiting for it up to
/// the busy timeout). A plain `BEGIN` is deferred: the transaction starts as a reader,
/// and when another connection commits between its first read and its first write, the
/// write fails at once with `database is locked` (`SQLITE_BUSY_SNAPSHOT`, 517), since
/// in WAL mode a reader holding an old snapshot can never become the writer and the
/// busy timeout does not apply. PostgreSQL's `BEGIN` has no such upgrade and is kept.
pub async fn begin_write(pool: &AnyPool) -> Result<Transaction<'static, Any>, sqlx::Error> {
    if pool.connect_options().database_url.scheme() == "sqlite" {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_show_no_password() {
        use super::redacted_url;
        assert_eq!(
            redacted_url("postgres://cc:s3cret@db.internal:5432/cc?sslmode=require"),
            "postgres://cc:REDACTED@db.internal:5432/cc?sslmode=require"
        );
        assert_eq!(
            redacted_url("postgres://db/cc?user=cc&password=s3cret"),
            "postgres://db/cc?user=cc&password=REDACTED"
        );
        assert_eq!(
            redacted_url("sqlite://data/cc.db?mode=rwc"),
            "sqlite://data/cc.db?mode=rwc"
        );
        assert_eq!(redacted_url("sqlite::memory:"), "sqlite::memory:");
        assert!(!redacted_url("postgres://u:s3cret@[bad").contains("s3cret"));
    }

    use super::*;
    use sqlx::Row as _;

    const V1: &[EmbeddedMigration] = &[EmbeddedMigration {
        version: 1,
        name: "0001_things",
        sql: "CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL);
              CREATE INDEX things_n ON things (n);",
    }];
    const V2: &[EmbeddedMigration] = &[
        V1[0],
        EmbeddedMigration {
            version: 2,
            name: "0002_more",
            sql: "ALTER TABLE things ADD COLUMN label TEXT NOT NULL DEFAULT ''",
        },
    ];

    #[tokio::test]
    async fn migrations_apply_once_and_in_order_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        reopen_with_more_migrations(&url).await;
        if let Some(db) = testing::postgres().await {
            reopen_with_more_migrations(db.url()).await;
        }
    }

    async fn reopen_with_more_migrations(url: &str) {
        let pool = open(url, V1).await.unwrap();
        sqlx::query("INSERT INTO things (id, n) VALUES ($1, $2)")
            .bind("a")
            .bind(1_i64)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        // Reopening with one more migration keeps the data and applies only the new one.
        let pool = open(url, V2).await.unwrap();
        let row = sqlx::query("SELECT n, label FROM things WHERE id = $1")
            .bind("a")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>("n").unwrap(), 1);
        assert_eq!(row.try_get::<String, _>("label").unwrap(), "");
        pool.close().await;

        // A database migrated further than this code knows is refused, not clobbered.
        let err = open(url, V1).await.unwrap_err();
        assert!(matches!(err, DbError::Migrate(_)), "{err}");
    }

    #[tokio::test]
    async fn a_changed_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        open(&url, V1).await.unwrap().close().await;
        const EDITED: &[EmbeddedMigration] = &[EmbeddedMigration {
            version: 1,
            name: "0001_things",
            sql: "CREATE TABLE things (id TEXT PRIMARY KEY);",
        }];
        assert!(open(&url, EDITED).await.is_err());
    }

    /// SQLite here is in memory: its pool keeps its one connection, and with it the rows.
    /// `COUNT(*)` is a BIGINT on PostgreSQL.
    #[tokio::test]
    async fn rows_stay_and_count_as_i64_on_every_backend() {
        for db in testing::databases().await {
            count_three_rows(db.url()).await;
        }
    }

    async fn count_three_rows(url: &str) {
        let pool = open(url, V1).await.unwrap();
        for i in 0..3_i64 {
            sqlx::query("INSERT INTO things (id, n) VALUES ($1, $2)")
                .bind(i.to_string())
                .bind(i)
                .execute(&pool)
                .await
                .unwrap();
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS c FROM things")
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get("c")
            .unwrap();
        assert_eq!(n, 3);
    }

    /// Issue 12: one BBS write in a thousand failed with "database is locked" (517) under
    /// load. A write transaction that reads first must survive another connection
    /// committing between its read and its write, on a SQLite file in WAL mode.
    #[tokio::test]
    async fn a_write_transaction_that_reads_first_survives_a_concurrent_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        read_then_write_beside_another_writer(&url).await;
        if let Some(db) = testing::postgres().await {
            read_then_write_beside_another_writer(db.url()).await;
        }
    }

    async fn read_then_write_beside_another_writer(url: &str) {
        let pool = open(url, V1).await.unwrap();
        for id in ["counter", "other"] {
            sqlx::query("INSERT INTO things (id, n) VALUES ($1, 0)")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
        const ROUNDS: i64 = 10;
        for round in 0..ROUNDS {
            let mut tx = begin_write(&pool).await.unwrap();
            let n: i64 = sqlx::query("SELECT n FROM things WHERE id = 'counter'")
                .fetch_one(&mut *tx)
                .await
                .unwrap()
                .try_get("n")
                .unwrap();
            // Another connection writes while this transaction is between its read and
            // its write; it may have to wait for this one, but neither may fail.
            let other = tokio::spawn({
                let pool = pool.clone();
                async move {
                    sqlx::query("UPDATE things SET n = n + 1 WHERE id = 'other'")
                        .execute(&pool)
                        .await
                }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            sqlx::query("UPDATE things SET n = $1 WHERE id = 'counter'")
                .bind(n + 1)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("round {round} on {}: {e}", redacted_url(url)));
            tx.commit().await.unwrap();
            other.await.unwrap().unwrap();
        }
        let rows = sqlx::query("SELECT id, n FROM things ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        let counts: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.try_get("id").unwrap(), r.try_get("n").unwrap()))
            .collect();
        assert_eq!(
            counts,
            [
                ("counter".to_string(), ROUNDS),
                ("other".to_string(), ROUNDS)
            ]
        );
        pool.close().await;
    }
}
