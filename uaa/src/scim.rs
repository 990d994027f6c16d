//! SCIM users and groups: the resources `/Users` and `/Groups` show, their simple
//! filters (`userName eq "x"`), and the operations behind them. Groups are the scopes
//! a user's tokens may carry; a user is a member of a group when the group's name is
//! among its scopes.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{AnyPool, Row as _};

use crate::users::{self, db_error, unix_now, User};
use crate::{ScimError, Uaa, UaaError, ADMIN_SCOPES, CF_CLIENT_SCOPES, OTHER_GROUPS, USER_SCOPES};

const SCIM_SCHEMA: &str = "urn:scim:schemas:core:1.0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimMeta {
    pub version: i64,
    pub created: String,
    pub last_modified: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimName {
    pub family_name: String,
    pub given_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScimEmail {
    pub value: String,
    pub primary: bool,
}

/// A group a user belongs to, as a user resource lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScimGroupRef {
    pub value: String,
    pub display: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A user in UAA's SCIM shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimUser {
    pub id: String,
    pub external_id: String,
    pub meta: ScimMeta,
    pub user_name: String,
    pub name: ScimName,
    pub emails: Vec<ScimEmail>,
    pub groups: Vec<ScimGroupRef>,
    pub active: bool,
    pub verified: bool,
    pub origin: &'static str,
    pub zone_id: &'static str,
    pub password_last_modified: String,
    pub schemas: Vec<&'static str>,
}

/// A group member: always a user of origin `uaa` here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScimMember {
    pub origin: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
}

impl ScimMember {
    fn user(id: &str) -> ScimMember {
        ScimMember {
            origin: "uaa",
            kind: "USER",
            value: id.to_string(),
        }
    }
}

/// A group in UAA's SCIM shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimGroup {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub members: Vec<ScimMember>,
    pub meta: ScimMeta,
    pub zone_id: &'static str,
    pub schemas: Vec<&'static str>,
}

