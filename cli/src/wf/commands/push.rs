//! `wf push`: as `cf push` (v7+) does, turns the manifest (`-f FILE`, else
//! `manifest.yml` in the current directory) and the flags into one app's manifest and
//! applies it (`apply_manifest`: the app, its environment, processes and routes), then
//! uploads the bits, stages them (tracing the staging logs), sets the droplet, starts
//! the app and waits for a running instance (`--droplet FILE`: the droplet is
//! uploaded and run instead of staging the files). Without a name, every app of the
//! manifest is pushed in turn. `wf restage`, `wf copy-source` and `wf download-droplet`
//! live here too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use wf_controller::manifest::{self, AppManifest, Manifest, RouteManifest};

use super::apps::{summary, wait_until_running};
use super::deployments;
use super::logs::{payload_lines, LogTail};
use super::{find_app, space_target, text, SpaceTarget};
use crate::wf::client::{Client, ClientError, Poll};
use crate::wf::{package, Error, PushArgs};

/// How long the API may take to process uploaded bits.
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long staging may take.
const STAGING_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The manifest file names looked for when `-f` is not given.
const MANIFEST_NAMES: &[&str] = &["manifest.yml", "manifest.yaml"];

pub fn push(client: &mut Client, args: PushArgs) -> Result<(), Error> {
    let target = space_target(client)?;
    if client
        .get_optional(&format!("/v3/spaces/{}", target.space.guid))?
        .is_none()
    {
        return Err(Error::Failed(format!(
            "Space '{}' not found: it may have been deleted. Use 'wf target -s SPACE' to target another space.",
            target.space.name
        )));
    }
    for (app, path) in plan(&args)? {
        push_app(client, &target, &args, app, &path)?;
    }
    Ok(())
}

/// The apps to push with the folder of each: the manifest's (all of them, or the named
/// one) with the flags applied, or just the named app.
fn plan(args: &PushArgs) -> Result<Vec<(AppManifest, PathBuf)>, Error> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Failed(format!("Cannot read the current directory: {e}")))?;
    let manifest_path = match (&args.manifest, args.no_manifest) {
        (Some(_), true) => {
            return Err(Error::Failed(
                "Incorrect Usage: '-f' and '--no-manifest' cannot be used together.".into(),
            ))
        }
        (Some(path), false) if path.is_dir() => Some(find_manifest(path).ok_or_else(|| {
            Error::Failed(format!("No manifest.yml found in {}", path.display()))
        })?),
        (Some(path), false) => Some(path.clone()),
        (None, false) => find_manifest(&cwd),
        (None, true) => None,
    };
    let (apps, base) = match &manifest_path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Failed(format!("Cannot read the manifest {}: {e}", path.display()))
            })?;
            let manifest: Manifest = manifest::parse(&text).map_err(|e| {
                Error::Failed(format!("The manifest {} is invalid: {e}", path.display()))
            })?;
            let base = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| cwd.clone());
            (manifest.applications, base)
        }
        None => (Vec::new(), cwd.clone()),
    };
    let mut selected: Vec<AppManifest> = match (&args.name, apps.is_empty()) {
        (Some(name), true) => vec![AppManifest {
            name: name.clone(),
            ..AppManifest::default()
        }],
        (Some(name), false) => vec![apps
            .into_iter()
            .find(|a| a.name == *name)
            .ok_or_else(|| Error::Failed(format!("Could not find app named '{name}' in manifest")))?],
        (None, false) => apps,
        (None, true) => {
            return Err(Error::Failed(
                "Incorrect Usage: the required argument `APP_NAME` was not provided (or use a manifest)".into(),
            ))
        }
    };
    let flags = args.instances.is_some()
        || args.memory.is_some()
        || !args.buildpacks.is_empty()
        || args.hostname.is_some()
        || args.random_route
        || args.no_route
        || args.path.is_some()
        || args.droplet.is_some();
    if flags && selected.len() > 1 {
        return Err(Error::Failed(
            "Incorrect Usage: flags cannot be used with a manifest of several apps; name the app to push.".into(),
        ));
    }
    let mut planned = Vec::new();
    for mut app in selected.drain(..) {
        apply_flags(&mut app, args)?;
        let path = match (&args.path, &app.path) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => base.join(p),
            (None, None) => cwd.clone(),
        };
        app.path = None;
        planned.push((app, path));
    }
    Ok(planned)
}

