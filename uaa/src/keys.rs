//! UAA's token keys: the signing key, an RSA 2048 key generated on first open and kept
//! as a PKCS#8 PEM file readable by its owner only, and the keys of earlier rotations
//! that still verify; all published as JWKs (`/token_keys`) under their `kid`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::EncodingKey;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};

use crate::UaaError;

/// The default `kid` of UAA's signing key, as in CF's default deployment.
pub const KEY_ID: &str = "key-1";

/// One public verification key, in the JWK shape of UAA's `/token_key(s)`: the RSA
/// modulus and exponent, plus the PEM in `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKey {
    pub kty: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub key_use: String,
    pub kid: String,
    /// Base64url (no padding) big-endian modulus.
    pub n: String,
    /// Base64url (no padding) big-endian public exponent.
    pub e: String,
    /// The public key as a `BEGIN PUBLIC KEY` PEM.
    pub value: String,
}

pub(crate) struct SigningKey {
    pub(crate) encoding: EncodingKey,
    pub(crate) public: TokenKey,
}

/// Loads the key at `path`, or generates and saves one when the file does not exist.
pub(crate) async fn load_or_generate(path: PathBuf, kid: String) -> Result<SigningKey, UaaError> {
    tokio::task::spawn_blocking(move || {
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| {
                UaaError::Key(format!("{} is not a PKCS#8 RSA key: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
                    .map_err(|e| UaaError::Key(format!("generating the RSA key: {e}")))?;
                save(&key, &path)?;
                tracing::info!(path = %path.display(), "generated the UAA signing key");
                key
            }
            Err(e) => return Err(UaaError::Key(format!("reading {}: {e}", path.display()))),
        };
        signing_key(&key, &kid)
    })
    .await
    .map_err(|e| UaaError::Key(format!("key task failed: {e}")))?
}

fn save(key: &RsaPrivateKey, path: &Path) -> Result<(), UaaError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |e: &dyn std::fmt::Display| UaaError::Key(format!("saving {}: {e}", path.display()));
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| err(&e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    // Written aside and renamed, so a crash never leaves half a key behind.
    let tmp = path.with_extension("pem.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(&e))?;
    file.write_all(pem.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| err(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&e))
}

/// The public key of a key that verifies but no longer signs: a PKCS#8 RSA private key
/// PEM or a `BEGIN PUBLIC KEY` PEM, which must exist.
pub(crate) async fn load_verification_key(
    path: PathBuf,
    kid: String,
) -> Result<TokenKey, UaaError> {
    tokio::task::spawn_blocking(move || {
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| UaaError::Key(format!("reading {}: {e}", path.display())))?;
        let public = match RsaPrivateKey::from_pkcs8_pem(&pem) {
            Ok(key) => key.to_public_key(),
            Err(_) => RsaPublicKey::from_public_key_pem(&pem)
                .map_err(|e| UaaError::Key(format!("{} is not an RSA key: {e}", path.display())))?,
        };
        token_key(&public, &kid)
    })
    .await
    .map_err(|e| UaaError::Key(format!("key task failed: {e}")))?
}

pub(crate) fn signing_key(key: &RsaPrivateKey, kid: &str) -> Result<SigningKey, UaaError> {
    let der = key
        .to_pkcs1_der()
        .map_err(|e| UaaError::Key(format!("encoding the RSA key: {e}")))?;
    Ok(SigningKey {
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        public: token_key(&key.to_public_key(), kid)?,
    })
}

fn token_key(public: &RsaPublicKey, kid: &str) -> Result<TokenKey, UaaError> {
    let value = public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| UaaError::Key(format!("encoding the public key: {e}")))?;
    Ok(TokenKey {
        kty: "RSA".into(),
        alg: "RS256".into(),
        key_use: "sig".into(),
        kid: kid.into(),
        n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_is_generated_once_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.pem");
        let first = load_or_generate(path.clone(), KEY_ID.into()).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_generate(path.clone(), KEY_ID.into()).await.unwrap();
        let verifying = load_verification_key(path.clone(), "old".into())
            .await
            .unwrap();
        assert_eq!(
            (verifying.n.as_str(), verifying.kid.as_str()),
            (first.public.n.as_str(), "old")
        );
        let public_pem = dir.path().join("public.pem");
        std::fs::write(&public_pem, &first.public.value).unwrap();
        let from_public = load_verification_key(public_pem, "old".into())
            .await
            .unwrap();
        assert_eq!(from_public, verifying);
        assert!(
            load_verification_key(dir.path().join("missing.pem"), "x".into())
                .await
                .is_err()
        );
        assert_eq!(first.public, again.public);
        assert_eq!(first.public.e, "AQAB");
        assert!(first.public.value.starts_with("-----BEGIN PUBLIC KEY-----"));

        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_or_generate(path, KEY_ID.into()).await,
            Err(UaaError::Key(_))
        ));
    }
}
