//! Row access to the BBS tables. Each record is stored whole as JSON beside the columns
//! queries filter on; every function takes a connection so callers choose between the
//! pool and a transaction.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::models::{
    ActualLrp, ActualLrpKey, ActualLrpState, CellPresence, DesiredLrp, Presence, Task,
};
use crate::{ActualLrpFilter, BbsError, DesiredLrpFilter, TaskFilter};

/// Rows in one multi-row statement at most, and keys in one lookup. Statements come in
/// a few sizes only (see [`shaped_chunks`]) so that each is prepared once and then found
/// in the connection's statement cache; and small enough that SQLite's binding, which
/// looks each numbered parameter up by a scan of the statement's parameters (quadratic
/// in them), stays cheap: 16 rows of 9 columns, where 64 rows spent 5.6% of a placement
/// at Diego's scale in `sqlite3_bind_parameter_name` (placement 62 s -> 49-55 s).
const ROWS_PER_STATEMENT: usize = 16;
const KEYS_PER_STATEMENT: usize = 64;

/// Splits `items` into chunks of `max` (a power of four), 16, 4 or 1 items (for `max`
/// 64): every chunk has one of a handful of lengths.
fn shaped_chunks<T>(mut items: &[T], max: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    while !items.is_empty() {
        let mut size = max;
        while size > items.len() {
            size /= 4;
        }
        let (chunk, rest) = items.split_at(size);
        chunks.push(chunk);
        items = rest;
    }
    chunks
}

fn decode<T: DeserializeOwned>(row: &AnyRow) -> Result<T, BbsError> {
    let json: String = row.try_get("json")?;
    serde_json::from_str(&json).map_err(|e| BbsError::InvalidRecord(format!("stored record: {e}")))
}

fn encode<T: Serialize>(record: &T) -> Result<String, BbsError> {
    serde_json::to_string(record).map_err(|e| BbsError::InvalidRecord(e.to_string()))
}

enum Arg {
    Text(String),
    Int(i64),
}

/// A `SELECT json FROM ...` with `col = $n` conditions added one by one.
struct Select {
    sql: String,
    args: Vec<Arg>,
    conditions: usize,
}

impl Select {
    fn from(table: &str) -> Self {
        Select {
            sql: format!("SELECT json FROM {table}"),
            args: Vec::new(),
            conditions: 0,
        }
    }

    fn condition(&mut self, text: &str) {
        self.sql.push_str(if self.conditions == 0 {
            " WHERE "
        } else {
            " AND "
        });
        self.sql.push_str(text);
        self.conditions += 1;
    }

    fn eq(mut self, column: &str, value: Option<Arg>) -> Self {
        if let Some(value) = value {
            self.args.push(value);
            let n = self.args.len();
            self.condition(&format!("{column} = ${n}"));
        }
        self
    }

    fn one_of(mut self, column: &str, values: Option<&[String]>) -> Self {
        let Some(values) = values else { return self };
        if values.is_empty() {
            self.condition("1 = 0");
            return self;
        }
        let mut list = String::new();
        for value in values {
            self.args.push(Arg::Text(value.clone()));
            let sep = if list.is_empty() { "" } else { ", " };
            let _ = write!(list, "{sep}${}", self.args.len());
        }
        self.condition(&format!("{column} IN ({list})"));
        self
    }

    async fn fetch<T: DeserializeOwned>(
        mut self,
        conn: &mut AnyConnection,
        order_by: &str,
    ) -> Result<Vec<T>, BbsError> {
        self.sql.push_str(" ORDER BY ");
        self.sql.push_str(order_by);
        let mut query = sqlx::query(&self.sql);
        for arg in self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s),
                Arg::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(conn).await?;
        rows.iter().map(decode).collect()
    }
}

fn text(value: &Option<String>) -> Option<Arg> {
    value.clone().map(Arg::Text)
}

// --- DesiredLRPs ---

pub(crate) async fn desired_lrp(
    conn: &mut AnyConnection,
    process_guid: &str,
) -> Result<Option<DesiredLrp>, BbsError> {
    let row = sqlx::query("SELECT json FROM desired_lrps WHERE process_guid = $1")
        .bind(process_guid)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(decode).transpose()
}

pub(crate) async fn desired_lrps(
    conn: &mut AnyConnection,
    filter: &DesiredLrpFilter,
) -> Result<Vec<DesiredLrp>, BbsError> {
    Select::from("desired_lrps")
        .eq("domain", text(&filter.domain))
        .one_of("process_guid", filter.process_guids.as_deref())
        .fetch(conn, "process_guid")
        .await
}

