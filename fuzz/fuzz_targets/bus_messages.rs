//! Fuzz target `bus_messages`: Bus messages: router.register / router.unregister into the route table, router.start, and Loggregator envelopes.
//! The body is [`wf_fuzz::bus_messages`]; run it with `fuzz/run.sh 60 bus_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::bus_messages(data));
