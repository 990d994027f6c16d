//! Route service signatures, in Gorouter's format.
//!
//! A request for a route bound to a route service goes to that service first with
//! `X-CF-Forwarded-Url` (the URL the client asked for), `X-CF-Proxy-Signature` and
//! `X-CF-Proxy-Metadata`. The signature is the JSON `{"forwarded_url","requested_time"}`
//! sealed with AES-128-GCM under a key derived from the route services secret (PBKDF2
//! with HMAC-SHA256, empty salt, 100001 iterations), base64url-encoded with padding; the
//! metadata is base64url of `{"nonce": <base64 of the 12-byte nonce>}`. When the route
//! service sends the request back, [`RouteServiceKeys::verify`] accepts it only if the
//! signature opens with the current (or, during rotation, the previous) secret, is not
//! older than the route services timeout, and names the URL being requested.

use std::num::NonZeroU32;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub(crate) const X_CF_FORWARDED_URL: http::HeaderName =
    http::HeaderName::from_static("x-cf-forwarded-url");
pub(crate) const X_CF_PROXY_SIGNATURE: http::HeaderName =
    http::HeaderName::from_static("x-cf-proxy-signature");
pub(crate) const X_CF_PROXY_METADATA: http::HeaderName =
    http::HeaderName::from_static("x-cf-proxy-metadata");

/// Gorouter's PBKDF2 iterations for the route services key.
const KEY_ITERATIONS: u32 = 100_001;

/// Why a route service request could not be signed, or the keys not be made.
#[derive(Debug, thiserror::Error)]
pub enum RouteServiceError {
    #[error("route services key: AES-128-GCM refused the derived key")]
    Key,
    #[error("route service signature: {0}")]
    Json(#[from] serde_json::Error),
    #[error("route service signature: AES-GCM sealing failed")]
    Seal,
}

/// Why a request coming back from a route service was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignatureError {
    #[error("no X-CF-Proxy-Metadata header")]
    MissingMetadata,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("the signature does not open with the route services secret")]
    Decrypt,
    #[error("the signature expired: requested at {0}")]
    Expired(OffsetDateTime),
    #[error("the signature is for {signed}, not {requested}")]
    UrlMismatch { signed: String, requested: String },
}

#[derive(Serialize, Deserialize)]
struct Signature {
    forwarded_url: String,
    #[serde(with = "time::serde::rfc3339")]
    requested_time: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct Metadata {
    /// Standard base64, as Go encodes a byte slice in JSON.
    nonce: String,
}

/// The route service headers of a request sent to a route service.
#[derive(Debug)]
pub(crate) struct SignedHeaders {
    pub(crate) signature: String,
    pub(crate) metadata: String,
}

/// The keys that sign and verify route service requests.
pub(crate) struct RouteServiceKeys {
    current: LessSafeKey,
    /// `route_services_secret_decrypt_only`: accepted while secrets rotate.
    previous: Option<LessSafeKey>,
    timeout: Duration,
}

fn derive_key(secret: &str) -> Result<LessSafeKey, RouteServiceError> {
    let mut key = [0u8; 16];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(KEY_ITERATIONS).unwrap_or(NonZeroU32::MIN),
        &[],
        secret.as_bytes(),
        &mut key,
    );
    let unbound = UnboundKey::new(&AES_128_GCM, &key).map_err(|_| RouteServiceError::Key)?;
    Ok(LessSafeKey::new(unbound))
}

/// The URL without its scheme: a route service may call back over http or https.
fn without_scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

