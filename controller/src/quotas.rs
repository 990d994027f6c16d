//! Quota enforcement: the checks the API makes before a change would add usage to an
//! org or a space — scaling a process, starting an app, running a task, creating a
//! route — against the org's organization quota and the space's space quota, with
//! cloud_controller_ng's validation messages (CF-UnprocessableEntity).
//!
//! Usage is counted as CF counts it: the memory (`memory_in_mb` x `instances`) and
//! instances of the processes of STARTED apps, plus the memory of pending and running
//! tasks; routes by the space they belong to. A change that does not add usage is
//! never refused, so lowering a quota below what is in use only stops growth.

use crate::db::{
    App, AppState, Filter, Org, OrgQuota, Page, Process, QuotaLimits, Record, Route, Space,
    SpaceQuota,
};
use crate::error::ApiError;
use crate::tasks::{CcTaskState, TaskRecord};
use crate::Controller;

/// The quota every new org starts on (CF's `default_quota_definition`).
const DEFAULT_ORG_QUOTA: &str = "default";

/// The guid of the `default` organization quota, if an admin has not deleted it.
pub async fn default_org_quota(controller: &Controller) -> Result<Option<String>, ApiError> {
    let quotas = controller
        .db
        .find::<OrgQuota>(Filter::new().eq("name", DEFAULT_ORG_QUOTA))
        .await?;
    Ok(quotas.into_iter().next().map(|q| q.guid))
}

/// Whether a quota belongs to the org or to the space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Org,
    Space,
}

impl Scope {
    /// Selects the guids of the apps in the scope's `{}` (optionally only STARTED ones).
    fn apps(self, started_only: bool) -> String {
        let started = if started_only {
            "a.state = 'STARTED' AND "
        } else {
            ""
        };
        match self {
            Scope::Org => format!(
                "SELECT a.guid FROM apps a JOIN spaces s ON s.guid = a.space_guid \
                 WHERE {started}s.organization_guid IN ({{}})"
            ),
            Scope::Space => {
                format!("SELECT a.guid FROM apps a WHERE {started}a.space_guid IN ({{}})")
            }
        }
    }
}

/// The quota of one scope, with what it is counted over.
struct Limited {
    scope: Scope,
    /// The org's or space's guid and name.
    guid: String,
    name: String,
    limits: QuotaLimits,
}

/// The org and space quotas that apply in `space`: the org's first, then the space's.
async fn quotas_of(controller: &Controller, space: &Space) -> Result<Vec<Limited>, ApiError> {
    let mut quotas = Vec::new();
    let org = controller
        .db
        .get::<Org>(&space.organization_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Organization"))?;
    if let Some(guid) = &org.quota_guid {
        if let Some(quota) = controller.db.get::<OrgQuota>(guid).await? {
            quotas.push(Limited {
                scope: Scope::Org,
                guid: org.guid,
                name: org.name,
                limits: quota.limits,
            });
        }
    }
    if let Some(guid) = &space.quota_guid {
        if let Some(quota) = controller.db.get::<SpaceQuota>(guid).await? {
            quotas.push(Limited {
                scope: Scope::Space,
                guid: space.guid.clone(),
                name: space.name.clone(),
                limits: quota.limits,
            });
        }
    }
    Ok(quotas)
}

async fn space_of(controller: &Controller, app: &App) -> Result<Space, ApiError> {
    controller
        .db
        .get::<Space>(&app.space_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Space"))
}

/// How many records match `filter`.
async fn count<T: Record>(controller: &Controller, filter: Filter) -> Result<i64, ApiError> {
    let page = Page {
        page: 1,
        per_page: 1,
        order_by: "created_at".into(),
        descending: false,
    };
    let (total, _) = controller.db.list::<T>(filter, &page).await?;
    Ok(i64::try_from(total).unwrap_or(i64::MAX))
}

/// Memory (MB) and instances desired by some processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    memory_in_mb: i64,
    instances: i64,
}

impl Usage {
    fn of(processes: &[Process]) -> Usage {
        processes.iter().fold(Usage::default(), |sum, p| Usage {
            memory_in_mb: sum.memory_in_mb + p.memory_in_mb * p.instances,
            instances: sum.instances + p.instances,
        })
    }
}

/// What is in use in `quota`'s scope apart from `except_app`'s processes: the started
/// processes of other apps, and the memory of pending and running tasks.
async fn usage_besides(
    controller: &Controller,
    quota: &Limited,
    except_app: Option<&str>,
) -> Result<Usage, ApiError> {
    let scope = [quota.guid.clone()];
    let mut filter = Filter::new().in_select("app_guid", &quota.scope.apps(true), &scope);
    if let Some(app) = except_app {
        filter = filter.clause("app_guid <> ?", vec![app.into()]);
    }
    let mut usage = Usage::of(&controller.db.find::<Process>(filter).await?);
    let active = [CcTaskState::Pending, CcTaskState::Running].map(|s| s.as_str().to_string());
    let tasks = Filter::new()
        .in_select("app_guid", &quota.scope.apps(false), &scope)
        .any_of("state", &active);
    usage.memory_in_mb += controller
        .db
        .find::<TaskRecord>(tasks)
        .await?
        .iter()
        .map(|t| t.memory_in_mb)
        .sum::<i64>();
    Ok(usage)
}

/// Refuses with CF's messages, joined as CC joins a model's validation errors.
fn refuse(messages: Vec<&str>) -> Result<(), ApiError> {
    let mut unique: Vec<&str> = Vec::new();
    for message in messages {
        if !unique.contains(&message) {
            unique.push(message);
        }
    }
    if unique.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(unique.join(", ")))
    }
}

