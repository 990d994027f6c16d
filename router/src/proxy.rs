//! The proxy: resolves each request in the route table and forwards it to a backend
//! over pooled HTTP/1.1 connections, streaming bodies both ways; writes Gorouter's
//! headers, error responses and access log.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wf_messaging::Bus;

use crate::access_log::AccessRecord;
use crate::table::{Endpoint, Lookup, RouteTable};
use crate::RouterConfig;

/// Gorouter's attempts per request (capped by the number of endpoints).
const MAX_ATTEMPTS: usize = 3;

/// Idle backend connections are closed after this long.
const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const X_CF_ROUTER_ERROR: &str = "x-cf-routererror";
const X_VCAP_REQUEST_ID: &str = "x-vcap-request-id";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_REQUEST_START: &str = "x-request-start";
const X_CF_APPLICATION_ID: &str = "x-cf-applicationid";
const X_CF_INSTANCE_INDEX: &str = "x-cf-instanceindex";
const X_CF_INSTANCE_ID: &str = "x-cf-instanceid";

pub(crate) struct Proxy {
    table: Arc<RwLock<RouteTable>>,
    client: Client<HttpConnector, RequestBody>,
    bus: Bus,
}

impl Proxy {
    pub(crate) fn new(table: Arc<RwLock<RouteTable>>, bus: Bus, config: &RouterConfig) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.backend_connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(BACKEND_IDLE_TIMEOUT)
            .build(connector);
        Proxy { table, client, bus }
    }

    /// Serves one client request.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        remote: std::net::SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let header_text = |name: HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut record = AccessRecord {
            host: host.clone(),
            started_at: Some(time::OffsetDateTime::now_utc()),
            method: req.method().to_string(),
            uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.to_string()),
            proto: format!("{:?}", req.version()),
            referer: header_text(header::REFERER),
            user_agent: header_text(header::USER_AGENT),
            remote_addr: remote.to_string(),
            vcap_request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };

        if host.trim().is_empty() {
            let resp = error_response(
                StatusCode::BAD_REQUEST,
                "empty_host",
                "Request had empty Host header",
                None,
            );
            return self.finish(resp, record, started, None);
        }
        let lookup = {
            let table = self
                .table
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            table.lookup(&host, req.uri().path(), Instant::now())
        };
        let endpoints = match lookup {
            Lookup::Endpoints(endpoints) => endpoints,
            Lookup::UnknownRoute => {
                let route = host.split(':').next().unwrap_or_default();
                let resp = error_response(
                    StatusCode::NOT_FOUND,
                    "unknown_route",
                    &format!("Requested route ('{route}') does not exist."),
                    Some("no-cache, no-store"),
                );
                return self.finish(resp, record, started, None);
            }
            Lookup::NoEndpoints => {
                let resp = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_endpoints",
                    &format!("Requested route ('{host}') has no available endpoints."),
                    Some("public,max-age=2"),
                );
                return self.finish(resp, record, started, None);
            }
        };

        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        remove_hop_by_hop(&mut headers);
        add_forwarding_headers(&mut headers, remote, &record.vcap_request_id);
        record.x_forwarded_for = header_str(&headers, X_FORWARDED_FOR);
        record.x_forwarded_proto = header_str(&headers, X_FORWARDED_PROTO);
        let path_and_query = record.uri.clone();
        let slot = Arc::new(BodySlot {
            body: Mutex::new(Some(body)),
            received: AtomicU64::new(0),
        });

        let mut last_error = String::new();
        let mut tried: Option<Arc<Endpoint>> = None;
        for endpoint in endpoints.iter().take(MAX_ATTEMPTS) {
            tried = Some(endpoint.clone());
            let uri =
                match format!("http://{}{}", endpoint.addr, path_and_query).parse::<http::Uri>() {
                    Ok(uri) => uri,
                    Err(e) => {
                        last_error = format!("bad backend address {}: {e}", endpoint.addr);
                        continue;
                    }
                };
            let mut backend_req = Request::new(RequestBody {
                slot: slot.clone(),
                taken: None,
            });
            *backend_req.method_mut() = parts.method.clone();
            *backend_req.uri_mut() = uri;
            *backend_req.version_mut() = Version::HTTP_11;
            *backend_req.headers_mut() = headers.clone();
            set_endpoint_headers(backend_req.headers_mut(), endpoint);
            record.gorouter_time = started.elapsed();
            match self.client.request(backend_req).await {
                Ok(resp) => {
                    record.bytes_received = slot.received.load(Ordering::Relaxed);
                    let (mut parts, body) = resp.into_parts();
                    remove_hop_by_hop(&mut parts.headers);
                    if !parts.headers.contains_key(X_VCAP_REQUEST_ID) {
                        if let Ok(v) = HeaderValue::from_str(&record.vcap_request_id) {
                            parts.headers.insert(X_VCAP_REQUEST_ID, v);
                        }
                    }
                    let resp = Response::from_parts(parts, ResponseBody::backend(body));
                    return self.finish(resp, record, started, Some(endpoint));
                }
                Err(e) => {
                    last_error = error_chain(&e);
                    let retryable = e.is_connect() && slot.has_body();
                    tracing::debug!(backend = %endpoint.addr, error = %last_error, retryable, "backend attempt failed");
                    if !retryable {
                        break;
                    }
                }
            }
        }
        record.bytes_received = slot.received.load(Ordering::Relaxed);
        tracing::info!(host = %host, error = %last_error, "all backend attempts failed");
        let resp = error_response(
            StatusCode::BAD_GATEWAY,
            &format!("endpoint_failure ({last_error})"),
            "Registered endpoint failed to handle the request.",
            None,
        );
        self.finish(resp, record, started, tried.as_ref())
    }

    /// Completes the access record and hands it to the response body, which logs it
    /// once the response has been sent.
    fn finish(
        &self,
        resp: Response<ResponseBody>,
        mut record: AccessRecord,
        started: Instant,
        endpoint: Option<&Arc<Endpoint>>,
    ) -> Response<ResponseBody> {
        record.status = resp.status().as_u16();
        record.router_error = header_str(resp.headers(), X_CF_ROUTER_ERROR);
        if let Some(e) = endpoint {
            record.backend_addr = Some(e.addr.clone());
            record.app_id = e.app_id.clone();
            record.app_index = e.instance_index.clone();
            record.instance_id = Some(e.instance_id.clone());
        }
        let (parts, mut body) = resp.into_parts();
        body.log = Some(PendingLog {
            record,
            started,
            bus: self.bus.clone(),
        });
        Response::from_parts(parts, body)
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The error and its causes, as one header-safe line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Gorouter's error response: `"<code> <status text>: <message>\n"` as plain text,
/// with the reason in `X-Cf-Routererror`.
fn error_response(
    status: StatusCode,
    router_error: &str,
    message: &str,
    cache_control: Option<&'static str>,
) -> Response<ResponseBody> {
    let body = format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(router_error) {
        h.insert(X_CF_ROUTER_ERROR, v);
    }
    if let Some(cc) = cache_control {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    resp
}

/// Removes the headers that describe one hop (RFC 9110 7.6.1), including those the
/// `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` (client appended), `X-Forwarded-Proto` and `X-Request-Start` (when
/// absent), and a new `X-Vcap-Request-Id`.
fn add_forwarding_headers(headers: &mut HeaderMap, remote: std::net::SocketAddr, request_id: &str) {
    let client_ip = remote.ip().to_string();
    let forwarded_for = match header_str(headers, X_FORWARDED_FOR) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {client_ip}"),
        _ => client_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(X_REQUEST_START) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        headers.insert(X_REQUEST_START, HeaderValue::from(ms as u64));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_VCAP_REQUEST_ID, v);
    }
}

