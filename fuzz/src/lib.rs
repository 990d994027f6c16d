//! The bodies of the `cargo fuzz` targets in `fuzz_targets/`: each feeds untrusted bytes
//! to the code that parses them in the platform (a user's manifest, package or droplet,
//! a request through the router, a bus message, a token, a broker's answer) and checks
//! that bad input gives an error, never a panic, a hang or an unbounded allocation.
//! Where a property is cheap to state (a signature verifies, a droplet the controller
//! accepts unpacks on a cell) the target asserts it too.
//!
//! The targets are plain functions so that `cargo test` replays the committed seeds
//! (`seeds/<target>/`) through them without libFuzzer; `fuzz/run.sh` runs each under
//! libFuzzer for a bounded time (CI: `.ci/run`). Bugs found become unit tests beside
//! the code they were in.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// A fuzz target's body: it takes the fuzzer's input.
pub type Target = fn(&[u8]);

/// Every target, by name (the `[[bin]]` names of `Cargo.toml`).
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("package_zip", package_zip),
    ("droplet_tgz", droplet_tgz),
    ("droplet_metadata", droplet_metadata),
    ("wasm_validate", wasm_validate),
    ("router_request", router_request),
    ("route_service", route_service),
    ("backend_response", backend_response),
    ("bus_messages", bus_messages),
    ("log_envelope", log_envelope),
    ("jwt", jwt),
    ("osb_responses", osb_responses),
];

/// `data` cut at the first `n - 1` occurrences of `sep` (fewer parts when it runs out).
fn fields(data: &[u8], sep: u8, n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == sep).collect()
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A scratch directory for the targets that work on files, made once per process; each
/// run gets a fresh subdirectory, removed when it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let root = ROOT.get_or_init(|| {
            tempfile::Builder::new()
                .prefix("wf-fuzz-")
                .tempdir()
                .expect("a scratch directory")
        });
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.path().join(n.to_string());
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("a scratch file");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Domains as the V3 API lists them, for the manifest's route splitting.
fn domains() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({"name": "apps.localhost", "guid": "d1"}),
        serde_json::json!({"name": "localhost", "guid": "d2"}),
        serde_json::json!({"name": "example.com", "guid": "d3"}),
    ]
}

/// An app manifest (`wf push -f`, `apply_manifest`): YAML parsing and CF's validation,
/// the values the apply step derives from it (processes, environment, sizes, routes),
/// and that a valid manifest rendered back to YAML parses again.
pub fn manifest(data: &[u8]) {
    use wf_controller::manifest;
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let _ = manifest::megabytes(yaml);
    let _ = manifest::log_rate(yaml);
    let _ = manifest::route_host(yaml);
    let Ok(parsed) = manifest::parse(yaml) else {
        return;
    };
    let domains = domains();
    for app in &parsed.applications {
        for (_, process) in app.process_configs() {
            for size in [&process.memory, &process.disk_quota].into_iter().flatten() {
                let _ = manifest::megabytes(size);
            }
        }
        let _ = app.env_strings();
        let _ = manifest::route_host(&app.name);
        for route in app.routes.iter().flatten() {
            let _ = wf_controller::fuzzing::split_route(&route.route, &domains);
        }
    }
    let rendered = serde_yaml::to_string(&parsed).expect("a parsed manifest renders");
    if let Err(e) = manifest::parse(&rendered) {
        panic!("a valid manifest rendered as\n{rendered}\ndoes not parse again: {e}");
    }
}

/// An app's bits as the controller takes them (`POST /v3/packages/:guid/upload`: a zip
/// or a bare wasm) and as a buildpack upload, then the resulting package as the
/// resource cache reads it and as staging extracts it.
pub fn package_zip(data: &[u8]) {
    use wf_controller::blobstore;
    let scratch = Scratch::new();
    let upload = scratch.file("bits.zip", data);
    let _ = blobstore::validate_buildpack(&upload, "buildpack.zip");
    let package = scratch.path("package.zip");
    if blobstore::prepare_package(&upload, &[], &package, "bits.zip").is_err() {
        return;
    }
    let cache = scratch.path("cache");
    std::fs::create_dir_all(&cache).expect("a scratch directory");
    let _ = blobstore::cacheable_files(&package, 1..=u64::MAX, &cache);
    let _ = wf_buildpacks::fuzzing::extract_package(&package, &scratch.path("app"));
}

