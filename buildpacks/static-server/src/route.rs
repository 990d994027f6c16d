//! What the server answers to a request, decided from the request line, its headers
//! and the site's [`Config`] alone (no I/O): the file to send and its headers, a 304,
//! a redirect to the directory's URL, a listing, a 404, a 405, or a 400 for paths
//! that try to leave the site.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::mime;

/// The request methods the server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

/// The parts of a request that decide the answer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    /// The request target as sent (`/a%20b/?x=1`).
    pub path_with_query: &'a str,
    pub accept_encoding: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Send a file of the site.
    File(FileResponse),
    /// 304: the client's copy (`If-None-Match`) is current.
    NotModified {
        etag: String,
        cache_control: &'static str,
        vary: bool,
    },
    /// 301 to `location` (a directory asked for without its trailing slash).
    Redirect { location: String },
    /// 200 with an HTML listing of a directory.
    Listing { html: String },
    /// 404 with the built-in page (the site has no `404.html`).
    NotFound,
    /// 405: only GET and HEAD are served.
    MethodNotAllowed,
    /// 400: a malformed path, or one that tries to leave the site.
    BadRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileResponse {
    /// 200, or 404 for the site's `404.html`.
    pub status: u16,
    /// The file to read, relative to the site's root (`style.css.gz` for the gzip copy).
    pub path: String,
    pub content_type: &'static str,
    /// Quoted, ready for the `ETag` header.
    pub etag: String,
    /// Send `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The file has a gzip copy: the answer depends on `Accept-Encoding`.
    pub vary: bool,
    pub cache_control: &'static str,
}

/// The site's page for 404s, if it has one.
pub const NOT_FOUND_PAGE: &str = "404.html";
/// The page served for a directory.
pub const INDEX: &str = "index.html";

/// Decides the answer to `request` for the site described by `config`.
pub fn respond(config: &Config, request: &Request<'_>) -> Response {
    if request.method == Method::Other {
        return Response::MethodNotAllowed;
    }
    let (raw_path, query) = match request.path_with_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.path_with_query, None),
    };
    let Some(segments) = decode_path(raw_path) else {
        return Response::BadRequest;
    };
    // Dotfiles (the config among them) are not part of the site.
    if segments.iter().any(|s| s.starts_with('.')) {
        return not_found(config, request);
    }
    let rel = segments.join("/");
    let trailing_slash = raw_path.ends_with('/');

    if !rel.is_empty() && !trailing_slash && config.files.contains_key(&rel) {
        return file(config, &rel, 200, request);
    }
    if is_dir(config, &rel) {
        if !trailing_slash {
            let mut location = format!("{raw_path}/");
            if let Some(query) = query {
                location.push('?');
                location.push_str(query);
            }
            return Response::Redirect { location };
        }
        let index = join(&rel, INDEX);
        if config.files.contains_key(&index) {
            return file(config, &index, 200, request);
        }
        if config.directory_listing {
            return Response::Listing {
                html: listing(config, &rel),
            };
        }
    }
    if config.pushstate && config.files.contains_key(INDEX) {
        return file(config, INDEX, 200, request);
    }
    not_found(config, request)
}

