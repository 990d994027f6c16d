//! Source fixture `rust-hello`: a Cargo project the `rust_buildpack` builds for
//! wasm32-wasip2. It binds `$PORT` and answers every request with
//! `hello from rust source`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {port}: {e}");
            std::process::exit(2);
        }
    };
    println!("rust-hello listening on {port}");
    for stream in listener.incoming().flatten() {
        if let Err(e) = answer(stream) {
            eprintln!("request failed: {e}");
        }
    }
}

/// Reads the request head and answers it, closing the connection.
fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = "hello from rust source\n";
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
