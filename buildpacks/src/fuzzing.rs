//! Entry points for the fuzz targets in `fuzz/` into staging code that is otherwise
//! private: unpacking an app package and validating its wasm. Not an API (hidden from
//! the docs); the targets call exactly the functions staging runs.

pub use crate::wasm::WasmKind;

/// Extracts the package zip at `zip` into `dest`, as staging does; returns the bytes
/// written.
pub fn extract_package(
    zip: &std::path::Path,
    dest: &std::path::Path,
) -> Result<u64, crate::StagingError> {
    crate::package::extract(zip, dest)
}

/// Validates an app's wasm and tells its kind, as the wasm buildpack does.
pub fn validate_wasm(bytes: &[u8]) -> Result<WasmKind, String> {
    crate::wasm::validate(bytes)
}
