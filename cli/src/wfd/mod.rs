//! `wfd`: runs the platform. `wfd dev` runs every component in one process on the
//! embedded defaults (SQLite, local blobstore, in-process bus); `wfd bbs`, `wfd cell`,
//! `wfd controller`, `wfd uaa` and `wfd router` run one component per process, and
//! `wfd broker` the built-in service broker; `wfd certs` makes the CA and certificates
//! of the internal APIs' mutual TLS; `wfd director`, `wfd agent` and `wfd cpi` are
//! BOSH's.

mod bosh;
mod broker;
mod certs;
mod components;
mod dev;
mod process;
mod secrets;

pub use bosh::{agent, cpi, director, AgentArgs, CpiCommand, DirectorArgs};
pub use broker::{broker, BrokerArgs};
pub use certs::{certs, CertsArgs};
pub use components::{
    bbs, cell, controller, router, uaa, BbsArgs, CellArgs, ControllerArgs, RouterArgs, UaaArgs,
};
pub use dev::{dev, DevArgs};
pub use process::raise_open_files_limit;
