//! The router end to end: real backends and the router on loopback ports, routes
//! registered over an in-process bus, requests through a real HTTP client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use wf_loggregator::{EnvelopeBatch, EnvelopeMessage, ENVELOPE_SUBJECT};
use wf_messaging::Bus;
use wf_router::message::{GREET_SUBJECT, REGISTER_SUBJECT, START_SUBJECT, UNREGISTER_SUBJECT};
use wf_router::{RegistryMessage, RouterConfig, RouterStart};

const DEADLINE: Duration = Duration::from_secs(10);

/// A backend that answers `<name> <method> <path?query> <request body>` and reports
/// the forwarding headers it saw as `seen-*` response headers.
async fn backend(name: &'static str) -> SocketAddr {
    backend_with(name, None).await
}

/// [`backend`], plus: `/login` sets a `JSESSIONID` cookie, `/hold` reports its arrival
/// on `arrivals` and answers after 1 s, `/slow` answers after 2 s, and an upgrade
/// request is switched and echoed byte for byte.
async fn backend_with(
    name: &'static str,
    arrivals: Option<tokio::sync::mpsc::UnboundedSender<&'static str>>,
) -> SocketAddr {
    serve_backend(name, arrivals, None).await
}

/// [`backend`] behind TLS with `acceptor`'s certificate.
async fn tls_backend(name: &'static str, acceptor: TlsAcceptor) -> SocketAddr {
    serve_backend(name, None, Some(acceptor)).await
}

