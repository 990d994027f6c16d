//! Who is calling and what they may do: the bearer token of a request, verified offline
//! against UAA's keys, and the caller's [`Permissions`] (CF's role matrix), loaded from
//! the CC database once per request.
//!
//! The rules, after cloud_controller_ng:
//! - `cloud_controller.admin`: everything.
//! - `cloud_controller.admin_read_only` and `cloud_controller.global_auditor`: read
//!   everything, write nothing; global auditors do not see app environments (secrets).
//! - An org role makes its org visible; organization_manager also sees and manages
//!   every space of the org (update/delete spaces, create spaces, manage roles).
//! - A space role makes its space visible; space_developer may change what lives in the
//!   space (apps, packages, builds, routes, processes); space_supporter operates what is
//!   there (start, stop, restart and update apps, scale and update processes, routes
//!   and their destinations) but pushes no code and reads no environment;
//!   space_manager manages the space and its roles.
//!
//! What a caller cannot see is "not found" (404); what they see but may not change is
//! CF-NotAuthorized (403). Creating orgs is for admins only.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use wf_uaa::{Claims, TokenError, TokenVerifier};

use crate::db::{self, Arg, Filter, Role, Space, UserRecord};
use crate::error::ApiError;
use crate::Controller;

/// The org role types.
pub const ORG_ROLES: &[&str] = &[
    "organization_user",
    "organization_auditor",
    "organization_manager",
    "organization_billing_manager",
];
/// The space role types.
pub const SPACE_ROLES: &[&str] = &[
    "space_developer",
    "space_auditor",
    "space_manager",
    "space_supporter",
];

/// What an action needs in a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// See the space and what lives in it.
    Read,
    /// Change apps, packages, builds, processes and routes (space_developer).
    Develop,
    /// Start, stop, restart and update apps, scale processes, change routes
    /// (space_developer and space_supporter).
    Operate,
    /// Read app environments (space_developer, admin, admin read-only).
    ReadSecrets,
    /// Change the space itself and its roles (space_manager, organization_manager).
    Manage,
}

/// The caller's roles, resolved to sets of guids.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    admin: bool,
    /// `cloud_controller.admin_read_only`: reads everything, secrets included.
    admin_read_only: bool,
    /// `cloud_controller.global_auditor`: reads everything but secrets.
    global_auditor: bool,
    visible_orgs: HashSet<String>,
    managed_orgs: HashSet<String>,
    visible_spaces: HashSet<String>,
    developer_spaces: HashSet<String>,
    supporter_spaces: HashSet<String>,
    managed_spaces: HashSet<String>,
}

impl Permissions {
    /// Everything for admins, read-everything for global auditors, otherwise the
    /// user's roles.
    pub async fn load(db: &db::Db, claims: &Claims) -> Result<Permissions, sqlx::Error> {
        let mut perms = Permissions {
            admin: claims.is_admin(),
            admin_read_only: claims.has_scope("cloud_controller.admin_read_only"),
            global_auditor: claims.has_scope("cloud_controller.global_auditor"),
            ..Permissions::default()
        };
        if perms.admin || !claims.is_user() {
            return Ok(perms);
        }
        let roles = db
            .find::<Role>(Filter::new().eq("user_guid", &claims.user_id))
            .await?;
        perms.add_roles(&roles);
        let managed: Vec<String> = perms.managed_orgs.iter().cloned().collect();
        if !managed.is_empty() {
            for space in db
                .find::<Space>(Filter::new().any_of("organization_guid", &managed))
                .await?
            {
                perms.visible_spaces.insert(space.guid.clone());
                perms.managed_spaces.insert(space.guid);
            }
        }
        Ok(perms)
    }

    fn add_roles(&mut self, roles: &[Role]) {
        for role in roles {
            if let Some(org) = &role.organization_guid {
                self.visible_orgs.insert(org.clone());
                if role.role_type == "organization_manager" {
                    self.managed_orgs.insert(org.clone());
                }
            }
            if let Some(space) = &role.space_guid {
                self.visible_spaces.insert(space.clone());
                match role.role_type.as_str() {
                    "space_developer" => {
                        self.developer_spaces.insert(space.clone());
                    }
                    "space_supporter" => {
                        self.supporter_spaces.insert(space.clone());
                    }
                    "space_manager" => {
                        self.managed_spaces.insert(space.clone());
                    }
                    _ => {}
                }
            }
        }
    }

