//! Fuzz target `osb_responses`: Service broker answers (controller/src/osb.rs): catalog, provision, deprovision, bind, fetch binding, last_operation; CF's catalog checks.
//! The body is [`wf_fuzz::osb_responses`]; run it with `fuzz/run.sh 60 osb_responses`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::osb_responses(data));
