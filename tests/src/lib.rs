//! End-to-end tests of Wasmfoundry: the harness that starts the real platform and
//! drives it as a user would ([`platform`]; one process per component in
//! [`distributed`]; a BOSH director with the local CPI in [`bosh`]), and the fixture
//! apps built from `tests/apps/` for wasm32-wasip2 ([`fixtures`]). The tests themselves
//! live in `tests/tests/`.

pub mod bosh;
pub mod distributed;
pub mod faults;
pub mod fixtures;
pub mod platform;
