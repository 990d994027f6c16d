//! Releases: a versioned tarball of jobs and packages, laid out as BOSH's (`release.MF`,
//! `jobs/<job>.tgz` holding `job.MF` and `templates/`, `packages/<package>.tgz`). A job's
//! spec names its templates, its properties with their defaults, and the process it
//! runs (`command`, a template too, e.g. `wfd router --listen <%= spec.address %>:<%=
//! p("router.port") %>`); the one package is the `wfd` binary. Templates are rendered
//! with ERB's `<%= p("name") %>` and `<%= spec.address %>` forms (the subset `wfd` jobs
//! need) from the merged properties and the instance's `spec` values.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::Digest as _;

use crate::agent::{Drain, JobSpec};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("job '{job}', {template}: {message}")]
    Render {
        job: String,
        template: String,
        message: String,
    },
}

fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> ReleaseError {
    let path = path.as_ref().display().to_string();
    move |source| ReleaseError::Io { path, source }
}

fn invalid(path: impl Into<String>, message: impl ToString) -> ReleaseError {
    ReleaseError::Invalid {
        path: path.into(),
        message: message.to_string(),
    }
}

/// A job's `spec` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpecFile {
    pub name: String,
    /// Template source (under `templates/`) -> where it is rendered in the job's dir.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyDef>,
    /// The process the job runs: a template, split on whitespace after rendering.
    pub command: String,
    /// The process's environment: name -> template (secrets go here rather than on
    /// the command line, which `ps` shows).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub drain: Option<DrainTemplate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PropertyDef {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub default: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainTemplate {
    /// A URL template, POSTed to start draining.
    pub post: String,
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A job of an uploaded release: its spec and its templates' sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseJob {
    pub spec: JobSpecFile,
    pub templates: BTreeMap<String, String>,
}

/// `release.MF`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    pub name: String,
    pub version: String,
    pub jobs: Vec<Entry>,
    pub packages: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub version: String,
    pub fingerprint: String,
    pub sha1: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
}

/// An unpacked release: its manifest, jobs, and each package's blob (a gzipped tarball).
pub struct Release {
    pub manifest: ReleaseManifest,
    pub jobs: Vec<ReleaseJob>,
    pub packages: Vec<(Entry, Vec<u8>)>,
}

/// The `spec` values a template sees, as BOSH's `spec.address`, `spec.index`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecValues {
    pub deployment: String,
    /// The instance group.
    pub name: String,
    pub index: u32,
    pub id: String,
    pub az: String,
    pub address: String,
    pub ip: String,
    pub bootstrap: bool,
}

