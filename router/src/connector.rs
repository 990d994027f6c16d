//! Connections to backends and route services for the proxy's pooled client: plain
//! TCP for `http` URIs, TLS for `https` ones.
//!
//! The TLS server name is the URI's user-info when it has one (an endpoint registered
//! with `tls_port` is addressed as `https://<server_cert_domain_san>@<host>:<tls_port>`,
//! so the SAN is checked and is part of the connection pool's key), else its host (a
//! route service URL).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::TlsFailure;

/// Why a connection to a backend could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Dial(Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("TLS handshake with {server_name}")]
    Tls {
        server_name: String,
        failure: TlsFailure,
        source: io::Error,
    },
    #[error("TLS handshake with {0} timed out")]
    TlsTimeout(String),
}

impl ConnectError {
    /// The TLS failure class, when the handshake failed.
    pub(crate) fn tls_failure(&self) -> Option<TlsFailure> {
        match self {
            ConnectError::Tls { failure, .. } => Some(*failure),
            ConnectError::TlsTimeout(_) => Some(TlsFailure::Handshake),
            ConnectError::Dial(_) | ConnectError::ServerName(_) => None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct BackendConnector {
    tcp: HttpConnector,
    tls: TlsConnector,
    handshake_timeout: Duration,
}

impl BackendConnector {
    pub(crate) fn new(
        connect_timeout: Duration,
        handshake_timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> BackendConnector {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        BackendConnector {
            tcp,
            tls: TlsConnector::from(tls),
            handshake_timeout,
        }
    }
}

/// The TLS server name of an `https` URI: its user-info, else its host.
fn server_name(uri: &Uri) -> Result<ServerName<'static>, ConnectError> {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let name = match authority.rsplit_once('@') {
        Some((user_info, _)) => user_info,
        None => uri.host().unwrap_or_default(),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string()).map_err(|_| ConnectError::ServerName(name.to_string()))
}

impl tower_service::Service<Uri> for BackendConnector {
    type Response = BackendStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<BackendStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.tcp
            .poll_ready(cx)
            .map_err(|e| ConnectError::Dial(Box::new(e)))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = (uri.scheme() == Some(&Scheme::HTTPS))
            .then(|| server_name(&uri).map(|name| (name, self.tls.clone())))
            .transpose();
        let connecting = self.tcp.call(uri);
        let handshake_timeout = self.handshake_timeout;
        Box::pin(async move {
            let tls = tls?;
            let tcp = connecting
                .await
                .map_err(|e| ConnectError::Dial(Box::new(e)))?;
            let Some((server_name, connector)) = tls else {
                return Ok(BackendStream::Plain(tcp));
            };
            let name = server_name.to_str().into_owned();
            let handshake = connector.connect(server_name, tcp.into_inner());
            match tokio::time::timeout(handshake_timeout, handshake).await {
                Ok(Ok(stream)) => Ok(BackendStream::Tls(Box::new(TokioIo::new(stream)))),
                Ok(Err(source)) => Err(ConnectError::Tls {
                    server_name: name,
                    failure: TlsFailure::of(&source),
                    source,
                }),
                Err(_) => Err(ConnectError::TlsTimeout(name)),
            }
        })
    }
}

/// A connection to a backend, plain or TLS.
pub(crate) enum BackendStream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        match self {
            BackendStream::Plain(tcp) => tcp.connected(),
            BackendStream::Tls(tls) => tls.inner().get_ref().0.connected(),
        }
    }
}

impl Read for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_is_the_user_info_else_the_host() {
        let name = |uri: &str| server_name(&uri.parse().unwrap()).map(|n| n.to_str().into_owned());
        assert_eq!(
            name("https://backend.internal@10.0.0.1:61443/x").unwrap(),
            "backend.internal"
        );
        assert_eq!(
            name("https://rs.example.com/path").unwrap(),
            "rs.example.com"
        );
        assert_eq!(name("https://127.0.0.1:8443/").unwrap(), "127.0.0.1");
        assert!(matches!(
            name("https://bad%20name@10.0.0.1:1/"),
            Err(ConnectError::ServerName(_))
        ));
    }
}
