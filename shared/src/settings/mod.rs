//! Settings from environment variables, checked once at start-up.
//!
//! Every variable, its default and its meaning is listed in the README. A bad
//! value stops the process at init with a message naming the variable, rather
//! than failing requests later.
//!
//! One file per reader of the environment: `reader` (config-api and the
//! agent's caches: [`Settings`]), `agent` ([`AgentSettings`]), `refresh`
//! (config-refresh: [`RefreshSettings`]), `driver` (the rollout driver:
//! [`DriverSettings`]), `aws` (every SDK call: [`AwsCallSettings`]); `env`
//! reads variables for all of them.

mod agent;
mod aws;
mod driver;
mod env;
mod reader;
mod refresh;

pub use agent::{AgentSettings, RefreshListenerTls, RegistrationSettings};
pub use aws::AwsCallSettings;
pub use driver::DriverSettings;
pub use env::{PLAINTEXT_ALLOWED, SettingsError};
pub use reader::{
    AGENT_CACHE_DEFAULTS, CacheDefaults, DegradedFlushSettings, LAMBDA_CACHE_DEFAULTS, Settings,
    TENANT_SESSION_SECS_RANGE, TenantRoleSettings,
};
pub use refresh::{DEFAULT_AGENT_TLS_DOMAIN, RefreshSettings, StageCacheSettings};