/// The bound the controller puts on an uploaded droplet's unpacked size.
const MAX_UNPACKED_DROPLET_BYTES: u64 = wf_controller::fuzzing::MAX_UNPACKED_DROPLET_BYTES;

/// A droplet tgz: the controller's check of an uploaded one (`/v3/droplets/:guid/upload`),
/// the cell's unpacking, and the stager's buildpack cache unpacking. A droplet the
/// controller accepts must unpack on a cell with the same metadata.
pub fn droplet_tgz(data: &[u8]) {
    let scratch = Scratch::new();
    let tgz = scratch.file("droplet.tgz", data);
    let inspected = wf_buildpacks::inspect_droplet(&tgz, MAX_UNPACKED_DROPLET_BYTES);
    let unpacked = wf_buildpacks::unpack_droplet(&tgz, &scratch.path("droplet"));
    if let Ok(inspected) = inspected {
        match unpacked {
            Ok(unpacked) => assert_eq!(inspected, unpacked, "inspect and unpack disagree"),
            Err(e) => panic!("the controller accepts a droplet that a cell cannot unpack: {e}"),
        }
    }
    let _ = wf_buildpacks::unpack_cache(&tgz, &scratch.path("cache"));
}

/// `droplet.json`: parsed as a field of a droplet (with a valid `app.wasm`), by the
/// controller's check and the cell's unpacking, which must agree; what parses renders
/// and parses back the same.
pub fn droplet_metadata(data: &[u8]) {
    if let Ok(metadata) = serde_json::from_slice::<wf_buildpacks::DropletMetadata>(data) {
        let json = serde_json::to_vec(&metadata).expect("metadata renders");
        let again: wf_buildpacks::DropletMetadata =
            serde_json::from_slice(&json).expect("rendered metadata parses");
        assert_eq!(metadata, again);
    }
    let scratch = Scratch::new();
    let tgz = scratch.file(
        "droplet.tgz",
        &tgz(&[("app.wasm", MINIMAL_MODULE), ("droplet.json", data)]),
    );
    let inspected = wf_buildpacks::inspect_droplet(&tgz, MAX_UNPACKED_DROPLET_BYTES);
    let unpacked = wf_buildpacks::unpack_droplet(&tgz, &scratch.path("droplet"));
    match (inspected, unpacked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("inspect ({a:?}) and unpack ({b:?}) disagree"),
    }
}

/// The smallest valid core module.
const MINIMAL_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// A gzipped tar of `files` (regular files, mode 0644).
pub fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, *bytes)
            .expect("a tar entry");
    }
    tar.into_inner().and_then(|gz| gz.finish()).expect("a tgz")
}

/// An app's wasm as the wasm buildpack validates it when staging an upload (module,
/// command component or `wasi:http` handler).
pub fn wasm_validate(data: &[u8]) {
    let _ = wf_buildpacks::fuzzing::validate_wasm(data);
}

/// Registrations the request targets resolve against: host routes, context paths, a
/// wildcard, TLS and non-TLS endpoints.
fn route_table(now: Instant) -> wf_router::RouteTable {
    let mut table = wf_router::RouteTable::new(Duration::from_secs(120));
    let registrations = [
        (
            vec!["app.apps.localhost", "App.Example.com:8080/api"],
            "i-1",
        ),
        (vec!["app.apps.localhost/api/v1/", "*.example.com"], "i-2"),
        (vec!["[::1]:80", "x.y.z/a/b/c"], ""),
    ];
    for (i, (uris, id)) in registrations.into_iter().enumerate() {
        let msg = wf_router::RegistryMessage {
            host: "10.0.0.1".into(),
            port: 6000 + i as u16,
            uris: uris.into_iter().map(str::to_string).collect(),
            private_instance_id: Some(id.to_string()),
            tls_port: (i == 1).then_some(6443),
            server_cert_domain_san: (i == 1).then(|| "san".to_string()),
            ..Default::default()
        };
        table.register(&msg, now);
    }
    table
}

