//! User and role commands: `create-user`, `delete-user` and `passwd` (UAA's SCIM
//! `/Users`, and the controller's `/v3/users`), `set-org-role` and `set-space-role`
//! (`POST /v3/roles`), `org-users` and `space-users` (`/v3/roles` with `/v3/users`).
//! As in the cf CLI, giving a space role first gives the user the organization_user
//! role in the space's org.

use serde_json::{json, Value};

use super::session::{find_named, prompt};
use super::{confirm, query_value, text};
use crate::wf::client::{Client, ClientError};
use crate::wf::Error;

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a new user in UAA
    CreateUser { username: String, password: String },
    /// Delete a user from UAA and the Cloud Controller
    DeleteUser {
        username: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Change your password
    Passwd,
    /// Show the users of an org by role
    OrgUsers { org: String },
    /// Show the users of a space by role
    SpaceUsers { org: String, space: String },
    /// Assign an org role to a user (OrgManager, BillingManager, OrgAuditor, OrgUser)
    SetOrgRole {
        username: String,
        org: String,
        role: String,
    },
    /// Assign a space role to a user (SpaceManager, SpaceDeveloper, SpaceAuditor,
    /// SpaceSupporter); the user also becomes an org user of the space's org
    SetSpaceRole {
        username: String,
        org: String,
        space: String,
        role: String,
    },
}

pub fn run(c: &mut Client, command: UserCommand) -> Result<(), Error> {
    match command {
        UserCommand::CreateUser { username, password } => create_user(c, &username, &password),
        UserCommand::DeleteUser { username, force } => delete_user(c, &username, force),
        UserCommand::Passwd => passwd(c),
        UserCommand::OrgUsers { org } => org_users(c, &org),
        UserCommand::SpaceUsers { org, space } => space_users(c, &org, &space),
        UserCommand::SetOrgRole {
            username,
            org,
            role,
        } => set_org_role(c, &username, &org, &role),
        UserCommand::SetSpaceRole {
            username,
            org,
            space,
            role,
        } => set_space_role(c, &username, &org, &space, &role),
    }
}

/// `wf create-user USERNAME PASSWORD`.
pub fn create_user(client: &mut Client, username: &str, password: &str) -> Result<(), Error> {
    client.require_login()?;
    println!("Creating user {username}...");
    let url = format!("{}/Users", client.uaa_url()?);
    let body = json!({
        "userName": username,
        "password": password,
        "emails": [{"value": username, "primary": true}],
    });
    match client.post(&url, &body) {
        Ok(_) => {}
        Err(ClientError::Api(e)) if e.status == 409 => {
            println!("User '{username}' already exists.");
        }
        Err(e) => return Err(e.into()),
    }
    println!("OK\n");
    println!("TIP: Assign roles with 'wf set-org-role' and 'wf set-space-role'.");
    Ok(())
}

/// The UAA id of `username`, if the caller may read SCIM users and it exists.
fn uaa_user_id(client: &mut Client, username: &str) -> Result<Option<String>, Error> {
    let filter = query_value(&format!("userName eq \"{username}\""));
    let url = format!("{}/Users?filter={filter}", client.uaa_url()?);
    let list = client.get(&url)?;
    Ok(list["resources"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|u| u["id"].as_str())
        .map(str::to_string))
}

/// `wf delete-user USERNAME [-f]`: the UAA user and the controller's record of them.
pub fn delete_user(client: &mut Client, username: &str, force: bool) -> Result<(), Error> {
    client.require_login()?;
    if !force && !confirm(&format!("Really delete the user {username}?")) {
        return Ok(());
    }
    println!("Deleting user {username} as {}...", client.user_name());
    let Some(id) = uaa_user_id(client, username)? else {
        println!("User '{username}' does not exist.");
        println!("OK");
        return Ok(());
    };
    let url = format!("{}/Users/{id}", client.uaa_url()?);
    client.delete(&url)?;
    match client.delete(&format!("/v3/users/{id}")) {
        Ok(()) => {}
        // A user who never used the API is unknown to the controller.
        Err(ClientError::Api(e)) if e.status == 404 => {}
        Err(e) => return Err(e.into()),
    }
    println!("OK");
    Ok(())
}