/// `X-CF-ApplicationID`, `X-CF-InstanceIndex`, `X-CF-InstanceID` of the endpoint,
/// overwriting whatever the client sent.
fn set_endpoint_headers(headers: &mut HeaderMap, endpoint: &Endpoint) {
    let values = [
        (X_CF_APPLICATION_ID, endpoint.app_id.as_deref()),
        (X_CF_INSTANCE_INDEX, endpoint.instance_index.as_deref()),
        (X_CF_INSTANCE_ID, Some(endpoint.instance_id.as_str())),
    ];
    for (name, value) in values {
        match value.and_then(|v| HeaderValue::from_str(v).ok()) {
            Some(v) => {
                headers.insert(name, v);
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

/// The client's request body, shared by the attempts of one request: an attempt takes
/// it when the backend connection starts reading it, so a failed connect leaves it for
/// the next attempt.
struct BodySlot {
    body: Mutex<Option<Incoming>>,
    received: AtomicU64,
}

impl BodySlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.body
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn has_body(&self) -> bool {
        self.lock().is_some()
    }
}

pub(crate) struct RequestBody {
    slot: Arc<BodySlot>,
    taken: Option<Incoming>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this.slot.lock().take();
        }
        let Some(body) = this.taken.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.slot
                    .received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.slot.lock().as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self
                .slot
                .lock()
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
        }
    }
}

