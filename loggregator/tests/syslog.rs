//! Syslog drains against real loopback servers: TCP, TLS and HTTPS (axum) receive the
//! app's lines as RFC 5424, in order; a drain whose server comes up late gets the later
//! lines and counts what overflowed; `set` stops removed drains and keeps unchanged ones.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use wf_loggregator::envelope::{Gauge, GaugeValue};
use wf_loggregator::{
    DrainUrl, Envelope, EnvelopeMessage, LogStore, LogType, ReadQuery, SyslogConfig, SyslogDrains,
};

const APP: &str = "6f2a3c9e-0000-4000-8000-00000000c0de";
const DEADLINE: Duration = Duration::from_secs(15);

fn drain_url(s: &str) -> DrainUrl {
    s.parse().unwrap()
}

fn line(i: usize, text: &str) -> Envelope {
    let log_type = if i.is_multiple_of(2) {
        LogType::Out
    } else {
        LogType::Err
    };
    Envelope::log(APP, "0", "APP/PROC/WEB", log_type, format!("{text} {i}"))
}

/// The fields of an RFC 5424 message, checked on the way.
#[derive(Debug)]
struct Syslog {
    pri: u8,
    hostname: String,
    app_name: String,
    procid: String,
    structured_data: String,
    msg: String,
}

fn parse_rfc5424(message: &[u8]) -> Syslog {
    let text = std::str::from_utf8(message).expect("UTF-8 message");
    let (pri, rest) = text
        .strip_prefix('<')
        .and_then(|t| t.split_once(">1 "))
        .unwrap_or_else(|| panic!("no <PRI>1 in {text:?}"));
    let mut fields = rest.splitn(6, ' ');
    let mut next = || {
        fields
            .next()
            .unwrap_or_else(|| panic!("short header: {text:?}"))
    };
    let timestamp = next();
    time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {timestamp:?}: {e}"));
    let (hostname, app_name, procid, msgid) = (next(), next(), next(), next());
    assert_eq!(msgid, "-", "MSGID in {text:?}");
    let rest = next();
    // Structured data: `-` or `[...]` elements, `\]` escaped inside values.
    let sd_len = if rest.starts_with('-') {
        1
    } else {
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() && bytes[i] == b'[' {
            i += 1;
            let mut in_value = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if in_value => i += 1,
                    b'"' => in_value = !in_value,
                    b']' if !in_value => break,
                    _ => {}
                }
                i += 1;
            }
            assert!(i < bytes.len(), "unterminated SD element in {text:?}");
            i += 1;
        }
        assert!(i > 0, "no structured data in {text:?}");
        i
    };
    let (sd, msg) = rest.split_at(sd_len);
    let msg = msg
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space after SD in {text:?}"));
    assert!(msg.ends_with('\n'), "MSG ends with a newline: {text:?}");
    Syslog {
        pri: pri.parse().unwrap(),
        hostname: hostname.into(),
        app_name: app_name.into(),
        procid: procid.into(),
        structured_data: sd.into(),
        msg: msg.into(),
    }
}

/// Reads one octet-counted frame (`<len> <msg>`); `None` at end of stream.
async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut len = 0usize;
    let mut digits = 0;
    loop {
        let mut byte = [0u8];
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => {
                assert_eq!(digits, 0, "stream ended inside a frame length");
                return None;
            }
            Ok(_) => {}
        }
        match byte[0] {
            b' ' if digits > 0 => break,
            b @ b'0'..=b'9' => {
                len = len * 10 + usize::from(b - b'0');
                digits += 1;
            }
            other => panic!("unexpected byte {other:#x} in a frame length"),
        }
    }
    let mut message = vec![0; len];
    stream.read_exact(&mut message).await.expect("whole frame");
    Some(message)
}

async fn read_frames(stream: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<Syslog> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let frame = tokio::time::timeout(DEADLINE, read_frame(stream))
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} frames arrived", out.len()))
            .expect("stream open");
        out.push(parse_rfc5424(&frame));
    }
    out
}

