//! Fuzz target `manifest`: The app manifest parser (controller/src/manifest.rs) and the apply step's route splitting.
//! The body is [`wf_fuzz::manifest`]; run it with `fuzz/run.sh 60 manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::manifest(data));