/// Builds `<out_dir>/<name>-<version>.tgz` from a release directory (`jobs/<job>/spec`,
/// `jobs/<job>/templates/...`, and `config/final.yml` with the name unless `name` is
/// given), with the `wfd` binary at `wfd` as the `wfd` package.
pub fn create_release(
    dir: &Path,
    name: Option<&str>,
    version: &str,
    wfd: &Path,
    out_dir: &Path,
) -> Result<PathBuf, ReleaseError> {
    let name = match name {
        Some(name) => name.to_string(),
        None => {
            let path = dir.join("config/final.yml");
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let config: Value =
                serde_yaml::from_str(&text).map_err(|e| invalid(path.display().to_string(), e))?;
            config["name"]
                .as_str()
                .ok_or_else(|| invalid(path.display().to_string(), "no name"))?
                .to_string()
        }
    };
    let jobs_dir = dir.join("jobs");
    let mut job_names: Vec<String> = std::fs::read_dir(&jobs_dir)
        .map_err(io(&jobs_dir))?
        .flatten()
        .filter(|e| e.path().join("spec").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    job_names.sort();
    if job_names.is_empty() {
        return Err(invalid(
            jobs_dir.display().to_string(),
            "no jobs (jobs/<name>/spec)",
        ));
    }
    let mut jobs = Vec::new();
    let mut job_entries = Vec::new();
    for job in &job_names {
        let job_dir = jobs_dir.join(job);
        let spec_path = job_dir.join("spec");
        let spec_text = std::fs::read_to_string(&spec_path).map_err(io(&spec_path))?;
        let spec: JobSpecFile = serde_yaml::from_str(&spec_text)
            .map_err(|e| invalid(spec_path.display().to_string(), e))?;
        let mut files = vec![("job.MF".to_string(), spec_text.into_bytes())];
        for source in spec.templates.keys() {
            let path = job_dir.join("templates").join(source);
            let content = std::fs::read(&path).map_err(io(&path))?;
            files.push((format!("templates/{source}"), content));
        }
        let tgz = tgz(&files, flate2::Compression::default()).map_err(io(&job_dir))?;
        job_entries.push(entry(job, &tgz));
        jobs.push((format!("jobs/{job}.tgz"), tgz));
    }
    let binary = std::fs::read(wfd).map_err(io(wfd))?;
    let package = tgz(&[("wfd".into(), binary)], flate2::Compression::fast()).map_err(io(wfd))?;
    let manifest = ReleaseManifest {
        name: name.clone(),
        version: version.to_string(),
        jobs: job_entries,
        packages: vec![entry("wfd", &package)],
    };
    let mut files = vec![(
        "release.MF".to_string(),
        serde_yaml::to_string(&manifest).expect("YAML").into_bytes(),
    )];
    files.extend(jobs);
    files.push(("packages/wfd.tgz".into(), package));
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let out = out_dir.join(format!("{name}-{version}.tgz"));
    // Inner tarballs are compressed already.
    let bytes = tgz(&files, flate2::Compression::none()).map_err(io(&out))?;
    std::fs::write(&out, bytes).map_err(io(&out))?;
    Ok(out)
}

fn entry(name: &str, blob: &[u8]) -> Entry {
    let sha1 = hex::encode(sha1::Sha1::digest(blob));
    Entry {
        name: name.to_string(),
        version: sha1.clone(),
        fingerprint: sha1.clone(),
        sha1,
        dependencies: vec![],
    }
}

/// A gzipped tarball of `(path, content)` files (executable, for binaries' sake).
fn tgz(files: &[(String, Vec<u8>)], level: flate2::Compression) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), level));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, path, &content[..])?;
    }
    builder.into_inner()?.finish()
}

/// The files of a gzipped tarball.
fn untgz(bytes: &[u8], what: &str) -> Result<BTreeMap<String, Vec<u8>>, ReleaseError> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let bad = |e: std::io::Error| invalid(what, format!("not a gzipped tarball: {e}"));
    for file in archive.entries().map_err(bad)? {
        let mut file = file.map_err(bad)?;
        if !file.header().entry_type().is_file() {
            continue;
        }
        let path = file
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut content = Vec::new();
        file.read_to_end(&mut content).map_err(bad)?;
        files.insert(path, content);
    }
    Ok(files)
}

/// Reads a release tarball, checking each job's and package's sha1.
pub fn read_release(bytes: &[u8]) -> Result<Release, ReleaseError> {
    let mut files = untgz(bytes, "release")?;
    let manifest_text = files
        .remove("release.MF")
        .ok_or_else(|| invalid("release", "no release.MF"))?;
    let manifest: ReleaseManifest =
        serde_yaml::from_slice(&manifest_text).map_err(|e| invalid("release.MF", e))?;
    let mut blob = |kind: &str, entry: &Entry| -> Result<Vec<u8>, ReleaseError> {
        let path = format!("{kind}/{}.tgz", entry.name);
        let blob = files
            .remove(&path)
            .ok_or_else(|| invalid(&path, "listed in release.MF but missing"))?;
        let sha1 = hex::encode(sha1::Sha1::digest(&blob));
        if sha1 != entry.sha1 {
            return Err(invalid(
                &path,
                format!("sha1 {sha1} does not match release.MF's {}", entry.sha1),
            ));
        }
        Ok(blob)
    };
    let mut jobs = Vec::new();
    for entry in &manifest.jobs {
        let mut job_files = untgz(&blob("jobs", entry)?, &entry.name)?;
        let spec_text = job_files
            .remove("job.MF")
            .ok_or_else(|| invalid(format!("jobs/{}", entry.name), "no job.MF"))?;
        let spec: JobSpecFile = serde_yaml::from_slice(&spec_text)
            .map_err(|e| invalid(format!("jobs/{}/job.MF", entry.name), e))?;
        let mut templates = BTreeMap::new();
        for source in spec.templates.keys() {
            let content = job_files
                .remove(&format!("templates/{source}"))
                .ok_or_else(|| {
                    invalid(
                        format!("jobs/{}", entry.name),
                        format!("no template {source}"),
                    )
                })?;
            templates.insert(
                source.clone(),
                String::from_utf8(content).map_err(|_| invalid(source.clone(), "not UTF-8"))?,
            );
        }
        jobs.push(ReleaseJob { spec, templates });
    }
    let mut packages = Vec::new();
    for entry in &manifest.packages {
        packages.push((entry.clone(), blob("packages", entry)?));
    }
    Ok(Release {
        manifest,
        jobs,
        packages,
    })
}

