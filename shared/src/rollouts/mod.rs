//! Progressive rollouts of a shared-layer change, tenant by tenant.
//!
//! A rollout stages one new value of one key of a shared layer (global or a
//! tier): ordered steps widen the set of tenants that read the new value
//! (named canaries, a percentage by a stable hash of the tenant id, a tier,
//! everyone), each step bakes while health gates are watched, and a gate in
//! alarm rolls every tenant back. Which version a tenant reads is a pure
//! function of the rollout record ([`plan`]), so config-api and every agent
//! agree on it without talking to each other.

pub mod control;
pub mod driver;
pub mod gates;
pub mod live;
pub mod plan;
pub mod record;
pub mod store;
