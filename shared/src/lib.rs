//! tenant-config core: everything the Lambda functions and the agent share.
//!
//! - [`validate`]: strict identifiers ([`TenantId`], [`ServiceName`], [`ConfigKey`])
//! - [`auth`]: Cognito ID token verification, tenant extraction
//! - [`routing`]: key prefix → store
//! - [`store`]: the store port and its DynamoDB / Parameter Store adapters
//! - [`cache`]: read-through, coalescing, secret-free caches
//! - [`service`]: the read use cases
//! - [`api`]: the HTTP API, independent of the Lambda runtime
//! - [`error`]: the one error type and its status mapping
//! - [`refresh`]: change events, signed Refresh fan-out, Cloud Map
//! - [`grpc`]: the agent's gRPC services

pub mod api;
pub mod auth;
pub mod cache;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod refresh;
pub mod routing;
pub mod service;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod validate;

pub use domain::ItemKey;
pub use error::{AuthError, ConfigError, StoreError, StoreKind};
pub use validate::{ConfigKey, ServiceName, TenantId};
