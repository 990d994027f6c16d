//! Fuzz target `backend_response`: a backend's response as the router's own HTTP/1.1 client reads it (router/src/backend.rs).
//! The body is [`wf_fuzz::backend_response`]; run it with `fuzz/run.sh 60 backend_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::backend_response(data));
