//! The route table: host + context path -> endpoint pools, fed by `router.register`
//! and `router.unregister`, pruned of endpoints that stopped re-registering (except TLS
//! endpoints: as in Gorouter, the certificate check keeps a stale one from serving the
//! wrong app, so they stay until unregistered).
//!
//! Lookup follows Gorouter: the host is lower-cased without its port, the path is
//! matched by the longest context path over whole segments, and `*.domain` wildcard
//! routes apply when no exact host is registered.
//!
//! Each pool balances its endpoints round-robin or by least connections (the
//! registration's `options.loadbalancing`), and endpoints that recently failed to accept
//! a connection are offered last, so the proxy can skip them (Gorouter's back-off).

use std::borrow::Cow;
use std::collections::BTreeMap;

use foldhash::HashMap as FoldMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backend::HeaderLines;
use crate::proxy::ENDPOINT_HEADERS;
use crate::RegistryMessage;

/// Gorouter skips an endpoint that failed for `droplet_stale_threshold / 4`.
pub const DEFAULT_ENDPOINT_BACKOFF: Duration = Duration::from_secs(30);

/// One backend instance of a route, with its live load (connections in flight) and
/// the time of its last connection failure.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` to connect to (`host:tls_port` for a TLS endpoint).
    pub addr: String,
    /// `server_cert_domain_san` of a TLS endpoint: the name its certificate must have.
    tls_server_name: Option<String>,
    /// The app guid (`app` of the registration), the log source of RTR lines.
    pub app_id: Option<String>,
    pub instance_index: Option<String>,
    /// `private_instance_id`, else `host:port`.
    pub instance_id: String,
    /// `X-CF-ApplicationID`, `X-CF-InstanceIndex` and `X-CF-InstanceID` of requests
    /// to this endpoint, written once (a value not known, or not valid in a header, is
    /// left out).
    header_lines: HeaderLines,
    active: AtomicUsize,
    /// Milliseconds since the Unix epoch of the last connect failure; 0 when none.
    failed_at_ms: AtomicU64,
    backoff: Duration,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.is(
            &other.addr,
            other.tls_server_name.as_deref(),
            other.app_id.as_deref(),
            other.instance_index.as_deref(),
            &other.instance_id,
        )
    }
}

impl Eq for Endpoint {}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

impl Endpoint {
    pub fn new(
        addr: String,
        app_id: Option<String>,
        instance_index: Option<String>,
        instance_id: String,
    ) -> Endpoint {
        let mut header_lines = HeaderLines::default();
        let values = [
            app_id.as_deref(),
            instance_index.as_deref(),
            Some(instance_id.as_str()),
        ];
        for (name, value) in ENDPOINT_HEADERS.iter().zip(values) {
            if let Some(value) = value {
                header_lines.push(name, &[value.as_bytes()]);
            }
        }
        Endpoint {
            addr,
            tls_server_name: None,
            header_lines,
            app_id,
            instance_index,
            instance_id,
            active: AtomicUsize::new(0),
            failed_at_ms: AtomicU64::new(0),
            backoff: DEFAULT_ENDPOINT_BACKOFF,
        }
    }

    /// Whether this is the endpoint that these fields of a registration make (what
    /// endpoints are compared by).
    fn is(
        &self,
        addr: &str,
        tls_server_name: Option<&str>,
        app_id: Option<&str>,
        instance_index: Option<&str>,
        instance_id: &str,
    ) -> bool {
        self.addr == addr
            && self.tls_server_name.as_deref() == tls_server_name
            && self.app_id.as_deref() == app_id
            && self.instance_index.as_deref() == instance_index
            && self.instance_id == instance_id
    }

    /// The `X-CF-ApplicationID`, `X-CF-InstanceIndex` and `X-CF-InstanceID` lines of
    /// requests to this endpoint.
    pub(crate) fn header_lines(&self) -> &HeaderLines {
        &self.header_lines
    }

    /// Whether the router talks TLS to this endpoint.
    pub fn is_tls(&self) -> bool {
        self.tls_server_name.is_some()
    }

