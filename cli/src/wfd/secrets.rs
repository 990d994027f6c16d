//! Secrets kept in files: the admin password and the blob URL signing key, made
//! random on first use and readable by the owner only.

use std::path::Path;

use anyhow::Context as _;
use rand::distributions::{Alphanumeric, DistString};

/// The admin password: the flag wins and is remembered; else the stored one; else a
/// new random one, stored.
pub fn admin_password(data_dir: &Path, flag: Option<&str>) -> anyhow::Result<String> {
    let path = data_dir.join("admin-password");
    if let Some(password) = flag {
        anyhow::ensure!(!password.is_empty(), "--admin-password must not be empty");
        write_private(&path, password)?;
        return Ok(password.to_string());
    }
    secret_text_file(&path)
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
}
