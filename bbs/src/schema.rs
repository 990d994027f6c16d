//! The BBS tables. Portable SQL (TEXT and BIGINT columns, records as JSON text) so the
//! same statements create the schema on SQLite and PostgreSQL; `schema_version` records
//! which version a database holds.

use sqlx::{AnyPool, Row};

use crate::BbsError;

/// The schema this code writes; bump it with every change to [`STATEMENTS`].
pub(crate) const VERSION: i64 = 1;

const STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    // One row per DesiredLRP; `json` holds the whole record.
    "CREATE TABLE IF NOT EXISTS desired_lrps (
        process_guid TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        instances BIGINT NOT NULL,
        modification_tag_epoch TEXT NOT NULL,
        modification_tag_index BIGINT NOT NULL,
        json TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS desired_lrps_domain ON desired_lrps (domain)",
    // One row per (process_guid, index, presence), as in Diego.
    "CREATE TABLE IF NOT EXISTS actual_lrps (
        process_guid TEXT NOT NULL,
        idx BIGINT NOT NULL,
        presence TEXT NOT NULL,
        domain TEXT NOT NULL,
        instance_guid TEXT NOT NULL,
        cell_id TEXT NOT NULL,
        state TEXT NOT NULL,
        since BIGINT NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (process_guid, idx, presence)
    )",
    "CREATE INDEX IF NOT EXISTS actual_lrps_cell ON actual_lrps (cell_id)",
    "CREATE INDEX IF NOT EXISTS actual_lrps_domain ON actual_lrps (domain)",
    "CREATE TABLE IF NOT EXISTS tasks (
        task_guid TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        state TEXT NOT NULL,
        cell_id TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        json TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS tasks_cell ON tasks (cell_id)",
    "CREATE TABLE IF NOT EXISTS domains (
        name TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    )",
    // Locket's cell presences: the rep refreshes its row before `expires_at`.
    "CREATE TABLE IF NOT EXISTS cell_presences (
        cell_id TEXT PRIMARY KEY,
        json TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    )",
];

/// Creates the missing tables and records the version; refuses a newer database.
pub(crate) async fn create(pool: &AnyPool) -> Result<(), BbsError> {
    for statement in STATEMENTS {
        sqlx::query(statement).execute(pool).await?;
    }
    let found = sqlx::query("SELECT version FROM schema_version")
        .fetch_optional(pool)
        .await?;
    match found {
        None => {
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(VERSION)
                .execute(pool)
                .await?;
        }
        Some(row) => {
            let found: i64 = row.try_get("version")?;
            if found > VERSION {
                return Err(BbsError::SchemaVersion {
                    found,
                    supported: VERSION,
                });
            }
        }
    }
    Ok(())
}
