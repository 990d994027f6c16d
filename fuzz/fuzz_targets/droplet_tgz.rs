//! Fuzz target `droplet_tgz`: Droplet tgz: the controller's check of an uploaded droplet and the cell's unpacking (buildpacks/src/droplet.rs), which must agree; the buildpack cache unpacking.
//! The body is [`wf_fuzz::droplet_tgz`]; run it with `fuzz/run.sh 60 droplet_tgz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wf_fuzz::droplet_tgz(data));