    /// Where the proxy connects for this endpoint: its address, and for a TLS endpoint
    /// the `server_cert_domain_san` its certificate must name.
    pub(crate) fn target(&self) -> crate::backend::Target<'_> {
        crate::backend::Target {
            addr: &self.addr,
            tls_name: self.tls_server_name.as_deref(),
        }
    }

    /// Requests (or upgraded connections) currently being served by this endpoint.
    pub fn active_requests(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request against this endpoint until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }

    /// Records a connection failure: the endpoint is offered last for the back-off time.
    pub fn mark_failed(&self) {
        self.failed_at_ms.store(unix_ms().max(1), Ordering::Relaxed);
    }

    /// Whether the endpoint failed within its back-off time.
    pub fn is_backed_off(&self) -> bool {
        let failed = self.failed_at_ms.load(Ordering::Relaxed);
        failed != 0 && unix_ms().saturating_sub(failed) < self.backoff.as_millis() as u64
    }

    fn clear_failure(&self) {
        self.failed_at_ms.store(0, Ordering::Relaxed);
    }
}

/// A request in flight to an [`Endpoint`], for least-connection balancing.
#[derive(Debug)]
pub struct ActiveRequest(Arc<Endpoint>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a pool picks its next endpoint (`options.loadbalancing` of the registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastConnection,
}

impl LoadBalancing {
    fn from_registration(msg: &RegistryMessage) -> LoadBalancing {
        match msg
            .options
            .as_ref()
            .and_then(|o| o.loadbalancing.as_deref())
        {
            Some("least-connection") => LoadBalancing::LeastConnection,
            _ => LoadBalancing::RoundRobin,
        }
    }
}

struct RegisteredEndpoint {
    endpoint: Arc<Endpoint>,
    updated: Instant,
    stale_threshold: Duration,
    tags: Arc<BTreeMap<String, String>>,
}

/// One endpoint in the `/routes` dump, in Gorouter's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteDumpEntry {
    pub address: String,
    pub tls: bool,
    pub ttl: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_instance_id: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl RegisteredEndpoint {
    fn is_stale(&self, now: Instant) -> bool {
        !self.endpoint.is_tls()
            && now.saturating_duration_since(self.updated) > self.stale_threshold
    }
}

#[derive(Default)]
struct Pool {
    endpoints: Vec<RegisteredEndpoint>,
    /// Round-robin position (also breaks least-connection ties).
    next: AtomicUsize,
    load_balancing: LoadBalancing,
    /// `route_service_url` of the latest registration, as Gorouter keeps it per pool.
    route_service_url: Option<Arc<str>>,
}

/// What a request's host and path resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    UnknownRoute,
    /// The route exists but none of its endpoints is fresh.
    NoEndpoints,
    /// The matched route's context path (`""` for a host route) and its fresh
    /// endpoints in the order to try them: by the pool's load balancing, endpoints in
    /// back-off last; and the route service the route is bound to.
    Endpoints {
        path: String,
        endpoints: Vec<Arc<Endpoint>>,
        route_service_url: Option<Arc<str>>,
    },
}

pub struct RouteTable {
    /// Host -> context path ("" for the whole host) -> pool.
    /// foldhash rather than SipHash: looked up on every request, and its keys come
    /// from registrations, not from clients.
    hosts: FoldMap<String, FoldMap<String, Pool>>,
    prune_threshold: Duration,
    endpoint_backoff: Duration,
}

/// Splits a registered uri (`Host[:port][/path]`) or a request's host and path into
/// the table's key: lower-cased host without port, path without query and trailing `/`.
fn route_key<'a>(host: &'a str, path: &'a str) -> (Cow<'a, str>, Cow<'a, str>) {
    let host = host.trim();
    // Bracketed IPv6 literals keep their colons.
    let host = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    (lower_case(host), lower_case(path.trim_end_matches('/')))
}

