//! Secrets kept in files: the admin password, the blob URL signing key and the
//! router's route services secret, made random on first use and readable by the owner
//! only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rand::distributions::{Alphanumeric, DistString};

/// Where [`admin_password`] keeps the admin password (owner-only): what `wfd dev`
/// points the user to, rather than printing the password into its logs.
pub fn admin_password_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-password")
}

/// The admin password: the flag wins and is remembered; else the stored one; else a
/// new random one, stored.
pub fn admin_password(data_dir: &Path, flag: Option<&str>) -> anyhow::Result<String> {
    let path = admin_password_file(data_dir);
    if let Some(password) = flag {
        anyhow::ensure!(!password.is_empty(), "--admin-password must not be empty");
        write_private(&path, password)?;
        return Ok(password.to_string());
    }
    secret_text_file(&path)
}

/// The router's route services secret for `wfd dev`: the flag's, else the one stored
/// in the data dir (a new random one the first time), so route services are on.
pub fn route_services_secret(data_dir: &Path, flag: Option<&str>) -> anyhow::Result<String> {
    match flag {
        Some(secret) => {
            anyhow::ensure!(
                !secret.is_empty(),
                "--route-services-secret must not be empty"
            );
            Ok(secret.to_string())
        }
        None => secret_text_file(&data_dir.join("route-services-secret")),
    }
}

pub fn secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    secret_text_file(path).map(String::into_bytes)
}

/// Reads a secret stored in the data dir, creating a random one the first time.
fn secret_text_file(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim();
            anyhow::ensure!(!s.is_empty(), "{} is empty", path.display());
            Ok(s.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
            write_private(path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    set_private(path, 0o600)
}

pub fn set_private(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_password_is_generated_once_and_flag_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = admin_password(dir.path(), None).unwrap();
        assert_eq!(first.len(), 24);
        assert_eq!(admin_password(dir.path(), None).unwrap(), first);
        assert_eq!(
            admin_password(dir.path(), Some("s3cret")).unwrap(),
            "s3cret"
        );
        assert_eq!(admin_password(dir.path(), None).unwrap(), "s3cret");
        assert!(admin_password(dir.path(), Some("")).is_err());
    }

    #[test]
    fn route_services_secret_is_kept_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let kept = route_services_secret(dir.path(), None).unwrap();
        assert_eq!(kept.len(), 24);
        assert_eq!(route_services_secret(dir.path(), None).unwrap(), kept);
        assert_eq!(route_services_secret(dir.path(), Some("s")).unwrap(), "s");
        assert_eq!(route_services_secret(dir.path(), None).unwrap(), kept);
    }
}
