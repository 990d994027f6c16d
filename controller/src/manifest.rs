//! CF application manifests (`manifest.yml`, schema version 1): parsing with CF's
//! validation messages, memory sizes, and rendering an app's current state as a
//! manifest. Applying one is [`crate::api::manifests`]'s business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a manifest was refused (CF answers these as 422 CF-UnprocessableEntity).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("Manifest is not valid YAML: {0}")]
    Yaml(String),
    #[error("{0}")]
    Invalid(String),
}

/// A whole manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default)]
    pub applications: Vec<AppManifest>,
}

/// A route of an app: `host.domain[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteManifest {
    pub route: String,
}

/// A service binding: a name, or a name with parameters (bound by the services
/// issue's brokers; here only named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServiceManifest {
    Name(String),
    Detailed { name: String },
}

impl ServiceManifest {
    pub fn name(&self) -> &str {
        match self {
            ServiceManifest::Name(n) | ServiceManifest::Detailed { name: n } => n,
        }
    }
}

/// The process-level fields, at the top of an app (its `web` process) or in
/// `processes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ProcessManifest {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub process_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(
        rename = "disk_quota",
        alias = "disk-quota",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_quota: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_http_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// `log-rate-limit-per-second`: `-1` (none of its own), or bytes with B/K/M/G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_rate_limit_per_second: Option<String>,
}

/// One application of a manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AppManifest {
    pub name: String,
    /// Where the app's files are, relative to the manifest (read by the CLI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildpacks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// Values may be any scalar; they become strings, as in CF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, serde_yaml::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteManifest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_route: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_route: Option<bool>,
    /// Set by the CLI when pushing: give the app its default route if it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceManifest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<ProcessManifest>>,
    /// The app's `labels` and `annotations`, as the V3 API takes them (and checks them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The `web` process's fields, written at the top of the app.
    #[serde(flatten)]
    pub web: ProcessManifest,
}

impl AppManifest {
    /// Every process the manifest configures, `web` first when set at the top.
    pub fn process_configs(&self) -> Vec<(String, ProcessManifest)> {
        let mut configs = Vec::new();
        if self.web != ProcessManifest::default() {
            configs.push(("web".to_string(), self.web.clone()));
        }
        for p in self.processes.iter().flatten() {
            let kind = p.process_type.clone().unwrap_or_default();
            match configs.iter_mut().find(|(k, _)| *k == kind) {
                // `processes: [{type: web}]` wins over the top-level fields.
                Some((_, existing)) => *existing = p.clone(),
                None => configs.push((kind, p.clone())),
            }
        }
        configs
    }

