//! The router end to end: real backends and the router on loopback ports, routes
//! registered over an in-process bus, requests through a real HTTP client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wf_loggregator::{Envelope, EnvelopeMessage, ENVELOPE_SUBJECT};
use wf_messaging::Bus;
use wf_router::message::{GREET_SUBJECT, REGISTER_SUBJECT, START_SUBJECT, UNREGISTER_SUBJECT};
use wf_router::{RegistryMessage, RouterConfig, RouterStart};

const DEADLINE: Duration = Duration::from_secs(10);

/// A backend that answers `<name> <method> <path?query> <request body>` and reports
/// the forwarding headers it saw as `seen-*` response headers.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        let seen: Vec<(String, String)> = [
                            "host",
                            "x-forwarded-for",
                            "x-forwarded-proto",
                            "x-request-start",
                            "x-vcap-request-id",
                            "x-cf-applicationid",
                            "x-cf-instanceindex",
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
                        Ok::<_, Infallible>(resp)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

struct Harness {
    bus: Bus,
    router: SocketAddr,
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
        let cancel = CancellationToken::new();
        let task = tokio::spawn(wf_router::run(
            config,
            listener,
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
            cancel,
            task,
            client,
            announced,
        }
    }

    async fn register(&self, subject: &str, host: &str, addr: SocketAddr, id: &str) {
        let msg = RegistryMessage {
            host: addr.ip().to_string(),
            port: addr.port(),
            uris: vec![host.to_string()],
            app: Some("app-guid".into()),
            private_instance_id: Some(id.into()),
            private_instance_index: Some("0".into()),
            ..Default::default()
        };
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

    // Every request is also an RTR line in the app's logs.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let msg = tokio::time::timeout_at(deadline.into(), envelopes.next())
            .await
            .expect("RTR envelope")
            .unwrap();
        let envelope: Envelope = serde_json::from_slice(&msg.payload).unwrap();
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
