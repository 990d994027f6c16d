//! User and role commands: `create-user` (a UAA user through SCIM `/Users`),
//! `set-org-role` and `set-space-role` (`POST /v3/roles`). As in the cf CLI, giving a
//! space role first gives the user the organization_user role in the space's org.

use serde_json::{json, Value};

use super::session::find_named;
use super::{query_value, text};
use crate::wf::client::{Client, ClientError};
use crate::wf::Error;

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
    let filter = query_value(&format!("userName eq \"{username}\""));
    let url = client
        .uaa_url()
        .map(|uaa| format!("{uaa}/Users?filter={filter}"));
    let id = url
        .ok()
        .and_then(|url| client.get(&url).ok())
        .and_then(|list| {
            list["resources"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|u| u["id"].as_str())
                .map(str::to_string)
        });
    match id {
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
    let space_guid = find_named(
        client,
        "/v3/spaces",
        &[("organization_guids", &org_guid)],
        space,
    )?
    .map(|s| text(&s, "guid").to_string())
    .ok_or_else(|| Error::Failed(format!("Space '{space}' not found.")))?;
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
