//! Fixture `hostile`: an app that attacks its own sandbox on request, for the isolation
//! tests. Every attack either reports what happened in the response body (`ok` or
//! `denied: <error>`) or ends the instance in a way the cell must contain.
//!
//! - `/` answers `hostile <instance index>`;
//! - `/membomb` allocates (and touches) 1 MiB chunks until allocation fails;
//! - `/stack` recurses without end;
//! - `/spin` busy-loops forever;
//! - `/write-outside` tries to write outside `/tmp` (and once inside it);
//! - `/connect?addr=HOST:PORT` opens a TCP connection;
//! - `/listen?port=N` listens on another port than `$PORT`;
//! - `/dns?host=NAME` resolves a name;
//! - `/disk?mb=N` writes N MiB to `/tmp`, then keeps running;
//! - `/flood?lines=N` prints N lines (default 100,000) as fast as it can, or at
//!   `rate=R` lines a second (in batches every 10 ms) when given;
//! - `/exit?code=N` exits with status N after responding;
//! - `/read?path=P` reads a file (`ok <bytes>: <its first line>`), `/list?path=P`
//!   lists a directory, `/put?path=P&data=D` writes one;
//! - `/read-host` tries to read and list the host's files (each target: `ok` or
//!   `denied`), `/links` tries to leave `/tmp` through symbolic and hard links;
//! - `/env` answers its environment, one `NAME=value` a line;
//! - `/huge?mb=N` streams an N MiB response (without holding it);
//! - `/huge-header?kb=N` answers with an N KiB header;
//! - `/fds?n=N` opens a file in `/tmp` N times and holds every handle until done.

#[path = "../../common/http.rs"]
mod http;

use std::io::Write as _;

fn main() {
    let index = http::instance_index();
    http::serve_exiting_with(|request| handle(&index, request), exit_with_code);
}

fn handle(index: &str, request: &http::Request) -> http::Response {
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    let number = |name: &str, default: u64| {
        param(query, name)
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let body = match path {
        "/membomb" => membomb(),
        "/stack" => format!("recursed {}\n", recurse(1)),
        "/spin" => spin(),
        "/write-outside" => write_outside(),
        "/connect" => connect(param(query, "addr").unwrap_or("127.0.0.1:80")),
        "/listen" => listen(u16::try_from(number("port", 1)).unwrap_or(1)),
        "/dns" => resolve(param(query, "host").unwrap_or("localhost")),
        "/disk" => fill_disk(number("mb", 1)),
        "/flood" => flood(number("lines", 100_000), number("rate", 0)),
        "/read" => read(param(query, "path").unwrap_or("/etc/passwd")),
        "/list" => list(param(query, "path").unwrap_or("/")),
        "/put" => {
            let path = param(query, "path").unwrap_or("/tmp/put");
            let data = param(query, "data").unwrap_or("");
            format!("{}\n", outcome(std::fs::write(path, data)))
        }
        "/read-host" => read_host(),
        "/links" => links(),
        "/env" => std::env::vars()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect(),
        "/fds" => hold_files(number("n", 100_000)),
        "/huge" => {
            let mut response = http::Response::text(String::new());
            response.stream_bytes = number("mb", 1024) << 20;
            return response;
        }
        "/huge-header" => {
            let mut response = http::Response::text("big header\n".to_string());
            let value = "h".repeat(usize::try_from(number("kb", 1024) << 10).unwrap_or(0));
            response.extra_headers = format!("X-Huge: {value}\r\n");
            return response;
        }
        "/exit" => {
            let code = i32::try_from(number("code", 1)).unwrap_or(1);
            let mut response = http::Response::text(format!("exiting with {code}\n"));
            response.exit_after = Some(code);
            return response;
        }
        _ => format!("hostile {index}\n"),
    };
    http::Response::text(body)
}

/// Exits with `code` itself (mod 256), not just "failure" as `std::process::exit` does
/// on wasip2.
#[cfg(target_os = "wasi")]
fn exit_with_code(code: i32) -> ! {
    #[link(wasm_import_module = "wasi:cli/exit@0.2.12")]
    extern "C" {
        #[link_name = "exit-with-code"]
        fn exit_with_code(status_code: i32);
    }
    // SAFETY: `exit-with-code` takes a u8 (lowered to i32) and never returns.
    unsafe { exit_with_code(code & 0xff) };
    std::process::exit(code)
}

#[cfg(not(target_os = "wasi"))]
fn exit_with_code(code: i32) -> ! {
    std::process::exit(code)
}

/// The value of `name` in a query string (no percent-decoding: the tests need none).
fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("denied: {e}"),
    }
}

fn membomb() -> String {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touching every page makes the memory real, not just reserved.
        hoard.push(vec![0xa5; 1 << 20]);
        eprintln!("holding {} MiB", hoard.len());
    }
}

/// Recursion the optimizer cannot turn into a loop; the base case never comes.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let deeper = recurse(std::hint::black_box(depth + 1));
    std::hint::black_box(deeper.wrapping_add(depth))
}

