//! `wf curl`: a raw, authenticated request to the API; the body is printed as is and
//! HTTP errors do not fail the command (as `cf curl`).

use reqwest::Method;

use crate::wf::client::Client;
use crate::wf::Error;

pub fn curl(
    client: &mut Client,
    path: &str,
    method: Option<String>,
    data: Option<String>,
    headers: &[String],
) -> Result<(), Error> {
    client.require_login()?;
    let method = match method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::Failed(format!("Invalid HTTP method '{m}'.")))?,
        None if data.is_some() => Method::POST,
        None => Method::GET,
    };
    let body = data.map(read_data).transpose()?;
    let headers = headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let resp = client.raw(method, path, &headers, body)?;
    if resp.body.ends_with('\n') || resp.body.is_empty() {
        print!("{}", resp.body);
    } else {
        println!("{}", resp.body);
    }
    Ok(())
}

/// `-d` data: literal, or `@FILE` for a file's contents.
fn read_data(data: String) -> Result<String, Error> {
    match data.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| Error::Failed(format!("Cannot read the request body from '{file}': {e}"))),
        None => Ok(data),
    }
}

fn parse_header(header: &str) -> Result<(String, String), Error> {
    match header.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(Error::Failed(format!(
            "Invalid header '{header}': use 'Name: value'."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        assert_eq!(
            parse_header("Content-Type: text/plain").unwrap(),
            ("Content-Type".to_string(), "text/plain".to_string())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": empty").is_err());
    }

    #[test]
    fn reads_data_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.json");
        std::fs::write(&file, "{}").unwrap();
        assert_eq!(read_data(format!("@{}", file.display())).unwrap(), "{}");
        assert_eq!(read_data("x".into()).unwrap(), "x");
        assert!(read_data("@/nonexistent/file".into()).is_err());
    }
}
