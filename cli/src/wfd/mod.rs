//! `wfd`: runs the platform. `wfd dev` runs every component in one process on the
//! embedded defaults (SQLite, local blobstore, in-process bus); later subcommands run
//! one component per process.

mod dev;

pub use dev::{dev, DevArgs};
