//! Fixture `env`: answers with a JSON object of its environment variables.

#[path = "../../common/http.rs"]
mod http;

fn main() {
    http::serve(|_| {
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        vars.sort();
        let fields: Vec<String> = vars
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        let mut response = http::Response::text(format!("{{{}}}\n", fields.join(",")));
        response.content_type = "application/json";
        response
    });
}

/// A JSON string literal (RFC 8259 escaping).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
