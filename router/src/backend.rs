//! The proxy's HTTP/1.1 client for backends and route services. It dials them (TCP,
//! or TLS with the name to check: an endpoint's `server_cert_domain_san`, a route
//! service's host), keeps their idle keep-alive connections for reuse, and speaks
//! HTTP/1.1 on them itself, inside the task of the client's request: the request head
//! goes out in one write with the start of its body, the response head is parsed with
//! `httparse`, and the response body is read by the [`BackendBody`] handed to the
//! client's connection, which puts the connection back in the pool as its last byte
//! is read.
//!
//! This is how nginx proxies, and why the router does not use hyper's pooled client:
//! that one runs each backend connection as a task of its own, so each request crossed
//! two tasks and their channels, and its pool's checkout and return cost more again;
//! together about half the router's CPU time a request (docs/performance.md).
//!
//! A connection taken from the pool may have been closed by the backend meanwhile: it is
//! peeked at before reuse, and one found closed is dropped. When a reused connection
//! still fails before the request's body was read, the request goes again on a new
//! connection to the same backend if it could not be written, or if nothing of a
//! response arrived and its method is one that Go's client replays (GET, HEAD,
//! OPTIONS, TRACE).

use std::borrow::Cow;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::TlsFailure;

/// Idle connections kept per backend (nginx's `keepalive` of a busy upstream; Gorouter
/// keeps 100 in all by default) and in all.
const MAX_IDLE_PER_BACKEND: usize = 128;
const MAX_IDLE: usize = 10_000;
/// How often idle connections past their timeout are closed, at most.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// The largest response head accepted from a backend, and its most header fields
/// (hyper's client limits: about 400 KiB and 100).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
const MAX_RESPONSE_HEADERS: usize = 100;
/// The longest chunk-size line, and the most trailer bytes, of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Reads from a backend ask for this much room.
const READ_SIZE: usize = 16 * 1024;
/// Request body data is gathered into writes of up to this size.
const WRITE_SIZE: usize = 64 * 1024;

/// Why a connection to a backend could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("dial tcp {addr}: {source}")]
    Dial { addr: String, source: io::Error },
    #[error("dial tcp {0}: timeout")]
    DialTimeout(String),
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
            ConnectError::Dial { .. }
            | ConnectError::DialTimeout(_)
            | ConnectError::ServerName(_) => None,
        }
    }
}

/// Why a request to a backend failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("request body exceeds the limit of {0} bytes")]
    RequestBodyTooLarge(u64),
    #[error("reading the client's request body: {0}")]
    RequestBody(#[source] hyper::Error),
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("the backend closed the connection before it responded")]
    Closed,
    #[error("invalid response: {0}")]
    InvalidResponse(&'static str),
}

impl BackendError {
    /// Whether no connection could be made: the request never reached the backend.
    pub(crate) fn connect_error(&self) -> Option<&ConnectError> {
        match self {
            BackendError::Connect(e) => Some(e),
            _ => None,
        }
    }

    /// Whether a request with `method` that failed this way on a reused connection can
    /// go again on a new one: the request could not be written (the backend had closed
    /// the idle connection), or the connection ended before any byte of a response and
    /// the method is one Go's client replays too (the backend may have seen it).
    fn may_resend(&self, method: &Method) -> bool {
        let replayable = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        match self {
            BackendError::Write(_) => true,
            BackendError::Closed => replayable,
            BackendError::Read(e) => {
                replayable
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    )
            }
            _ => false,
        }
    }
}

/// Where a request goes: `host:port`, and for TLS the name the certificate must have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) addr: &'a str,
    pub(crate) tls_name: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The pool's key: TLS connections to one address with different names to check
    /// are different connections.
    fn key(&self) -> Cow<'a, str> {
        match self.tls_name {
            None => Cow::Borrowed(self.addr),
            Some(name) => Cow::Owned(format!("{name}@{}", self.addr)),
        }
    }
}

/// The head of a request to a backend; the path is in origin form (`/path?query`).
/// The router's own headers are `added` after the client's `headers` (which the
/// proxy stripped of the names it replaces).
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path_and_query: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) added: &'a [&'a HeaderLines],
}

/// Header lines as they go on the wire (`name: value\r\n`). The headers the router
/// adds to every request are written this way rather than inserted into the client's
/// header map: no hashing, no value to allocate and no map to grow or drop for each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HeaderLines(Vec<u8>);