async fn accept(listener: &TcpListener) -> TcpStream {
    tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the drain connects")
        .unwrap()
        .0
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_app_lines(received: &[Syslog], text: &str, hostname: &str) {
    for (i, m) in received.iter().enumerate() {
        assert_eq!(m.pri, if i.is_multiple_of(2) { 14 } else { 11 }, "{m:?}");
        assert_eq!(m.hostname, hostname);
        assert_eq!(m.app_name, APP);
        assert_eq!(m.procid, "[APP/PROC/WEB/0]");
        assert_eq!(
            m.structured_data,
            "[tags@47450 source_type=\"APP/PROC/WEB\"]"
        );
        assert_eq!(m.msg, format!("{text} {i}\n"));
    }
}

/// A self-signed certificate for `localhost`, as PEM (to trust) and a server config.
fn tls_server() -> (String, Arc<rustls::ServerConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (cert.pem(), Arc::new(config))
}

#[tokio::test]
async fn tcp_drain_receives_only_the_apps_lines_in_order_as_rfc5424() {
    const N: usize = 500;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(LogStore::new(10_000));
    let cancel = CancellationToken::new();
    let drains = SyslogDrains::start(&store, cancel.clone());
    drains.set(
        APP,
        "my org.dev.my-app",
        vec![drain_url(&format!("syslog://127.0.0.1:{port}"))],
    );
    for i in 0..N {
        store.ingest(line(i, "hello"));
        store.ingest(Envelope::log(
            "other-app",
            "0",
            "APP/PROC/WEB",
            LogType::Out,
            "no",
        ));
    }
    let mut conn = accept(&listener).await;
    let received = read_frames(&mut conn, N).await;
    assert_app_lines(&received, "hello", "my-org.dev.my-app");
    eventually("all sent", || drains.stats()[0].sent == N as u64).await;
    let stats = &drains.stats()[0];
    assert_eq!(stats.app_guid, APP);
    assert_eq!(stats.url, format!("syslog://127.0.0.1:{port}"));
    assert_eq!((stats.dropped, stats.queued), (0, 0));
    assert!(stats.connected);
    let metrics = drains.prometheus();
    assert!(
        metrics.contains(&format!(
            "syslog_drain_messages_sent_total{{app_guid=\"{APP}\",drain_url=\"syslog://127.0.0.1:{port}\"}} {N}"
        )),
        "{metrics}"
    );
    // Nothing but the app's lines came.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), read_frame(&mut conn))
            .await
            .is_err()
    );
    cancel.cancel();
}

#[tokio::test]
async fn tls_drain_receives_the_lines_from_a_server_trusted_by_the_extra_ca() {
    const N: usize = 100;
    let (ca_pem, server_config) = tls_server();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(LogStore::new(10_000));
    let cancel = CancellationToken::new();
    let drains = SyslogDrains::start(&store, cancel.clone());
    assert!(drains.set_extra_ca(b"not pem").is_err());
    drains.set_extra_ca(ca_pem.as_bytes()).unwrap();
    drains.set(
        APP,
        "o.s.a",
        vec![drain_url(&format!("syslog-tls://localhost:{port}"))],
    );
    for i in 0..N {
        store.ingest(line(i, "secret"));
    }
    let tcp = accept(&listener).await;
    let mut tls = TlsAcceptor::from(server_config).accept(tcp).await.unwrap();
    let received = read_frames(&mut tls, N).await;
    assert_app_lines(&received, "secret", "o.s.a");
    cancel.cancel();
}

