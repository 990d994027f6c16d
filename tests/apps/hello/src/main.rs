//! Fixture `hello`: answers every request with `hello from <instance index>` and logs
//! each request line to stdout.
//!
//! Run as a task (`wf run-task --command "app.wasm task"`), it prints
//! `task ran in <instance index>` and exits 0; with `task-fail` it prints
//! `task failing` on stderr and exits 1; with `task-sleep` it prints `task sleeping`
//! and never ends (until the task is terminated).

#[path = "../../common/http.rs"]
mod http;

fn main() {
    let index = http::instance_index();
    match std::env::args().nth(1).as_deref() {
        Some("task") => {
            println!("task ran in {index}");
            return;
        }
        Some("task-fail") => {
            eprintln!("task failing");
            std::process::exit(1);
        }
        Some("task-sleep") => {
            println!("task sleeping");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        _ => {}
    }
    http::serve(|request| {
        println!("{} {}", request.method, request.path);
        http::Response::text(format!("hello from {index}\n"))
    });
}