    /// The environment as strings (`true` -> "true", `1` -> "1").
    pub fn env_strings(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .flatten()
            .map(|(k, v)| {
                let value = match v {
                    serde_yaml::Value::String(s) => s.clone(),
                    serde_yaml::Value::Null => String::new(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim_end()
                        .to_string(),
                };
                (k.clone(), value)
            })
            .collect()
    }
}

/// Parses and validates a manifest.
pub fn parse(yaml: &str) -> Result<Manifest, ManifestError> {
    let manifest: Manifest =
        serde_yaml::from_str(yaml).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    validate(&manifest)?;
    Ok(manifest)
}

fn validate(manifest: &Manifest) -> Result<(), ManifestError> {
    let invalid = |s: String| Err(ManifestError::Invalid(s));
    if let Some(v) = manifest.version {
        if v != 1 {
            return invalid(format!("Unsupported manifest schema version: {v}"));
        }
    }
    if manifest.applications.is_empty() {
        return invalid("Manifest must have at least one application".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for app in &manifest.applications {
        let name = app.name.trim();
        if name.is_empty() {
            return invalid("Name must not be empty".into());
        }
        if !names.insert(name) {
            return invalid(format!("Application name '{name}' is used twice"));
        }
        let routes = app.routes.as_ref().is_some_and(|r| !r.is_empty());
        if app.no_route == Some(true) && (routes || app.random_route == Some(true)) {
            return invalid(format!(
                "For application '{name}': Cannot use the combination of properties: no-route, routes/random-route"
            ));
        }
        for route in app.routes.iter().flatten() {
            if route.route.trim().is_empty() || route.route.contains(char::is_whitespace) {
                return invalid(format!(
                    "For application '{name}': The route '{}' is not a properly formed URL",
                    route.route
                ));
            }
        }
        for (kind, process) in app.process_configs() {
            let prefix = format!("For application '{name}': ");
            if kind.is_empty() {
                return invalid(format!("{prefix}Process type must not be empty"));
            }
            if process.instances.is_some_and(|n| n < 0) {
                return invalid(format!(
                    "{prefix}Instances must be greater than or equal to 0"
                ));
            }
            for (field, size) in [
                ("Memory", &process.memory),
                ("Disk quota", &process.disk_quota),
            ] {
                if let Some(size) = size {
                    megabytes(size)
                        .map_err(|e| ManifestError::Invalid(format!("{prefix}{field}: {e}")))?;
                }
            }
            if let Some(rate) = &process.log_rate_limit_per_second {
                log_rate(rate).map_err(|e| ManifestError::Invalid(format!("{prefix}{e}")))?;
            }
            if let Some(kind) = &process.health_check_type {
                if !matches!(kind.as_str(), "port" | "process" | "http" | "none") {
                    return invalid(format!(
                        "{prefix}Health check type must be 'port', 'process', or 'http'"
                    ));
                }
            }
            if process.timeout.is_some_and(|t| t < 1) {
                return invalid(format!("{prefix}Timeout must be greater than 0"));
            }
        }
    }
    Ok(())
}

/// The default host of an app's route: its name, lower-cased, with characters a
/// hostname cannot hold replaced by `-`, as the cf CLI does.
pub fn route_host(name: &str) -> String {
    let host: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    host.trim_matches('-').to_string()
}

/// A host for `random-route`: the default host with a random suffix.
pub fn random_host(name: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString as _};
    let suffix = Alphanumeric
        .sample_string(&mut rand::thread_rng(), 8)
        .to_ascii_lowercase();
    format!("{}-{suffix}", route_host(name))
}

/// Whether a domain (its V3 JSON) takes default routes: shared (not org-private) and
/// external.
pub fn is_shared_domain(domain: &serde_json::Value) -> bool {
    domain
        .pointer("/relationships/organization/data")
        .is_none_or(serde_json::Value::is_null)
        && domain["internal"].as_bool() != Some(true)
}

/// A size as CF writes them (`256M`, `1G`, `512MB`, bare numbers are MB) in MB.
pub fn megabytes(input: &str) -> Result<u64, String> {
    let upper = input.trim().to_ascii_uppercase();
    let (digits, factor) =
        if let Some(n) = upper.strip_suffix("GB").or_else(|| upper.strip_suffix('G')) {
            (n, 1024)
        } else if let Some(n) = upper.strip_suffix("MB").or_else(|| upper.strip_suffix('M')) {
            (n, 1)
        } else {
            (upper.as_str(), 1)
        };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(factor)
            .ok_or_else(|| format!("Memory size '{input}' is too large.")),
        _ => Err(format!(
            "Invalid memory size '{input}': use a positive number with M or G, e.g. 256M or 1G."
        )),
    }
}

/// A log rate limit as CF writes it (`cf scale -l`, `log-rate-limit-per-second`): `-1`
/// for unlimited, else bytes per second with an optional B, K, M or G (powers of 1024).
pub fn log_rate(input: &str) -> Result<i64, String> {
    let upper = input.trim().to_ascii_uppercase();
    if upper == "-1" {
        return Ok(-1);
    }
    let unit = |suffixes: &[&str]| suffixes.iter().find_map(|s| upper.strip_suffix(s));
    let (digits, factor) = if let Some(n) = unit(&["GB", "G"]) {
        (n, 1 << 30)
    } else if let Some(n) = unit(&["MB", "M"]) {
        (n, 1 << 20)
    } else if let Some(n) = unit(&["KB", "K"]) {
        (n, 1 << 10)
    } else {
        (unit(&["B"]).unwrap_or(&upper), 1)
    };
    digits
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            format!("Invalid log rate limit '{input}': use -1 (unlimited) or a number of bytes with B, K, M or G, e.g. 4K.")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rates_are_bytes_or_unlimited() {
        assert_eq!(log_rate("-1"), Ok(-1));
        assert_eq!(log_rate("512"), Ok(512));
        assert_eq!(log_rate("128B"), Ok(128));
        assert_eq!(log_rate("4k"), Ok(4096));
        assert_eq!(log_rate("1MB"), Ok(1 << 20));
        assert_eq!(log_rate("2G"), Ok(2 << 30));
        for bad in ["", "-2", "lots", "1T", "K"] {
            assert!(log_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_cf_manifests() {
        let m = parse(
            "---\nversion: 1\napplications:\n- name: web\n  instances: 2\n  memory: 256M\n  \
             disk_quota: 1G\n  env:\n    A: 1\n    B: true\n    C: text\n  routes:\n  - route: \
             web.example.com/api\n  health-check-type: http\n  processes:\n  - type: worker\n    \
             instances: 0\n    command: run\n",
        )
        .unwrap();
        let app = &m.applications[0];
        assert_eq!(app.web.instances, Some(2));
        assert_eq!(app.web.disk_quota.as_deref(), Some("1G"));
        let env = app.env_strings();
        assert_eq!(
            (env["A"].as_str(), env["B"].as_str(), env["C"].as_str()),
            ("1", "true", "text")
        );
        let configs = app.process_configs();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[1].0, "worker");
        assert_eq!(configs[1].1.command.as_deref(), Some("run"));
    }

    #[test]
    fn refuses_bad_manifests_with_cf_messages() {
        for (yaml, message) in [
            ("applications: [", "not valid YAML"),
            ("applications: []", "at least one application"),
            ("applications:\n- name: ''", "Name must not be empty"),
            ("applications:\n- name: a\n- name: a", "used twice"),
            (
                "applications:\n- name: a\n  memory: lots",
                "Invalid memory size",
            ),
            (
                "applications:\n- name: a\n  instances: -1",
                "greater than or equal to 0",
            ),
            (
                "applications:\n- name: a\n  no-route: true\n  random-route: true",
                "no-route",
            ),
            (
                "applications:\n- name: a\n  health-check-type: ping",
                "Health check type",
            ),
            ("version: 2\napplications:\n- name: a", "schema version"),
            (
                "applications:\n- name: a\n  instances: many",
                "not valid YAML",
            ),
        ] {
            let err = parse(yaml).unwrap_err().to_string();
            assert!(err.contains(message), "{yaml}: {err}");
        }
    }

    #[test]
    fn hosts_are_sanitized_app_names() {
        assert_eq!(route_host("hello"), "hello");
        assert_eq!(route_host("My_App.v2"), "my-app-v2");
        assert_eq!(route_host("_x_"), "x");
        assert!(random_host("web").starts_with("web-"));
        assert_ne!(random_host("web"), random_host("web"));
    }

    #[test]
    fn sizes_parse_as_cf_writes_them() {
        assert_eq!(megabytes("256M"), Ok(256));
        assert_eq!(megabytes("1g"), Ok(1024));
        assert_eq!(megabytes("512MB"), Ok(512));
        assert_eq!(megabytes("64"), Ok(64));
        assert!(megabytes("0M").is_err());
        assert!(megabytes("-1G").is_err());
    }
}
