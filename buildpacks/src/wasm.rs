//! Detecting and checking the app's wasm: which file it is, whether it validates, and
//! whether it is a core module, a command component, or a `wasi:http` handler.

use std::path::Path;

use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};

use crate::{AppKind, StagingError, DROPLET_WASM};

/// The export that makes a component a `wasi:http` handler.
const HTTP_HANDLER_EXPORT: &str = "wasi:http/incoming-handler";

/// What kind of wasm binary the app is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    CoreModule,
    Component { http_handler: bool },
}

impl WasmKind {
    pub fn app_kind(self) -> AppKind {
        match self {
            WasmKind::Component { http_handler: true } => AppKind::Handler,
            WasmKind::CoreModule
            | WasmKind::Component {
                http_handler: false,
            } => AppKind::Server,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            WasmKind::CoreModule => "WebAssembly core module",
            WasmKind::Component { http_handler: true } => "wasi:http handler component",
            WasmKind::Component {
                http_handler: false,
            } => "WebAssembly component",
        }
    }
}

/// The app's wasm in `app_dir`: `app.wasm`, else the only `.wasm` at the top level.
pub fn find_app_wasm(app_dir: &Path) -> Result<String, StagingError> {
    if app_dir.join(DROPLET_WASM).is_file() {
        return Ok(DROPLET_WASM.to_string());
    }
    let entries = std::fs::read_dir(app_dir)
        .map_err(|e| crate::io_error("reading", "the app directory", e))?;
    let mut wasms: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".wasm"))
        .collect();
    wasms.sort();
    match wasms.len() {
        0 => Err(StagingError::NoAppDetected),
        1 => Ok(wasms.remove(0)),
        _ => Err(StagingError::Staging(format!(
            "the app has several .wasm files at its top level ({}); name the one to run {DROPLET_WASM}",
            wasms.join(", ")
        ))),
    }
}

/// Validates `bytes` as a module or component; the error is the validator's reason.
pub fn validate(bytes: &[u8]) -> Result<WasmKind, String> {
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(bytes)
        .map_err(|e| e.to_string())?;
    if !wasmparser::Parser::is_component(bytes) {
        return Ok(WasmKind::CoreModule);
    }
    Ok(WasmKind::Component {
        http_handler: top_level_exports(bytes)?
            .iter()
            .any(|name| is_http_handler_export(name)),
    })
}

/// `wasi:http/incoming-handler`, unversioned or at any version (`@0.2.4`).
fn is_http_handler_export(name: &str) -> bool {
    name.strip_prefix(HTTP_HANDLER_EXPORT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('@'))
}

/// Names the outermost component exports (nested components' exports are skipped).
fn top_level_exports(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut depth = 0usize;
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 && encoding != Encoding::Component {
                    return Ok(names);
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    names.push(export.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_export_matches_at_any_version_only() {
        assert!(is_http_handler_export("wasi:http/incoming-handler"));
        assert!(is_http_handler_export("wasi:http/incoming-handler@0.2.4"));
        assert!(!is_http_handler_export("wasi:http/incoming-handlers"));
        assert!(!is_http_handler_export("wasi:cli/run@0.2.4"));
    }

    /// The fixtures, as `wasm32-wasip2` builds them: a `wasi:http` proxy component is
    /// a handler, a command component a server.
    #[test]
    fn real_components_are_told_apart() {
        let handler = std::fs::read(wf_tests::fixtures::fixture_wasm("handler")).unwrap();
        assert_eq!(
            validate(&handler).unwrap(),
            WasmKind::Component { http_handler: true }
        );
        let server = std::fs::read(wf_tests::fixtures::fixture_wasm("hello")).unwrap();
        assert_eq!(
            validate(&server).unwrap(),
            WasmKind::Component {
                http_handler: false
            }
        );
    }
}
