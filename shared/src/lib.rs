//! tenant-config core: everything the Lambda functions, the agent and the
//! tools share. Layers, from the inside out; each only uses the ones above it.
//!
//! **Domain**: what configuration is, with no I/O.
//! - [`kinds`]: [`StoreKind`] and [`kinds::Field`], the labels the others share
//! - [`fnv`]: the one hash that must agree across readers and Rust versions
//! - [`error`]: the one error type and its status mapping
//! - [`validate`]: strict identifiers ([`TenantId`], [`ServiceName`], [`ConfigKey`])
//! - [`domain`]: [`ItemKey`], values
//! - [`routing`]: key prefix → store
//!
//! **Ports**: traits the use cases call, so they run without AWS in tests.
//! - [`store::ConfigStore`]: read one or many entries, list a service
//! - [`write::ConfigWriter`]: versioned writes, history, rollback
//! - [`auth::JwksSource`]: the pool's signing keys
//! - [`refresh::discovery::InstanceSource`], [`refresh::discovery::AgentRegistration`]: Cloud Map
//! - [`refresh::journal::ChangeJournal`]: the ordered change history
//!
//! **Adapters**: the ports over AWS (and in memory, for tests and benchmarks).
//! - [`store`]: DynamoDB, Parameter Store, memory
//! - [`write`](mod@write): the writer port over DynamoDB (transactions, history items) and Parameter Store
//! - [`auth::HttpJwksSource`], [`refresh::discovery::CloudMapInstances`], [`refresh::key`],
//!   [`refresh::journal_table`]
//! - [`aws`]: the one place SDK clients are built and adapters wired
//!
//! **Use cases**: what the service does.
//! - [`secret_reads`]: the one decrypting read (grant, uncached read, audit line) both edges serve
//! - [`reads`]: one key, a batch, a secret, behind [`cache`], converged by [`catch_up`]
//!   (which drops entries through its [`catch_up::Invalidate`] port, so it never uses `reads`);
//!   what a reader learned changed is told to its [`watch`] feed
//! - [`auth`]: Cognito ID token verification, tenant extraction
//! - [`refresh`]: change events, signed Refresh fan-out ([`refresh::signing`], [`refresh::fanout`])
//!
//! **Edges**: how callers reach the use cases.
//! - [`api`]: the HTTP API, independent of the Lambda runtime
//! - [`ofrep`]: the OpenFeature Remote Evaluation Protocol over the reads, for
//!   config-api and the agent
//! - [`warm_start`]: an agent's encrypted last-known-good snapshot (KMS data key, AES-GCM)
//! - [`agent`]: the agent's gRPC services (`Watch` streams included), its OFREP
//!   listener and its lifecycle
//! - [`refresh::handler`]: config-refresh's event handler
//! - [`settings`], [`telemetry`], [`metrics`]: environment, JSON logs and EMF
//!   metrics for every process

pub mod agent;
pub mod api;
pub mod auth;
pub mod aws;
pub mod cache;
pub mod catch_up;
pub mod credentials;
pub mod domain;
pub mod error;
pub mod fnv;
pub mod grants;
pub mod kinds;
pub mod layers;
pub mod membership;
pub mod metrics;
pub mod notices;
pub mod ofrep;
pub mod quota;
pub mod reads;
pub mod refresh;
pub mod rollouts;
pub mod routing;
pub mod schema;
pub mod secret_reads;
pub mod settings;
pub mod stage_settings;
pub mod store;
pub mod telemetry;
pub mod validate;
pub mod warm_start;
pub mod watch;
pub mod write;
pub mod writes;

pub use domain::{ItemKey, StoreKind};
pub use error::{AuthError, ConfigError, StoreError};
pub use validate::{ConfigKey, ServiceName, TenantId, TierName};
