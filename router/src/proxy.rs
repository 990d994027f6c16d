//! The proxy: resolves each request in the route table and forwards it to a backend
//! over pooled HTTP/1.1 connections (TLS for endpoints registered with `tls_port`; the
//! client is [`crate::backend`]), streaming bodies both ways; writes Gorouter's
//! headers (forwarding, trace context, sticky sessions), error responses and access
//! log, retries connection errors on other endpoints and passes HTTP upgrades
//! (WebSockets) through as byte tunnels. Requests for a route bound to a route service
//! go there first, signed; the signed requests it sends back go to the app.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::{AccessLogger, AccessRecord};
use crate::backend::{
    BackendBody, BackendError, Backends, Conn, HeaderLines, RequestBody, RequestHead, Target,
};
use crate::metrics::Metrics;
use crate::route_service::{
    RouteServiceKeys, SignatureError, SignedHeaders, X_CF_FORWARDED_URL, X_CF_PROXY_METADATA,
    X_CF_PROXY_SIGNATURE,
};
use crate::table::{ActiveRequest, Endpoint, Lookup, RouteTable};
use crate::tls::TlsFailure;
use crate::{trace, RouterConfig};

/// Gorouter's attempts per request (capped by the number of endpoints).
const MAX_ATTEMPTS: usize = 3;

/// Idle backend connections are closed after this long.
const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const X_CF_ROUTER_ERROR: HeaderName = HeaderName::from_static("x-cf-routererror");
const X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
const X_CF_APPLICATION_ID: HeaderName = HeaderName::from_static("x-cf-applicationid");
const X_CF_INSTANCE_INDEX: HeaderName = HeaderName::from_static("x-cf-instanceindex");
const X_CF_INSTANCE_ID: HeaderName = HeaderName::from_static("x-cf-instanceid");
const X_CF_APP_INSTANCE: HeaderName = HeaderName::from_static("x-cf-app-instance");
/// The cookie naming the instance of a sticky session.
pub(crate) const VCAP_ID_COOKIE: &str = "__VCAP_ID__";

/// How a client reached the router: its `X-Forwarded-Proto` when it sent none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The client end of a connection, as its requests' headers and access lines name it;
/// made once a connection.
pub(crate) struct ClientConn {
    addr: std::net::SocketAddr,
    scheme: Scheme,
    /// The client's IP as `X-Forwarded-For` names it.
    forwarded_for: HeaderValue,
    /// `ip:port`, as the access log names the client.
    addr_text: Arc<str>,
}

impl ClientConn {
    pub(crate) fn new(addr: std::net::SocketAddr, scheme: Scheme) -> ClientConn {
        ClientConn {
            addr,
            scheme,
            forwarded_for: HeaderValue::try_from(addr.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-")),
            addr_text: addr.to_string().into(),
        }
    }
}

/// Where a request for a route bound to a route service goes.
enum RouteServiceStep {
    /// First to the route service, signed.
    ToRouteService {
        url: http::Uri,
        forwarded_url: String,
        signed: SignedHeaders,
    },
    /// It came back from the route service with a valid signature: to the app.
    FromRouteService,
}

pub(crate) struct Proxy {
    table: Arc<RwLock<RouteTable>>,
    backends: Backends,
    log: AccessLogger,
    metrics: Arc<Metrics>,
    sticky_cookie_names: Vec<String>,
    max_request_body_bytes: Option<u64>,
    max_conns_per_backend: Option<usize>,
    response_timeout: Duration,
    /// `None`: route services are disabled (no `route_services_secret`).
    route_services: Option<RouteServiceKeys>,
    tunnels: TaskTracker,
    cancel: CancellationToken,
}

/// A request's tunnel, when it asks to switch protocols (`Connection: upgrade`).
struct Upgrade {
    protocol: HeaderValue,
    client: OnUpgrade,
}

impl Proxy {
    pub(crate) fn new(
        table: Arc<RwLock<RouteTable>>,
        log: AccessLogger,
        metrics: Arc<Metrics>,
        config: &RouterConfig,
        backend_tls: Arc<rustls::ClientConfig>,
        route_services: Option<RouteServiceKeys>,
        tunnels: TaskTracker,
        cancel: CancellationToken,
    ) -> Proxy {
        let backends = Backends::new(
            config.backend_connect_timeout,
            config.tls_handshake_timeout,
            BACKEND_IDLE_TIMEOUT,
            backend_tls,
        );
        Proxy {
            table,
            backends,
            log,
            metrics,
            sticky_cookie_names: config.sticky_session_cookie_names.clone(),
            max_request_body_bytes: config.max_request_body_bytes,
            max_conns_per_backend: config.max_conns_per_backend,
            response_timeout: config.backend_response_timeout,
            route_services,
            tunnels,
            cancel,
        }
    }