/// The path's segments, percent-decoded; `None` for a path that is not absolute, is
/// not UTF-8 once decoded, holds a NUL or a backslash, or has `.` or `..` segments
/// (also encoded: `%2e%2e`). Empty segments (`a//b`) are dropped.
pub fn decode_path(raw: &str) -> Option<Vec<String>> {
    let rest = raw.strip_prefix('/')?;
    let mut segments = Vec::new();
    // Split before decoding, so an encoded slash (`%2f`) cannot make a segment.
    for raw_segment in rest.split('/') {
        let segment = percent_decode(raw_segment)?;
        if segment == "." || segment == ".." || segment.contains(['\0', '\\', '/']) {
            return None;
        }
        if !segment.is_empty() {
            segments.push(segment);
        }
    }
    Some(segments)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether the client takes gzip: `Accept-Encoding` names `gzip` (or `*`) with a
/// non-zero quality; an explicit `gzip;q=0` wins over `*`.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let (mut gzip, mut any) = (None, None);
    for item in accept_encoding.unwrap_or("").split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(quality > 0.0);
        } else if coding == "*" {
            any = Some(quality > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Whether `If-None-Match` names `etag` (quoted), weakly compared, or is `*`.
pub fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(header) = if_none_match else {
        return false;
    };
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The `ETag` of a file's content with digest `digest`; the gzip copy is another
/// representation and gets its own.
pub fn etag(digest: &str, gzip: bool) -> String {
    if gzip {
        format!("\"{digest}-gz\"")
    } else {
        format!("\"{digest}\"")
    }
}

fn file(config: &Config, rel: &str, status: u16, request: &Request<'_>) -> Response {
    let Some(entry) = config.files.get(rel) else {
        return Response::NotFound;
    };
    let gzip = entry.gzip && accepts_gzip(request.accept_encoding);
    let etag = etag(&entry.etag, gzip);
    let cache_control = mime::cache_control(rel);
    if status == 200 && etag_matches(request.if_none_match, &etag) {
        return Response::NotModified {
            etag,
            cache_control,
            vary: entry.gzip,
        };
    }
    Response::File(FileResponse {
        status,
        path: if gzip {
            format!("{rel}.gz")
        } else {
            rel.to_string()
        },
        content_type: mime::content_type(rel),
        etag,
        gzip,
        vary: entry.gzip,
        cache_control,
    })
}

fn not_found(config: &Config, request: &Request<'_>) -> Response {
    if config.files.contains_key(NOT_FOUND_PAGE) {
        file(config, NOT_FOUND_PAGE, 404, request)
    } else {
        Response::NotFound
    }
}

/// Whether `rel` is a directory of the site (the root always is).
fn is_dir(config: &Config, rel: &str) -> bool {
    if rel.is_empty() {
        return true;
    }
    let prefix = format!("{rel}/");
    config
        .files
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(path, _)| path.starts_with(&prefix))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// An HTML listing of the directory `rel`: its files and subdirectories (with `/`).
fn listing(config: &Config, rel: &str) -> String {
    let prefix = if rel.is_empty() {
        String::new()
    } else {
        format!("{rel}/")
    };
    let entries: BTreeSet<String> = config
        .files
        .range(prefix.clone()..)
        .take_while(|(path, _)| path.starts_with(&prefix))
        .map(|(path, _)| match path[prefix.len()..].split_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => path[prefix.len()..].to_string(),
        })
        .collect();
    let title = html_escape(&format!("/{prefix}"));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if !rel.is_empty() {
        html.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for entry in entries {
        let href = html_escape(&percent_encode(&entry));
        html.push_str(&format!(
            "<li><a href=\"{href}\">{}</a></li>\n",
            html_escape(&entry)
        ));
    }
    html.push_str("</ul></body></html>\n");
    html
}

fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileEntry;

    fn site(files: &[(&str, bool)]) -> Config {
        Config {
            files: files
                .iter()
                .map(|(path, gzip)| {
                    (
                        path.to_string(),
                        FileEntry {
                            etag: format!("e-{}", path.len()),
                            gzip: *gzip,
                        },
                    )
                })
                .collect(),
            ..Config::default()
        }
    }

    fn get(path: &str) -> Request<'_> {
        Request {
            method: Method::Get,
            path_with_query: path,
            accept_encoding: None,
            if_none_match: None,
        }
    }

    fn served(response: Response) -> FileResponse {
        match response {
            Response::File(file) => file,
            other => panic!("expected a file, got {other:?}"),
        }
    }

    #[test]
    fn files_and_directory_indexes_are_served() {
        let config = site(&[
            ("index.html", true),
            ("sub/index.html", false),
            ("a.css", true),
        ]);
        let root = served(respond(&config, &get("/")));
        assert_eq!(root.path, "index.html");
        assert_eq!(root.content_type, "text/html; charset=utf-8");
        assert_eq!(root.cache_control, "no-cache");
        assert_eq!(root.etag, "\"e-10\"");
        assert!(!root.gzip && root.vary);
        assert_eq!(
            served(respond(&config, &get("/sub/"))).path,
            "sub/index.html"
        );
        assert_eq!(
            served(respond(&config, &get("/sub/index.html?v=2"))).path,
            "sub/index.html"
        );
        assert_eq!(served(respond(&config, &get("//a.css"))).path, "a.css");
        assert_eq!(
            respond(&config, &get("/sub?x=1")),
            Response::Redirect {
                location: "/sub/?x=1".into()
            }
        );
        assert_eq!(respond(&config, &get("/missing")), Response::NotFound);
        assert_eq!(respond(&config, &get("/a.css/")), Response::NotFound);
        assert_eq!(
            respond(&config, &get("/.wf-static.json")),
            Response::NotFound
        );
    }

    #[test]
    fn only_get_and_head_are_allowed() {
        let config = site(&[("index.html", false)]);
        let head = Request {
            method: Method::Head,
            ..get("/")
        };
        assert_eq!(served(respond(&config, &head)).path, "index.html");
        let post = Request {
            method: Method::Other,
            ..get("/")
        };
        assert_eq!(respond(&config, &post), Response::MethodNotAllowed);
    }

    #[test]
    fn traversal_and_malformed_paths_are_refused() {
        let config = site(&[("index.html", false)]);
        for path in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/secret",
            "/%2E%2E%2fsecret",
            "/.%2e/x",
            "/a/./b",
            "/a%2f..%2fb",
            "/a%5cb",
            "/%00",
            "/%zz",
            "/%e",
            "/%ff",
            "relative",
        ] {
            assert_eq!(respond(&config, &get(path)), Response::BadRequest, "{path}");
        }
        assert_eq!(
            decode_path("/a%20b/c%2520").unwrap(),
            vec!["a b".to_string(), "c%20".to_string()]
        );
    }

    #[test]
    fn gzip_is_sent_when_accepted_with_its_own_etag() {
        let config = site(&[("a.css", true), ("b.png", false)]);
        let gz = Request {
            accept_encoding: Some("br, gzip;q=0.8"),
            ..get("/a.css")
        };
        let file = served(respond(&config, &gz));
        assert_eq!(file.path, "a.css.gz");
        assert!(file.gzip && file.vary);
        assert_eq!(file.etag, "\"e-5-gz\"");
        assert_eq!(file.content_type, "text/css; charset=utf-8");
        assert_eq!(file.cache_control, "public, max-age=3600");
        let png = Request {
            accept_encoding: Some("gzip"),
            ..get("/b.png")
        };
        let file = served(respond(&config, &png));
        assert_eq!(file.path, "b.png");
        assert!(!file.gzip && !file.vary);

        assert!(accepts_gzip(Some("gzip, deflate")));
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("GZIP;q=1.0")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("gzip;q=0, *")));
        assert!(!accepts_gzip(Some("deflate, br")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn if_none_match_gives_304_for_the_served_representation() {
        let config = site(&[("a.css", true)]);
        let request = Request {
            if_none_match: Some("\"other\", W/\"e-5\""),
            ..get("/a.css")
        };
        assert_eq!(
            respond(&config, &request),
            Response::NotModified {
                etag: "\"e-5\"".into(),
                cache_control: "public, max-age=3600",
                vary: true,
            }
        );
        // The identity ETag does not match the gzip copy.
        let gz = Request {
            accept_encoding: Some("gzip"),
            ..request
        };
        assert!(matches!(respond(&config, &gz), Response::File(_)));
        assert!(etag_matches(Some("*"), "\"x\""));
        assert!(!etag_matches(None, "\"x\""));
    }

    #[test]
    fn pushstate_listings_and_the_404_page() {
        let mut config = site(&[
            ("index.html", false),
            ("docs/a b.txt", false),
            ("docs/img/x.png", false),
        ]);
        assert_eq!(respond(&config, &get("/docs/")), Response::NotFound);
        config.directory_listing = true;
        let Response::Listing { html } = respond(&config, &get("/docs/")) else {
            panic!("expected a listing");
        };
        assert!(html.contains("<a href=\"a%20b.txt\">a b.txt</a>"), "{html}");
        assert!(html.contains("<a href=\"img/\">img/</a>"), "{html}");
        assert!(html.contains("<a href=\"../\">"), "{html}");

        config.pushstate = true;
        assert_eq!(
            served(respond(&config, &get("/app/route/42"))).path,
            "index.html"
        );
        config.pushstate = false;
        config
            .files
            .insert(NOT_FOUND_PAGE.into(), FileEntry::default());
        let page = served(respond(&config, &get("/nope")));
        assert_eq!((page.status, page.path.as_str()), (404, NOT_FOUND_PAGE));
    }
}
