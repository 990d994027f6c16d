//! Fuzz target `jwt`: JWT parsing and verification (uaa/src/tokens.rs TokenVerifier), raw and signed with UAA's key.
//! The body is [`wf_fuzz::jwt`]; run it with `fuzz/run.sh 60 jwt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::jwt(data));
