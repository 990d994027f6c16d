//! The NATS transport: connecting (server list, credentials, reconnect signalling) and
//! mapping async-nats results onto [`BusError`].

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use async_nats::{ConnectOptions, Event, RequestErrorKind, ServerAddr, Statistics};
use bytes::Bytes;

use crate::{
    BusError, Message, NatsTls, Status, OUTGOING_BUFFER, SEND_TIMEOUT, SUBSCRIPTION_BUFFER,
};

/// Connects to a server of `urls` (tried in random order). Reconnects (forever) bump
/// `status.reconnects`; slow-consumer drops bump `status.dropped`.
pub(crate) async fn connect(
    urls: &str,
    status: Arc<Status>,
    tls: Option<&NatsTls>,
) -> Result<async_nats::Client, BusError> {
    let (servers, auth) = parse_servers(urls)?;
    // Set once connected: the client's own count of connections, which the event
    // handler trusts over the events themselves (async-nats drops events when its
    // event queue is full).
    let statistics = Arc::new(OnceLock::<Arc<Statistics>>::new());
    let events_statistics = statistics.clone();
    let mut options = ConnectOptions::new()
        .name(connection_name())
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_BUFFER)
        .client_capacity(OUTGOING_BUFFER)
        // `Bus::request` bounds each request itself.
        .request_timeout(None)
        .event_callback(move |event| {
            on_event(event, &status, events_statistics.get());
            std::future::ready(())
        });
    if let Some(tls) = tls {
        options = options
            .require_tls(true)
            .add_root_certificates(tls.ca.clone());
        if let Some((cert, key)) = &tls.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    options = match auth {
        Some(Auth::UserPass(user, pass)) => options.user_and_password(user, pass),
        Some(Auth::Token(token)) => options.token(token),
        None => options,
    };
    let names = servers
        .iter()
        .map(|s| s.as_url_str().trim_end_matches('/'))
        .collect::<Vec<_>>()
        .join(",");
    let client = options
        .connect(servers)
        .await
        .map_err(|source| BusError::Connect {
            servers: names,
            source,
        })?;
    statistics.get_or_init(|| client.statistics());
    Ok(client)
}

fn on_event(event: Event, status: &Status, statistics: Option<&Arc<Statistics>>) {
    match event {
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::SlowConsumer(sid) => {
            status.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sid, "NATS subscription full: message dropped");
        }
        _ => {}
    }
    // Before `statistics` is set, the client has connected once: no reconnects yet.
    let Some(statistics) = statistics else {
        return;
    };
    let reconnects = statistics
        .connects
        .load(Ordering::Relaxed)
        .saturating_sub(1);
    let changed = status.reconnects.send_if_modified(|count| {
        let changed = *count != reconnects;
        *count = reconnects;
        changed
    });
    if changed {
        tracing::info!(reconnects, "reconnected to NATS");
    }
}

enum Auth {
    UserPass(String, String),
    Token(String),
}

/// Splits `urls` at commas into server addresses without credentials, and the one set
/// of credentials they carry (`user:pass@`, or `token@`).
fn parse_servers(urls: &str) -> Result<(Vec<ServerAddr>, Option<Auth>), BusError> {
    let mut servers = Vec::new();
    let mut auth: Option<(String, Option<String>)> = None;
    for entry in urls.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = |reason: String| BusError::InvalidUrl {
            url: redact(entry),
            reason,
        };
        let mut url = entry
            .parse::<ServerAddr>()
            .map_err(|e| invalid(e.to_string()))?
            .into_inner();
        if !matches!(url.scheme(), "nats" | "tls") {
            return Err(invalid("the scheme must be nats:// or tls://".into()));
        }
        if !url.username().is_empty() {
            let user = percent_decode(url.username()).map_err(invalid)?;
            let pass = url
                .password()
                .map(percent_decode)
                .transpose()
                .map_err(invalid)?;
            let creds = (user, pass);
            if auth.as_ref().is_some_and(|a| *a != creds) {
                return Err(invalid("the servers carry different credentials".into()));
            }
            auth = Some(creds);
            // Cannot fail: the URL has a host.
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        servers.push(ServerAddr::from_url(url).map_err(|e| invalid(e.to_string()))?);
    }
    if servers.is_empty() {
        return Err(BusError::InvalidUrl {
            url: urls.to_string(),
            reason: "no server given".into(),
        });
    }
    let auth = auth.map(|(user, pass)| match pass {
        Some(pass) => Auth::UserPass(user, pass),
        None => Auth::Token(user),
    });
    Ok((servers, auth))
}