/// `s` in ASCII lower case, copied only when it has upper-case letters (lookups run on
/// every request, and most hosts and paths are lower case already).
fn lower_case(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The address to connect to and the TLS server name of a registration: with both
/// `tls_port` and `server_cert_domain_san`, TLS to `host:tls_port`; else `host:port`.
fn endpoint_addr(msg: &RegistryMessage) -> (String, Option<String>) {
    match (
        msg.tls_port,
        msg.server_cert_domain_san
            .as_deref()
            .filter(|s| !s.is_empty()),
    ) {
        (Some(tls_port), Some(san)) => (format!("{}:{tls_port}", msg.host), Some(san.to_string())),
        _ => (format!("{}:{}", msg.host, msg.port), None),
    }
}

fn uri_key(uri: &str) -> (String, String) {
    let (host, path) = match uri.find('/') {
        Some(i) => route_key(&uri[..i], &uri[i..]),
        None => route_key(uri, ""),
    };
    (host.into_owned(), path.into_owned())
}

impl RouteTable {
    /// `prune_threshold`: endpoints not re-registered for this long are stale (CF: 120 s).
    pub fn new(prune_threshold: Duration) -> RouteTable {
        RouteTable {
            hosts: FoldMap::default(),
            prune_threshold,
            endpoint_backoff: DEFAULT_ENDPOINT_BACKOFF,
        }
    }

    /// How long an endpoint that failed a connection is offered last (Gorouter: 30 s);
    /// applies to endpoints registered from now on.
    pub fn set_endpoint_backoff(&mut self, backoff: Duration) {
        self.endpoint_backoff = backoff;
    }

    /// Adds or refreshes the endpoint of `msg` on each of its uris. A refresh of an
    /// unchanged endpoint keeps its live load and failure state.
    pub fn register(&mut self, msg: &RegistryMessage, now: Instant) {
        let (addr, tls_server_name) = endpoint_addr(msg);
        let app_id = msg.app.as_deref().filter(|a| !a.is_empty());
        let instance_id = msg
            .private_instance_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .unwrap_or(&addr);
        // Route-emitters re-register every endpoint every 20 s: most registrations
        // change nothing but the time, so the endpoint and its tags are only made
        // when new or changed.
        let mut endpoint: Option<Arc<Endpoint>> = None;
        let mut new_endpoint = || {
            endpoint
                .get_or_insert_with(|| {
                    let mut endpoint = Endpoint::new(
                        addr.clone(),
                        app_id.map(str::to_string),
                        msg.private_instance_index.clone(),
                        instance_id.to_string(),
                    );
                    endpoint.backoff = self.endpoint_backoff;
                    endpoint.tls_server_name = tls_server_name.clone();
                    Arc::new(endpoint)
                })
                .clone()
        };
        let mut tags: Option<Arc<BTreeMap<String, String>>> = None;
        let mut new_tags = || {
            tags.get_or_insert_with(|| Arc::new(msg.tags.clone()))
                .clone()
        };
        let load_balancing = LoadBalancing::from_registration(msg);
        let route_service_url = msg
            .route_service_url
            .as_deref()
            .filter(|url| !url.is_empty());
        let stale_threshold = msg
            .stale_threshold_in_seconds
            .filter(|s| *s > 0)
            .map_or(self.prune_threshold, |s| {
                Duration::from_secs(s).min(self.prune_threshold)
            });
        for uri in &msg.uris {
            let (host, path) = uri_key(uri);
            if host.is_empty() {
                continue;
            }
            let pool = self.hosts.entry(host).or_default().entry(path).or_default();
            pool.load_balancing = load_balancing;
            if pool.route_service_url.as_deref() != route_service_url {
                pool.route_service_url = route_service_url.map(Arc::from);
            }
            let same = |e: &&mut RegisteredEndpoint| e.endpoint.instance_id == instance_id;
            match pool.endpoints.iter_mut().find(same) {
                Some(existing) => {
                    let unchanged = existing.endpoint.is(
                        &addr,
                        tls_server_name.as_deref(),
                        app_id,
                        msg.private_instance_index.as_deref(),
                        instance_id,
                    );
                    if !unchanged {
                        existing.endpoint = new_endpoint();
                    }
                    existing.updated = now;
                    existing.stale_threshold = stale_threshold;
                    if *existing.tags != msg.tags {
                        existing.tags = new_tags();
                    }
                }
                None => pool.endpoints.push(RegisteredEndpoint {
                    endpoint: new_endpoint(),
                    updated: now,
                    stale_threshold,
                    tags: new_tags(),
                }),
            }
        }
    }

    /// Removes the endpoint of `msg` from each of its uris; emptied routes are removed.
    pub fn unregister(&mut self, msg: &RegistryMessage) {
        let (addr, _) = endpoint_addr(msg);
        let instance_id = msg
            .private_instance_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .unwrap_or(&addr);
        for uri in &msg.uris {
            let (host, path) = uri_key(uri);
            let Some(paths) = self.hosts.get_mut(&host) else {
                continue;
            };
            if let Some(pool) = paths.get_mut(&path) {
                pool.endpoints
                    .retain(|e| e.endpoint.instance_id != instance_id);
                if pool.endpoints.is_empty() {
                    paths.remove(&path);
                }
            }
            if paths.is_empty() {
                self.hosts.remove(&host);
            }
        }
    }

    /// Drops stale endpoints and the routes left empty; returns how many were dropped.
    pub fn prune(&mut self, now: Instant) -> usize {
        let mut pruned = 0;
        self.hosts.retain(|_, paths| {
            paths.retain(|_, pool| {
                let before = pool.endpoints.len();
                pool.endpoints.retain(|e| !e.is_stale(now));
                pruned += before - pool.endpoints.len();
                !pool.endpoints.is_empty()
            });
            !paths.is_empty()
        });
        pruned
    }

    /// Resolves a request's `Host` header and path.
    pub fn lookup(&self, host: &str, path: &str, now: Instant) -> Lookup {
        let (host, path) = route_key(host, path);
        let Some(paths) = self.host_routes(&host) else {
            return Lookup::UnknownRoute;
        };
        // Context paths matching whole segments, longest first; one with fresh
        // endpoints wins over a longer one without.
        let mut matching: Vec<(&String, &Pool)> = paths
            .iter()
            .filter(|(context, _)| {
                context.is_empty()
                    || (path.starts_with(context.as_str())
                        && matches!(path.as_bytes().get(context.len()), None | Some(b'/')))
            })
            .collect();
        if matching.is_empty() {
            return Lookup::UnknownRoute;
        }
        matching.sort_by_key(|(context, _)| std::cmp::Reverse(context.len()));
        for (context, pool) in matching {
            let mut fresh: Vec<Arc<Endpoint>> = pool
                .endpoints
                .iter()
                .filter(|e| !e.is_stale(now))
                .map(|e| e.endpoint.clone())
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let start = pool.next.fetch_add(1, Ordering::Relaxed) % fresh.len();
            fresh.rotate_left(start);
            if pool.load_balancing == LoadBalancing::LeastConnection {
                // Stable: ties keep the rotated order, spreading them.
                fresh.sort_by_key(|e| e.active_requests());
            }
            let backed_off = fresh.iter().filter(|e| e.is_backed_off()).count();
            if backed_off == fresh.len() {
                // Gorouter clears the marks when every endpoint is marked.
                fresh.iter().for_each(|e| e.clear_failure());
            } else if backed_off > 0 {
                let (mut healthy, failing): (Vec<_>, Vec<_>) =
                    fresh.into_iter().partition(|e| !e.is_backed_off());
                healthy.extend(failing);
                fresh = healthy;
            }
            let path = if context.is_empty() {
                String::new()
            } else {
                context.clone()
            };
            return Lookup::Endpoints {
                path,
                endpoints: fresh,
                route_service_url: pool.route_service_url.clone(),
            };
        }
        Lookup::NoEndpoints
    }

    /// Every route with its endpoints, for the status port's `/routes`.
    pub fn dump(&self) -> BTreeMap<String, Vec<RouteDumpEntry>> {
        let mut routes = BTreeMap::new();
        for (host, paths) in &self.hosts {
            for (path, pool) in paths {
                let entries = pool
                    .endpoints
                    .iter()
                    .map(|e| RouteDumpEntry {
                        address: e.endpoint.addr.clone(),
                        tls: e.endpoint.is_tls(),
                        ttl: e.stale_threshold.as_secs(),
                        private_instance_id: Some(e.endpoint.instance_id.clone())
                            .filter(|id| *id != e.endpoint.addr),
                        tags: (*e.tags).clone(),
                    })
                    .collect();
                routes.insert(format!("{host}{path}"), entries);
            }
        }
        routes
    }

    /// How many routes (host + context path) are registered.
    pub fn route_count(&self) -> usize {
        self.hosts.values().map(FoldMap::len).sum()
    }

    /// The routes of `host`, else of the nearest `*.` wildcard above it.
    fn host_routes(&self, host: &str) -> Option<&FoldMap<String, Pool>> {
        if let Some(paths) = self.hosts.get(host) {
            return Some(paths);
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(paths) = self.hosts.get(&format!("*.{parent}")) {
                return Some(paths);
            }
            rest = parent;
        }
        None
    }

    /// How many endpoints are registered over all routes.
    pub fn endpoint_count(&self) -> usize {
        self.hosts
            .values()
            .flat_map(|paths| paths.values())
            .map(|pool| pool.endpoints.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uri: &str, port: u16, id: &str) -> RegistryMessage {
        RegistryMessage {
            host: "127.0.0.1".into(),
            port,
            uris: vec![uri.into()],
            app: Some("app-guid".into()),
            private_instance_id: Some(id.into()),
            private_instance_index: Some("0".into()),
            ..Default::default()
        }
    }

    fn addrs(lookup: Lookup) -> Vec<String> {
        match lookup {
            Lookup::Endpoints { endpoints, .. } => {
                endpoints.iter().map(|e| e.addr.clone()).collect()
            }
            other => panic!("no endpoints: {other:?}"),
        }
    }

    #[test]
    fn host_matching_ignores_case_and_port() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("Hello.Apps.Localhost", 1000, "a"), now);
        assert_eq!(
            addrs(table.lookup("hello.apps.localhost:8080", "/", now)),
            ["127.0.0.1:1000"]
        );
        assert_eq!(
            addrs(table.lookup("HELLO.apps.localhost", "/x?y=1", now)),
            ["127.0.0.1:1000"]
        );
        assert_eq!(
            table.lookup("other.apps.localhost", "/", now),
            Lookup::UnknownRoute
        );
        assert_eq!(table.lookup("", "/", now), Lookup::UnknownRoute);
    }

    #[test]
    fn context_paths_match_by_longest_whole_segment_prefix() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("a.example.com", 1, "root"), now);
        table.register(&reg("a.example.com/api/", 2, "api"), now);
        table.register(&reg("a.example.com/api/v2", 3, "v2"), now);
        table.register(&reg("b.example.com/only", 4, "only"), now);
        let port = |host: &str, path: &str| addrs(table.lookup(host, path, now))[0].clone();
        assert_eq!(port("a.example.com", "/"), "127.0.0.1:1");
        assert_eq!(port("a.example.com", "/apiary"), "127.0.0.1:1");
        assert_eq!(port("a.example.com", "/api"), "127.0.0.1:2");
        assert_eq!(port("a.example.com", "/API/users"), "127.0.0.1:2");
        assert_eq!(port("a.example.com", "/api/v2/x"), "127.0.0.1:3");
        assert_eq!(port("b.example.com", "/only/more"), "127.0.0.1:4");
        assert_eq!(
            table.lookup("b.example.com", "/", now),
            Lookup::UnknownRoute
        );
    }

    #[test]
    fn wildcard_routes_apply_when_no_exact_host_exists() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("*.example.com", 1, "wild"), now);
        table.register(&reg("exact.example.com", 2, "exact"), now);
        assert_eq!(
            addrs(table.lookup("x.y.example.com", "/", now)),
            ["127.0.0.1:1"]
        );
        assert_eq!(
            addrs(table.lookup("exact.example.com", "/", now)),
            ["127.0.0.1:2"]
        );
        assert_eq!(table.lookup("example.com", "/", now), Lookup::UnknownRoute);
    }

    #[test]
    fn round_robin_rotates_over_endpoints() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("rr.example.com", 1, "a"), now);
        table.register(&reg("rr.example.com", 2, "b"), now);
        let firsts: Vec<String> = (0..4)
            .map(|_| addrs(table.lookup("rr.example.com", "/", now))[0].clone())
            .collect();
        assert_eq!(
            firsts,
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(addrs(table.lookup("rr.example.com", "/", now)).len(), 2);
    }

    #[test]
    fn a_re_registration_keeps_an_unchanged_endpoint_and_replaces_a_changed_one() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        let endpoint = |table: &RouteTable| match table.lookup("app.example.com", "/", now) {
            Lookup::Endpoints { endpoints, .. } => endpoints[0].clone(),
            other => panic!("no endpoints: {other:?}"),
        };
        let tags = |table: &RouteTable| table.dump()["app.example.com"][0].tags.clone();
        let mut msg = reg("app.example.com", 1, "a");
        table.register(&msg, now);
        let first = endpoint(&table);
        // The same registration later: the same endpoint (its connection counts and
        // back-off stay), fresh again.
        table.register(&msg, now + Duration::from_secs(100));
        assert!(Arc::ptr_eq(&first, &endpoint(&table)));
        assert!(matches!(
            table.lookup("app.example.com", "/", now + Duration::from_secs(150)),
            Lookup::Endpoints { .. }
        ));
        // New tags replace the old ones, the endpoint stays.
        msg.tags.insert("component".into(), "route-emitter".into());
        table.register(&msg, now);
        assert!(Arc::ptr_eq(&first, &endpoint(&table)));
        assert_eq!(tags(&table)["component"], "route-emitter");
        // A new index (or app, address, TLS name) is a new endpoint.
        msg.private_instance_index = Some("3".into());
        table.register(&msg, now);
        let changed = endpoint(&table);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.instance_index.as_deref(), Some("3"));
        assert_eq!(table.endpoint_count(), 1);
    }

    #[test]
    fn register_refreshes_unregister_removes_and_empty_routes_vanish() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("app.example.com", 1, "a"), now);
        // Same instance on a new port replaces the old endpoint.
        table.register(&reg("app.example.com", 2, "a"), now);
        assert_eq!(
            addrs(table.lookup("app.example.com", "/", now)),
            ["127.0.0.1:2"]
        );
        assert_eq!(table.endpoint_count(), 1);
        // Without an instance id, host:port identifies the endpoint.
        let mut anonymous = reg("app.example.com", 3, "");
        anonymous.private_instance_id = None;
        table.register(&anonymous, now);
        assert_eq!(table.endpoint_count(), 2);
        table.unregister(&anonymous);
        table.unregister(&reg("app.example.com", 2, "a"));
        assert_eq!(
            table.lookup("app.example.com", "/", now),
            Lookup::UnknownRoute
        );
        assert_eq!(table.endpoint_count(), 0);
        // Unregistering what is not there is harmless.
        table.unregister(&reg("gone.example.com", 9, "z"));
    }

    #[test]
    fn stale_endpoints_get_no_traffic_and_are_pruned() {
        let t0 = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("app.example.com", 1, "old"), t0);
        let t1 = t0 + Duration::from_secs(100);
        table.register(&reg("app.example.com", 2, "new"), t1);
        let mut short = reg("short.example.com", 3, "short");
        short.stale_threshold_in_seconds = Some(10);
        table.register(&short, t1);

        let t2 = t0 + Duration::from_secs(121);
        assert_eq!(
            addrs(table.lookup("app.example.com", "/", t2)),
            ["127.0.0.1:2"]
        );
        assert_eq!(
            table.lookup("short.example.com", "/", t2),
            Lookup::NoEndpoints
        );
        assert_eq!(table.prune(t2), 2);
        assert_eq!(
            table.lookup("short.example.com", "/", t2),
            Lookup::UnknownRoute
        );
        assert_eq!(table.endpoint_count(), 1);
        assert_eq!(table.prune(t1 + Duration::from_secs(121)), 1);
        assert_eq!(
            table.lookup("app.example.com", "/", t2),
            Lookup::UnknownRoute
        );
    }

    #[test]
    fn tls_endpoints_are_never_stale() {
        let t0 = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        let mut tls = reg("tls.example.com", 1, "tls");
        tls.tls_port = Some(61443);
        tls.server_cert_domain_san = Some("tls-instance".into());
        table.register(&tls, t0);
        let later = t0 + Duration::from_secs(600);
        assert_eq!(table.prune(later), 0);
        assert_eq!(
            addrs(table.lookup("tls.example.com", "/", later)),
            ["127.0.0.1:61443"]
        );
        table.unregister(&tls);
        assert_eq!(table.endpoint_count(), 0);
    }

    fn endpoints(lookup: Lookup) -> Vec<Arc<Endpoint>> {
        match lookup {
            Lookup::Endpoints { endpoints, .. } => endpoints,
            other => panic!("no endpoints: {other:?}"),
        }
    }

    #[test]
    fn least_connection_prefers_the_idlest_endpoint() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        for (port, id) in [(1, "a"), (2, "b"), (3, "c")] {
            let mut msg = reg("lc.example.com", port, id);
            msg.options = Some(crate::message::RegistryOptions {
                loadbalancing: Some("least-connection".into()),
            });
            table.register(&msg, now);
        }
        let all = endpoints(table.lookup("lc.example.com", "/", now));
        let busy_a = all
            .iter()
            .find(|e| e.instance_id == "a")
            .unwrap()
            .begin_request();
        let busy_b = all
            .iter()
            .find(|e| e.instance_id == "b")
            .unwrap()
            .begin_request();
        for _ in 0..3 {
            assert_eq!(
                addrs(table.lookup("lc.example.com", "/", now))[0],
                "127.0.0.1:3"
            );
        }
        drop((busy_a, busy_b));
        let firsts: std::collections::BTreeSet<String> = (0..3)
            .map(|_| addrs(table.lookup("lc.example.com", "/", now))[0].clone())
            .collect();
        assert_eq!(firsts.len(), 3, "ties are spread: {firsts:?}");
    }

    #[test]
    fn failed_endpoints_go_last_until_all_have_failed() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("f.example.com", 1, "a"), now);
        table.register(&reg("f.example.com", 2, "b"), now);
        let all = endpoints(table.lookup("f.example.com", "/", now));
        all.iter()
            .find(|e| e.instance_id == "a")
            .unwrap()
            .mark_failed();
        for _ in 0..3 {
            let order = endpoints(table.lookup("f.example.com", "/", now));
            assert_eq!(order[0].instance_id, "b");
            assert!(order[1].is_backed_off());
        }
        // A re-registration keeps the mark.
        table.register(&reg("f.example.com", 1, "a"), now);
        assert_eq!(
            endpoints(table.lookup("f.example.com", "/", now))[0].instance_id,
            "b"
        );
        all.iter().for_each(|e| e.mark_failed());
        table.lookup("f.example.com", "/", now);
        assert!(all.iter().all(|e| !e.is_backed_off()));
    }

    #[test]
    fn dump_lists_routes_with_their_endpoints() {
        let now = Instant::now();
        let mut table = RouteTable::new(Duration::from_secs(120));
        table.register(&reg("d.example.com/api", 1, "a"), now);
        table.register(&reg("e.example.com", 2, "b"), now);
        assert_eq!(table.route_count(), 2);
        let dump = table.dump();
        assert_eq!(dump["d.example.com/api"][0].address, "127.0.0.1:1");
        assert_eq!(dump["e.example.com"][0].ttl, 120);
        assert_eq!(
            dump["e.example.com"][0].private_instance_id.as_deref(),
            Some("b")
        );
    }
}