impl RouteServiceKeys {
    pub(crate) fn new(
        secret: &str,
        previous: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, RouteServiceError> {
        Ok(RouteServiceKeys {
            current: derive_key(secret)?,
            previous: previous.map(derive_key).transpose()?,
            timeout,
        })
    }

    /// Signs `forwarded_url` as requested at `now`.
    pub(crate) fn sign(
        &self,
        forwarded_url: &str,
        now: OffsetDateTime,
    ) -> Result<SignedHeaders, RouteServiceError> {
        let signature = Signature {
            forwarded_url: forwarded_url.to_string(),
            requested_time: now,
        };
        self.seal(serde_json::to_vec(&signature)?, rand::random())
    }

    /// Seals `plaintext` (a signature's JSON) with the current key and `nonce` into the
    /// two headers.
    pub(crate) fn seal(
        &self,
        mut plaintext: Vec<u8>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<SignedHeaders, RouteServiceError> {
        self.current
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut plaintext,
            )
            .map_err(|_| RouteServiceError::Seal)?;
        let metadata = Metadata {
            nonce: STANDARD.encode(nonce),
        };
        Ok(SignedHeaders {
            signature: URL_SAFE.encode(plaintext),
            metadata: URL_SAFE.encode(serde_json::to_vec(&metadata)?),
        })
    }

    /// Checks the signature of a request back from a route service for
    /// `requested_url`, at `now`.
    pub(crate) fn verify(
        &self,
        signature: &str,
        metadata: Option<&str>,
        requested_url: &str,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let metadata = metadata
            .filter(|m| !m.is_empty())
            .ok_or(SignatureError::MissingMetadata)?;
        let metadata: Metadata = URL_SAFE
            .decode(metadata)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(SignatureError::Malformed("X-CF-Proxy-Metadata"))?;
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(&metadata.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SignatureError::Malformed("nonce"))?;
        let sealed = URL_SAFE
            .decode(signature)
            .map_err(|_| SignatureError::Malformed("X-CF-Proxy-Signature"))?;
        let signature: Signature = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find_map(|key| {
                let mut buffer = sealed.clone();
                let plain = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut buffer,
                    )
                    .ok()?;
                serde_json::from_slice(plain).ok()
            })
            .ok_or(SignatureError::Decrypt)?;
        if now - signature.requested_time > self.timeout {
            return Err(SignatureError::Expired(signature.requested_time));
        }
        if without_scheme(&signature.forwarded_url) != without_scheme(requested_url) {
            return Err(SignatureError::UrlMismatch {
                signed: signature.forwarded_url,
                requested: requested_url.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://app.example.com/path?q=1";

    #[test]
    fn signatures_round_trip_and_expire() {
        let keys = RouteServiceKeys::new("secret", None, Duration::from_secs(60)).unwrap();
        let now = OffsetDateTime::now_utc();
        let signed = keys.sign(URL, now).unwrap();
        keys.verify(&signed.signature, Some(&signed.metadata), URL, now)
            .unwrap();
        // Called back over plain http: the same URL.
        keys.verify(
            &signed.signature,
            Some(&signed.metadata),
            "http://app.example.com/path?q=1",
            now,
        )
        .unwrap();
        let later = now + Duration::from_secs(61);
        assert!(matches!(
            keys.verify(&signed.signature, Some(&signed.metadata), URL, later),
            Err(SignatureError::Expired(_))
        ));
        assert!(matches!(
            keys.verify(
                &signed.signature,
                Some(&signed.metadata),
                "https://other.example.com/",
                now
            ),
            Err(SignatureError::UrlMismatch { .. })
        ));
        assert!(matches!(
            keys.verify(&signed.signature, None, URL, now),
            Err(SignatureError::MissingMetadata)
        ));
    }

    #[test]
    fn other_secrets_fail_and_the_previous_one_is_accepted() {
        let now = OffsetDateTime::now_utc();
        let old = RouteServiceKeys::new("old", None, Duration::from_secs(60)).unwrap();
        let signed = old.sign(URL, now).unwrap();
        let other = RouteServiceKeys::new("new", None, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            other.verify(&signed.signature, Some(&signed.metadata), URL, now),
            Err(SignatureError::Decrypt)
        ));
        let rotating = RouteServiceKeys::new("new", Some("old"), Duration::from_secs(60)).unwrap();
        rotating
            .verify(&signed.signature, Some(&signed.metadata), URL, now)
            .unwrap();
    }

    #[test]
    fn headers_have_gorouters_shape() {
        let keys = RouteServiceKeys::new("secret", None, Duration::from_secs(60)).unwrap();
        let signed = keys.sign(URL, OffsetDateTime::now_utc()).unwrap();
        let metadata: serde_json::Value =
            serde_json::from_slice(&URL_SAFE.decode(&signed.metadata).unwrap()).unwrap();
        let nonce = STANDARD
            .decode(metadata["nonce"].as_str().unwrap())
            .unwrap();
        assert_eq!(nonce.len(), 12);
        let mut sealed = URL_SAFE.decode(&signed.signature).unwrap();
        let plain = keys
            .current
            .open_in_place(
                Nonce::try_assume_unique_for_key(&nonce).unwrap(),
                Aad::empty(),
                &mut sealed,
            )
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(plain).unwrap();
        assert_eq!(json["forwarded_url"], URL);
        assert!(json["requested_time"].as_str().unwrap().ends_with('Z'));
    }
}
