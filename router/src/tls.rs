//! TLS for the router, on rustls with the ring provider.
//!
//! Server side: the certificates the TLS listener terminates with, one per domain,
//! chosen by the client's SNI server name (`*.example.com` certificates match one label
//! below their domain) with a default for clients that send no name or an unknown one,
//! and ALPN `h2` and `http/1.1`. Client side: the configuration for TLS to backends and
//! route services, trusting the configured CAs, and the classification of handshake
//! failures into Gorouter's statuses.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::StatusCode;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: invalid PEM: {error}")]
    Pem {
        what: String,
        error: rustls::pki_types::pem::Error,
    },
    #[error("certificate for {domain}: {error}")]
    Key {
        domain: String,
        error: rustls::Error,
    },
    #[error(
        "invalid certificate domain {0:?}: expected a DNS name, `*.` and a DNS name, or `default`"
    )]
    Domain(String),
    #[error("TLS listener needs at least one certificate")]
    NoCertificates,
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its private key, served for one domain (or as the default).
#[derive(Debug, Clone)]
pub struct TlsCertificate {
    /// Lower-cased DNS name or `*.` wildcard; `None`: the default certificate.
    domain: Option<String>,
    key: Arc<CertifiedKey>,
}

impl TlsCertificate {
    /// A certificate for `domain` (`None`: the default) from PEM text: the chain, leaf
    /// first, and its private key (PKCS#8, PKCS#1 or SEC1), which must match the leaf.
    pub fn from_pem(
        domain: Option<&str>,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<TlsCertificate, TlsError> {
        let domain = domain.map(parse_domain).transpose()?;
        let label = domain.clone().unwrap_or_else(|| "default".to_string());
        let chain = certificates_from_pem(&format!("certificate for {label}"), cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| TlsError::Pem {
            what: format!("private key for {label}"),
            error,
        })?;
        let key =
            CertifiedKey::from_der(chain, key, &provider()).map_err(|error| TlsError::Key {
                domain: label,
                error,
            })?;
        Ok(TlsCertificate {
            domain,
            key: Arc::new(key),
        })
    }

    /// [`TlsCertificate::from_pem`] from a certificate file and a key file.
    pub fn from_pem_files(
        domain: Option<&str>,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<TlsCertificate, TlsError> {
        TlsCertificate::from_pem(domain, &read(cert_path)?, &read(key_path)?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// The certificates in PEM text (a CA bundle or a chain); `what` names it in errors.
pub fn certificates_from_pem(
    what: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            what: what.to_string(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(chain)
}

/// [`certificates_from_pem`] from a file.
pub fn certificates_from_pem_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates_from_pem(&path.display().to_string(), &read(path)?)
}

/// A certificate's domain, lower-cased: a DNS name, optionally under a `*.` wildcard.
fn parse_domain(domain: &str) -> Result<String, TlsError> {
    let lower = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(lower)
    } else {
        Err(TlsError::Domain(domain.to_string()))
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Picks the certificate for a client's SNI name: the exact domain, else the wildcard
/// one label up, else the default.
#[derive(Debug)]
struct SniResolver {
    by_domain: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// The default is the certificate without a domain, else the first (as Go's TLS
    /// server does).
    fn new(certificates: &[TlsCertificate]) -> Result<SniResolver, TlsError> {
        let default = certificates
            .iter()
            .find(|c| c.domain.is_none())
            .or_else(|| certificates.first())
            .ok_or(TlsError::NoCertificates)?
            .key
            .clone();
        let by_domain = certificates
            .iter()
            .filter_map(|c| Some((c.domain.clone()?, c.key.clone())))
            .collect();
        Ok(SniResolver { by_domain, default })
    }

    fn find(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.by_domain.get(&name) {
            return Some(key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.by_domain.get(&format!("*.{parent}")).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        client_hello
            .server_name()
            .and_then(|name| self.find(name))
            .or_else(|| Some(self.default.clone()))
    }
}

/// The TLS listener's configuration: SNI over `certificates`, TLS 1.2 and 1.3, ALPN
/// `h2` then `http/1.1`.
pub(crate) fn server_config(
    certificates: &[TlsCertificate],
) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = SniResolver::new(certificates)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration for TLS to backends and route services: HTTP/1.1, trusting
/// `trusted_cas` (no CA: every TLS backend fails as untrusted).
pub(crate) fn client_config(
    trusted_cas: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in trusted_cas {
        roots.add(ca.clone())?;
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How a TLS handshake with a backend failed, in Gorouter's classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsFailure {
    /// The certificate does not name the registered `server_cert_domain_san`.
    HostnameMismatch,
    /// The certificate is not signed by a trusted CA, expired or malformed.
    UntrustedCertificate,
    /// Anything else: the backend speaks no TLS, or refused the handshake.
    Handshake,
}

impl TlsFailure {
    /// Classifies the I/O error of a failed client handshake.
    pub(crate) fn of(error: &std::io::Error) -> TlsFailure {
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => TlsFailure::HostnameMismatch,
            Some(rustls::Error::InvalidCertificate(_)) => TlsFailure::UntrustedCertificate,
            _ => TlsFailure::Handshake,
        }
    }

    /// Gorouter's status for the failure: 503 for a hostname mismatch, 526 for an
    /// untrusted certificate, 525 for a failed handshake.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            TlsFailure::HostnameMismatch => StatusCode::SERVICE_UNAVAILABLE,
            TlsFailure::UntrustedCertificate => {
                StatusCode::from_u16(526).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            TlsFailure::Handshake => StatusCode::from_u16(525).unwrap_or(StatusCode::BAD_GATEWAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_dns_names_or_wildcards() {
        assert_eq!(
            parse_domain("Apps.Example.COM.").unwrap(),
            "apps.example.com"
        );
        assert_eq!(parse_domain("*.example.com").unwrap(), "*.example.com");
        for bad in ["", "*.", "a..b", "ex ample.com", "a.*.com", "host:443"] {
            assert!(parse_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn certificate(domain: Option<&str>, name: &str) -> TlsCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        TlsCertificate::from_pem(
            domain,
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn sni_picks_the_exact_then_the_wildcard_domain_else_the_default() {
        let exact = certificate(Some("App.Example.com"), "app.example.com");
        let wildcard = certificate(Some("*.b.example.com"), "*.b.example.com");
        let fallback = certificate(None, "default.example.com");
        let resolver =
            SniResolver::new(&[exact.clone(), wildcard.clone(), fallback.clone()]).unwrap();
        let found = |name: &str| resolver.find(name);
        assert!(Arc::ptr_eq(&found("app.example.com").unwrap(), &exact.key));
        assert!(Arc::ptr_eq(&found("APP.example.com.").unwrap(), &exact.key));
        assert!(Arc::ptr_eq(
            &found("x.b.example.com").unwrap(),
            &wildcard.key
        ));
        // A wildcard covers one label only.
        assert!(found("y.x.b.example.com").is_none());
        assert!(found("b.example.com").is_none());
        assert!(found("other.example.net").is_none());
        assert!(Arc::ptr_eq(&resolver.default, &fallback.key));
        // Without a default certificate, the first one is.
        let resolver = SniResolver::new(&[wildcard.clone(), exact]).unwrap();
        assert!(Arc::ptr_eq(&resolver.default, &wildcard.key));
    }

    #[test]
    fn mismatched_keys_are_refused() {
        let a = rcgen::KeyPair::generate().unwrap();
        let b = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.com".to_string()])
            .unwrap()
            .self_signed(&a)
            .unwrap();
        let err = TlsCertificate::from_pem(
            Some("a.example.com"),
            cert.pem().as_bytes(),
            b.serialize_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        let err = TlsCertificate::from_pem(Some("a.example.com"), b"not pem", b"").unwrap_err();
        assert!(
            err.to_string()
                .contains("a.example.com: no PEM certificate"),
            "{err}"
        );
        assert!(matches!(
            server_config(&[]).unwrap_err(),
            TlsError::NoCertificates
        ));
    }
}
