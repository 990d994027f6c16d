//! CF's JWTs: the claims UAA writes into access and refresh tokens, and the offline
//! [`TokenVerifier`] the other components check access tokens with.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::TokenKey;

/// The audience every access token for the Cloud Controller carries.
pub const CLOUD_CONTROLLER_AUDIENCE: &str = "cloud_controller";

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// The claims of a CF access token that the platform reads. Tokens of the
/// client_credentials grant have no user: `sub` is the client id, `user_id`,
/// `user_name`, `email` and `origin` are empty (absent from the JWT), and `authorities`
/// holds the client's authorities.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub jti: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    pub scope: Vec<String>,
    /// A client token's authorities; empty for user tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorities: Vec<String>,
    pub client_id: String,
    pub cid: String,
    pub grant_type: String,
    pub iss: String,
    pub aud: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(default)]
    pub zid: String,
}

impl Claims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.iter().any(|s| s == scope)
    }
    /// `cloud_controller.admin`.
    pub fn is_admin(&self) -> bool {
        self.has_scope("cloud_controller.admin")
    }
    /// Whether a user (not only a client) is behind the token.
    pub fn is_user(&self) -> bool {
        !self.user_id.is_empty()
    }
}

/// Everything UAA writes into a token: [`Claims`] plus the claims only UAA reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenClaims {
    #[serde(flatten)]
    pub(crate) claims: Claims,
    pub(crate) azp: String,
    /// When the user authenticated; client tokens have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) auth_time: Option<i64>,
    /// Revocation signature: changes when the user's password, email or name does,
    /// which revokes the tokens issued before.
    pub(crate) rev_sig: String,
}

impl TokenClaims {
    /// UAA marks refresh tokens by a `jti` ending in `-r`.
    pub(crate) fn is_refresh(&self) -> bool {
        is_refresh_jti(&self.claims.jti)
    }
}

pub(crate) fn is_refresh_jti(jti: &str) -> bool {
    jti.ends_with("-r")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token was given")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
}

/// Verifies access tokens offline with UAA's public keys. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierKeys>,
}

struct VerifierKeys {
    issuer: String,
    keys: HashMap<String, DecodingKey>,
}

impl TokenVerifier {
    /// A verifier for tokens of `issuer` signed by one of `keys` (UAA's `/token_keys`).
    pub fn from_keys(issuer: &str, keys: &[TokenKey]) -> Result<TokenVerifier, TokenError> {
        let mut decoding = HashMap::new();
        for key in keys {
            if key.kty != "RSA" {
                continue;
            }
            let k = DecodingKey::from_rsa_components(&key.n, &key.e)
                .map_err(|e| TokenError::Invalid(format!("key {}: {e}", key.kid)))?;
            decoding.insert(key.kid.clone(), k);
        }
        Ok(TokenVerifier {
            inner: Arc::new(VerifierKeys {
                issuer: issuer.to_string(),
                keys: decoding,
            }),
        })
    }

    /// Accepts `bearer <jwt>` (any case) or the bare JWT.
    pub fn verify(&self, token_or_bearer: &str) -> Result<Claims, TokenError> {
        let token = strip_bearer(token_or_bearer)?;
        let claims: TokenClaims = self.decode(token, Some(CLOUD_CONTROLLER_AUDIENCE))?;
        if claims.is_refresh() {
            return Err(TokenError::Invalid(
                "a refresh token is not an access token".into(),
            ));
        }
        Ok(claims.claims)
    }

    /// Checks signature (RS256 only, key by `kid`), `exp`, `iss` and, when given, that
    /// `aud` holds `audience`.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<T, TokenError> {
        let invalid = |e: jsonwebtoken::errors::Error| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid(e.to_string()),
        };
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let keys = &self.inner.keys;
        let key = match &header.kid {
            Some(kid) => keys.get(kid),
            None if keys.len() == 1 => keys.values().next(),
            None => None,
        }
        .ok_or_else(|| TokenError::Invalid("the token's signing key is unknown".into()))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        jsonwebtoken::decode::<T>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(invalid)
    }
}

/// The JWT of `bearer <jwt>` (any case) or of a bare JWT.
pub(crate) fn strip_bearer(token_or_bearer: &str) -> Result<&str, TokenError> {
    let s = token_or_bearer.trim();
    if s.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    let token = match s.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return Err(TokenError::Invalid("not a bearer token".into())),
        None => s,
    };
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_prefix_is_optional_and_case_insensitive() {
        assert_eq!(strip_bearer("bearer abc"), Ok("abc"));
        assert_eq!(strip_bearer("Bearer  abc "), Ok("abc"));
        assert_eq!(strip_bearer("abc"), Ok("abc"));
        assert_eq!(strip_bearer("  "), Err(TokenError::Missing));
        assert_eq!(strip_bearer("Bearer "), Err(TokenError::Missing));
        assert!(matches!(
            strip_bearer("Basic abc"),
            Err(TokenError::Invalid(_))
        ));
    }
}
