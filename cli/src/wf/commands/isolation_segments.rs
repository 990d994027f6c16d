//! Isolation segment commands, with the cf CLI's names and output:
//! `create-isolation-segment`, `isolation-segments`, `delete-isolation-segment`,
//! `enable-org-isolation`, `disable-org-isolation`, `set-org-default-isolation-segment`,
//! `reset-org-default-isolation-segment`, `set-space-isolation-segment` and
//! `reset-space-isolation-segment`. A segment is the set of cells started with its
//! name as placement tag (`wfd cell --placement-tag NAME`).

use serde_json::{json, Value};

use super::session::find_named;
use super::{confirm, org_target, text};
use crate::wf::client::Client;
use crate::wf::output::table;
use crate::wf::Error;

const SEGMENTS: &str = "/v3/isolation_segments";

/// The isolation segment commands, flattened into `wf`'s.
#[derive(Debug, clap::Subcommand)]
pub enum SegmentCommand {
    /// Create an isolation segment (the cells tagged with its name)
    CreateIsolationSegment { segment_name: String },
    /// List all isolation segments and the orgs entitled to them
    IsolationSegments,
    /// Delete an isolation segment
    DeleteIsolationSegment {
        segment_name: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Entitle an org to an isolation segment
    EnableOrgIsolation {
        org_name: String,
        segment_name: String,
    },
    /// Revoke an org's entitlement to an isolation segment
    DisableOrgIsolation {
        org_name: String,
        segment_name: String,
    },
    /// Set the default isolation segment of an org's spaces
    SetOrgDefaultIsolationSegment {
        org_name: String,
        segment_name: String,
    },
    /// Reset an org's default isolation segment (to the shared one)
    ResetOrgDefaultIsolationSegment { org_name: String },
    /// Assign an isolation segment to a space of the targeted org
    SetSpaceIsolationSegment {
        space_name: String,
        segment_name: String,
    },
    /// Reset a space's isolation segment to its org's default
    ResetSpaceIsolationSegment { space_name: String },
}

pub fn run(client: &mut Client, command: SegmentCommand) -> Result<(), Error> {
    match command {
        SegmentCommand::CreateIsolationSegment { segment_name } => create(client, &segment_name),
        SegmentCommand::IsolationSegments => list(client),
        SegmentCommand::DeleteIsolationSegment {
            segment_name,
            force,
        } => delete(client, &segment_name, force),
        SegmentCommand::EnableOrgIsolation {
            org_name,
            segment_name,
        } => enable_org(client, &org_name, &segment_name),
        SegmentCommand::DisableOrgIsolation {
            org_name,
            segment_name,
        } => disable_org(client, &org_name, &segment_name),
        SegmentCommand::SetOrgDefaultIsolationSegment {
            org_name,
            segment_name,
        } => set_org_default(client, &org_name, Some(&segment_name)),
        SegmentCommand::ResetOrgDefaultIsolationSegment { org_name } => {
            set_org_default(client, &org_name, None)
        }
        SegmentCommand::SetSpaceIsolationSegment {
            space_name,
            segment_name,
        } => set_space(client, &space_name, Some(&segment_name)),
        SegmentCommand::ResetSpaceIsolationSegment { space_name } => {
            set_space(client, &space_name, None)
        }
    }
}

/// The segment `name`, or cf's "not found".
fn segment_named(client: &mut Client, name: &str) -> Result<Value, Error> {
    find_named(client, SEGMENTS, &[], name)?
        .ok_or_else(|| Error::Failed(format!("Isolation segment '{name}' not found.")))
}

/// The org `name`, or cf's "not found".
fn org_named(client: &mut Client, name: &str) -> Result<Value, Error> {
    find_named(client, "/v3/organizations", &[], name)?
        .ok_or_else(|| Error::Failed(format!("Organization '{name}' not found.")))
}

fn create(client: &mut Client, name: &str) -> Result<(), Error> {
    client.require_login()?;
    println!(
        "Creating isolation segment {name} as {}...",
        client.user_name()
    );
    match client.post(SEGMENTS, &json!({ "name": name })) {
        Err(e) if e.api().is_some_and(|a| a.detail.contains("must be unique")) => {
            println!("Isolation segment '{name}' already exists.");
        }
        other => {
            other?;
        }
    }
    println!("OK");
    Ok(())
}

fn list(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    println!("Getting isolation segments as {}...", client.user_name());
    let segments = client.list(&format!("{SEGMENTS}?order_by=name"))?;
    println!("OK\n");
    let mut rows = Vec::with_capacity(segments.len());
    for segment in &segments {
        let path = format!(
            "{SEGMENTS}/{}/organizations?order_by=name",
            text(segment, "guid")
        );
        let orgs: Vec<String> = client
            .list(&path)?
            .iter()
            .map(|o| text(o, "name").to_string())
            .collect();
        rows.push(vec![text(segment, "name").to_string(), orgs.join(", ")]);
    }
    print!("{}", table(&["name", "orgs"], &rows));
    Ok(())
}

fn delete(client: &mut Client, name: &str, force: bool) -> Result<(), Error> {
    client.require_login()?;
    if !force && !confirm(&format!("Really delete the isolation segment {name}?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!(
        "Deleting isolation segment {name} as {}...",
        client.user_name()
    );
    match find_named(client, SEGMENTS, &[], name)? {
        Some(segment) => client.delete(&format!("{SEGMENTS}/{}", text(&segment, "guid")))?,
        None => println!("Isolation segment '{name}' does not exist."),
    }
    println!("OK");
    Ok(())
}

fn enable_org(client: &mut Client, org: &str, segment: &str) -> Result<(), Error> {
    client.require_login()?;
    println!(
        "Enabling isolation segment {segment} for org {org} as {}...",
        client.user_name()
    );
    let segment = segment_named(client, segment)?;
    let org = org_named(client, org)?;
    client.post(
        &format!(
            "{SEGMENTS}/{}/relationships/organizations",
            text(&segment, "guid")
        ),
        &json!({"data": [{"guid": text(&org, "guid")}]}),
    )?;
    println!("OK");
    Ok(())
}

fn disable_org(client: &mut Client, org: &str, segment: &str) -> Result<(), Error> {
    client.require_login()?;
    println!(
        "Removing entitlement to isolation segment {segment} from org {org} as {}...",
        client.user_name()
    );
    let segment = segment_named(client, segment)?;
    let org = org_named(client, org)?;
    client.delete(&format!(
        "{SEGMENTS}/{}/relationships/organizations/{}",
        text(&segment, "guid"),
        text(&org, "guid")
    ))?;
    println!("OK");
    Ok(())
}

/// Sets (or with `None`, resets) the default segment of `org`.
fn set_org_default(client: &mut Client, org: &str, segment: Option<&str>) -> Result<(), Error> {
    client.require_login()?;
    let user = client.user_name();
    let data = match segment {
        Some(name) => {
            println!("Setting isolation segment {name} to default on org {org} as {user}...");
            json!({"guid": text(&segment_named(client, name)?, "guid")})
        }
        None => {
            println!("Resetting default isolation segment of org {org} as {user}...");
            Value::Null
        }
    };
    let org = org_named(client, org)?;
    client.patch(
        &format!(
            "/v3/organizations/{}/relationships/default_isolation_segment",
            text(&org, "guid")
        ),
        &json!({ "data": data }),
    )?;
    println!("OK");
    Ok(())
}

/// Assigns (or with `None`, unassigns) the segment of `space` in the targeted org.
fn set_space(client: &mut Client, space: &str, segment: Option<&str>) -> Result<(), Error> {
    let target = org_target(client)?;
    let user = client.user_name();
    let org = target.name.as_str();
    let data = match segment {
        Some(name) => {
            println!("Updating isolation segment of space {space} in org {org} as {user}...");
            json!({"guid": text(&segment_named(client, name)?, "guid")})
        }
        None => {
            println!(
                "Resetting isolation segment assignment of space {space} in org {org} as {user}..."
            );
            Value::Null
        }
    };
    let filter = [("organization_guids", target.guid.as_str())];
    let found = find_named(client, "/v3/spaces", &filter, space)?
        .ok_or_else(|| Error::Failed(format!("Space '{space}' not found.")))?;
    client.patch(
        &format!(
            "/v3/spaces/{}/relationships/isolation_segment",
            text(&found, "guid")
        ),
        &json!({ "data": data }),
    )?;
    println!("OK\n");
    match segment {
        Some(_) => println!(
            "In order to move running applications to this isolation segment, they must be restarted."
        ),
        None => println!(
            "Applications in this space will be placed in the default isolation segment for the \
             org, if set, or the shared isolation segment. In order to move running \
             applications to the default isolation segment, they must be restarted."
        ),
    }
    Ok(())
}
