//! Fuzz target `route_service`: X-CF-Proxy-Signature / X-CF-Proxy-Metadata decryption and verification (router/src/route_service.rs).
//! The body is [`wf_fuzz::route_service`]; run it with `fuzz/run.sh 60 route_service`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::route_service(data));
