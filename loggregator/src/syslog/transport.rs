//! Getting syslog messages to a drain: TCP or TLS with octet-counted frames (RFC 6587)
//! for `syslog://` and `syslog-tls://`, one POST a message for `https://` (as CF's
//! HTTPS writer does). Every wait is bounded by the drain's timeouts; errors are
//! strings without the drain's credentials, shown in the drain's stats.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::drain_url::{DrainScheme, DrainUrl};
use super::SyslogConfig;

/// TLS client settings shared by every drain: the platform's roots (loaded once, off the
/// runtime) plus an optional extra CA, and an HTTPS client built on them.
#[derive(Default)]
pub(crate) struct TlsSettings {
    native_roots: tokio::sync::OnceCell<Vec<CertificateDer<'static>>>,
    state: Mutex<TlsState>,
}

#[derive(Default)]
struct TlsState {
    extra_roots: Vec<CertificateDer<'static>>,
    built: Option<(Arc<rustls::ClientConfig>, reqwest::Client)>,
}

impl TlsSettings {
    /// Trusts `certs` too, from the next connection on.
    pub(crate) fn set_extra_roots(&self, certs: Vec<CertificateDer<'static>>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.extra_roots = certs;
        state.built = None;
    }

    async fn client(
        &self,
        config: &SyslogConfig,
    ) -> Result<(Arc<rustls::ClientConfig>, reqwest::Client), String> {
        let native = self
            .native_roots
            .get_or_init(|| async {
                tokio::task::spawn_blocking(|| {
                    let found = rustls_native_certs::load_native_certs();
                    if !found.errors.is_empty() {
                        tracing::debug!(errors = ?found.errors, "some platform CA certificates could not be loaded");
                    }
                    found.certs
                })
                .await
                .unwrap_or_default()
            })
            .await;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(built) = &state.built {
            return Ok(built.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(native.iter().cloned());
        for cert in &state.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| format!("extra CA certificate: {e}"))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(config.connect_timeout)
            .timeout(config.write_timeout)
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| format!("HTTPS client setup: {}", chain(e)))?;
        let built = (Arc::new(tls), http);
        state.built = Some(built.clone());
        Ok(built)
    }
}

/// A TCP or TLS connection to a syslog server.
pub(crate) trait SyslogStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> SyslogStream for T {}

/// An open way to one drain.
pub(crate) enum Connection {
    Stream(Box<dyn SyslogStream>),
    Https {
        client: reqwest::Client,
        url: url::Url,
        credentials: Option<(String, Option<String>)>,
    },
}

impl Connection {
    pub(crate) async fn open(
        url: &DrainUrl,
        tls: &TlsSettings,
        config: &SyslogConfig,
    ) -> Result<Connection, String> {
        match url.scheme() {
            DrainScheme::Syslog => Ok(Connection::Stream(Box::new(
                tcp(url, config.connect_timeout).await?,
            ))),
            DrainScheme::SyslogTls => {
                let (tls_config, _) = tls.client(config).await?;
                let name = ServerName::try_from(url.host().to_string())
                    .map_err(|e| format!("invalid TLS server name: {e}"))?;
                let tcp = tcp(url, config.connect_timeout).await?;
                let stream = tokio::time::timeout(
                    config.connect_timeout,
                    tokio_rustls::TlsConnector::from(tls_config).connect(name, tcp),
                )
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
                Ok(Connection::Stream(Box::new(stream)))
            }
            DrainScheme::Https => {
                let (_, client) = tls.client(config).await?;
                let mut target = url.url().clone();
                let credentials = (!target.username().is_empty() || target.password().is_some())
                    .then(|| {
                        (
                            target.username().to_string(),
                            target.password().map(str::to_string),
                        )
                    });
                let _ = target.set_username("");
                let _ = target.set_password(None);
                Ok(Connection::Https {
                    client,
                    url: target,
                    credentials,
                })
            }
        }
    }

    /// Whether the server has closed the connection (or reset it). Syslog servers send
    /// nothing back, so anything readable is the end of the stream: checking before a
    /// write keeps a batch from vanishing into a connection the server already closed
    /// (the first write after the close would still succeed locally).
    pub(crate) fn closed_by_peer(&mut self) -> bool {
        let Connection::Stream(stream) = self else {
            return false;
        };
        let mut buf = [0u8; 1024];
        // Bounded, in case a server does talk back.
        for _ in 0..16 {
            match stream.read(&mut buf).now_or_never() {
                None => return false,
                Some(Ok(0)) | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
        false
    }

    /// Sends `messages` in order. On failure, how many were sent before it and why.
    pub(crate) async fn send(
        &mut self,
        messages: &[Vec<u8>],
        write_timeout: Duration,
    ) -> Result<(), (usize, String)> {
        match self {
            Connection::Stream(stream) => {
                let mut frames = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
                for message in messages {
                    frames.extend_from_slice(message.len().to_string().as_bytes());
                    frames.push(b' ');
                    frames.extend_from_slice(message);
                }
                let write = async {
                    stream.write_all(&frames).await?;
                    stream.flush().await
                };
                match tokio::time::timeout(write_timeout, write).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err((0, format!("write failed: {e}"))),
                    Err(_) => Err((0, "write timed out".to_string())),
                }
            }
            Connection::Https {
                client,
                url,
                credentials,
            } => {
                for (i, message) in messages.iter().enumerate() {
                    let mut request = client
                        .post(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "text/plain")
                        .body(message.clone());
                    if let Some((user, password)) = credentials {
                        request = request.basic_auth(user, password.as_ref());
                    }
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {}
                        Ok(response) => {
                            return Err((
                                i,
                                format!("POST responded with {} status code", response.status()),
                            ))
                        }
                        Err(e) => return Err((i, format!("POST failed: {}", chain(e)))),
                    }
                }
                Ok(())
            }
        }
    }
}

async fn tcp(url: &DrainUrl, connect_timeout: Duration) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(
        connect_timeout,
        TcpStream::connect((url.host(), url.port())),
    )
    .await
    .map_err(|_| format!("connecting to {}:{} timed out", url.host(), url.port()))?
    .map_err(|e| format!("cannot connect to {}:{}: {e}", url.host(), url.port()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A reqwest error with its causes (its own message is often just "error sending
/// request") and without the URL, which may hold credentials.
fn chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