impl HeaderLines {
    pub(crate) fn with_capacity(bytes: usize) -> HeaderLines {
        HeaderLines(Vec::with_capacity(bytes))
    }

    /// Adds `name: <the parts of the value>`. A value that a header cannot carry
    /// (control characters, as `HeaderValue` refuses them) is left out.
    pub(crate) fn push(&mut self, name: &HeaderName, value: &[&[u8]]) {
        // Without an early exit the check compiles to vector instructions.
        let invalid = |any: u8, b: &u8| any | u8::from((*b < 0x20 && *b != b'\t') || *b == 0x7f);
        if value.iter().any(|part| part.iter().fold(0, invalid) != 0) {
            return;
        }
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        for part in value {
            self.0.extend_from_slice(part);
        }
        self.0.extend_from_slice(b"\r\n");
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Appends the lines to `map`, as a backend reads them after the headers already
    /// there (tests and fuzzing read them so).
    pub(crate) fn append_to(&self, map: &mut HeaderMap) {
        let mut rest = &self.0[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let line = &rest[..end];
            rest = &rest[end + 2..];
            let Some(colon) = line.windows(2).position(|w| w == b": ") else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(&line[colon + 2..]),
            ) {
                map.append(name, value);
            }
        }
    }
}

/// The client's request body, read by the attempt that sends it; counts what was read
/// against the router's limit.
pub(crate) struct RequestBody {
    incoming: Incoming,
    received: u64,
    limit: Option<u64>,
    read: bool,
}

impl RequestBody {
    pub(crate) fn new(incoming: Incoming, limit: Option<u64>) -> RequestBody {
        RequestBody {
            incoming,
            received: 0,
            limit,
            read: false,
        }
    }

    /// The body bytes read from the client so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Whether another attempt can still send the body: no byte of it was read yet.
    pub(crate) fn is_unread(&self) -> bool {
        !self.read
    }

    /// The next frame, with the limit applied; `Ok(None)` at the end.
    fn counted(
        &mut self,
        frame: Option<Result<Frame<Bytes>, hyper::Error>>,
    ) -> Result<Option<Frame<Bytes>>, BackendError> {
        self.read = true;
        let Some(frame) = frame else {
            return Ok(None);
        };
        let frame = frame.map_err(BackendError::RequestBody)?;
        if let Some(data) = frame.data_ref() {
            self.received += data.len() as u64;
            if let Some(limit) = self.limit.filter(|l| self.received > *l) {
                return Err(BackendError::RequestBodyTooLarge(limit));
            }
        }
        Ok(Some(frame))
    }
}

/// The proxy's connections to backends: a pool of idle ones per backend, and the
/// settings to make new ones. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Backends(Arc<Pool>);

struct Pool {
    idle: Mutex<IdleConnections>,
    tls: TlsConnector,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    idle_timeout: Duration,
}

