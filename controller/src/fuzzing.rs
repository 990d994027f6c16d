//! Entry points for the fuzz targets in `fuzz/` into code that is otherwise private:
//! the decoding half of each OSB broker call, CF's catalog checks, and the manifest's
//! route splitting. Not an API (hidden from the docs); the targets call exactly the
//! functions the controller runs.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

pub use crate::osb::Catalog;

/// The most an uploaded droplet may unpack to (`POST /v3/droplets/:guid/upload`).
pub const MAX_UNPACKED_DROPLET_BYTES: u64 = crate::api::MAX_UNPACKED_DROPLET_BYTES;

/// The OSB calls whose answers the controller decodes.
#[derive(Debug, Clone, Copy)]
pub enum OsbCall {
    Catalog,
    Provision,
    Deprovision,
    Bind,
    FetchBinding,
    LastOperation,
}

impl OsbCall {
    pub const ALL: [OsbCall; 6] = [
        OsbCall::Catalog,
        OsbCall::Provision,
        OsbCall::Deprovision,
        OsbCall::Bind,
        OsbCall::FetchBinding,
        OsbCall::LastOperation,
    ];
}

/// Decodes a broker's answer to `call` (its status, `Retry-After` header and body) as
/// the client does; `Ok` is the outcome's debug text, `Err` the client's error text.
pub fn osb_reply(
    call: OsbCall,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<String, String> {
    use crate::osb;
    let status = StatusCode::from_u16(status).map_err(|e| e.to_string())?;
    let reply = osb::Reply {
        status,
        retry_after: osb::retry_after(retry_after),
        body: body.to_vec(),
    };
    let text = |r: Result<String, osb::OsbError>| r.map_err(|e| e.to_string());
    match call {
        OsbCall::Catalog => {
            let catalog = osb::catalog_reply(&reply).map_err(|e| e.to_string())?;
            check_catalog(&catalog)?;
            Ok(format!("{catalog:?}"))
        }
        OsbCall::Provision => text(osb::instance_outcome(&reply, false).map(|o| format!("{o:?}"))),
        OsbCall::Deprovision => text(osb::instance_outcome(&reply, true).map(|o| format!("{o:?}"))),
        OsbCall::Bind => text(osb::bind_reply(&reply).map(|o| format!("{o:?}"))),
        OsbCall::FetchBinding => text(osb::fetch_binding_reply(&reply).map(|o| format!("{o:?}"))),
        OsbCall::LastOperation => text(osb::last_operation_reply(&reply).map(|o| format!("{o:?}"))),
    }
}

/// The `Retry-After` the client honours, from the header's text.
pub fn osb_retry_after(header: &str) -> Option<Duration> {
    crate::osb::retry_after(Some(header))
}

/// CF's catalog checks (ids and names present and unique), as the broker's catalog
/// synchronization runs them.
pub fn check_catalog(catalog: &Catalog) -> Result<(), String> {
    crate::api::check_catalog(catalog).map_err(|e| e.to_string())
}

/// A manifest route (`host.domain[:port][/path]`) split against the domains (their V3
/// JSON) as `apply_manifest` does: (host, domain guid, path).
pub fn split_route(route: &str, domains: &[Value]) -> Option<(String, String, String)> {
    crate::api::split_route(route, domains)
}