/// Renders a job for one instance: its command, files and drain.
pub fn render_job(
    job: &ReleaseJob,
    release: &str,
    properties: &Value,
    spec: &SpecValues,
) -> Result<JobSpec, ReleaseError> {
    let name = &job.spec.name;
    let render = |template: &str, source: &str| {
        render_template(template, &job.spec.properties, properties, spec).map_err(|message| {
            ReleaseError::Render {
                job: name.clone(),
                template: source.to_string(),
                message,
            }
        })
    };
    let mut files = BTreeMap::new();
    for (source, destination) in &job.spec.templates {
        let template = job
            .templates
            .get(source)
            .map(String::as_str)
            .unwrap_or_default();
        files.insert(destination.clone(), render(template, source)?);
    }
    let command: Vec<String> = render(&job.spec.command, "command")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if command.is_empty() {
        return Err(ReleaseError::Render {
            job: name.clone(),
            template: "command".into(),
            message: "renders to nothing".into(),
        });
    }
    let drain = match &job.spec.drain {
        Some(drain) => Some(Drain {
            post: render(&drain.post, "drain")?.trim().to_string(),
            timeout: drain.timeout.unwrap_or(600),
        }),
        None => None,
    };
    let mut env = BTreeMap::new();
    for (key, template) in &job.spec.env {
        env.insert(key.clone(), render(template, &format!("env {key}"))?);
    }
    Ok(JobSpec {
        name: name.clone(),
        release: release.to_string(),
        command,
        env,
        files,
        drain,
    })
}

