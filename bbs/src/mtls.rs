//! Mutual TLS of the platform's internal APIs, as Diego's: the BBS API (called by the
//! cells and the Cloud Controller) and the rep API (called by the BBS). A CA the
//! platform generates ([`generate`], `wfd certs`) signs one certificate per component;
//! a server requires a client certificate signed by that CA, and a client presents its
//! own and checks the server's against the CA (and the host it dialled). Without a
//! [`MutualTls`] these APIs speak plain HTTP, as `wfd dev` does on loopback.
//!
//! rustls on the ring provider, as everywhere in the workspace.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The components [`generate`] issues a certificate for: `<name>.pem` and
/// `<name>-key.pem` (the cells share `rep`'s, as Diego's reps share one). The routers'
/// is their client certificate for NATS, and `nats` is `nats-server`'s, for a NATS
/// with TLS on the same CA.
pub const COMPONENTS: [&str; 5] = ["bbs", "rep", "controller", "router", "nats"];
/// The CA's certificate and key in a [`generate`]d directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
/// The CA's common name (its certificate is rebuilt from it when [`generate`] reuses
/// the CA key of an earlier run).
const CA_NAME: &str = "Wasmfoundry internal CA";
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// Component certificates are re-issued by running `wfd certs` again on the same
/// directory, which keeps the CA.
const CERT_VALIDITY: time::Duration = time::Duration::days(365);
/// Longest a client may take over its handshake before the server drops it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes done, waiting for the server to take them.
const ACCEPT_QUEUE: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error(transparent)]
    Pem(#[from] wf_router::TlsError),
    #[error("{path}: no private key: {error}")]
    Key {
        path: String,
        error: rustls::pki_types::pem::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// A component's side of the internal mutual TLS: its certificate and key, and the
/// platform CA that every peer's certificate must be signed by. Cheap to clone.
#[derive(Clone)]
pub struct MutualTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// Never prints the key.
impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MutualTls { .. }")
    }
}

impl MutualTls {
    /// The CA bundle, this component's certificate chain (leaf first) and its private
    /// key, from PEM files.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<MutualTls, MtlsError> {
        let cas = wf_router::certificates_from_pem_file(ca)?;
        let chain = wf_router::certificates_from_pem_file(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|error| MtlsError::Key {
            path: key.display().to_string(),
            error,
        })?;
        MutualTls::new(&cas, chain, key)
    }

    fn new(
        cas: &[CertificateDer<'static>],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<MutualTls, MtlsError> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca.clone())?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(MutualTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// An HTTP client builder that presents this certificate and trusts only servers
    /// whose certificate the platform CA signed for the host dialled.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().use_preconfigured_tls(self.client_config())
    }

    /// The TLS client side of [`MutualTls::client_builder`], for other HTTP clients
    /// (`reqwest::blocking`'s `use_preconfigured_tls`).
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::clone(&self.client)
    }
}