/// `wf passwd`: changes the logged-in user's password (asking for the current one and
/// the new one twice), then logs out as the cf CLI does.
pub fn passwd(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    let current = prompt("Current password", true)?;
    let new = prompt("New password", true)?;
    if prompt("Verify password", true)? != new {
        return Err(Error::Failed(
            "Password verification does not match.".into(),
        ));
    }
    let token = client.config().access_token.clone().unwrap_or_default();
    let user_id = crate::wf::client::token_claim(&token, "user_id")
        .ok_or_else(|| Error::Failed("Only users have passwords; log in as a user.".into()))?;
    println!("Changing password for user {}...", client.user_name());
    let url = format!("{}/Users/{user_id}/password", client.uaa_url()?);
    let body = json!({"oldPassword": current, "password": new});
    match client.call(reqwest::Method::PUT, &url, Some(&body)) {
        Ok(_) => {}
        Err(ClientError::Api(e)) if e.status == 401 => {
            return Err(Error::Failed("Current password did not match".into()))
        }
        Err(e) => return Err(e.into()),
    }
    client.config_mut().clear_session();
    client.save_config()?;
    println!("OK");
    println!("Please log in again");
    Ok(())
}

/// `wf org-users ORG`: the org's users by role.
pub fn org_users(client: &mut Client, org: &str) -> Result<(), Error> {
    client.require_login()?;
    println!("Getting users in org {org} as {}...\n", client.user_name());
    let org_guid = find_org(client, org)?;
    let sections = [
        ("ORG MANAGER", "organization_manager"),
        ("BILLING MANAGER", "organization_billing_manager"),
        ("ORG AUDITOR", "organization_auditor"),
    ];
    print_users_by_role(client, ("organization_guids", &org_guid), &sections)
}

/// `wf space-users ORG SPACE`: the space's users by role.
pub fn space_users(client: &mut Client, org: &str, space: &str) -> Result<(), Error> {
    client.require_login()?;
    println!(
        "Getting users in org {org} / space {space} as {}...\n",
        client.user_name()
    );
    let org_guid = find_org(client, org)?;
    let space_guid = find_space(client, &org_guid, space)?;
    let sections = [
        ("SPACE MANAGER", "space_manager"),
        ("SPACE DEVELOPER", "space_developer"),
        ("SPACE AUDITOR", "space_auditor"),
        ("SPACE SUPPORTER", "space_supporter"),
    ];
    print_users_by_role(client, ("space_guids", &space_guid), &sections)
}

/// The roles matching `filter`, printed per section as the cf CLI does:
/// `  name (origin)`, or `  No <role> found`.
fn print_users_by_role(
    client: &mut Client,
    filter: (&str, &str),
    sections: &[(&str, &str)],
) -> Result<(), Error> {
    let roles = client.list(&format!("/v3/roles?{}={}", filter.0, query_value(filter.1)))?;
    let mut guids: Vec<&str> = roles
        .iter()
        .filter_map(|r| r.pointer("/relationships/user/data/guid")?.as_str())
        .collect();
    guids.sort_unstable();
    guids.dedup();
    let users = if guids.is_empty() {
        Vec::new()
    } else {
        client.list(&format!(
            "/v3/users?guids={}",
            query_value(&guids.join(","))
        ))?
    };
    let name_of = |guid: &str| -> String {
        users
            .iter()
            .find(|u| text(u, "guid") == guid)
            .map(|u| match u["username"].as_str() {
                Some(name) => format!("{name} ({})", text(u, "origin")),
                None => guid.to_string(),
            })
            .unwrap_or_else(|| guid.to_string())
    };
    for (heading, kind) in sections {
        println!("{heading}");
        let mut names: Vec<String> = roles
            .iter()
            .filter(|r| text(r, "type") == *kind)
            .filter_map(|r| r.pointer("/relationships/user/data/guid")?.as_str())
            .map(name_of)
            .collect();
        names.sort();
        if names.is_empty() {
            println!("  No {} found", heading.to_lowercase());
        }
        for name in names {
            println!("  {name}");
        }
        println!();
    }
    Ok(())
}

