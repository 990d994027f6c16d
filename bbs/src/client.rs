//! [`BbsClient`]: the BBS API ([`crate::api`]) as the cells and the Cloud Controller
//! call it, with the same operations and errors as [`crate::Bbs`] itself.
//!
//! A client knows one or more BBS URLs. Only the BBS that holds the `bbs` lock listens
//! (see [`crate::locket`]), so a refused connection moves the client on to the next
//! URL, as Diego's clients follow `bbs.service.cf.internal` to the active BBS.
//! [`BbsClient::subscribe`] follows `/v1/events` in one background task per client and
//! reconnects on its own; events missed while disconnected are not replayed, so
//! subscribers also list the records now and then, as Diego's do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::api::{self, Empty, WireError};
use crate::models::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, CellPresence, DesiredLrp, DesiredLrpUpdate,
    NetInfo, Task, TaskDefinition,
};
use crate::mtls::MutualTls;
use crate::{ActualLrpFilter, BbsError, BbsEvent, DesiredLrpFilter, TaskFilter, EVENT_BUFFER};

/// Longest a call may take, the BBS's own work included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the event stream reconnects.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// A handle on the BBS API; cheap to clone.
#[derive(Clone)]
pub struct BbsClient {
    inner: Arc<Inner>,
}

struct Inner {
    urls: Vec<String>,
    /// Index in `urls` of the BBS that answered last.
    active: AtomicUsize,
    http: reqwest::Client,
    /// Streams no timeout: events may be minutes apart.
    events_http: reqwest::Client,
    events: broadcast::Sender<BbsEvent>,
    events_started: OnceLock<()>,
}

impl BbsClient {
    /// A client of the BBS at `urls` (`http://host:port`, tried in turn).
    pub fn new(urls: Vec<String>) -> Result<BbsClient, BbsError> {
        BbsClient::with_tls(urls, None)
    }

