//! What an operator does by hand, as a library (the `tenant-config-admin`
//! binary, the local stack and the tests all use it):
//!
//! - [`access`]: app clients' service grants, and recounting a tenant's keys
//! - [`agent_tls`]: the agents' Refresh TLS material in Parameter Store
//! - [`values`]: put, get and delete a tenant's values, validated and routed
//!   exactly like the API
//! - [`tokens`]: sign a user in and get the ID token a service would send
//! - [`agent_client`]: read through a config agent over gRPC
//! - [`changes`]: the change history from the journal
//! - [`stack`]: the names a deployed stack outputs (`--stack`)
//! - [`users`]: a tenant's users and administrators in the stack's pool
//! - [`verify`]: what a deploy can get wrong, checked with a fix for each
//! - [`events`]: the "Parameter Store Change" event EventBridge sends, and the
//!   Lambda Invoke API call that delivers it to config-refresh

pub mod access;
pub mod agent_client;
pub mod agent_tls;
pub mod changes;
pub mod cli;
pub mod events;
pub mod layer_commands;
pub mod rollout_commands;
pub mod stack;
pub mod stack_commands;
pub mod tokens;
pub mod users;
pub mod values;
pub mod verify;
