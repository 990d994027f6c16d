//! Gorouter: the HTTP edge. Route table fed by `router.register`, load balancing, proxying.

pub mod message;

pub use message::RegistryMessage;
