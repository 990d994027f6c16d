//! Fixture `hello`: answers every request with `hello from <instance index>` and logs
//! each request line to stdout.

#[path = "../../common/http.rs"]
mod http;

fn main() {
    let index = http::instance_index();
    http::serve(|request| {
        println!("{} {}", request.method, request.path);
        http::Response::text(format!("hello from {index}\n"))
    });
}