/// `entry` with any password replaced, for error messages.
fn redact(entry: &str) -> String {
    match (entry.find("://"), entry.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &entry[..scheme], &entry[at + 1..])
        }
        (None, Some(at)) => format!("***@{}", &entry[at + 1..]),
        _ => entry.to_string(),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad %-escape in the credentials")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the credentials are not UTF-8".to_string())
}

/// How this process shows up in the server's connection list: `wasmfoundry:<exe>:<pid>`.
fn connection_name() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    format!("wasmfoundry:{exe}:{}", std::process::id())
}

/// Waits at most [`SEND_TIMEOUT`] for `send`, which only waits while the client's
/// outgoing buffer is full, that is while NATS is unreachable.
async fn queue<T, E>(
    subject: &str,
    op: &'static str,
    send: impl Future<Output = Result<T, E>>,
) -> Result<T, BusError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(SEND_TIMEOUT, send).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(BusError::Nats {
            op,
            subject: subject.to_string(),
            source: Box::new(source),
        }),
        Err(_) => Err(BusError::Unavailable {
            subject: subject.to_string(),
            waited: SEND_TIMEOUT,
        }),
    }
}

pub(crate) async fn publish(
    client: &async_nats::Client,
    subject: &str,
    payload: Bytes,
) -> Result<(), BusError> {
    queue(
        subject,
        "publish",
        client.publish(subject.to_string(), payload),
    )
    .await
}

pub(crate) async fn subscribe(
    client: &async_nats::Client,
    subject: &str,
) -> Result<async_nats::Subscriber, BusError> {
    queue(subject, "subscribe", client.subscribe(subject.to_string())).await
}

/// Waits for the reply without a bound of its own: the caller sets one.
pub(crate) async fn request(
    client: &async_nats::Client,
    subject: &str,
    payload: Bytes,
) -> Result<Message, BusError> {
    match client.request(subject.to_string(), payload).await {
        Ok(msg) => Ok(message(msg)),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Err(BusError::NoResponders {
            subject: subject.to_string(),
        }),
        Err(e) => Err(BusError::Nats {
            op: "request",
            subject: subject.to_string(),
            source: Box::new(e),
        }),
    }
}

