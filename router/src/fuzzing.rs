//! Entry points for the fuzz targets in `fuzz/` into the router's request parsing that
//! is otherwise private: trace context headers, route service signatures, and the
//! backends' responses. Not an
//! API (hidden from the docs); the targets call exactly the functions the proxy runs.

use std::time::Duration;

use http::HeaderMap;
use time::OffsetDateTime;

/// Sets the B3 and W3C trace headers of a request going to a backend, as the proxy does:
/// `headers` become those the backend gets.
pub fn propagate_trace(headers: &mut HeaderMap, trace_id: u128, span_id: u64) {
    let mut lines = crate::backend::HeaderLines::default();
    crate::trace::propagate(headers, true, &mut lines, trace_id, span_id);
    lines.append_to(headers);
}

/// The route service keys: signing, and verifying `X-CF-Proxy-Signature` and
/// `X-CF-Proxy-Metadata` on requests coming back from a route service.
pub struct RouteServiceKeys(crate::route_service::RouteServiceKeys);

impl RouteServiceKeys {
    /// Keys from the secret (and the previous one, during rotation). Slow (PBKDF2):
    /// make them once.
    pub fn new(
        secret: &str,
        previous: Option<&str>,
        timeout: Duration,
    ) -> Result<RouteServiceKeys, crate::RouteServiceError> {
        crate::route_service::RouteServiceKeys::new(secret, previous, timeout).map(RouteServiceKeys)
    }

    /// `(X-CF-Proxy-Signature, X-CF-Proxy-Metadata)` of a request for `url` at `now`.
    pub fn sign(&self, url: &str, now: OffsetDateTime) -> Result<(String, String), String> {
        let signed = self.0.sign(url, now).map_err(|e| e.to_string())?;
        Ok((signed.signature, signed.metadata))
    }

    /// The headers of any `plaintext` sealed with the current key: lets a fuzzer reach
    /// what [`verify`](Self::verify) does after decryption.
    pub fn seal(&self, plaintext: &[u8], nonce: [u8; 12]) -> Result<(String, String), String> {
        let signed = self
            .0
            .seal(plaintext.to_vec(), nonce)
            .map_err(|e| e.to_string())?;
        Ok((signed.signature, signed.metadata))
    }

    /// Checks a route service's request for `requested_url` at `now`, as the proxy does.
    pub fn verify(
        &self,
        signature: &str,
        metadata: Option<&str>,
        requested_url: &str,
        now: OffsetDateTime,
    ) -> Result<(), String> {
        self.0
            .verify(signature, metadata, requested_url, now)
            .map_err(|e| e.to_string())
    }
}

/// A `router.register` / `router.unregister` payload, as the router reads it off the
/// bus (`None`: ignored as malformed).
pub fn parse_registration(payload: &[u8]) -> Option<crate::RegistryMessage> {
    crate::parse_registration(payload)
}

/// The proxy's reading of a client request's own headers, as it runs them for each
/// request: `X-CF-App-Instance`, the sticky session (`__VCAP_ID__` with a session
/// cookie), an upgrade, and the removal of hop-by-hop headers (those `Connection` names).
pub struct ClientHeaders {
    /// `Ok(Some((app guid, index)))`, `Ok(None)` when absent, `Err(value)` when malformed.
    pub app_instance: Result<Option<(String, String)>, String>,
    /// The instance a sticky session asks for.
    pub sticky_instance: Option<String>,
    /// The protocol asked for with `Connection: upgrade`.
    pub upgrade: Option<http::HeaderValue>,
}

/// Reads `headers` as the proxy does, then strips their hop-by-hop headers in place.
pub fn client_headers(headers: &mut HeaderMap, session_cookies: &[String]) -> ClientHeaders {
    let read = ClientHeaders {
        app_instance: crate::proxy::app_instance_header(headers),
        sticky_instance: crate::proxy::sticky_instance(headers, session_cookies),
        upgrade: crate::proxy::upgrade_protocol(headers),
    };
    crate::proxy::remove_hop_by_hop(headers);
    read
}

/// Adds the `__VCAP_ID__` cookie to a backend's response headers as the proxy does for
/// `endpoint` on the route at `route_path`, when a session cookie or a moved sticky
/// session calls for it.
pub fn set_sticky_cookie(
    headers: &mut HeaderMap,
    endpoint: &crate::Endpoint,
    route_path: &str,
    session_cookies: &[String],
    requested_instance: Option<&str>,
) {
    crate::proxy::set_sticky_cookie(
        headers,
        endpoint,
        route_path,
        session_cookies,
        requested_instance,
    );
}

/// A backend's whole response to a request with `method`, read as the proxy's client
/// reads it from a connection delivering `bytes` in pieces of `piece` bytes: the status
/// and the body, or why it was refused.
pub fn backend_response(
    bytes: &[u8],
    method: &http::Method,
    piece: usize,
) -> Result<(u16, Vec<u8>), String> {
    crate::backend::read_response(bytes, method, piece)
        .map(|(status, body)| (status.as_u16(), body))
}
