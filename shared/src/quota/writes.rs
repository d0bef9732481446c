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
    /// Counts one write in second `second` (Unix seconds) of the tenant and
    /// in its minute; refused at [`per_second`] of `writes_per_minute` in
    /// that second, or at `writes_per_minute` in that minute.
    async fn count_write(&self, tenant: &TenantId, second: i64) -> Result<(), QuotaError>;
    /// Makes room for one more stored key; refused at `max_keys`.
    async fn reserve_key(&self, tenant: &TenantId) -> Result<(), QuotaError>;
    /// Gives a key's room back (it was deleted, or its create failed).
    async fn release_key(&self, tenant: &TenantId) -> Result<(), QuotaError>;
}

/// Writes one tenant may make in one second: twice its even share of the
/// minute (at least 1), so a minute's quota is spread over at least half a
/// minute instead of landing on the stores at once.
pub fn per_second(writes_per_minute: u32) -> u32 {
    writes_per_minute.div_ceil(60).max(1) * 2
}

/// The current Unix second, and how long until the next second and the
/// next minute start.
pub fn current_second() -> (i64, Duration, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let second = now.as_secs();
    let next_second = Duration::from_secs(second + 1).saturating_sub(now);
    let next_minute = Duration::from_secs((second / 60 + 1) * 60).saturating_sub(now);
    (second as i64, next_second, next_minute)
}

/// A quota refusal as the caller sees it: 429 with when to retry. A key
/// quota frees only when keys are deleted; a minute is the honest hint.
pub fn refusal(
    err: QuotaError,
    until_next_second: Duration,
    until_next_minute: Duration,
) -> ConfigError {
    match err {
        QuotaError::Exceeded(quota @ WriteQuota::WritesPerSecond(_)) => {
            ConfigError::QuotaExceeded {
                quota,
                retry_after: until_next_second,
            }
        }
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

    async fn count_write(&self, tenant: &TenantId, second: i64) -> Result<(), QuotaError> {
        let minute = second / 60;
        let per_second = per_second(self.limits.writes_per_minute);
        let mut writes = self.writes.lock().map_err(|_| poisoned())?;
        // Seconds are keyed negative beside the minutes: one map, both windows.
        writes.retain(|(_, window), _| *window >= minute - 1 || *window <= -(second - 1));
        let this_second = writes.get(&(tenant.clone(), -second)).copied().unwrap_or(0);
        if this_second >= per_second {
            return Err(QuotaError::Exceeded(WriteQuota::WritesPerSecond(
                per_second,
            )));
        }
        let this_minute = writes.get(&(tenant.clone(), minute)).copied().unwrap_or(0);
        if this_minute >= self.limits.writes_per_minute {
            return Err(QuotaError::Exceeded(WriteQuota::WritesPerMinute(
                self.limits.writes_per_minute,
            )));
        }
        *writes.entry((tenant.clone(), -second)).or_insert(0) += 1;
        *writes.entry((tenant.clone(), minute)).or_insert(0) += 1;
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
        // GIVEN 2 writes a minute (so at most 2 in one second)
        let quotas = MemoryWriteQuotas::new(QuotaLimits {
            writes_per_minute: 2,
            max_keys: 10,
        });
        let t = TenantId::parse("t1").unwrap();
        let second = 6000; // the start of minute 100
        quotas.count_write(&t, second).await.unwrap();
        quotas.count_write(&t, second + 1).await.unwrap();
        assert!(matches!(
            quotas.count_write(&t, second + 2).await,
            Err(QuotaError::Exceeded(WriteQuota::WritesPerMinute(2)))
        ));
        quotas.count_write(&t, second + 60).await.unwrap();
        let other = TenantId::parse("t2").unwrap();
        quotas.count_write(&other, second + 2).await.unwrap();
    }

    #[tokio::test]
    async fn a_minutes_quota_is_spread_over_its_seconds() {
        // GIVEN 120 writes a minute: at most 4 in one second
        let quotas = MemoryWriteQuotas::new(QuotaLimits {
            writes_per_minute: 120,
            max_keys: 10,
        });
        let t = TenantId::parse("t1").unwrap();
        for _ in 0..4 {
            quotas.count_write(&t, 6000).await.unwrap();
        }
        assert!(matches!(
            quotas.count_write(&t, 6000).await,
            Err(QuotaError::Exceeded(WriteQuota::WritesPerSecond(4)))
        ));
        quotas.count_write(&t, 6001).await.unwrap();
        assert_eq!(per_second(1), 2);
        assert_eq!(per_second(600), 20);
    }

    #[test]
    fn the_second_and_the_minute_end_within_their_length() {
        let (second, next_second, next_minute) = current_second();
        assert!(second > 1_700_000_000, "{second}");
        assert!(next_second <= Duration::from_secs(1));
        assert!(next_minute <= Duration::from_secs(60));
    }
}
