//! Session commands: `api`, `auth`, `oauth-token` and `target`.

use serde_json::Value;

use super::{query_value, text};
use crate::wf::client::{Client, ClientError};
use crate::wf::config::Target;
use crate::wf::output::key_values;
use crate::wf::Error;

/// `wf api [URL]`: shows the endpoint, or points `wf` at a new one (logging out).
pub fn api(client: &mut Client, url: Option<String>) -> Result<(), Error> {
    let Some(url) = url else {
        match client.config().api.clone() {
            None => println!("No API endpoint set. Use 'wf api' to set an endpoint."),
            Some(api) => {
                print!("{}", endpoint_info(client, &api));
                if client.config().access_token.is_none() {
                    println!("\nNot logged in. Use 'wf auth' to log in.");
                }
            }
        }
        return Ok(());
    };
    let url = normalize_url(&url);
    println!("Setting API endpoint to {url}...");
    let info = client.discover(&url)?;
    let config = client.config_mut();
    config.api = Some(url.clone());
    config.uaa = info.uaa;
    config.log_cache = info.log_cache;
    config.api_version = info.version;
    config.clear_session();
    client.save_config()?;
    println!("OK\n");
    print!("{}", endpoint_info(client, &url));
    println!("\nNot logged in. Use 'wf auth' to log in.");
    Ok(())
}

/// As the cf CLI: https unless a scheme is given, no trailing slash.
fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("https://{url}")
    }
}

fn endpoint_info(client: &Client, api: &str) -> String {
    let version = client.config().api_version.clone().unwrap_or_default();
    key_values(&[("API endpoint", api.to_string()), ("API version", version)])
}

/// `wf auth USER PASS`: the UAA password grant with the `cf` client.
pub fn auth(client: &mut Client, username: &str, password: &str) -> Result<(), Error> {
    let api = client.api_url()?.to_string();
    println!("API endpoint: {api}");
    println!("Authenticating...");
    let config = client.config_mut();
    config.clear_session();
    client.password_grant(username, password)?;
    println!("OK\n");
    println!("Use 'wf target' to view or set your target org and space.");
    Ok(())
}

/// `wf oauth-token`: refreshes and prints `bearer <token>`.
pub fn oauth_token(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    if client.config().refresh_token.is_some() {
        client.refresh()?;
    }
    let token = client
        .config()
        .access_token
        .clone()
        .ok_or(ClientError::NotLoggedIn)?;
    println!("bearer {token}");
    Ok(())
}

/// `wf target [-o ORG] [-s SPACE]`: targets an org and/or space, then shows the target.
pub fn target(
    client: &mut Client,
    org: Option<String>,
    space: Option<String>,
) -> Result<(), Error> {
    client.require_login()?;
    if let Some(org_name) = &org {
        let org = find_named(client, "/v3/organizations", &[], org_name)?
            .ok_or_else(|| Error::Failed(format!("Organization '{org_name}' not found.")))?;
        let org = as_target(&org);
        let config = client.config_mut();
        config.org = Some(org.clone());
        config.space = None;
        if space.is_none() {
            // As the cf CLI: an org with a single space targets that space too.
            let spaces = client.list(&format!(
                "/v3/spaces?organization_guids={}",
                query_value(&org.guid)
            ))?;
            if let [only] = spaces.as_slice() {
                client.config_mut().space = Some(as_target(only));
            }
        }
        client.save_config()?;
    }
    if let Some(space_name) = &space {
        let org = client.config().org.clone().ok_or_else(|| {
            Error::Failed("An org must be targeted before targeting a space.".into())
        })?;
        let filter = [("organization_guids", org.guid.as_str())];
        let space = find_named(client, "/v3/spaces", &filter, space_name)?
            .ok_or_else(|| Error::Failed(format!("Space '{space_name}' not found.")))?;
        client.config_mut().space = Some(as_target(&space));
        client.save_config()?;
    }
    print!("{}", describe_target(client));
    Ok(())
}

fn as_target(resource: &Value) -> Target {
    Target {
        guid: text(resource, "guid").to_string(),
        name: text(resource, "name").to_string(),
    }
}

/// The resource of `list_path` named `name` (with extra filters), if any.
pub(crate) fn find_named(
    client: &mut Client,
    list_path: &str,
    filters: &[(&str, &str)],
    name: &str,
) -> Result<Option<Value>, Error> {
    let mut path = format!("{list_path}?names={}", query_value(name));
    for (k, v) in filters {
        path.push_str(&format!("&{k}={}", query_value(v)));
    }
    let found = client.list(&path)?;
    Ok(found.into_iter().find(|r| text(r, "name") == name))
}

fn describe_target(client: &Client) -> String {
    let config = client.config();
    let mut pairs = vec![
        ("API endpoint", config.api.clone().unwrap_or_default()),
        (
            "API version",
            config.api_version.clone().unwrap_or_default(),
        ),
        ("user", client.user_name()),
    ];
    match (&config.org, &config.space) {
        (None, _) => {
            let mut out = key_values(&pairs);
            out.push_str("No org or space targeted, use 'wf target -o ORG -s SPACE'\n");
            return out;
        }
        (Some(org), space) => {
            pairs.push(("org", org.name.clone()));
            let space = match space {
                Some(s) => s.name.clone(),
                None => "No space targeted, use 'wf target -s SPACE'".to_string(),
            };
            pairs.push(("space", space));
        }
    }
    key_values(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_default_to_https_without_trailing_slash() {
        assert_eq!(
            normalize_url("http://127.0.0.1:9022/"),
            "http://127.0.0.1:9022"
        );
        assert_eq!(normalize_url("api.example.com"), "https://api.example.com");
    }
}