    /// A client of the BBS at `urls`; with `tls`, of a BBS serving mutual TLS
    /// (`https://host:port`), presenting this component's certificate.
    pub fn with_tls(urls: Vec<String>, tls: Option<&MutualTls>) -> Result<BbsClient, BbsError> {
        if urls.is_empty() {
            return Err(BbsError::Unavailable("no BBS URL given".into()));
        }
        let mut normalized = Vec::with_capacity(urls.len());
        for url in urls {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| BbsError::Unavailable(format!("BBS URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(BbsError::Unavailable(format!(
                    "BBS URL {url:?} must be http:// or https://"
                )));
            }
            normalized.push(url.trim_end_matches('/').to_string());
        }
        let build = |timeout: Option<Duration>| {
            let builder = tls.map_or_else(reqwest::Client::builder, MutualTls::client_builder);
            let mut builder = builder.connect_timeout(CONNECT_TIMEOUT);
            if let Some(timeout) = timeout {
                builder = builder.timeout(timeout);
            }
            builder
                .build()
                .map_err(|e| BbsError::Unavailable(format!("creating the HTTP client: {e}")))
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(BbsClient {
            inner: Arc::new(Inner {
                urls: normalized,
                active: AtomicUsize::new(0),
                http: build(Some(CALL_TIMEOUT))?,
                events_http: build(None)?,
                events,
                events_started: OnceLock::new(),
            }),
        })
    }

    /// Every change from now on (while the stream is connected). Must be called
    /// inside a tokio runtime.
    pub fn subscribe(&self) -> broadcast::Receiver<BbsEvent> {
        let receiver = self.inner.events.subscribe();
        self.inner.events_started.get_or_init(|| {
            tokio::spawn(follow_events(Arc::downgrade(&self.inner)));
        });
        receiver
    }

    pub async fn desire_lrp(&self, desired_lrp: DesiredLrp) -> Result<(), BbsError> {
        self.done(
            "/v1/desired_lrp/desire",
            &api::DesireLrpRequest { desired_lrp },
        )
        .await
    }

    pub async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: DesiredLrpUpdate,
    ) -> Result<(), BbsError> {
        let req = api::UpdateDesiredLrpRequest {
            process_guid: process_guid.to_string(),
            update,
        };
        self.done("/v1/desired_lrp/update", &req).await
    }

    pub async fn remove_desired_lrp(&self, process_guid: &str) -> Result<(), BbsError> {
        let req = api::ProcessGuidRequest {
            process_guid: process_guid.to_string(),
        };
        self.done("/v1/desired_lrp/remove", &req).await
    }

    pub async fn desired_lrps(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Result<Vec<DesiredLrp>, BbsError> {
        let resp: api::DesiredLrpsResponse = self.call("/v1/desired_lrps/list", filter).await?;
        Ok(resp.desired_lrps)
    }

    pub async fn actual_lrps(&self, filter: &ActualLrpFilter) -> Result<Vec<ActualLrp>, BbsError> {
        let resp: api::ActualLrpsResponse = self.call("/v1/actual_lrps/list", filter).await?;
        Ok(resp.actual_lrps)
    }

    pub async fn claim_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        self.done(
            "/v1/actual_lrps/claim",
            &actual_lrp_request(key, instance_key),
        )
        .await
    }

    pub async fn start_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: NetInfo,
    ) -> Result<(), BbsError> {
        self.done(
            "/v1/actual_lrps/start",
            &net_request(key, instance_key, net_info),
        )
        .await
    }

    /// See [`crate::Bbs::evacuate_actual_lrp`]: whether to keep the instance running.
    pub async fn evacuate_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: NetInfo,
    ) -> Result<bool, BbsError> {
        let req = net_request(key, instance_key, net_info);
        let resp: api::EvacuateResponse = self.call("/v1/actual_lrps/evacuate", &req).await?;
        Ok(resp.keep_container)
    }

    pub async fn crash_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<(), BbsError> {
        let req = api::CrashActualLrpRequest {
            actual_lrp_key: key.clone(),
            actual_lrp_instance_key: instance_key.clone(),
            error_message: reason.to_string(),
        };
        self.done("/v1/actual_lrps/crash", &req).await
    }

    pub async fn remove_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        self.done(
            "/v1/actual_lrps/remove",
            &actual_lrp_request(key, instance_key),
        )
        .await
    }

    pub async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        definition: TaskDefinition,
    ) -> Result<(), BbsError> {
        let req = api::DesireTaskRequest {
            task_guid: task_guid.to_string(),
            domain: domain.to_string(),
            task_definition: definition,
        };
        self.done("/v1/tasks/desire", &req).await
    }

    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, BbsError> {
        let resp: api::TasksResponse = self.call("/v1/tasks/list", filter).await?;
        Ok(resp.tasks)
    }

    pub async fn task_by_guid(&self, task_guid: &str) -> Result<Task, BbsError> {
        let resp: api::TaskResponse = self
            .call("/v1/tasks/get_by_task_guid", &task_guid_request(task_guid))
            .await?;
        Ok(resp.task)
    }

    /// Whether the cell should run the task (false: it already runs there).
    pub async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool, BbsError> {
        let req = api::StartTaskRequest {
            task_guid: task_guid.to_string(),
            cell_id: cell_id.to_string(),
        };
        let resp: api::StartTaskResponse = self.call("/v1/tasks/start", &req).await?;
        Ok(resp.should_start)
    }

    pub async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<(), BbsError> {
        let req = api::CompleteTaskRequest {
            task_guid: task_guid.to_string(),
            cell_id: cell_id.to_string(),
            failed,
            failure_reason: failure_reason.to_string(),
            result: result.to_string(),
        };
        self.done("/v1/tasks/complete", &req).await
    }

    pub async fn cancel_task(&self, task_guid: &str) -> Result<(), BbsError> {
        self.done("/v1/tasks/cancel", &task_guid_request(task_guid))
            .await
    }

    pub async fn resolving_task(&self, task_guid: &str) -> Result<(), BbsError> {
        self.done("/v1/tasks/resolving", &task_guid_request(task_guid))
            .await
    }

    pub async fn delete_task(&self, task_guid: &str) -> Result<(), BbsError> {
        self.done("/v1/tasks/delete", &task_guid_request(task_guid))
            .await
    }

    pub async fn upsert_domain(&self, domain: &str, ttl: Duration) -> Result<(), BbsError> {
        let req = api::UpsertDomainRequest {
            domain: domain.to_string(),
            ttl_ms: millis(ttl),
        };
        self.done("/v1/domains/upsert", &req).await
    }

    pub async fn set_cell_presence(
        &self,
        presence: &CellPresence,
        ttl: Duration,
    ) -> Result<(), BbsError> {
        let req = api::CellPresenceRequest {
            cell_presence: presence.clone(),
            ttl_ms: millis(ttl),
        };
        self.done("/v1/cells/presence", &req).await
    }

    pub async fn remove_cell_presence(&self, cell_id: &str) -> Result<(), BbsError> {
        let req = api::CellIdRequest {
            cell_id: cell_id.to_string(),
        };
        self.done("/v1/cells/remove", &req).await
    }

    async fn done<Req: Serialize>(&self, path: &str, req: &Req) -> Result<(), BbsError> {
        self.call::<Req, Empty>(path, req).await.map(drop)
    }

    /// POSTs `req` to the active BBS; a refused connection tries the next URL.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, BbsError> {
        let inner = &self.inner;
        let first = inner.active.load(Ordering::Relaxed);
        let mut refused = Vec::new();
        for attempt in 0..inner.urls.len() {
            let index = (first + attempt) % inner.urls.len();
            let url = format!("{}{path}", inner.urls[index]);
            let resp = match inner.http.post(&url).json(req).send().await {
                Ok(resp) => resp,
                Err(e) if e.is_connect() => {
                    refused.push(format!("{url}: {e}"));
                    continue;
                }
                Err(e) => return Err(BbsError::Unavailable(format!("{url}: {e}"))),
            };
            inner.active.store(index, Ordering::Relaxed);
            let status = resp.status();
            if status.is_success() {
                return resp
                    .json()
                    .await
                    .map_err(|e| BbsError::Unavailable(format!("{url}: bad response: {e}")));
            }
            let body = resp.bytes().await.unwrap_or_default();
            return Err(match serde_json::from_slice::<WireError>(&body) {
                Ok(error) => error.into(),
                Err(_) => BbsError::Remote(format!(
                    "{url} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )),
            });
        }
        Err(BbsError::Unavailable(format!(
            "no BBS answered: {}",
            refused.join("; ")
        )))
    }
}

