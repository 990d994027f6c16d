//! The built-in buildpacks ([`crate::BUILT_IN`]), each a [`Buildpack`] in Rust that
//! runs its build tools in the staging sandbox.

mod c;
mod components;
mod javascript;
mod python;
mod rust;
#[cfg(test)]
mod source_tests;
mod staticfile;
mod wasm;
mod wat;
mod wit;

use crate::lifecycle::Buildpack;

/// The built-in buildpack called `name`, if this cell has it.
pub fn get(name: &str) -> Option<Box<dyn Buildpack>> {
    match name {
        crate::WASM_BUILDPACK => Some(Box::new(wasm::WasmBuildpack)),
        rust::NAME => Some(Box::new(rust::RustBuildpack)),
        c::NAME => Some(Box::new(c::CBuildpack)),
        wat::NAME => Some(Box::new(wat::WatBuildpack)),
        staticfile::NAME => Some(Box::new(staticfile::StaticfileBuildpack)),
        javascript::NAME => Some(Box::new(javascript::JavascriptBuildpack)),
        python::NAME => Some(Box::new(python::PythonBuildpack)),
        _ => None,
    }
}
