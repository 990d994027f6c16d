//! The route table: host + context path -> endpoint pools, fed by `router.register`
//! and `router.unregister`, pruned of endpoints that stopped re-registering.
//!
//! Lookup follows Gorouter: the host is lower-cased without its port, the path is
//! matched by the longest context path over whole segments, and `*.domain` wildcard
//! routes apply when no exact host is registered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::RegistryMessage;

/// One backend instance of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub addr: String,
    /// The app guid (`app` of the registration), the log source of RTR lines.
    pub app_id: Option<String>,
    pub instance_index: Option<String>,
    /// `private_instance_id`, else `host:port`.
    pub instance_id: String,
}

struct RegisteredEndpoint {
    endpoint: Arc<Endpoint>,
    updated: Instant,
    stale_threshold: Duration,
}

impl RegisteredEndpoint {
    fn is_stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.updated) > self.stale_threshold
    }
}

#[derive(Default)]
struct Pool {
    endpoints: Vec<RegisteredEndpoint>,
    /// Round-robin position.
    next: AtomicUsize,
}

/// What a request's host and path resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    UnknownRoute,
    /// The route exists but none of its endpoints is fresh.
    NoEndpoints,
    /// Fresh endpoints, in the order to try them (round robin).
    Endpoints(Vec<Arc<Endpoint>>),
}

pub struct RouteTable {
    /// Host -> context path ("" for the whole host) -> pool.
    hosts: HashMap<String, HashMap<String, Pool>>,
    prune_threshold: Duration,
}

/// Splits a registered uri (`Host[:port][/path]`) or a request's host and path into
/// the table's key: lower-cased host without port, path without query and trailing `/`.
fn route_key(host: &str, path: &str) -> (String, String) {
    let host = host.trim();
    // Bracketed IPv6 literals keep their colons.
    let host = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    (
        host.to_ascii_lowercase(),
        path.trim_end_matches('/').to_ascii_lowercase(),
    )
}

fn uri_key(uri: &str) -> (String, String) {
    match uri.find('/') {
        Some(i) => route_key(&uri[..i], &uri[i..]),
        None => route_key(uri, ""),
    }
}

impl RouteTable {
    /// `prune_threshold`: endpoints not re-registered for this long are stale (CF: 120 s).
    pub fn new(prune_threshold: Duration) -> RouteTable {
        RouteTable {
            hosts: HashMap::new(),
            prune_threshold,
        }
    }

    /// Adds or refreshes the endpoint of `msg` on each of its uris.
    pub fn register(&mut self, msg: &RegistryMessage, now: Instant) {
        let addr = format!("{}:{}", msg.host, msg.port);
        let endpoint = Arc::new(Endpoint {
            instance_id: msg
                .private_instance_id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| addr.clone()),
            addr,
            app_id: msg.app.clone().filter(|a| !a.is_empty()),
            instance_index: msg.private_instance_index.clone(),
        });
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
            let registered = RegisteredEndpoint {
                endpoint: endpoint.clone(),
                updated: now,
                stale_threshold,
            };
            match pool
                .endpoints
                .iter_mut()
                .find(|e| e.endpoint.instance_id == endpoint.instance_id)
            {
                Some(existing) => *existing = registered,
                None => pool.endpoints.push(registered),
            }
        }
    }

    /// Removes the endpoint of `msg` from each of its uris; emptied routes are removed.
    pub fn unregister(&mut self, msg: &RegistryMessage) {
        let addr = format!("{}:{}", msg.host, msg.port);
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
        for (_, pool) in matching {
            let fresh: Vec<Arc<Endpoint>> = pool
                .endpoints
                .iter()
                .filter(|e| !e.is_stale(now))
                .map(|e| e.endpoint.clone())
                .collect();
            if !fresh.is_empty() {
                let start = pool.next.fetch_add(1, Ordering::Relaxed) % fresh.len();
                let mut ordered = fresh;
                ordered.rotate_left(start);
                return Lookup::Endpoints(ordered);
            }
        }
        Lookup::NoEndpoints
    }

    /// The routes of `host`, else of the nearest `*.` wildcard above it.
    fn host_routes(&self, host: &str) -> Option<&HashMap<String, Pool>> {
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
            Lookup::Endpoints(e) => e.iter().map(|e| e.addr.clone()).collect(),
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
}
