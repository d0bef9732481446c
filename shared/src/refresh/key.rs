//! Where config-refresh's private signing key comes from: one SecureString
//! parameter only config-refresh's role may read, read once it can be.
//! Agents never read it: they are given the public keys (`REFRESH_PUBLIC_KEYS`).
//!
//! A key that is missing or unusable stops the pushes only: config-refresh
//! still journals every change and flushes the stage cache, so readers catch
//! up within their catch-up interval, and it counts each unpushed change
//! (`UnpushedChanges`, which alarms). It reads the parameter again at most
//! once per [`KEY_RETRY_INTERVAL`], so a key created or fixed later is used
//! without a restart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;
use thiserror::Error;
use tokio::sync::OnceCell;

use super::fanout::{Fanout, FanoutSettings, FanoutSource, RefreshTls};
use super::signing::{RefreshKey, SignatureError};

/// Least time between two reads of a key that is missing or unusable.
pub const KEY_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// The same after Parameter Store could not be read (throttling, a network
/// error at a cold start): likely to pass soon.
pub const KEY_UNREADABLE_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Why the refresh key cannot be used. Never carries the key itself.
#[derive(Debug, Error)]
pub enum RefreshKeyError {
    #[error("refresh key parameter '{name}' must be outside the watched root '{root}'")]
    UnderWatchedRoot { name: String, root: String },
    #[error("cannot read refresh key '{name}': {detail}")]
    Unreadable { name: String, detail: String },
    #[error("refresh key '{name}' is empty")]
    Empty { name: String },
    #[error("refresh key '{name}' must be a SecureString")]
    NotSecure { name: String },
    #[error("refresh key '{name}': {source}")]
    Unusable {
        name: String,
        source: SignatureError,
    },
}

/// Refuses a key parameter under the watched root: a change to it would
/// itself trigger refresh events (and it would sit among tenant data).
pub fn outside_watched_root(name: &str, watched_root: &str) -> Result<(), RefreshKeyError> {
    if name.starts_with(&format!("{watched_root}/")) {
        return Err(RefreshKeyError::UnderWatchedRoot {
            name: name.to_owned(),
            root: watched_root.to_owned(),
        });
    }
    Ok(())
}

/// Reads the refresh key from its SecureString parameter. Refuses a parameter
/// of another type, or one under the watched root (a change to it would itself
/// trigger refresh events).
pub async fn load_refresh_key(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
    watched_root: &str,
) -> Result<RefreshKey, RefreshKeyError> {
    outside_watched_root(name, watched_root)?;
    let output = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| RefreshKeyError::Unreadable {
            name: name.to_owned(),
            detail: DisplayErrorContext(e).to_string(),
        })?;
    let parameter = output.parameter.ok_or_else(|| RefreshKeyError::Empty {
        name: name.to_owned(),
    })?;
    if parameter.r#type != Some(ParameterType::SecureString) {
        return Err(RefreshKeyError::NotSecure {
            name: name.to_owned(),
        });
    }
    RefreshKey::parse(parameter.value.as_deref().unwrap_or_default()).map_err(|source| {
        RefreshKeyError::Unusable {
            name: name.to_owned(),
            source,
        }
    })
}

/// The fan-out, built once the signing key parameter yields a usable key.
pub struct KeyLoadingFanout {
    ssm: aws_sdk_ssm::Client,
    parameter: String,
    watched_root: String,
    settings: FanoutSettings,
    tls: Option<RefreshTls>,
    ready: OnceCell<Fanout>,
    /// The last failed read: when it may be tried again, and why (never the key).
    failed: Mutex<Option<(Instant, String)>>,
}

impl KeyLoadingFanout {
    pub fn new(
        ssm: aws_sdk_ssm::Client,
        parameter: impl Into<String>,
        watched_root: impl Into<String>,
        settings: FanoutSettings,
        tls: Option<RefreshTls>,
    ) -> Self {
        Self {
            ssm,
            parameter: parameter.into(),
            watched_root: watched_root.into(),
            settings,
            tls,
            ready: OnceCell::new(),
            failed: Mutex::new(None),
        }
    }

    /// Reads the key now (at start-up), so a bad key is logged at once.
    pub async fn load(&self) -> Result<(), String> {
        self.fanout().await.map(|_| ())
    }
}

#[async_trait::async_trait]
impl FanoutSource for KeyLoadingFanout {
    async fn fanout(&self) -> Result<&Fanout, String> {
        if let Some(fanout) = self.ready.get() {
            return Ok(fanout);
        }
        if let Some((retry_at, reason)) = self.failed.lock().map(|f| f.clone()).unwrap_or(None)
            && Instant::now() < retry_at
        {
            return Err(reason);
        }
        let loaded = self
            .ready
            .get_or_try_init(|| async {
                let key = load_refresh_key(&self.ssm, &self.parameter, &self.watched_root).await?;
                let fanout = Fanout::new(key, self.settings);
                Ok::<_, RefreshKeyError>(match &self.tls {
                    Some(tls) => fanout.with_tls(tls),
                    None => fanout,
                })
            })
            .await;
        match loaded {
            Ok(fanout) => {
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = None;
                }
                Ok(fanout)
            }
            Err(error) => {
                let reason = error.to_string();
                let retry_in = match error {
                    RefreshKeyError::Unreadable { .. } => KEY_UNREADABLE_RETRY_INTERVAL,
                    _ => KEY_RETRY_INTERVAL,
                };
                tracing::error!(
                    error = %reason,
                    retry_in_secs = retry_in.as_secs(),
                    "refresh signing key unusable: changes are journaled and flushed but pushed to no agent"
                );
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some((Instant::now() + retry_in, reason.clone()));
                }
                Err(reason)
            }
        }
    }
}
