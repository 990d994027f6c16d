//! Admin buildpack commands, with the cf CLI's names, flags and output: `buildpacks`,
//! `create-buildpack`, `update-buildpack` and `delete-buildpack`. A buildpack's bits
//! are a directory (zipped here, in memory, keeping the scripts' modes) or a `.zip`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{confirm, query_value, text};
use crate::wf::client::Client;
use crate::wf::output::table;
use crate::wf::Error;

#[derive(Debug, clap::Subcommand)]
pub enum BuildpackCommand {
    /// List all buildpacks
    Buildpacks,
    /// Create a buildpack and upload its bits
    CreateBuildpack {
        name: String,
        /// A directory or a .zip of the buildpack
        path: PathBuf,
        /// Its position among the buildpacks (1 is tried first)
        position: i64,
        /// Keep the buildpack from being used for staging
        #[arg(long)]
        disable: bool,
    },
    /// Update a buildpack
    UpdateBuildpack {
        name: String,
        #[command(flatten)]
        args: UpdateArgs,
    },
    /// Delete a buildpack
    DeleteBuildpack {
        name: String,
        /// The stack of the buildpack, when several share its name
        #[arg(short = 's')]
        stack: Option<String>,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
}

pub fn run(c: &mut Client, command: BuildpackCommand) -> Result<(), Error> {
    match command {
        BuildpackCommand::Buildpacks => list(c),
        BuildpackCommand::CreateBuildpack {
            name,
            path,
            position,
            disable,
        } => create(c, &name, &path, position, disable),
        BuildpackCommand::UpdateBuildpack { name, args } => update(c, &name, &args),
        BuildpackCommand::DeleteBuildpack { name, stack, force } => {
            delete(c, &name, stack.as_deref(), force)
        }
    }
}

/// What `update-buildpack` may change.
#[derive(Debug, Default, clap::Args)]
pub struct UpdateArgs {
    /// The stack of the buildpack, when several share its name
    #[arg(short = 's')]
    pub stack: Option<String>,
    /// The buildpack's new position among all buildpacks (1 is tried first)
    #[arg(short = 'i')]
    pub position: Option<i64>,
    /// Allow the buildpack to be used for staging
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Keep the buildpack from being used for staging
    #[arg(long)]
    pub disable: bool,
    /// Keep the buildpack from being updated
    #[arg(long, conflicts_with = "unlock")]
    pub lock: bool,
    /// Allow the buildpack to be updated again
    #[arg(long)]
    pub unlock: bool,
    /// New bits: a directory or a .zip of the buildpack
    #[arg(short = 'p')]
    pub path: Option<std::path::PathBuf>,
    /// New name
    #[arg(long)]
    pub rename: Option<String>,
}

fn bool_text(v: &Value) -> String {
    v.as_bool().unwrap_or_default().to_string()
}

pub fn list(client: &mut Client) -> Result<(), Error> {
    client.require_login()?;
    println!("Getting buildpacks as {}...\n", client.user_name());
    let buildpacks = client.list("/v3/buildpacks?order_by=position")?;
    if buildpacks.is_empty() {
        println!("No buildpacks found.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = buildpacks
        .iter()
        .map(|b| {
            vec![
                b["position"].as_i64().unwrap_or_default().to_string(),
                text(b, "name").to_string(),
                text(b, "stack").to_string(),
                bool_text(&b["enabled"]),
                bool_text(&b["locked"]),
                text(b, "filename").to_string(),
            ]
        })
        .collect();
    let headers = ["position", "name", "stack", "enabled", "locked", "filename"];
    print!("{}", table(&headers, &rows));
    Ok(())
}

/// The zip of the buildpack at `path`, and the file name it is uploaded as.
fn bits(path: &Path) -> Result<(Vec<u8>, String), Error> {
    let zip = crate::wf::package::package(path)?;
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "buildpack".into());
    let filename = if stem.to_ascii_lowercase().ends_with(".zip") {
        stem
    } else {
        format!("{stem}.zip")
    };
    Ok((zip, filename))
}

fn upload(client: &mut Client, buildpack: &Value, path: &Path) -> Result<(), Error> {
    let (zip, filename) = bits(path)?;
    println!(
        "Uploading buildpack {} as {}...",
        text(buildpack, "name"),
        client.user_name()
    );
    client.upload_buildpack(text(buildpack, "guid"), &filename, zip)?;
    println!("Done uploading");
    Ok(())
}

pub fn create(
    client: &mut Client,
    name: &str,
    path: &Path,
    position: i64,
    disable: bool,
) -> Result<(), Error> {
    client.require_login()?;
    // Zip first, so that a bad path leaves no buildpack without bits behind.
    bits(path)?;
    println!("Creating buildpack {name} as {}...", client.user_name());
    let body = json!({"name": name, "position": position, "enabled": !disable});
    let buildpack = client.post("/v3/buildpacks", &body)?;
    println!("OK\n");
    upload(client, &buildpack, path)?;
    println!("OK");
    Ok(())
}

/// The buildpack `name` (on `stack`, when given); cf's errors when there is none, or
/// several to choose from.
fn buildpack_named(
    client: &mut Client,
    name: &str,
    stack: Option<&str>,
) -> Result<Option<Value>, Error> {
    let mut path = format!("/v3/buildpacks?names={}", query_value(name));
    if let Some(stack) = stack {
        path.push_str(&format!("&stacks={}", query_value(stack)));
    }
    let mut found: Vec<Value> = client
        .list(&path)?
        .into_iter()
        .filter(|b| text(b, "name") == name)
        .collect();
    if found.len() > 1 {
        return Err(Error::Failed(format!(
            "Multiple buildpacks named {name} found. Specify a stack name by using a '-s' flag."
        )));
    }
    Ok(found.pop())
}

fn not_found(name: &str, stack: Option<&str>) -> String {
    match stack {
        Some(stack) => format!("Buildpack '{name}' with stack '{stack}' not found."),
        None => format!("Buildpack '{name}' not found."),
    }
}

/// The body of an update: only what the flags change.
fn update_body(args: &UpdateArgs) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(position) = args.position {
        body.insert("position".into(), json!(position));
    }
    if args.enable || args.disable {
        body.insert("enabled".into(), json!(args.enable));
    }
    if args.lock || args.unlock {
        body.insert("locked".into(), json!(args.lock));
    }
    if let Some(name) = &args.rename {
        body.insert("name".into(), json!(name));
    }
    body
}

pub fn update(client: &mut Client, name: &str, args: &UpdateArgs) -> Result<(), Error> {
    client.require_login()?;
    let stack = args.stack.as_deref();
    println!("Updating buildpack {name} as {}...", client.user_name());
    let buildpack = buildpack_named(client, name, stack)?
        .ok_or_else(|| Error::Failed(not_found(name, stack)))?;
    let body = update_body(args);
    // New bits go up before a lock takes effect, and after an unlock.
    let bits_first = args.lock;
    if let Some(bits) = args.path.as_deref().filter(|_| bits_first) {
        upload(client, &buildpack, bits)?;
    }
    if !body.is_empty() {
        let path = format!("/v3/buildpacks/{}", text(&buildpack, "guid"));
        client.patch(&path, &Value::Object(body))?;
    }
    if let Some(bits) = args.path.as_deref().filter(|_| !bits_first) {
        upload(client, &buildpack, bits)?;
    }
    println!("OK");
    Ok(())
}

pub fn delete(
    client: &mut Client,
    name: &str,
    stack: Option<&str>,
    force: bool,
) -> Result<(), Error> {
    client.require_login()?;
    if !force && !confirm(&format!("Really delete the buildpack {name}?")) {
        println!("'{name}' has not been deleted.");
        return Ok(());
    }
    println!("Deleting buildpack {name} as {}...", client.user_name());
    match buildpack_named(client, name, stack)? {
        Some(buildpack) => {
            client.delete(&format!("/v3/buildpacks/{}", text(&buildpack, "guid")))?
        }
        None => println!("Buildpack '{name}' does not exist."),
    }
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_send_only_what_the_flags_change() {
        assert!(update_body(&UpdateArgs::default()).is_empty());
        let args = UpdateArgs {
            position: Some(3),
            disable: true,
            unlock: true,
            ..Default::default()
        };
        assert_eq!(
            Value::Object(update_body(&args)),
            json!({"position": 3, "enabled": false, "locked": false})
        );
        let args = UpdateArgs {
            enable: true,
            lock: true,
            rename: Some("new".into()),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(update_body(&args)),
            json!({"enabled": true, "locked": true, "name": "new"})
        );
    }

    #[test]
    fn directories_upload_as_zips_named_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("my_bp");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/detect"), "#!/bin/sh\n").unwrap();
        let (zip, filename) = bits(&root).unwrap();
        assert_eq!(filename, "my_bp.zip");
        let archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        assert_eq!(archive.file_names().collect::<Vec<_>>(), ["bin/detect"]);
        let file = dir.path().join("bp.zip");
        std::fs::write(&file, b"PK").unwrap();
        assert_eq!(bits(&file).unwrap().1, "bp.zip");
    }
}
