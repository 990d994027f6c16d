//! Session commands: `api`, `login`, `auth`, `logout`, `oauth-token` and `target`.

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
    set_api(client, &url)?;
    println!("OK\n");
    print!("{}", endpoint_info(client, &url));
    println!("\nNot logged in. Use 'wf auth' to log in.");
    Ok(())
}

/// Points the config at the API endpoint `url` (its UAA and Log Cache too), logged out.
fn set_api(client: &mut Client, url: &str) -> Result<(), Error> {
    let info = client.discover(url)?;
    let config = client.config_mut();
    config.api = Some(url.to_string());
    config.uaa = info.uaa;
    config.log_cache = info.log_cache;
    config.api_version = info.version;
    config.clear_session();
    client.save_config()?;
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

/// `wf auth USER PASS` (the UAA password grant with the `cf` client), or
/// `wf auth CLIENT SECRET --client-credentials`.
pub fn auth(
    client: &mut Client,
    username: &str,
    password: &str,
    client_credentials: bool,
) -> Result<(), Error> {
    let api = client.api_url()?.to_string();
    println!("API endpoint: {api}");
    println!("Authenticating...");
    client.config_mut().clear_session();
    if client_credentials {
        client.client_credentials_grant(username, password)?;
    } else {
        client.password_grant(username, password)?;
    }
    println!("OK\n");
    println!("Use 'wf target' to view or set your target org and space.");
    Ok(())
}

/// What `wf login` was given on its command line.
#[derive(Debug, Default)]
pub struct LoginArgs {
    pub api: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub org: Option<String>,
    pub space: Option<String>,
}

/// `wf login [-a API] [-u USER] [-p PASS] [-o ORG] [-s SPACE]`: asks for what is not
/// given (the password without echo, three tries as the cf CLI), logs in, then
/// targets the org and space given, or the only ones there are.
pub fn login(client: &mut Client, args: LoginArgs) -> Result<(), Error> {
    let api = match args.api {
        Some(api) => {
            let api = normalize_url(&api);
            set_api(client, &api)?;
            api
        }
        None => client.api_url()?.to_string(),
    };
    println!("API endpoint: {api}\n");
    let username = match args.username {
        Some(u) => u,
        None => prompt("Email", false)?,
    };
    let mut password = args.password;
    let mut attempts = 0;
    loop {
        let pass = match password.take() {
            Some(p) => p,
            None => prompt("Password", true)?,
        };
        println!("Authenticating...");
        client.config_mut().clear_session();
        match client.password_grant(&username, &pass) {
            Ok(()) => break,
            Err(ClientError::BadCredentials) if attempts < 2 => {
                attempts += 1;
                println!("Credentials were rejected, please try again.");
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("OK\n");
    let org = match args.org {
        Some(org) => Some(org),
        None => {
            let orgs = client.list("/v3/organizations")?;
            match orgs.as_slice() {
                [only] => Some(text(only, "name").to_string()),
                _ => None,
            }
        }
    };
    target(client, org, args.space)
}

/// Reads one line from the terminal after `label: `; without echo for secrets.
pub(crate) fn prompt(label: &str, secret: bool) -> Result<String, Error> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    print!("{label}: ");
    let _ = std::io::stdout().flush();
    let stdin = std::io::stdin();
    let echo_off = secret && stdin.is_terminal();
    let saved = if echo_off { terminal::echo_off() } else { None };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        terminal::restore(saved);
        println!();
    }
    match read {
        Ok(0) | Err(_) => Err(Error::Failed(format!("No {} given.", label.to_lowercase()))),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
    }
}

/// Terminal echo, through termios on standard input.
mod terminal {
    /// Turns echo off; the previous settings, to restore.
    pub fn echo_off() -> Option<libc::termios> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios the call fills in.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return None;
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(0, libc::TCSANOW, &term) == 0).then_some(saved)
        }
    }

    pub fn restore(saved: libc::termios) {
        // SAFETY: as above, with settings tcgetattr returned.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &saved);
        }
    }
}

/// `wf logout`: forgets the tokens and the target.
pub fn logout(client: &mut Client) -> Result<(), Error> {
    if client.config().access_token.is_some() {
        println!("Logging out {}...", client.user_name());
    } else {
        println!("Logging out...");
    }
    client.config_mut().clear_session();
    client.save_config()?;
    println!("OK");
    Ok(())
}

/// `wf oauth-token`: refreshes and prints `bearer <token>`.
pub fn oauth_token(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    if client.can_renew() {
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
