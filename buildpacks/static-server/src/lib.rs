//! The staticfile buildpack's file server: a `wasi:http/incoming-handler` component
//! that serves a site's files from the droplet's app files (`/app` in the instance),
//! following the options the buildpack wrote at staging ([`config`]). The routing
//! rules ([`route`]) and content types ([`mime`]) are plain functions, shared with the
//! buildpack and tested on the host; only [`handler`] talks to WASI.

pub mod config;
pub mod mime;
pub mod route;

#[cfg(target_arch = "wasm32")]
mod handler;

pub use config::{Config, FileEntry, CONFIG_FILE};
