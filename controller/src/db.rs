//! The CC database (CC_DB): the schema, the records of orgs, spaces, apps, processes,
//! packages, builds, droplets, buildpacks, domains, routes, route destinations and jobs, and a
//! small portable query layer over sqlx's `AnyPool` (SQLite or PostgreSQL).
//!
//! SQL stays portable: `$N` placeholders, TEXT for JSON and timestamps (RFC 3339 UTC
//! with microseconds, so they sort as text), BIGINT for numbers and flags.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

/// Current time as stored: `2026-11-24T15:00:00.123456Z`.
pub fn now() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_string())
}

/// Unix seconds of a stored timestamp (0 if it does not parse).
pub fn unix_seconds(stored: &str) -> i64 {
    time::OffsetDateTime::parse(stored, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or_default()
}

pub fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

const MIGRATIONS: &[wf_db::EmbeddedMigration] = wf_db::embed_migrations!(
    1 => "0001_initial",
    2 => "0002_tasks",
    3 => "0003_roles",
    4 => "0004_audit_events",
    5 => "0005_quotas",
    6 => "0006_deployments",
    7 => "0007_feature_flags_and_env_groups",
    8 => "0008_list_order_indexes",
    9 => "0009_private_domains",
    10 => "0010_app_usage_events",
    11 => "0011_buildpacks",
    12 => "0012_service_instances",
    13 => "0013_metadata",
    14 => "0014_service_brokers",
    15 => "0015_process_log_rate_limit",
    16 => "0016_isolation_segments",
    17 => "0017_service_route_bindings",
    18 => "0018_revisions",
);

/// A bound query argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
    Null,
    /// NULL for a number column (PostgreSQL types its parameters).
    NullInt,
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(s.to_string())
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(s)
    }
}
impl From<&String> for Arg {
    fn from(s: &String) -> Arg {
        Arg::Text(s.clone())
    }
}
impl From<i64> for Arg {
    fn from(i: i64) -> Arg {
        Arg::Int(i)
    }
}
impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Arg {
        s.map_or(Arg::Null, Arg::Text)
    }
}

/// A WHERE clause under construction: clauses joined by AND, with `$N` placeholders.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Filter {
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Adds `template`, whose `?` marks stand for `args` in order.
    pub fn clause(mut self, template: &str, args: Vec<Arg>) -> Filter {
        let mut sql = String::new();
        let mut args = args.into_iter();
        for c in template.chars() {
            if c == '?' {
                if let Some(arg) = args.next() {
                    self.args.push(arg);
                    sql.push_str(&format!("${}", self.args.len()));
                }
            } else {
                sql.push(c);
            }
        }
        self.clauses.push(sql);
        self
    }

    pub fn eq(self, column: &str, value: impl Into<Arg>) -> Filter {
        self.clause(&format!("{column} = ?"), vec![value.into()])
    }

    /// `column IN (values)`; no values matches nothing.
    pub fn any_of(self, column: &str, values: &[String]) -> Filter {
        self.in_select(column, "{}", values)
    }

    /// `column IS NULL OR column IN (values)`.
    pub fn null_or_any_of(self, column: &str, values: &[String]) -> Filter {
        if values.is_empty() {
            return self.clause(&format!("{column} IS NULL"), vec![]);
        }
        let marks = vec!["?"; values.len()].join(", ");
        let template = format!("({column} IS NULL OR {column} IN ({marks}))");
        self.clause(&template, values.iter().map(Arg::from).collect())
    }

    /// `column IN (select)`, where `{}` in `select` is the list of `values`.
    pub fn in_select(self, column: &str, select: &str, values: &[String]) -> Filter {
        if values.is_empty() {
            return self.clause("1 = 0", vec![]);
        }
        let marks = vec!["?"; values.len()].join(", ");
        let template = format!("{column} IN ({})", select.replace("{}", &marks));
        self.clause(&template, values.iter().map(Arg::from).collect())
    }

    /// The resources whose labels meet every requirement of a `label_selector`, with
    /// `column` their guid and `resource_type` their table.
    pub fn label_selector(
        mut self,
        column: &str,
        resource_type: &str,
        requirements: &[crate::metadata::Requirement],
    ) -> Filter {
        for requirement in requirements {
            let (template, args) =
                crate::metadata::requirement_sql(column, resource_type, requirement);
            self = self.clause(&template, args);
        }
        self
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// Which page of a list, in which order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub per_page: u32,
    /// A column of the record, validated against [`Record::ORDERABLE`].
    pub order_by: String,
    pub descending: bool,
}

/// A table's record type.
pub trait Record: Sized + Send + Unpin {
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    /// Columns a list may be ordered by (`order_by`).
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error>;
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_all<'q>(mut query: AnyQuery<'q>, args: &[Arg]) -> AnyQuery<'q> {
    for arg in args {
        query = match arg {
            Arg::Text(s) => query.bind(s.clone()),
            Arg::Int(i) => query.bind(*i),
            Arg::Null => query.bind(Option::<String>::None),
            Arg::NullInt => query.bind(Option::<i64>::None),
        };
    }
    query
}

pub struct Db {
    pool: AnyPool,
}