    /// Serves one client request.
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        client: &ClientConn,
    ) -> Response<ResponseBody> {
        let scheme = client.scheme;
        let started = Instant::now();
        // The wall clock, read once: the access log's start and `X-Request-Start`.
        let started_wall = std::time::SystemTime::now();
        // One random draw gives the request id and, when the client sent none, the
        // trace id (Gorouter derives one from the other).
        let request_id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let request_id_value = HeaderValue::from_str(
            request_id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        )
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let mut record = AccessRecord {
            host,
            started_at: Some(time::OffsetDateTime::from(started_wall)),
            method: req.method().clone(),
            uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.to_string()),
            proto: version_text(req.version()),
            referer: req.headers().get(header::REFERER).cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            remote_addr: Some(client.addr_text.clone()),
            vcap_request_id: Some(request_id_value.clone()),
            ..Default::default()
        };
        let host = record.host.as_str();

        if host.trim().is_empty() {
            let resp = error_response(
                StatusCode::BAD_REQUEST,
                "empty_host",
                "Request had empty Host header",
                None,
            );
            return self.finish(resp, record, started, None, None);
        }
        let sent = Sent::scan(req.headers());
        let app_instance = if sent.has(Watched::AppInstance) {
            app_instance_header(req.headers())
        } else {
            Ok(None)
        };
        let app_instance = match app_instance {
            Ok(target) => target,
            Err(value) => {
                let resp = error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_cf_app_instance_header",
                    &format!("Invalid X-CF-App-Instance Header: {value}"),
                    None,
                );
                return self.finish(resp, record, started, None, None);
            }
        };
        let lookup = {
            let table = self
                .table
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            table.lookup(host, req.uri().path(), started)
        };
        let route_host = host.split(':').next().unwrap_or_default();
        let (route_path, endpoints, route_service_url) = match lookup {
            Lookup::Endpoints {
                path,
                endpoints,
                route_service_url,
            } => (path, endpoints, route_service_url),
            Lookup::UnknownRoute => {
                let resp = error_response(
                    StatusCode::NOT_FOUND,
                    "unknown_route",
                    &format!("Requested route ('{route_host}') does not exist."),
                    Some("no-cache, no-store"),
                );
                return self.finish(resp, record, started, None, None);
            }
            Lookup::NoEndpoints => {
                let resp = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_endpoints",
                    &format!("Requested route ('{host}') has no available endpoints."),
                    Some("public,max-age=2"),
                );
                return self.finish(resp, record, started, None, None);
            }
        };
        let mut endpoints = endpoints;
        if let Some(max) = self.max_conns_per_backend {
            endpoints.retain(|e| e.active_requests() < max);
        }
        if endpoints.is_empty() {
            let resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Connection Limit Reached",
                &format!("Requested route ('{route_host}') has reached its connection limit."),
                None,
            );
            return self.finish(resp, record, started, None, None);
        }
        if let (Some(limit), Some(length)) =
            (self.max_request_body_bytes, req.body().size_hint().upper())
        {
            if length > limit && req.body().size_hint().lower() == length {
                return self.finish(body_too_large(limit), record, started, None, None);
            }
        }
        let route_service = match route_service_url {
            Some(url) => {
                let requested_url = format!("{}://{route_host}{}", scheme.as_str(), record.uri);
                match self.route_service_step(&url, requested_url, req.headers()) {
                    Ok(step) => Some(step),
                    Err(resp) => return self.finish(resp, record, started, None, None),
                }
            }
            None => None,
        };

        let sticky_instance = sent
            .has(Watched::Cookie)
            .then(|| sticky_instance(req.headers(), &self.sticky_cookie_names))
            .flatten();
        let attempts = match &app_instance {
            Some((guid, index)) => {
                let target = endpoints.iter().find(|e| {
                    e.app_id.as_deref() == Some(guid.as_str())
                        && e.instance_index.as_deref() == Some(index.as_str())
                });
                match target {
                    Some(e) => vec![e.clone()],
                    None => {
                        let resp = error_response(
                            StatusCode::BAD_REQUEST,
                            "invalid_cf_app_instance_header",
                            &format!(
                                "Requested instance ('{index}') with guid ('{guid}') does not exist for route ('{route_host}')"
                            ),
                            None,
                        );
                        return self.finish(resp, record, started, None, None);
                    }
                }
            }
            None => attempt_order(endpoints, sticky_instance.as_deref()),
        };

        // An upgrade is asked for in `Connection`, a hop-by-hop header.
        let upgrade = sent
            .has(Watched::HopByHop)
            .then(|| upgrade_protocol(req.headers()))
            .flatten()
            .map(|protocol| Upgrade {
                protocol,
                client: hyper::upgrade::on(&mut req),
            });
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        if !headers.contains_key(header::HOST) {
            // HTTP/2 clients name the host in the request's authority.
            if let Ok(v) = HeaderValue::from_str(host) {
                headers.insert(header::HOST, v);
            }
        }
        remove_replaced(&mut headers, sent);
        let mut added = HeaderLines::with_capacity(512);
        let (forwarded_for, forwarded_proto) = add_forwarding_headers(
            &mut headers,
            sent,
            &mut added,
            client,
            &request_id_value,
            started_wall,
        );
        record.x_forwarded_for = Some(forwarded_for);
        record.x_forwarded_proto = Some(forwarded_proto);
        trace::propagate(
            &mut headers,
            sent.has(Watched::Trace),
            &mut added,
            request_id.as_u128(),
            rand::random(),
        );
        if let Some(upgrade) = &upgrade {
            added.push(&header::CONNECTION, &[b"upgrade"]);
            added.push(&header::UPGRADE, &[upgrade.protocol.as_bytes()]);
        }
        let mut body = RequestBody::new(body, self.max_request_body_bytes);
        match route_service {
            Some(RouteServiceStep::ToRouteService {
                url,
                forwarded_url,
                signed,
            }) => {
                for (name, value) in [
                    (&X_CF_FORWARDED_URL, &forwarded_url),
                    (&X_CF_PROXY_SIGNATURE, &signed.signature),
                    (&X_CF_PROXY_METADATA, &signed.metadata),
                ] {
                    added.push(name, &[value.as_bytes()]);
                }
                if let Some(host) = url.host() {
                    headers.remove(header::HOST);
                    match url.port() {
                        Some(port) => added.push(
                            &header::HOST,
                            &[host.as_bytes(), b":", port.as_str().as_bytes()],
                        ),
                        None => added.push(&header::HOST, &[host.as_bytes()]),
                    }
                }
                let head = RequestHead {
                    method: &parts.method,
                    path_and_query: url.path_and_query().map_or("/", |p| p.as_str()),
                    headers: &headers,
                    added: &[&added],
                };
                // Boxed, as the rarer path: it would add its size to every request's future.
                return Box::pin(self.to_route_service(&url, &head, &mut body, record, started))
                    .await;
            }
            // Its signature headers were removed above.
            Some(RouteServiceStep::FromRouteService) | None => {}
        }

        let mut upgrade = upgrade;
        let mut last_error = String::new();
        let mut failure_status = StatusCode::BAD_GATEWAY;
        let mut tried: Option<Arc<Endpoint>> = None;
        for (attempt, endpoint) in attempts.iter().enumerate() {
            if attempt > 0 {
                Metrics::count(&self.metrics.backend_retries);
            }
            tried = Some(endpoint.clone());
            let head = RequestHead {
                method: &parts.method,
                path_and_query: &record.uri,
                headers: &headers,
                added: &[&added, endpoint.header_lines()],
            };
            record.gorouter_time = started.elapsed();
            let active = endpoint.begin_request();
            let sent = self.backends.send(endpoint.target(), &head, &mut body);
            let result = tokio::time::timeout(self.response_timeout, sent).await;
            match result {
                Ok(Ok(resp)) => {
                    record.bytes_received = body.received();
                    let (mut parts, backend_body) = resp.into_parts();
                    let upgraded_to = parts.headers.get(header::UPGRADE).cloned();
                    prepare_response_headers(&mut parts.headers, record.vcap_request_id.as_ref());
                    set_sticky_cookie(
                        &mut parts.headers,
                        endpoint,
                        &route_path,
                        &self.sticky_cookie_names,
                        sticky_instance.as_deref(),
                    );
                    let mut active = Some(active);
                    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                        let (Some(backend), Some(client)) =
                            (backend_body.into_upgraded(), upgrade.take())
                        else {
                            last_error =
                                "101 Switching Protocols to a request without an upgrade".into();
                            break;
                        };
                        parts
                            .headers
                            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                        parts
                            .headers
                            .insert(header::UPGRADE, upgraded_to.unwrap_or(client.protocol));
                        Metrics::count(&self.metrics.websocket_upgrades);
                        self.tunnels.spawn(tunnel(
                            client.client,
                            backend,
                            active.take(),
                            self.cancel.clone(),
                        ));
                        let resp = Response::from_parts(parts, ResponseBody::full(Bytes::new()));
                        return self.finish(resp, record, started, Some(endpoint), active);
                    }
                    let resp = Response::from_parts(parts, ResponseBody::backend(backend_body));
                    return self.finish(resp, record, started, Some(endpoint), active);
                }
                Ok(Err(BackendError::RequestBodyTooLarge(limit))) => {
                    record.bytes_received = body.received();
                    return self.finish(body_too_large(limit), record, started, None, None);
                }
                Ok(Err(e)) => {
                    last_error = error_chain(&e);
                    let connect = e.connect_error();
                    failure_status = connect
                        .and_then(|c| c.tls_failure())
                        .map_or(StatusCode::BAD_GATEWAY, TlsFailure::status);
                    if connect.is_some() {
                        Metrics::count(&self.metrics.backend_connect_errors);
                        endpoint.mark_failed();
                    }
                    let retryable = connect.is_some() && body.is_unread();
                    tracing::debug!(backend = %endpoint.addr, error = %last_error, retryable, "backend attempt failed");
                    if !retryable {
                        break;
                    }
                }
                Err(_) => {
                    failure_status = StatusCode::BAD_GATEWAY;
                    Metrics::count(&self.metrics.backend_timeouts);
                    last_error = format!(
                        "timeout awaiting response headers after {:?}",
                        self.response_timeout
                    );
                    break;
                }
            }
        }
        record.bytes_received = body.received();
        tracing::info!(host = %host, error = %last_error, "all backend attempts failed");
        let resp = endpoint_failure(failure_status, &last_error);
        self.finish(resp, record, started, tried.as_ref(), None)
    }

    /// Decides where a request for a route bound to `url` goes: a request carrying a
    /// signature must have a valid one for `requested_url` and goes to the app, any
    /// other to the route service. Gorouter's errors: route services disabled (502),
    /// WebSockets (503), an expired signature (504) or an invalid one (502).
    fn route_service_step(
        &self,
        url: &str,
        requested_url: String,
        headers: &HeaderMap,
    ) -> Result<RouteServiceStep, Response<ResponseBody>> {
        let Some(keys) = &self.route_services else {
            return Err(error_response(
                StatusCode::BAD_GATEWAY,
                "route_service_unsupported",
                "Support for route services is disabled.",
                None,
            ));
        };
        if upgrade_protocol(headers).is_some() {
            return Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "route_service_unsupported",
                "Websocket requests are not supported for routes bound to Route Services.",
                None,
            ));
        }
        let now = time::OffsetDateTime::now_utc();
        let Some(signature) = headers
            .get(X_CF_PROXY_SIGNATURE)
            .and_then(|v| v.to_str().ok())
        else {
            let url = match url.parse::<http::Uri>() {
                Ok(parsed) if parsed.host().is_some() => parsed,
                _ => {
                    return Err(endpoint_failure(
                        StatusCode::BAD_GATEWAY,
                        &format!("invalid route service URL {url:?}"),
                    ))
                }
            };
            return match keys.sign(&requested_url, now) {
                Ok(signed) => Ok(RouteServiceStep::ToRouteService {
                    url,
                    signed,
                    forwarded_url: requested_url,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign a route service request");
                    Err(error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "",
                        "Route service request failed.",
                        None,
                    ))
                }
            };
        };
        let metadata = headers
            .get(X_CF_PROXY_METADATA)
            .and_then(|v| v.to_str().ok());
        match keys.verify(signature, metadata, &requested_url, now) {
            Ok(()) => Ok(RouteServiceStep::FromRouteService),
            Err(e) => {
                tracing::info!(url = %requested_url, error = %e, "route service signature rejected");
                let (status, router_error) = match e {
                    SignatureError::Expired(_) => (
                        StatusCode::GATEWAY_TIMEOUT,
                        "expired_route_service_signature",
                    ),
                    _ => (StatusCode::BAD_GATEWAY, ""),
                };
                Err(error_response(
                    status,
                    router_error,
                    "Failed to validate Route Service Signature",
                    None,
                ))
            }
        }
    }

    /// Sends a signed request to its route service (one attempt) and streams the
    /// answer back.
    async fn to_route_service(
        &self,
        url: &http::Uri,
        head: &RequestHead<'_>,
        body: &mut RequestBody,
        mut record: AccessRecord,
        started: Instant,
    ) -> Response<ResponseBody> {
        let https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = url.host().unwrap_or_default();
        let addr = format!(
            "{host}:{}",
            url.port_u16().unwrap_or(if https { 443 } else { 80 })
        );
        let tls_name = https.then_some(host);
        record.backend_addr = url.authority().map(|a| a.to_string());
        record.gorouter_time = started.elapsed();
        let sent = self.backends.send(
            Target {
                addr: &addr,
                tls_name,
            },
            head,
            body,
        );
        let result = tokio::time::timeout(self.response_timeout, sent).await;
        record.bytes_received = body.received();
        let resp = match result {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                prepare_response_headers(&mut parts.headers, record.vcap_request_id.as_ref());
                parts.headers.remove(X_CF_PROXY_SIGNATURE);
                Response::from_parts(parts, ResponseBody::backend(body))
            }
            Ok(Err(BackendError::RequestBodyTooLarge(limit))) => body_too_large(limit),
            Ok(Err(e)) => endpoint_failure(StatusCode::BAD_GATEWAY, &error_chain(&e)),
            Err(_) => endpoint_failure(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "timeout awaiting response headers after {:?}",
                    self.response_timeout
                ),
            ),
        };
        self.finish(resp, record, started, None, None)
    }

    /// Completes the access record and hands it to the response body, which logs it
    /// once the response has been sent.
    fn finish(
        &self,
        resp: Response<ResponseBody>,
        mut record: AccessRecord,
        started: Instant,
        endpoint: Option<&Arc<Endpoint>>,
        active: Option<ActiveRequest>,
    ) -> Response<ResponseBody> {
        record.status = resp.status().as_u16();
        record.router_error = header_str(resp.headers(), X_CF_ROUTER_ERROR);
        record.endpoint = endpoint.cloned();
        let (parts, mut body) = resp.into_parts();
        body.log = Some(Box::new(PendingLog {
            record,
            started,
            logger: self.log.clone(),
        }));
        body.active = active;
        Response::from_parts(parts, body)
    }
}

