//! Fixture `worker`: a WASI preview1 core module (built for `wasm32-wasip1`), which
//! has no sockets: it runs as a worker process (no port; health check `process`) or
//! as a task.
//!
//! As a worker it prints `worker <instance index> started` and then `tick <n>` every
//! 200 ms, forever. As a task: `app.wasm task` checks its sandbox (writes `/tmp`,
//! cannot write `/app`), prints `task ran with MEMORY_LIMIT=<limit>: tmp ok, app
//! read-only` and exits 0; `app.wasm exit <code>` prints `exiting with <code>` on
//! stderr and exits with it; `app.wasm grow <MiB>` allocates that much memory.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(1) {
        Some("task") => {
            let tmp = match std::fs::write("/tmp/worker-task", b"written") {
                Ok(()) => "tmp ok",
                Err(_) => "tmp failed",
            };
            let app = match std::fs::write("/app/worker-task", b"written") {
                Ok(()) => "app writable",
                Err(_) => "app read-only",
            };
            let limit = std::env::var("MEMORY_LIMIT").unwrap_or_default();
            println!("task ran with MEMORY_LIMIT={limit}: {tmp}, {app}");
        }
        Some("exit") => {
            let code: i32 = arg(2).and_then(|c| c.parse().ok()).unwrap_or(1);
            eprintln!("exiting with {code}");
            std::process::exit(code);
        }
        Some("grow") => {
            let mib: usize = arg(2).and_then(|c| c.parse().ok()).unwrap_or(1);
            let held: Vec<Vec<u8>> = (0..mib).map(|_| vec![1u8; 1 << 20]).collect();
            println!("grew {} MiB", held.len());
        }
        _ => {
            let index = std::env::var("CF_INSTANCE_INDEX").unwrap_or_else(|_| "0".into());
            println!("worker {index} started");
            for n in 1.. {
                std::thread::sleep(Duration::from_millis(200));
                println!("tick {n}");
            }
        }
    }
}