    fn sees_everything(&self) -> bool {
        self.admin || self.admin_read_only || self.global_auditor
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct User {
    pub claims: Claims,
    pub perms: Permissions,
}

impl User {
    /// Verifies the `Authorization` header value.
    pub fn verify(verifier: &TokenVerifier, header: Option<&str>) -> Result<Claims, ApiError> {
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(ApiError::NotAuthenticated);
        };
        match verifier.verify(header) {
            Ok(claims) => Ok(claims),
            Err(TokenError::Missing) => Err(ApiError::NotAuthenticated),
            Err(TokenError::Invalid(_) | TokenError::Expired) => Err(ApiError::InvalidAuthToken),
        }
    }

    /// Verifies the header, records the user on first sight and loads their roles.
    pub async fn authenticate(
        controller: &Controller,
        header: Option<&str>,
    ) -> Result<User, ApiError> {
        let claims = User::verify(&controller.verifier, header)?;
        if claims.is_user() {
            record_user(&controller.db, &claims).await?;
        }
        let perms = Permissions::load(&controller.db, &claims).await?;
        Ok(User { claims, perms })
    }

    pub fn is_admin(&self) -> bool {
        self.perms.admin
    }

    /// Admins, admin read-only and global auditors see every org, space and app.
    pub fn sees_everything(&self) -> bool {
        self.perms.sees_everything()
    }

    /// Whether this user may see `space_guid` and what lives in it.
    pub fn can_access_space(&self, space_guid: &str) -> bool {
        self.perms.sees_everything() || self.perms.visible_spaces.contains(space_guid)
    }

    /// Whether this user may do `access` in `space_guid`.
    pub fn can_in_space(&self, space_guid: &str, access: Access) -> bool {
        let p = &self.perms;
        match access {
            Access::Read => self.can_access_space(space_guid),
            Access::Develop => p.admin || p.developer_spaces.contains(space_guid),
            Access::Operate => {
                self.can_in_space(space_guid, Access::Develop)
                    || p.supporter_spaces.contains(space_guid)
            }
            Access::ReadSecrets => {
                p.admin_read_only || self.can_in_space(space_guid, Access::Develop)
            }
            Access::Manage => p.admin || p.managed_spaces.contains(space_guid),
        }
    }

    /// `Ok` if the user may do `access` in a space they can see; CF-NotAuthorized if
    /// they see it but may not. (Callers answer 404 for spaces the user cannot see.)
    pub fn require_in_space(&self, space_guid: &str, access: Access) -> Result<(), ApiError> {
        if self.can_in_space(space_guid, access) {
            Ok(())
        } else {
            Err(ApiError::not_authorized())
        }
    }

    /// Whether this user may see `org_guid`.
    pub fn can_see_org(&self, org_guid: &str) -> bool {
        self.perms.sees_everything() || self.perms.visible_orgs.contains(org_guid)
    }

    /// Whether this user may manage `org_guid` (its spaces and roles).
    pub fn can_manage_org(&self, org_guid: &str) -> bool {
        self.perms.admin || self.perms.managed_orgs.contains(org_guid)
    }

    /// CF-NotAuthorized unless this user is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.perms.admin {
            Ok(())
        } else {
            Err(ApiError::not_authorized())
        }
    }

    /// Limits a list to rows whose `column` is a space the user can see.
    pub fn scope_spaces(&self, filter: Filter, column: &str) -> Filter {
        if self.perms.sees_everything() {
            return filter;
        }
        filter.any_of(column, &sorted(&self.perms.visible_spaces))
    }

    /// Limits a list to rows whose `column` is an app the user can see.
    pub fn scope_apps(&self, filter: Filter, column: &str) -> Filter {
        if self.perms.sees_everything() {
            return filter;
        }
        filter.in_select(
            column,
            "SELECT guid FROM apps WHERE space_guid IN ({})",
            &sorted(&self.perms.visible_spaces),
        )
    }

    /// Limits a list to rows whose `column` is an org the user can see.
    /// The orgs this user sees through their roles (admins and global readers see all).
    pub fn visible_org_guids(&self) -> Vec<String> {
        sorted(&self.perms.visible_orgs)
    }

    /// The spaces this user sees through their roles.
    pub fn visible_space_guids(&self) -> Vec<String> {
        sorted(&self.perms.visible_spaces)
    }

    pub fn scope_orgs(&self, filter: Filter, column: &str) -> Filter {
        if self.perms.sees_everything() {
            return filter;
        }
        filter.any_of(column, &sorted(&self.perms.visible_orgs))
    }

    /// Limits a list of roles to those in orgs and spaces the user can see.
    pub fn scope_roles(&self, filter: Filter) -> Filter {
        if self.perms.sees_everything() {
            return filter;
        }
        let (template, args) = self.visible_roles_clause();
        filter.clause(&template, args)
    }

    /// Limits a list of users to themselves and those with roles the user can see.
    pub fn scope_users(&self, filter: Filter) -> Filter {
        if self.perms.sees_everything() {
            return filter;
        }
        let (visible, mut args) = self.visible_roles_clause();
        args.push(Arg::from(&self.claims.user_id));
        filter.clause(
            &format!("(guid IN (SELECT user_guid FROM roles WHERE {visible}) OR guid = ?)"),
            args,
        )
    }

    /// Limits a list of space quotas to those of orgs the user manages and those
    /// applied to spaces they can see.
    pub fn scope_space_quotas(&self, filter: Filter) -> Filter {
        if self.perms.sees_everything() {
            return filter;
        }
        let (template, args) = any_in(&[
            ("organization_guid IN ({})", &self.perms.managed_orgs),
            (
                "guid IN (SELECT quota_guid FROM spaces WHERE guid IN ({}))",
                &self.perms.visible_spaces,
            ),
        ]);
        filter.clause(&template, args)
    }

    /// Limits a list of isolation segments to those entitled to an org the user sees
    /// or assigned to a space they see (CF's readable segments).
    pub fn scope_isolation_segments(&self, filter: Filter) -> Filter {
        if self.perms.sees_everything() {
            return filter;
        }
        let (template, args) = any_in(&[
            (
                "guid IN (SELECT isolation_segment_guid FROM isolation_segment_organizations \
                 WHERE organization_guid IN ({}))",
                &self.perms.visible_orgs,
            ),
            (
                "guid IN (SELECT isolation_segment_guid FROM spaces WHERE guid IN ({}))",
                &self.perms.visible_spaces,
            ),
        ]);
        filter.clause(&template, args)
    }

    /// `(organization_guid IN (..) OR space_guid IN (..))` over what the user sees.
    fn visible_roles_clause(&self) -> (String, Vec<Arg>) {
        any_in(&[
            ("organization_guid IN ({})", &self.perms.visible_orgs),
            ("space_guid IN ({})", &self.perms.visible_spaces),
        ])
    }

    /// The `created_by` of builds and audit records.
    pub fn actor(&self) -> serde_json::Value {
        serde_json::json!({
            "guid": self.claims.user_id,
            "name": self.claims.user_name,
            "email": self.claims.email,
        })
    }
}