/// What the router parses of a request itself: the `Host` and path it looks the route
/// up by, and the B3 / W3C trace headers it keeps or replaces. Input: `host\npath\n`
/// then header lines `name: value`. (Sticky sessions and `X-CF-App-Instance` are parsed
/// in `router/src/proxy.rs`, which has no entry point for a fuzzer yet.)
pub fn router_request(data: &[u8]) {
    let parts = fields(data, b'\n', 3);
    let host = text(parts.first().copied().unwrap_or_default());
    let path = text(parts.get(1).copied().unwrap_or_default());
    let now = Instant::now();
    let table = route_table(now);
    if let wf_router::Lookup::Endpoints {
        path: context,
        endpoints,
        ..
    } = table.lookup(&host, &path, now)
    {
        assert!(!endpoints.is_empty());
        assert!(
            context.is_empty() || context.starts_with('/'),
            "{context:?}"
        );
    }
    let mut headers = http::HeaderMap::new();
    for line in parts
        .get(2)
        .copied()
        .unwrap_or_default()
        .split(|b| *b == b'\n')
    {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    // The proxy's own parsing of the client's headers: the values it reads must be
    // well formed, and no hop-by-hop header survives.
    let sessions = ["JSESSIONID".to_string()];
    let read = wf_router::fuzzing::client_headers(&mut headers, &sessions);
    if let Ok(Some((guid, index))) = &read.app_instance {
        assert!(!guid.is_empty() && index.bytes().all(|b| b.is_ascii_digit()));
    }
    assert!(read
        .sticky_instance
        .as_deref()
        .is_none_or(|id| !id.is_empty()));
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
    ] {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    // A backend answering with the client's headers as its own: the sticky cookie the
    // router adds must be a valid header, once.
    let mut response = headers.clone();
    let vcap_cookies = |h: &http::HeaderMap| {
        h.get_all(http::header::SET_COOKIE)
            .iter()
            .filter(|c| c.as_bytes().starts_with(b"__VCAP_ID__="))
            .count()
    };
    let before = vcap_cookies(&response);
    let endpoint = wf_router::Endpoint::new(
        "127.0.0.1:8080".into(),
        Some("app".into()),
        Some("0".into()),
        "instance-a".into(),
    );
    wf_router::fuzzing::set_sticky_cookie(
        &mut response,
        &endpoint,
        &path,
        &sessions,
        read.sticky_instance.as_deref(),
    );
    let after = vcap_cookies(&response);
    assert!(
        after == before || (before == 0 && after == 1),
        "{before} __VCAP_ID__ cookies from the backend, {after} to the client"
    );
    let client_traceparent = headers.get("traceparent").cloned();
    wf_router::fuzzing::propagate_trace(
        &mut headers,
        0x0af7651916cd43dd8448eb211c80319c,
        0xb7ad6b7169203331,
    );
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no traceparent after propagation"));
    assert!(
        is_traceparent(traceparent),
        "the router sends traceparent {traceparent:?} (client's: {client_traceparent:?})"
    );
    assert_eq!(
        headers.get_all("traceparent").iter().count(),
        1,
        "the client's traceparent is replaced, not repeated"
    );
    let span = &traceparent[36..52];
    let b3_span = headers
        .get("x-b3-spanid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(b3_span.len(), 16, "X-B3-SpanId {b3_span:?}");
    let state = headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(state.starts_with(&format!("gorouter={span}")), "{state:?}");
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zero.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && parts[3].len() == 2
        && parts[3].bytes().all(|b| b.is_ascii_hexdigit())
}

fn route_service_keys() -> &'static wf_router::fuzzing::RouteServiceKeys {
    static KEYS: OnceLock<wf_router::fuzzing::RouteServiceKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        wf_router::fuzzing::RouteServiceKeys::new(
            "current secret",
            Some("previous secret"),
            Duration::from_secs(60),
        )
        .expect("route service keys")
    })
}

