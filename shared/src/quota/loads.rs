//! Each tenant's share of store calls in one process: a token bucket per
//! tenant, taken before every store call (cache hits cost nothing). A tenant
//! asking for random keys spends its own bucket, not the account's shared
//! Parameter Store and DynamoDB throughput, and gets 429 with `Retry-After`
//! while the other tenants' misses still reach the stores.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::validate::TenantId;

/// Buckets kept before full ones (tenants idle long enough to have refilled)
/// are dropped: a full bucket and no bucket mean the same.
const MAX_TRACKED_TENANTS: usize = 10_000;

pub struct TenantLoadLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl TenantLoadLimiter {
    /// `per_second` store calls a tenant may make on average, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` store calls from the tenant's share, or says how long
    /// until it has them again. A cost above the burst is charged as the
    /// burst, so the largest read the API allows stays possible.
    pub fn take(&self, tenant: &TenantId, cost: u32) -> Result<(), Duration> {
        let cost = f64::from(cost.max(1)).min(self.burst);
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED_TENANTS && !buckets.contains_key(tenant) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.refilled(now, per_second, burst) < burst);
        }
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = bucket.refilled(now, self.per_second, self.burst);
        if tokens >= cost {
            *bucket = Bucket {
                tokens: tokens - cost,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((cost - tokens) / self.per_second))
        }
    }

    /// How long until the tenant could take `cost` store calls, or `None`
    /// when it could now; takes nothing. Lets a caller refuse a tenant past
    /// its share before doing any other work for the call it would refuse.
    pub fn wait_for(&self, tenant: &TenantId, cost: u32) -> Option<Duration> {
        let cost = f64::from(cost.max(1)).min(self.burst);
        let buckets = self.buckets.lock().ok()?;
        let tokens = buckets
            .get(tenant)?
            .refilled(Instant::now(), self.per_second, self.burst);
        (tokens < cost).then(|| Duration::from_secs_f64((cost - tokens) / self.per_second))
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, per_second: f64, burst: f64) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * per_second;
        (self.tokens + earned).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn a_tenant_past_its_burst_waits_while_another_tenant_does_not() {
        // GIVEN a limiter of 10 calls a second, 5 at once
        let limiter = TenantLoadLimiter::new(10, 5);
        let (noisy, quiet) = (tenant("noisy"), tenant("quiet"));
        // WHEN one tenant spends its burst
        for _ in 0..5 {
            limiter.take(&noisy, 1).unwrap();
        }
        // THEN its next call waits about one refill, and the other tenant's does not
        let wait = limiter.take(&noisy, 1).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        limiter.take(&quiet, 1).unwrap();
    }

    #[test]
    fn asking_how_long_to_wait_takes_nothing_from_the_share() {
        // GIVEN a tenant with 2 calls left of its burst of 5
        let limiter = TenantLoadLimiter::new(10, 5);
        let t = tenant("t1");
        limiter.take(&t, 3).unwrap();
        // WHEN the limiter is asked, many times, about 2 and about 3 calls
        for _ in 0..10 {
            assert_eq!(limiter.wait_for(&t, 2), None);
            let wait = limiter.wait_for(&t, 3).expect("3 calls must wait");
            assert!(wait <= Duration::from_millis(100), "{wait:?}");
        }
        // THEN the 2 calls are still there to take, and an unseen tenant need not wait
        limiter.take(&t, 2).unwrap();
        assert_eq!(limiter.wait_for(&tenant("t2"), 5), None);
    }

    #[test]
    fn the_share_refills_over_time() {
        let limiter = TenantLoadLimiter::new(1000, 2);
        let t = tenant("t1");
        limiter.take(&t, 2).unwrap();
        assert!(limiter.take(&t, 1).is_err());
        std::thread::sleep(Duration::from_millis(5));
        limiter.take(&t, 1).unwrap();
    }

    #[test]
    fn a_call_costing_more_than_the_burst_is_charged_the_burst() {
        let limiter = TenantLoadLimiter::new(1, 5);
        let t = tenant("t1");
        limiter.take(&t, 50).unwrap();
        let wait = limiter.take(&t, 50).unwrap_err();
        assert!(wait >= Duration::from_secs(4), "{wait:?}");
    }
}
