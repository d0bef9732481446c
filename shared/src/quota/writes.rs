//! Per-tenant write quotas: writes per minute and keys stored, counted
//! atomically in a store every config-api container shares, so a tenant's
//! quota holds however many containers serve it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{ConfigError, StoreError, WriteQuota};
use crate::validate::TenantId;

/// The limits every tenant gets (deployment settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    pub writes_per_minute: u32,
    pub max_keys: u32,
}

/// Why a quota step did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuotaError {
    #[error("quota of {0} reached")]
    Exceeded(WriteQuota),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters behind the quotas. Each call is one atomic, conditional step.
#[async_trait]
pub trait WriteQuotas: Send + Sync {
    fn limits(&self) -> QuotaLimits;
    /// Counts one write in minute `minute` (Unix minutes) of the tenant;
    /// refused at `writes_per_minute`.
    async fn count_write(&self, tenant: &TenantId, minute: i64) -> Result<(), QuotaError>;
    /// Makes room for one more stored key; refused at `max_keys`.
    async fn reserve_key(&self, tenant: &TenantId) -> Result<(), QuotaError>;
    /// Gives a key's room back (it was deleted, or its create failed).
    async fn release_key(&self, tenant: &TenantId) -> Result<(), QuotaError>;
}

/// The current Unix minute, and how long until the next one starts.
pub fn current_minute() -> (i64, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let minute = (now.as_secs() / 60) as i64;
    let next = Duration::from_secs((minute as u64 + 1) * 60);
    (minute, next.saturating_sub(now))
}

/// A quota refusal as the caller sees it: 429 with when to retry. A key
/// quota frees only when keys are deleted; a minute is the honest hint.
pub fn refusal(err: QuotaError, until_next_minute: Duration) -> ConfigError {
    match err {
        QuotaError::Exceeded(quota @ WriteQuota::WritesPerMinute(_)) => {
            ConfigError::QuotaExceeded {
                quota,
                retry_after: until_next_minute,
            }
        }
        QuotaError::Exceeded(quota @ WriteQuota::StoredKeys(_)) => ConfigError::QuotaExceeded {
            quota,
            retry_after: Duration::from_secs(60),
        },
        QuotaError::Store(err) => ConfigError::Store(err),
    }
}

/// In memory, for tests and the benchmark's in-process runs.
pub struct MemoryWriteQuotas {
    limits: QuotaLimits,
    writes: Mutex<HashMap<(TenantId, i64), u32>>,
    keys: Mutex<HashMap<TenantId, u32>>,
}

impl MemoryWriteQuotas {
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits,
            writes: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Keys the tenant is counted as storing.
    pub fn stored_keys(&self, tenant: &TenantId) -> u32 {
        self.keys
            .lock()
            .map(|k| k.get(tenant).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[async_trait]
impl WriteQuotas for MemoryWriteQuotas {
    fn limits(&self) -> QuotaLimits {
        self.limits
    }

    async fn count_write(&self, tenant: &TenantId, minute: i64) -> Result<(), QuotaError> {
        let mut writes = self.writes.lock().map_err(|_| poisoned())?;
        writes.retain(|(_, m), _| *m >= minute - 1);
        let count = writes.entry((tenant.clone(), minute)).or_insert(0);
        if *count >= self.limits.writes_per_minute {
            return Err(QuotaError::Exceeded(WriteQuota::WritesPerMinute(
                self.limits.writes_per_minute,
            )));
        }
        *count += 1;
        Ok(())
    }

    async fn reserve_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
        let mut keys = self.keys.lock().map_err(|_| poisoned())?;
        let count = keys.entry(tenant.clone()).or_insert(0);
        if *count >= self.limits.max_keys {
            return Err(QuotaError::Exceeded(WriteQuota::StoredKeys(
                self.limits.max_keys,
            )));
        }
        *count += 1;
        Ok(())
    }

    async fn release_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
        let mut keys = self.keys.lock().map_err(|_| poisoned())?;
        if let Some(count) = keys.get_mut(tenant) {
            *count = count.saturating_sub(1);
        }
        Ok(())
    }
}

fn poisoned() -> QuotaError {
    QuotaError::Store(StoreError::Unavailable {
        store: crate::kinds::StoreKind::DynamoDb,
        detail: "quota counters poisoned".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_past_the_minutes_quota_are_refused_until_the_next_minute() {
        let quotas = MemoryWriteQuotas::new(QuotaLimits {
            writes_per_minute: 2,
            max_keys: 10,
        });
        let t = TenantId::parse("t1").unwrap();
        quotas.count_write(&t, 100).await.unwrap();
        quotas.count_write(&t, 100).await.unwrap();
        assert!(matches!(
            quotas.count_write(&t, 100).await,
            Err(QuotaError::Exceeded(WriteQuota::WritesPerMinute(2)))
        ));
        quotas.count_write(&t, 101).await.unwrap();
        let other = TenantId::parse("t2").unwrap();
        quotas.count_write(&other, 100).await.unwrap();
    }

    #[test]
    fn the_minute_ends_within_a_minute() {
        let (minute, left) = current_minute();
        assert!(minute > 29_000_000, "{minute}");
        assert!(left <= Duration::from_secs(60));
    }
}
