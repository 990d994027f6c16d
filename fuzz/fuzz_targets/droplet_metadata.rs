//! Fuzz target `droplet_metadata`: droplet.json (buildpacks DropletMetadata) inside an otherwise valid droplet, as the controller checks it and a cell unpacks it.
//! The body is [`wf_fuzz::droplet_metadata`]; run it with `fuzz/run.sh 60 droplet_metadata`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::droplet_metadata(data));
