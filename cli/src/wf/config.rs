//! The `wf` configuration file: the API endpoint, the UAA tokens and the targeted org and
//! space, kept as JSON at `$WF_HOME/config.json` (else `~/.wf/config.json`) and readable
//! only by its owner, since it holds tokens.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything `wf` remembers between invocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The Cloud Controller URL, without a trailing slash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// The V3 API version reported by the root endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The UAA URL (`links.uaa` of the API root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uaa: Option<String>,
    /// The Log Cache URL (`links.log_cache` of the API root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cache: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Set by `wf auth --client-credentials`: the client whose tokens are fetched again
    /// when they expire (client tokens have no refresh token), as the cf CLI keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_credentials: Option<ClientCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<Target>,
}

/// An OAuth client's id and secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// A targeted org or space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub guid: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Cannot find a home directory for the wf config: set WF_HOME or HOME.")]
    NoHome,
    #[error("Cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("The config file {path} is not valid: {source}. Fix or remove it.")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("Cannot write the config file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// `$WF_HOME/config.json`, else `$HOME/.wf/config.json`.
    pub fn default_path() -> Result<PathBuf, ConfigError> {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(home) = non_empty("WF_HOME") {
            return Ok(PathBuf::from(home).join("config.json"));
        }
        let home = non_empty("HOME")
            .or_else(|| non_empty("USERPROFILE"))
            .ok_or(ConfigError::NoHome)?;
        Ok(PathBuf::from(home).join(".wf").join("config.json"))
    }

    /// The config at `path`; an empty one when the file does not exist yet.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the config to `path` (mode 0600), replacing the old file atomically.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| write_err(e.into()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(write_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(write_err)?;
        }
        file.write_all(&json).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(write_err)
    }

    /// Forgets the tokens and the target (a new API endpoint, or a logout).
    pub fn clear_session(&mut self) {
        self.access_token = None;
        self.refresh_token = None;
        self.client_credentials = None;
        self.org = None;
        self.space = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_an_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&dir.path().join("config.json")).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn saves_and_loads_back_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("config.json");
        let config = Config {
            api: Some("http://127.0.0.1:9022".into()),
            access_token: Some("a.b.c".into()),
            org: Some(Target {
                guid: "g".into(),
                name: "o".into(),
            }),
            ..Config::default()
        };
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn clearing_the_session_keeps_the_endpoint() {
        let mut config = Config {
            api: Some("http://x".into()),
            refresh_token: Some("r".into()),
            space: Some(Target {
                guid: "g".into(),
                name: "s".into(),
            }),
            ..Config::default()
        };
        config.clear_session();
        assert_eq!(config.api.as_deref(), Some("http://x"));
        assert!(config.refresh_token.is_none() && config.space.is_none());
    }
}
