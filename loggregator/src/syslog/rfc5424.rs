//! Envelopes as RFC 5424 syslog messages, byte for byte as CF's syslog agent writes them:
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - [SD] MSG`.
//!
//! Logs have PRI 14 (user.info, OUT) or 11 (user.err, ERR), PROCID
//! `[SOURCE_TYPE/instance]` and the line as MSG (NULs removed, ending in one newline).
//! Counters and gauges (one message a gauge metric) have PRI 14, PROCID `[instance]`,
//! a `counter@47450`/`gauge@47450` element before the tags, and an empty MSG. 47450 is
//! the Cloud Foundry Foundation's IANA enterprise number. Unlike CF, SD-PARAM values are
//! escaped as RFC 5424 requires and an envelope without tags has the NILVALUE `-` as
//! structured data.

use std::fmt::Write as _;

use super::drain_url::DrainType;
use crate::envelope::{Envelope, EnvelopeMessage, LogType};

/// RFC 5424's longest HOSTNAME, APP-NAME and PROCID.
const MAX_HOSTNAME: usize = 255;
const MAX_HOSTNAME_LABEL: usize = 63;
const MAX_APP_NAME: usize = 48;
const MAX_PROCID: usize = 128;
const MAX_SD_NAME: usize = 32;

/// Whether a drain of `drain_type` takes this kind of envelope.
pub(crate) fn wanted(envelope: &Envelope, drain_type: DrainType) -> bool {
    match envelope.message {
        EnvelopeMessage::Log(_) => drain_type.sends_logs(),
        EnvelopeMessage::Counter(_) | EnvelopeMessage::Gauge(_) => drain_type.sends_metrics(),
    }
}

/// The syslog messages for `envelope` on a drain of `drain_type`: none when the drain
/// does not take this kind of envelope, one per metric for gauges. `hostname` is
/// already sanitized ([`sanitize_hostname`]).
pub fn messages(envelope: &Envelope, hostname: &str, drain_type: DrainType) -> Vec<Vec<u8>> {
    match &envelope.message {
        EnvelopeMessage::Log(log) if drain_type.sends_logs() => {
            vec![log_message(envelope, hostname, log.log_type, &log.payload)]
        }
        EnvelopeMessage::Counter(c) if drain_type.sends_metrics() => {
            let mut sd = String::new();
            sd_element(
                &mut sd,
                "counter@47450",
                [
                    ("name", c.name.as_str()),
                    ("total", &c.total.to_string()),
                    ("delta", &c.delta.to_string()),
                ],
            );
            vec![metric_message(envelope, hostname, sd)]
        }
        EnvelopeMessage::Gauge(g) if drain_type.sends_metrics() => g
            .metrics
            .iter()
            .map(|(name, v)| {
                let mut sd = String::new();
                sd_element(
                    &mut sd,
                    "gauge@47450",
                    [
                        ("name", name.as_str()),
                        ("value", &go_float(v.value)),
                        ("unit", v.unit.as_str()),
                    ],
                );
                metric_message(envelope, hostname, sd)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// CF's HOSTNAME for an app's drain, `org.space.app`: in each dot-separated part,
/// whitespace runs become `-`, characters other than `[-a-zA-Z0-9]` go, trailing dashes
/// go, and the part is cut at 63 characters; the whole at 255. Empty gives `-`.
pub fn sanitize_hostname(hostname: &str) -> String {
    let mut out = String::with_capacity(hostname.len());
    for (i, part) in hostname.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        let mut label = String::new();
        let mut in_space = false;
        for c in part.chars() {
            if c.is_whitespace() {
                if !in_space {
                    label.push('-');
                }
                in_space = true;
                continue;
            }
            in_space = false;
            if c.is_ascii_alphanumeric() || c == '-' {
                label.push(c);
            }
        }
        let label = label.trim_end_matches('-');
        out.push_str(&label[..label.len().min(MAX_HOSTNAME_LABEL)]);
    }
    out.truncate(MAX_HOSTNAME);
    if out.is_empty() {
        out.push('-');
    }
    out
}

fn log_message(envelope: &Envelope, hostname: &str, log_type: LogType, payload: &[u8]) -> Vec<u8> {
    let pri = match log_type {
        LogType::Out => 14,
        LogType::Err => 11,
    };
    let mut head = header(pri, envelope, hostname, &log_procid(envelope));
    head.push_str(" - ");
    tags_sd(&mut head, envelope, false);
    head.push(' ');
    let mut msg = head.into_bytes();
    msg.extend(payload.iter().filter(|b| **b != 0));
    if msg.last() != Some(&b'\n') {
        msg.push(b'\n');
    }
    msg
}

fn metric_message(envelope: &Envelope, hostname: &str, mut sd: String) -> Vec<u8> {
    let procid = format!("[{}]", cut(&envelope.instance_id, MAX_PROCID - 2));
    let mut msg = header(14, envelope, hostname, &procid);
    msg.push_str(" - ");
    tags_sd(&mut sd, envelope, true);
    msg.push_str(&sd);
    // CF's metric messages end with an empty MSG after the separating space.
    msg.push_str(" \n");
    msg.into_bytes()
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID`.
fn header(pri: u8, envelope: &Envelope, hostname: &str, procid: &str) -> String {
    format!(
        "<{pri}>1 {} {} {} {}",
        timestamp(envelope.timestamp),
        nil_if_empty(hostname),
        nil_if_empty(&printable(cut(&envelope.source_id, MAX_APP_NAME))),
        procid,
    )
}

