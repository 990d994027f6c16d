//! Trace context headers, as Gorouter writes them: B3 (`X-B3-TraceId`, `X-B3-SpanId`)
//! and W3C (`traceparent`, `tracestate`), reused from the client when valid and
//! created otherwise. The W3C parent id is new at each hop and recorded in
//! `tracestate` as `gorouter=<parent id>`.

use http::header::{HeaderMap, HeaderName};

use crate::backend::HeaderLines;

pub(crate) const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub(crate) const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub(crate) const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// The low `N` hex digits of `value`, lower case: what `format!("{:0N$x}")` gives,
/// without the formatting machinery or an allocation (this runs on every request).
fn hex<const N: usize>(value: u128) -> [u8; N] {
    let mut out = [b'0'; N];
    for (i, digit) in out.iter_mut().rev().enumerate() {
        *digit = b"0123456789abcdef"[((value >> (4 * i)) & 0xf) as usize];
    }
    out
}

fn text(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The trace id, parent id and flags of a valid `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`; a later version may add fields after the flags).
fn parse_traceparent(value: &str) -> Option<(&str, &str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = version.len() == 2
        && version != "ff"
        && version.bytes().all(|b| b.is_ascii_hexdigit())
        && is_hex(trace, 32)
        && is_hex(parent, 16)
        && flags.len() == 2
        && flags.bytes().all(|b| b.is_ascii_hexdigit())
        && (version != "00" || parts.next().is_none());
    valid.then_some((trace, parent, flags))
}

