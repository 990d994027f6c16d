//! The command-line tools: `wf` (what a developer or operator types; a client of the
//! V3 API and UAA) and `wfd` (runs the platform).

pub mod wf;
pub mod wfd;
