//! BOSH for Wasmfoundry: lays the platform out over VMs. The director ([`director`])
//! deploys manifests ([`manifest`]) of releases ([`release`]) through a Cloud Provider
//! Interface ([`cpi`], with the built-in `local` CPI), hands each VM's agent ([`agent`])
//! its jobs over NATS, updates instances in canary-first batches, and its health monitor
//! ([`hm`]) resurrects VMs whose agents stop heartbeating.

pub mod agent;
pub mod cpi;
pub mod director;
pub mod hm;
pub mod manifest;
pub mod release;
