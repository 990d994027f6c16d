//! Fuzz target `package_zip`: Package bits: the controller's zip/wasm upload check and packaging (controller/src/blobstore.rs), the resource cache's reading of a package, and staging's zip extraction (buildpacks/src/package.rs).
//! The body is [`wf_fuzz::package_zip`]; run it with `fuzz/run.sh 60 package_zip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::package_zip(data));
