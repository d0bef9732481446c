//! Refusals remembered in the process: a window (second or minute) in which
//! a tenant's write was refused stays refused, since its counter only grows,
//! so the tenant's further writes in it are refused without asking the
//! shared counters. A tenant writing past its quota in a loop then costs
//! the configuration table nothing, and the other tenants' calls to it do
//! not queue behind that loop's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::writes::{QuotaError, QuotaLimits, WriteQuotas};
use crate::error::WriteQuota;
use crate::validate::TenantId;

/// Tenants remembered at once; past it the expired go, then all (a
/// forgotten refusal only costs one more counter call).
const MAX_REMEMBERED: usize = 10_000;

pub struct RememberedRefusals {
    counters: Arc<dyn WriteQuotas>,
    /// Per tenant: the first second after the refused window, and the quota.
    refused: Mutex<HashMap<TenantId, (i64, WriteQuota)>>,
}

impl RememberedRefusals {
    pub fn new(counters: Arc<dyn WriteQuotas>) -> Self {
        Self {
            counters,
            refused: Mutex::new(HashMap::new()),
        }
    }

    fn remembered(&self, tenant: &TenantId, second: i64) -> Option<WriteQuota> {
        let refused = self.refused.lock().ok()?;
        refused
            .get(tenant)
            .filter(|(until, _)| second < *until)
            .map(|(_, quota)| *quota)
    }

    fn remember(&self, tenant: &TenantId, second: i64, quota: WriteQuota) {
        let until = match quota {
            WriteQuota::WritesPerSecond(_) => second + 1,
            WriteQuota::WritesPerMinute(_) => (second.div_euclid(60) + 1) * 60,
            // Keys free when the tenant deletes one: nothing to remember.
            WriteQuota::StoredKeys(_) => return,
        };
        if let Ok(mut refused) = self.refused.lock() {
            if refused.len() >= MAX_REMEMBERED {
                refused.retain(|_, (until, _)| second < *until);
                if refused.len() >= MAX_REMEMBERED {
                    refused.clear();
                }
            }
            refused.insert(tenant.clone(), (until, quota));
        }
    }
}

#[async_trait]
impl WriteQuotas for RememberedRefusals {
    fn limits(&self) -> QuotaLimits {
        self.counters.limits()
    }

    async fn count_write(&self, tenant: &TenantId, second: i64) -> Result<(), QuotaError> {
        if let Some(quota) = self.remembered(tenant, second) {
            return Err(QuotaError::Exceeded(quota));
        }
        let counted = self.counters.count_write(tenant, second).await;
        if let Err(QuotaError::Exceeded(quota)) = &counted {
            self.remember(tenant, second, *quota);
        }
        counted
    }

    async fn reserve_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
        self.counters.reserve_key(tenant).await
    }

    async fn release_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
        self.counters.release_key(tenant).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::quota::MemoryWriteQuotas;

    /// Counts the calls that reach the shared counters.
    struct Counting {
        inner: MemoryWriteQuotas,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl WriteQuotas for Counting {
        fn limits(&self) -> QuotaLimits {
            self.inner.limits()
        }
        async fn count_write(&self, tenant: &TenantId, second: i64) -> Result<(), QuotaError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.count_write(tenant, second).await
        }
        async fn reserve_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
            self.inner.reserve_key(tenant).await
        }
        async fn release_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
            self.inner.release_key(tenant).await
        }
    }

    #[tokio::test]
    async fn a_refused_minute_is_refused_without_the_counters_until_it_ends() {
        // GIVEN a tenant allowed 2 writes a minute, both spent
        let counting = Arc::new(Counting {
            inner: MemoryWriteQuotas::new(QuotaLimits {
                writes_per_minute: 2,
                max_keys: 10,
            }),
            calls: AtomicUsize::new(0),
        });
        let quotas = RememberedRefusals::new(counting.clone());
        let (a, b) = (
            TenantId::parse("t1").unwrap(),
            TenantId::parse("t2").unwrap(),
        );
        quotas.count_write(&a, 6000).await.unwrap();
        quotas.count_write(&a, 6001).await.unwrap();
        // WHEN it writes on, 100 times in that minute
        for second in 0..100 {
            let refused = quotas.count_write(&a, 6002 + second % 58).await;
            assert!(matches!(
                refused,
                Err(QuotaError::Exceeded(WriteQuota::WritesPerMinute(2)))
            ));
        }
        // THEN the counters were asked once (the first refusal), another
        // tenant is not refused, and the next minute counts again
        assert_eq!(counting.calls.load(Ordering::Relaxed), 3);
        quotas.count_write(&b, 6002).await.unwrap();
        quotas.count_write(&a, 6060).await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_second_ends_with_that_second() {
        let counting = Arc::new(Counting {
            inner: MemoryWriteQuotas::new(QuotaLimits {
                writes_per_minute: 60,
                max_keys: 10,
            }),
            calls: AtomicUsize::new(0),
        });
        let quotas = RememberedRefusals::new(counting.clone());
        let a = TenantId::parse("t1").unwrap();
        quotas.count_write(&a, 6000).await.unwrap();
        quotas.count_write(&a, 6000).await.unwrap();
        for _ in 0..5 {
            assert!(matches!(
                quotas.count_write(&a, 6000).await,
                Err(QuotaError::Exceeded(WriteQuota::WritesPerSecond(2)))
            ));
        }
        assert_eq!(counting.calls.load(Ordering::Relaxed), 3);
        quotas.count_write(&a, 6001).await.unwrap();
    }
}