struct IdleConnections {
    /// Per pool key, oldest first.
    by_backend: foldhash::HashMap<Box<str>, Vec<Idle>>,
    count: usize,
    swept: Instant,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection to a backend, with what was read from it and not yet used.
pub(crate) struct Conn {
    io: BackendStream,
    buf: BytesMut,
    key: Box<str>,
}

impl Conn {
    /// The stream, and the bytes the backend sent past the response head: an upgraded
    /// connection's first bytes.
    pub(crate) fn into_parts(self) -> (BackendStream, BytesMut) {
        (self.io, self.buf)
    }
}

impl Backends {
    pub(crate) fn new(
        connect_timeout: Duration,
        handshake_timeout: Duration,
        idle_timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> Backends {
        Backends(Arc::new(Pool {
            idle: Mutex::new(IdleConnections {
                by_backend: foldhash::HashMap::default(),
                count: 0,
                swept: Instant::now(),
            }),
            tls: TlsConnector::from(tls),
            connect_timeout,
            handshake_timeout,
            idle_timeout,
        }))
    }

    /// Sends a request and reads the response head. The response body streams from the
    /// connection, which returns to the pool when the body ends (unless the backend
    /// closes it, or the body is dropped before its end).
    pub(crate) async fn send(
        &self,
        target: Target<'_>,
        head: &RequestHead<'_>,
        body: &mut RequestBody,
    ) -> Result<Response<BackendBody>, BackendError> {
        let key = target.key();
        let mut pooled = self.checkout(&key);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                // Boxed: connecting (a TLS handshake's state above all) would make the
                // future of every request several times larger.
                None => Box::pin(self.connect(target, &key)).await?,
            };
            match exchange(&mut conn, head, body).await {
                Ok(response) => return Ok(self.response(conn, response, head.method)),
                Err(e) if reused && body.is_unread() && e.may_resend(head.method) => {
                    tracing::debug!(backend = %target.addr, error = %e, "pooled connection was closed; sending on a new one");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleConnections> {
        self.0
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to the backend that is still fresh and
    /// open; the others found on the way are closed.
    fn checkout(&self, key: &str) -> Option<Conn> {
        let idle_timeout = self.0.idle_timeout;
        let mut idle = self.lock();
        let conns = idle.by_backend.get_mut(key)?;
        let mut taken = 0;
        let mut found = None;
        while let Some(i) = conns.pop() {
            taken += 1;
            if i.since.elapsed() < idle_timeout && !i.conn.io.is_closed() {
                found = Some(i.conn);
                break;
            }
        }
        idle.count -= taken;
        found
    }

    /// Keeps a connection whose exchange ended cleanly for the next request.
    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let idle_timeout = self.0.idle_timeout;
        let mut idle = self.lock();
        if now.duration_since(idle.swept) >= SWEEP_INTERVAL {
            idle.swept = now;
            let mut closed = 0;
            idle.by_backend.retain(|_, conns| {
                let before = conns.len();
                conns.retain(|i| now.duration_since(i.since) < idle_timeout);
                closed += before - conns.len();
                !conns.is_empty()
            });
            idle.count -= closed;
        }
        if idle.count >= MAX_IDLE {
            return;
        }
        let conns = match idle.by_backend.get_mut(&conn.key) {
            Some(conns) => conns,
            None => idle.by_backend.entry(conn.key.clone()).or_default(),
        };
        if conns.len() >= MAX_IDLE_PER_BACKEND {
            return;
        }
        conns.push(Idle { conn, since: now });
        idle.count += 1;
    }

    async fn connect(&self, target: Target<'_>, key: &str) -> Result<Conn, ConnectError> {
        let addr = target.addr;
        let tcp = match tokio::time::timeout(self.0.connect_timeout, TcpStream::connect(addr)).await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => {
                return Err(ConnectError::Dial {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => return Err(ConnectError::DialTimeout(addr.to_string())),
        };
        // Requests are written whole: Nagle would only hold back their last segment.
        let _ = tcp.set_nodelay(true);
        let io = match target.tls_name {
            None => BackendStream::Plain(tcp),
            Some(name) => {
                let server_name = server_name(name)?;
                let handshake = self.0.tls.connect(server_name, tcp);
                match tokio::time::timeout(self.0.handshake_timeout, handshake).await {
                    Ok(Ok(stream)) => BackendStream::Tls(Box::new(stream)),
                    Ok(Err(source)) => {
                        return Err(ConnectError::Tls {
                            server_name: name.to_string(),
                            failure: TlsFailure::of(&source),
                            source,
                        })
                    }
                    Err(_) => return Err(ConnectError::TlsTimeout(name.to_string())),
                }
            }
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_SIZE),
            key: key.into(),
        })
    }

    /// The response, with a body that reads the rest of it from the connection.
    fn response(&self, conn: Conn, head: ResponseHead, method: &Method) -> Response<BackendBody> {
        let (framing, keep_alive) = head.framing(method);
        let ResponseHead {
            status,
            version,
            headers,
        } = head;
        let mut body = BackendBody {
            conn: Some(conn),
            framing,
            keep_alive,
            backends: self.clone(),
        };
        if matches!(body.framing, Framing::Length(0)) {
            // No body (a HEAD request's answer, say): the connection is free now; the
            // client's connection may never poll an empty body.
            body.finish();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        resp
    }
}

/// Writes the request and reads the response head (past any `1xx` but `101`).
async fn exchange(
    conn: &mut Conn,
    head: &RequestHead<'_>,
    body: &mut RequestBody,
) -> Result<ResponseHead, BackendError> {
    write_request(&mut conn.io, head, body).await?;
    let mut received_any = false;
    loop {
        if let Some(head) = take_final_head(&mut conn.buf, &mut received_any)? {
            return Ok(head);
        }
        conn.buf.reserve(READ_SIZE);
        let n =
            poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf))
                .await
                .map_err(BackendError::Read)?;
        if n == 0 {
            return Err(if received_any || !conn.buf.is_empty() {
                BackendError::InvalidResponse("connection closed within the response head")
            } else {
                BackendError::Closed
            });
        }
    }
}

/// Writes the request head and body: the head with the first body data in one write,
/// a body of unknown length chunked.
async fn write_request(
    io: &mut BackendStream,
    head: &RequestHead<'_>,
    body: &mut RequestBody,
) -> Result<(), BackendError> {
    let has_body = !body.incoming.is_end_stream();
    // The client's `Content-Length` stands; else the body's known length, else chunks.
    let length = (has_body && !head.headers.contains_key(header::CONTENT_LENGTH))
        .then(|| body.incoming.size_hint().exact());
    let chunked = length == Some(None);
    let head_len = head.headers.iter().fold(0, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    });
    let added_len: usize = head.added.iter().map(|lines| lines.as_bytes().len()).sum();
    let mut out = Vec::with_capacity(64 + head.path_and_query.len() + head_len + added_len);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for lines in head.added {
        out.extend_from_slice(lines.as_bytes());
    }
    match length {
        Some(None) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(Some(exact)) => {
            out.extend_from_slice(format!("content-length: {exact}\r\n").as_bytes())
        }
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    if has_body {
        loop {
            // What the client already sent joins the pending write; the write goes out
            // before waiting for more.
            let next = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body.incoming).poll_frame(cx)))
                .await
            {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if !out.is_empty() {
                        io.write_all(&out).await.map_err(BackendError::Write)?;
                        io.flush().await.map_err(BackendError::Write)?;
                        out.clear();
                    }
                    body.incoming.frame().await
                }
            };
            let Some(frame) = body.counted(next)? else {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                break;
            };
            let Ok(data) = frame.into_data() else {
                // Trailers: not forwarded (nor by Gorouter to HTTP/1.1 backends).
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            if out.len() + data.len() <= WRITE_SIZE {
                out.extend_from_slice(&data);
            } else {
                io.write_all(&out).await.map_err(BackendError::Write)?;
                out.clear();
                io.write_all(&data).await.map_err(BackendError::Write)?;
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if !out.is_empty() {
        io.write_all(&out).await.map_err(BackendError::Write)?;
    }
    io.flush().await.map_err(BackendError::Write)
}

struct ResponseHead {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

impl ResponseHead {
    /// How the body of this response to `method` ends, and whether the connection can
    /// take another request after it (RFC 9112 6.3).
    fn framing(&self, method: &Method) -> (Framing, bool) {
        let status = self.status;
        let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
            Framing::Upgrade
        } else if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else if let Some(te) = last_transfer_coding(&self.headers) {
            if te.eq_ignore_ascii_case("chunked") {
                Framing::Chunked(ChunkState::Size)
            } else {
                Framing::Close
            }
        } else {
            match content_length(&self.headers) {
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        let keep_alive = self.version == Version::HTTP_11
            && !matches!(framing, Framing::Close | Framing::Upgrade)
            && !connection_has(&self.headers, "close");
        (framing, keep_alive)
    }
}

/// A whole response as the client reads it from a connection that delivers `bytes` in
/// pieces of `piece` bytes and then closes: its status and body, or why it was refused.
/// The fuzz target `backend_response` runs it (backends are apps: untrusted).
pub(crate) fn read_response(
    bytes: &[u8],
    method: &Method,
    piece: usize,
) -> Result<(StatusCode, Vec<u8>), String> {
    let mut pieces = bytes.chunks(piece.max(1));
    let mut buf = BytesMut::new();
    let head = loop {
        if let Some(head) = take_final_head(&mut buf, &mut false).map_err(|e| e.to_string())? {
            break head;
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None => return Err(BackendError::Closed.to_string()),
        }
    };
    let (mut framing, _) = head.framing(method);
    let mut body = Vec::new();
    let mut append = |frame: Option<Frame<Bytes>>| {
        if let Some(data) = frame.and_then(|f| f.into_data().ok()) {
            body.extend_from_slice(&data);
        }
    };
    loop {
        match framing.step(&mut buf).map_err(|e| e.to_string())? {
            Step::More(frame) => append(Some(frame)),
            Step::Last(frame) => {
                append(frame);
                return Ok((head.status, body));
            }
            Step::NeedMore => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None if matches!(framing, Framing::Close) => return Ok((head.status, body)),
                None => return Err(BODY_CUT_SHORT.into()),
            },
        }
    }
}

/// The final response head at the start of `buf`, taken from it past any interim ones
/// (`1xx` but `101`, noted in `interim`); `None` while incomplete.
fn take_final_head(
    buf: &mut BytesMut,
    interim: &mut bool,
) -> Result<Option<ResponseHead>, BackendError> {
    while let Some((len, head)) = parse_response_head(buf)? {
        buf.advance(len);
        if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Some(head));
        }
        *interim = true;
    }
    Ok(None)
}

/// The response head at the start of `buf` and its length, `None` while incomplete.
fn parse_response_head(buf: &[u8]) -> Result<Option<(usize, ResponseHead)>, BackendError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    // However the head arrives, one larger than the limit is refused.
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_RESPONSE_HEAD => {
            return Err(BackendError::InvalidResponse("response head too large"))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(BackendError::InvalidResponse("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(BackendError::InvalidResponse("too many header fields"))
        }
        Err(_) => return Err(BackendError::InvalidResponse("malformed response head")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(BackendError::InvalidResponse("invalid status code"))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Room for the two the proxy may add (`X-Vcap-Request-Id`, a sticky `Set-Cookie`).
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + 2);
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| BackendError::InvalidResponse("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| BackendError::InvalidResponse("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Some((
        len,
        ResponseHead {
            status,
            version,
            headers,
        },
    )))
}

/// The last transfer coding named by `Transfer-Encoding`, when it is present.
fn last_transfer_coding(headers: &HeaderMap) -> Option<&str> {
    let mut last = None;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let text = value.to_str().unwrap_or("invalid");
        if let Some(coding) = text.rsplit(',').map(str::trim).find(|c| !c.is_empty()) {
            last = Some(coding);
        }
    }
    last
}

/// `Content-Length`, when present and valid (repeats must agree).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().ok()?.split(',') {
            let n: u64 = part.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn server_name(name: &str) -> Result<ServerName<'static>, ConnectError> {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string()).map_err(|_| ConnectError::ServerName(name.to_string()))
}

/// How a response body ends.
enum Framing {
    /// After this many more bytes.
    Length(u64),
    Chunked(ChunkState),
    /// When the backend closes the connection.
    Close,
    /// It has none: the connection now belongs to the upgraded protocol.
    Upgrade,
}

/// What a body's buffered bytes give.
enum Step {
    /// A frame, and more after it.
    More(Frame<Bytes>),
    /// The body ends, with this frame last.
    Last(Option<Frame<Bytes>>),
    /// More bytes are needed (for a body running until close: or its end).
    NeedMore,
}

/// The end of the connection within a body framed by length or chunks.
const BODY_CUT_SHORT: &str = "the backend closed the connection within the response body";

impl Framing {
    /// Decodes what it can of the body from the start of `buf`, consuming it.
    fn step(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
        Ok(match self {
            Framing::Upgrade | Framing::Length(0) => Step::Last(None),
            Framing::Length(remaining) if !buf.is_empty() => {
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                let data = Frame::data(buf.split_to(n as usize).freeze());
                if *remaining == 0 {
                    Step::Last(Some(data))
                } else {
                    Step::More(data)
                }
            }
            Framing::Chunked(state) => match state.decode(buf)? {
                Decoded::Data(data) => Step::More(Frame::data(data)),
                Decoded::Trailers(trailers) => Step::Last(Some(Frame::trailers(trailers))),
                Decoded::End => Step::Last(None),
                Decoded::NeedMore => Step::NeedMore,
            },
            Framing::Close if !buf.is_empty() => Step::More(Frame::data(buf.split().freeze())),
            Framing::Length(_) | Framing::Close => Step::NeedMore,
        })
    }
}

/// Where a chunked body's decoding is.
#[derive(Debug, PartialEq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers(HeaderMap),
    Done,
}