/// Before scaling `process` to `instances` and `memory_in_mb` (`None`: unchanged).
pub async fn check_scale(
    controller: &Controller,
    process: &Process,
    instances: Option<i64>,
    memory_in_mb: Option<i64>,
) -> Result<(), ApiError> {
    let app = controller
        .db
        .get::<App>(&process.app_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("App"))?;
    let scaled = Process {
        instances: instances.unwrap_or(process.instances),
        memory_in_mb: memory_in_mb.unwrap_or(process.memory_in_mb),
        ..process.clone()
    };
    check_processes(
        controller,
        &app,
        app.state == AppState::Started,
        Some(scaled),
    )
    .await
}

/// Before starting the stopped `app`.
pub async fn check_start(controller: &Controller, app: &App) -> Result<(), ApiError> {
    check_processes(controller, app, true, None).await
}

/// Whether `app`, started or not (`started`) and with `scaled` replacing its process
/// of that guid, stays within its quotas. The per-process memory limit applies to the
/// scaled process, or to every process of an app being started.
async fn check_processes(
    controller: &Controller,
    app: &App,
    started: bool,
    scaled: Option<Process>,
) -> Result<(), ApiError> {
    let space = space_of(controller, app).await?;
    let quotas = quotas_of(controller, &space).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let current: Vec<Process> = controller
        .db
        .find(Filter::new().eq("app_guid", &app.guid))
        .await?;
    let desired: Vec<Process> = current
        .iter()
        .map(|p| match &scaled {
            Some(s) if s.guid == p.guid => s.clone(),
            _ => p.clone(),
        })
        .collect();
    let before = if app.state == AppState::Started {
        Usage::of(&current)
    } else {
        Usage::default()
    };
    let after = if started {
        Usage::of(&desired)
    } else {
        Usage::default()
    };
    let checked: Vec<&Process> = match &scaled {
        Some(s) => vec![s],
        None => desired.iter().collect(),
    };

    let mut memory = Vec::new();
    let mut per_process = Vec::new();
    let mut instances = Vec::new();
    for quota in &quotas {
        let (memory_error, per_process_error, instances_error) = match quota.scope {
            Scope::Org => (
                "memory quota_exceeded",
                "memory instance_memory_limit_exceeded",
                "app_instance_limit app_instance_limit_exceeded",
            ),
            Scope::Space => (
                "memory space_quota_exceeded",
                "memory space_instance_memory_limit_exceeded",
                "app_instance_limit space_app_instance_limit_exceeded",
            ),
        };
        let limits = &quota.limits;
        if let Some(limit) = limits.per_process_memory_in_mb {
            if checked.iter().any(|p| p.memory_in_mb > limit) {
                per_process.push(per_process_error);
            }
        }
        let grows_memory = after.memory_in_mb > before.memory_in_mb;
        let grows_instances = after.instances > before.instances;
        if !(grows_memory && limits.total_memory_in_mb.is_some()
            || grows_instances && limits.total_instances.is_some())
        {
            continue;
        }
        let others = usage_besides(controller, quota, Some(&app.guid)).await?;
        if let Some(limit) = limits.total_memory_in_mb {
            if grows_memory && others.memory_in_mb + after.memory_in_mb > limit {
                // CF lists the space's memory error before the org's.
                match quota.scope {
                    Scope::Space => memory.insert(0, memory_error),
                    Scope::Org => memory.push(memory_error),
                }
            }
        }
        if let Some(limit) = limits.total_instances {
            if grows_instances && others.instances + after.instances > limit {
                instances.push(instances_error);
            }
        }
    }
    refuse(
        memory
            .into_iter()
            .chain(per_process)
            .chain(instances)
            .collect(),
    )
}

