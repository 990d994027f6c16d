//! Drain URLs as a user-provided service's `syslog_drain_url` gives them: parsed and
//! checked once (the controller turns [`DrainUrlError`] into a 422), redacted wherever
//! they are shown.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use url::Url;

/// How envelopes reach the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainScheme {
    /// `syslog://`: TCP, octet-counted frames (RFC 6587).
    Syslog,
    /// `syslog-tls://`: the same over TLS.
    SyslogTls,
    /// `https://`: one POST a message.
    Https,
}

/// CF's `drain-type` query option: which envelopes the drain receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainType {
    /// Log lines only (CF's default).
    #[default]
    Logs,
    /// Counters and gauges only.
    Metrics,
    /// Logs and metrics.
    All,
}

impl DrainType {
    pub fn sends_logs(self) -> bool {
        matches!(self, DrainType::Logs | DrainType::All)
    }

    pub fn sends_metrics(self) -> bool {
        matches!(self, DrainType::Metrics | DrainType::All)
    }
}

/// Why a `syslog_drain_url` was refused. The messages never repeat credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainUrlError {
    #[error("syslog drain url is not a valid URL: {0}")]
    Invalid(String),
    #[error(
        "syslog drain url scheme `{0}` is not supported: use syslog://, syslog-tls:// or https://"
    )]
    UnsupportedScheme(String),
    #[error("syslog drain url has no host")]
    MissingHost,
    #[error("syslog drain url `{0}://` needs a port, e.g. {0}://logs.example.com:6514")]
    MissingPort(&'static str),
    #[error("syslog drain url has an invalid drain-type `{0}`: use logs, metrics or all")]
    InvalidDrainType(String),
}

/// A parsed, validated drain URL: `syslog://host:port`, `syslog-tls://host:port` or
/// `https://host[:port]/path`, with CF's `drain-type=logs|metrics|all` (default logs).
///
/// `Display` and `Debug` show it redacted; [`DrainUrl::as_str`] is the URL as given.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DrainUrl {
    url: Url,
    scheme: DrainScheme,
    drain_type: DrainType,
    host: String,
    port: u16,
}

impl DrainUrl {
    /// The full URL, credentials included: for sending, never for showing.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    pub fn scheme(&self) -> DrainScheme {
        self.scheme
    }

    pub fn drain_type(&self) -> DrainType {
        self.drain_type
    }

    /// Host name or IP address (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL without user info and query (which may carry tokens), like CF's
    /// "anonymous" drain URL; a URL that had credentials shows `REDACTED@`.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        let had_credentials = !url.username().is_empty() || url.password().is_some();
        let _ = url.set_password(None);
        let _ = url.set_username(if had_credentials { "REDACTED" } else { "" });
        url.set_query(None);
        url.set_fragment(None);
        url.to_string()
    }
}

impl FromStr for DrainUrl {
    type Err = DrainUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // WHATWG parsing reads `https:///x` as host `x`; a drain URL means what it says.
        if s.split_once("://")
            .is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with(['/', '?', '#']))
        {
            return Err(DrainUrlError::MissingHost);
        }
        let url = Url::parse(s).map_err(|e| match e {
            url::ParseError::EmptyHost => DrainUrlError::MissingHost,
            e => DrainUrlError::Invalid(e.to_string()),
        })?;
        let scheme = match url.scheme() {
            "syslog" => DrainScheme::Syslog,
            "syslog-tls" => DrainScheme::SyslogTls,
            "https" => DrainScheme::Https,
            other => return Err(DrainUrlError::UnsupportedScheme(other.to_string())),
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(DrainUrlError::MissingHost),
        };
        let port = match (scheme, url.port_or_known_default()) {
            (_, Some(port)) => port,
            (DrainScheme::Syslog, None) => return Err(DrainUrlError::MissingPort("syslog")),
            (DrainScheme::SyslogTls, None) => return Err(DrainUrlError::MissingPort("syslog-tls")),
            (DrainScheme::Https, None) => 443,
        };
        let mut drain_type = DrainType::default();
        for (key, value) in url.query_pairs() {
            if key == "drain-type" {
                drain_type = match value.as_ref() {
                    "logs" => DrainType::Logs,
                    "metrics" => DrainType::Metrics,
                    "all" => DrainType::All,
                    other => return Err(DrainUrlError::InvalidDrainType(other.to_string())),
                };
            }
        }
        Ok(DrainUrl {
            url,
            scheme,
            drain_type,
            host,
            port,
        })
    }
}

impl fmt::Display for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DrainUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DrainUrl, DrainUrlError> {
        s.parse()
    }

    #[test]
    fn parses_the_three_schemes_with_ports_and_drain_types() {
        let u = parse("syslog://logs.example.com:514").unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.drain_type()),
            (
                DrainScheme::Syslog,
                "logs.example.com",
                514,
                DrainType::Logs
            )
        );
        let u = parse("syslog-tls://10.0.0.1:6514?drain-type=all").unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.drain_type()),
            (DrainScheme::SyslogTls, "10.0.0.1", 6514, DrainType::All)
        );
        let u = parse("https://user:secret@logs.example.com/ingest?drain-type=metrics").unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.drain_type()),
            (
                DrainScheme::Https,
                "logs.example.com",
                443,
                DrainType::Metrics
            )
        );
        let u = parse("syslog://[::1]:514").unwrap();
        assert_eq!(u.host(), "::1");
    }

    #[test]
    fn rejects_bad_schemes_hosts_ports_and_drain_types_with_clear_messages() {
        let err = parse("http://logs.example.com/x").unwrap_err();
        assert_eq!(err, DrainUrlError::UnsupportedScheme("http".into()));
        assert_eq!(
            err.to_string(),
            "syslog drain url scheme `http` is not supported: use syslog://, syslog-tls:// or https://"
        );
        assert!(matches!(
            parse("logs.example.com:514"),
            Err(DrainUrlError::UnsupportedScheme(_))
        ));
        assert!(matches!(parse("not a url"), Err(DrainUrlError::Invalid(_))));
        assert_eq!(parse("syslog:///x"), Err(DrainUrlError::MissingHost));
        assert_eq!(parse("syslog:x"), Err(DrainUrlError::MissingHost));
        assert_eq!(parse("https:///x"), Err(DrainUrlError::MissingHost));
        assert_eq!(parse("https://"), Err(DrainUrlError::MissingHost));
        assert_eq!(parse("https://u:p@/x"), Err(DrainUrlError::MissingHost));
        let err = parse("syslog://logs.example.com").unwrap_err();
        assert_eq!(err, DrainUrlError::MissingPort("syslog"));
        assert!(err.to_string().contains("needs a port"));
        assert_eq!(
            parse("syslog-tls://h").unwrap_err(),
            DrainUrlError::MissingPort("syslog-tls")
        );
        let err = parse("syslog://h:1?drain-type=traces").unwrap_err();
        assert_eq!(err, DrainUrlError::InvalidDrainType("traces".into()));
        assert_eq!(
            err.to_string(),
            "syslog drain url has an invalid drain-type `traces`: use logs, metrics or all"
        );
    }

    #[test]
    fn shows_urls_without_credentials_or_query() {
        let u = parse("https://user:secret@logs.example.com/p?token=abc&drain-type=all").unwrap();
        assert_eq!(u.redacted(), "https://REDACTED@logs.example.com/p");
        assert_eq!(u.to_string(), u.redacted());
        assert!(!format!("{u:?}").contains("secret"));
        assert!(u.as_str().contains("secret"));
        let u = parse("syslog://logs.example.com:514").unwrap();
        assert_eq!(u.redacted(), "syslog://logs.example.com:514");
    }
}
