//! Encryption at rest of the secrets the CC database keeps (service credentials), as
//! CC's `database_encryption`: AES-256-GCM under a labelled key. A stored value is
//! `<label>:<base64 of nonce + ciphertext + tag>`, so a key rotation only adds a key:
//! new writes use the current key, old values still decrypt under theirs, and
//! [`Encryptor::needs_rotation`] tells which values to re-encrypt.

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encrypted with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("the encrypted value is corrupt or was changed")]
    Corrupt,
    #[error("no random numbers for a nonce")]
    Random,
}

/// The controller's encryption keys: one current (for writes) and older ones.
pub struct Encryptor {
    current: String,
    keys: BTreeMap<String, LessSafeKey>,
    random: SystemRandom,
}

impl Encryptor {
    /// `keys` are (label, secret) pairs, the first one current; each secret is hashed
    /// to a 256-bit key.
    pub fn new(keys: &[(String, Vec<u8>)]) -> Encryptor {
        use sha2::Digest as _;
        let current = keys
            .first()
            .map(|(label, _)| label.clone())
            .unwrap_or_default();
        let keys = keys
            .iter()
            .map(|(label, secret)| {
                let digest = sha2::Sha256::digest(secret);
                let key = UnboundKey::new(&AES_256_GCM, &digest).expect("a 256-bit key");
                (label.clone(), LessSafeKey::new(key))
            })
            .collect();
        Encryptor {
            current,
            keys,
            random: SystemRandom::new(),
        }
    }

    pub fn encrypt(&self, plaintext: &str) -> Result<String, CryptoError> {
        let key = &self.keys[&self.current];
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Random)?;
        let mut sealed = plaintext.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(self.current.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| CryptoError::Corrupt)?;
        let mut blob = nonce.to_vec();
        blob.extend(sealed);
        Ok(format!(
            "{}:{}",
            self.current,
            base64::engine::general_purpose::STANDARD.encode(blob)
        ))
    }

    pub fn decrypt(&self, stored: &str) -> Result<String, CryptoError> {
        let (label, encoded) = stored.split_once(':').ok_or(CryptoError::Corrupt)?;
        let key = self
            .keys
            .get(label)
            .ok_or_else(|| CryptoError::UnknownKey(label.to_string()))?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| CryptoError::Corrupt)?;
        if blob.len() < NONCE_LEN {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Corrupt)?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut sealed)
            .map_err(|_| CryptoError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Corrupt)
    }

    /// Whether `stored` was encrypted with another key than the current one.
    pub fn needs_rotation(&self, stored: &str) -> bool {
        stored
            .split_once(':')
            .is_some_and(|(label, _)| label != self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(labels: &[&str]) -> Vec<(String, Vec<u8>)> {
        labels
            .iter()
            .map(|l| (l.to_string(), format!("secret-{l}").into_bytes()))
            .collect()
    }

    #[test]
    fn values_round_trip_and_never_show_the_plaintext() {
        let e = Encryptor::new(&keys(&["k1"]));
        let stored = e.encrypt(r#"{"password":"hunter2"}"#).unwrap();
        assert!(stored.starts_with("k1:"));
        assert!(!stored.contains("hunter2"));
        assert_ne!(
            stored,
            e.encrypt(r#"{"password":"hunter2"}"#).unwrap(),
            "fresh nonce"
        );
        assert_eq!(e.decrypt(&stored).unwrap(), r#"{"password":"hunter2"}"#);
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_tampering_is_caught() {
        let old = Encryptor::new(&keys(&["k1"]));
        let stored = old.encrypt("s3cret").unwrap();
        let rotated = Encryptor::new(&keys(&["k2", "k1"]));
        assert_eq!(rotated.decrypt(&stored).unwrap(), "s3cret");
        assert!(rotated.needs_rotation(&stored));
        assert!(!rotated.needs_rotation(&rotated.encrypt("x").unwrap()));
        let dropped = Encryptor::new(&keys(&["k2"]));
        assert!(matches!(
            dropped.decrypt(&stored),
            Err(CryptoError::UnknownKey(_))
        ));

        let mut bytes = stored.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(matches!(
            rotated.decrypt(&tampered),
            Err(CryptoError::Corrupt)
        ));
        assert!(matches!(rotated.decrypt("k1"), Err(CryptoError::Corrupt)));
    }
}
