//! Binding passwords: random ones, and the SCRAM-SHA-256 verifier (RFC 5802, RFC 7677)
//! the server stores for each, computed here as `psql`'s `\password` does, so the
//! password itself never reaches the server's statement log or `pg_stat_activity`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// PostgreSQL's default iteration count (`scram_iterations`).
const ITERATIONS: u32 = 4096;
const SALT_BYTES: usize = 16;
/// Alphanumeric, so it needs no escaping in a URI or a JDBC URL: about 190 bits.
const PASSWORD_CHARS: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A new random password.
pub fn password() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), PASSWORD_CHARS)
}

/// The verifier of `password` with a new random salt:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
pub fn verifier(password: &str) -> String {
    let mut salt = [0u8; SALT_BYTES];
    rand::thread_rng().fill_bytes(&mut salt);
    verifier_with(password, &salt, ITERATIONS)
}

fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = salted_password(password.as_bytes(), salt, iterations);
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key"));
    let server_key = hmac(&salted, b"Server Key");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64(salt),
        b64(&stored_key),
        b64(&server_key)
    )
}

/// PBKDF2-HMAC-SHA-256 with one output block, `Hi()` of RFC 5802.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (user "user", password "pencil"): the server's
    /// signature it shows is HMAC(ServerKey, AuthMessage), so a wrong ServerKey, and with
    /// it a wrong salted password, would not reproduce it.
    #[test]
    fn the_server_key_matches_rfc_7677() {
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let verifier = verifier_with("pencil", &salt, 4096);
        let (_, keys) = verifier.rsplit_once('$').unwrap();
        let (stored_key, server_key) = keys.split_once(':').unwrap();
        let decode = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = hmac(&decode(server_key), auth_message.as_bytes());
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // The client's proof is ClientKey XOR HMAC(StoredKey, AuthMessage).
        let client_signature = hmac(&decode(stored_key), auth_message.as_bytes());
        let proof = base64::engine::general_purpose::STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(Sha256::digest(&client_key).as_slice(), decode(stored_key));
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
    }

    #[test]
    fn passwords_are_long_alphanumeric_and_fresh() {
        let (a, b) = (password(), password());
        assert_eq!(a.len(), PASSWORD_CHARS);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_ne!(verifier(&a), verifier(&a), "a new salt each time");
    }
}