/// User attributes to set; `None` leaves one as it is (PATCH), a full set replaces
/// the user (PUT). Groups are changed through `/Groups`, passwords through
/// [`Uaa::change_password`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub user_name: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub active: Option<bool>,
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` for unix seconds (UAA's SCIM timestamps).
fn timestamp(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A parsed SCIM filter: `attr op value` terms joined by `and` (binding tighter) and
/// `or`; operators `eq`, `co`, `sw` (case-insensitive) and `pr`. No parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Any of these, each all of its terms.
    any_of: Vec<Vec<Term>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    attr: String,
    op: Op,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Contains,
    StartsWith,
    Present,
}

fn tokenize(s: &str) -> Result<Vec<String>, ScimError> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(escaped) => value.push(escaped),
                        None => return Err(ScimError::InvalidFilter("unterminated string".into())),
                    },
                    Some(q) if q == c => break,
                    Some(other) => value.push(other),
                    None => return Err(ScimError::InvalidFilter("unterminated string".into())),
                }
            }
            // A leading quote marks string tokens, so `"and"` is no keyword.
            tokens.push(format!("\"{value}"));
        } else if c == '(' || c == ')' {
            return Err(ScimError::InvalidFilter(
                "parentheses are not supported".into(),
            ));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' || c == '\'' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(word);
        }
    }
    Ok(tokens)
}

impl Filter {
    /// Parses `filter`, whose attributes must be among `attributes` (lower case).
    pub(crate) fn parse(filter: &str, attributes: &[&str]) -> Result<Filter, ScimError> {
        let invalid = |why: String| ScimError::InvalidFilter(why);
        let tokens = tokenize(filter)?;
        let mut tokens = tokens.into_iter();
        let mut any_of = vec![Vec::new()];
        loop {
            let attr = tokens
                .next()
                .filter(|t| !t.starts_with('"'))
                .ok_or_else(|| invalid("expected an attribute".into()))?
                .to_ascii_lowercase();
            if !attributes.contains(&attr.as_str()) {
                return Err(invalid(format!("unsupported attribute {attr}")));
            }
            let op = match tokens.next().map(|t| t.to_ascii_lowercase()).as_deref() {
                Some("eq") => Op::Eq,
                Some("co") => Op::Contains,
                Some("sw") => Op::StartsWith,
                Some("pr") => Op::Present,
                Some(other) => return Err(invalid(format!("unsupported operator {other}"))),
                None => return Err(invalid("expected an operator".into())),
            };
            let value = if op == Op::Present {
                String::new()
            } else {
                let value = tokens
                    .next()
                    .ok_or_else(|| invalid("expected a value".into()))?;
                value.strip_prefix('"').unwrap_or(&value).to_lowercase()
            };
            if let Some(all) = any_of.last_mut() {
                all.push(Term { attr, op, value });
            }
            match tokens.next().map(|t| t.to_ascii_lowercase()).as_deref() {
                None => break,
                Some("and") => {}
                Some("or") => any_of.push(Vec::new()),
                Some(other) => return Err(invalid(format!("expected and/or, found {other}"))),
            }
        }
        Ok(Filter { any_of })
    }

    /// Whether a resource whose attribute values `values(attr)` gives matches.
    pub(crate) fn matches(&self, values: impl Fn(&str) -> Vec<String>) -> bool {
        self.any_of.iter().any(|all| {
            all.iter().all(|term| {
                let values = values(&term.attr);
                values
                    .iter()
                    .map(|v| v.to_lowercase())
                    .any(|v| match term.op {
                        Op::Eq => v == term.value,
                        Op::Contains => v.contains(&term.value),
                        Op::StartsWith => v.starts_with(&term.value),
                        Op::Present => !v.is_empty(),
                    })
            })
        })
    }
}

const USER_FILTER_ATTRIBUTES: &[&str] = &[
    "id",
    "username",
    "email",
    "emails.value",
    "origin",
    "active",
    "name.givenname",
    "name.familyname",
];

fn user_values(user: &User, attr: &str) -> Vec<String> {
    let value = match attr {
        "id" => user.id.clone(),
        "username" => user.username.clone(),
        "email" | "emails.value" => user.email.clone(),
        "origin" => "uaa".into(),
        "active" => user.active.to_string(),
        "name.givenname" => user.given_name.clone(),
        "name.familyname" => user.family_name.clone(),
        _ => return Vec::new(),
    };
    vec![value]
}

/// A stored group.
#[derive(Debug, Clone)]
struct Group {
    id: String,
    display_name: String,
    description: String,
    created_at: i64,
}

fn group_from_row(row: &sqlx::any::AnyRow) -> Result<Group, UaaError> {
    Ok(Group {
        id: row.try_get("id").map_err(db_error)?,
        display_name: row.try_get("display_name").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

async fn all_groups(pool: &AnyPool) -> Result<Vec<Group>, UaaError> {
    let rows = sqlx::query(
        "SELECT id, display_name, description, created_at FROM scim_groups ORDER BY display_name",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter().map(group_from_row).collect()
}

async fn find_group(pool: &AnyPool, id: &str) -> Result<Option<Group>, UaaError> {
    let row = sqlx::query(
        "SELECT id, display_name, description, created_at FROM scim_groups WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.as_ref().map(group_from_row).transpose()
}

/// Inserts a group; `Ok(false)` when its name exists.
async fn insert_group(pool: &AnyPool, group: &Group) -> Result<bool, UaaError> {
    let result = sqlx::query(
        "INSERT INTO scim_groups (id, display_name, description, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(group.id.clone())
    .bind(group.display_name.clone())
    .bind(group.description.clone())
    .bind(group.created_at)
    .execute(pool)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(db_error(e)),
    }
}

fn user_not_found(id: &str) -> ScimError {
    ScimError::NotFound(format!("User {id} does not exist"))
}

fn group_not_found(id: &str) -> ScimError {
    ScimError::NotFound(format!("Group {id} does not exist"))
}

fn group_resource(group: &Group, users: &[User]) -> ScimGroup {
    let members = users
        .iter()
        .filter(|u| u.scopes.contains(&group.display_name))
        .map(|u| ScimMember::user(&u.id))
        .collect();
    ScimGroup {
        id: group.id.clone(),
        display_name: group.display_name.clone(),
        description: group.description.clone(),
        members,
        meta: ScimMeta {
            version: 0,
            created: timestamp(group.created_at),
            last_modified: timestamp(group.created_at),
        },
        zone_id: "uaa",
        schemas: vec![SCIM_SCHEMA],
    }
}

fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Uaa {
    /// Creates the groups of every scope UAA hands out, if missing.
    pub(crate) async fn ensure_groups(&self) -> Result<(), UaaError> {
        let existing: Vec<String> = all_groups(&self.db)
            .await?
            .into_iter()
            .map(|g| g.display_name)
            .collect();
        let wanted = CF_CLIENT_SCOPES
            .iter()
            .chain(ADMIN_SCOPES)
            .chain(USER_SCOPES)
            .chain(OTHER_GROUPS);
        for name in wanted {
            if !existing.iter().any(|e| e == name) {
                let group = Group {
                    id: uuid::Uuid::new_v4().to_string(),
                    display_name: name.to_string(),
                    description: String::new(),
                    created_at: unix_now(),
                };
                // A concurrent open may have created it: that is fine.
                insert_group(&self.db, &group).await?;
            }
        }
        Ok(())
    }

    fn user_resource(&self, user: &User, groups: &[Group]) -> ScimUser {
        let by_name: HashMap<&str, &str> = groups
            .iter()
            .map(|g| (g.display_name.as_str(), g.id.as_str()))
            .collect();
        ScimUser {
            id: user.id.clone(),
            external_id: String::new(),
            meta: ScimMeta {
                version: user.version,
                created: timestamp(user.created_at),
                last_modified: timestamp(user.last_modified),
            },
            user_name: user.username.clone(),
            name: ScimName {
                family_name: user.family_name.clone(),
                given_name: user.given_name.clone(),
            },
            emails: vec![ScimEmail {
                value: user.email.clone(),
                primary: true,
            }],
            groups: user
                .scopes
                .iter()
                .map(|s| ScimGroupRef {
                    value: by_name
                        .get(s.as_str())
                        .map_or_else(|| s.clone(), |id| id.to_string()),
                    display: s.clone(),
                    kind: "DIRECT",
                })
                .collect(),
            active: user.active,
            verified: true,
            origin: "uaa",
            zone_id: "uaa",
            password_last_modified: timestamp(user.password_last_modified),
            schemas: vec![SCIM_SCHEMA],
        }
    }

    async fn scim_user(&self, user: &User) -> Result<ScimUser, ScimError> {
        let groups = all_groups(&self.db).await?;
        Ok(self.user_resource(user, &groups))
    }

    async fn stored_user(&self, id: &str) -> Result<User, ScimError> {
        users::find_by_id(&self.db, id)
            .await?
            .ok_or_else(|| user_not_found(id))
    }

    /// SCIM `POST /Users`: a user with UAA's default groups.
    pub async fn create_scim_user(
        &self,
        attrs: UserChanges,
        password: &str,
    ) -> Result<ScimUser, ScimError> {
        let user_name = attrs.user_name.clone().unwrap_or_default();
        if user_name.trim().is_empty() || password.is_empty() {
            return Err(ScimError::Invalid(
                "userName and password are required".into(),
            ));
        }
        let email = attrs.email.clone().unwrap_or_else(|| user_name.clone());
        let mut user = User::new(
            &user_name,
            users::hash_password(password).await?,
            &email,
            USER_SCOPES.iter().map(|s| s.to_string()).collect(),
        );
        user.given_name = attrs.given_name.unwrap_or_default();
        user.family_name = attrs.family_name.unwrap_or_default();
        user.active = attrs.active.unwrap_or(true);
        if !users::insert(&self.db, &user).await? {
            return Err(ScimError::AlreadyExists(format!(
                "Username already in use: {user_name}"
            )));
        }
        self.scim_user(&user).await
    }

    pub async fn get_user(&self, id: &str) -> Result<ScimUser, ScimError> {
        let user = self.stored_user(id).await?;
        self.scim_user(&user).await
    }

    /// SCIM `GET /Users`: every user matching `filter`, oldest first.
    pub async fn list_users(&self, filter: Option<&str>) -> Result<Vec<ScimUser>, ScimError> {
        let filter = filter
            .filter(|f| !f.trim().is_empty())
            .map(|f| Filter::parse(f, USER_FILTER_ATTRIBUTES))
            .transpose()?;
        let groups = all_groups(&self.db).await?;
        let mut found = Vec::new();
        for user in users::list(&self.db).await? {
            if filter
                .as_ref()
                .is_none_or(|f| f.matches(|attr| user_values(&user, attr)))
            {
                found.push(self.user_resource(&user, &groups));
            }
        }
        Ok(found)
    }

    /// SCIM `PATCH`/`PUT /Users/{id}`. `if_match` is the version the caller last saw
    /// (`If-Match`); a change of name or email revokes the user's tokens.
    pub async fn update_user(
        &self,
        id: &str,
        changes: UserChanges,
        if_match: Option<i64>,
    ) -> Result<ScimUser, ScimError> {
        let mut user = self.stored_user(id).await?;
        if if_match.is_some_and(|v| v != user.version) {
            return Err(ScimError::VersionMismatch);
        }
        if let Some(name) = changes.user_name {
            if name.trim().is_empty() {
                return Err(ScimError::Invalid("userName must not be empty".into()));
            }
            user.username = name;
        }
        if let Some(email) = changes.email {
            user.email = email;
        }
        if let Some(given) = changes.given_name {
            user.given_name = given;
        }
        if let Some(family) = changes.family_name {
            user.family_name = family;
        }
        if let Some(active) = changes.active {
            user.active = active;
        }
        self.write_user(&user).await
    }

    /// Stores `user` (checked against its version); the stored result.
    async fn write_user(&self, user: &User) -> Result<ScimUser, ScimError> {
        if !users::update(&self.db, user).await? {
            return match users::find_by_id(&self.db, &user.id).await? {
                None => Err(user_not_found(&user.id)),
                Some(now) if now.version != user.version => Err(ScimError::VersionMismatch),
                Some(_) => Err(ScimError::AlreadyExists(format!(
                    "Username already in use: {}",
                    user.username
                ))),
            };
        }
        self.get_user(&user.id).await
    }

    /// SCIM `DELETE /Users/{id}`: the user's tokens are revoked with it.
    pub async fn delete_user(
        &self,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<ScimUser, ScimError> {
        let user = self.stored_user(id).await?;
        if if_match.is_some_and(|v| v != user.version) {
            return Err(ScimError::VersionMismatch);
        }
        let resource = self.scim_user(&user).await?;
        if users::delete(&self.db, id).await? {
            Ok(resource)
        } else {
            Err(user_not_found(id))
        }
    }

    /// `PUT /Users/{id}/password`. A user changing its own password gives the old one;
    /// an administrator gives `None`. The user's tokens are revoked.
    pub async fn change_password(
        &self,
        id: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<(), ScimError> {
        if new.is_empty() {
            return Err(ScimError::Invalid(
                "the new password must not be empty".into(),
            ));
        }
        let mut user = self.stored_user(id).await?;
        if let Some(old) = old {
            if !users::verify_password(old, &user.password_hash).await {
                return Err(ScimError::OldPasswordIncorrect);
            }
        }
        user.password_hash = users::hash_password(new).await?;
        user.password_last_modified = unix_now();
        self.write_user(&user).await.map(|_| ())
    }

    /// SCIM `GET /Groups`: every group matching `filter` (`displayName`, `id`).
    pub async fn list_groups(&self, filter: Option<&str>) -> Result<Vec<ScimGroup>, ScimError> {
        let filter = filter
            .filter(|f| !f.trim().is_empty())
            .map(|f| Filter::parse(f, &["id", "displayname", "description"]))
            .transpose()?;
        let users = users::list(&self.db).await?;
        Ok(all_groups(&self.db)
            .await?
            .iter()
            .filter(|g| {
                filter.as_ref().is_none_or(|f| {
                    f.matches(|attr| match attr {
                        "id" => vec![g.id.clone()],
                        "displayname" => vec![g.display_name.clone()],
                        "description" => vec![g.description.clone()],
                        _ => Vec::new(),
                    })
                })
            })
            .map(|g| group_resource(g, &users))
            .collect())
    }

    pub async fn get_group(&self, id: &str) -> Result<ScimGroup, ScimError> {
        let group = find_group(&self.db, id)
            .await?
            .ok_or_else(|| group_not_found(id))?;
        Ok(group_resource(&group, &users::list(&self.db).await?))
    }

    /// SCIM `POST /Groups`: a new scope users can be given.
    pub async fn create_group(
        &self,
        display_name: &str,
        description: &str,
    ) -> Result<ScimGroup, ScimError> {
        if !valid_group_name(display_name) {
            return Err(ScimError::Invalid(
                "displayName must be a single word".into(),
            ));
        }
        let group = Group {
            id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.to_string(),
            description: description.to_string(),
            created_at: unix_now(),
        };
        if !insert_group(&self.db, &group).await? {
            return Err(ScimError::AlreadyExists(format!(
                "A group with displayName: {display_name} already exists."
            )));
        }
        Ok(group_resource(&group, &[]))
    }

    /// `POST /Groups/{id}/members`: the user's next tokens may carry the group's scope.
    pub async fn add_member(&self, group_id: &str, user_id: &str) -> Result<ScimMember, ScimError> {
        let group = find_group(&self.db, group_id)
            .await?
            .ok_or_else(|| group_not_found(group_id))?;
        let mut user = users::find_by_id(&self.db, user_id)
            .await?
            .ok_or_else(|| ScimError::Invalid(format!("User {user_id} does not exist")))?;
        if user.scopes.contains(&group.display_name) {
            return Err(ScimError::AlreadyExists(format!(
                "Member {user_id} already exists in group {group_id}"
            )));
        }
        user.scopes.push(group.display_name);
        self.write_user(&user).await?;
        Ok(ScimMember::user(user_id))
    }

    /// `DELETE /Groups/{id}/members/{userId}`: tokens refreshed from now on lose the scope.
    pub async fn remove_member(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<ScimMember, ScimError> {
        let group = find_group(&self.db, group_id)
            .await?
            .ok_or_else(|| group_not_found(group_id))?;
        let not_member = || {
            ScimError::NotFound(format!(
                "Member {user_id} does not exist in group {group_id}"
            ))
        };
        let mut user = users::find_by_id(&self.db, user_id)
            .await?
            .ok_or_else(not_member)?;
        if !user.scopes.contains(&group.display_name) {
            return Err(not_member());
        }
        user.scopes.retain(|s| s != &group.display_name);
        self.write_user(&user).await?;
        Ok(ScimMember::user(user_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso8601() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn filters_parse_and_match() {
        let attrs = &["username", "origin", "email"];
        let values = |name: &'static str| {
            move |attr: &str| match attr {
                "username" => vec![name.to_string()],
                "origin" => vec!["uaa".to_string()],
                _ => Vec::new(),
            }
        };
        let f = Filter::parse(r#"userName eq "Alice""#, attrs).unwrap();
        assert!(f.matches(values("alice")));
        assert!(!f.matches(values("bob")));
        let f = Filter::parse(
            r#"userName Eq 'bob' and origin eq "uaa" or userName sw "al""#,
            attrs,
        )
        .unwrap();
        assert!(f.matches(values("bob")));
        assert!(f.matches(values("alfred")));
        assert!(!f.matches(values("carol")));
        let f = Filter::parse(r#"userName eq "and or""#, attrs).unwrap();
        assert!(f.matches(values("AND OR")));
        assert!(Filter::parse("email pr", attrs)
            .unwrap()
            .matches(|_| vec!["x".into()]));
        for bad in [
            "",
            "userName",
            r#"userName eq"#,
            r#"userName xx "a""#,
            r#"password eq "a""#,
            r#"userName eq "a" nand"#,
            r#"(userName eq "a")"#,
            r#"userName eq "unterminated"#,
            r#"userName eq "a" and"#,
        ] {
            assert!(
                matches!(Filter::parse(bad, attrs), Err(ScimError::InvalidFilter(_))),
                "{bad}"
            );
        }
    }
}