/// What the chunked decoder made of the buffer.
#[derive(Debug, PartialEq)]
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    NeedMore,
}

fn invalid_chunk(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl ChunkState {
    /// Decodes from the start of `buf` what it can, consuming it.
    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match self {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let digits = line
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    if digits.is_empty() || digits.len() > 16 {
                        return Err(invalid_chunk("invalid chunk size"));
                    }
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or_else(|| invalid_chunk("invalid chunk size"))?;
                    *self = if size == 0 {
                        ChunkState::Trailers(HeaderMap::new())
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (*remaining).min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    *remaining -= n;
                    if *remaining == 0 {
                        *self = ChunkState::DataEnd;
                    }
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid_chunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = ChunkState::Size;
                }
                ChunkState::Trailers(trailers) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        let trailers = std::mem::take(trailers);
                        *self = ChunkState::Done;
                        return Ok(if trailers.is_empty() {
                            Decoded::End
                        } else {
                            Decoded::Trailers(trailers)
                        });
                    }
                    let (name, value) = line
                        .iter()
                        .position(|b| *b == b':')
                        .map(|i| (&line[..i], line[i + 1..].trim_ascii()))
                        .ok_or_else(|| invalid_chunk("invalid trailer field"))?;
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                    {
                        trailers.append(name, value);
                    }
                    if trailers.len() > MAX_RESPONSE_HEADERS {
                        return Err(invalid_chunk("too many trailer fields"));
                    }
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// A CRLF-terminated line from the start of `buf`, without the CRLF; `None` while
/// incomplete.
fn take_line(buf: &mut BytesMut, max: usize) -> io::Result<Option<Bytes>> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end > max => Err(invalid_chunk("chunked body line too long")),
        Some(end) => {
            let mut line = buf.split_to(end + 1).freeze();
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > max => Err(invalid_chunk("chunked body line too long")),
        None => Ok(None),
    }
}

/// A backend's response body, read from its connection as the client's connection
/// asks for it. The connection goes back to the pool when the body ends cleanly.
pub(crate) struct BackendBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    backends: Backends,
}

