//! The staticfile buildpack on the real platform: a folder with a `Staticfile` is
//! pushed as source, staged by `staticfile_buildpack` into the built-in static file
//! server, and served through the router with content types, directory indexes and
//! listings, gzip, ETags and 404s.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use wf_tests::platform::{Platform, APPS_DOMAIN};

const SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/apps/source/static-site");

/// A response read as bytes (gzip bodies are not text).
struct Fetched {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `method path` on the app at `host` through the router, with `headers`.
fn fetch(
    platform: &Platform,
    method: reqwest::Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Fetched {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut request = client
        .request(method, format!("http://{}{path}", platform.router_addr))
        .header("host", format!("{host}.{APPS_DOMAIN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().expect("request through the router");
    Fetched {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().expect("response body").to_vec(),
    }
}

/// The status of `GET target` with the request target written verbatim.
fn raw_status(platform: &Platform, target: &str) -> u16 {
    let mut stream = TcpStream::connect(platform.router_addr).expect("connect to the router");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: site.{APPS_DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

fn get(platform: &Platform, path: &str, headers: &[(&str, &str)]) -> Fetched {
    fetch(platform, reqwest::Method::GET, "site", path, headers)
}

#[test]
fn push_a_static_site_and_browse_it() {
    let platform = Platform::shared();
    let wf = platform.user();

    let started = Instant::now();
    let out = wf.ok(&["push", "site", "-p", SITE]);
    assert!(
        out.contains("Staticfile Buildpack"),
        "staging log in push:\n{out}"
    );
    let home = platform.wait_for("site", "/", Duration::from_secs(60), |r| r.status == 200);
    eprintln!("push to first 200: {:?}", started.elapsed());
    assert!(home.body.contains("Hello from a static site"), "{home:?}");
    let app = wf.ok(&["app", "site"]);
    assert!(app.contains("staticfile_buildpack"), "wf app:\n{app}");

    let index = std::fs::read(format!("{SITE}/index.html")).unwrap();
    let root = get(platform, "/", &[]);
    assert_eq!(root.status, 200);
    assert_eq!(root.body, index);
    assert_eq!(
        root.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(root.header("cache-control"), Some("no-cache"));
    assert_eq!(root.header("content-encoding"), None);
    let etag = root.header("etag").expect("an ETag").to_string();

    let css = get(platform, "/css/site.css", &[]);
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("cache-control"), Some("public, max-age=3600"));
    assert_eq!(
        css.body,
        std::fs::read(format!("{SITE}/css/site.css")).unwrap()
    );

    let sub = get(platform, "/sub/", &[]);
    assert_eq!(sub.status, 200);
    assert!(sub.text().contains("The sub page"), "{}", sub.text());
    let redirect = get(platform, "/sub", &[]);
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/sub/"));
    // `directory: visible` in the Staticfile: a directory without index.html lists.
    let listing = get(platform, "/css/", &[]);
    assert_eq!(listing.status, 200);
    assert!(
        listing.text().contains("<a href=\"site.css\">site.css</a>"),
        "{}",
        listing.text()
    );

    let missing = get(platform, "/no/such/page.html", &[]);
    assert_eq!(missing.status, 404);
    assert!(
        missing.text().contains("404 Not Found"),
        "{}",
        missing.text()
    );
    for secret in ["/Staticfile", "/.wf-static.json", "/app.wasm"] {
        assert_eq!(get(platform, secret, &[]).status, 404, "{secret}");
    }
    // Sent as is: a URL parser would resolve the dots before they reach the app.
    for traversal in [
        "/%2e%2e/%2e%2e/etc/passwd",
        "/sub/../../etc/passwd",
        "/.%2E/x",
    ] {
        assert_eq!(raw_status(platform, traversal), 400, "{traversal}");
    }

    // gzip when the client takes it, with its own ETag.
    let gz = get(platform, "/", &[("accept-encoding", "gzip, br")]);
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert_ne!(gz.header("etag"), Some(etag.as_str()));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(gz.body.as_slice())
        .read_to_end(&mut unzipped)
        .expect("a gzip body");
    assert_eq!(unzipped, index);

    // A current copy is not sent again.
    let cached = get(platform, "/", &[("if-none-match", &etag)]);
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.as_str()));
    let stale = get(platform, "/", &[("if-none-match", "\"stale\"")]);
    assert_eq!(stale.status, 200);

    let head = fetch(
        platform,
        reqwest::Method::HEAD,
        "site",
        "/css/site.css",
        &[],
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(head.body.is_empty());
    let post = fetch(platform, reqwest::Method::POST, "site", "/", &[]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}