pub(crate) fn message(msg: async_nats::Message) -> Message {
    Message {
        subject: msg.subject.to_string(),
        reply: msg.reply.map(|r| r.to_string()),
        payload: msg.payload,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::NatsServer;
    use crate::{Bus, Subscription};

    const WAIT: Duration = Duration::from_secs(10);

    async fn next(sub: &mut Subscription) -> Message {
        tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("no message in time")
            .expect("subscription ended")
    }

    async fn nothing_on(sub: &mut Subscription) {
        let got = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
        assert!(got.is_err(), "unexpected message: {got:?}");
    }

    #[test]
    fn server_lists_and_credentials_are_parsed() {
        let (servers, auth) =
            parse_servers("nats://al%40ice:p%3Ass@127.0.0.1:4222, nats://al%40ice:p%3Ass@h2:5")
                .unwrap();
        let urls: Vec<_> = servers.iter().map(|s| s.as_url_str()).collect();
        assert_eq!(urls, ["nats://127.0.0.1:4222", "nats://h2:5"]);
        assert!(matches!(auth, Some(Auth::UserPass(u, p)) if u == "al@ice" && p == "p:ss"));
        let (_, auth) = parse_servers("nats://s3cret@h:1").unwrap();
        assert!(matches!(auth, Some(Auth::Token(t)) if t == "s3cret"));
        for bad in ["", " , ", "http://h:1", "nats://a:b@h:1,nats://c:d@h:2"] {
            let err = parse_servers(bad).err().unwrap();
            assert!(matches!(err, BusError::InvalidUrl { .. }), "{bad:?}");
            assert!(!err.to_string().contains(":b@"), "{err}");
        }
    }

    #[tokio::test]
    async fn publish_reaches_matching_subscribers_only() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let bus = Bus::nats(&server.url()).await.unwrap();
        let publisher = Bus::nats(&server.url()).await.unwrap();
        let mut one = bus.subscribe("router.*").await.unwrap();
        let mut all = bus.subscribe("router.>").await.unwrap();
        let mut exact = bus.subscribe("router.register").await.unwrap();
        let mut other = bus.subscribe("logs").await.unwrap();
        // A request round trip on the subscribing connection: its subscriptions are in.
        let err = bus.request("sync", "", WAIT).await.unwrap_err();
        assert!(matches!(err, BusError::NoResponders { .. }), "{err}");

        publisher.publish("router.register", "a").await.unwrap();
        publisher.publish("router.register.x", "b").await.unwrap();
        assert_eq!(next(&mut one).await.payload, "a");
        assert_eq!(next(&mut exact).await.payload, "a");
        let got = next(&mut all).await;
        assert_eq!(
            (got.subject.as_str(), &got.payload[..]),
            ("router.register", &b"a"[..])
        );
        let got = next(&mut all).await;
        assert_eq!(
            (got.subject.as_str(), &got.payload[..]),
            ("router.register.x", &b"b"[..])
        );
        nothing_on(&mut one).await;
        nothing_on(&mut other).await;
        assert!(matches!(
            publisher.publish("router.*", "x").await,
            Err(BusError::InvalidSubject(_))
        ));
        assert_eq!(bus.dropped(), 0);
    }

    #[tokio::test]
    async fn request_gets_the_reply() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let bus = Bus::nats(&server.url()).await.unwrap();
        let responder = Bus::nats(&server.url()).await.unwrap();
        let mut greet = responder.subscribe("router.greet").await.unwrap();
        let mut silent = responder.subscribe("router.silent").await.unwrap();
        // Wait until the responder's subscriptions reached the server.
        responder.request("sync", "", WAIT).await.unwrap_err();
        let task = tokio::spawn(async move {
            let msg = next(&mut greet).await;
            assert_eq!(msg.payload, "hi");
            responder
                .publish(msg.reply.as_deref().unwrap(), "hello")
                .await
                .unwrap();
            next(&mut silent).await
        });
        let reply = bus.request("router.greet", "hi", WAIT).await.unwrap();
        assert_eq!(reply.payload, "hello");
        let err = bus
            .request("router.silent", "", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::RequestTimeout { .. }), "{err}");
        task.await.unwrap();
        let err = bus.request("nobody.home", "", WAIT).await.unwrap_err();
        assert!(matches!(err, BusError::NoResponders { .. }), "{err}");
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let bus = Bus::nats(&server.url()).await.unwrap();
        let sub = bus.subscribe("router.greet").await.unwrap();
        bus.request("sync", "", WAIT).await.unwrap_err();
        // A subscriber exists: the request waits rather than finding no responder.
        let err = bus
            .request("router.greet", "", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::RequestTimeout { .. }), "{err}");
        drop(sub);
        let err = bus.request("router.greet", "", WAIT).await.unwrap_err();
        assert!(matches!(err, BusError::NoResponders { .. }), "{err}");
    }

    #[tokio::test]
    async fn credentials_in_the_url_are_used() {
        let Some(server) = NatsServer::start_with_args(&["--user", "wf", "--pass", "s3cret"])
        else {
            return;
        };
        let port = server.url().rsplit(':').next().unwrap().to_string();
        let err = Bus::nats(&server.url()).await.err().unwrap();
        assert!(matches!(err, BusError::Connect { .. }), "{err}");
        let bus = Bus::nats(&format!("nats://wf:s3cret@127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut sub = bus.subscribe("a").await.unwrap();
        bus.publish("a", "x").await.unwrap();
        assert_eq!(next(&mut sub).await.payload, "x");
    }

    #[tokio::test]
    async fn subscriptions_survive_a_server_restart() {
        let Some(mut server) = NatsServer::start() else {
            return;
        };
        // The first server of the list is down: the next one is used.
        let bus = Bus::nats(&format!("nats://127.0.0.1:1,{}", server.url()))
            .await
            .unwrap();
        let mut reconnects = bus.on_reconnect();
        assert_eq!(*reconnects.borrow_and_update(), 0);
        let mut sub = bus.subscribe("router.*").await.unwrap();

        server.restart();
        tokio::time::timeout(WAIT, reconnects.changed())
            .await
            .expect("no reconnect signalled")
            .unwrap();
        assert_eq!(*reconnects.borrow_and_update(), 1);
        // The subscription was restored on the new connection before this publish.
        bus.publish("router.register", "after").await.unwrap();
        assert_eq!(next(&mut sub).await.payload, "after");

        server.restart();
        tokio::time::timeout(WAIT, reconnects.changed())
            .await
            .expect("no second reconnect signalled")
            .unwrap();
        assert_eq!(*reconnects.borrow(), 2);
        let publisher = Bus::nats(&server.url()).await.unwrap();
        publisher.publish("router.register", "again").await.unwrap();
        assert_eq!(next(&mut sub).await.payload, "again");
    }
}
