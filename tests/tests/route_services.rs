//! Route services end to end: a real HTTPS route service started here (its certificate
//! from a CA of this test, which the platform's router trusts with `--backend-ca`)
//! checks the router's X-CF headers, sends the request back through the router to
//! `X-CF-Forwarded-Url`, and marks the response. `wf cups -r`, `wf bind-route-service`:
//! requests to the app go through it (no restart); a request with a forged signature
//! straight to the router is refused; `wf unbind-route-service`: straight to the app
//! again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use wf_tests::platform::{http_get_with, HttpResponse, Platform, APPS_DOMAIN};

/// A CA of this test, and a server certificate it signed for 127.0.0.1.
struct TestCa {
    pem: String,
    server: rustls::ServerConfig,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "route services test CA");
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        TestCa {
            pem: issuer.pem(),
            server,
        }
    }
}

const ROUTE_SERVICE_HEADERS: [&str; 3] = [
    "x-cf-forwarded-url",
    "x-cf-proxy-signature",
    "x-cf-proxy-metadata",
];

/// Serves the route service on `listener` (TLS with `config`), sending each request
/// back through the router at `router`.
fn serve_route_service(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Arc<std::sync::OnceLock<SocketAddr>>,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let (config, router) = (config.clone(), router.clone());
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let Ok(connection) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let headers: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let reply = match ROUTE_SERVICE_HEADERS.map(header) {
                [Some(url), Some(signature), Some(metadata)] => {
                    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let path = if path.is_empty() { "/" } else { path };
                    let back = http_get_with(
                        *router.get().expect("the router's address"),
                        host,
                        path,
                        &[
                            ("X-CF-Forwarded-Url", &url),
                            ("X-CF-Proxy-Signature", &signature),
                            ("X-CF-Proxy-Metadata", &metadata),
                        ],
                    );
                    (back.status, back.body)
                }
                _ => (400, format!("missing X-CF headers: {head}")),
            };
            let response = format!(
                "HTTP/1.1 {} RS\r\nContent-Length: {}\r\nX-Route-Service: passed\r\nConnection: close\r\n\r\n{}",
                reply.0,
                reply.1.len(),
                reply.1
            );
            let _ = tls.write_all(response.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
    }
}

fn passed(resp: &HttpResponse) -> bool {
    resp.status == 200
        && resp.header("x-route-service") == Some("passed")
        && resp.body.contains("hello")
}

#[test]
fn a_bound_route_service_sees_the_routes_requests_first() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let rs_port = listener.local_addr().unwrap().port();
    let router = Arc::new(std::sync::OnceLock::new());
    std::thread::spawn({
        let (config, router) = (Arc::new(ca.server), router.clone());
        move || serve_route_service(listener, config, router)
    });
    let platform = Platform::start_with(&["--backend-ca".into(), ca_path.into()]);
    router.set(platform.router_addr).unwrap();
    let wf = platform.user();
    wf.push_fixture("rsapp", "hello");
    platform.wait_for("rsapp", "/", Duration::from_secs(30), |r| r.status == 200);

    let url = format!("https://127.0.0.1:{rs_port}");
    wf.ok(&["cups", "rs", "-r", &url]);
    let out = wf.ok(&[
        "bind-route-service",
        APPS_DOMAIN,
        "--hostname",
        "rsapp",
        "rs",
    ]);
    assert!(out.contains("OK"), "{out}");
    let again = wf.ok(&[
        "bind-route-service",
        APPS_DOMAIN,
        "--hostname",
        "rsapp",
        "rs",
    ]);
    assert!(again.contains("already bound"), "{again}");

    // Without a restart, requests go through the route service.
    let resp = platform.wait_for("rsapp", "/", Duration::from_secs(30), passed);
    assert!(resp.body.contains("hello from"), "{resp:?}");
    let routes = wf.ok(&["routes"]);
    assert!(
        routes.contains("service instance") && routes.contains(" rs"),
        "{routes}"
    );
    let service = wf.ok(&["service", "rs"]);
    assert!(
        service.contains(&format!("rsapp.{APPS_DOMAIN}")),
        "{service}"
    );

    // A client cannot skip the route service with a made-up signature.
    let forged = http_get_with(
        platform.router_addr,
        &format!("rsapp.{APPS_DOMAIN}"),
        "/",
        &[
            ("X-CF-Proxy-Signature", "bm90IGEgc2lnbmF0dXJl"),
            ("X-CF-Proxy-Metadata", "e30="),
            (
                "X-CF-Forwarded-Url",
                &format!("http://rsapp.{APPS_DOMAIN}/"),
            ),
        ],
    );
    assert_eq!(forged.status, 502, "{forged:?}");

    // Unbound: straight to the app again.
    let out = wf.ok(&[
        "unbind-route-service",
        APPS_DOMAIN,
        "--hostname",
        "rsapp",
        "rs",
        "-f",
    ]);
    assert!(out.contains("OK"), "{out}");
    platform.wait_for("rsapp", "/", Duration::from_secs(30), |r| {
        r.status == 200 && r.header("x-route-service").is_none()
    });
    let service = wf.ok(&["service", "rs"]);
    assert!(
        !service.contains(&format!("rsapp.{APPS_DOMAIN}")),
        "{service}"
    );
}