/// Accepts TLS connections for axum.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[tokio::test]
async fn https_drain_posts_each_message_as_text_plain() {
    const N: usize = 40;
    let (ca_pem, server_config) = tls_server();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (posts, mut received) = mpsc::unbounded_channel::<(HeaderMap, String)>();
    let app = axum::Router::new().route(
        "/drain",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let posts = posts.clone();
            async move {
                let _ = posts.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(server_config),
    };
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let store = Arc::new(LogStore::new(10_000));
    let cancel = CancellationToken::new();
    let drains = SyslogDrains::start(&store, cancel.clone());
    drains.set_extra_ca(ca_pem.as_bytes()).unwrap();
    drains.set(
        APP,
        "o.s.a",
        vec![drain_url(&format!(
            "https://user:pw@localhost:{port}/drain?drain-type=all"
        ))],
    );
    for i in 0..N {
        store.ingest(line(i, "posted"));
    }
    let mut gauge = Envelope::log(APP, "0", "APP/PROC/WEB", LogType::Out, "");
    gauge.message = EnvelopeMessage::Gauge(Gauge {
        metrics: [(
            "memory".to_string(),
            GaugeValue {
                unit: "bytes".into(),
                value: 1024.0,
            },
        )]
        .into(),
    });
    gauge.tags.clear();
    store.ingest(gauge);

    let mut lines = Vec::new();
    for _ in 0..=N {
        let (headers, body) = tokio::time::timeout(DEADLINE, received.recv())
            .await
            .expect("a POST arrives")
            .unwrap();
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["authorization"], "Basic dXNlcjpwdw==");
        lines.push(parse_rfc5424(body.as_bytes()));
    }
    let metric = lines.pop().unwrap();
    assert_app_lines(&lines, "posted", "o.s.a");
    assert_eq!(
        metric.structured_data,
        "[gauge@47450 name=\"memory\" value=\"1024\" unit=\"bytes\"]"
    );
    assert_eq!((metric.procid.as_str(), metric.msg.as_str()), ("[0]", "\n"));
    eventually("all sent", || drains.stats()[0].sent == N as u64 + 1).await;
    assert_eq!(
        drains.stats()[0].url,
        format!("https://REDACTED@localhost:{port}/drain")
    );
    cancel.cancel();
    server.abort();
}

#[tokio::test]
async fn a_drain_whose_server_comes_up_late_gets_the_later_lines_and_counts_the_overflow() {
    // A free port with nobody listening yet.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        probe.local_addr().unwrap().port()
    };
    let store = Arc::new(LogStore::new(10_000));
    let cancel = CancellationToken::new();
    let config = SyslogConfig {
        buffer: 10,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        drop_notice_interval: Duration::from_millis(50),
        ..SyslogConfig::default()
    };
    let drains = SyslogDrains::start_with_config(&store, cancel.clone(), config);
    drains.set(
        APP,
        "o.s.a",
        vec![drain_url(&format!("syslog://127.0.0.1:{port}"))],
    );
    for i in 0..30 {
        store.ingest(line(i, "early"));
    }
    eventually("30 envelopes overflowed a buffer of 10", || {
        let s = &drains.stats()[0];
        s.dropped >= 20 && s.last_error.is_some()
    })
    .await;
    let stats = &drains.stats()[0];
    assert!(!stats.connected);
    assert!(stats.queued <= 10);
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{stats:?}"
    );
    // The app hears about the loss in its own log stream.
    eventually("a drop notice in the app's logs", || {
        store
            .read(APP, &ReadQuery::default())
            .iter()
            .any(|e| e.source_type() == Some("LGR"))
    })
    .await;
    let notice = store
        .read(APP, &ReadQuery::default())
        .into_iter()
        .find(|e| e.source_type() == Some("LGR"))
        .unwrap();
    let EnvelopeMessage::Log(log) = &notice.message else {
        panic!("a log notice")
    };
    let text = String::from_utf8_lossy(&log.payload);
    assert!(
        text.ends_with(&format!(
            "messages lost in user provided syslog drain syslog://127.0.0.1:{port}"
        )),
        "{text}"
    );

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let mut conn = accept(&listener).await;
    // What survived the outage: the newest early lines (and drop notices), in order.
    let mut early = Vec::new();
    while early.last() != Some(&29) {
        let m = read_frames(&mut conn, 1).await.remove(0);
        if m.procid == "[LGR]" {
            assert!(m
                .msg
                .contains("messages lost in user provided syslog drain"));
        } else {
            let n = m.msg.strip_prefix("early ").expect("an early line");
            early.push(n.trim_end().parse::<usize>().unwrap());
        }
    }
    // Then every later line, in order, sent in bursts the buffer holds.
    let mut later = Vec::new();
    for burst in 0..4 {
        for i in burst * 5..burst * 5 + 5 {
            store.ingest(line(i, "later"));
        }
        while later.len() < burst * 5 + 5 {
            let m = read_frames(&mut conn, 1).await.remove(0);
            if m.procid != "[LGR]" {
                later.push(m.msg);
            }
        }
    }
    let want: Vec<String> = (0..20).map(|i| format!("later {i}\n")).collect();
    assert_eq!(later, want);
    assert!(early.len() <= 10 && early.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(early.last(), Some(&29), "the newest early line survived");
    let stats = &drains.stats()[0];
    assert!(stats.dropped >= 20 && stats.dropped + early.len() as u64 >= 30);
    cancel.cancel();
}