impl Db {
    /// Connects (SQLite in WAL mode, or PostgreSQL) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Db, wf_db::DbError> {
        let pool = wf_db::open(url, MIGRATIONS).await?;
        Ok(Db { pool })
    }

    /// Runs a statement; returns the rows it affected.
    pub async fn exec(&self, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error> {
        let result = bind_all(sqlx::query(sql), &args)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// `INSERT INTO table (columns) VALUES (...)`.
    pub async fn insert(&self, table: &str, values: Vec<(&str, Arg)>) -> Result<(), sqlx::Error> {
        let columns: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
        let marks: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            marks.join(", ")
        );
        self.exec(&sql, values.into_iter().map(|(_, a)| a).collect())
            .await
            .map(|_| ())
    }

    /// Sets `values` (and `updated_at`, unless they set it) on the row `guid` of `table`;
    /// returns whether it existed. (PostgreSQL refuses a column set twice.)
    pub async fn update(
        &self,
        table: &str,
        guid: &str,
        values: Vec<(&str, Arg)>,
    ) -> Result<bool, sqlx::Error> {
        let stamped = values.iter().any(|(column, _)| *column == "updated_at");
        let stamp = (!stamped).then(|| ("updated_at", Arg::Text(now())));
        let mut sets = Vec::new();
        let mut args = Vec::new();
        for (column, arg) in values.into_iter().chain(stamp) {
            args.push(arg);
            sets.push(format!("{column} = ${}", args.len()));
        }
        args.push(Arg::Text(guid.to_string()));
        let sql = format!(
            "UPDATE {table} SET {} WHERE guid = ${}",
            sets.join(", "),
            args.len()
        );
        Ok(self.exec(&sql, args).await? > 0)
    }

    /// Deletes the records of `table` matching `filter` and their labels and annotations.
    pub async fn delete_resources(&self, table: &str, filter: Filter) -> Result<u64, sqlx::Error> {
        let mut args = filter.args.clone();
        args.push(Arg::Text(table.to_string()));
        let metadata = format!(
            "DELETE FROM {} WHERE resource_guid IN (SELECT guid FROM {table}{}) \
             AND resource_type = ${}",
            crate::metadata::MetadataEntry::TABLE,
            filter.sql(),
            args.len()
        );
        self.exec(&metadata, args).await?;
        self.delete_where(table, filter).await
    }

    pub async fn delete_where(&self, table: &str, filter: Filter) -> Result<u64, sqlx::Error> {
        self.exec(&format!("DELETE FROM {table}{}", filter.sql()), filter.args)
            .await
    }

    pub async fn get<T: Record>(&self, guid: &str) -> Result<Option<T>, sqlx::Error> {
        Ok(self
            .find::<T>(Filter::new().eq("guid", guid))
            .await?
            .into_iter()
            .next())
    }

    /// Every record matching `filter`, oldest first.
    pub async fn find<T: Record>(&self, filter: Filter) -> Result<Vec<T>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY created_at, guid",
            T::COLUMNS,
            T::TABLE,
            filter.sql()
        );
        let rows = bind_all(sqlx::query(&sql), &filter.args)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(T::from_row).collect()
    }

    /// Every record matching `filter`, in no particular order.
    pub async fn select<T: Record>(&self, filter: Filter) -> Result<Vec<T>, sqlx::Error> {
        let sql = format!("SELECT {} FROM {}{}", T::COLUMNS, T::TABLE, filter.sql());
        let rows = bind_all(sqlx::query(&sql), &filter.args)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(T::from_row).collect()
    }

    /// One page of the records matching `filter`, and how many match in all.
    pub async fn list<T: Record>(
        &self,
        filter: Filter,
        page: &Page,
    ) -> Result<(u64, Vec<T>), sqlx::Error> {
        let count_sql = format!("SELECT COUNT(*) AS n FROM {}{}", T::TABLE, filter.sql());
        let total: i64 = bind_all(sqlx::query(&count_sql), &filter.args)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let order = if T::ORDERABLE.contains(&page.order_by.as_str()) {
            page.order_by.as_str()
        } else {
            "created_at"
        };
        let direction = if page.descending { "DESC" } else { "ASC" };
        let offset = u64::from(page.page.saturating_sub(1)) * u64::from(page.per_page);
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {order} {direction}, guid {direction} LIMIT {} OFFSET {offset}",
            T::COLUMNS,
            T::TABLE,
            filter.sql(),
            page.per_page,
        );
        let rows = bind_all(sqlx::query(&sql), &filter.args)
            .fetch_all(&self.pool)
            .await?;
        let records = rows.iter().map(T::from_row).collect::<Result<_, _>>()?;
        Ok((u64::try_from(total).unwrap_or_default(), records))
    }

    /// Creates the shared domain apps are routed under, if it is not there yet.
    pub async fn ensure_shared_domain(&self, name: &str) -> Result<(), sqlx::Error> {
        if self
            .find::<Domain>(Filter::new().eq("name", name))
            .await?
            .is_empty()
        {
            let now = now();
            self.insert(
                "domains",
                vec![
                    ("guid", new_guid().into()),
                    ("name", name.into()),
                    ("internal", Arg::Int(0)),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Adds the built-in buildpacks (`names`, by their default detection order) that
    /// have no record on the `wasm` stack yet, after the last position: a first start
    /// gives them positions 1..n, and a later one never moves what an admin arranged.
    pub async fn ensure_built_in_buildpacks(&self, names: &[&str]) -> Result<(), sqlx::Error> {
        let existing = self.find::<Buildpack>(Filter::new()).await?;
        let mut last = existing.iter().map(|b| b.position).max().unwrap_or(0);
        for name in names {
            let present = existing
                .iter()
                .any(|b| b.name == *name && b.stack.as_deref() == Some(crate::api::STACK));
            if present {
                continue;
            }
            last += 1;
            let now = now();
            let inserted = self
                .insert(
                    "buildpacks",
                    vec![
                        ("guid", new_guid().into()),
                        ("name", (*name).into()),
                        ("stack", crate::api::STACK.into()),
                        ("position", Arg::Int(last)),
                        ("enabled", Arg::Int(1)),
                        ("locked", Arg::Int(0)),
                        ("state", BuildpackState::Ready.into()),
                        ("filename", Arg::Null),
                        ("checksum", Arg::Null),
                        ("created_at", now.clone().into()),
                        ("updated_at", now.into()),
                    ],
                )
                .await;
            match inserted {
                // Another controller starting at the same time seeded it.
                Err(e) if is_unique_violation(&e) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Gives every process of `app_guid` a new version, so nsync replaces its LRP.
    pub async fn renew_process_versions(&self, app_guid: &str) -> Result<(), sqlx::Error> {
        for process in self
            .find::<Process>(Filter::new().eq("app_guid", app_guid))
            .await?
        {
            self.update(
                "processes",
                &process.guid,
                vec![("version", new_guid().into())],
            )
            .await?;
        }
        Ok(())
    }
}

/// Whether `e` is a UNIQUE constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

// --- record helpers ---

fn text(row: &AnyRow, column: &str) -> Result<String, sqlx::Error> {
    row.try_get::<String, _>(column)
}

fn opt_text(row: &AnyRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<String>, _>(column)
}

fn int(row: &AnyRow, column: &str) -> Result<i64, sqlx::Error> {
    row.try_get::<i64, _>(column)
}

fn json<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(&text(row, column)?).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(e),
    })
}

fn state<T: std::str::FromStr<Err = String>>(row: &AnyRow, column: &str) -> Result<T, sqlx::Error> {
    text(row, column)?
        .parse()
        .map_err(|e: String| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: e.into(),
        })
}

pub fn to_json_text<T: serde::Serialize>(value: &T) -> Arg {
    Arg::Text(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
}

/// A state enum stored as its CF name.
macro_rules! cf_state {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
        impl From<$name> for Arg {
            fn from(s: $name) -> Arg { Arg::Text(s.as_str().to_string()) }
        }
    };
}

cf_state!(AppState { Started => "STARTED", Stopped => "STOPPED" });
cf_state!(PackageState { AwaitingUpload => "AWAITING_UPLOAD", Ready => "READY", Failed => "FAILED" });
cf_state!(BuildState { Staging => "STAGING", Staged => "STAGED", Failed => "FAILED" });
cf_state!(DropletState {
    AwaitingUpload => "AWAITING_UPLOAD",
    Staging => "STAGING",
    Staged => "STAGED",
    Failed => "FAILED",
});
cf_state!(JobState { Processing => "PROCESSING", Complete => "COMPLETE", Failed => "FAILED" });
cf_state!(BuildpackState { AwaitingUpload => "AWAITING_UPLOAD", Ready => "READY" });
cf_state!(DeploymentState {
    Deploying => "DEPLOYING",
    Prepaused => "PREPAUSED",
    Paused => "PAUSED",
    Deployed => "DEPLOYED",
    Canceled => "CANCELED",
});

impl DeploymentState {
    /// The states of a deployment still under way (CF's ACTIVE status).
    pub const ACTIVE: [DeploymentState; 3] = [
        DeploymentState::Deploying,
        DeploymentState::Prepaused,
        DeploymentState::Paused,
    ];
}

// --- records ---

#[derive(Debug, Clone)]
pub struct Org {
    pub guid: String,
    pub name: String,
    pub suspended: bool,
    /// Its organization quota.
    pub quota_guid: Option<String>,
    /// The isolation segment of its spaces that have none of their own.
    pub default_isolation_segment_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Org {
    const TABLE: &'static str = "organizations";
    const COLUMNS: &'static str = "guid, name, suspended, quota_guid, \
        default_isolation_segment_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Org {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            suspended: int(row, "suspended")? != 0,
            quota_guid: opt_text(row, "quota_guid")?,
            default_isolation_segment_guid: opt_text(row, "default_isolation_segment_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Space {
    pub guid: String,
    pub name: String,
    pub organization_guid: String,
    /// Its space quota, if it has one.
    pub quota_guid: Option<String>,
    /// Its own isolation segment (else its org's default applies).
    pub isolation_segment_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Space {
    const TABLE: &'static str = "spaces";
    const COLUMNS: &'static str = "guid, name, organization_guid, quota_guid, \
        isolation_segment_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Space {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            organization_guid: text(row, "organization_guid")?,
            quota_guid: opt_text(row, "quota_guid")?,
            isolation_segment_guid: opt_text(row, "isolation_segment_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct App {
    pub guid: String,
    pub name: String,
    pub space_guid: String,
    pub state: AppState,
    pub buildpacks: Vec<String>,
    pub stack: String,
    pub environment_variables: serde_json::Map<String, serde_json::Value>,
    pub droplet_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for App {
    const TABLE: &'static str = "apps";
    const COLUMNS: &'static str = "guid, name, space_guid, state, buildpacks, stack, \
        environment_variables, droplet_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name", "state"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(App {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            space_guid: text(row, "space_guid")?,
            state: state(row, "state")?,
            buildpacks: json(row, "buildpacks")?,
            stack: text(row, "stack")?,
            environment_variables: json(row, "environment_variables")?,
            droplet_guid: opt_text(row, "droplet_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Process {
    pub guid: String,
    pub app_guid: String,
    pub process_type: String,
    pub command: Option<String>,
    pub instances: i64,
    pub memory_in_mb: i64,
    pub disk_in_mb: i64,
    pub health_check_type: String,
    /// Bytes per second an instance may log; -1: no limit of its own.
    pub log_rate_limit_in_bytes_per_second: i64,
    /// Renewed whenever the app must run afresh (CC's process version); part of the
    /// DesiredLRP's process guid.
    pub version: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Process {
    const TABLE: &'static str = "processes";
    const COLUMNS: &'static str = "guid, app_guid, type, command, instances, memory_in_mb, \
        disk_in_mb, health_check_type, log_rate_limit_in_bytes_per_second, version, created_at, \
        updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Process {
            guid: text(row, "guid")?,
            app_guid: text(row, "app_guid")?,
            process_type: text(row, "type")?,
            command: opt_text(row, "command")?,
            instances: int(row, "instances")?,
            memory_in_mb: int(row, "memory_in_mb")?,
            disk_in_mb: int(row, "disk_in_mb")?,
            health_check_type: text(row, "health_check_type")?,
            log_rate_limit_in_bytes_per_second: int(row, "log_rate_limit_in_bytes_per_second")?,
            version: text(row, "version")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Package {
    pub guid: String,
    pub app_guid: String,
    pub package_type: String,
    pub state: PackageState,
    pub checksum: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Package {
    const TABLE: &'static str = "packages";
    const COLUMNS: &'static str =
        "guid, app_guid, type, state, checksum, error, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Package {
            guid: text(row, "guid")?,
            app_guid: text(row, "app_guid")?,
            package_type: text(row, "type")?,
            state: state(row, "state")?,
            checksum: opt_text(row, "checksum")?,
            error: opt_text(row, "error")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Build {
    pub guid: String,
    pub app_guid: String,
    pub package_guid: String,
    /// The droplet this build stages into (shown once STAGED).
    pub droplet_guid: String,
    pub state: BuildState,
    pub error: Option<String>,
    pub buildpacks: Vec<String>,
    pub staging_memory_in_mb: i64,
    pub staging_disk_in_mb: i64,
    pub created_by: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Build {
    const TABLE: &'static str = "builds";
    const COLUMNS: &'static str = "guid, app_guid, package_guid, droplet_guid, state, error, \
        buildpacks, staging_memory_in_mb, staging_disk_in_mb, created_by, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Build {
            guid: text(row, "guid")?,
            app_guid: text(row, "app_guid")?,
            package_guid: text(row, "package_guid")?,
            droplet_guid: text(row, "droplet_guid")?,
            state: state(row, "state")?,
            error: opt_text(row, "error")?,
            buildpacks: json(row, "buildpacks")?,
            staging_memory_in_mb: int(row, "staging_memory_in_mb")?,
            staging_disk_in_mb: int(row, "staging_disk_in_mb")?,
            created_by: json(row, "created_by")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Droplet {
    pub guid: String,
    pub app_guid: String,
    pub package_guid: String,
    pub state: DropletState,
    pub error: Option<String>,
    /// Hex sha256 of the droplet tgz, known once it is uploaded.
    pub checksum: Option<String>,
    pub process_types: BTreeMap<String, String>,
    pub buildpacks: Vec<String>,
    pub stack: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Droplet {
    const TABLE: &'static str = "droplets";
    const COLUMNS: &'static str = "guid, app_guid, package_guid, state, error, checksum, \
        process_types, buildpacks, stack, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Droplet {
            guid: text(row, "guid")?,
            app_guid: text(row, "app_guid")?,
            package_guid: text(row, "package_guid")?,
            state: state(row, "state")?,
            error: opt_text(row, "error")?,
            checksum: opt_text(row, "checksum")?,
            process_types: json(row, "process_types")?,
            buildpacks: json(row, "buildpacks")?,
            stack: text(row, "stack")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Domain {
    pub guid: String,
    pub name: String,
    pub internal: bool,
    /// The owning org of a private domain; `None` for shared domains.
    pub organization_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Domain {
    const TABLE: &'static str = "domains";
    const COLUMNS: &'static str = "guid, name, internal, organization_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Domain {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            internal: int(row, "internal")? != 0,
            organization_guid: opt_text(row, "organization_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub guid: String,
    pub host: String,
    pub path: String,
    pub domain_guid: String,
    pub space_guid: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Route {
    const TABLE: &'static str = "routes";
    const COLUMNS: &'static str =
        "guid, host, path, domain_guid, space_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "host"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Route {
            guid: text(row, "guid")?,
            host: text(row, "host")?,
            path: text(row, "path")?,
            domain_guid: text(row, "domain_guid")?,
            space_guid: text(row, "space_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub guid: String,
    pub route_guid: String,
    pub app_guid: String,
    pub process_type: String,
    pub port: i64,
}

impl Record for Destination {
    const TABLE: &'static str = "route_destinations";
    const COLUMNS: &'static str = "guid, route_guid, app_guid, process_type, port";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Destination {
            guid: text(row, "guid")?,
            route_guid: text(row, "route_guid")?,
            app_guid: text(row, "app_guid")?,
            process_type: text(row, "process_type")?,
            port: int(row, "port")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub guid: String,
    pub operation: String,
    pub state: JobState,
    pub errors: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Job {
    const TABLE: &'static str = "jobs";
    const COLUMNS: &'static str = "guid, operation, state, errors, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Job {
            guid: text(row, "guid")?,
            operation: text(row, "operation")?,
            state: state(row, "state")?,
            errors: json(row, "errors")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A user the controller has seen (guid = UAA user id).
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub guid: String,
    pub username: String,
    pub origin: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for UserRecord {
    const TABLE: &'static str = "users";
    const COLUMNS: &'static str = "guid, username, origin, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "username"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(UserRecord {
            guid: text(row, "guid")?,
            username: text(row, "username")?,
            origin: text(row, "origin")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// An org role (`organization_guid` set) or a space role (`space_guid` set).
#[derive(Debug, Clone)]
pub struct Role {
    pub guid: String,
    pub role_type: String,
    pub user_guid: String,
    pub organization_guid: Option<String>,
    pub space_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Role {
    const TABLE: &'static str = "roles";
    const COLUMNS: &'static str =
        "guid, type, user_guid, organization_guid, space_guid, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Role {
            guid: text(row, "guid")?,
            role_type: text(row, "type")?,
            user_guid: text(row, "user_guid")?,
            organization_guid: opt_text(row, "organization_guid")?,
            space_guid: opt_text(row, "space_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// An admin buildpack (`/v3/buildpacks`): built in (READY, no checksum) or a custom zip.
#[derive(Debug, Clone)]
pub struct Buildpack {
    pub guid: String,
    pub name: String,
    /// `wasm`, or `None` for any stack.
    pub stack: Option<String>,
    /// 1-based place in the detection order.
    pub position: i64,
    pub enabled: bool,
    /// A locked buildpack takes no new bits.
    pub locked: bool,
    pub state: BuildpackState,
    /// The uploaded zip's file name.
    pub filename: Option<String>,
    /// Hex sha256 of the uploaded zip; `None` for a built-in buildpack.
    pub checksum: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Buildpack {
    /// Built in: the cell implements it by name, there is no zip to fetch.
    pub fn is_built_in(&self) -> bool {
        self.state == BuildpackState::Ready && self.checksum.is_none()
    }
}

impl Record for Buildpack {
    const TABLE: &'static str = "buildpacks";
    const COLUMNS: &'static str = "guid, name, stack, position, enabled, locked, state, \
        filename, checksum, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "position"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Buildpack {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            stack: opt_text(row, "stack")?,
            position: int(row, "position")?,
            enabled: int(row, "enabled")? != 0,
            locked: int(row, "locked")? != 0,
            state: state(row, "state")?,
            filename: opt_text(row, "filename")?,
            checksum: opt_text(row, "checksum")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// The recorded sha256 of an app's buildpack cache blob (guid = the app's guid).
#[derive(Debug, Clone)]
pub struct BuildpackCache {
    pub checksum: String,
}

impl Record for BuildpackCache {
    const TABLE: &'static str = "buildpack_caches";
    const COLUMNS: &'static str = "guid, checksum, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(BuildpackCache {
            checksum: text(row, "checksum")?,
        })
    }
}

/// A rolling or canary deployment of an app's web process (`/v3/deployments`).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub guid: String,
    pub app_guid: String,
    pub process_guid: String,
    pub state: DeploymentState,
    /// `ACTIVE` or `FINALIZED`.
    pub status_value: String,
    /// `DEPLOYING`, `PAUSED`, `DEPLOYED`, `CANCELED` or `SUPERSEDED`.
    pub status_reason: String,
    pub strategy: String,
    pub droplet_guid: String,
    pub previous_droplet_guid: Option<String>,
    /// The DesiredLRP of the version being replaced.
    pub old_lrp_guid: String,
    /// Instances the new version runs now (up to the process's instances).
    pub new_instances: i64,
    /// Instances the old version keeps now.
    pub old_instances: i64,
    /// How many new instances may be starting at once.
    pub max_in_flight: i64,
    /// The revision deployed, and the one the old version runs.
    pub revision_guid: Option<String>,
    pub previous_revision_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Deployment {
    const TABLE: &'static str = "deployments";
    const COLUMNS: &'static str = "guid, app_guid, process_guid, state, status_value, \
        status_reason, strategy, droplet_guid, previous_droplet_guid, old_lrp_guid, \
        new_instances, old_instances, max_in_flight, revision_guid, previous_revision_guid, \
        created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Deployment {
            guid: text(row, "guid")?,
            app_guid: text(row, "app_guid")?,
            process_guid: text(row, "process_guid")?,
            state: state(row, "state")?,
            status_value: text(row, "status_value")?,
            status_reason: text(row, "status_reason")?,
            strategy: text(row, "strategy")?,
            droplet_guid: text(row, "droplet_guid")?,
            previous_droplet_guid: opt_text(row, "previous_droplet_guid")?,
            old_lrp_guid: text(row, "old_lrp_guid")?,
            new_instances: int(row, "new_instances")?,
            old_instances: int(row, "old_instances")?,
            max_in_flight: int(row, "max_in_flight")?,
            revision_guid: opt_text(row, "revision_guid")?,
            previous_revision_guid: opt_text(row, "previous_revision_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A revision of an app (`/v3/revisions`): what it runs, numbered from 1.
#[derive(Debug, Clone)]
pub struct Revision {
    pub guid: String,
    pub app_guid: String,
    pub version: i64,
    pub droplet_guid: String,
    /// Encrypted JSON object: the app's own environment variables.
    pub environment_variables: String,
    /// Each process type's custom start command (`None`: the droplet's).
    pub commands: BTreeMap<String, Option<String>>,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for Revision {
    const TABLE: &'static str = "revisions";
    const COLUMNS: &'static str = "guid, app_guid, version, droplet_guid, \
        environment_variables, commands, description, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Revision {
            guid: text(row, "guid")?,
            app_guid: text(row, "app_guid")?,
            version: int(row, "version")?,
            droplet_guid: text(row, "droplet_guid")?,
            environment_variables: text(row, "environment_variables")?,
            commands: json(row, "commands")?,
            description: text(row, "description")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A feature flag an admin set (`/v3/feature_flags`; unset flags keep CF's defaults).
#[derive(Debug, Clone)]
pub struct FeatureFlag {
    pub name: String,
    pub enabled: bool,
    pub custom_error_message: Option<String>,
    pub updated_at: String,
}

impl Record for FeatureFlag {
    const TABLE: &'static str = "feature_flags";
    const COLUMNS: &'static str = "name, enabled, custom_error_message, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(FeatureFlag {
            name: text(row, "name")?,
            enabled: int(row, "enabled")? != 0,
            custom_error_message: opt_text(row, "custom_error_message")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// The running or staging environment variable group.
#[derive(Debug, Clone)]
pub struct EnvVarGroup {
    pub variables: serde_json::Map<String, serde_json::Value>,
    pub updated_at: String,
}

impl Record for EnvVarGroup {
    const TABLE: &'static str = "environment_variable_groups";
    const COLUMNS: &'static str = "name, variables, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(EnvVarGroup {
            variables: json(row, "variables")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// An app usage event (`/v3/app_usage_events`).
#[derive(Debug, Clone)]
pub struct AppUsageEvent {
    pub guid: String,
    pub state: String,
    pub previous_state: Option<String>,
    pub app_guid: String,
    pub app_name: String,
    pub process_guid: String,
    pub process_type: String,
    pub instance_count: i64,
    pub previous_instance_count: Option<i64>,
    pub memory_in_mb_per_instance: i64,
    pub previous_memory_in_mb_per_instance: Option<i64>,
    pub space_guid: String,
    pub space_name: String,
    pub organization_guid: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for AppUsageEvent {
    const TABLE: &'static str = "app_usage_events";
    const COLUMNS: &'static str = "guid, state, previous_state, app_guid, app_name, \
        process_guid, process_type, instance_count, previous_instance_count, \
        memory_in_mb_per_instance, previous_memory_in_mb_per_instance, space_guid, \
        space_name, organization_guid, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let opt_int = |column: &str| -> Result<Option<i64>, sqlx::Error> { row.try_get(column) };
        Ok(AppUsageEvent {
            guid: text(row, "guid")?,
            state: text(row, "state")?,
            previous_state: opt_text(row, "previous_state")?,
            app_guid: text(row, "app_guid")?,
            app_name: text(row, "app_name")?,
            process_guid: text(row, "process_guid")?,
            process_type: text(row, "process_type")?,
            instance_count: int(row, "instance_count")?,
            previous_instance_count: opt_int("previous_instance_count")?,
            memory_in_mb_per_instance: int(row, "memory_in_mb_per_instance")?,
            previous_memory_in_mb_per_instance: opt_int("previous_memory_in_mb_per_instance")?,
            space_guid: text(row, "space_guid")?,
            space_name: text(row, "space_name")?,
            organization_guid: text(row, "organization_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// An audit event (`/v3/audit_events`).
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub guid: String,
    pub event_type: String,
    pub actor_guid: String,
    pub actor_type: String,
    pub actor_name: String,
    pub target_guid: String,
    pub target_type: String,
    pub target_name: String,
    pub data: serde_json::Value,
    pub space_guid: Option<String>,
    pub organization_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for AuditEvent {
    const TABLE: &'static str = "audit_events";
    const COLUMNS: &'static str = "guid, type, actor_guid, actor_type, actor_name, \
        target_guid, target_type, target_name, data, space_guid, organization_guid, \
        created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(AuditEvent {
            guid: text(row, "guid")?,
            event_type: text(row, "type")?,
            actor_guid: text(row, "actor_guid")?,
            actor_type: text(row, "actor_type")?,
            actor_name: text(row, "actor_name")?,
            target_guid: text(row, "target_guid")?,
            target_type: text(row, "target_type")?,
            target_name: text(row, "target_name")?,
            data: json(row, "data")?,
            space_guid: opt_text(row, "space_guid")?,
            organization_guid: opt_text(row, "organization_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// The limits of an organization or space quota; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub total_memory_in_mb: Option<i64>,
    pub per_process_memory_in_mb: Option<i64>,
    pub total_instances: Option<i64>,
    pub per_app_tasks: Option<i64>,
    pub log_rate_limit_in_bytes_per_second: Option<i64>,
    pub paid_services_allowed: bool,
    pub total_service_instances: Option<i64>,
    pub total_service_keys: Option<i64>,
    pub total_routes: Option<i64>,
    pub total_reserved_ports: Option<i64>,
    pub total_domains: Option<i64>,
}

impl QuotaLimits {
    fn from_row(row: &AnyRow) -> Result<QuotaLimits, sqlx::Error> {
        let limit = |column: &str| row.try_get::<Option<i64>, _>(column);
        Ok(QuotaLimits {
            total_memory_in_mb: limit("total_memory_in_mb")?,
            per_process_memory_in_mb: limit("per_process_memory_in_mb")?,
            total_instances: limit("total_instances")?,
            per_app_tasks: limit("per_app_tasks")?,
            log_rate_limit_in_bytes_per_second: limit("log_rate_limit_in_bytes_per_second")?,
            paid_services_allowed: int(row, "paid_services_allowed")? != 0,
            total_service_instances: limit("total_service_instances")?,
            total_service_keys: limit("total_service_keys")?,
            total_routes: limit("total_routes")?,
            total_reserved_ports: limit("total_reserved_ports")?,
            total_domains: limit("total_domains")?,
        })
    }
}

const QUOTA_COLUMNS: &str = "guid, name, total_memory_in_mb, per_process_memory_in_mb, \
    total_instances, per_app_tasks, log_rate_limit_in_bytes_per_second, paid_services_allowed, \
    total_service_instances, total_service_keys, total_routes, total_reserved_ports, \
    total_domains, created_at, updated_at";

/// An organization quota (CF's quota definition).
#[derive(Debug, Clone)]
pub struct OrgQuota {
    pub guid: String,
    pub name: String,
    pub limits: QuotaLimits,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for OrgQuota {
    const TABLE: &'static str = "organization_quotas";
    const COLUMNS: &'static str = QUOTA_COLUMNS;
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(OrgQuota {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            limits: QuotaLimits::from_row(row)?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A space quota, owned by one org and applied to some of its spaces.
#[derive(Debug, Clone)]
pub struct SpaceQuota {
    pub guid: String,
    pub name: String,
    pub organization_guid: String,
    pub limits: QuotaLimits,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for SpaceQuota {
    const TABLE: &'static str = "space_quotas";
    const COLUMNS: &'static str = "guid, name, organization_guid, total_memory_in_mb, \
        per_process_memory_in_mb, total_instances, per_app_tasks, \
        log_rate_limit_in_bytes_per_second, paid_services_allowed, total_service_instances, \
        total_service_keys, total_routes, total_reserved_ports, total_domains, created_at, \
        updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(SpaceQuota {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            organization_guid: text(row, "organization_guid")?,
            limits: QuotaLimits::from_row(row)?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_number_their_placeholders() {
        let filter = Filter::new()
            .eq("space_guid", "s")
            .any_of("name", &["a".to_string(), "b".to_string()])
            .in_select(
                "space_guid",
                "SELECT guid FROM spaces WHERE organization_guid IN ({})",
                &["o".to_string()],
            );
        assert_eq!(
            filter.sql(),
            " WHERE space_guid = $1 AND name IN ($2, $3) AND space_guid IN \
             (SELECT guid FROM spaces WHERE organization_guid IN ($4))"
        );
        assert_eq!(filter.args.len(), 4);
        assert_eq!(Filter::new().any_of("name", &[]).sql(), " WHERE 1 = 0");
    }

    #[test]
    fn stored_timestamps_sort_and_parse() {
        let a = now();
        assert_eq!(a.len(), "2026-11-24T15:00:00.000000Z".len());
        assert!(unix_seconds(&a) > 1_600_000_000);
        assert!("2026-11-24T15:00:00.000001Z" > "2026-11-24T15:00:00.000000Z");
    }

    #[tokio::test]
    async fn records_round_trip() {
        for database in wf_db::testing::databases().await {
            records_round_trip_on(database.url()).await;
        }
    }

    async fn records_round_trip_on(url: &str) {
        let db = Db::connect(url).await.expect("CC database");
        db.ensure_shared_domain("apps.test").await.unwrap();
        db.ensure_shared_domain("apps.test").await.unwrap();
        let domains = db.find::<Domain>(Filter::new()).await.unwrap();
        assert_eq!(domains.len(), 1);
        assert_eq!(domains[0].name, "apps.test");

        for name in ["b", "a", "c"] {
            let now = now();
            db.insert(
                "organizations",
                vec![
                    ("guid", new_guid().into()),
                    ("name", name.into()),
                    ("created_at", now.clone().into()),
                    ("updated_at", now.into()),
                ],
            )
            .await
            .unwrap();
        }
        let page = Page {
            page: 1,
            per_page: 2,
            order_by: "name".into(),
            descending: false,
        };
        let (total, orgs) = db.list::<Org>(Filter::new(), &page).await.unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            orgs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );

        let duplicate = db
            .insert(
                "organizations",
                vec![
                    ("guid", new_guid().into()),
                    ("name", "a".into()),
                    ("created_at", now().into()),
                    ("updated_at", now().into()),
                ],
            )
            .await
            .unwrap_err();
        assert!(is_unique_violation(&duplicate), "{duplicate}");

        assert!(db
            .update("organizations", &orgs[0].guid, vec![("name", "z".into())])
            .await
            .unwrap());
        let renamed: Org = db.get(&orgs[0].guid).await.unwrap().unwrap();
        assert_eq!(renamed.name, "z");
        // A caller's own updated_at is the one set (PostgreSQL refuses two).
        let stamp = "2030-01-01T00:00:00.000000Z";
        assert!(db
            .update(
                "organizations",
                &orgs[0].guid,
                vec![("updated_at", stamp.into())]
            )
            .await
            .unwrap());
        let stamped: Org = db.get(&orgs[0].guid).await.unwrap().unwrap();
        assert_eq!(stamped.updated_at, stamp);
    }
}

/// Where an instance's or binding's last broker operation stands, as CF shows it
/// (`last_operation`), and the step the operations runner has left to take.
#[derive(Debug, Clone, Default)]
pub struct Operation {
    /// `create`, `update` or `delete`.
    pub kind: Option<String>,
    /// `in progress`, `succeeded` or `failed`.
    pub state: Option<String>,
    pub description: Option<String>,
    /// What the runner does next (see `service_operations`).
    pub pending: Option<String>,
    pub attempts: i64,
    pub started_at: Option<String>,
    /// The broker's `operation` for `last_operation` polls.
    pub broker_operation: Option<String>,
    /// The `/v3/jobs` job that finishes with the operation.
    pub job_guid: Option<String>,
    /// Who asked for it (the broker's originating identity).
    pub user_guid: Option<String>,
}

impl Operation {
    fn from_row(row: &AnyRow) -> Result<Operation, sqlx::Error> {
        Ok(Operation {
            kind: opt_text(row, "last_operation_type")?,
            state: opt_text(row, "last_operation_state")?,
            description: opt_text(row, "last_operation_description")?,
            pending: opt_text(row, "pending")?,
            attempts: int(row, "attempts")?,
            started_at: opt_text(row, "operation_started_at")?,
            broker_operation: opt_text(row, "broker_operation")?,
            job_guid: opt_text(row, "job_guid")?,
            user_guid: opt_text(row, "operation_user_guid")?,
        })
    }

    /// Whether a broker operation is under way.
    pub fn in_progress(&self) -> bool {
        self.state.as_deref() == Some("in progress")
    }
}

/// A service instance: user-provided (`type` `user-provided`, credentials stored
/// encrypted, see `crypto.rs`) or managed (`managed`: of a broker's plan).
#[derive(Debug, Clone)]
pub struct ServiceInstance {
    pub guid: String,
    pub name: String,
    pub kind: String,
    pub space_guid: String,
    /// Encrypted JSON object.
    pub credentials: Option<String>,
    pub syslog_drain_url: Option<String>,
    pub route_service_url: Option<String>,
    pub tags: Vec<String>,
    pub service_plan_guid: Option<String>,
    pub dashboard_url: Option<String>,
    /// Encrypted JSON object: the parameters sent to the broker.
    pub parameters: Option<String>,
    pub operation: Operation,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for ServiceInstance {
    const TABLE: &'static str = "service_instances";
    const COLUMNS: &'static str = "guid, name, type, space_guid, credentials, syslog_drain_url, \
        route_service_url, tags, service_plan_guid, dashboard_url, parameters, \
        last_operation_type, last_operation_state, last_operation_description, pending, due_at, \
        attempts, operation_started_at, broker_operation, job_guid, operation_user_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ServiceInstance {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            kind: text(row, "type")?,
            space_guid: text(row, "space_guid")?,
            credentials: opt_text(row, "credentials")?,
            syslog_drain_url: opt_text(row, "syslog_drain_url")?,
            route_service_url: opt_text(row, "route_service_url")?,
            tags: json(row, "tags")?,
            service_plan_guid: opt_text(row, "service_plan_guid")?,
            dashboard_url: opt_text(row, "dashboard_url")?,
            parameters: opt_text(row, "parameters")?,
            operation: Operation::from_row(row)?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A service credential binding: of an app (`type` `app`) or a service key (`key`) to
/// a service instance. Bindings of managed instances keep the broker's credentials
/// (encrypted) and drain.
#[derive(Debug, Clone)]
pub struct ServiceBinding {
    pub guid: String,
    pub name: Option<String>,
    pub kind: String,
    pub service_instance_guid: String,
    pub app_guid: Option<String>,
    /// Encrypted JSON object (managed instances' bindings).
    pub credentials: Option<String>,
    pub syslog_drain_url: Option<String>,
    /// Encrypted JSON object: the parameters sent to the broker.
    pub parameters: Option<String>,
    pub operation: Operation,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for ServiceBinding {
    const TABLE: &'static str = "service_credential_bindings";
    const COLUMNS: &'static str = "guid, name, type, service_instance_guid, app_guid, \
        credentials, syslog_drain_url, parameters, last_operation_type, last_operation_state, \
        last_operation_description, pending, due_at, attempts, operation_started_at, \
        broker_operation, job_guid, operation_user_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ServiceBinding {
            guid: text(row, "guid")?,
            name: opt_text(row, "name")?,
            kind: text(row, "type")?,
            service_instance_guid: text(row, "service_instance_guid")?,
            app_guid: opt_text(row, "app_guid")?,
            credentials: opt_text(row, "credentials")?,
            syslog_drain_url: opt_text(row, "syslog_drain_url")?,
            parameters: opt_text(row, "parameters")?,
            operation: Operation::from_row(row)?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A service route binding: a route whose requests go through its service instance's
/// route service (`route_service_url`: the user-provided instance's, or the one the
/// broker gave a managed instance's binding).
#[derive(Debug, Clone)]
pub struct RouteBinding {
    pub guid: String,
    pub route_guid: String,
    pub service_instance_guid: String,
    pub route_service_url: Option<String>,
    /// Encrypted JSON object: the parameters sent to the broker.
    pub parameters: Option<String>,
    pub operation: Operation,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for RouteBinding {
    const TABLE: &'static str = "service_route_bindings";
    const COLUMNS: &'static str = "guid, route_guid, service_instance_guid, route_service_url, \
        parameters, last_operation_type, last_operation_state, last_operation_description, \
        pending, due_at, attempts, operation_started_at, broker_operation, job_guid, \
        operation_user_guid, created_at, updated_at";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(RouteBinding {
            guid: text(row, "guid")?,
            route_guid: text(row, "route_guid")?,
            service_instance_guid: text(row, "service_instance_guid")?,
            route_service_url: opt_text(row, "route_service_url")?,
            parameters: opt_text(row, "parameters")?,
            operation: Operation::from_row(row)?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A service broker; `authentication` is the encrypted `{"username", "password"}`.
#[derive(Debug, Clone)]
pub struct ServiceBroker {
    pub guid: String,
    pub name: String,
    pub url: String,
    pub authentication: String,
    /// Space-scoped brokers' space.
    pub space_guid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for ServiceBroker {
    const TABLE: &'static str = "service_brokers";
    const COLUMNS: &'static str =
        "guid, name, url, authentication, space_guid, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ServiceBroker {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            url: text(row, "url")?,
            authentication: text(row, "authentication")?,
            space_guid: opt_text(row, "space_guid")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A service offering of a broker's catalog (`broker_id`: the catalog's `id`).
#[derive(Debug, Clone)]
pub struct ServiceOffering {
    pub guid: String,
    pub service_broker_guid: String,
    pub broker_id: String,
    pub name: String,
    pub description: String,
    pub available: bool,
    pub bindable: bool,
    pub plan_updateable: bool,
    pub instances_retrievable: bool,
    pub bindings_retrievable: bool,
    pub tags: Vec<String>,
    pub requires: Vec<String>,
    pub metadata: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for ServiceOffering {
    const TABLE: &'static str = "service_offerings";
    const COLUMNS: &'static str = "guid, service_broker_guid, broker_id, name, description, \
        available, bindable, plan_updateable, instances_retrievable, bindings_retrievable, tags, \
        requires, metadata, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ServiceOffering {
            guid: text(row, "guid")?,
            service_broker_guid: text(row, "service_broker_guid")?,
            broker_id: text(row, "broker_id")?,
            name: text(row, "name")?,
            description: text(row, "description")?,
            available: int(row, "available")? != 0,
            bindable: int(row, "bindable")? != 0,
            plan_updateable: int(row, "plan_updateable")? != 0,
            instances_retrievable: int(row, "instances_retrievable")? != 0,
            bindings_retrievable: int(row, "bindings_retrievable")? != 0,
            tags: json(row, "tags")?,
            requires: json(row, "requires")?,
            metadata: json(row, "metadata")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// A plan of a service offering; `visibility_type` is `admin`, `public`,
/// `organization` (the orgs in `service_plan_visibilities`) or `space` (a space-scoped
/// broker's).
#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub guid: String,
    pub service_offering_guid: String,
    pub broker_id: String,
    pub name: String,
    pub description: String,
    pub available: bool,
    pub free: bool,
    pub bindable: bool,
    pub plan_updateable: bool,
    pub visibility_type: String,
    pub metadata: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for ServicePlan {
    const TABLE: &'static str = "service_plans";
    const COLUMNS: &'static str = "guid, service_offering_guid, broker_id, name, description, \
        available, free, bindable, plan_updateable, visibility_type, metadata, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ServicePlan {
            guid: text(row, "guid")?,
            service_offering_guid: text(row, "service_offering_guid")?,
            broker_id: text(row, "broker_id")?,
            name: text(row, "name")?,
            description: text(row, "description")?,
            available: int(row, "available")? != 0,
            free: int(row, "free")? != 0,
            bindable: int(row, "bindable")? != 0,
            plan_updateable: int(row, "plan_updateable")? != 0,
            visibility_type: text(row, "visibility_type")?,
            metadata: json(row, "metadata")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// An isolation segment: the cells whose placement tag is its name.
#[derive(Debug, Clone)]
pub struct IsolationSegment {
    pub guid: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for IsolationSegment {
    const TABLE: &'static str = "isolation_segments";
    const COLUMNS: &'static str = "guid, name, created_at, updated_at";
    const ORDERABLE: &'static [&'static str] = &["created_at", "updated_at", "name"];
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(IsolationSegment {
            guid: text(row, "guid")?,
            name: text(row, "name")?,
            created_at: text(row, "created_at")?,
            updated_at: text(row, "updated_at")?,
        })
    }
}

/// An org an isolation segment is entitled to.
#[derive(Debug, Clone)]
pub struct SegmentEntitlement {
    pub organization_guid: String,
}

impl Record for SegmentEntitlement {
    const TABLE: &'static str = "isolation_segment_organizations";
    const COLUMNS: &'static str = "organization_guid";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(SegmentEntitlement {
            organization_guid: text(row, "organization_guid")?,
        })
    }
}

/// An org a plan of `organization` visibility is visible in.
#[derive(Debug, Clone)]
pub struct PlanVisibility {
    pub organization_guid: String,
}

impl Record for PlanVisibility {
    const TABLE: &'static str = "service_plan_visibilities";
    const COLUMNS: &'static str = "organization_guid";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(PlanVisibility {
            organization_guid: text(row, "organization_guid")?,
        })
    }
}