fn find_manifest(dir: &Path) -> Option<PathBuf> {
    MANIFEST_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The command line wins over the manifest; an app with no route configured gets its
/// default route.
fn apply_flags(app: &mut AppManifest, args: &PushArgs) -> Result<(), Error> {
    if let Some(n) = args.instances {
        app.web.instances = Some(i64::from(n));
    }
    if let Some(memory) = &args.memory {
        manifest::megabytes(memory).map_err(Error::Failed)?;
        app.web.memory = Some(memory.clone());
    }
    if !args.buildpacks.is_empty() {
        app.buildpacks = Some(args.buildpacks.clone());
    }
    if let Some(kind) = &args.health_check_type {
        app.web.health_check_type = Some(kind.clone());
    }
    if args.no_route {
        app.no_route = Some(true);
        app.routes = None;
        app.random_route = None;
    }
    if args.random_route {
        app.random_route = Some(true);
        app.routes = None;
    }
    if let Some(host) = &args.hostname {
        // A host on the default domain: the API picks the domain for a bare host.
        app.routes = Some(vec![RouteManifest {
            route: format!("{host}.{{default}}"),
        }]);
    }
    let routed = app.routes.as_ref().is_some_and(|r| !r.is_empty())
        || app.no_route == Some(true)
        || app.random_route == Some(true);
    if !routed {
        app.default_route = Some(true);
    }
    Ok(())
}

fn push_app(
    client: &mut Client,
    target: &SpaceTarget,
    args: &PushArgs,
    mut app: AppManifest,
    path: &Path,
) -> Result<(), Error> {
    let name = app.name.clone();
    println!("Pushing app {name} to {}...", target.describe());
    let bits = match &args.droplet {
        Some(droplet) => Bits::Droplet(std::fs::read(droplet).map_err(|e| {
            Error::Failed(format!(
                "Cannot read the droplet {}: {e}",
                droplet.display()
            ))
        })?),
        None => {
            println!("Packaging files to upload...");
            Bits::Package(package::read(path)?)
        }
    };
    resolve_default_domain(client, &mut app)?;

    let was_started = find_app(client, target, &name)?
        .as_ref()
        .is_some_and(|a| text(a, "state") == "STARTED");
    println!("Applying manifest to app {name}...");
    apply_manifest(client, target, &app)?;
    let guid = find_app(client, target, &name)?
        .map(|a| text(&a, "guid").to_string())
        .filter(|g| !g.is_empty())
        .ok_or_else(|| Error::Failed(format!("App '{name}' was not created.")))?;

    let droplet_guid = match bits {
        Bits::Package(files) => {
            let package = client.post(
                "/v3/packages",
                &json!({"type": "bits", "relationships": {"app": {"data": {"guid": guid}}}}),
            )?;
            let package_guid = text(&package, "guid").to_string();
            let cached = cached_files(client, &files)?;
            let skip: Vec<String> = cached.iter().map(|r| text(r, "path").to_string()).collect();
            let zip = files.zip(&skip)?;
            println!("Uploading files ({} bytes)...", zip.len());
            client.upload_bits(&package_guid, zip, &cached)?;
            println!("Waiting for API to complete processing files...");
            wait_for_package(client, &package_guid)?;
            println!("\nStaging app and tracing logs...");
            stage(client, &guid, &package_guid)?
        }
        Bits::Droplet(tgz) => {
            println!("Uploading droplet bits...");
            let droplet = client.post(
                "/v3/droplets",
                &json!({"relationships": {"app": {"data": {"guid": guid}}}}),
            )?;
            let droplet_guid = text(&droplet, "guid").to_string();
            client.upload_droplet(&droplet_guid, tgz)?;
            droplet_guid
        }
    };
    if let Some(strategy) = args.strategy.as_deref().filter(|_| !args.no_start) {
        let mut request = json!({"droplet": {"guid": droplet_guid}, "strategy": strategy});
        if let Some(max_in_flight) = args.max_in_flight {
            request["options"] = json!({"max_in_flight": max_in_flight});
        }
        deployments::deploy(client, &guid, &name, request)?;
        let app = client.get(&format!("/v3/apps/{guid}"))?;
        print!("{}", summary(client, &app)?);
        return Ok(());
    }
    client.patch(
        &format!("/v3/apps/{guid}/relationships/current_droplet"),
        &json!({"data": {"guid": droplet_guid}}),
    )?;

    if !args.no_start {
        if was_started {
            println!("Stopping app {name}...");
            client.post(&format!("/v3/apps/{guid}/actions/stop"), &json!({}))?;
        }
        client.post(&format!("/v3/apps/{guid}/actions/start"), &json!({}))?;
        println!("\nWaiting for app {name} to start...\n");
        wait_until_running(client, &guid, &name)?;
    }
    let app = client.get(&format!("/v3/apps/{guid}"))?;
    print!("{}", summary(client, &app)?);
    Ok(())
}

/// `wf restage`: stages the app's newest package again (with its buildpack cache), sets
/// the new droplet, and restarts the app if it was started, as `cf restage` does.
pub fn restage(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = super::app_by_name(client, &target, name)?;
    let guid = text(&app, "guid").to_string();
    println!("Restaging app {name} in {}...", target.describe());
    let package_guid = newest_package(client, &app, name)?;
    println!("\nStaging app and tracing logs...");
    let droplet_guid = stage(client, &guid, &package_guid)?;
    let restart = text(&app, "state") == "STARTED";
    run_droplet(client, &guid, name, &droplet_guid, restart)
}

/// Makes `droplet_guid` the app's current droplet; restarts the app when `restart`; prints
/// its summary.
fn run_droplet(
    client: &mut Client,
    guid: &str,
    name: &str,
    droplet_guid: &str,
    restart: bool,
) -> Result<(), Error> {
    client.patch(
        &format!("/v3/apps/{guid}/relationships/current_droplet"),
        &json!({"data": {"guid": droplet_guid}}),
    )?;
    if restart {
        println!("Stopping app {name}...");
        client.post(&format!("/v3/apps/{guid}/actions/stop"), &json!({}))?;
        client.post(&format!("/v3/apps/{guid}/actions/start"), &json!({}))?;
        println!("\nWaiting for app {name} to start...\n");
        wait_until_running(client, guid, name)?;
    }
    let app = client.get(&format!("/v3/apps/{guid}"))?;
    print!("{}", summary(client, &app)?);
    Ok(())
}

/// `wf copy-source`: the source app's newest package copied to the destination app,
/// staged there, made current, and the app restarted (started) unless `restart` is
/// false, as `cf copy-source` does.
pub fn copy_source(
    client: &mut Client,
    source: &str,
    destination: &str,
    restart: bool,
) -> Result<(), Error> {
    let target = space_target(client)?;
    let source_app = super::app_by_name(client, &target, source)?;
    let dest_app = super::app_by_name(client, &target, destination)?;
    let dest_guid = text(&dest_app, "guid").to_string();
    let package_guid = newest_package(client, &source_app, source)?;
    println!(
        "Copying source from app {source} to target app {destination} in {}...",
        target.describe()
    );
    let copy = client.post(
        &format!("/v3/packages?source_guid={package_guid}"),
        &json!({"relationships": {"app": {"data": {"guid": dest_guid}}}}),
    )?;
    wait_for_package(client, text(&copy, "guid"))?;
    println!("\nStaging app {destination} and tracing logs...");
    let droplet_guid = stage(client, &dest_guid, text(&copy, "guid"))?;
    run_droplet(client, &dest_guid, destination, &droplet_guid, restart)
}

/// The guid of the app's newest READY package.
fn newest_package(
    client: &mut Client,
    app: &serde_json::Value,
    name: &str,
) -> Result<String, Error> {
    let packages = client.get(&format!(
        "/v3/apps/{}/packages?states=READY&order_by=-created_at&per_page=1",
        text(app, "guid")
    ))?;
    packages["resources"][0]["guid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Failed(format!(
                "App '{name}' has no uploaded package to stage; push it first."
            ))
        })
}

