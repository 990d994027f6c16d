//! The director's records in its database (SQLite or PostgreSQL through `wf_db`):
//! releases, stemcells, cloud configs, deployments, instances and tasks.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyPool, Row as _};

use super::DirectorError;
use crate::agent::ApplySpec;
use crate::release::ReleaseJob;

pub const MIGRATIONS: &[wf_db::EmbeddedMigration] = wf_db::embed_migrations!(1 => "0001_initial");

fn db(e: sqlx::Error) -> DirectorError {
    DirectorError::Database(e.to_string())
}

fn json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    serde_json::from_str(&text?).ok()
}

fn to_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("JSON")
}

pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A package of an uploaded release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPackage {
    pub name: String,
    pub version: String,
    pub sha1: String,
    pub blobstore_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRelease {
    pub name: String,
    pub version: String,
    pub jobs: Vec<ReleaseJob>,
    pub packages: Vec<StoredPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stemcell {
    pub name: String,
    pub version: String,
    pub operating_system: String,
    pub cid: String,
}

/// What a VM is created with; a change recreates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    pub stemcell_cid: String,
    pub cloud_properties: Value,
    pub networks: Value,
    pub env: Value,
    /// MiB, 0 for none.
    pub persistent_disk: u64,
    pub disk_cloud_properties: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub deployment: String,
    pub group: String,
    pub index: u32,
    pub az: String,
    pub ip: String,
    /// `started` or `stopped`.
    pub state: String,
    pub agent_id: Option<String>,
    pub vm_cid: Option<String>,
    pub disk_cid: Option<String>,
    pub vm_config: Option<VmConfig>,
    pub spec: Option<ApplySpec>,
}

impl Instance {
    /// `router/3f2a...`, as BOSH names instances.
    pub fn name(&self) -> String {
        format!("{}/{}", self.group, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: i64,
    /// `processing`, `done` or `error`.
    pub state: String,
    pub description: String,
    pub deployment: Option<String>,
    pub result: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

pub async fn insert_release(
    pool: &AnyPool,
    release: &StoredRelease,
) -> Result<bool, DirectorError> {
    let inserted = sqlx::query(
        "INSERT INTO releases (name, version, jobs, packages) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name, version) DO NOTHING",
    )
    .bind(&release.name)
    .bind(&release.version)
    .bind(to_text(&release.jobs))
    .bind(to_text(&release.packages))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn releases(pool: &AnyPool) -> Result<Vec<StoredRelease>, DirectorError> {
    let rows =
        sqlx::query("SELECT name, version, jobs, packages FROM releases ORDER BY name, version")
            .fetch_all(pool)
            .await
            .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| StoredRelease {
            name: r.get("name"),
            version: r.get("version"),
            jobs: json(r.get("jobs")).unwrap_or_default(),
            packages: json(r.get("packages")).unwrap_or_default(),
        })
        .collect())
}

pub async fn insert_stemcell(pool: &AnyPool, stemcell: &Stemcell) -> Result<bool, DirectorError> {
    let inserted = sqlx::query(
        "INSERT INTO stemcells (name, version, operating_system, cid) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name, version) DO NOTHING",
    )
    .bind(&stemcell.name)
    .bind(&stemcell.version)
    .bind(&stemcell.operating_system)
    .bind(&stemcell.cid)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn stemcells(pool: &AnyPool) -> Result<Vec<Stemcell>, DirectorError> {
    let rows = sqlx::query(
        "SELECT name, version, operating_system, cid FROM stemcells ORDER BY name, version",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| Stemcell {
            name: r.get("name"),
            version: r.get("version"),
            operating_system: r.get("operating_system"),
            cid: r.get("cid"),
        })
        .collect())
}

pub async fn insert_cloud_config(pool: &AnyPool, content: &str) -> Result<(), DirectorError> {
    sqlx::query(
        "INSERT INTO cloud_configs (id, content, created_at)
         SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM cloud_configs",
    )
    .bind(content)
    .bind(unix_now())
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn latest_cloud_config(pool: &AnyPool) -> Result<Option<String>, DirectorError> {
    let row = sqlx::query("SELECT content FROM cloud_configs ORDER BY id DESC LIMIT 1")
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    Ok(row.map(|r| r.get("content")))
}

pub async fn upsert_deployment(
    pool: &AnyPool,
    name: &str,
    manifest: &str,
) -> Result<(), DirectorError> {
    sqlx::query(
        "INSERT INTO deployments (name, manifest) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest",
    )
    .bind(name)
    .bind(manifest)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn deployments(pool: &AnyPool) -> Result<Vec<(String, String)>, DirectorError> {
    let rows = sqlx::query("SELECT name, manifest FROM deployments ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| (r.get("name"), r.get("manifest")))
        .collect())
}

pub async fn delete_deployment(pool: &AnyPool, name: &str) -> Result<(), DirectorError> {
    sqlx::query("DELETE FROM deployments WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

const INSTANCE_COLUMNS: &str = "id, deployment, instance_group, instance_index, az, ip, state, \
     agent_id, vm_cid, disk_cid, vm_config, spec";

fn instance(row: &sqlx::any::AnyRow) -> Instance {
    Instance {
        id: row.get("id"),
        deployment: row.get("deployment"),
        group: row.get("instance_group"),
        index: row.get::<i64, _>("instance_index") as u32,
        az: row.get("az"),
        ip: row.get("ip"),
        state: row.get("state"),
        agent_id: row.get("agent_id"),
        vm_cid: row.get("vm_cid"),
        disk_cid: row.get("disk_cid"),
        vm_config: json(row.get("vm_config")),
        spec: json(row.get("spec")),
    }
}

/// The instances of `deployment` (every deployment's with `None`), by group and index.
pub async fn instances(
    pool: &AnyPool,
    deployment: Option<&str>,
) -> Result<Vec<Instance>, DirectorError> {
    let sql = format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE ($1 = '' OR deployment = $1)
         ORDER BY deployment, instance_group, instance_index"
    );
    let rows = sqlx::query(&sql)
        .bind(deployment.unwrap_or(""))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    Ok(rows.iter().map(instance).collect())
}

pub async fn save_instance(pool: &AnyPool, i: &Instance) -> Result<(), DirectorError> {
    sqlx::query(
        "INSERT INTO instances (id, deployment, instance_group, instance_index, az, ip, state,
             agent_id, vm_cid, disk_cid, vm_config, spec)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET az = excluded.az, ip = excluded.ip,
             state = excluded.state, agent_id = excluded.agent_id, vm_cid = excluded.vm_cid,
             disk_cid = excluded.disk_cid, vm_config = excluded.vm_config, spec = excluded.spec",
    )
    .bind(&i.id)
    .bind(&i.deployment)
    .bind(&i.group)
    .bind(i64::from(i.index))
    .bind(&i.az)
    .bind(&i.ip)
    .bind(&i.state)
    .bind(i.agent_id.clone())
    .bind(i.vm_cid.clone())
    .bind(i.disk_cid.clone())
    .bind(i.vm_config.as_ref().map(to_text))
    .bind(i.spec.as_ref().map(to_text))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn delete_instance(pool: &AnyPool, id: &str) -> Result<(), DirectorError> {
    sqlx::query("DELETE FROM instances WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

/// Creates a task in state `processing`; ids count up from 1.
pub async fn insert_task(
    pool: &AnyPool,
    description: &str,
    deployment: Option<&str>,
) -> Result<i64, DirectorError> {
    let row = sqlx::query(
        "INSERT INTO tasks (id, state, description, deployment, log, started_at)
         SELECT COALESCE(MAX(id), 0) + 1, 'processing', $1, $2, '', $3 FROM tasks
         RETURNING id",
    )
    .bind(description)
    .bind(deployment.map(str::to_string))
    .bind(unix_now())
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(row.get("id"))
}

pub async fn append_task_log(pool: &AnyPool, id: i64, line: &str) -> Result<(), DirectorError> {
    sqlx::query("UPDATE tasks SET log = log || $1 WHERE id = $2")
        .bind(format!("{line}\n"))
        .bind(id)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn finish_task(
    pool: &AnyPool,
    id: i64,
    state: &str,
    result: &str,
) -> Result<(), DirectorError> {
    sqlx::query("UPDATE tasks SET state = $1, result = $2, finished_at = $3 WHERE id = $4")
        .bind(state)
        .bind(result)
        .bind(unix_now())
        .bind(id)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

const TASK_COLUMNS: &str = "id, state, description, deployment, result, started_at, finished_at";

fn task(row: &sqlx::any::AnyRow) -> Task {
    Task {
        id: row.get("id"),
        state: row.get("state"),
        description: row.get("description"),
        deployment: row.get("deployment"),
        result: row.get("result"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    }
}

pub async fn task_by_id(pool: &AnyPool, id: i64) -> Result<Option<(Task, String)>, DirectorError> {
    let sql = format!("SELECT {TASK_COLUMNS}, log FROM tasks WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    Ok(row.map(|r| (task(&r), r.get("log"))))
}

/// The newest tasks first, of `deployment` if given.
pub async fn tasks(
    pool: &AnyPool,
    deployment: Option<&str>,
    limit: i64,
) -> Result<Vec<Task>, DirectorError> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1 = '' OR deployment = $1) ORDER BY id DESC LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(deployment.unwrap_or(""))
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    Ok(rows.iter().map(task).collect())
}

/// Tasks left `processing` by a director that stopped: they will not finish.
pub async fn fail_unfinished_tasks(pool: &AnyPool) -> Result<(), DirectorError> {
    sqlx::query(
        "UPDATE tasks SET state = 'error', result = 'the director restarted during the task',
         finished_at = $1 WHERE state = 'processing'",
    )
    .bind(unix_now())
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_on_every_backend() {
        for database in wf_db::testing::databases().await {
            let pool = wf_db::open(database.url(), MIGRATIONS).await.unwrap();
            round_trip(&pool).await;
        }
    }

    async fn round_trip(pool: &AnyPool) {
        let release = StoredRelease {
            name: "wf".into(),
            version: "1".into(),
            jobs: vec![],
            packages: vec![StoredPackage {
                name: "wfd".into(),
                version: "abc".into(),
                sha1: "abc".into(),
                blobstore_id: "b-1".into(),
            }],
        };
        assert!(insert_release(pool, &release).await.unwrap());
        assert!(!insert_release(pool, &release).await.unwrap());
        assert_eq!(releases(pool).await.unwrap()[0].packages, release.packages);

        insert_cloud_config(pool, "azs: []").await.unwrap();
        insert_cloud_config(pool, "azs: [{name: z1}]")
            .await
            .unwrap();
        assert_eq!(
            latest_cloud_config(pool).await.unwrap().unwrap(),
            "azs: [{name: z1}]"
        );

        upsert_deployment(pool, "d", "name: d").await.unwrap();
        upsert_deployment(pool, "d", "name: d\n").await.unwrap();
        assert_eq!(
            deployments(pool).await.unwrap(),
            vec![("d".into(), "name: d\n".into())]
        );
        let mut inst = Instance {
            id: "i-1".into(),
            deployment: "d".into(),
            group: "router".into(),
            index: 0,
            az: "z1".into(),
            ip: "127.0.1.10".into(),
            state: "started".into(),
            agent_id: None,
            vm_cid: None,
            disk_cid: None,
            vm_config: None,
            spec: None,
        };
        save_instance(pool, &inst).await.unwrap();
        inst.vm_cid = Some("vm-1".into());
        inst.spec = Some(ApplySpec {
            deployment: "d".into(),
            configuration_hash: "h".into(),
            ..Default::default()
        });
        save_instance(pool, &inst).await.unwrap();
        assert_eq!(
            instances(pool, Some("d")).await.unwrap(),
            vec![inst.clone()]
        );
        assert_eq!(instances(pool, None).await.unwrap().len(), 1);
        delete_instance(pool, "i-1").await.unwrap();
        assert!(instances(pool, Some("d")).await.unwrap().is_empty());

        let first = insert_task(pool, "create deployment", Some("d"))
            .await
            .unwrap();
        let second = insert_task(pool, "scan and fix", None).await.unwrap();
        assert_eq!((first, second), (1, 2));
        append_task_log(pool, first, "one").await.unwrap();
        append_task_log(pool, first, "two").await.unwrap();
        finish_task(pool, first, "done", "ok").await.unwrap();
        let (task, log) = task_by_id(pool, first).await.unwrap().unwrap();
        assert_eq!((task.state.as_str(), log.as_str()), ("done", "one\ntwo\n"));
        assert_eq!(tasks(pool, Some("d"), 10).await.unwrap().len(), 1);
        assert_eq!(tasks(pool, None, 10).await.unwrap()[0].id, second);
        fail_unfinished_tasks(pool).await.unwrap();
        assert_eq!(
            task_by_id(pool, second).await.unwrap().unwrap().0.state,
            "error"
        );
    }
}