/// Copies bytes both ways between an upgraded client and backend connection until
/// either side closes or the router stops.
async fn tunnel(
    client: OnUpgrade,
    backend: Conn,
    active: Option<ActiveRequest>,
    cancel: CancellationToken,
) {
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut backend, early) = backend.into_parts();
    let mut client = TokioIo::new(client);
    // What the backend sent right after its 101 belongs to the new protocol.
    if !early.is_empty() {
        if let Err(e) = client.write_all(&early).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
            return;
        }
    }
    tokio::select! {
        _ = cancel.cancelled() => {}
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
    }
    drop(active);
}

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The endpoints to try, in order: the pool's order without endpoints in back-off
/// (unless all are), the sticky session's instance first while it lives, at most
/// [`MAX_ATTEMPTS`].
fn attempt_order(mut endpoints: Vec<Arc<Endpoint>>, sticky: Option<&str>) -> Vec<Arc<Endpoint>> {
    let healthy = endpoints.iter().take_while(|e| !e.is_backed_off()).count();
    let mut usable = if healthy == 0 {
        endpoints.len()
    } else {
        healthy
    };
    if let Some(i) = sticky.and_then(|id| endpoints.iter().position(|e| e.instance_id == id)) {
        endpoints[..=i].rotate_right(1);
        if i >= usable {
            usable += 1;
        }
    }
    endpoints.truncate(usable.min(MAX_ATTEMPTS));
    endpoints
}