/// `[SOURCE_TYPE/instance]`, or `[SOURCE_TYPE]` without an instance, at most 128
/// characters (the instance is cut first).
fn log_procid(envelope: &Envelope) -> String {
    let source_type = printable(envelope.source_type().unwrap_or_default()).to_uppercase();
    let source_type = cut(&source_type, MAX_PROCID - 2);
    if envelope.instance_id.is_empty() {
        return format!("[{source_type}]");
    }
    let room = MAX_PROCID - 3 - source_type.len();
    format!(
        "[{source_type}/{}]",
        cut(&printable(&envelope.instance_id), room)
    )
}

/// `[tags@47450 k="v" ...]` with keys sorted (the tags are a sorted map). Without tags:
/// nothing after a metric element, the NILVALUE `-` for a log.
fn tags_sd(out: &mut String, envelope: &Envelope, after_element: bool) {
    if envelope.tags.is_empty() {
        if !after_element {
            out.push('-');
        }
        return;
    }
    sd_element(
        out,
        "tags@47450",
        envelope.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
}

fn sd_element<'a>(
    out: &mut String,
    id: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    out.push('[');
    out.push_str(id);
    for (name, value) in params {
        out.push(' ');
        out.push_str(&sd_name(name));
        out.push_str("=\"");
        for c in value.chars() {
            if matches!(c, '"' | '\\' | ']') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push(']');
}

/// An SD-NAME: printable US-ASCII without `=`, space, `]` and `"`, at most 32 characters.
fn sd_name(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(MAX_SD_NAME)
        .collect();
    if name.is_empty() {
        "_".to_string()
    } else {
        name
    }
}

/// RFC 3339 in UTC with microseconds, trailing zeros trimmed, as Go's
/// `2006-01-02T15:04:05.999999-07:00` layout writes it (CF's).
fn timestamp(ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let micros = t.microsecond();
    if micros > 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str("+00:00");
    s
}

/// A gauge value as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (CF's):
/// the shortest digits, in exponent form when the exponent is below -4 or at least 6.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits, e.g. `-1.2345e8`.
    let e = format!("{:e}", v.abs());
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if v < 0.0 {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
    out
}

fn nil_if_empty(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Printable US-ASCII only (header fields may hold nothing else); spaces become `-`.
fn printable(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_ascii_graphic() => Some(c),
            _ => None,
        })
        .collect()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::envelope::{Counter, Gauge, GaugeValue};

    const TS: i64 = 1_700_000_000_123_456_789;

    fn log(source_type: &str, instance: &str, log_type: LogType, line: &str) -> Envelope {
        let mut e = Envelope::log("app-guid", instance, source_type, log_type, line);
        e.timestamp = TS;
        e
    }

    fn text(messages: Vec<Vec<u8>>) -> Vec<String> {
        messages
            .into_iter()
            .map(|m| String::from_utf8(m).unwrap())
            .collect()
    }

    #[test]
    fn app_log_lines_are_cf_rfc5424_messages() {
        let mut e = log("APP/PROC/WEB", "0", LogType::Out, "hello world");
        e.tags.insert("app_name".into(), "my \"app\"".into());
        e.tags.insert("a]b".into(), "x\\y]z".into());
        assert_eq!(
            text(messages(&e, "org.space.app", DrainType::Logs)),
            vec![
                "<14>1 2023-11-14T22:13:20.123456+00:00 org.space.app app-guid [APP/PROC/WEB/0] - \
                 [tags@47450 ab=\"x\\\\y\\]z\" app_name=\"my \\\"app\\\"\" source_type=\"APP/PROC/WEB\"] hello world\n"
            ]
        );
        let e = log("rtr", "0", LogType::Err, "GET / 200\n");
        assert_eq!(
            text(messages(&e, "o.s.a", DrainType::All)),
            vec![
                "<11>1 2023-11-14T22:13:20.123456+00:00 o.s.a app-guid [RTR/0] - \
                 [tags@47450 source_type=\"rtr\"] GET / 200\n"
            ]
        );
        let mut e = log("STG", "", LogType::Out, "a\0b");
        e.tags.clear();
        e.timestamp = 1_700_000_000_000_000_000;
        assert_eq!(
            text(messages(&e, "", DrainType::Logs)),
            vec!["<14>1 2023-11-14T22:13:20+00:00 - app-guid [] - - ab\n"]
        );
        assert!(messages(&log("STG", "0", LogType::Out, "x"), "h", DrainType::Metrics).is_empty());
    }

    #[test]
    fn metrics_are_sd_elements_with_an_empty_message_on_metric_drains_only() {
        let mut e = log("APP/PROC/WEB", "1", LogType::Out, "");
        e.message = EnvelopeMessage::Counter(Counter {
            name: "requests".into(),
            delta: 2,
            total: 40,
        });
        assert_eq!(
            text(messages(&e, "o.s.a", DrainType::Metrics)),
            vec![
                "<14>1 2023-11-14T22:13:20.123456+00:00 o.s.a app-guid [1] - \
                 [counter@47450 name=\"requests\" total=\"40\" delta=\"2\"]\
                 [tags@47450 source_type=\"APP/PROC/WEB\"] \n"
            ]
        );
        assert!(messages(&e, "o.s.a", DrainType::Logs).is_empty());
        let mut metrics = BTreeMap::new();
        metrics.insert(
            "memory".to_string(),
            GaugeValue {
                unit: "bytes".into(),
                value: 123456789.0,
            },
        );
        metrics.insert(
            "cpu".to_string(),
            GaugeValue {
                unit: "percentage".into(),
                value: 0.5,
            },
        );
        e.message = EnvelopeMessage::Gauge(Gauge { metrics });
        e.tags.clear();
        assert_eq!(
            text(messages(&e, "o.s.a", DrainType::All)),
            vec![
                "<14>1 2023-11-14T22:13:20.123456+00:00 o.s.a app-guid [1] - \
                 [gauge@47450 name=\"cpu\" value=\"0.5\" unit=\"percentage\"] \n",
                "<14>1 2023-11-14T22:13:20.123456+00:00 o.s.a app-guid [1] - \
                 [gauge@47450 name=\"memory\" value=\"1.23456789e+08\" unit=\"bytes\"] \n",
            ]
        );
    }

    #[test]
    fn hostnames_are_sanitized_per_label_and_in_total() {
        assert_eq!(
            sanitize_hostname("my org.dev space.app_1!"),
            "my-org.dev-space.app1"
        );
        assert_eq!(sanitize_hostname("o--.s.a  b"), "o.s.a-b");
        let long = "x".repeat(70);
        assert_eq!(
            sanitize_hostname(&format!("{long}.s.a")),
            format!("{}.s.a", &long[..63])
        );
        let many = vec!["y".repeat(63); 5].join(".");
        assert_eq!(sanitize_hostname(&many).len(), 255);
        assert_eq!(sanitize_hostname(""), "-");
    }

    #[test]
    fn floats_are_formatted_like_go() {
        let cases = [
            (0.5, "0.5"),
            (1.0, "1"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (123456789.0, "1.23456789e+08"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (0.0, "0"),
            (12345.678, "12345.678"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(v), want, "{v}");
        }
    }
}