/// Renders `<%= p("a.b") %>`, `<%= p("a.b", default) %>` and `<%= spec.x %>`; `<%# %>` is
/// a comment. A property comes from the manifest's job properties (nested maps, looked
/// up by its dotted name), else the spec's default; one the job does not declare, or
/// with neither, is an error (BOSH: "Can't find property").
pub fn render_template(
    template: &str,
    declared: &BTreeMap<String, PropertyDef>,
    properties: &Value,
    spec: &SpecValues,
) -> Result<String, String> {
    let spec = serde_json::to_value(spec).expect("spec JSON");
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("<%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start + 2..];
        let end = tag.find("%>").ok_or("unclosed <%")?;
        let (body, after) = (&tag[..end], &tag[end + 2..]);
        rest = after;
        if body.starts_with('#') {
            continue;
        }
        let expr = body
            .strip_prefix('=')
            .ok_or_else(|| format!("only <%= ... %> and <%# %> are supported, not <%{body}%>"))?
            .trim();
        let value = if let Some(field) = expr.strip_prefix("spec.") {
            spec.get(field)
                .cloned()
                .ok_or_else(|| format!("spec has no '{field}'"))?
        } else if let Some(args) = expr.strip_prefix("p(").and_then(|a| a.strip_suffix(')')) {
            let (name, default) = match args.split_once(',') {
                Some((name, default)) => (name, Some(default.trim())),
                None => (args, None),
            };
            let name = name.trim().trim_matches(|c| c == '"' || c == '\'');
            let Some(def) = declared.get(name) else {
                return Err(format!("the job does not declare property '{name}'"));
            };
            lookup(properties, name)
                .cloned()
                .or_else(|| def.default.clone())
                .or_else(|| default.and_then(|d| serde_yaml::from_str(d).ok()))
                .ok_or_else(|| format!("Can't find property '[\"{name}\"]'"))?
        } else {
            return Err(format!("unsupported expression '{expr}'"));
        };
        match value {
            Value::String(s) => out.push_str(&s),
            Value::Null => {}
            other => out.push_str(&other.to_string()),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `a.b.c` in nested maps (or a key holding the dots itself).
fn lookup<'a>(properties: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(value) = properties.get(name) {
        return Some(value);
    }
    name.split('.')
        .try_fold(properties, |value, key| value.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> SpecValues {
        SpecValues {
            deployment: "d".into(),
            name: "router".into(),
            index: 1,
            id: "abc".into(),
            az: "z1".into(),
            address: "127.0.1.10".into(),
            ip: "127.0.1.10".into(),
            bootstrap: false,
        }
    }

    fn declared() -> BTreeMap<String, PropertyDef> {
        BTreeMap::from([
            (
                "router.port".into(),
                PropertyDef {
                    description: None,
                    default: Some(json!(80)),
                },
            ),
            ("nats.url".into(), PropertyDef::default()),
        ])
    }

    #[test]
    fn templates_render_properties_defaults_and_spec_values() {
        let props = json!({"nats": {"url": "nats://n:4222"}});
        let out = render_template(
            "wfd router --listen <%= spec.address %>:<%= p(\"router.port\") %> --nats-url <%= p('nats.url') %> <%# a comment %><%= spec.index %>",
            &declared(),
            &props,
            &spec(),
        )
        .unwrap();
        assert_eq!(
            out,
            "wfd router --listen 127.0.1.10:80 --nats-url nats://n:4222 1"
        );
        let props = json!({"router": {"port": 8080}, "nats.url": "x"});
        let out = render_template(
            "<%= p('router.port') %> <%= p('nats.url') %>",
            &declared(),
            &props,
            &spec(),
        )
        .unwrap();
        assert_eq!(out, "8080 x");
        let err =
            render_template("<%= p('nats.url') %>", &declared(), &json!({}), &spec()).unwrap_err();
        assert_eq!(err, "Can't find property '[\"nats.url\"]'");
        let err =
            render_template("<%= p('other') %>", &declared(), &json!({}), &spec()).unwrap_err();
        assert!(err.contains("does not declare"), "{err}");
        assert!(render_template("<%= spec.nope %>", &declared(), &json!({}), &spec()).is_err());
        assert!(render_template("<% if x %>", &declared(), &json!({}), &spec()).is_err());
    }

    #[test]
    fn a_release_round_trips_through_its_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("release");
        std::fs::create_dir_all(root.join("jobs/router/templates")).unwrap();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::write(root.join("config/final.yml"), "name: wf\n").unwrap();
        std::fs::write(
            root.join("jobs/router/spec"),
            "name: router\ntemplates: {cfg.erb: config/router.txt}\npackages: [wfd]\nproperties:\n  router.port: {default: 80}\n  nats.url: {}\ncommand: wfd router --listen <%= spec.address %>:<%= p('router.port') %>\nenv: {NATS: \"<%= p('nats.url') %>\"}\ndrain: {post: 'http://<%= spec.address %>/drain'}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("jobs/router/templates/cfg.erb"),
            "nats=<%= p('nats.url') %>\n",
        )
        .unwrap();
        let wfd = dir.path().join("wfd");
        std::fs::write(&wfd, b"#!/bin/sh\n").unwrap();
        let tarball = create_release(&root, None, "3", &wfd, dir.path()).unwrap();
        assert!(tarball.ends_with("wf-3.tgz"));
        let release = read_release(&std::fs::read(&tarball).unwrap()).unwrap();
        assert_eq!(
            (
                release.manifest.name.as_str(),
                release.manifest.version.as_str()
            ),
            ("wf", "3")
        );
        assert_eq!(release.packages[0].0.name, "wfd");
        let job = render_job(
            &release.jobs[0],
            "wf",
            &json!({"nats": {"url": "nats://n"}}),
            &spec(),
        )
        .unwrap();
        assert_eq!(job.command, ["wfd", "router", "--listen", "127.0.1.10:80"]);
        assert_eq!(job.files["config/router.txt"], "nats=nats://n\n");
        assert_eq!(job.env["NATS"], "nats://n");
        assert_eq!(job.drain.unwrap().post, "http://127.0.1.10/drain");
        let err = render_job(&release.jobs[0], "wf", &json!({}), &spec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "job 'router', cfg.erb: Can't find property '[\"nats.url\"]'"
        );

        let mut corrupt = std::fs::read(&tarball).unwrap();
        corrupt.truncate(corrupt.len() / 2);
        assert!(read_release(&corrupt).is_err());
    }
}