/// The scheme of an internal API's URLs: `https` under mutual TLS, else `http`.
pub fn scheme(tls: Option<&MutualTls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// Serves `router` on `listener` until `shutdown`: with `tls`, only to clients whose
/// certificate the platform CA signed; without, plain HTTP.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<&MutualTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, TlsAcceptor::from(tls.server.clone()))?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Connections that completed the mutual TLS handshake. Handshakes run in their own
/// tasks, so a slow or hostile client holds up no other; the socket closes when the
/// listener is dropped.
struct TlsListener {
    local_addr: SocketAddr,
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (done, handshaken) = mpsc::channel(ACCEPT_QUEUE);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, most likely: wait as axum's own listener does.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let _ = done.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%peer, %error, "TLS handshake refused")
                        }
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local_addr,
            handshaken,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when aborted, by this listener's drop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// Writes the platform CA and a certificate for each of `components` into `dir`:
/// `ca.pem` and `ca-key.pem`, `<component>.pem` and `<component>-key.pem`, each valid
/// for `hosts` (DNS names or IP addresses) as a server and as a client. A CA already in
/// `dir` is kept, so running it again re-issues the certificates (new hosts, renewal)
/// without touching what the CA signed before. Keys are written readable by the owner
/// only. Returns the files written.
pub fn generate(
    dir: &Path,
    hosts: &[String],
    components: &[&str],
) -> Result<Vec<PathBuf>, MtlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| MtlsError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let now = time::OffsetDateTime::now_utc();
    let mut written = Vec::new();

    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, CA_NAME.to_string());
    ca.distinguished_name
        .push(DnType::OrganizationName, "Wasmfoundry".to_string());
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + CA_VALIDITY;
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let ca_key_pair = match std::fs::read_to_string(&ca_key) {
        Ok(pem) if ca_cert.exists() => KeyPair::from_pem(&pem)?,
        Ok(_) => return Err(io(&ca_cert)(std::io::ErrorKind::NotFound.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate()?;
            write_private(&ca_key, &key.serialize_pem())?;
            std::fs::write(&ca_cert, ca.self_signed(&key)?.pem()).map_err(io(&ca_cert))?;
            written.extend([ca_cert.clone(), ca_key.clone()]);
            key
        }
        Err(e) => return Err(io(&ca_key)(e)),
    };
    let issuer = Issuer::new(ca, ca_key_pair);

    for component in components {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, component.to_string());
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + CERT_VALIDITY;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = (
            dir.join(format!("{component}.pem")),
            dir.join(format!("{component}-key.pem")),
        );
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

/// Writes `contents` to `path` readable and writable by the owner only (from its
/// creation on: the key is never readable by others, even for a moment).
fn write_private(path: &Path, contents: &str) -> Result<(), MtlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let error = |error| MtlsError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    // An older file keeps its mode through `open`.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn hosts() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    fn load(dir: &Path, component: &str) -> MutualTls {
        MutualTls::from_pem_files(
            &dir.join(CA_CERT),
            &dir.join(format!("{component}.pem")),
            &dir.join(format!("{component}-key.pem")),
        )
        .unwrap()
    }

    /// A server under `tls` answering `GET /ping`; its `https://127.0.0.1:port` URL.
    async fn server(tls: MutualTls) -> (String, tokio_util::sync::CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        let cancel = tokio_util::sync::CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            serve(listener, router, Some(&tls), async move {
                stop.cancelled().await
            })
            .await
        });
        (url, cancel)
    }

    async fn ping(client: reqwest::Client, url: &str) -> Result<String, reqwest::Error> {
        client
            .get(format!("{url}/ping"))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    #[test]
    fn keys_are_private_and_a_second_run_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(dir.path(), &hosts(), &COMPONENTS).unwrap();
        assert_eq!(first.len(), 2 + 2 * COMPONENTS.len());
        for path in &first {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let key = path.to_string_lossy().ends_with("-key.pem");
            assert!(
                !key || mode == 0o600,
                "{} has mode {mode:o}",
                path.display()
            );
        }
        let ca = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let again = generate(dir.path(), &hosts(), &["rep"]).unwrap();
        assert_eq!(again.len(), 2, "{again:?}");
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca);
    }

    #[tokio::test]
    async fn servers_take_only_clients_the_platform_ca_signed() {
        let platform = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        generate(platform.path(), &hosts(), &COMPONENTS).unwrap();
        generate(other.path(), &hosts(), &COMPONENTS).unwrap();
        let (url, _stop) = server(load(platform.path(), "bbs")).await;

        // A peer with the platform's CA: the rep re-issued by a second run too.
        let rep = load(platform.path(), "rep");
        assert_eq!(
            ping(rep.client_builder().build().unwrap(), &url)
                .await
                .unwrap(),
            "pong"
        );
        generate(platform.path(), &hosts(), &["rep"]).unwrap();
        let reissued = load(platform.path(), "rep")
            .client_builder()
            .build()
            .unwrap();
        assert_eq!(ping(reissued, &url).await.unwrap(), "pong");

        // No client certificate, though the server is trusted.
        let mut roots = RootCertStore::empty();
        for ca in wf_router::certificates_from_pem_file(&platform.path().join(CA_CERT)).unwrap() {
            roots.add(ca).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let no_cert = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let anonymous = reqwest::Client::builder()
            .use_preconfigured_tls(no_cert)
            .build()
            .unwrap();
        assert!(ping(anonymous, &url).await.is_err());
        // A certificate of another CA: refused, and that client distrusts the server too.
        let stranger = load(other.path(), "controller");
        assert!(ping(stranger.client_builder().build().unwrap(), &url)
            .await
            .is_err());
        // Plain HTTP gets no answer.
        let plain = url.replacen("https", "http", 1);
        assert!(ping(reqwest::Client::new(), &plain).await.is_err());
        // The server still serves its own.
        assert_eq!(
            ping(rep.client_builder().build().unwrap(), &url)
                .await
                .unwrap(),
            "pong"
        );
    }

    #[tokio::test]
    async fn clients_check_the_servers_host_name() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &["bbs.internal".to_string()], &COMPONENTS).unwrap();
        let (url, _stop) = server(load(dir.path(), "bbs")).await;
        let client = load(dir.path(), "rep").client_builder().build().unwrap();
        let err = ping(client, &url).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }
}
