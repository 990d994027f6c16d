//! Fixture `handler`: a `wasi:http` proxy component (the cell instantiates it per
//! request). Answers `hello from handler <instance index>` and logs each request line
//! to stdout; `/count` answers how many requests this instance has handled (always 1
//! with an instance per request); `/spin` busy-loops forever to exercise the cell's
//! per-request deadline; `/sleep?ms=N` answers after N milliseconds (a request still
//! in flight when the instance is stopped).

use std::sync::atomic::{AtomicU32, Ordering};

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Handler;

static HANDLED: AtomicU32 = AtomicU32::new(0);

impl Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        println!("{} {path}", method_name(&request.method()));
        let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
        let body = match path.as_str() {
            "/spin" => spin(),
            "/count" => format!("{handled}\n"),
            p if p.starts_with("/sleep?ms=") => {
                let ms: u64 = p["/sleep?ms=".len()..].parse().unwrap_or(0);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                format!("slept {ms}ms\n")
            }
            _ => {
                let index = std::env::var("CF_INSTANCE_INDEX").unwrap_or_else(|_| "0".into());
                format!("hello from handler {index}\n")
            }
        };

        let headers = Fields::new();
        // Both header values are valid, so these cannot fail.
        let _ = headers.set(
            &"content-type".to_string(),
            &[b"text/plain; charset=utf-8".to_vec()],
        );
        let _ = headers.set(
            &"content-length".to_string(),
            &[body.len().to_string().into_bytes()],
        );
        let response = OutgoingResponse::new(headers);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = outgoing.write() {
            let _ = stream.blocking_write_and_flush(body.as_bytes());
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

/// Loops until the host interrupts the instance.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

wasi::http::proxy::export!(Handler);