/// `wf download-droplet`: saves the app's current droplet (or `droplet`) to `path`,
/// by default `droplet_<guid>.tgz` here.
pub fn download_droplet(
    client: &mut Client,
    name: &str,
    droplet: Option<&str>,
    path: Option<PathBuf>,
) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = super::app_by_name(client, &target, name)?;
    let guid = match droplet {
        Some(guid) => guid.to_string(),
        None => {
            let current = client
                .get_optional(&format!("/v3/apps/{}/droplets/current", text(&app, "guid")))?
                .ok_or_else(|| Error::Failed(format!("App '{name}' has no current droplet.")))?;
            text(&current, "guid").to_string()
        }
    };
    let path = path.unwrap_or_else(|| PathBuf::from(format!("droplet_{guid}.tgz")));
    println!(
        "Downloading droplet {guid} of app {name} to {}...",
        path.display()
    );
    let bits = client.download(&format!("/v3/droplets/{guid}/download"))?;
    std::fs::write(&path, &bits)
        .map_err(|e| Error::Failed(format!("Cannot write {}: {e}", path.display())))?;
    println!("Droplet saved: {} bytes.", bits.len());
    Ok(())
}

/// What `wf push` sends: the app's files to stage, or a droplet to run as it is.
enum Bits {
    Package(package::AppBits),
    Droplet(Vec<u8>),
}

/// The app's files the platform's resource cache already holds (`resource_matches`),
/// which the upload names instead of sending.
fn cached_files(
    client: &mut Client,
    files: &package::AppBits,
) -> Result<Vec<serde_json::Value>, Error> {
    let fingerprints = files.fingerprints();
    if fingerprints.is_empty() {
        return Ok(Vec::new());
    }
    let matched = client.post("/v3/resource_matches", &json!({"resources": fingerprints}))?;
    let cached: Vec<serde_json::Value> =
        matched["resources"].as_array().cloned().unwrap_or_default();
    if !cached.is_empty() {
        let bytes: u64 = cached
            .iter()
            .filter_map(|r| r["size_in_bytes"].as_u64())
            .sum();
        println!(
            "{} of the app's files ({bytes} bytes) are already on the platform.",
            cached.len()
        );
    }
    Ok(cached)
}