/// A backend's response as the router's client reads it (`router/src/backend.rs`):
/// backends are apps, untrusted, and the router parses their answers itself. The first
/// byte picks the request's method (its low bit: HEAD, else GET) and how many bytes
/// each read delivers; the rest is the response. However the bytes arrive, the outcome
/// is the same, and a body is never longer than what was sent.
pub fn backend_response(data: &[u8]) {
    let Some((&first, response)) = data.split_first() else {
        return;
    };
    let method = if first & 1 == 1 {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    let piece = usize::from(first >> 1) + 1;
    let whole = wf_router::fuzzing::backend_response(response, &method, response.len());
    let in_pieces = wf_router::fuzzing::backend_response(response, &method, piece);
    assert_eq!(
        whole.as_ref().ok(),
        in_pieces.as_ref().ok(),
        "{whole:?} / {in_pieces:?}"
    );
    if let Ok((_, body)) = &whole {
        assert!(body.len() <= response.len());
    }
}

/// Route service signatures (`router/src/route_service.rs`): the router's check of
/// `X-CF-Proxy-Signature` and `X-CF-Proxy-Metadata` on a request back from a route
/// service. Mode byte 0: the headers and URL as given; 1: any plaintext sealed with the
/// current key (to reach the checks after decryption); else: a signature the router
/// made for a URL must verify for that URL.
pub fn route_service(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let keys = route_service_keys();
    let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a time");
    match mode {
        0 => {
            let parts = fields(rest, b'\n', 3);
            let signature = text(parts.first().copied().unwrap_or_default());
            let metadata = parts.get(1).map(|m| text(m));
            let url = text(parts.get(2).copied().unwrap_or_default());
            let _ = keys.verify(&signature, metadata.as_deref(), &url, now);
        }
        1 => {
            let mut nonce = [0u8; 12];
            let n = rest.len().min(12);
            nonce[..n].copy_from_slice(&rest[..n]);
            let plaintext = &rest[n..];
            let (signature, metadata) = keys.seal(plaintext, nonce).expect("sealing");
            for url in ["https://app.example.com/path", "", "app.example.com/path"] {
                let _ = keys.verify(&signature, Some(&metadata), url, now);
            }
        }
        _ => {
            let url = text(rest);
            let (signature, metadata) = keys.sign(&url, now).expect("signing");
            if let Err(e) = keys.verify(&signature, Some(&metadata), &url, now) {
                panic!("the router's own signature for {url:?} does not verify: {e}");
            }
        }
    }
}

/// Bus messages the router and the log cache read (`router.register`,
/// `router.unregister`, `router.start`, `loggregator.envelopes`): first byte picks
/// the subject, the rest is the payload. Registrations go through the route table
/// (register, unregister, lookups of their uris, pruning later, the `/routes` dump).
pub fn bus_messages(data: &[u8]) {
    let Some((subject, payload)) = data.split_first() else {
        return;
    };
    match subject % 4 {
        0 | 1 => {
            let Some(reg) = wf_router::fuzzing::parse_registration(payload) else {
                return;
            };
            let now = Instant::now();
            let mut table = route_table(now);
            table.register(&reg, now);
            for uri in &reg.uris {
                let (host, path) = uri.split_at(uri.find('/').unwrap_or(uri.len()));
                let _ = table.lookup(host, path, now);
            }
            let _ = table.dump();
            if subject % 4 == 1 {
                table.unregister(&reg);
            }
            if let Some(later) = now.checked_add(Duration::from_secs(3600)) {
                table.prune(later);
            }
            let _ = (table.route_count(), table.endpoint_count());
        }
        2 => {
            let _ = serde_json::from_slice::<wf_router::RouterStart>(payload);
        }
        _ => log_envelope(payload),
    }
}

/// Loggregator envelopes as the log cache takes them off the bus (one envelope or an
/// `EnvelopeBatch`): decoding, the cache's ingest and read, and the syslog drain's
/// RFC 5424 rendering.
pub fn log_envelope(data: &[u8]) {
    use wf_loggregator::{DrainType, EnvelopeBatch, LogStore, ReadQuery};
    let Ok(envelopes) = EnvelopeBatch::decode(data) else {
        return;
    };
    let store = LogStore::new(16);
    let hostname = wf_loggregator::syslog::sanitize_hostname("org.space.app");
    for envelope in &envelopes {
        let _ = envelope.approximate_size();
        for drain_type in [DrainType::Logs, DrainType::Metrics, DrainType::All] {
            let _ = wf_loggregator::syslog::rfc5424_messages(envelope, &hostname, drain_type);
        }
        let json = serde_json::to_vec(envelope).expect("an envelope renders");
        EnvelopeBatch::decode(&json).expect("a rendered envelope decodes");
        store.ingest(envelope.clone());
    }
    for envelope in &envelopes {
        let _ = store.read(&envelope.source_id, &ReadQuery::default());
    }
}

/// The RSA key the JWT target signs with and verifies against (made once per process).
struct JwtKeys {
    encoding: jsonwebtoken::EncodingKey,
    verifier: wf_uaa::TokenVerifier,
}

const JWT_ISSUER: &str = "http://uaa.test/oauth/token";

fn jwt_keys() -> &'static JwtKeys {
    static KEYS: OnceLock<JwtKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("an RSA key");
        let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).expect("a PEM");
        let public = wf_uaa::TokenKey {
            kty: "RSA".into(),
            alg: "RS256".into(),
            key_use: "sig".into(),
            kid: "key-1".into(),
            n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            value: String::new(),
        };
        JwtKeys {
            encoding: jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("a key"),
            verifier: wf_uaa::TokenVerifier::from_keys(JWT_ISSUER, &[public]).expect("a verifier"),
        }
    })
}

