//! The `wf` commands, one module per area; each prints cf CLI style progress and
//! results on stdout and returns an [`Error`] for `FAILED`.

pub mod apps;
pub mod bosh;
pub mod buildpacks;
pub mod curl;
pub mod deployments;
pub mod events;
pub mod isolation_segments;
pub mod labels;
pub mod logs;
pub mod marketplace;
pub mod orgs;
pub mod push;
pub mod quotas;
pub mod routes;
pub mod services;
pub mod session;
pub mod tasks;
pub mod users;

use std::io::BufRead as _;

use serde_json::Value;

use super::client::Client;
use super::config::Target;
use super::Error;

/// The targeted org and space, and who is acting in them.
pub(crate) struct SpaceTarget {
    pub org: Target,
    pub space: Target,
    pub user: String,
}

impl SpaceTarget {
    /// `org o / space s as admin`, as in "Getting apps in org o / space s as admin...".
    pub fn describe(&self) -> String {
        format!(
            "org {} / space {} as {}",
            self.org.name, self.space.name, self.user
        )
    }
}

/// The targeted org; fails when not logged in or no org is targeted.
pub(crate) fn org_target(client: &Client) -> Result<Target, Error> {
    client.require_login()?;
    client.config().org.clone().ok_or_else(|| {
        Error::Failed("No org targeted, use 'wf target -o ORG' to target an org.".into())
    })
}

/// The targeted space; fails when not logged in or nothing is targeted.
pub(crate) fn space_target(client: &Client) -> Result<SpaceTarget, Error> {
    let org = org_target(client)?;
    let config = client.config();
    let space = config.space.clone().ok_or_else(|| {
        Error::Failed("No space targeted, use 'wf target -s SPACE' to target a space.".into())
    })?;
    Ok(SpaceTarget {
        org,
        space,
        user: client.user_name(),
    })
}

/// Percent-encodes a query parameter value.
pub(crate) fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A string field of a JSON resource ("" when missing).
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The app `name` in the targeted space, if it exists.
pub(crate) fn find_app(
    client: &mut Client,
    target: &SpaceTarget,
    name: &str,
) -> Result<Option<Value>, Error> {
    let path = format!(
        "/v3/apps?names={}&space_guids={}",
        query_value(name),
        query_value(&target.space.guid)
    );
    let app = client.first(&path)?;
    // Filters are checked again here so a server that ignores one cannot mislead us.
    Ok(app.filter(|a| text(a, "name") == name))
}

/// The app `name` in the targeted space, or `App 'name' not found.`
pub(crate) fn app_by_name(
    client: &mut Client,
    target: &SpaceTarget,
    name: &str,
) -> Result<Value, Error> {
    find_app(client, target, name)?.ok_or_else(|| Error::Failed(format!("App '{name}' not found.")))
}

/// Asks `question` on the terminal; anything but y/yes (or end of input) is a no.
pub(crate) fn confirm(question: &str) -> bool {
    use std::io::Write as _;
    print!("{question} [yN]: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    match std::io::stdin().lock().read_line(&mut answer) {
        Ok(_) => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(query_value("my-app_1.x"), "my-app_1.x");
        assert_eq!(query_value("a b,c&d"), "a%20b%2Cc%26d");
    }
}
