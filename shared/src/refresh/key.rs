//! Where config-refresh's private signing key comes from: one SecureString
//! parameter only config-refresh's role may read, read once it can be.
//! Agents never read it: they are given the public keys (`REFRESH_PUBLIC_KEYS`).
//!
//! A key that is missing or unusable, like a missing or malformed CA for the
//! agents' TLS ([`super::agent_tls`]), stops the pushes only: config-refresh
//! still journals every change and flushes the stage cache, so readers catch
//! up within their catch-up interval, and it counts each unpushed change
//! (`UnpushedChanges`, which alarms). It reads the parameters again after
//! [`KEY_UNREADABLE_RETRY_INTERVAL`] (not found, throttled) or
//! [`KEY_RETRY_INTERVAL`] (malformed), so a key or CA created or fixed later
//! is used without a restart; once pushing, it reads the CA bundle again
//! every [`CA_REFRESH_INTERVAL`] (a rotation adds a CA).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;
use thiserror::Error;
use tokio::sync::OnceCell;

use super::agent_tls::{self, AgentTlsError, AgentTransport};
use super::fanout::{Fanout, FanoutSettings, FanoutSource};
use super::signing::{RefreshKey, SignatureError};

/// How often a warm config-refresh reads the agents' CA bundle again, so a
/// rotation's new CA is trusted without a restart (`agent-tls --overwrite`
/// waits longer than this before it hands agents the new certificate).
pub const CA_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
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

/// Why no fan-out can be built yet: the signing key or the agents' TLS.
#[derive(Debug, Error)]
pub enum PushSetupError {
    #[error(transparent)]
    Key(#[from] RefreshKeyError),
    #[error(transparent)]
    Tls(#[from] AgentTlsError),
}

impl PushSetupError {
    fn retry_in(&self) -> Duration {
        match self {
            Self::Key(RefreshKeyError::Unreadable { .. }) => KEY_UNREADABLE_RETRY_INTERVAL,
            Self::Tls(tls) if tls.is_transient() => KEY_UNREADABLE_RETRY_INTERVAL,
            _ => KEY_RETRY_INTERVAL,
        }
    }
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

/// The fan-out, built once the signing key parameter yields a usable key and
/// the agents' transport is settled (a usable CA, or plaintext chosen).
pub struct KeyLoadingFanout {
    ssm: aws_sdk_ssm::Client,
    parameter: String,
    watched_root: String,
    settings: FanoutSettings,
    transport: AgentTransport,
    ready: OnceCell<Fanout>,
    /// The signing key read on its own, while the fan-out cannot be built
    /// (the agents' CA missing): the change feed needs only the key.
    key_alone: OnceCell<RefreshKey>,
    /// The last failed read: when it may be tried again, and why (never the key).
    failed: Mutex<Option<(Instant, String)>>,
    /// The CA bundle in use and when it was last read.
    tls_in_use: tokio::sync::Mutex<(Option<super::fanout::RefreshTls>, Instant)>,
    ca_refresh_interval: Duration,
}

impl KeyLoadingFanout {
    pub fn new(
        ssm: aws_sdk_ssm::Client,
        parameter: impl Into<String>,
        watched_root: impl Into<String>,
        settings: FanoutSettings,
        transport: AgentTransport,
    ) -> Self {
        Self {
            ssm,
            parameter: parameter.into(),
            watched_root: watched_root.into(),
            settings,
            transport,
            ready: OnceCell::new(),
            key_alone: OnceCell::new(),
            failed: Mutex::new(None),
            tls_in_use: tokio::sync::Mutex::new((None, Instant::now())),
            ca_refresh_interval: CA_REFRESH_INTERVAL,
        }
    }

    /// Reads the agents' CA bundle again this often instead of
    /// [`CA_REFRESH_INTERVAL`] (tests).
    pub fn with_ca_refresh_interval(mut self, interval: Duration) -> Self {
        self.ca_refresh_interval = interval;
        self
    }

    /// Reads the key now (at start-up), so a bad key is logged at once.
    pub async fn load(&self) -> Result<(), String> {
        self.fanout().await.map(|_| ())
    }

    /// Reads the agents' CA bundle again once [`CA_REFRESH_INTERVAL`] has
    /// passed, and verifies agents against it from then on if it changed. A
    /// bundle that cannot be read or is malformed now leaves the one in use
    /// in place (logged): it verified agents a minute ago.
    async fn refresh_tls_if_due(&self, fanout: &Fanout) {
        if !matches!(self.transport, AgentTransport::Tls { .. }) {
            return;
        }
        let Ok(mut in_use) = self.tls_in_use.try_lock() else {
            return; // another call is reading it
        };
        if in_use.1.elapsed() < self.ca_refresh_interval {
            return;
        }
        in_use.1 = Instant::now();
        match agent_tls::resolve(&self.transport, &self.ssm).await {
            Ok(Some(tls)) if in_use.0.as_ref() != Some(&tls) => {
                tracing::info!("the agents' CA bundle changed: verifying agents against it");
                fanout.replace_tls(&tls);
                in_use.0 = Some(tls);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(
                %error,
                "cannot read the agents' CA bundle again: the one read before stays in use"
            ),
        }
    }
}

#[async_trait::async_trait]
impl FanoutSource for KeyLoadingFanout {
    async fn signing_key(&self) -> Result<RefreshKey, String> {
        if let Some(fanout) = self.ready.get() {
            return Ok(fanout.key().clone());
        }
        self.key_alone
            .get_or_try_init(|| load_refresh_key(&self.ssm, &self.parameter, &self.watched_root))
            .await
            .cloned()
            .map_err(|e| e.to_string())
    }

    async fn fanout(&self) -> Result<&Fanout, String> {
        if let Some(fanout) = self.ready.get() {
            self.refresh_tls_if_due(fanout).await;
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
                let tls = agent_tls::resolve(&self.transport, &self.ssm).await?;
                *self.tls_in_use.lock().await = (tls.clone(), Instant::now());
                let fanout = Fanout::new(key, self.settings);
                Ok::<_, PushSetupError>(match &tls {
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
                let retry_in = error.retry_in();
                tracing::error!(
                    error = %reason,
                    retry_in_secs = retry_in.as_secs(),
                    "pushes are off (signing key or agents' TLS): changes are journaled and flushed but pushed to no agent"
                );
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some((Instant::now() + retry_in, reason.clone()));
                }
                Err(reason)
            }
        }
    }
}
