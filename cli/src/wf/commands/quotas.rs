//! Quota commands, with the cf CLI's names, flags and output: org quotas (`quotas`,
//! `quota`, `create-quota`, `update-quota`, `delete-quota`, `set-quota`) and space
//! quotas of the targeted org (`space-quotas`, `space-quota`, `create-space-quota`,
//! `update-space-quota`, `delete-space-quota`, `set-space-quota`). Limits are given as
//! cf takes them: memory as `512M` or `1G`, counts as numbers, `-1` for unlimited.

use serde_json::{json, Map, Value};

use super::session::find_named;
use super::{confirm, org_target, query_value, space_target, text};
use crate::wf::client::Client;
use crate::wf::output::{key_values, parse_megabytes, table};
use crate::wf::Error;

/// The quota commands (org quotas, as cf v7 names them with aliases, and space quotas).
#[derive(Debug, clap::Subcommand)]
pub enum QuotaCommand {
    /// List the org quotas
    #[command(visible_alias = "org-quotas")]
    Quotas,
    /// Show an org quota
    #[command(visible_alias = "org-quota")]
    Quota { name: String },
    /// Define a new org quota
    #[command(visible_alias = "create-org-quota")]
    CreateQuota {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Change an org quota
    #[command(visible_alias = "update-org-quota")]
    UpdateQuota {
        name: String,
        /// New name
        #[arg(short = 'n')]
        new_name: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Delete an org quota
    #[command(visible_alias = "delete-org-quota")]
    DeleteQuota {
        name: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Assign an org quota to an org
    #[command(visible_alias = "set-org-quota")]
    SetQuota { org: String, quota: String },
    /// List the space quotas of the targeted org
    SpaceQuotas,
    /// Show a space quota of the targeted org
    SpaceQuota { name: String },
    /// Define a new space quota in the targeted org
    CreateSpaceQuota {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Change a space quota of the targeted org
    UpdateSpaceQuota {
        name: String,
        /// New name
        #[arg(short = 'n')]
        new_name: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Delete a space quota of the targeted org
    DeleteSpaceQuota {
        name: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Assign a space quota to a space of the targeted org
    SetSpaceQuota { space: String, quota: String },
}

pub fn run(c: &mut Client, command: QuotaCommand) -> Result<(), Error> {
    match command {
        QuotaCommand::Quotas => list(c, Kind::Org),
        QuotaCommand::Quota { name } => show(c, Kind::Org, &name),
        QuotaCommand::CreateQuota { name, limits } => create(c, Kind::Org, &name, &limits),
        QuotaCommand::UpdateQuota {
            name,
            new_name,
            limits,
        } => update(c, Kind::Org, &name, new_name, &limits),
        QuotaCommand::DeleteQuota { name, force } => delete(c, Kind::Org, &name, force),
        QuotaCommand::SetQuota { org, quota } => set_org_quota(c, &org, &quota),
        QuotaCommand::SpaceQuotas => list(c, Kind::Space),
        QuotaCommand::SpaceQuota { name } => show(c, Kind::Space, &name),
        QuotaCommand::CreateSpaceQuota { name, limits } => create(c, Kind::Space, &name, &limits),
        QuotaCommand::UpdateSpaceQuota {
            name,
            new_name,
            limits,
        } => update(c, Kind::Space, &name, new_name, &limits),
        QuotaCommand::DeleteSpaceQuota { name, force } => delete(c, Kind::Space, &name, force),
        QuotaCommand::SetSpaceQuota { space, quota } => set_space_quota(c, &space, &quota),
    }
}

/// The limits a `create-*quota` / `update-*quota` command may set.
#[derive(Debug, Default, clap::Args)]
pub struct LimitArgs {
    /// Total amount of memory all processes can have (e.g. 1024M, 1G, 10G; -1: unlimited)
    #[arg(short = 'm', allow_negative_numbers = true)]
    pub total_memory: Option<String>,
    /// Maximum amount of memory a process can have (e.g. 1024M, 1G; -1: unlimited)
    #[arg(short = 'i', allow_negative_numbers = true)]
    pub instance_memory: Option<String>,
    /// Total number of routes (-1: unlimited)
    #[arg(short = 'r', allow_negative_numbers = true)]
    pub routes: Option<i64>,
    /// Total number of service instances (-1: unlimited)
    #[arg(short = 's', allow_negative_numbers = true)]
    pub service_instances: Option<i64>,
    /// Total number of application instances (-1: unlimited)
    #[arg(short = 'a', allow_negative_numbers = true)]
    pub app_instances: Option<i64>,
    /// Maximum number of routes that may have reserved ports (-1: unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pub reserved_route_ports: Option<i64>,
    /// Allow provisioning instances of paid service plans
    #[arg(long, conflicts_with = "disallow_paid_service_plans")]
    pub allow_paid_service_plans: bool,
    /// Disallow provisioning instances of paid service plans
    #[arg(long)]
    pub disallow_paid_service_plans: bool,
}

/// Org quotas or space quotas: where they live and how cf names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Org,
    Space,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Org => "/v3/organization_quotas",
            Kind::Space => "/v3/space_quotas",
        }
    }

    /// "org quota" / "space quota".
    fn noun(self) -> &'static str {
        match self {
            Kind::Org => "org quota",
            Kind::Space => "space quota",
        }
    }
}

/// `-1` (unlimited) as null, else the memory size in MB.
fn memory_limit(value: &str) -> Result<Value, Error> {
    if value.trim() == "-1" {
        return Ok(Value::Null);
    }
    parse_megabytes(value)
        .map(Value::from)
        .map_err(Error::Failed)
}

/// `-1` (unlimited) as null, else the count.
fn count_limit(value: i64, flag: &str) -> Result<Value, Error> {
    match value {
        -1 => Ok(Value::Null),
        n if n >= 0 => Ok(Value::from(n)),
        n => Err(Error::Failed(format!(
            "Incorrect Usage: invalid value {n} for {flag}: use a number, or -1 for unlimited."
        ))),
    }
}

/// The body of a create or update request: only what the flags set.
fn limits_body(args: &LimitArgs) -> Result<Map<String, Value>, Error> {
    let mut apps = Map::new();
    let mut services = Map::new();
    let mut routes = Map::new();
    if let Some(m) = &args.total_memory {
        apps.insert("total_memory_in_mb".into(), memory_limit(m)?);
    }
    if let Some(m) = &args.instance_memory {
        apps.insert("per_process_memory_in_mb".into(), memory_limit(m)?);
    }
    if let Some(n) = args.app_instances {
        apps.insert("total_instances".into(), count_limit(n, "-a")?);
    }
    if let Some(n) = args.service_instances {
        services.insert("total_service_instances".into(), count_limit(n, "-s")?);
    }
    if args.allow_paid_service_plans || args.disallow_paid_service_plans {
        services.insert(
            "paid_services_allowed".into(),
            Value::Bool(args.allow_paid_service_plans),
        );
    }
    if let Some(n) = args.routes {
        routes.insert("total_routes".into(), count_limit(n, "-r")?);
    }
    if let Some(n) = args.reserved_route_ports {
        routes.insert(
            "total_reserved_ports".into(),
            count_limit(n, "--reserved-route-ports")?,
        );
    }
    let mut body = Map::new();
    for (section, limits) in [("apps", apps), ("services", services), ("routes", routes)] {
        if !limits.is_empty() {
            body.insert(section.into(), Value::Object(limits));
        }
    }
    Ok(body)
}

/// A memory limit as cf shows it: `unlimited`, `512M`, `10G`.
fn memory(v: &Value) -> String {
    match v.as_i64() {
        None => "unlimited".into(),
        Some(mb) if mb > 0 && mb % 1024 == 0 => format!("{}G", mb / 1024),
        Some(mb) => format!("{mb}M"),
    }
}

fn count(v: &Value) -> String {
    v.as_i64()
        .map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

/// The columns of `quotas` and the lines of `quota`, in cf's order.
fn shown(quota: &Value) -> Vec<(&'static str, String)> {
    let paid = if quota["services"]["paid_services_allowed"] == true {
        "allowed"
    } else {
        "disallowed"
    };
    vec![
        ("total memory", memory(&quota["apps"]["total_memory_in_mb"])),
        (
            "instance memory",
            memory(&quota["apps"]["per_process_memory_in_mb"]),
        ),
        ("routes", count(&quota["routes"]["total_routes"])),
        (
            "service instances",
            count(&quota["services"]["total_service_instances"]),
        ),
        ("paid service plans", paid.to_string()),
        ("app instances", count(&quota["apps"]["total_instances"])),
        (
            "route ports",
            count(&quota["routes"]["total_reserved_ports"]),
        ),
    ]
}

/// The quota `name` (space quotas: of the targeted org), if it exists.
fn find_quota(client: &mut Client, kind: Kind, name: &str) -> Result<Option<Value>, Error> {
    let org;
    let filters: Vec<(&str, &str)> = match kind {
        Kind::Org => vec![],
        Kind::Space => {
            org = org_target(client)?;
            vec![("organization_guids", org.guid.as_str())]
        }
    };
    find_named(client, kind.path(), &filters, name)
}

fn not_found(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Org => format!("Organization quota with name '{name}' not found."),
        Kind::Space => format!("Space quota with name '{name}' not found."),
    }
}

/// The quota `name`, or cf's "not found".
fn quota_named(client: &mut Client, kind: Kind, name: &str) -> Result<Value, Error> {
    find_quota(client, kind, name)?.ok_or_else(|| Error::Failed(not_found(kind, name)))
}

pub fn list(client: &mut Client, kind: Kind) -> Result<(), Error> {
    client.require_login()?;
    let user = client.user_name();
    let path = match kind {
        Kind::Org => {
            println!("Getting org quotas as {user}...\n");
            format!("{}?order_by=name", kind.path())
        }
        Kind::Space => {
            let org = org_target(client)?;
            println!("Getting space quotas for org {} as {user}...\n", org.name);
            format!(
                "{}?organization_guids={}&order_by=name",
                kind.path(),
                query_value(&org.guid)
            )
        }
    };
    let quotas = client.list(&path)?;
    if quotas.is_empty() {
        println!("No {}s found.", kind.noun());
        return Ok(());
    }
    let mut headers = vec!["name"];
    headers.extend(shown(&quotas[0]).iter().map(|(k, _)| *k));
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|q| {
            std::iter::once(text(q, "name").to_string())
                .chain(shown(q).into_iter().map(|(_, v)| v))
                .collect()
        })
        .collect();
    print!("{}", table(&headers, &rows));
    Ok(())
}

pub fn show(client: &mut Client, kind: Kind, name: &str) -> Result<(), Error> {
    client.require_login()?;
    println!(
        "Getting {} {name} as {}...\n",
        kind.noun(),
        client.user_name()
    );
    let quota = quota_named(client, kind, name)?;
    print!("{}", key_values(&shown(&quota)));
    Ok(())
}

pub fn create(client: &mut Client, kind: Kind, name: &str, args: &LimitArgs) -> Result<(), Error> {
    client.require_login()?;
    let user = client.user_name();
    let mut body = limits_body(args)?;
    body.insert("name".into(), json!(name));
    // As the cf CLI: a new quota allows paid plans only when told to.
    let services = body.entry("services").or_insert_with(|| json!({}));
    services["paid_services_allowed"] = json!(args.allow_paid_service_plans);
    match kind {
        Kind::Org => println!("Creating org quota {name} as {user}..."),
        Kind::Space => {
            let org = org_target(client)?;
            println!(
                "Creating space quota {name} for org {} as {user}...",
                org.name
            );
            body.insert(
                "relationships".into(),
                json!({"organization": {"data": {"guid": org.guid}}}),
            );
        }
    }
    match client.post(kind.path(), &Value::Object(body)) {
        Err(e)
            if e.api()
                .is_some_and(|a| a.detail.ends_with("already exists.")) =>
        {
            println!("{} '{name}' already exists.", capitalized(kind.noun()));
        }
        other => {
            other?;
        }
    }
    println!("OK");
    Ok(())
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

pub fn update(
    client: &mut Client,
    kind: Kind,
    name: &str,
    new_name: Option<String>,
    args: &LimitArgs,
) -> Result<(), Error> {
    client.require_login()?;
    println!(
        "Updating {} {name} as {}...",
        kind.noun(),
        client.user_name()
    );
    let quota = quota_named(client, kind, name)?;
    let mut body = limits_body(args)?;
    if let Some(new_name) = new_name {
        body.insert("name".into(), json!(new_name));
    }
    let path = format!("{}/{}", kind.path(), text(&quota, "guid"));
    client.patch(&path, &Value::Object(body))?;
    println!("OK");
    Ok(())
}

pub fn delete(client: &mut Client, kind: Kind, name: &str, force: bool) -> Result<(), Error> {
    client.require_login()?;
    if !force && !confirm(&format!("Really delete the {} {name}?", kind.noun())) {
        println!("'{name}' has not been deleted.");
        return Ok(());
    }
    println!(
        "Deleting {} {name} as {}...",
        kind.noun(),
        client.user_name()
    );
    match find_quota(client, kind, name)? {
        Some(quota) => client.delete(&format!("{}/{}", kind.path(), text(&quota, "guid")))?,
        None => println!("{}", not_found(kind, name)),
    }
    println!("OK");
    Ok(())
}

pub fn set_org_quota(client: &mut Client, org: &str, quota: &str) -> Result<(), Error> {
    client.require_login()?;
    println!(
        "Setting quota {quota} to org {org} as {}...",
        client.user_name()
    );
    let found = quota_named(client, Kind::Org, quota)?;
    let org = find_named(client, "/v3/organizations", &[], org)?
        .ok_or_else(|| Error::Failed(format!("Organization '{org}' not found.")))?;
    client.post(
        &format!(
            "{}/{}/relationships/organizations",
            Kind::Org.path(),
            text(&found, "guid")
        ),
        &json!({"data": [{"guid": text(&org, "guid")}]}),
    )?;
    println!("OK");
    Ok(())
}

pub fn set_space_quota(client: &mut Client, space: &str, quota: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    println!(
        "Setting space quota {quota} to space {space} as {}...",
        target.user
    );
    let found = quota_named(client, Kind::Space, quota)?;
    let filter = [("organization_guids", target.org.guid.as_str())];
    let space = find_named(client, "/v3/spaces", &filter, space)?
        .ok_or_else(|| Error::Failed(format!("Space '{space}' not found.")))?;
    client.post(
        &format!(
            "{}/{}/relationships/spaces",
            Kind::Space.path(),
            text(&found, "guid")
        ),
        &json!({"data": [{"guid": text(&space, "guid")}]}),
    )?;
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_limits() {
        let args = LimitArgs {
            total_memory: Some("2G".into()),
            instance_memory: Some("-1".into()),
            app_instances: Some(2),
            routes: Some(-1),
            allow_paid_service_plans: true,
            ..Default::default()
        };
        assert_eq!(
            Value::Object(limits_body(&args).unwrap()),
            json!({
                "apps": {"total_memory_in_mb": 2048, "per_process_memory_in_mb": null, "total_instances": 2},
                "services": {"paid_services_allowed": true},
                "routes": {"total_routes": null},
            })
        );
        assert_eq!(limits_body(&LimitArgs::default()).unwrap(), Map::new());
        let bad = LimitArgs {
            app_instances: Some(-5),
            ..Default::default()
        };
        assert!(limits_body(&bad).is_err());
        let bad = LimitArgs {
            total_memory: Some("lots".into()),
            ..Default::default()
        };
        assert!(limits_body(&bad).is_err());
    }

    #[test]
    fn limits_show_like_cf() {
        let quota = json!({
            "apps": {"total_memory_in_mb": 10240, "per_process_memory_in_mb": 512, "total_instances": null},
            "services": {"paid_services_allowed": false, "total_service_instances": 100},
            "routes": {"total_routes": 1000, "total_reserved_ports": 0},
        });
        let values: Vec<String> = shown(&quota).into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            ["10G", "512M", "1000", "100", "disallowed", "unlimited", "0"]
        );
    }
}