/// The role type of a cf CLI role name (`OrgManager`, `SpaceDeveloper`, ...) or of a
/// V3 type (`organization_manager`, ...).
fn role_type(role: &str, org_role: bool) -> Result<&'static str, Error> {
    let normalized = role.to_ascii_lowercase().replace(['_', '-'], "");
    let found = if org_role {
        match normalized.as_str() {
            "orgmanager" | "organizationmanager" => Some("organization_manager"),
            "billingmanager" | "organizationbillingmanager" => Some("organization_billing_manager"),
            "orgauditor" | "organizationauditor" => Some("organization_auditor"),
            "orguser" | "organizationuser" => Some("organization_user"),
            _ => None,
        }
    } else {
        match normalized.as_str() {
            "spacemanager" => Some("space_manager"),
            "spacedeveloper" => Some("space_developer"),
            "spaceauditor" => Some("space_auditor"),
            "spacesupporter" => Some("space_supporter"),
            _ => None,
        }
    };
    found.ok_or_else(|| {
        let allowed = if org_role {
            "OrgManager, BillingManager, OrgAuditor, OrgUser"
        } else {
            "SpaceManager, SpaceDeveloper, SpaceAuditor, SpaceSupporter"
        };
        Error::Failed(format!("Invalid role '{role}': use one of {allowed}."))
    })
}

/// The `user` relationship data of a role for `username`: their UAA id when the
/// caller may read SCIM users, else the username (which the API resolves among the
/// users it has seen).
fn user_data(client: &mut Client, username: &str) -> Value {
    match uaa_user_id(client, username).ok().flatten() {
        Some(guid) => json!({"guid": guid}),
        None => json!({"username": username, "origin": "uaa"}),
    }
}

/// Posts a role; a role the user already holds is fine.
fn give_role(client: &mut Client, body: &Value) -> Result<(), Error> {
    match client.post("/v3/roles", body) {
        Ok(_) => Ok(()),
        Err(ClientError::Api(e)) if e.status == 422 && e.detail.contains("already has") => {
            println!("{}", e.detail);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn find_org(client: &mut Client, org: &str) -> Result<String, Error> {
    let found = find_named(client, "/v3/organizations", &[], org)?;
    found
        .map(|o| text(&o, "guid").to_string())
        .ok_or_else(|| Error::Failed(format!("Organization '{org}' not found.")))
}

fn find_space(client: &mut Client, org_guid: &str, space: &str) -> Result<String, Error> {
    find_named(
        client,
        "/v3/spaces",
        &[("organization_guids", org_guid)],
        space,
    )?
    .map(|s| text(&s, "guid").to_string())
    .ok_or_else(|| Error::Failed(format!("Space '{space}' not found.")))
}

/// `wf set-org-role USERNAME ORG ROLE`.
pub fn set_org_role(
    client: &mut Client,
    username: &str,
    org: &str,
    role: &str,
) -> Result<(), Error> {
    client.require_login()?;
    let kind = role_type(role, true)?;
    println!(
        "Assigning role {role} to user {username} in org {org} as {}...",
        client.user_name()
    );
    let org_guid = find_org(client, org)?;
    let user = user_data(client, username);
    give_role(
        client,
        &json!({
            "type": kind,
            "relationships": {"user": {"data": user}, "organization": {"data": {"guid": org_guid}}},
        }),
    )?;
    println!("OK");
    Ok(())
}

/// `wf set-space-role USERNAME ORG SPACE ROLE`.
pub fn set_space_role(
    client: &mut Client,
    username: &str,
    org: &str,
    space: &str,
    role: &str,
) -> Result<(), Error> {
    client.require_login()?;
    let kind = role_type(role, false)?;
    println!(
        "Assigning role {role} to user {username} in org {org} / space {space} as {}...",
        client.user_name()
    );
    let org_guid = find_org(client, org)?;
    let space_guid = find_space(client, &org_guid, space)?;
    let user = user_data(client, username);
    give_role(
        client,
        &json!({
            "type": "organization_user",
            "relationships": {"user": {"data": user}, "organization": {"data": {"guid": org_guid}}},
        }),
    )?;
    give_role(
        client,
        &json!({
            "type": kind,
            "relationships": {"user": {"data": user}, "space": {"data": {"guid": space_guid}}},
        }),
    )?;
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_map_to_types() {
        assert_eq!(
            role_type("OrgManager", true).unwrap(),
            "organization_manager"
        );
        assert_eq!(
            role_type("organization_user", true).unwrap(),
            "organization_user"
        );
        assert_eq!(
            role_type("SpaceDeveloper", false).unwrap(),
            "space_developer"
        );
        assert!(role_type("SpaceDeveloper", true).is_err());
        assert!(role_type("Boss", false).is_err());
    }
}