/// Before running a task of `memory_in_mb` on `app`.
pub async fn check_task(
    controller: &Controller,
    app: &App,
    memory_in_mb: i64,
) -> Result<(), ApiError> {
    let space = space_of(controller, app).await?;
    let mut memory = Vec::new();
    let mut tasks = Vec::new();
    for quota in quotas_of(controller, &space).await? {
        let (memory_error, per_process_error) = match quota.scope {
            Scope::Org => (
                "memory_in_mb exceeds organization memory quota",
                "memory_in_mb exceeds organization instance memory quota",
            ),
            Scope::Space => (
                "memory_in_mb exceeds space memory quota",
                "memory_in_mb exceeds space instance memory quota",
            ),
        };
        let limits = &quota.limits;
        if let Some(limit) = limits.total_memory_in_mb {
            let used = usage_besides(controller, &quota, None).await?;
            if used.memory_in_mb + memory_in_mb > limit {
                memory.push(memory_error);
            }
        }
        if limits
            .per_process_memory_in_mb
            .is_some_and(|limit| memory_in_mb > limit)
        {
            memory.push(per_process_error);
        }
        if let Some(limit) = limits.per_app_tasks {
            let active =
                [CcTaskState::Pending, CcTaskState::Running].map(|s| s.as_str().to_string());
            let running = count::<TaskRecord>(
                controller,
                Filter::new()
                    .eq("app_guid", &app.guid)
                    .any_of("state", &active),
            )
            .await?;
            if running + 1 > limit {
                tasks.push("app_task_limit quota exceeded");
            }
        }
    }
    refuse(memory.into_iter().chain(tasks).collect())
}

/// Before creating a route in `space`.
pub async fn check_route(controller: &Controller, space: &Space) -> Result<(), ApiError> {
    let mut quotas = quotas_of(controller, space).await?;
    // CF reports the space's route quota before the org's.
    quotas.reverse();
    for quota in quotas {
        let Some(limit) = quota.limits.total_routes else {
            continue;
        };
        let routes = match quota.scope {
            Scope::Space => Filter::new().eq("space_guid", &quota.guid),
            Scope::Org => Filter::new().in_select(
                "space_guid",
                "SELECT guid FROM spaces WHERE organization_guid IN ({})",
                &[quota.guid.clone()],
            ),
        };
        if count::<Route>(controller, routes).await? + 1 > limit {
            let scope = match quota.scope {
                Scope::Org => "organization",
                Scope::Space => "space",
            };
            return Err(ApiError::unprocessable(format!(
                "Routes quota exceeded for {scope} '{}'.",
                quota.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(guid: &str, instances: i64, memory_in_mb: i64) -> Process {
        Process {
            guid: guid.into(),
            app_guid: "a".into(),
            process_type: "web".into(),
            command: None,
            instances,
            memory_in_mb,
            disk_in_mb: 1024,
            health_check_type: "port".into(),
            log_rate_limit_in_bytes_per_second: -1,
            version: "v".into(),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn usage_sums_memory_times_instances() {
        let usage = Usage::of(&[process("p", 3, 256), process("q", 2, 64)]);
        assert_eq!(
            usage,
            Usage {
                memory_in_mb: 3 * 256 + 2 * 64,
                instances: 5
            }
        );
    }

    #[test]
    fn refusals_join_distinct_messages() {
        assert!(refuse(vec![]).is_ok());
        let err = refuse(vec!["a x", "b y", "a x"]).unwrap_err();
        assert_eq!(err.to_string(), "a x, b y");
        assert!(matches!(err, ApiError::Unprocessable(_)));
    }
}
