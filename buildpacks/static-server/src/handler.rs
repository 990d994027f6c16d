//! The `wasi:http/incoming-handler` export: reads the site's config and the file that
//! [`crate::route::respond`] picks from the app's files, and writes the response.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method as WasiMethod, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use crate::config::{Config, CONFIG_FILE};
use crate::route::{self, Method, Request, Response};

/// Where the cell mounts the droplet's app files in the instance.
const APP_DIR: &str = "/app";
/// `blocking-write-and-flush` takes at most this many bytes per call.
const WRITE_CHUNK: usize = 4096;

const NOT_FOUND_BODY: &str = "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body><h1>404 Not Found</h1></body></html>\n";

struct Server;

impl Guest for Server {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = match request.method() {
            WasiMethod::Get => Method::Get,
            WasiMethod::Head => Method::Head,
            _ => Method::Other,
        };
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let headers = request.headers();
        let accept_encoding = header(&headers, "accept-encoding");
        let if_none_match = header(&headers, "if-none-match");
        let request = Request {
            method,
            path_with_query: &path,
            accept_encoding: accept_encoding.as_deref(),
            if_none_match: if_none_match.as_deref(),
        };
        let answer = match load_config() {
            Ok(config) => answer(&config, &request),
            Err(reason) => {
                eprintln!("static server: {reason}");
                Answer::text(500, "internal server error\n")
            }
        };
        answer.send(response_out, method == Method::Head);
    }
}

/// A response ready to send.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Sends the answer; a HEAD gets the headers only (and no `content-length`: the
    /// host checks it against the bytes written).
    fn send(self, response_out: ResponseOutparam, head: bool) {
        let fields = Fields::new();
        let mut headers = self.headers;
        if !head && self.status != 304 {
            headers.push(("content-length", self.body.len().to_string()));
        }
        for (name, value) in &headers {
            // Names are constants and values come from the config or the path: an
            // invalid one is left out rather than failing the response.
            let _ = fields.append(name, value.as_bytes());
        }
        let response = OutgoingResponse::new(fields);
        let _ = response.set_status_code(self.status);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        if !head && !self.body.is_empty() {
            if let Ok(stream) = body.write() {
                for chunk in self.body.chunks(WRITE_CHUNK) {
                    if stream.blocking_write_and_flush(chunk).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

fn answer(config: &Config, request: &Request<'_>) -> Answer {
    match route::respond(config, request) {
        Response::File(file) => {
            let path = site_path(config, &file.path);
            match std::fs::read(&path) {
                Ok(body) => {
                    let mut headers = vec![
                        ("content-type", file.content_type.to_string()),
                        ("etag", file.etag),
                        ("cache-control", file.cache_control.to_string()),
                    ];
                    if file.gzip {
                        headers.push(("content-encoding", "gzip".into()));
                    }
                    if file.vary {
                        headers.push(("vary", "Accept-Encoding".into()));
                    }
                    Answer {
                        status: file.status,
                        headers,
                        body,
                    }
                }
                Err(e) => {
                    eprintln!("static server: reading {path}: {e}");
                    Answer::text(500, "internal server error\n")
                }
            }
        }
        Response::NotModified {
            etag,
            cache_control,
            vary,
        } => {
            let mut headers = vec![("etag", etag), ("cache-control", cache_control.into())];
            if vary {
                headers.push(("vary", "Accept-Encoding".into()));
            }
            Answer {
                status: 304,
                headers,
                body: Vec::new(),
            }
        }
        Response::Redirect { location } => Answer {
            status: 301,
            headers: vec![("location", location)],
            body: Vec::new(),
        },
        Response::Listing { html } => Answer {
            status: 200,
            headers: vec![
                ("content-type", "text/html; charset=utf-8".into()),
                ("cache-control", "no-cache".into()),
            ],
            body: html.into_bytes(),
        },
        Response::NotFound => Answer {
            status: 404,
            headers: vec![("content-type", "text/html; charset=utf-8".into())],
            body: NOT_FOUND_BODY.as_bytes().to_vec(),
        },
        Response::MethodNotAllowed => {
            let mut answer = Answer::text(405, "method not allowed\n");
            answer.headers.push(("allow", "GET, HEAD".into()));
            answer
        }
        Response::BadRequest => Answer::text(400, "bad request\n"),
    }
}

fn load_config() -> Result<Config, String> {
    let path = format!("{APP_DIR}/{CONFIG_FILE}");
    let bytes = std::fs::read(&path).map_err(|e| format!("reading {path}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parsing {path}: {e}"))
}

/// The instance path of `rel`, a file of the site.
fn site_path(config: &Config, rel: &str) -> String {
    if config.root.is_empty() {
        format!("{APP_DIR}/{rel}")
    } else {
        format!("{APP_DIR}/{}/{rel}", config.root)
    }
}

/// The request header `name`, several values joined with `, `.
fn header(headers: &Fields, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get(name)
        .into_iter()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

wasi::http::proxy::export!(Server);
