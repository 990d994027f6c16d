//! The RLP gateway stream over real HTTP: the router served on an ephemeral port, read
//! by a real client while envelopes are ingested.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wf_loggregator::envelope::{Counter, EnvelopeMessage};
use wf_loggregator::{
    log_cache_router, rlp_router_with_config, AccessDecision, Envelope, LogStore, LogStoreConfig,
    LogType, RlpConfig, SourceAuthorizer,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// `bearer admin` reads everything (the firehose too), `bearer dev` only `app-1`,
/// anything else is unauthenticated.
struct FakeAuth;

impl SourceAuthorizer for FakeAuth {
    fn can_read<'a>(
        &'a self,
        authorization: Option<&'a str>,
        source_id: &'a str,
    ) -> BoxFuture<'a, AccessDecision> {
        let decision = match authorization {
            Some("bearer admin") => AccessDecision::Allowed,
            Some("bearer dev") if source_id == "app-1" => AccessDecision::Allowed,
            Some("bearer dev") => AccessDecision::Denied,
            _ => AccessDecision::Unauthenticated,
        };
        async move { decision }.boxed()
    }
}

struct Server {
    url: String,
    addr: std::net::SocketAddr,
    store: Arc<LogStore>,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve(store_config: LogStoreConfig, rlp: RlpConfig) -> Server {
    let store = Arc::new(LogStore::with_config(store_config));
    let auth: Arc<dyn SourceAuthorizer> = Arc::new(FakeAuth);
    let app = log_cache_router(store.clone(), auth.clone()).merge(rlp_router_with_config(
        store.clone(),
        auth,
        rlp,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let shutdown = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .unwrap();
    });
    Server {
        url: format!("http://{addr}"),
        addr,
        store,
        cancel,
    }
}

fn log(source: &str, line: &str) -> Envelope {
    Envelope::log(source, "0", "APP/PROC/WEB", LogType::Out, line)
}

async fn get(server: &Server, query: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}/v2/read?{query}", server.url));
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    tokio::time::timeout(DEADLINE, req.send())
        .await
        .expect("no response in time")
        .unwrap()
}

