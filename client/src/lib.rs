//! `tenant-config-client`: read your tenant's configuration in-process.
//!
//! A [`ConfigClient`] opens one `Watch` stream to the config agent beside
//! your service, holds the service's values in memory and applies each
//! change the agent sends, so a read is a map lookup with no network call.
//! Secrets are read through the agent on demand and never held.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tenant_config_client::{ConfigClient, StaticToken};
//!
//! let config = ConfigClient::builder("http://127.0.0.1:50051", "billing")
//!     .token(StaticToken(std::env::var("ID_TOKEN")?))
//!     .connect()
//!     .await?;
//! let beta = config.get_bool("tenant_config_beta")?;
//! let limit = config.get_i64("tenant_config_rate_limit")?;
//! let mut changes = config.changes();
//! while let Ok(change) = changes.recv().await {
//!     println!("{} changed", change.key);
//! }
//! # Ok(()) }
//! ```
//!
//! With OpenFeature, hand the client to [`ConfigProvider`]:
//! `api.set_provider(ConfigProvider::new(config)).await`.

mod client;
mod proto;
mod provider;
mod secret;
mod token;
mod values;

pub use client::{ClientBuilder, ClientError, ConfigClient, StreamStatus};
pub use provider::ConfigProvider;
pub use secret::Secret;
pub use token::{StaticToken, TokenSource};
pub use values::{Change, Entry, ReadError, Typed};