pub(crate) async fn put_desired_lrp(
    conn: &mut AnyConnection,
    lrp: &DesiredLrp,
) -> Result<(), BbsError> {
    sqlx::query(
        "INSERT INTO desired_lrps
            (process_guid, domain, instances, modification_tag_epoch, modification_tag_index, json)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (process_guid) DO UPDATE SET
            domain = excluded.domain, instances = excluded.instances,
            modification_tag_epoch = excluded.modification_tag_epoch,
            modification_tag_index = excluded.modification_tag_index, json = excluded.json",
    )
    .bind(lrp.process_guid.clone())
    .bind(lrp.domain.clone())
    .bind(i64::from(lrp.instances))
    .bind(lrp.modification_tag.epoch.clone())
    .bind(i64::from(lrp.modification_tag.index))
    .bind(encode(lrp)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_desired_lrp(
    conn: &mut AnyConnection,
    process_guid: &str,
) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM desired_lrps WHERE process_guid = $1")
        .bind(process_guid)
        .execute(conn)
        .await?;
    Ok(())
}

// --- ActualLRPs (the ORDINARY rows) ---

/// The ORDINARY ActualLRP at `key`.
pub(crate) async fn actual_lrp(
    conn: &mut AnyConnection,
    key: &ActualLrpKey,
) -> Result<Option<ActualLrp>, BbsError> {
    actual_lrp_with_presence(conn, key, Presence::Ordinary).await
}

pub(crate) async fn actual_lrp_with_presence(
    conn: &mut AnyConnection,
    key: &ActualLrpKey,
    presence: Presence,
) -> Result<Option<ActualLrp>, BbsError> {
    let row = sqlx::query(
        "SELECT json FROM actual_lrps WHERE process_guid = $1 AND idx = $2 AND presence = $3",
    )
    .bind(key.process_guid.clone())
    .bind(i64::from(key.index))
    .bind(presence.as_str())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// Every row at `keys`: the ORDINARY ones and their SUSPECT or EVACUATING copies, read
/// up to [`KEYS_PER_STATEMENT`] keys at a time.
pub(crate) async fn actual_lrp_rows_at(
    conn: &mut AnyConnection,
    keys: &[&ActualLrpKey],
) -> Result<Vec<ActualLrp>, BbsError> {
    let mut found = Vec::with_capacity(keys.len());
    for chunk in shaped_chunks(keys, KEYS_PER_STATEMENT) {
        let mut sql = String::from("SELECT json FROM actual_lrps WHERE ");
        for i in 0..chunk.len() {
            let sep = if i == 0 { "" } else { " OR " };
            let _ = write!(
                sql,
                "{sep}(process_guid = ${} AND idx = ${})",
                2 * i + 1,
                2 * i + 2
            );
        }
        let mut query = sqlx::query(&sql);
        for key in chunk {
            query = query
                .bind(key.process_guid.clone())
                .bind(i64::from(key.index));
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.push(decode(&row)?);
        }
    }
    Ok(found)
}

/// The keys of the UNCLAIMED ActualLRPs, of one process or of all.
pub(crate) async fn unclaimed_actual_lrp_keys(
    conn: &mut AnyConnection,
    process_guid: Option<&str>,
) -> Result<Vec<ActualLrpKey>, BbsError> {
    let mut sql = String::from(
        "SELECT process_guid, idx, domain FROM actual_lrps WHERE presence = $1 AND state = $2",
    );
    if process_guid.is_some() {
        sql.push_str(" AND process_guid = $3");
    }
    let mut query = sqlx::query(&sql)
        .bind(Presence::Ordinary.as_str())
        .bind(ActualLrpState::Unclaimed.as_str());
    if let Some(process_guid) = process_guid {
        query = query.bind(process_guid);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            let index: i64 = row.try_get("idx")?;
            Ok(ActualLrpKey {
                process_guid: row.try_get("process_guid")?,
                index: u32::try_from(index)
                    .map_err(|e| BbsError::InvalidRecord(format!("stored index {index}: {e}")))?,
                domain: row.try_get("domain")?,
            })
        })
        .collect()
}

pub(crate) async fn actual_lrps(
    conn: &mut AnyConnection,
    filter: &ActualLrpFilter,
) -> Result<Vec<ActualLrp>, BbsError> {
    Select::from("actual_lrps")
        .eq("domain", text(&filter.domain))
        .eq("cell_id", text(&filter.cell_id))
        .eq("process_guid", text(&filter.process_guid))
        .eq("idx", filter.index.map(|i| Arg::Int(i64::from(i))))
        .fetch(conn, "process_guid, idx")
        .await
}

pub(crate) async fn put_actual_lrp(
    conn: &mut AnyConnection,
    lrp: &ActualLrp,
) -> Result<(), BbsError> {
    put_actual_lrps(conn, std::slice::from_ref(lrp)).await
}

/// Inserts or replaces `lrps`, up to [`ROWS_PER_STATEMENT`] in each statement; a row
/// given more than once is written as last given (PostgreSQL refuses to upsert a row
/// twice in one statement).
pub(crate) async fn put_actual_lrps(
    conn: &mut AnyConnection,
    lrps: &[ActualLrp],
) -> Result<(), BbsError> {
    const COLUMNS: usize = 9;
    let mut seen = HashSet::new();
    let mut last: Vec<&ActualLrp> = lrps
        .iter()
        .rev()
        .filter(|a| seen.insert((&a.key, a.presence)))
        .collect();
    last.reverse();
    for chunk in shaped_chunks(&last, ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO actual_lrps
                (process_guid, idx, presence, domain, instance_guid, cell_id, state, since, json)
             VALUES ",
        );
        for row in 0..chunk.len() {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 1..=COLUMNS {
                let sep = if column == 1 { "" } else { ", " };
                let _ = write!(sql, "{sep}${}", row * COLUMNS + column);
            }
            sql.push(')');
        }
        sql.push_str(
            " ON CONFLICT (process_guid, idx, presence) DO UPDATE SET
                domain = excluded.domain, instance_guid = excluded.instance_guid,
                cell_id = excluded.cell_id, state = excluded.state, since = excluded.since,
                json = excluded.json",
        );
        let mut query = sqlx::query(&sql);
        for lrp in chunk {
            query = query
                .bind(lrp.key.process_guid.clone())
                .bind(i64::from(lrp.key.index))
                .bind(lrp.presence.as_str())
                .bind(lrp.key.domain.clone())
                .bind(lrp.instance_key.instance_guid.clone())
                .bind(lrp.instance_key.cell_id.clone())
                .bind(lrp.state.as_str())
                .bind(lrp.since)
                .bind(encode(lrp)?);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes the ORDINARY ActualLRP at `key`.
pub(crate) async fn delete_actual_lrp(
    conn: &mut AnyConnection,
    key: &ActualLrpKey,
) -> Result<(), BbsError> {
    delete_actual_lrp_with_presence(conn, key, Presence::Ordinary).await
}

pub(crate) async fn delete_actual_lrp_with_presence(
    conn: &mut AnyConnection,
    key: &ActualLrpKey,
    presence: Presence,
) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM actual_lrps WHERE process_guid = $1 AND idx = $2 AND presence = $3")
        .bind(key.process_guid.clone())
        .bind(i64::from(key.index))
        .bind(presence.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

// --- Tasks ---

pub(crate) async fn task(
    conn: &mut AnyConnection,
    task_guid: &str,
) -> Result<Option<Task>, BbsError> {
    let row = sqlx::query("SELECT json FROM tasks WHERE task_guid = $1")
        .bind(task_guid)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(decode).transpose()
}

pub(crate) async fn tasks(
    conn: &mut AnyConnection,
    filter: &TaskFilter,
) -> Result<Vec<Task>, BbsError> {
    Select::from("tasks")
        .eq("domain", text(&filter.domain))
        .eq("cell_id", text(&filter.cell_id))
        .fetch(conn, "task_guid")
        .await
}

pub(crate) async fn put_task(conn: &mut AnyConnection, task: &Task) -> Result<(), BbsError> {
    sqlx::query(
        "INSERT INTO tasks (task_guid, domain, state, cell_id, updated_at, json)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (task_guid) DO UPDATE SET
            domain = excluded.domain, state = excluded.state, cell_id = excluded.cell_id,
            updated_at = excluded.updated_at, json = excluded.json",
    )
    .bind(task.task_guid.clone())
    .bind(task.domain.clone())
    .bind(task.state.as_str())
    .bind(task.cell_id.clone())
    .bind(task.updated_at)
    .bind(encode(task)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_task(conn: &mut AnyConnection, task_guid: &str) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM tasks WHERE task_guid = $1")
        .bind(task_guid)
        .execute(conn)
        .await?;
    Ok(())
}

// --- Domains and cell presences ---

pub(crate) async fn upsert_domain(
    conn: &mut AnyConnection,
    name: &str,
    expires_at: i64,
) -> Result<(), BbsError> {
    sqlx::query(
        "INSERT INTO domains (name, expires_at) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
    )
    .bind(name)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn fresh_domains(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<Vec<String>, BbsError> {
    let rows = sqlx::query("SELECT name FROM domains WHERE expires_at > $1 ORDER BY name")
        .bind(now)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("name"))
        .collect::<Result<_, _>>()?)
}

pub(crate) async fn cell_is_present(
    conn: &mut AnyConnection,
    cell_id: &str,
    now: i64,
) -> Result<bool, BbsError> {
    let row =
        sqlx::query("SELECT cell_id FROM cell_presences WHERE cell_id = $1 AND expires_at > $2")
            .bind(cell_id)
            .bind(now)
            .fetch_optional(conn)
            .await?;
    Ok(row.is_some())
}

/// Pushes back the expiry of a present cell whose presence is unchanged; false if the
/// cell is not present or its presence changed.
pub(crate) async fn refresh_cell_presence(
    conn: &mut AnyConnection,
    presence: &CellPresence,
    expires_at: i64,
    now: i64,
) -> Result<bool, BbsError> {
    let result = sqlx::query(
        "UPDATE cell_presences SET expires_at = $1
         WHERE cell_id = $2 AND json = $3 AND expires_at > $4",
    )
    .bind(expires_at)
    .bind(presence.cell_id.clone())
    .bind(encode(presence)?)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

pub(crate) async fn put_cell_presence(
    conn: &mut AnyConnection,
    presence: &CellPresence,
    expires_at: i64,
) -> Result<(), BbsError> {
    sqlx::query(
        "INSERT INTO cell_presences (cell_id, json, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (cell_id) DO UPDATE SET json = excluded.json, expires_at = excluded.expires_at",
    )
    .bind(presence.cell_id.clone())
    .bind(encode(presence)?)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_cell_presence(
    conn: &mut AnyConnection,
    cell_id: &str,
) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM cell_presences WHERE cell_id = $1")
        .bind(cell_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn cells(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<Vec<CellPresence>, BbsError> {
    let rows =
        sqlx::query("SELECT json FROM cell_presences WHERE expires_at > $1 ORDER BY cell_id")
            .bind(now)
            .fetch_all(conn)
            .await?;
    rows.iter().map(decode).collect()
}

/// The rep URL of `cell_id` if the cell is present.
pub(crate) async fn rep_url(
    conn: &mut AnyConnection,
    cell_id: &str,
    now: i64,
) -> Result<Option<String>, BbsError> {
    let row = sqlx::query("SELECT json FROM cell_presences WHERE cell_id = $1 AND expires_at > $2")
        .bind(cell_id)
        .bind(now)
        .fetch_optional(conn)
        .await?;
    let cell: Option<CellPresence> = row.as_ref().map(decode).transpose()?;
    Ok(cell.map(|cell| cell.rep_url))
}

/// The present cells' rep URLs by cell id.
pub(crate) async fn rep_urls(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<HashMap<String, String>, BbsError> {
    Ok(cells(conn, now)
        .await?
        .into_iter()
        .map(|cell| (cell.cell_id, cell.rep_url))
        .collect())
}

/// Whether some cell's presence has expired and is not yet cleaned up: a cell vanished
/// since the last convergence pass.
pub(crate) async fn cell_presence_expired(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<bool, BbsError> {
    let row = sqlx::query("SELECT cell_id FROM cell_presences WHERE expires_at <= $1 LIMIT 1")
        .bind(now)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Deletes expired domains and cell presences.
pub(crate) async fn delete_expired(conn: &mut AnyConnection, now: i64) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM domains WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM cell_presences WHERE expires_at <= $1")
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_statements_take_a_few_lengths() {
        let items: Vec<u32> = (0..1000).collect();
        let chunks = shaped_chunks(&items, 64);
        assert!(chunks.iter().all(|c| [64, 16, 4, 1].contains(&c.len())));
        assert_eq!(chunks.concat(), items);
        assert!(shaped_chunks::<u32>(&[], 64).is_empty());
    }
}