/// Access tokens as every component checks them offline (`TokenVerifier::verify`, the
/// `Authorization` header of each API request). Mode byte 0: the header's text as
/// given; 1: `header JSON \n claims JSON`, signed with UAA's key (so the claims are
/// checked, not only the signature); else: claims JSON under a valid header, signed.
pub fn jwt(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let keys = jwt_keys();
    let token = match mode {
        0 => text(rest).into_owned(),
        _ => {
            let (header, claims) = match mode {
                1 => {
                    let parts = fields(rest, b'\n', 2);
                    (
                        parts.first().copied().unwrap_or_default(),
                        parts.get(1).copied().unwrap_or_default(),
                    )
                }
                _ => (&br#"{"alg":"RS256","kid":"key-1","typ":"JWT"}"#[..], rest),
            };
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &keys.encoding,
                jsonwebtoken::Algorithm::RS256,
            )
            .expect("signing");
            format!("bearer {message}.{signature}")
        }
    };
    if let Ok(claims) = keys.verifier.verify(&token) {
        assert_eq!(claims.iss, JWT_ISSUER);
        assert!(claims
            .aud
            .iter()
            .any(|a| a == wf_uaa::CLOUD_CONTROLLER_AUDIENCE));
        assert!(*mode != 0, "an unsigned token was accepted: {token:?}");
    }
}

/// A service broker's answers (OSB v2.17) as the controller's client decodes them:
/// first byte picks the call, the next two the HTTP status, then the `Retry-After`
/// header up to a newline, then the body. A catalog that decodes goes through CF's
/// catalog checks.
pub fn osb_responses(data: &[u8]) {
    use wf_controller::fuzzing::{osb_reply, OsbCall};
    if data.len() < 3 {
        return;
    }
    let call = OsbCall::ALL[usize::from(data[0]) % OsbCall::ALL.len()];
    // Mostly the statuses the spec names, sometimes any.
    const STATUSES: [u16; 10] = [200, 201, 202, 400, 404, 409, 410, 422, 500, 503];
    let raw = u16::from_be_bytes([data[1], data[2]]);
    let status = if raw & 0x8000 == 0 {
        STATUSES[usize::from(raw) % STATUSES.len()]
    } else {
        raw & 0x7fff
    };
    let parts = fields(&data[3..], b'\n', 2);
    let retry_after = text(parts.first().copied().unwrap_or_default());
    let body = parts.get(1).copied().unwrap_or_default();
    let _ = osb_reply(call, status, Some(&retry_after), body);
    let _ = wf_controller::fuzzing::osb_retry_after(&retry_after);
}