/// `X-CF-App-Instance: <app guid>:<index>`: `Ok(None)` when absent, `Err(value)` when
/// malformed.
pub(crate) fn app_instance_header(headers: &HeaderMap) -> Result<Option<(String, String)>, String> {
    let Some(value) = headers.get(X_CF_APP_INSTANCE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "<not ASCII>".to_string())?
        .trim();
    match text.split_once(':') {
        Some((guid, index))
            if !guid.is_empty()
                && guid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(Some((guid.to_string(), index.to_string())))
        }
        _ => Err(text.to_string()),
    }
}

/// The protocol a request asks to switch to, when it sends `Connection: upgrade`.
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The `__VCAP_ID__` of a request that carries a session cookie too.
pub(crate) fn sticky_instance(headers: &HeaderMap, session_cookies: &[String]) -> Option<String> {
    let mut has_session = false;
    let mut instance = None;
    let pairs = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='));
    for (name, value) in pairs {
        if name == VCAP_ID_COOKIE {
            instance = Some(value.trim_matches('"').to_string()).filter(|v| !v.is_empty());
        } else if session_cookies.iter().any(|s| s == name) {
            has_session = true;
        }
    }
    instance.filter(|_| has_session)
}

/// Gorouter's sticky sessions: when the app sets a session cookie, add `__VCAP_ID__`
/// with the instance id (its lifetime attributes copied from the session cookie); when
/// a sticky request had to go to another instance, point the cookie at the new one.
pub(crate) fn set_sticky_cookie(
    headers: &mut HeaderMap,
    endpoint: &Endpoint,
    route_path: &str,
    session_cookies: &[String],
    requested_instance: Option<&str>,
) {
    let set_cookies: Vec<&str> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let name_of = |c: &str| {
        c.split(['=', ';'])
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if set_cookies.iter().any(|c| name_of(c) == VCAP_ID_COOKIE) {
        return;
    }
    let path = if route_path.is_empty() {
        "/"
    } else {
        route_path
    };
    let trigger = set_cookies
        .iter()
        .find(|c| session_cookies.iter().any(|s| *s == name_of(c)));
    if trigger.is_none() && requested_instance.is_none_or(|id| id == endpoint.instance_id) {
        return;
    }
    let mut cookie = format!(
        "{VCAP_ID_COOKIE}={}; Path={path}; HttpOnly",
        endpoint.instance_id
    );
    if let Some(trigger) = trigger {
        for attribute in trigger.split(';').skip(1).map(str::trim) {
            let name = attribute.split('=').next().unwrap_or_default();
            if ["max-age", "expires", "samesite", "secure", "partitioned"]
                .iter()
                .any(|a| name.eq_ignore_ascii_case(a))
            {
                cookie.push_str("; ");
                cookie.push_str(attribute);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// A backend's (or route service's) response headers, for the client: without
/// hop-by-hop headers, with the request's `X-Vcap-Request-Id` unless it set one.
fn prepare_response_headers(headers: &mut HeaderMap, request_id: Option<&HeaderValue>) {
    remove_hop_by_hop(headers);
    if let Some(id) = request_id {
        headers
            .entry(X_VCAP_REQUEST_ID)
            .or_insert_with(|| id.clone());
    }
}

/// Gorouter's answer when the backend failed: `X-Cf-Routererror: endpoint_failure (<error>)`.
fn endpoint_failure(status: StatusCode, error: &str) -> Response<ResponseBody> {
    error_response(
        status,
        &format!("endpoint_failure ({error})"),
        "Registered endpoint failed to handle the request.",
        None,
    )
}

fn body_too_large(limit: u64) -> Response<ResponseBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "",
        &format!("Request body exceeds the limit of {limit} bytes."),
        None,
    )
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<String> {
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
    if !router_error.is_empty() {
        if let Ok(v) = HeaderValue::from_str(router_error) {
            h.insert(X_CF_ROUTER_ERROR, v);
        }
    }
    if let Some(cc) = cache_control {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    resp
}

/// Removes the headers that describe one hop (RFC 9110 7.6.1), including those the
/// `Connection` header names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names is cheaper than a lookup of each.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The headers that only describe one hop, whatever `Connection` names besides.
// Statics, not consts: a const array of header names would be made and dropped at
// each use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // By text: one match on the length and bytes, not a comparison with each name.
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Writes `X-Forwarded-For` (the client appended), `X-Forwarded-Proto` (when absent:
/// the client's scheme), `X-Request-Start` (when absent: `started`, in milliseconds)
/// and the new `X-Vcap-Request-Id` to `added`, removing the client's values they
/// replace. Returns the `X-Forwarded-For` and `X-Forwarded-Proto` the backend gets.
fn add_forwarding_headers(
    headers: &mut HeaderMap,
    sent: Sent,
    added: &mut HeaderLines,
    client: &ClientConn,
    request_id: &HeaderValue,
    started: std::time::SystemTime,
) -> (HeaderValue, HeaderValue) {
    let prior = sent
        .has(Watched::ForwardedFor)
        .then(|| headers.get(X_FORWARDED_FOR))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .filter(|prior| !prior.trim().is_empty());
    // Owned text becomes the header value without another copy.
    let forwarded_for = prior
        .and_then(|prior| HeaderValue::try_from(format!("{prior}, {}", client.addr.ip())).ok())
        .unwrap_or_else(|| client.forwarded_for.clone());
    if sent.has(Watched::ForwardedFor) {
        headers.remove(X_FORWARDED_FOR);
    }
    added.push(&X_FORWARDED_FOR, &[forwarded_for.as_bytes()]);
    let forwarded_proto = match sent
        .has(Watched::ForwardedProto)
        .then(|| headers.get(X_FORWARDED_PROTO))
        .flatten()
    {
        Some(proto) => proto.clone(),
        None => {
            added.push(&X_FORWARDED_PROTO, &[client.scheme.as_str().as_bytes()]);
            client.scheme.header_value()
        }
    };
    if !sent.has(Watched::RequestStart) {
        let ms = started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        added.push(
            &X_REQUEST_START,
            &[itoa::Buffer::new().format(ms).as_bytes()],
        );
    }
    if sent.has(Watched::RequestId) {
        headers.remove(X_VCAP_REQUEST_ID);
    }
    added.push(&X_VCAP_REQUEST_ID, &[request_id.as_bytes()]);
    (forwarded_for, forwarded_proto)
}

/// Removes from a client's request its hop-by-hop headers and its copies of those the
/// router sets itself (which it writes after the client's): `X-CF-App-Instance`, the
/// endpoint's and the route service's headers. The forwarding and trace headers are
/// replaced where they are written.
fn remove_replaced(headers: &mut HeaderMap, sent: Sent) {
    if sent.has(Watched::HopByHop) {
        remove_hop_by_hop(headers);
    }
    for (watched, names) in [
        (
            Watched::AppInstance,
            std::slice::from_ref(&X_CF_APP_INSTANCE),
        ),
        (Watched::Endpoint, &ENDPOINT_HEADERS[..]),
        (Watched::RouteService, &ROUTE_SERVICE_HEADERS[..]),
    ] {
        if sent.has(watched) {
            for name in names {
                headers.remove(name);
            }
        }
    }
}

/// `X-CF-ApplicationID`, `X-CF-InstanceIndex`, `X-CF-InstanceID`: the endpoint's, never
/// the client's.
pub(crate) static ENDPOINT_HEADERS: [HeaderName; 3] =
    [X_CF_APPLICATION_ID, X_CF_INSTANCE_INDEX, X_CF_INSTANCE_ID];

/// The headers of a request signed for a route service: the router's, never the
/// client's, and not passed on to the app.
static ROUTE_SERVICE_HEADERS: [HeaderName; 3] = [
    X_CF_FORWARDED_URL,
    X_CF_PROXY_SIGNATURE,
    X_CF_PROXY_METADATA,
];

/// A kind of client header that the proxy reads or replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watched {
    ForwardedFor,
    ForwardedProto,
    RequestStart,
    RequestId,
    AppInstance,
    /// One of [`ENDPOINT_HEADERS`].
    Endpoint,
    /// One of [`ROUTE_SERVICE_HEADERS`].
    RouteService,
    /// B3 or W3C trace context.
    Trace,
    /// One of [`HOP_BY_HOP`].
    HopByHop,
    /// `Cookie`: a sticky session's.
    Cookie,
}

impl Watched {
    fn of(name: &HeaderName) -> Option<Watched> {
        if is_hop_by_hop(name) {
            return Some(Watched::HopByHop);
        }
        Some(match name.as_str() {
            "cookie" => Watched::Cookie,
            "x-forwarded-for" => Watched::ForwardedFor,
            "x-forwarded-proto" => Watched::ForwardedProto,
            "x-request-start" => Watched::RequestStart,
            "x-vcap-request-id" => Watched::RequestId,
            "x-cf-app-instance" => Watched::AppInstance,
            "x-cf-applicationid" | "x-cf-instanceindex" | "x-cf-instanceid" => Watched::Endpoint,
            "x-cf-forwarded-url" | "x-cf-proxy-signature" | "x-cf-proxy-metadata" => {
                Watched::RouteService
            }
            "x-b3-traceid" | "x-b3-spanid" | "x-b3-parentspanid" | "traceparent" | "tracestate" => {
                Watched::Trace
            }
            _ => return None,
        })
    }
}

/// Which [`Watched`] headers a client sent, found in one pass over the names: a
/// request with none of them (the common case) costs no lookup of each.
#[derive(Debug, Clone, Copy, Default)]
struct Sent(u16);

impl Sent {
    fn scan(headers: &HeaderMap) -> Sent {
        Sent(
            headers
                .keys()
                .filter_map(Watched::of)
                .fold(0, |bits, w| bits | 1 << w as u16),
        )
    }

    fn has(self, watched: Watched) -> bool {
        self.0 & 1 << watched as u16 != 0
    }
}

/// The access log of a request, written when its response body is done (or dropped).
struct PendingLog {
    record: AccessRecord,
    started: Instant,
    logger: AccessLogger,
}

enum ResponseInner {
    Backend(BackendBody),
    Full(Option<Bytes>),
}

/// The body sent to the client: the backend's, streamed, or the router's own; counts
/// the bytes sent for the access log.
pub(crate) struct ResponseBody {
    inner: ResponseInner,
    sent: u64,
    log: Option<Box<PendingLog>>,
    /// Holds the endpoint's in-flight count until the response is done.
    active: Option<ActiveRequest>,
}

impl ResponseBody {
    fn backend(body: BackendBody) -> Self {
        ResponseBody {
            inner: ResponseInner::Backend(body),
            sent: 0,
            log: None,
            active: None,
        }
    }

    fn full(data: Bytes) -> Self {
        ResponseBody {
            inner: ResponseInner::Full(Some(data)),
            sent: 0,
            log: None,
            active: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
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
            log.logger
                .submit(log.record, self.sent, log.started.elapsed());
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
        let (h, recorded) = forwarded(h, Scheme::Http, remote, std::time::SystemTime::now());
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_REQUEST_START], "42");
        assert_eq!(h[X_VCAP_REQUEST_ID], "rid");
        assert_eq!(recorded, ("1.2.3.4, 10.0.0.9".into(), "https".into()));
        // Replaced, not repeated.
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_REQUEST_START,
            X_VCAP_REQUEST_ID,
        ] {
            assert_eq!(h.get_all(&name).iter().count(), 1, "{name}");
        }

        let (h, recorded) = forwarded(
            HeaderMap::new(),
            Scheme::Https,
            remote,
            std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        );
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_REQUEST_START], "1700000000123");
        assert_eq!(recorded, ("10.0.0.9".into(), "https".into()));
    }

    /// The headers a backend gets after `add_forwarding_headers`, and the forwarding
    /// headers recorded for the access log.
    fn forwarded(
        mut h: HeaderMap,
        scheme: Scheme,
        remote: std::net::SocketAddr,
        started: std::time::SystemTime,
    ) -> (HeaderMap, (String, String)) {
        let mut added = HeaderLines::default();
        let sent = Sent::scan(&h);
        let (xff, xfp) = add_forwarding_headers(
            &mut h,
            sent,
            &mut added,
            &ClientConn::new(remote, scheme),
            &HeaderValue::from_static("rid"),
            started,
        );
        let recorded = (
            xff.to_str().unwrap().to_string(),
            xfp.to_str().unwrap().to_string(),
        );
        (with_lines(h, &[&added]), recorded)
    }

    /// What a backend gets: the client's headers, then the lines.
    fn with_lines(mut h: HeaderMap, lines: &[&HeaderLines]) -> HeaderMap {
        for l in lines {
            l.append_to(&mut h);
        }
        h
    }

    #[test]
    fn every_header_the_router_replaces_is_watched() {
        let names = [
            (X_FORWARDED_FOR, Watched::ForwardedFor),
            (X_FORWARDED_PROTO, Watched::ForwardedProto),
            (X_REQUEST_START, Watched::RequestStart),
            (X_VCAP_REQUEST_ID, Watched::RequestId),
            (X_CF_APP_INSTANCE, Watched::AppInstance),
            (header::COOKIE, Watched::Cookie),
        ];
        let groups = [
            (&ENDPOINT_HEADERS[..], Watched::Endpoint),
            (&ROUTE_SERVICE_HEADERS, Watched::RouteService),
            (&HOP_BY_HOP, Watched::HopByHop),
            (
                &[
                    trace::X_B3_TRACE_ID,
                    trace::X_B3_SPAN_ID,
                    trace::X_B3_PARENT_SPAN_ID,
                    trace::TRACEPARENT,
                    trace::TRACESTATE,
                ],
                Watched::Trace,
            ),
        ];
        let all = names.iter().cloned().chain(
            groups
                .iter()
                .flat_map(|(ns, w)| ns.iter().map(|n| (n.clone(), *w))),
        );
        for (name, watched) in all {
            assert_eq!(Watched::of(&name), Some(watched), "{name}");
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            assert!(Sent::scan(&h).has(watched), "{name}");
        }
        assert_eq!(Watched::of(&header::ACCEPT), None);
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop(&header::CONTENT_LENGTH));
        assert_eq!(Sent::scan(&HeaderMap::new()).0, 0);
    }

    #[test]
    fn attempts_skip_backed_off_endpoints_and_start_with_the_sticky_one() {
        let endpoint = |id: &str| {
            Arc::new(Endpoint::new(
                format!("127.0.0.1:{}", id.len()),
                None,
                None,
                id.into(),
            ))
        };
        let ids = |order: Vec<Arc<Endpoint>>| -> Vec<String> {
            order.iter().map(|e| e.instance_id.clone()).collect()
        };
        let pool: Vec<_> = ["a", "b", "c", "d", "e"].map(endpoint).into();
        pool[3].mark_failed();
        pool[4].mark_failed();
        assert_eq!(ids(attempt_order(pool.clone(), None)), ["a", "b", "c"]);
        assert_eq!(ids(attempt_order(pool.clone(), Some("c"))), ["c", "a", "b"]);
        assert_eq!(
            ids(attempt_order(pool[..3].to_vec(), Some("b"))),
            ["b", "a", "c"]
        );
        // A sticky instance in back-off still goes first.
        assert_eq!(
            ids(attempt_order(
                vec![pool[0].clone(), pool[4].clone()],
                Some("e")
            )),
            ["e", "a"]
        );
        // All backed off: all are tried.
        assert_eq!(ids(attempt_order(pool[3..].to_vec(), None)), ["d", "e"]);
    }

    #[test]
    fn endpoint_headers_overwrite_client_values() {
        let mut h = HeaderMap::new();
        h.insert(X_CF_APPLICATION_ID, HeaderValue::from_static("spoofed"));
        h.insert(X_CF_INSTANCE_INDEX, HeaderValue::from_static("7"));
        h.insert(X_CF_APP_INSTANCE, HeaderValue::from_static("app:0"));
        h.insert(
            X_CF_FORWARDED_URL,
            HeaderValue::from_static("http://elsewhere/"),
        );
        let endpoint = Endpoint::new("127.0.0.1:1".into(), Some("app".into()), None, "iid".into());
        let sent = Sent::scan(&h);
        remove_replaced(&mut h, sent);
        assert!(h.is_empty(), "{h:?}");
        let h = with_lines(h, &[endpoint.header_lines()]);
        assert_eq!(h[X_CF_APPLICATION_ID], "app");
        assert!(!h.contains_key(X_CF_INSTANCE_INDEX));
        assert_eq!(h[X_CF_INSTANCE_ID], "iid");
    }
}
