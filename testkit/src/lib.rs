//! In-process fixtures: one home for what the shared library's tests, the
//! end-to-end tests and the benchmark build around the real code.
//!
//! - [`identity`]: a test user pool (fixed RSA key, JWKS, tokens, settings)
//! - [`agent`]: real agent servers on ephemeral loopback ports
//! - [`net`]: addresses that refuse connections or accept and never answer
//! - [`discovery`]: a fixed list of agents in place of Cloud Map
//! - [`values`]: entries and values for in-memory stores

pub mod agent;
pub mod discovery;
pub mod identity;
pub mod net;
pub mod values;
