//! The built-in buildpacks ([`crate::BUILT_IN`]), each a [`Buildpack`] in Rust that
//! runs its build tools in the staging sandbox.

mod wasm;

use crate::lifecycle::Buildpack;

/// The built-in buildpack called `name`, if this cell has it.
pub fn get(name: &str) -> Option<Box<dyn Buildpack>> {
    match name {
        crate::WASM_BUILDPACK => Some(Box::new(wasm::WasmBuildpack)),
        _ => None,
    }
}
