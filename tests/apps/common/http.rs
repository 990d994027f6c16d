//! The fixture apps' HTTP/1.1 server: std only, one connection at a time, every
//! response `Connection: close` with a Content-Length. Shared by the fixtures through
//! `#[path]` so each stays a single dependency-free crate.

// Each fixture uses a different part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// The request line of one request.
pub struct Request {
    pub method: String,
    pub path: String,
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Exit the process with this status once the response is sent.
    pub exit_after: Option<i32>,
    /// Extra header lines, each ending in `\r\n`.
    pub extra_headers: String,
    /// Bytes of `x` streamed after `body` (counted in the Content-Length), written a
    /// chunk at a time so that the app holds none of it.
    pub stream_bytes: u64,
}

impl Response {
    pub fn text(body: String) -> Response {
        Response {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body,
            exit_after: None,
            extra_headers: String::new(),
            stream_bytes: 0,
        }
    }
}

/// The port from `$PORT` (CF sets it; 8080 when run by hand).
pub fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

/// The instance index from `$CF_INSTANCE_INDEX`.
pub fn instance_index() -> String {
    std::env::var("CF_INSTANCE_INDEX").unwrap_or_else(|_| "0".to_string())
}

/// Binds `0.0.0.0:$PORT` and answers every request with `handler`, forever.
pub fn serve(handler: impl FnMut(&Request) -> Response) {
    serve_exiting_with(handler, |code| std::process::exit(code))
}

/// [`serve`], ending the process through `exit` when a response asks to.
pub fn serve_exiting_with(mut handler: impl FnMut(&Request) -> Response, exit: fn(i32) -> !) {
    let port = port();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {port}: {e}");
            std::process::exit(2);
        }
    };
    println!("listening on {port}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let response = handler(&request);
                if let Err(e) = write_response(&stream, &response) {
                    eprintln!("write: {e}");
                }
                drop(stream);
                if let Some(code) = response.exit_after {
                    exit(code);
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Reads up to the end of the headers (the fixtures ignore bodies). wasip2 has no
/// `try_clone`, so reads and writes go through `&TcpStream`.
fn read_request(mut stream: &TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next()?.split_whitespace();
    Some(Request {
        method: parts.next()?.to_string(),
        path: parts.next()?.to_string(),
    })
}

fn write_response(mut stream: &TcpStream, response: &Response) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        _ => "Unknown",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len() as u64 + response.stream_bytes,
        response.extra_headers,
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    let chunk = [b'x'; 64 * 1024];
    let mut left = response.stream_bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    stream.flush()
}
