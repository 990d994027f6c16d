//! `wasm_buildpack`: the app is a prebuilt WebAssembly module or component (`app.wasm`,
//! or the only `.wasm` at the app's top level); nothing to build.

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::{StagingError, DROPLET_WASM};

pub struct WasmBuildpack;

impl Buildpack for WasmBuildpack {
    fn name(&self) -> &str {
        crate::WASM_BUILDPACK
    }

    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        match crate::wasm::find_app_wasm(ctx.app_dir) {
            Ok(_) => Ok(true),
            Err(StagingError::NoAppDetected) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        ctx.log("-----> Wasm Buildpack");
        let name = crate::wasm::find_app_wasm(ctx.app_dir)?;
        ctx.log(&format!("       Detected {name}"));
        Ok(())
    }

    fn release(&self, _ctx: &Context) -> Result<ProcessTypes, StagingError> {
        Ok(ProcessTypes::from([(
            "web".to_string(),
            DROPLET_WASM.to_string(),
        )]))
    }
}
