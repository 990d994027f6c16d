//! Fuzz target `log_envelope`: Loggregator envelopes and batches off the bus (loggregator/src/envelope.rs): log cache ingest and read, RFC 5424 syslog rendering.
//! The body is [`wf_fuzz::log_envelope`]; run it with `fuzz/run.sh 60 log_envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::log_envelope(data));