#[tokio::test]
async fn set_stops_removed_drains_and_keeps_unchanged_ones_connected() {
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url_a = format!("syslog://127.0.0.1:{}", a.local_addr().unwrap().port());
    let url_b = format!("syslog://127.0.0.1:{}", b.local_addr().unwrap().port());
    let store = Arc::new(LogStore::new(10_000));
    let cancel = CancellationToken::new();
    let drains = SyslogDrains::start(&store, cancel.clone());

    drains.set(APP, "o.s.a", vec![drain_url(&url_a)]);
    store.ingest(line(0, "to-a"));
    let mut conn_a = accept(&a).await;
    assert_eq!(read_frames(&mut conn_a, 1).await[0].msg, "to-a 0\n");

    drains.set(APP, "o.s.a", vec![drain_url(&url_b)]);
    let closed = tokio::time::timeout(DEADLINE, read_frame(&mut conn_a)).await;
    assert!(
        matches!(closed, Ok(None)),
        "the removed drain closes its connection"
    );
    store.ingest(line(0, "to-b"));
    let mut conn_b = accept(&b).await;
    assert_eq!(read_frames(&mut conn_b, 1).await[0].msg, "to-b 0\n");
    let stats = drains.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].url, url_b);

    // The same URL again (the app was renamed): same connection, new hostname.
    drains.set(
        APP,
        "o.s.renamed",
        vec![drain_url(&url_b), drain_url(&url_b)],
    );
    store.ingest(line(0, "still-b"));
    let m = read_frames(&mut conn_b, 1).await.remove(0);
    assert_eq!(
        (m.hostname.as_str(), m.msg.as_str()),
        ("o.s.renamed", "still-b 0\n")
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), b.accept())
            .await
            .is_err(),
        "no second connection"
    );
    assert_eq!(drains.stats()[0].sent, 2);

    drains.set(APP, "o.s.renamed", Vec::new());
    let closed = tokio::time::timeout(DEADLINE, read_frame(&mut conn_b)).await;
    assert!(matches!(closed, Ok(None)));
    assert!(drains.stats().is_empty());
    cancel.cancel();
}

#[tokio::test]
async fn a_drain_reconnects_when_the_server_closes_without_losing_the_next_line() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(LogStore::new(10_000));
    let cancel = CancellationToken::new();
    let drains = SyslogDrains::start(&store, cancel.clone());
    drains.set(
        APP,
        "o.s.a",
        vec![drain_url(&format!("syslog://127.0.0.1:{port}"))],
    );
    store.ingest(line(0, "first"));
    let mut first = accept(&listener).await;
    assert_eq!(read_frames(&mut first, 1).await[0].msg, "first 0\n");
    // The server restarts its side; the next line goes to a new connection.
    drop(first);
    eventually("the drain sent the first line", || {
        drains.stats()[0].sent == 1
    })
    .await;
    // Not synchronisation: the next line comes a while after the restart, as it would
    // (the drain sees the close once its runtime has polled the socket).
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.ingest(line(1, "second"));
    let mut second = accept(&listener).await;
    assert_eq!(read_frames(&mut second, 1).await[0].msg, "second 1\n");
    assert_eq!(
        drains.stats()[0].last_error.as_deref(),
        Some("the drain closed the connection")
    );
    cancel.cancel();
}