fn spin() -> String {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn write_outside() -> String {
    let targets = [
        "/etc/passwd",
        "/app/x",
        "../x",
        "/x",
        "/tmp/../../x",
        "/tmp/inside",
    ];
    targets
        .iter()
        .map(|target| {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(target)
                .and_then(|mut f| f.write_all(b"pwned\n"));
            format!("{target}: {}\n", outcome(written))
        })
        .collect()
}

fn connect(addr: &str) -> String {
    format!("{}\n", outcome(std::net::TcpStream::connect(addr)))
}

fn listen(port: u16) -> String {
    format!(
        "{}\n",
        outcome(std::net::TcpListener::bind(("0.0.0.0", port)))
    )
}

fn resolve(host: &str) -> String {
    use std::net::ToSocketAddrs as _;
    match (host, 80).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            format!("ok {}\n", addrs.join(" "))
        }
        Err(e) => format!("denied: {e}\n"),
    }
}

fn fill_disk(mb: u64) -> String {
    let chunk = vec![0x5a; 1 << 20];
    let written = std::fs::File::create("/tmp/fill").and_then(|mut f| {
        for _ in 0..mb {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    });
    format!("wrote {mb} MiB: {}\n", outcome(written))
}

fn flood(lines: u64, rate: u64) -> String {
    const TICK: std::time::Duration = std::time::Duration::from_millis(10);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let started = std::time::Instant::now();
    for i in 0..lines {
        // Ignore errors: the point is to push, not to be heard.
        let _ = writeln!(out, "flood line {i}");
        // Paced: once a tick's batch is out, wait until the schedule catches up.
        if rate > 0 && (i + 1) % (rate / 100).max(1) == 0 {
            let _ = out.flush();
            let due = std::time::Duration::from_secs_f64((i + 1) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(TICK));
            }
        }
    }
    let _ = out.flush();
    format!("flooded {lines}\n")
}

fn read(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let first = text.lines().next().unwrap_or("");
            format!("ok {}: {first}\n", bytes.len())
        }
        Err(e) => format!("denied: {e}\n"),
    }
}

fn list(path: &str) -> String {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            format!("ok {}\n", names.join(" "))
        }
        Err(e) => format!("denied: {e}\n"),
    }
}

/// Reads and lists what a process on the host could: every target answers `ok` (with
/// what it got) or `denied`.
fn read_host() -> String {
    let files = [
        "/etc/passwd",
        "/etc/hostname",
        "/proc/self/environ",
        "/proc/self/maps",
        "/app/../../../../etc/passwd",
        "/tmp/../../../../etc/passwd",
        "../../../../etc/passwd",
    ];
    let dirs = ["/", "/proc", "/home", "/app/..", "/tmp/..", "..", "/dev"];
    let mut report = String::new();
    for file in files {
        report.push_str(&format!("read {file}: {}", read(file)));
    }
    for dir in dirs {
        report.push_str(&format!("list {dir}: {}", list(dir)));
    }
    report
}

/// Tries to leave `/tmp` through links: symbolic links to the host's files (relative
/// and absolute) read through, and a hard link to the app's own read-only files
/// written through.
fn links() -> String {
    let mut report = String::new();
    let symlinks = [
        ("../../../../../../etc/passwd", "/tmp/up"),
        ("/etc/passwd", "/tmp/abs"),
        ("/", "/tmp/root"),
        ("/app", "/tmp/app"),
    ];
    for (target, link) in symlinks {
        let _ = std::fs::remove_file(link);
        let made = outcome(symlink(target, link));
        let through = read(link);
        report.push_str(&format!(
            "symlink {link} -> {target}: {made}, read: {through}"
        ));
    }
    let listed = list("/tmp/root");
    report.push_str(&format!("list /tmp/root: {listed}"));
    let app_file = std::fs::read_dir("/app")
        .ok()
        .and_then(|mut entries| entries.find_map(Result::ok))
        .map(|e| format!("/app/{}", e.file_name().to_string_lossy()))
        .unwrap_or_else(|| "/app/app.wasm".to_string());
    let _ = std::fs::remove_file("/tmp/hard");
    let hard = outcome(std::fs::hard_link(&app_file, "/tmp/hard"));
    report.push_str(&format!("hardlink /tmp/hard -> {app_file}: {hard}\n"));
    let write = outcome(
        std::fs::OpenOptions::new()
            .append(true)
            .open(&app_file)
            .and_then(|mut f| f.write_all(b"pwned")),
    );
    report.push_str(&format!("append {app_file}: {write}\n"));
    report
}

/// Opens `/tmp/fds` `n` times, every handle held until the end: each is a descriptor
/// of the cell's process. Answers how many it got.
fn hold_files(n: u64) -> String {
    let path = "/tmp/fds";
    if let Err(e) = std::fs::write(path, b"fd") {
        return format!("denied: {e}\n");
    }
    let mut held = Vec::new();
    for _ in 0..n {
        match std::fs::File::open(path) {
            Ok(file) => held.push(file),
            Err(e) => return format!("opened {}: {e}\n", held.len()),
        }
    }
    format!("opened {}\n", held.len())
}

/// `symlink(2)` from wasi-libc (std's `symlink_path` is unstable).
#[cfg(target_os = "wasi")]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    extern "C" {
        fn symlink(target: *const std::ffi::c_char, link: *const std::ffi::c_char) -> i32;
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(std::io::Error::other);
    let (target, link) = (c(target)?, c(link)?);
    // SAFETY: both are NUL-terminated strings that live across the call.
    if unsafe { symlink(target.as_ptr(), link.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "wasi"))]
fn symlink(_target: &str, _link: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("symlinks are tried on wasi only"))
}