/// The seeds of `target` (`seeds/<target>/`).
pub fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

/// A zip of `files` (deflated; a name ending in `/` is a directory).
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (name, bytes) in files {
        if name.ends_with('/') {
            zip.add_directory(*name, options).expect("a zip directory");
        } else {
            zip.start_file(*name, options).expect("a zip entry");
            zip.write_all(bytes).expect("a zip entry");
        }
    }
    zip.finish().expect("a zip").into_inner()
}

/// The binary seeds (zips, tgzs, wasm), written by `cargo test -p wf-fuzz -- --ignored
/// write_binary_seeds` into `seeds/`; the text seeds are written by hand.
pub fn binary_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $h (export "handle" (func $f)))
            (export "wasi:http/incoming-handler@0.2.4" (instance $h)))"#,
    )
    .expect("a component");
    let module =
        wat::parse_str(r#"(module (memory 1) (func (export "_start")) (data (i32.const 0) "hi"))"#)
            .expect("a module");
    let metadata = |wasm: &[u8]| {
        serde_json::to_vec(&serde_json::json!({
            "kind": "server",
            "wasm": "app.wasm",
            "wasm_sha256": wf_buildpacks::sha256_hex(wasm),
            "buildpack": "wasm_buildpack",
            "buildpacks": ["wasm_buildpack"],
            "process_types": {"web": "app.wasm"},
        }))
        .expect("metadata")
    };
    let droplet = tgz(&[
        ("app.wasm", &module),
        ("app/index.html", b"<p>hi</p>"),
        ("droplet.json", &metadata(&module)),
    ]);
    // A GNU sparse `app.wasm` (as the stager's tar builder writes files with holes):
    // 512 bytes of data at the end of 1 MiB.
    let sparse = {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNUSparse);
        header.set_path("app.wasm").expect("a path");
        header.set_mode(0o644);
        header.set_size(512);
        let gnu = header.as_gnu_mut().expect("a GNU header");
        gnu.sparse[0].set_offset((1 << 20) - 512);
        gnu.sparse[0].set_length(512);
        gnu.set_real_size(1 << 20);
        header.set_cksum();
        tar.append(&header, &[1u8; 512][..])
            .expect("a sparse entry");
        let json = metadata(&module);
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "droplet.json", &json[..])
            .expect("an entry");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &tar.into_inner().expect("a tar")).expect("gzip");
        gz.finish().expect("gzip")
    };
    vec![
        ("droplet_tgz", "sparse.tgz", sparse),
        (
            "package_zip",
            "app.zip",
            zip(&[
                ("app.wasm", &module),
                ("public/", b""),
                ("public/a.txt", b"a"),
            ]),
        ),
        (
            "package_zip",
            "buildpack.zip",
            zip(&[("bin/detect", b"#!/bin/sh"), ("bin/compile", b"#!/bin/sh")]),
        ),
        ("package_zip", "bare.wasm", module.clone()),
        ("droplet_tgz", "droplet.tgz", droplet),
        (
            "droplet_tgz",
            "cache.tgz",
            tgz(&[("target/a", b"a"), ("b", b"b")]),
        ),
        ("wasm_validate", "module.wasm", module.clone()),
        ("wasm_validate", "handler.wasm", component),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "writes the binary seeds into the source tree"]
    fn write_binary_seeds() {
        for (target, name, bytes) in binary_seeds() {
            let dir = seeds_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// Every committed seed (and reproducer kept as a seed) runs through its target
    /// without libFuzzer, on every `cargo test`.
    #[test]
    fn seeds_replay_through_their_targets() {
        for (name, target) in TARGETS {
            let dir = seeds_dir(name);
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            assert!(!entries.is_empty(), "{name} has no seeds");
            for seed in entries {
                eprintln!("{name}: {}", seed.display());
                target(&std::fs::read(&seed).unwrap());
            }
        }
    }
}
