//! Fuzz target `wasm_validate`: Wasm validation of an uploaded app (buildpacks/src/wasm.rs): module, command component or wasi:http handler.
//! The body is [`wf_fuzz::wasm_validate`]; run it with `fuzz/run.sh 60 wasm_validate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::wasm_validate(data));