/// Reads SSE frames off a response body.
struct Frames {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

/// One SSE frame: its `event:` (empty for a plain message), `data:` and comment lines.
#[derive(Debug, Default)]
struct Frame {
    event: String,
    data: String,
    comments: Vec<String>,
}

impl Frames {
    fn new(resp: reqwest::Response) -> Frames {
        Frames {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> Frame {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        frame.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        frame.data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix(':') {
                        frame.comments.push(v.trim().to_string());
                    }
                }
                return frame;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("no frame in time")
                .expect("stream ended")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The envelopes of the next batches until `n` have arrived (heartbeats skipped).
    async fn envelopes(&mut self, n: usize) -> Vec<Envelope> {
        let mut got = Vec::new();
        while got.len() < n {
            let frame = self.next().await;
            if frame.event.is_empty() && !frame.data.is_empty() {
                let batch: serde_json::Value = serde_json::from_str(&frame.data).unwrap();
                for e in batch["batch"].as_array().unwrap() {
                    got.push(serde_json::from_value(e.clone()).unwrap());
                }
            }
        }
        got
    }
}

fn payload(e: &Envelope) -> String {
    match &e.message {
        EnvelopeMessage::Log(log) => String::from_utf8_lossy(&log.payload).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn envelopes_ingested_after_connecting_are_streamed() {
    let server = serve(LogStoreConfig::default(), RlpConfig::default()).await;
    server.store.ingest(log("app-1", "before"));
    let resp = get(&server, "source_id=app-1&log", Some("bearer dev")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut frames = Frames::new(resp);
    server.store.ingest(log("app-2", "someone else's"));
    let mut counter = log("app-1", "");
    counter.message = EnvelopeMessage::Counter(Counter {
        name: "requests".into(),
        delta: 1,
        total: 1,
    });
    server.store.ingest(counter);
    for i in 0..3 {
        server.store.ingest(log("app-1", &format!("line {i}")));
    }
    let got = frames.envelopes(3).await;
    assert_eq!(
        got.iter().map(payload).collect::<Vec<_>>(),
        vec!["line 0", "line 1", "line 2"]
    );
    assert!(got.iter().all(|e| e.source_id == "app-1"));
}

#[tokio::test]
async fn unauthorized_readers_are_refused_and_the_firehose_needs_admin() {
    let server = serve(LogStoreConfig::default(), RlpConfig::default()).await;
    assert_eq!(
        get(&server, "source_id=app-1&log", None).await.status(),
        401
    );
    assert_eq!(
        get(&server, "source_id=app-1&log", Some("bearer bogus"))
            .await
            .status(),
        401
    );
    assert_eq!(
        get(&server, "source_id=app-2&log", Some("bearer dev"))
            .await
            .status(),
        404
    );
    // One unreadable source refuses the whole stream.
    assert_eq!(
        get(
            &server,
            "source_id=app-1&source_id=app-2&log",
            Some("bearer dev")
        )
        .await
        .status(),
        404
    );
    assert_eq!(get(&server, "log", Some("bearer dev")).await.status(), 403);
    assert_eq!(
        get(&server, "source_id=app-1", Some("bearer dev"))
            .await
            .status(),
        400
    );

    let resp = get(&server, "log&counter&gauge", Some("bearer admin")).await;
    assert_eq!(resp.status(), 200);
    let mut frames = Frames::new(resp);
    server.store.ingest(log("app-2", "a"));
    server.store.ingest(log("app-1", "b"));
    let got = frames.envelopes(2).await;
    assert_eq!(
        got.iter().map(|e| e.source_id.as_str()).collect::<Vec<_>>(),
        vec!["app-2", "app-1"]
    );
}

#[tokio::test]
async fn a_slow_reader_does_not_block_ingest_and_learns_what_it_lost() {
    let server = serve(
        LogStoreConfig {
            stream_buffer: 64,
            ..LogStoreConfig::default()
        },
        RlpConfig::default(),
    )
    .await;
    // A reader that sends its request, reads the headers, then stops reading.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /v2/read?log HTTP/1.1\r\nHost: x\r\nAuthorization: bearer admin\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout_at(deadline, slow.read_exact(&mut byte))
            .await
            .expect("no response head in time")
            .unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    assert_eq!(server.store.stream_readers(), 1);

    // Far more than the socket buffers and the reader's 64-envelope buffer hold.
    const N: usize = 20_000;
    let store = server.store.clone();
    let started = std::time::Instant::now();
    tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || {
            let line = "x".repeat(1024);
            for _ in 0..N {
                store.ingest(log("app-1", &line));
            }
        }),
    )
    .await
    .expect("ingest blocked behind a slow reader")
    .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "ingest took {took:?}");
    let stats = server.store.stats();
    assert_eq!(stats.envelopes + stats.expired, N as u64);

    // Once it reads again, the stream tells it how many it lost.
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while !String::from_utf8_lossy(&seen).contains(": dropped ") {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout_at(deadline, slow.read(&mut chunk))
            .await
            .expect("no drop notice in time")
            .unwrap();
        assert!(n > 0, "stream ended without a drop notice");
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(server.store.stats().stream_dropped > 0);
}

#[tokio::test]
async fn idle_streams_get_heartbeats_and_end_when_the_client_leaves() {
    let server = serve(
        LogStoreConfig::default(),
        RlpConfig {
            heartbeat_interval: Duration::from_millis(50),
            ..RlpConfig::default()
        },
    )
    .await;
    let resp = get(&server, "source_id=app-1&log", Some("bearer dev")).await;
    let mut frames = Frames::new(resp);
    assert_eq!(frames.next().await.event, "heartbeat");
    assert_eq!(server.store.stream_readers(), 1);
    drop(frames);
    let deadline = Instant::now() + DEADLINE;
    while server.store.stream_readers() > 0 {
        assert!(Instant::now() < deadline, "stream outlived its client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stream_closes_after_its_lifetime() {
    let server = serve(
        LogStoreConfig::default(),
        RlpConfig {
            stream_lifetime: Duration::from_millis(100),
            ..RlpConfig::default()
        },
    )
    .await;
    let resp = get(&server, "source_id=app-1&log", Some("bearer dev")).await;
    let mut frames = Frames::new(resp);
    assert_eq!(frames.next().await.event, "closing");
    let rest = tokio::time::timeout(DEADLINE, frames.body.next())
        .await
        .expect("stream did not end");
    assert!(rest.is_none(), "data after closing");
}

#[tokio::test]
async fn meta_reports_what_full_sources_dropped() {
    let server = serve(
        LogStoreConfig {
            max_envelopes_per_source: 2,
            ..LogStoreConfig::default()
        },
        RlpConfig::default(),
    )
    .await;
    for i in 0..5 {
        server.store.ingest(log("app-1", &format!("{i}")));
    }
    let meta: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/meta", server.url))
        .header("Authorization", "bearer dev")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["meta"]["app-1"]["count"], "2");
    assert_eq!(meta["meta"]["app-1"]["expired"], "3");
}