impl BackendBody {
    /// The connection of a `101 Switching Protocols` response.
    pub(crate) fn into_upgraded(mut self) -> Option<Conn> {
        match self.framing {
            Framing::Upgrade => self.conn.take(),
            _ => None,
        }
    }

    /// Reads more of the body into the connection's buffer. The end of the connection
    /// ends a body that runs until then, and is an error within any other.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if conn.buf.capacity() - conn.buf.len() < READ_SIZE / 4 {
            conn.buf.reserve(READ_SIZE);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut conn.io),
            cx,
            &mut conn.buf
        ))?;
        if n == 0 {
            self.conn = None;
            if !matches!(self.framing, Framing::Close) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    BODY_CUT_SHORT,
                )));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The body ended: its connection is free for another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Bytes past the response are a backend's protocol error: not reused.
            if self.keep_alive && conn.buf.is_empty() {
                self.backends.checkin(conn);
            }
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf)? {
                Step::More(frame) => return Poll::Ready(Some(Ok(frame))),
                Step::Last(frame) => {
                    this.finish();
                    return Poll::Ready(frame.map(Ok));
                }
                Step::NeedMore => ready!(this.poll_read(cx))?,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
            || matches!(
                self.framing,
                Framing::Length(0) | Framing::Upgrade | Framing::Chunked(ChunkState::Done)
            )
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A connection to a backend, plain or TLS.
pub(crate) enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// Whether an idle connection was closed by the backend (or sent bytes nobody asked
    /// for). A peek without waiting: no system call unless the socket became readable
    /// since it was last read to the end.
    fn is_closed(&self) -> bool {
        let tcp = match self {
            BackendStream::Plain(tcp) => tcp,
            BackendStream::Tls(tls) => tls.get_ref().0,
        };
        let mut byte = [0u8; 1];
        let mut peeked = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_peek(&mut cx, &mut peeked) {
            Poll::Pending => false,
            // TLS may send records unasked (session tickets, close_notify): rustls reads them.
            Poll::Ready(Ok(n)) => n == 0 || matches!(self, BackendStream::Plain(_)),
            Poll::Ready(Err(_)) => true,
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
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

    fn decode_all(input: &[u8], split: usize) -> io::Result<(Vec<u8>, Option<HeaderMap>)> {
        let mut state = ChunkState::Size;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for piece in input.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match state.decode(&mut buf)? {
                    Decoded::Data(d) => data.extend_from_slice(&d),
                    Decoded::Trailers(t) => return Ok((data, Some(t))),
                    Decoded::End => return Ok((data, None)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete"))
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in [1, 2, 3, 7, body.len()] {
            let (data, trailers) = decode_all(body, split).unwrap();
            assert_eq!(data, b"hello, world", "split {split}");
            assert!(trailers.is_none());
        }
        let (data, trailers) = decode_all(b"A\r\n0123456789\r\n0\r\nx-sum: 45\r\n\r\n", 4).unwrap();
        assert_eq!(data, b"0123456789");
        assert_eq!(trailers.unwrap()["x-sum"], "45");
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"g\r\nx\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\nno colon\r\n\r\n",
        ] {
            assert!(
                decode_all(bad, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(&long, 100).is_err());
    }

    #[test]
    fn response_heads_parse_with_their_framing_headers() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello";
        assert!(parse_response_head(&raw[..20]).unwrap().is_none());
        let (len, head) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], b"hello");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(content_length(&head.headers), Some(5));

        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(parse_response_head(&many).is_err());
        assert!(parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_response_head(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn framing_headers_are_read_as_http_1_1_says() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        assert_eq!(
            content_length(&headers(&[("content-length", "7")])),
            Some(7)
        );
        assert_eq!(
            content_length(&headers(&[("content-length", "7, 7")])),
            Some(7)
        );
        assert_eq!(
            content_length(&headers(&[("content-length", "7, 8")])),
            None
        );
        assert_eq!(content_length(&headers(&[("content-length", "-1")])), None);
        assert_eq!(
            last_transfer_coding(&headers(&[("transfer-encoding", "gzip, chunked")])),
            Some("chunked")
        );
        assert_eq!(
            last_transfer_coding(&headers(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip")
            ])),
            Some("gzip")
        );
        assert!(connection_has(
            &headers(&[("connection", "Keep-Alive, Close")]),
            "close"
        ));
    }

    #[test]
    fn whole_responses_read_the_same_however_they_arrive() {
        /// A request's method, the response's bytes, and the status and body read from
        /// them (`None`: refused).
        type Case = (&'static Method, &'static [u8], Option<(u16, &'static [u8])>);
        let cases: [Case; 7] = [
            (&Method::GET, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", Some((200, b"hello"))),
            (&Method::HEAD, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Some((200, b""))),
            (
                &Method::GET,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: 1\r\n\r\n",
                Some((200, b"hello")),
            ),
            (&Method::GET, b"HTTP/1.0 200 OK\r\n\r\nuntil the end", Some((200, b"until the end"))),
            (&Method::GET, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", Some((204, b""))),
            // A transfer coding other than chunked last: the body runs to the close.
            (
                &Method::GET,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 3\r\n\r\nabcdef",
                Some((200, b"abcdef")),
            ),
            (&Method::GET, b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort", None),
        ];
        for (method, bytes, expected) in cases {
            for piece in [1, 3, bytes.len()] {
                let got = read_response(bytes, method, piece);
                let got = got.as_ref().map(|(s, b)| (s.as_u16(), b.as_slice())).ok();
                assert_eq!(
                    got,
                    expected,
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_RESPONSE_HEAD + 10, b'a');
        huge.extend_from_slice(b"\r\n\r\n");
        for piece in [4096, huge.len()] {
            assert!(read_response(&huge, &Method::GET, piece).is_err());
        }
    }

    #[test]
    fn only_unwritten_or_replayable_requests_go_again_on_a_new_connection() {
        let reset = || BackendError::Read(io::ErrorKind::ConnectionReset.into());
        let refused = || BackendError::Write(io::ErrorKind::BrokenPipe.into());
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(BackendError::Closed.may_resend(&method));
            assert!(reset().may_resend(&method));
        }
        for method in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            assert!(!BackendError::Closed.may_resend(&method), "{method}");
            assert!(!reset().may_resend(&method), "{method}");
            assert!(refused().may_resend(&method), "{method}");
        }
        let timeout = BackendError::Read(io::ErrorKind::TimedOut.into());
        assert!(!timeout.may_resend(&Method::GET));
        assert!(!BackendError::InvalidResponse("x").may_resend(&Method::GET));
    }

    #[test]
    fn tls_connections_are_pooled_apart_by_the_name_they_checked() {
        let plain = Target {
            addr: "10.0.0.1:443",
            tls_name: None,
        };
        let tls = Target {
            addr: "10.0.0.1:443",
            tls_name: Some("a.internal"),
        };
        assert_eq!(plain.key(), "10.0.0.1:443");
        assert_eq!(tls.key(), "a.internal@10.0.0.1:443");
        assert!(matches!(
            server_name("bad name"),
            Err(ConnectError::ServerName(_))
        ));
        assert!(server_name("[::1]").is_ok());
    }
}