/// Puts the first shared domain where `-n HOST` left `{default}`.
fn resolve_default_domain(client: &mut Client, app: &mut AppManifest) -> Result<(), Error> {
    let Some(routes) = app.routes.as_mut() else {
        return Ok(());
    };
    if !routes.iter().any(|r| r.route.ends_with(".{default}")) {
        return Ok(());
    }
    let domains = client.list("/v3/domains")?;
    let domain = domains
        .iter()
        .find(|d| manifest::is_shared_domain(d))
        .map(|d| text(d, "name").to_string())
        .ok_or_else(|| Error::Failed("No shared domain found for the app's route.".into()))?;
    for route in routes.iter_mut() {
        if let Some(host) = route.route.strip_suffix(".{default}") {
            route.route = format!("{host}.{domain}");
        }
    }
    Ok(())
}

/// `apply_manifest` with a manifest of `app` alone; waits for its job.
fn apply_manifest(
    client: &mut Client,
    target: &SpaceTarget,
    app: &AppManifest,
) -> Result<(), Error> {
    let manifest = Manifest {
        version: Some(1),
        applications: vec![app.clone()],
    };
    let yaml = serde_yaml::to_string(&manifest)
        .map_err(|e| Error::Failed(format!("Cannot write the manifest: {e}")))?;
    let response = client.raw(
        reqwest::Method::POST,
        &format!("/v3/spaces/{}/actions/apply_manifest", target.space.guid),
        &[("Content-Type".to_string(), "application/x-yaml".to_string())],
        Some(yaml),
    )?;
    if response.status != 202 {
        return Err(
            ClientError::from(crate::wf::client::ApiError::from_response(
                response.status,
                &response.body,
            ))
            .into(),
        );
    }
    let job = response
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Failed("apply_manifest answered without a job".into()))?
        .to_string();
    client.wait_for_job(&job)?;
    Ok(())
}

fn wait_for_package(client: &mut Client, package_guid: &str) -> Result<(), Error> {
    let deadline = Instant::now() + PACKAGE_TIMEOUT;
    let mut poll = Poll::new();
    loop {
        let package = client.get(&format!("/v3/packages/{package_guid}"))?;
        match text(&package, "state") {
            "READY" => return Ok(()),
            "FAILED" | "EXPIRED" => {
                return Err(Error::Failed(format!(
                    "The package of the app is {}.",
                    text(&package, "state")
                )))
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout {
                what: "the API to process the uploaded files".into(),
                seconds: PACKAGE_TIMEOUT.as_secs(),
            }
            .into());
        }
        poll.wait();
    }
}

/// Creates a build of the package and waits for it, printing the staging logs; returns
/// the droplet guid.
fn stage(client: &mut Client, app_guid: &str, package_guid: &str) -> Result<String, Error> {
    let mut tail = LogTail::new(app_guid, wf_loggregator::envelope::now_ns());
    let build = client.post("/v3/builds", &json!({"package": {"guid": package_guid}}))?;
    let build_guid = text(&build, "guid").to_string();
    let deadline = Instant::now() + STAGING_TIMEOUT;
    let mut poll = Poll::new();
    loop {
        print_staging_logs(client, &mut tail);
        let build = client.get(&format!("/v3/builds/{build_guid}"))?;
        match text(&build, "state") {
            "STAGED" => {
                print_staging_logs(client, &mut tail);
                let droplet = build["droplet"]["guid"].as_str().unwrap_or_default();
                if droplet.is_empty() {
                    return Err(Error::Failed(
                        "The build is STAGED but has no droplet.".into(),
                    ));
                }
                return Ok(droplet.to_string());
            }
            "FAILED" => {
                print_staging_logs(client, &mut tail);
                let error = match text(&build, "error") {
                    "" => "StagingError - Staging failed".to_string(),
                    e => e.to_string(),
                };
                return Err(Error::Failed(error));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout {
                what: "staging".into(),
                seconds: STAGING_TIMEOUT.as_secs(),
            }
            .into());
        }
        poll.wait();
    }
}

/// Prints the new STG lines; the logs are a courtesy, so reading them may fail quietly.
fn print_staging_logs(client: &mut Client, tail: &mut LogTail) {
    let Ok(envelopes) = tail.poll(client) else {
        return;
    };
    for e in envelopes.iter().filter(|e| e.source_type() == Some("STG")) {
        for line in payload_lines(e) {
            println!("   {line}");
        }
    }
}
