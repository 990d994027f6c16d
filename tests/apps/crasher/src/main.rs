//! Fixture `crasher`: answers `crasher <instance index>`; a request to `/crash` makes
//! it say so on stderr and exit with status 1 after responding.

#[path = "../../common/http.rs"]
mod http;

fn main() {
    let index = http::instance_index();
    http::serve(|request| {
        let mut response = http::Response::text(format!("crasher {index}\n"));
        if request.path == "/crash" {
            eprintln!("crashing");
            response.exit_after = Some(1);
        }
        response
    });
}