fn actual_lrp_request(
    key: &ActualLrpKey,
    instance_key: &ActualLrpInstanceKey,
) -> api::ActualLrpRequest {
    api::ActualLrpRequest {
        actual_lrp_key: key.clone(),
        actual_lrp_instance_key: instance_key.clone(),
    }
}

fn net_request(
    key: &ActualLrpKey,
    instance_key: &ActualLrpInstanceKey,
    net_info: NetInfo,
) -> api::StartActualLrpRequest {
    api::StartActualLrpRequest {
        actual_lrp_key: key.clone(),
        actual_lrp_instance_key: instance_key.clone(),
        actual_lrp_net_info: net_info,
    }
}

fn task_guid_request(task_guid: &str) -> api::TaskGuidRequest {
    api::TaskGuidRequest {
        task_guid: task_guid.to_string(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Follows the active BBS's `/v1/events` into the client's broadcast channel, while
/// any clone of the client lives.
async fn follow_events(inner: Weak<Inner>) {
    let mut index = 0;
    loop {
        let Some(client) = inner.upgrade() else {
            return;
        };
        let n = client.urls.len();
        index = (index.max(client.active.load(Ordering::Relaxed))) % n;
        let url = format!("{}/v1/events", client.urls[index]);
        let response = client
            .events_http
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await;
        drop(client);
        match response {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(%url, "following BBS events");
                if let Err(e) = read_events(resp, &inner).await {
                    tracing::warn!(%url, error = %e, "BBS event stream broke; reconnecting");
                }
            }
            Ok(resp) => {
                tracing::warn!(%url, status = %resp.status(), "BBS refused the event stream")
            }
            Err(e) => {
                tracing::debug!(%url, error = %e, "BBS event stream unreachable");
                index += 1;
            }
        }
        tokio::time::sleep(EVENTS_RETRY).await;
    }
}

/// Reads server-sent events until the stream ends or every client is gone.
async fn read_events(
    mut resp: reqwest::Response,
    inner: &Weak<Inner>,
) -> Result<(), reqwest::Error> {
    let mut frames = SseFrames::default();
    while let Some(chunk) = resp.chunk().await? {
        let Some(client) = inner.upgrade() else {
            return Ok(());
        };
        for frame in frames.push(&chunk) {
            match frame.event.as_deref() {
                None => match serde_json::from_str::<BbsEvent>(&frame.data) {
                    // No subscriber is not an error.
                    Ok(event) => drop(client.events.send(event)),
                    Err(e) => tracing::warn!(error = %e, "undecodable BBS event"),
                },
                Some(api::LAGGED_EVENT) => {
                    tracing::warn!(missed = %frame.data, "fell behind the BBS event stream")
                }
                Some(other) => tracing::debug!(event = other, "ignoring BBS event"),
            }
        }
    }
    Ok(())
}

/// One server-sent event: its `event:` name (none for plain data) and its `data:`.
#[derive(Debug, PartialEq, Eq)]
struct SseFrame {
    event: Option<String>,
    data: String,
}

/// Cuts a server-sent event stream into frames; comments (keep-alives) are dropped.
#[derive(Default)]
struct SseFrames {
    pending: Vec<u8>,
}

impl SseFrames {
    fn push(&mut self, chunk: &[u8]) -> Vec<SseFrame> {
        self.pending.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = Some(value.trim().to_string());
                }
            }
            if !data.is_empty() {
                frames.push(SseFrame {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{databases, desired, eventually, open};
    use tokio_util::sync::CancellationToken;
    use wf_messaging::Bus;

    /// A BBS on `db` served on loopback, and a client that first tries a dead URL.
    async fn serve(bbs: &Arc<crate::Bbs>, cancel: &CancellationToken) -> BbsClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        tokio::spawn({
            let (bbs, cancel) = (bbs.clone(), cancel.clone());
            async move { bbs.serve(listener, cancel).await }
        });
        BbsClient::new(vec![dead, url]).unwrap()
    }

    #[tokio::test]
    async fn the_api_round_trips_records_errors_and_events() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let cancel = CancellationToken::new();
            let client = serve(&bbs, &cancel).await;
            let mut events = client.subscribe();

            // The event stream connects in the background: probe until events flow.
            for probe in 0.. {
                assert!(probe < 100, "{db}: no event within 10 s");
                let guid = format!("probe-{probe}");
                client
                    .desire_task(&guid, "probes", crate::task::tests::staging(64))
                    .await
                    .unwrap();
                if let Ok(event) =
                    tokio::time::timeout(Duration::from_millis(100), events.recv()).await
                {
                    assert!(
                        matches!(event, Ok(BbsEvent::TaskCreated { .. })),
                        "{db}: {event:?}"
                    );
                    break;
                }
            }
            let lrp = desired("web-1", 2);
            client.desire_lrp(lrp.clone()).await.unwrap();
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                    .await
                    .expect("events keep flowing")
                    .unwrap();
                if let BbsEvent::DesiredLrpCreated { desired_lrp } = event {
                    assert_eq!(desired_lrp.process_guid, "web-1");
                    break;
                }
            }

            let listed = client
                .desired_lrps(&DesiredLrpFilter::default())
                .await
                .unwrap();
            assert_eq!(listed.len(), 1, "{db}");
            assert_eq!(listed[0].process_guid, "web-1");
            eventually("two actual LRPs", || async {
                client
                    .actual_lrps(&ActualLrpFilter {
                        process_guid: Some("web-1".into()),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .len()
                    == 2
            })
            .await;

            // Errors keep their kind across the wire.
            let again = client.desire_lrp(lrp).await.unwrap_err();
            assert!(
                matches!(again, BbsError::AlreadyExists { .. }),
                "{db}: {again:?}"
            );
            let missing = client.remove_desired_lrp("nope").await.unwrap_err();
            assert!(
                matches!(missing, BbsError::NotFound(_)),
                "{db}: {missing:?}"
            );
            let invalid = client
                .desire_task("bad guid!", "d", crate::task::tests::staging(64))
                .await
                .unwrap_err();
            assert!(
                matches!(invalid, BbsError::InvalidRecord(_)),
                "{db}: {invalid:?}"
            );
            let task = client.task_by_guid("nope").await.unwrap_err();
            assert!(matches!(task, BbsError::NotFound(_)), "{db}: {task:?}");
            cancel.cancel();
        }
    }

    #[tokio::test]
    async fn no_bbs_is_unavailable_not_a_hang() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client =
            BbsClient::new(vec![format!("http://{}", dead.local_addr().unwrap())]).unwrap();
        drop(dead);
        let err = client.tasks(&TaskFilter::default()).await.unwrap_err();
        assert!(matches!(err, BbsError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn sse_frames_survive_any_chunking() {
        let stream = b":\n\ndata: {\"a\":1}\n\nevent: lagged\ndata: 7\n\ndata: x\ndata: y\n\n";
        for cut in 1..stream.len() {
            let mut frames = SseFrames::default();
            let mut got = frames.push(&stream[..cut]);
            got.extend(frames.push(&stream[cut..]));
            assert_eq!(
                got,
                [
                    SseFrame {
                        event: None,
                        data: "{\"a\":1}".into()
                    },
                    SseFrame {
                        event: Some("lagged".into()),
                        data: "7".into()
                    },
                    SseFrame {
                        event: None,
                        data: "x\ny".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(BbsClient::new(vec![]).is_err());
        assert!(BbsClient::new(vec!["not a url".into()]).is_err());
        assert!(BbsClient::new(vec!["ftp://x".into()]).is_err());
        assert!(BbsClient::new(vec!["http://127.0.0.1:1/".into()]).is_ok());
    }
}