/// `(part OR part ...)`, where each part is a template whose `{}` stands for its set of
/// guids (an empty set matches nothing), with `?` marks for [`Filter::clause`].
fn any_in(parts: &[(&str, &HashSet<String>)]) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut sql = Vec::new();
    for (template, set) in parts {
        let values = sorted(set);
        if values.is_empty() {
            sql.push("1 = 0".to_string());
        } else {
            sql.push(template.replace("{}", &vec!["?"; values.len()].join(", ")));
            args.extend(values.into_iter().map(Arg::Text));
        }
    }
    (format!("({})", sql.join(" OR ")), args)
}

fn sorted(set: &HashSet<String>) -> Vec<String> {
    let mut v: Vec<String> = set.iter().cloned().collect();
    v.sort();
    v
}

/// Records the token's user in the `users` table the first time they are seen.
async fn record_user(db: &db::Db, claims: &Claims) -> Result<(), ApiError> {
    if let Some(known) = db.get::<UserRecord>(&claims.user_id).await? {
        // A user first named by a role (guid only) gets their name on first sight.
        if known.username != claims.user_name && !claims.user_name.is_empty() {
            db.update(
                "users",
                &known.guid,
                vec![("username", claims.user_name.clone().into())],
            )
            .await?;
        }
        return Ok(());
    }
    let now = db::now();
    let origin = if claims.origin.is_empty() {
        "uaa".to_string()
    } else {
        claims.origin.clone()
    };
    let inserted = db
        .insert(
            "users",
            vec![
                ("guid", claims.user_id.clone().into()),
                ("username", claims.user_name.clone().into()),
                ("origin", origin.into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => Ok(()),
        other => Ok(other?),
    }
}

impl FromRequestParts<Arc<Controller>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        controller: &Arc<Controller>,
    ) -> Result<User, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        User::authenticate(controller, header).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(kind: &str, org: Option<&str>, space: Option<&str>) -> Role {
        Role {
            guid: db::new_guid(),
            role_type: kind.into(),
            user_guid: "u".into(),
            organization_guid: org.map(Into::into),
            space_guid: space.map(Into::into),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn roles_resolve_to_visibility_and_rights() {
        let mut perms = Permissions::default();
        perms.add_roles(&[
            role("organization_user", Some("o1"), None),
            role("space_developer", None, Some("s1")),
            role("space_auditor", None, Some("s2")),
            role("organization_manager", Some("o2"), None),
        ]);
        assert!(perms.visible_orgs.contains("o1") && perms.visible_orgs.contains("o2"));
        assert!(perms.managed_orgs.contains("o2") && !perms.managed_orgs.contains("o1"));
        assert!(perms.developer_spaces.contains("s1"));
        assert!(!perms.developer_spaces.contains("s2"));
        assert!(perms.visible_spaces.contains("s2"));
        assert!(!perms.sees_everything());
    }
}