async fn serve_backend(
    name: &'static str,
    arrivals: Option<tokio::sync::mpsc::UnboundedSender<&'static str>>,
    tls: Option<TlsAcceptor>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let arrivals = arrivals.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let arrivals = arrivals.clone();
                    async move {
                        if req.headers().contains_key("upgrade") {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let io = TokioIo::new(on.await.unwrap());
                                let (mut r, mut w) = tokio::io::split(io);
                                let _ = tokio::io::copy(&mut r, &mut w).await;
                            });
                            let resp = Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            return Ok::<_, Infallible>(resp);
                        }
                        match req.uri().path() {
                            "/hold" => {
                                if let Some(tx) = &arrivals {
                                    let _ = tx.send(name);
                                }
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
                            _ => {}
                        }
                        let login = req.uri().path() == "/login";
                        let seen: Vec<(String, String)> = [
                            "host",
                            "x-forwarded-for",
                            "x-forwarded-proto",
                            "x-request-start",
                            "x-vcap-request-id",
                            "x-cf-applicationid",
                            "x-cf-instanceindex",
                            "x-cf-app-instance",
                            "x-b3-traceid",
                            "x-b3-spanid",
                            "traceparent",
                            "tracestate",
                            "x-route-service",
                            "x-cf-forwarded-url",
                            "x-cf-proxy-signature",
                        ]
                        .iter()
                        .filter_map(|h| {
                            let v = req.headers().get(*h)?.to_str().ok()?;
                            Some((format!("seen-{h}"), v.to_string()))
                        })
                        .collect();
                        let head = format!("{name} {} {} ", req.method(), req.uri());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut resp = Response::new(Full::new(Bytes::from(
                            [head.as_bytes(), &body].concat(),
                        )));
                        for (k, v) in seen {
                            resp.headers_mut().insert(
                                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                v.parse().unwrap(),
                            );
                        }
                        if login {
                            resp.headers_mut().insert(
                                "set-cookie",
                                "JSESSIONID=s1; Path=/; Max-Age=600; Secure"
                                    .parse()
                                    .unwrap(),
                            );
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    None => {
                        let _ = http
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    addr
}

struct Harness {
    bus: Bus,
    router: SocketAddr,
    /// The TLS listener, when the config has certificates.
    tls: Option<SocketAddr>,
    status: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), wf_router::RouterError>>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    announced: RouterStart,
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Harness {
    /// Starts a router and waits for its `router.start`, after which it hears
    /// registrations (as a route-emitter would re-publish everything on it).
    async fn start(config: RouterConfig) -> Harness {
        let bus = Bus::in_process();
        let mut starts = bus.subscribe(START_SUBJECT).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = listener.local_addr().unwrap();
        let status_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status = status_listener.local_addr().unwrap();
        let tls_listener = match config.tls_certificates.is_empty() {
            true => None,
            false => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let tls = tls_listener.as_ref().map(|l| l.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let listeners = wf_router::Listeners {
            http: listener,
            tls: tls_listener,
            status: Some(status_listener),
        };
        let task = tokio::spawn(wf_router::serve(
            config,
            listeners,
            bus.clone(),
            cancel.clone(),
        ));
        let start = tokio::time::timeout(DEADLINE, starts.next())
            .await
            .unwrap()
            .unwrap();
        let announced = serde_json::from_slice(&start.payload).unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Harness {
            bus,
            router,
            tls,
            status,
            cancel,
            task,
            client,
            announced,
        }
    }

    async fn register(&self, subject: &str, host: &str, addr: SocketAddr, id: &str) {
        self.publish(subject, registration(host, addr, id, "0"))
            .await;
    }

    async fn publish(&self, subject: &str, msg: RegistryMessage) {
        self.bus
            .publish(subject, serde_json::to_vec(&msg).unwrap())
            .await
            .unwrap();
    }

    async fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.router))
            .header("Host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// A GET on the status port.
    async fn status_get(&self, path: &str, auth: Option<&str>) -> Reply {
        let mut req = Request::get(format!("http://{}{path}", self.status));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The value of an unlabelled metric on `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let reply = self.status_get("/metrics", None).await;
        reply
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {}", reply.body))
    }

    async fn get(&self, host: &str, path: &str) -> Reply {
        self.send("GET", host, path, "", &[]).await
    }

    /// Polls `GET /` on `host` until `accept` holds.
    async fn wait_for(&self, host: &str, accept: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let reply = self.get(host, "/").await;
            if accept(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "{host}: still {} {}",
                reply.status,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("router stops")
            .unwrap()
            .unwrap();
    }
}

fn registration(host: &str, addr: SocketAddr, id: &str, index: &str) -> RegistryMessage {
    RegistryMessage {
        host: addr.ip().to_string(),
        port: addr.port(),
        uris: vec![host.to_string()],
        app: Some("app-guid".into()),
        private_instance_id: Some(id.into()),
        private_instance_index: Some(index.into()),
        ..Default::default()
    }
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn proxies_with_cf_headers_and_logs_rtr_lines() {
    let h = Harness::start(RouterConfig::default()).await;
    let mut envelopes = h.bus.subscribe(ENVELOPE_SUBJECT).await.unwrap();
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "hello.apps.localhost", a, "i-a")
        .await;
    h.wait_for("hello.apps.localhost", |r| r.status == StatusCode::OK)
        .await;

    let reply = h
        .send(
            "POST",
            "Hello.Apps.Localhost:8080",
            "/some/path?q=1",
            "posted body",
            &[
                ("X-Forwarded-For", "1.2.3.4"),
                ("X-Vcap-Request-Id", "client-id"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "a POST /some/path?q=1 posted body");
    assert_eq!(header(&reply, "seen-host"), "Hello.Apps.Localhost:8080");
    assert_eq!(header(&reply, "seen-x-forwarded-for"), "1.2.3.4, 127.0.0.1");
    assert_eq!(header(&reply, "seen-x-forwarded-proto"), "http");
    assert!(
        header(&reply, "seen-x-request-start")
            .parse::<u64>()
            .unwrap()
            > 1_600_000_000_000
    );
    let request_id = header(&reply, "seen-x-vcap-request-id");
    assert_ne!(request_id, "client-id");
    assert!(uuid::Uuid::parse_str(request_id).is_ok());
    assert_eq!(header(&reply, "x-vcap-request-id"), request_id);
    assert_eq!(header(&reply, "seen-x-cf-applicationid"), "app-guid");
    assert_eq!(header(&reply, "seen-x-cf-instanceindex"), "0");

    // Every request is also an RTR line in the app's logs, published in batches.
    let deadline = Instant::now() + DEADLINE;
    let mut waiting = Vec::new();
    loop {
        if waiting.is_empty() {
            let msg = tokio::time::timeout_at(deadline.into(), envelopes.next())
                .await
                .expect("RTR envelope")
                .unwrap();
            let batch: EnvelopeBatch = serde_json::from_slice(&msg.payload).unwrap();
            waiting = batch.batch;
            continue;
        }
        let envelope = waiting.remove(0);
        let EnvelopeMessage::Log(log) = &envelope.message else {
            continue;
        };
        let line = String::from_utf8_lossy(&log.payload);
        if !line.contains("POST /some/path?q=1") {
            continue;
        }
        assert_eq!(envelope.source_id, "app-guid");
        assert_eq!(envelope.source_type(), Some("RTR"));
        assert!(line.starts_with("Hello.Apps.Localhost:8080 - ["), "{line}");
        assert!(
            line.contains("\"POST /some/path?q=1 HTTP/1.1\" 200 11 "),
            "{line}"
        );
        assert!(
            line.contains(&format!("vcap_request_id:\"{request_id}\"")),
            "{line}"
        );
        assert!(
            line.contains("app_id:\"app-guid\" app_index:\"0\""),
            "{line}"
        );
        break;
    }
    h.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_404_and_unregistered_routes_disappear() {
    let h = Harness::start(RouterConfig::default()).await;
    let reply = h.get("nope.apps.localhost:8080", "/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(header(&reply, "x-cf-routererror"), "unknown_route");
    assert_eq!(
        reply.body,
        "404 Not Found: Requested route ('nope.apps.localhost') does not exist.\n"
    );

    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "gone.apps.localhost", a, "i-a")
        .await;
    h.wait_for("gone.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    h.register(UNREGISTER_SUBJECT, "gone.apps.localhost", a, "i-a")
        .await;
    let reply = h
        .wait_for("gone.apps.localhost", |r| r.status == StatusCode::NOT_FOUND)
        .await;
    assert_eq!(header(&reply, "x-cf-routererror"), "unknown_route");
    h.stop().await;
}

#[tokio::test]
async fn dead_backends_get_502_and_live_ones_are_retried() {
    let h = Harness::start(RouterConfig::default()).await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    h.register(REGISTER_SUBJECT, "down.apps.localhost", dead, "i-dead")
        .await;
    let reply = h
        .wait_for("down.apps.localhost", |r| r.status != StatusCode::NOT_FOUND)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        header(&reply, "x-cf-routererror").starts_with("endpoint_failure"),
        "{:?}",
        reply.headers
    );

    // With a live endpoint beside the dead one, every request succeeds.
    let live = backend("live").await;
    h.register(REGISTER_SUBJECT, "down.apps.localhost", live, "i-live")
        .await;
    h.wait_for("down.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    for _ in 0..4 {
        let reply = h
            .send("POST", "down.apps.localhost", "/", "body", &[])
            .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "live POST / body")
        );
    }
    h.stop().await;
}

/// A backend written against the socket, to control HTTP/1.1 framing and connection
/// reuse exactly. Each connection is numbered; on it, by path:
/// - `/conn` (and `/`): `conn <n>`, kept alive;
/// - `/then-close`: an answer that keeps the connection alive, then the connection
///   closed anyway (as a backend's idle timeout does);
/// - `/chunked`: `hello world` in two chunks written 20 ms apart, with a trailer;
/// - `/until-close`: an HTTP/1.0 answer without a length, ended by closing;
/// - `/echo`: the request body, with how it was framed in `seen-framing`.
async fn raw_backend() -> SocketAddr {
    use tokio::io::AsyncWriteExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for conn in 1.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end_of_head = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n");
                    if !read_until(&mut stream, &mut buf, |b| end_of_head(b).is_some()).await {
                        return;
                    }
                    let head_end = end_of_head(&buf).unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    buf.drain(..head_end);
                    let mut words = head.split_whitespace();
                    let (method, path) = (
                        words.next().unwrap().to_string(),
                        words.next().unwrap().to_string(),
                    );
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                            .map(|v| v.trim().to_string())
                    };
                    let (framing, body) = if let Some(len) = header("content-length") {
                        let len: usize = len.parse().unwrap();
                        assert!(read_until(&mut stream, &mut buf, |b| b.len() >= len).await);
                        ("length", buf.drain(..len).collect::<Vec<u8>>())
                    } else if header("transfer-encoding").as_deref() == Some("chunked") {
                        let mut body = Vec::new();
                        loop {
                            let line_end = |b: &[u8]| b.windows(2).position(|w| w == b"\r\n");
                            assert!(
                                read_until(&mut stream, &mut buf, |b| line_end(b).is_some()).await
                            );
                            let line_end = line_end(&buf).unwrap();
                            let size = usize::from_str_radix(
                                std::str::from_utf8(&buf[..line_end]).unwrap(),
                                16,
                            )
                            .unwrap();
                            let chunk_end = line_end + 2 + size + 2;
                            assert!(
                                read_until(&mut stream, &mut buf, |b| b.len() >= chunk_end).await
                            );
                            body.extend_from_slice(&buf[line_end + 2..chunk_end - 2]);
                            buf.drain(..chunk_end);
                            if size == 0 {
                                break;
                            }
                        }
                        ("chunked", body)
                    } else {
                        ("none", Vec::new())
                    };
                    let fixed = |text: &str| {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
                            text.len(),
                            if method == "head" { "" } else { text }
                        )
                    };
                    match path.as_str() {
                        "/" | "/conn" => stream
                            .write_all(fixed(&format!("conn {conn}")).as_bytes())
                            .await
                            .unwrap(),
                        "/then-close" => {
                            stream.write_all(fixed("closing").as_bytes()).await.unwrap();
                            return;
                        }
                        "/chunked" => {
                            stream
                                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                                .await
                                .unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            stream
                                .write_all(b"6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n")
                                .await
                                .unwrap();
                        }
                        "/until-close" => {
                            stream
                                .write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil ")
                                .await
                                .unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            stream.write_all(b"closed").await.unwrap();
                            return;
                        }
                        "/echo" => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nseen-framing: {framing}\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            stream.write_all(head.as_bytes()).await.unwrap();
                            stream.write_all(&body).await.unwrap();
                        }
                        other => panic!("raw backend: no {other}"),
                    }
                }
            });
        }
    });
    addr
}

/// Reads from `stream` into `buf` until `done(buf)`; false if the peer closed first.
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    use tokio::io::AsyncReadExt as _;
    while !done(buf) {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// The router's own HTTP/1.1 client: connections are reused, one the backend closed
/// while idle is replaced without the client seeing an error, and every way of framing
/// a body arrives whole, both ways.
#[tokio::test]
async fn backend_connections_are_reused_and_every_body_framing_arrives_whole() {
    let h = Harness::start(RouterConfig::default()).await;
    let host = "framing.apps.localhost";
    h.register(REGISTER_SUBJECT, host, raw_backend().await, "i-raw")
        .await;
    h.wait_for(host, |r| r.status == StatusCode::OK).await;

    let first = h.get(host, "/conn").await.body;
    assert!(first.starts_with("conn "), "{first}");
    assert_eq!(
        h.get(host, "/conn").await.body,
        first,
        "the connection is reused"
    );

    // A HEAD answer has a length but no body; the connection stays usable.
    let head = h.send("HEAD", host, "/conn", "", &[]).await;
    assert_eq!((head.status, head.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(header(&head, "content-length"), first.len().to_string());
    assert_eq!(h.get(host, "/conn").await.body, first);

    // The backend closes the connection after answering; the next request finds it
    // closed in the pool and goes on a new one.
    assert_eq!(h.get(host, "/then-close").await.body, "closing");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = h.get(host, "/conn").await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    assert_ne!(after.body, first, "a new connection");
    assert_eq!(
        h.send("POST", host, "/then-close", "x", &[]).await.body,
        "closing"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let echoed = h
        .send("POST", host, "/echo", "after a stale connection", &[])
        .await;
    assert_eq!(echoed.body, "after a stale connection");

    let chunked = h.get(host, "/chunked").await;
    assert_eq!(
        (chunked.status, chunked.body.as_str()),
        (StatusCode::OK, "hello world")
    );
    let until_close = h.get(host, "/until-close").await;
    assert_eq!(until_close.body, "until closed");

    // Request bodies: with a length, and chunked (the client's framing is one hop's,
    // so the router frames the body anew).
    let echoed = h.send("POST", host, "/echo", "sized body", &[]).await;
    assert_eq!(
        (echoed.body.as_str(), header(&echoed, "seen-framing")),
        ("sized body", "length")
    );
    let reply = raw_exchange(
        h.router,
        format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
        )
        .as_bytes(),
        "",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("seen-framing: chunked"), "{reply}");
    assert!(reply.ends_with("abcdefg"), "{reply}");
    h.stop().await;
}

#[tokio::test]
async fn round_robin_over_two_backends() {
    let h = Harness::start(RouterConfig::default()).await;
    let (a, b) = (backend("a").await, backend("b").await);
    h.register(REGISTER_SUBJECT, "rr.apps.localhost", a, "i-a")
        .await;
    h.register(REGISTER_SUBJECT, "rr.apps.localhost", b, "i-b")
        .await;
    h.wait_for("rr.apps.localhost", |r| r.body.starts_with('b'))
        .await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(h.get("rr.apps.localhost", "/").await.body[..1].to_string());
    }
    assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
    h.stop().await;
}

#[tokio::test]
async fn announces_itself_answers_greetings_and_prunes_stale_routes() {
    let config = RouterConfig {
        prune_threshold: Duration::from_secs(1),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    assert_eq!(h.announced.hosts, ["127.0.0.1"]);
    assert_eq!(h.announced.prune_threshold_in_seconds, 1);
    assert_eq!(h.announced.minimum_register_interval_in_seconds, 20);

    let greeting = h.bus.request(GREET_SUBJECT, "", DEADLINE).await.unwrap();
    let greeting: RouterStart = serde_json::from_slice(&greeting.payload).unwrap();
    assert_eq!(greeting, h.announced);

    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "stale.apps.localhost", a, "i-a")
        .await;
    h.wait_for("stale.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    // Not re-registered: gone after the 1 s threshold.
    h.wait_for("stale.apps.localhost", |r| {
        r.status == StatusCode::NOT_FOUND
    })
    .await;
    h.stop().await;
}

/// Writes `request` on a new connection to `addr` and reads until the peer closes,
/// `until` appears in what was read, or the deadline passes.
async fn raw_exchange(addr: SocketAddr, request: &[u8], until: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                read.extend_from_slice(&buf[..n]);
                if !until.is_empty() && String::from_utf8_lossy(&read).contains(until) {
                    break;
                }
            }
            Err(_) => panic!(
                "no answer within {DEADLINE:?}: {:?}",
                String::from_utf8_lossy(&read)
            ),
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

fn cookie_value(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(str::to_string))
}

#[tokio::test]
async fn sticky_sessions_stay_on_one_of_three_instances_while_it_lives() {
    let h = Harness::start(RouterConfig::default()).await;
    let mut addrs = Vec::new();
    for (name, id) in [("a", "i-a"), ("b", "i-b"), ("c", "i-c")] {
        let addr = backend(name).await;
        h.register(REGISTER_SUBJECT, "sticky.apps.localhost", addr, id)
            .await;
        addrs.push((name, id, addr));
    }
    h.wait_for("sticky.apps.localhost", |r| r.body.starts_with('c'))
        .await;

    // No session cookie from the app: no __VCAP_ID__.
    let plain = h.get("sticky.apps.localhost", "/").await;
    assert_eq!(cookie_value(&plain, "__VCAP_ID__"), None);

    let login = h.get("sticky.apps.localhost", "/login").await;
    let vcap = cookie_value(&login, "__VCAP_ID__").expect("__VCAP_ID__ set");
    let instance = &login.body[..1];
    assert_eq!(
        vcap,
        format!("i-{instance}; Path=/; HttpOnly; Max-Age=600; Secure")
    );
    let cookie = format!("JSESSIONID=s1; __VCAP_ID__=i-{instance}");
    for _ in 0..6 {
        let reply = h
            .send(
                "GET",
                "sticky.apps.localhost",
                "/",
                "",
                &[("Cookie", &cookie)],
            )
            .await;
        assert_eq!(&reply.body[..1], instance);
    }
    // The instance goes away: the session moves and the cookie follows it.
    let (_, id, addr) = addrs.iter().find(|(n, ..)| *n == instance).unwrap();
    h.register(UNREGISTER_SUBJECT, "sticky.apps.localhost", *addr, id)
        .await;
    let deadline = Instant::now() + DEADLINE;
    let moved = loop {
        let reply = h
            .send(
                "GET",
                "sticky.apps.localhost",
                "/",
                "",
                &[("Cookie", &cookie)],
            )
            .await;
        if &reply.body[..1] != instance {
            break reply;
        }
        assert!(Instant::now() < deadline, "session never moved");
    };
    let new_id = format!("i-{}; Path=/; HttpOnly", &moved.body[..1]);
    assert_eq!(cookie_value(&moved, "__VCAP_ID__"), Some(new_id));
    h.stop().await;
}

#[tokio::test]
async fn app_instance_header_targets_one_instance_and_bad_values_get_400() {
    let h = Harness::start(RouterConfig::default()).await;
    for (name, index) in [("a", "0"), ("b", "1"), ("c", "2")] {
        let addr = backend(name).await;
        h.publish(
            REGISTER_SUBJECT,
            registration("pick.apps.localhost", addr, &format!("i-{name}"), index),
        )
        .await;
    }
    h.wait_for("pick.apps.localhost", |r| r.body.starts_with('c'))
        .await;
    for _ in 0..4 {
        let reply = h
            .send(
                "GET",
                "pick.apps.localhost",
                "/",
                "",
                &[("X-Cf-App-Instance", "app-guid:1")],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.starts_with('b'), "{}", reply.body);
        assert_eq!(
            header(&reply, "seen-x-cf-app-instance"),
            "",
            "header is removed"
        );
    }
    for bad in ["app-guid:7", "other-guid:0", "garbage", "app-guid:x", ":1"] {
        let reply = h
            .send(
                "GET",
                "pick.apps.localhost",
                "/",
                "",
                &[("X-Cf-App-Instance", bad)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            header(&reply, "x-cf-routererror"),
            "invalid_cf_app_instance_header",
            "{bad}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn trace_headers_are_created_or_continued() {
    let h = Harness::start(RouterConfig::default()).await;
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "trace.apps.localhost", a, "i-a")
        .await;
    let fresh = h
        .wait_for("trace.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    let trace_id = header(&fresh, "seen-x-b3-traceid");
    let span_id = header(&fresh, "seen-x-b3-spanid");
    assert_eq!(trace_id.len(), 32);
    assert_eq!(span_id.len(), 16);
    assert_eq!(
        header(&fresh, "seen-traceparent"),
        format!("00-{trace_id}-{span_id}-01")
    );
    assert_eq!(
        header(&fresh, "seen-tracestate"),
        format!("gorouter={span_id}")
    );
    // The request id and the trace id are the same 128 bits.
    assert_eq!(
        header(&fresh, "seen-x-vcap-request-id").replace('-', ""),
        trace_id
    );

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let continued = h
        .send(
            "GET",
            "trace.apps.localhost",
            "/",
            "",
            &[("traceparent", incoming)],
        )
        .await;
    let traceparent = header(&continued, "seen-traceparent");
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_ne!(traceparent, incoming, "a new parent id at each hop");
    assert_eq!(
        header(&continued, "seen-x-b3-traceid"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    h.stop().await;
}

#[tokio::test]
async fn least_connection_sends_requests_away_from_a_busy_backend() {
    let h = Harness::start(RouterConfig::default()).await;
    let (tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    for (name, id) in [("a", "i-a"), ("b", "i-b")] {
        let addr = backend_with(name, Some(tx.clone())).await;
        let mut msg = registration("lc.apps.localhost", addr, id, "0");
        msg.options = Some(wf_router::message::RegistryOptions {
            loadbalancing: Some("least-connection".into()),
        });
        h.publish(REGISTER_SUBJECT, msg).await;
    }
    h.wait_for("lc.apps.localhost", |r| r.body.starts_with('b'))
        .await;
    let client = h.client.clone();
    let uri = format!("http://{}/hold", h.router);
    let held = tokio::spawn(async move {
        let req = Request::get(uri)
            .header("host", "lc.apps.localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.request(req).await.unwrap().status()
    });
    let busy = tokio::time::timeout(DEADLINE, arrivals.recv())
        .await
        .unwrap()
        .unwrap();
    for _ in 0..4 {
        let reply = h.get("lc.apps.localhost", "/").await;
        assert!(
            !reply.body.starts_with(busy),
            "{} went to busy {busy}",
            reply.body
        );
    }
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn backends_at_their_connection_limit_are_skipped_then_503() {
    let config = RouterConfig {
        max_conns_per_backend: Some(1),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let (tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let addr = backend_with("a", Some(tx)).await;
    h.register(REGISTER_SUBJECT, "max.apps.localhost", addr, "i-a")
        .await;
    h.wait_for("max.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    let client = h.client.clone();
    let uri = format!("http://{}/hold", h.router);
    let held = tokio::spawn(async move {
        let req = Request::get(uri)
            .header("host", "max.apps.localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.request(req).await.unwrap().status()
    });
    tokio::time::timeout(DEADLINE, arrivals.recv())
        .await
        .unwrap()
        .unwrap();
    // Its one connection is taken: the next request gets Gorouter's 503.
    let reply = h.get("max.apps.localhost", "/").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(
        header(&reply, "x-cf-routererror"),
        "Connection Limit Reached"
    );
    // A second instance takes the overflow.
    let b = backend("b").await;
    h.register(REGISTER_SUBJECT, "max.apps.localhost", b, "i-b")
        .await;
    h.wait_for("max.apps.localhost", |r| r.body.starts_with('b'))
        .await;
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    // Once the held request is done, the first backend takes requests again.
    h.wait_for("max.apps.localhost", |r| r.body.starts_with('a'))
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_failing_endpoint_is_backed_off_after_its_first_error() {
    let h = Harness::start(RouterConfig::default()).await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let live = backend("live").await;
    h.register(REGISTER_SUBJECT, "backoff.apps.localhost", dead, "i-dead")
        .await;
    h.register(REGISTER_SUBJECT, "backoff.apps.localhost", live, "i-live")
        .await;
    // Round robin reaches the dead endpoint within two requests; each still succeeds.
    let deadline = Instant::now() + DEADLINE;
    while h.metric("wf_router_backend_connect_errors_total").await == 0 {
        let reply = h.get("backoff.apps.localhost", "/").await;
        assert!(reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND);
        assert!(Instant::now() < deadline, "dead endpoint never tried");
    }
    for _ in 0..10 {
        let reply = h.get("backoff.apps.localhost", "/").await;
        assert_eq!((reply.status, &reply.body[..4]), (StatusCode::OK, "live"));
    }
    assert_eq!(h.metric("wf_router_backend_connect_errors_total").await, 1);
    assert_eq!(h.metric("wf_router_backend_retries_total").await, 1);
    h.stop().await;
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_both_ways() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let h = Harness::start(RouterConfig::default()).await;
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "ws.apps.localhost", a, "i-a")
        .await;
    h.wait_for("ws.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    let mut stream = tokio::net::TcpStream::connect(h.router).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.apps.localhost\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in ["hello", "second frame"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echo, message.as_bytes());
    }
    drop(stream);
    h.stop().await;
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413() {
    let config = RouterConfig {
        max_request_body_bytes: Some(1000),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "limit.apps.localhost", a, "i-a")
        .await;
    h.wait_for("limit.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    let small = h
        .send("POST", "limit.apps.localhost", "/", &"x".repeat(1000), &[])
        .await;
    assert_eq!(small.status, StatusCode::OK);
    let big = h
        .send("POST", "limit.apps.localhost", "/", &"x".repeat(1001), &[])
        .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked, so only counting the streamed bytes finds it.
    let chunk = "y".repeat(600);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: limit.apps.localhost\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let reply = raw_exchange(h.router, request.as_bytes(), "\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    h.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_rejected() {
    let config = RouterConfig {
        max_header_bytes: 4096,
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let reply = raw_exchange(
        h.router,
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        "",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = raw_exchange(h.router, b"\x16\x03\x01 not http at all\r\n\r\n", "").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "z".repeat(8000)
    );
    let reply = raw_exchange(h.router, big.as_bytes(), "").await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // No Host at all.
    let reply = raw_exchange(h.router, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("empty_host"), "{reply}");
    h.stop().await;
}

#[tokio::test]
async fn a_slowloris_client_neither_blocks_others_nor_keeps_its_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = RouterConfig {
        client_header_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "slow.apps.localhost", a, "i-a")
        .await;
    h.wait_for("slow.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(h.router).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: slow.apps")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            h.get("slow.apps.localhost", "/").await.status,
            StatusCode::OK
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // The slow connections are closed once the header timeout passes.
    for mut s in slow {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(DEADLINE, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "slow connection still open");
    }
    h.stop().await;
}

#[tokio::test]
async fn slow_backends_time_out_with_502() {
    let config = RouterConfig {
        backend_response_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "timeout.apps.localhost", a, "i-a")
        .await;
    h.wait_for("timeout.apps.localhost", |r| r.status == StatusCode::OK)
        .await;
    let reply = h.get("timeout.apps.localhost", "/slow").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        header(&reply, "x-cf-routererror").contains("timeout"),
        "{:?}",
        reply.headers
    );
    h.stop().await;
}

#[tokio::test]
async fn status_port_serves_health_routes_and_metrics() {
    let h = Harness::start(RouterConfig::default()).await;
    let health = h.status_get("/health", None).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok\n")
    );

    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "status.apps.localhost/api", a, "i-a")
        .await;
    h.wait_for("status.apps.localhost", |r| {
        r.status == StatusCode::NOT_FOUND
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    while h.get("status.apps.localhost", "/api").await.status != StatusCode::OK {
        assert!(Instant::now() < deadline);
    }
    for _ in 0..3 {
        h.get("status.apps.localhost", "/api/x").await;
    }
    let routes = h.status_get("/routes", None).await;
    let routes: serde_json::Value = serde_json::from_str(&routes.body).unwrap();
    assert_eq!(
        routes["status.apps.localhost/api"][0]["address"],
        a.to_string()
    );
    assert_eq!(routes["status.apps.localhost/api"][0]["ttl"], 120);

    // Metrics are counted when a response is done, just after the client saw it.
    let deadline = Instant::now() + DEADLINE;
    while h.metric("wf_router_requests_total").await < 5 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = h.status_get("/metrics", None).await.body;
    assert!(metrics.contains("wf_router_total_routes 1\n"), "{metrics}");
    assert!(metrics.contains("wf_router_responses_total{status_class=\"4xx\"}"));
    assert!(metrics.contains("wf_router_request_duration_seconds_bucket{le=\"+Inf\"}"));
    assert_eq!(h.metric("wf_router_responses_5xx_total").await, 0);
    h.stop().await;
}

#[tokio::test]
async fn status_port_asks_for_credentials_when_configured() {
    let config = RouterConfig {
        status_credentials: Some(wf_router::StatusCredentials {
            user: "router".into(),
            password: "secret".into(),
        }),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    assert_eq!(h.status_get("/health", None).await.status, StatusCode::OK);
    assert_eq!(
        h.status_get("/routes", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.status_get("/metrics", Some("Basic cm91dGVyOndyb25n"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // base64("router:secret")
    let ok = h
        .status_get("/routes", Some("Basic cm91dGVyOnNlY3JldA=="))
        .await;
    assert_eq!((ok.status, ok.body.as_str()), (StatusCode::OK, "{}"));
    h.stop().await;
}

/// A CA made for one test, whose keys stay in memory.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wf-router test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A certificate for `names` and its key, as PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn acceptor(&self, names: &[&str]) -> TlsAcceptor {
        let (cert, key) = self.issue(names);
        let chain = wf_router::certificates_from_pem("test", cert.as_bytes()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A TLS connection to `addr` as `server_name` (sent as SNI when `sni`), offering the
/// `alpn` protocols, trusting `roots`.
async fn tls_connect(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    server_name: &str,
    sni: bool,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.enable_sni = sni;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    tokio::time::timeout(
        DEADLINE,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

/// The leaf certificate the server presented.
fn peer_leaf(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One HTTP/1.1 GET over an established connection.
async fn get_over<S>(stream: S, host: &str, path: &str) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn pem_certificate(
    domain: Option<&str>,
    (cert, key): &(String, String),
) -> wf_router::TlsCertificate {
    wf_router::TlsCertificate::from_pem(domain, cert.as_bytes(), key.as_bytes()).unwrap()
}

fn leaf_der((cert, _): &(String, String)) -> Vec<u8> {
    wf_router::certificates_from_pem("leaf", cert.as_bytes()).unwrap()[0].to_vec()
}

#[tokio::test]
async fn tls_serves_each_domain_its_certificate_by_sni() {
    let ca = TestCa::new();
    let cert_a = ca.issue(&["app-a.example.com"]);
    let cert_b = ca.issue(&["*.b.example.com"]);
    let cert_default = ca.issue(&["default.example.com"]);
    let config = RouterConfig {
        tls_certificates: vec![
            pem_certificate(Some("app-a.example.com"), &cert_a),
            pem_certificate(Some("*.b.example.com"), &cert_b),
            pem_certificate(None, &cert_default),
        ],
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let tls = h.tls.unwrap();
    let (a, b) = (backend("a").await, backend("b").await);
    h.register(REGISTER_SUBJECT, "app-a.example.com", a, "i-a")
        .await;
    h.register(REGISTER_SUBJECT, "x.b.example.com", b, "i-b")
        .await;
    h.wait_for("app-a.example.com", |r| r.status == StatusCode::OK)
        .await;
    h.wait_for("x.b.example.com", |r| r.status == StatusCode::OK)
        .await;

    for (name, cert, body) in [
        ("app-a.example.com", &cert_a, "a GET /tls "),
        ("x.b.example.com", &cert_b, "b GET /tls "),
    ] {
        let stream = tls_connect(tls, ca.roots(), name, true, &[b"http/1.1"]).await;
        assert_eq!(peer_leaf(&stream), leaf_der(cert), "certificate for {name}");
        let reply = get_over(stream, name, "/tls").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, body);
        assert_eq!(header(&reply, "seen-x-forwarded-proto"), "https");
    }
    // No SNI: the default certificate.
    let stream = tls_connect(tls, ca.roots(), "default.example.com", false, &[]).await;
    assert_eq!(peer_leaf(&stream), leaf_der(&cert_default));
    // The plain listener still says http.
    let reply = h.get("app-a.example.com", "/").await;
    assert_eq!(header(&reply, "seen-x-forwarded-proto"), "http");
    h.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served_over_tls_by_alpn() {
    let ca = TestCa::new();
    let cert = ca.issue(&["h2.example.com"]);
    let config = RouterConfig {
        tls_certificates: vec![pem_certificate(Some("h2.example.com"), &cert)],
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "h2.example.com", a, "i-a")
        .await;
    h.wait_for("h2.example.com", |r| r.status == StatusCode::OK)
        .await;

    let stream = tls_connect(
        h.tls.unwrap(),
        ca.roots(),
        "h2.example.com",
        true,
        &[b"h2", b"http/1.1"],
    )
    .await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/one?x=1", "/two"] {
        let req = Request::post(format!("https://h2.example.com{path}"))
            .body(Full::new(Bytes::from_static(b"h2 body")))
            .unwrap();
        let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("a POST {path} h2 body").as_bytes());
        assert_eq!(headers["seen-host"], "h2.example.com");
        assert_eq!(headers["seen-x-forwarded-proto"], "https");
        assert_eq!(headers["seen-x-forwarded-for"], "127.0.0.1");
        assert!(!headers["seen-x-vcap-request-id"].is_empty());
        assert_eq!(headers["seen-x-cf-applicationid"], "app-guid");
        assert!(headers.contains_key("x-vcap-request-id"));
    }
    h.stop().await;
}

#[tokio::test]
async fn tls_backends_are_checked_for_their_registered_san() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let config = RouterConfig {
        backend_ca_certificates: wf_router::certificates_from_pem("ca", ca.pem().as_bytes())
            .unwrap(),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    // The plain port answers as "plain": a TLS registration must not use it.
    let plain = backend("plain").await;
    let secure = tls_backend("secure", ca.acceptor(&["backend.internal"])).await;
    let untrusted = tls_backend("untrusted", stranger.acceptor(&["backend.internal"])).await;
    let tls_registration = |route: &str, tls_addr: SocketAddr, san: &str, id: &str| {
        let mut msg = registration(route, plain, id, "0");
        msg.tls_port = Some(tls_addr.port());
        msg.server_cert_domain_san = Some(san.to_string());
        msg
    };
    h.publish(
        REGISTER_SUBJECT,
        tls_registration("good.example.com", secure, "backend.internal", "i-good"),
    )
    .await;
    h.publish(
        REGISTER_SUBJECT,
        tls_registration("wrong-san.example.com", secure, "other.internal", "i-wrong"),
    )
    .await;
    h.publish(
        REGISTER_SUBJECT,
        tls_registration(
            "untrusted.example.com",
            untrusted,
            "backend.internal",
            "i-untrusted",
        ),
    )
    .await;

    let reply = h
        .wait_for("good.example.com", |r| r.status != StatusCode::NOT_FOUND)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "secure GET / ");
    let routes = h.status_get("/routes", None).await;
    assert!(
        routes
            .body
            .contains(&format!("\"address\":\"{secure}\",\"tls\":true")),
        "{}",
        routes.body
    );

    // Gorouter: a certificate without the registered SAN is 503, an untrusted one 526;
    // both count as endpoint failures.
    let reply = h
        .wait_for("wrong-san.example.com", |r| {
            r.status != StatusCode::NOT_FOUND
        })
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    let router_error = header(&reply, "x-cf-routererror");
    assert!(
        router_error.starts_with("endpoint_failure"),
        "{router_error}"
    );
    assert!(router_error.contains("other.internal"), "{router_error}");
    assert_eq!(h.metric("wf_router_backend_connect_errors_total").await, 1);

    let reply = h
        .wait_for("untrusted.example.com", |r| {
            r.status != StatusCode::NOT_FOUND
        })
        .await;
    assert_eq!(reply.status.as_u16(), 526, "{}", reply.body);
    assert!(header(&reply, "x-cf-routererror").starts_with("endpoint_failure"));
    assert_eq!(h.metric("wf_router_backend_connect_errors_total").await, 2);
    h.stop().await;
}

/// A route service: sends each request back to the router at its `X-CF-Forwarded-Url`
/// with the router's headers and `X-Route-Service: <mode>`, where the mode is the path
/// of its URL: `/pass` forwards as is, `/tamper` alters the signature, `/slow` waits
/// `delay` first. Its response carries the forwarded URL it saw. With `tls`, it is
/// served over TLS.
async fn route_service(
    router: SocketAddr,
    delay: Duration,
    tls: Option<TlsAcceptor>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let client = client.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let mode = req.uri().path().trim_start_matches('/').to_string();
                        let forwarded: http::Uri = req.headers()["x-cf-forwarded-url"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let mut back = Request::builder()
                            .method(req.method())
                            .uri(format!(
                                "http://{router}{}",
                                forwarded.path_and_query().unwrap()
                            ))
                            .header("host", forwarded.host().unwrap())
                            .header("x-route-service", mode.as_str());
                        for name in [
                            "x-cf-forwarded-url",
                            "x-cf-proxy-signature",
                            "x-cf-proxy-metadata",
                        ] {
                            let mut value = req.headers()[name].to_str().unwrap().to_string();
                            if mode == "tamper" && name == "x-cf-proxy-signature" {
                                let flipped = if value.starts_with('A') { "B" } else { "A" };
                                value.replace_range(0..1, flipped);
                            }
                            back = back.header(name, value);
                        }
                        if mode == "slow" {
                            tokio::time::sleep(delay).await;
                        }
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let resp = client
                            .request(back.body(Full::new(body)).unwrap())
                            .await
                            .unwrap();
                        let (mut parts, body) = resp.into_parts();
                        parts.headers.insert(
                            "rs-saw-forwarded-url",
                            forwarded.to_string().parse().unwrap(),
                        );
                        let body = body.collect().await.unwrap().to_bytes();
                        Ok::<_, Infallible>(Response::from_parts(parts, Full::new(body)))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        http.serve_connection(TokioIo::new(stream), service).await
                    }
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                };
            });
        }
    });
    addr
}

#[tokio::test]
async fn route_services_see_requests_first_and_bad_or_expired_signatures_are_refused() {
    let timeout = Duration::from_millis(500);
    let ca = TestCa::new();
    let config = RouterConfig {
        route_services_secret: Some("route-services-secret".into()),
        route_services_timeout: timeout,
        backend_ca_certificates: wf_router::certificates_from_pem("ca", ca.pem().as_bytes())
            .unwrap(),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let app = backend("app").await;
    let rs = route_service(h.router, timeout + Duration::from_millis(500), None).await;
    let rs_tls = route_service(h.router, Duration::ZERO, Some(ca.acceptor(&["localhost"]))).await;
    for (route, url) in [
        ("pass.example.com", format!("http://{rs}/pass")),
        ("tamper.example.com", format!("http://{rs}/tamper")),
        ("slow.example.com", format!("http://{rs}/slow")),
        // An https route service, checked against the backend CAs by its host name.
        (
            "secure.example.com",
            format!("https://localhost:{}/pass", rs_tls.port()),
        ),
    ] {
        let mut msg = registration(route, app, route, "0");
        msg.route_service_url = Some(url);
        h.publish(REGISTER_SUBJECT, msg).await;
    }
    h.wait_for("pass.example.com", |r| r.status != StatusCode::NOT_FOUND)
        .await;

    let reply = h
        .send(
            "POST",
            "pass.example.com:8080",
            "/some/path?x=1",
            "body",
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "app POST /some/path?x=1 body");
    assert_eq!(header(&reply, "seen-x-route-service"), "pass");
    assert_eq!(
        header(&reply, "rs-saw-forwarded-url"),
        "http://pass.example.com/some/path?x=1"
    );
    // The route service headers do not reach the app.
    assert_eq!(header(&reply, "seen-x-cf-proxy-signature"), "");
    assert_eq!(header(&reply, "seen-x-cf-forwarded-url"), "");

    let reply = h
        .wait_for("secure.example.com", |r| r.status != StatusCode::NOT_FOUND)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "app GET / ");
    assert_eq!(header(&reply, "seen-x-route-service"), "pass");

    let reply = h.get("tamper.example.com", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.body);
    assert!(reply
        .body
        .contains("Failed to validate Route Service Signature"));

    let reply = h.get("slow.example.com", "/").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    assert_eq!(
        header(&reply, "x-cf-routererror"),
        "expired_route_service_signature"
    );

    // Gorouter: no WebSockets through route services.
    let reply = h
        .send(
            "GET",
            "pass.example.com",
            "/",
            "",
            &[("Connection", "upgrade"), ("Upgrade", "websocket")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(&reply, "x-cf-routererror"),
        "route_service_unsupported"
    );

    // A client cannot skip the route service with a made-up signature.
    let reply = h
        .send(
            "GET",
            "pass.example.com",
            "/",
            "",
            &[
                ("X-CF-Proxy-Signature", "bm90IGEgc2lnbmF0dXJl"),
                ("X-CF-Proxy-Metadata", "e30="),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    h.stop().await;

    // Without a route services secret, routes bound to a route service get 502.
    let h = Harness::start(RouterConfig::default()).await;
    let mut msg = registration("pass.example.com", app, "i-pass", "0");
    msg.route_service_url = Some(format!("http://{rs}/pass"));
    h.publish(REGISTER_SUBJECT, msg).await;
    let reply = h
        .wait_for("pass.example.com", |r| r.status != StatusCode::NOT_FOUND)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        header(&reply, "x-cf-routererror"),
        "route_service_unsupported"
    );
    h.stop().await;
}

#[tokio::test]
async fn tls_clients_that_do_not_handshake_are_closed_without_blocking_others() {
    let ca = TestCa::new();
    let cert = ca.issue(&["slow.example.com"]);
    let config = RouterConfig {
        tls_certificates: vec![pem_certificate(None, &cert)],
        tls_handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let h = Harness::start(config).await;
    let a = backend("a").await;
    h.register(REGISTER_SUBJECT, "slow.example.com", a, "i-a")
        .await;
    h.wait_for("slow.example.com", |r| r.status == StatusCode::OK)
        .await;
    let tls = h.tls.unwrap();
    let mut idle = TcpStream::connect(tls).await.unwrap();
    // Meanwhile another client is served.
    let stream = tls_connect(tls, ca.roots(), "slow.example.com", true, &[]).await;
    let reply = get_over(stream, "slow.example.com", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, tokio::io::AsyncReadExt::read(&mut idle, &mut buf))
        .await
        .expect("the router closes a client that never handshakes");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    h.stop().await;
}
