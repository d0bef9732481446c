//! The config agent's edge: its gRPC services ([`server`]) and how it starts,
//! stops and leaves Cloud Map ([`lifecycle`]). The `config-agent` binary only
//! wires these together.

pub mod lifecycle;
pub mod ofrep_http;
pub mod server;
pub mod watch;