/// The access log of a request, written when its response body is done (or dropped).
struct PendingLog {
    record: AccessRecord,
    started: Instant,
    bus: Bus,
}

enum ResponseInner {
    Backend(Incoming),
    Full(Option<Bytes>),
}

/// The body sent to the client: the backend's, streamed, or the router's own; counts
/// the bytes sent for the access log.
pub(crate) struct ResponseBody {
    inner: ResponseInner,
    sent: u64,
    log: Option<PendingLog>,
}

impl ResponseBody {
    fn backend(body: Incoming) -> Self {
        ResponseBody {
            inner: ResponseInner::Backend(body),
            sent: 0,
            log: None,
        }
    }

    fn full(data: Bytes) -> Self {
        ResponseBody {
            inner: ResponseInner::Full(Some(data)),
            sent: 0,
            log: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            ResponseInner::Backend(body) => Pin::new(body).poll_frame(cx),
            ResponseInner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseInner::Backend(body) => body.is_end_stream(),
            ResponseInner::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResponseInner::Backend(body) => body.size_hint(),
            ResponseInner::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.record
                .finish(&log.bus, self.sent, log.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarding_headers_append_and_keep_what_gorouter_keeps() {
        let remote: std::net::SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(X_REQUEST_START, HeaderValue::from_static("42"));
        h.insert(X_VCAP_REQUEST_ID, HeaderValue::from_static("client-chosen"));
        add_forwarding_headers(&mut h, remote, "rid");
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_REQUEST_START], "42");
        assert_eq!(h[X_VCAP_REQUEST_ID], "rid");

        let mut h = HeaderMap::new();
        add_forwarding_headers(&mut h, remote, "rid");
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert!(h[X_REQUEST_START].to_str().unwrap().parse::<u64>().unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn endpoint_headers_overwrite_client_values() {
        let mut h = HeaderMap::new();
        h.insert(X_CF_APPLICATION_ID, HeaderValue::from_static("spoofed"));
        h.insert(X_CF_INSTANCE_INDEX, HeaderValue::from_static("7"));
        let endpoint = Endpoint {
            addr: "127.0.0.1:1".into(),
            app_id: Some("app".into()),
            instance_index: None,
            instance_id: "iid".into(),
        };
        set_endpoint_headers(&mut h, &endpoint);
        assert_eq!(h[X_CF_APPLICATION_ID], "app");
        assert!(!h.contains_key(X_CF_INSTANCE_INDEX));
        assert_eq!(h[X_CF_INSTANCE_ID], "iid");
    }
}
