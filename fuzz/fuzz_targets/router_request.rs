//! Fuzz target `router_request`: What the router parses of a request: Host and path route lookup (router/src/table.rs) and B3 / W3C trace headers (router/src/trace.rs).
//! The body is [`wf_fuzz::router_request`]; run it with `fuzz/run.sh 60 router_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::router_request(data));