/// Writes the B3 and W3C headers of a request going to a backend to `lines`, and
/// removes from `headers` the client's that they replace. `client_sent`: whether the
/// client sent any trace header (when not, none is looked up). `trace_id` (128 random
/// bits) is used when the client sent no trace, `span_id` (64) is this hop's span /
/// parent id.
pub(crate) fn propagate(
    headers: &mut HeaderMap,
    client_sent: bool,
    lines: &mut HeaderLines,
    trace_id: u128,
    span_id: u64,
) {
    let span = hex::<16>(span_id.into());
    let client = |name| client_sent.then(|| text(headers, name)).flatten();
    let b3_trace = client(X_B3_TRACE_ID)
        .filter(|t| is_hex(t, 32) || is_hex(t, 16))
        .map(str::to_ascii_lowercase);
    let b3_valid = b3_trace.is_some() && client(X_B3_SPAN_ID).is_some_and(|s| is_hex(s, 16));
    let (w3c_trace, w3c_flags) = match client(TRACEPARENT).and_then(parse_traceparent) {
        Some((trace, _, flags)) => (
            Some(trace.to_ascii_lowercase()),
            Some(flags.to_ascii_lowercase()),
        ),
        None => (None, None),
    };

    // One trace id for both formats: the client's if any, else a new one.
    let new_trace = hex::<32>(trace_id);
    let padded_b3;
    let trace = match (&w3c_trace, &b3_trace) {
        (Some(w3c), _) => w3c.as_bytes(),
        (None, Some(b3)) if b3.len() == 32 => b3.as_bytes(),
        (None, Some(b3)) => {
            padded_b3 = format!("{b3:0>32}");
            padded_b3.as_bytes()
        }
        (None, None) => &new_trace[..],
    };

    if !b3_valid {
        let b3 = b3_trace.as_deref().map_or(trace, str::as_bytes);
        lines.push(&X_B3_TRACE_ID, &[b3]);
        lines.push(&X_B3_SPAN_ID, &[&span]);
    }

    // The client's flags, not its last field: a later version may add fields after them.
    let flags = w3c_flags.as_deref().unwrap_or("01").as_bytes();
    lines.push(&TRACEPARENT, &[b"00-", trace, b"-", &span, b"-", flags]);
    // The client's other vendors' entries follow ours when it continues a W3C trace.
    let prior = match &w3c_trace {
        Some(_) => client(TRACESTATE)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with("gorouter="))
            .take(31)
            .fold(String::new(), |mut state, entry| {
                state.push(',');
                state.push_str(entry);
                state
            }),
        None => String::new(),
    };
    lines.push(&TRACESTATE, &[b"gorouter=", &span, prior.as_bytes()]);

    if client_sent {
        let replaced = [TRACEPARENT, TRACESTATE];
        let b3 = [X_B3_TRACE_ID, X_B3_SPAN_ID, X_B3_PARENT_SPAN_ID];
        for name in replaced
            .into_iter()
            .chain(b3.into_iter().filter(|_| !b3_valid))
        {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The request's headers after `propagate`: what is left of the client's and the
    /// lines written.
    fn propagated(mut h: HeaderMap) -> HeaderMap {
        let mut lines = HeaderLines::default();
        let client_sent = !h.is_empty();
        propagate(&mut h, client_sent, &mut lines, TRACE, SPAN);
        lines.append_to(&mut h);
        h
    }

    fn hex_str(digits: &[u8]) -> &str {
        std::str::from_utf8(digits).unwrap()
    }

    const TRACE: u128 = 0x0af7651916cd43dd8448eb211c80319c;
    const SPAN: u64 = 0xb7ad6b7169203331;

    #[test]
    fn hex_matches_format() {
        assert_eq!(hex_str(&hex::<32>(TRACE)), format!("{TRACE:032x}"));
        assert_eq!(hex_str(&hex::<16>(SPAN.into())), format!("{SPAN:016x}"));
        assert_eq!(hex_str(&hex::<16>(0xab)), "00000000000000ab");
    }

    #[test]
    fn creates_b3_and_w3c_headers_when_absent() {
        let h = propagated(HeaderMap::new());
        assert_eq!(h[X_B3_TRACE_ID], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(h[X_B3_SPAN_ID], "b7ad6b7169203331");
        assert_eq!(
            h[TRACEPARENT],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(h[TRACESTATE], "gorouter=b7ad6b7169203331");
    }

    #[test]
    fn keeps_the_clients_trace_and_makes_a_new_parent() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        h.insert(
            TRACESTATE,
            HeaderValue::from_static("gorouter=1111111111111111,congo=t61"),
        );
        let h = propagated(h);
        assert_eq!(
            h[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-00"
        );
        assert_eq!(h[TRACESTATE], "gorouter=b7ad6b7169203331,congo=t61");
        assert_eq!(h.get_all(TRACEPARENT).iter().count(), 1);
        assert_eq!(h.get_all(TRACESTATE).iter().count(), 1);
        assert_eq!(h[X_B3_TRACE_ID], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn keeps_valid_b3_and_replaces_garbage() {
        let mut h = HeaderMap::new();
        h.insert(X_B3_TRACE_ID, HeaderValue::from_static("463ac35c9f6413ad"));
        h.insert(X_B3_SPAN_ID, HeaderValue::from_static("a2fb4a1d1a96d312"));
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let h = propagated(h);
        assert_eq!(h[X_B3_TRACE_ID], "463ac35c9f6413ad");
        assert_eq!(h[X_B3_SPAN_ID], "a2fb4a1d1a96d312");
        assert_eq!(
            h[TRACEPARENT],
            "00-0000000000000000463ac35c9f6413ad-b7ad6b7169203331-01"
        );

        let mut h = HeaderMap::new();
        h.insert(X_B3_TRACE_ID, HeaderValue::from_static("not-hex"));
        let h = propagated(h);
        assert_eq!(h[X_B3_TRACE_ID], "0af7651916cd43dd8448eb211c80319c");
    }

    /// Found by the `router_request` fuzz target: the flags of a later version's
    /// traceparent were taken from its last field, so the router sent a malformed
    /// version-00 traceparent (`00-<trace>-<span>-extra`).
    #[test]
    fn a_later_version_traceparent_keeps_only_its_flags() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A-extra",
            ),
        );
        let h = propagated(h);
        assert_eq!(
            h[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-0a"
        );
    }
}
