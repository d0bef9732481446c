//! Read-through cache in front of a store, with stale-if-error.
//!
//! One [`CachedStore`] per store, keyed `tenantId:service:key`. Concurrent
//! misses for one key share a single backend call (moka's `try_get_with`
//! coalesces them). Only non-secret values and "not found" answers are
//! inserted; SecureStrings, in either read mode, always go to the store and
//! never enter the cache.
//!
//! When the store fails, a reader keeps answering ([`StaleIfError`]):
//! - every value read successfully is also kept as the key's *last good value*
//!   for `ttl + max_stale`; a confirmed delete (the store answers "not found",
//!   or a delete comes through the change feed) drops it;
//! - a failed load puts the key in *backoff* for `retry_interval`: during it
//!   reads answer at once (the last good value marked stale, or the error)
//!   without calling the store, so a failing store sees at most one call per
//!   key per interval from this process;
//! - after the interval the next read probes the store again (one probe per
//!   key: concurrent readers with a last good value do not wait for it), with
//!   a short `probe_timeout` when there is a value to fall back on.
//!
//! A reader that must not take a stale answer for a load merely in flight
//! (a watcher deciding whether a value changed) waits on
//! [`CachedStore::loads_settled`], signalled whenever a load ends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use tokio::sync::Notify;

use crate::domain::{Changed, Found, ItemKey, PlainValue, ReadMode, SecretValue};
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::metrics::{Counter, StoreCounter, metrics};
use crate::quota::TenantLoadLimiter;
use crate::store::{ConfigStore, Listing};
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// How a reader rides out a failing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleIfError {
    /// How long past its TTL a value may still be served when the store fails;
    /// zero turns stale answers off (failures then answer 502/503).
    pub max_stale: Duration,
    /// After a failed store call, how long reads of that key answer without
    /// calling the store again.
    pub retry_interval: Duration,
    /// Deadline of a store call for a key that has a last good value.
    pub probe_timeout: Duration,
}

impl StaleIfError {
    pub const DEFAULT: StaleIfError = StaleIfError {
        max_stale: Duration::from_secs(3600),
        retry_interval: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(1),
    };
}

/// Size and lifetimes of one store's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a found value is served from memory.
    pub ttl: Duration,
    /// How long a "not found" answer is remembered; zero disables negative caching.
    pub not_found_ttl: Duration,
    /// Upper bound on cached entries.
    pub max_entries: u64,
    pub stale: StaleIfError,
}

/// What a read through the cache produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Plain(Arc<PlainValue>),
    /// The store failed; this is the last value read from it, `age` after it
    /// was read.
    Stale {
        value: Arc<PlainValue>,
        age: Duration,
    },
    /// A SecureString; the value is present only for decrypting reads.
    Secret(Option<SecretValue>),
    Missing,
}

#[derive(Debug, Clone)]
enum Cached {
    Value(Arc<PlainValue>),
    Missing,
}

/// Invalidation counters: one per stripe of (tenant, service) and one for
/// everything. A load reads its stripe's counter and the global one before
/// calling the store and caches what it read only if neither moved: a
/// change to an entry is never hidden by a load that raced it, and a change
/// to one tenant's service does not keep every other tenant's loads from
/// being cached (only the few that share its stripe).
struct Epochs {
    all: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

/// Stripes of (tenant, service) (a power of two).
const EPOCH_STRIPES: usize = 1024;

impl Epochs {
    fn new() -> Self {
        Self {
            all: AtomicU64::new(0),
            stripes: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, tenant: &TenantId, service: &ServiceName) -> &AtomicU64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (tenant.as_str(), service.as_str()).hash(&mut hasher);
        &self.stripes[hasher.finish() as usize & (EPOCH_STRIPES - 1)]
    }

    fn read(&self, tenant: &TenantId, service: &ServiceName) -> (u64, u64) {
        (
            self.all.load(Ordering::Acquire),
            self.stripe(tenant, service).load(Ordering::Acquire),
        )
    }

    fn bump(&self, tenant: &TenantId, service: &ServiceName) {
        self.stripe(tenant, service).fetch_add(1, Ordering::AcqRel);
    }

    fn bump_all(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone)]
struct LastGood {
    value: Arc<PlainValue>,
    read_at: Instant,
}

impl LastGood {
    fn stale(&self) -> Lookup {
        Lookup::Stale {
            value: self.value.clone(),
            age: self.read_at.elapsed(),
        }
    }
}

/// Why a load produced nothing to insert. Shared by coalesced waiters.
#[derive(Debug)]
enum Uncached {
    Secret,
    Missing,
    Failed(StoreError),
    /// An invalidation happened while the load was in flight: the answer may
    /// predate the change, so it is returned but not cached.
    Raced(Lookup),
}

struct PerEntryTtl(CacheSettings);

impl Expiry<String, Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Cached::Value(_) => self.0.ttl,
            Cached::Missing => self.0.not_found_ttl,
        })
    }
}

#[derive(Clone)]
pub struct CachedStore {
    store: Arc<dyn ConfigStore>,
    cache: Cache<String, Cached>,
    /// Last good values, kept `ttl + max_stale`; absent when stale answers are off.
    last_good: Option<Cache<String, LastGood>>,
    /// Keys whose last store call failed, for `retry_interval`.
    backoff: Cache<String, StoreError>,
    /// Keys with a load in flight.
    probing: Arc<Mutex<HashSet<String>>>,
    /// Signalled whenever a load ends (after its result is cached).
    settled: Arc<Notify>,
    /// Per tenant, until when the store counts as failing for it (a call of
    /// that tenant failed within the retry interval): then every call of the
    /// tenant gets the probe timeout, so keys with nothing to fall back on
    /// fail fast too instead of waiting out the SDK's operation timeout one
    /// after another. Per tenant, so that one tenant's failing (or
    /// throttled) calls do not cut every other tenant's calls short.
    /// (until when, whether the last failure was throttling).
    failing_until: Arc<Mutex<HashMap<TenantId, (Instant, bool)>>>,
    settings: CacheSettings,
    /// Bumped by invalidations; a load that sees its counters change is not
    /// cached (see [`Epochs`]).
    epochs: Arc<Epochs>,
    /// Whole-service listings, keyed `tenantId:service`, for the value TTL;
    /// any change to an entry of that service drops its listing.
    listings: Cache<String, Arc<Listing>>,
    /// Each tenant's share of store calls (absent: unlimited).
    limiter: Option<Arc<TenantLoadLimiter>>,
}

/// Removes a key from the in-flight set however the load ends, and wakes
/// whoever waits for loads to settle.
struct ProbeGuard<'a> {
    probing: &'a Mutex<HashSet<String>>,
    settled: &'a Notify,
    key: String,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut probing) = self.probing.lock() {
            probing.remove(&self.key);
        }
        self.settled.notify_waiters();
    }
}

impl CachedStore {
    pub fn new(store: Arc<dyn ConfigStore>, settings: CacheSettings) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(PerEntryTtl(settings))
            .build();
        let last_good = (!settings.stale.max_stale.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ttl + settings.stale.max_stale)
                .build()
        });
        let backoff = Cache::builder()
            .max_capacity(settings.max_entries)
            .time_to_live(settings.stale.retry_interval.max(Duration::from_millis(1)))
            .build();
        Self {
            store,
            cache,
            last_good,
            backoff,
            probing: Arc::new(Mutex::new(HashSet::new())),
            settled: Arc::new(Notify::new()),
            failing_until: Arc::new(Mutex::new(HashMap::new())),
            settings,
            epochs: Arc::new(Epochs::new()),
            listings: Cache::builder()
                .max_capacity((settings.max_entries / 10).max(100))
                .time_to_live(settings.ttl)
                .build(),
            limiter: None,
        }
    }

    /// Signals the end of its loads on `settled` (one signal may serve
    /// several stores: a reader then waits on one).
    pub fn with_loads_settled(mut self, settled: Arc<Notify>) -> Self {
        self.settled = settled;
        self
    }

    /// Signalled whenever one of this store's loads ends, its result cached:
    /// a value answered stale while another reader's load was in flight
    /// reads fresh after it. Register (`Notified::enable`) before the read
    /// it follows, or a load ending in between is missed.
    pub fn loads_settled(&self) -> &Arc<Notify> {
        &self.settled
    }

    /// Whether a load of `item` is in flight now (a reader answered its last
    /// good value meanwhile may wait for it: see [`Self::loads_settled`]).
    pub fn loading(&self, item: &ItemKey) -> bool {
        self.probing
            .lock()
            .is_ok_and(|probing| probing.contains(&item.cache_key()))
    }

    /// Charges every store call to its tenant's share (one limiter for both
    /// stores of a process); a tenant past it gets
    /// [`StoreError::TenantLimited`] without a store call. Hits are free.
    pub fn with_load_limiter(mut self, limiter: Arc<TenantLoadLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Takes `cost` store calls from the tenant's share.
    fn admit(&self, tenant: &TenantId, cost: usize) -> Result<(), StoreError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .take(tenant, u32::try_from(cost).unwrap_or(u32::MAX))
            .map_err(|retry_after| self.limited(tenant, retry_after))
    }

    /// [`Self::admit`]'s refusal without taking anything, unless the store
    /// is failing for the tenant (then the backoff decides, not the share).
    fn refuse_past_share(&self, tenant: &TenantId, cost: usize) -> Result<(), StoreError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.wait_for(tenant, u32::try_from(cost).unwrap_or(u32::MAX)) {
            Some(retry_after) if self.store_failing(tenant).is_none() => {
                Err(self.limited(tenant, retry_after))
            }
            _ => Ok(()),
        }
    }

    fn limited(&self, tenant: &TenantId, retry_after: Duration) -> StoreError {
        metrics().count(Counter::TenantLimitedCalls);
        tracing::info!(%tenant, store = self.kind().as_str(), retry_after_ms = retry_after.as_millis() as u64, "tenant past its share of store calls");
        StoreError::TenantLimited {
            store: self.kind(),
            retry_after,
        }
    }

    pub fn kind(&self) -> StoreKind {
        self.store.kind()
    }

    fn classify(&self, found: Option<Found>) -> Result<Cached, Uncached> {
        match found {
            Some(Found::Plain(value)) => Ok(Cached::Value(value)),
            Some(Found::Secret(_)) => Err(Uncached::Secret),
            None if self.settings.not_found_ttl.is_zero() => Err(Uncached::Missing),
            None => Ok(Cached::Missing),
        }
    }

    async fn last_good(&self, cache_key: &str) -> Option<LastGood> {
        match &self.last_good {
            Some(last_good) => last_good.get(cache_key).await,
            None => None,
        }
    }

    /// Drops an entry and its last good value (a load that raced a change).
    async fn forget(&self, cache_key: &str) {
        self.cache.invalidate(cache_key).await;
        if let Some(last_good) = &self.last_good {
            last_good.invalidate(cache_key).await;
        }
    }

    /// Records what a successful, unraced load found in the last-good table.
    async fn remember(&self, cache_key: &str, found: &Option<Found>) {
        let Some(last_good) = &self.last_good else {
            return;
        };
        match found {
            Some(Found::Plain(value)) => {
                last_good
                    .insert(
                        cache_key.to_owned(),
                        LastGood {
                            value: value.clone(),
                            read_at: Instant::now(),
                        },
                    )
                    .await;
            }
            // Deleted, or now a SecureString: never serve the old value.
            Some(Found::Secret(_)) | None => last_good.invalidate(cache_key).await,
        }
    }

    /// `Some(throttled)` while the store counts as failing.
    fn store_failing(&self, tenant: &TenantId) -> Option<bool> {
        self.failing_until
            .lock()
            .ok()
            .and_then(|failing| failing.get(tenant).copied())
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, throttled)| throttled)
    }

    /// One store call, measured; bounded by the probe timeout when `bounded`
    /// or while the store is failing.
    async fn call<T>(
        &self,
        tenant: &TenantId,
        bounded: bool,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let failing = self.store_failing(tenant);
        let bounded = bounded || failing.is_some();
        let kind = self.kind();
        metrics().store(kind, StoreCounter::StoreCalls);
        let started = Instant::now();
        let result = if bounded {
            let timeout = self.settings.stale.probe_timeout;
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    let detail = format!("no answer within the probe timeout ({timeout:?})");
                    // Cut short while the store throttles (the SDK backing off):
                    // still a throttle, so callers back off too (503, not 502).
                    Err(if failing == Some(true) {
                        StoreError::Throttled {
                            store: kind,
                            detail,
                        }
                    } else {
                        StoreError::Unavailable {
                            store: kind,
                            detail,
                        }
                    })
                })
        } else {
            call.await
        };
        metrics().store_latency(kind, started.elapsed());
        if let Err(err) = &result {
            if let Ok(mut failing) = self.failing_until.lock() {
                let now = Instant::now();
                failing.retain(|_, (until, _)| now < *until);
                let throttled = matches!(err, StoreError::Throttled { .. });
                failing.insert(
                    tenant.clone(),
                    (now + self.settings.stale.retry_interval, throttled),
                );
            }
            metrics().store(kind, StoreCounter::StoreErrors);
            tracing::warn!(store = kind.as_str(), error = %err, "store call failed");
        }
        result
    }

    /// The answer for a key whose store failed: its last good value, or `err`.
    fn degraded(
        &self,
        cache_key: &str,
        last: Option<LastGood>,
        err: StoreError,
    ) -> Result<Lookup, StoreError> {
        match last {
            Some(last) => {
                metrics().store(self.kind(), StoreCounter::StaleAnswers);
                let lookup = last.stale();
                if let Lookup::Stale { age, .. } = &lookup {
                    tracing::warn!(
                        store = self.kind().as_str(),
                        entry = cache_key,
                        age_ms = age.as_millis() as u64,
                        error = %err,
                        "served the last good value"
                    );
                }
                Ok(lookup)
            }
            None => Err(err),
        }
    }

    /// Reads one entry. Decrypting reads bypass the cache completely.
    pub async fn get(&self, item: &ItemKey, mode: ReadMode) -> Result<Lookup, StoreError> {
        if mode == ReadMode::Decrypt {
            self.admit(&item.tenant, 1)?;
            return Ok(
                match self
                    .call(&item.tenant, false, self.store.get(item, mode))
                    .await?
                {
                    Some(Found::Plain(value)) => Lookup::Plain(value),
                    Some(Found::Secret(secret)) => Lookup::Secret(secret),
                    None => Lookup::Missing,
                },
            );
        }
        let cache_key = item.cache_key();
        let kind = self.kind();
        if let Some(hit) = self.cache.get(&cache_key).await {
            metrics().store(kind, StoreCounter::CacheHits);
            return Ok(match hit {
                Cached::Value(value) => Lookup::Plain(value),
                Cached::Missing => Lookup::Missing,
            });
        }
        metrics().store(kind, StoreCounter::CacheMisses);
        let last = self.last_good(&cache_key).await;
        if let Some(err) = self.backoff.get(&cache_key).await {
            if last.is_none() {
                metrics().store(kind, StoreCounter::FastFailures);
            }
            return self.degraded(&cache_key, last, err);
        }
        let _guard = {
            let Ok(mut probing) = self.probing.lock() else {
                return Err(StoreError::Unavailable {
                    store: kind,
                    detail: "probe table poisoned".to_owned(),
                });
            };
            if !probing.insert(cache_key.clone()) {
                // Someone is probing already: fall back at once if we can,
                // else wait for their answer below (moka coalesces).
                if let Some(last) = last {
                    metrics().store(kind, StoreCounter::StaleAnswers);
                    return Ok(last.stale());
                }
                None
            } else {
                Some(ProbeGuard {
                    probing: &self.probing,
                    settled: &self.settled,
                    key: cache_key.clone(),
                })
            }
        };
        let bounded = last.is_some();
        let before = self.epochs.read(&item.tenant, &item.service);
        let loaded = self
            .cache
            .try_get_with(cache_key.clone(), async {
                let epoch = self.epochs.read(&item.tenant, &item.service);
                // Charged where the store is called: concurrent readers of
                // the key share this one load and its one charge.
                self.admit(&item.tenant, 1).map_err(Uncached::Failed)?;
                let found = self
                    .call(&item.tenant, bounded, self.store.get(item, ReadMode::Plain))
                    .await
                    .map_err(Uncached::Failed)?;
                if self.epochs.read(&item.tenant, &item.service) != epoch {
                    return Err(Uncached::Raced(match found {
                        Some(Found::Plain(value)) => Lookup::Plain(value),
                        Some(Found::Secret(_)) => Lookup::Secret(None),
                        None => Lookup::Missing,
                    }));
                }
                self.remember(&cache_key, &found).await;
                self.classify(found)
            })
            .await;
        if loaded.is_ok() && self.epochs.read(&item.tenant, &item.service) != before {
            // An invalidation came between the load's check and the insert
            // (or earlier): what was inserted and remembered may be what it
            // invalidated, a String since become a secret among others.
            self.forget(&cache_key).await;
        }
        match loaded {
            Ok(Cached::Value(value)) => Ok(Lookup::Plain(value)),
            Ok(Cached::Missing) => Ok(Lookup::Missing),
            Err(uncached) => match uncached.as_ref() {
                Uncached::Secret => Ok(Lookup::Secret(None)),
                Uncached::Missing => Ok(Lookup::Missing),
                // The tenant's share is spent: no store was called, so no
                // backoff and no stale answer; the caller is told to wait.
                Uncached::Failed(err @ StoreError::TenantLimited { .. }) => Err(err.clone()),
                Uncached::Failed(err) => {
                    self.backoff.insert(cache_key.clone(), err.clone()).await;
                    self.degraded(&cache_key, last, err.clone())
                }
                Uncached::Raced(lookup) => Ok(lookup.clone()),
            },
        }
    }

    /// Reads several keys of one tenant and service (plain mode): hits come
    /// from memory, all misses go to the store in one batched read. If that
    /// read fails, keys with a last good value are answered stale; any key
    /// without one fails the batch.
    pub async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
    ) -> Result<HashMap<ConfigKey, Lookup>, StoreError> {
        let kind = self.kind();
        let mut results = HashMap::with_capacity(keys.len());
        let mut misses = Vec::new();
        for key in keys {
            let cache_key = ItemKey::new(tenant.clone(), service.clone(), key.clone()).cache_key();
            match self.cache.get(&cache_key).await {
                Some(Cached::Value(value)) => {
                    results.insert(key.clone(), Lookup::Plain(value));
                }
                Some(Cached::Missing) => {
                    results.insert(key.clone(), Lookup::Missing);
                }
                None => misses.push((key, cache_key)),
            }
        }
        metrics().add_store(kind, StoreCounter::CacheHits, results.len() as u64);
        if misses.is_empty() {
            return Ok(results);
        }
        metrics().add_store(kind, StoreCounter::CacheMisses, misses.len() as u64);
        // A tenant past its share is refused before the per-key lookups
        // below, so that its flood of misses costs the process (whose CPU
        // the other tenants share) little. Not while the store fails for it:
        // then a batch inside the backoff calls no store and is answered from
        // the last good values, as a single read is.
        self.refuse_past_share(tenant, misses.len())?;
        let mut fallbacks = HashMap::with_capacity(misses.len());
        let mut backoff_error = None;
        for (_, cache_key) in &misses {
            if let Some(last) = self.last_good(cache_key).await {
                fallbacks.insert(cache_key.clone(), last);
            }
            if backoff_error.is_none() {
                backoff_error = self.backoff.get(cache_key).await;
            }
        }
        let all_covered = fallbacks.len() == misses.len();
        let from_backoff = backoff_error.is_some();
        let epoch = self.epochs.read(tenant, service);
        let loaded = match backoff_error {
            // A key of this batch failed moments ago: do not call again yet.
            Some(err) => Err(err),
            None => {
                self.admit(tenant, misses.len())?;
                let miss_keys: Vec<ConfigKey> = misses.iter().map(|(k, _)| (*k).clone()).collect();
                self.call(
                    tenant,
                    all_covered,
                    self.store
                        .get_many(tenant, service, &miss_keys, ReadMode::Plain),
                )
                .await
                .map(|loaded| (loaded, self.epochs.read(tenant, service) != epoch))
            }
        };
        let (mut loaded, raced) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                // Only a real store failure starts a backoff: renewing it on
                // every fast failure would never let a probe through.
                if !from_backoff {
                    for (_, cache_key) in &misses {
                        self.backoff.insert(cache_key.clone(), err.clone()).await;
                    }
                }
                if !all_covered {
                    if from_backoff {
                        metrics().store(kind, StoreCounter::FastFailures);
                    }
                    return Err(err);
                }
                for (key, cache_key) in misses {
                    let last = fallbacks.remove(&cache_key);
                    results.insert(key.clone(), self.degraded(&cache_key, last, err.clone())?);
                }
                return Ok(results);
            }
        };
        let mut inserted = Vec::new();
        for (key, cache_key) in misses {
            let found = loaded.remove(key);
            if !raced {
                self.remember(&cache_key, &found).await;
            }
            let lookup = match self.classify(found) {
                Ok(cached) => {
                    if !raced {
                        self.cache.insert(cache_key.clone(), cached.clone()).await;
                        inserted.push(cache_key);
                    }
                    match cached {
                        Cached::Value(value) => Lookup::Plain(value),
                        Cached::Missing => Lookup::Missing,
                    }
                }
                Err(Uncached::Secret) => Lookup::Secret(None),
                Err(_) => Lookup::Missing,
            };
            results.insert(key.clone(), lookup);
        }
        // As for single reads: an invalidation between the check and the
        // inserts drops what they inserted.
        if !raced && self.epochs.read(tenant, service) != epoch {
            for cache_key in inserted {
                self.forget(&cache_key).await;
            }
        }
        Ok(results)
    }

    /// Every entry of one tenant's service (plain mode), cached like single
    /// values; concurrent misses make one listing. A failure is returned as
    /// is: a listing has no last good copy.
    pub async fn list(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
    ) -> Result<Arc<Listing>, StoreError> {
        let listing_key = format!("{tenant}:{service}");
        let kind = self.kind();
        if let Some(hit) = self.listings.get(&listing_key).await {
            metrics().store(kind, StoreCounter::CacheHits);
            return Ok(hit);
        }
        metrics().store(kind, StoreCounter::CacheMisses);
        let loaded = self
            .listings
            .try_get_with(listing_key, async {
                let epoch = self.epochs.read(tenant, service);
                self.admit(tenant, 1).map_err(Err)?;
                let listing = Arc::new(
                    self.call(tenant, false, self.store.list(tenant, service))
                        .await
                        .map_err(Err)?,
                );
                if self.epochs.read(tenant, service) != epoch {
                    // Changed while listing: answer, but do not keep it.
                    return Err(Ok(listing));
                }
                Ok(listing)
            })
            .await;
        match loaded {
            Ok(listing) => Ok(listing),
            Err(shared) => match shared.as_ref() {
                Ok(raced) => Ok(raced.clone()),
                Err(err) => Err(err.clone()),
            },
        }
    }

    /// Drops one entry so the next read goes to the store. Loads already in
    /// flight finish but do not insert what they read. The last good value is
    /// kept (served if the refetch fails) unless the change was a delete or
    /// the entry's type changed (a String that became a SecureString must
    /// never be served again, stale or not).
    pub async fn invalidate(&self, item: &ItemKey, change: Changed) {
        self.epochs.bump(&item.tenant, &item.service);
        let cache_key = item.cache_key();
        self.cache.invalidate(&cache_key).await;
        self.backoff.invalidate(&cache_key).await;
        self.listings
            .invalidate(&format!("{}:{}", item.tenant, item.service))
            .await;
        if let Some(last_good) = &self.last_good {
            let drop = match change {
                Changed::Deleted => true,
                Changed::Updated(None) => false,
                Changed::Updated(Some(kind)) => last_good
                    .get(&cache_key)
                    .await
                    .is_some_and(|last| last.value.kind != kind),
            };
            if drop {
                last_good.invalidate(&cache_key).await;
            }
        }
    }

    /// Drops every entry (a reader that lost track of changes); loads in
    /// flight do not insert what they read. Last good values stay, bounded by
    /// max-stale, for a store that fails while everything is refetched.
    pub fn invalidate_all(&self) {
        self.epochs.bump_all();
        self.cache.invalidate_all();
        self.backoff.invalidate_all();
        self.listings.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ValueKind;
    use crate::store::MemoryStore;
    use serde_json::json;

    fn plain(value: serde_json::Value) -> Found {
        Found::Plain(Arc::new(PlainValue {
            value,
            version: None,
            kind: ValueKind::Plain,
            written: Default::default(),
        }))
    }

    fn item(key: &str) -> ItemKey {
        ItemKey::new(
            TenantId::parse("t1").unwrap(),
            ServiceName::parse("svc").unwrap(),
            ConfigKey::parse(key).unwrap(),
        )
    }

    fn settings(ttl_ms: u64, not_found_ms: u64) -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_millis(ttl_ms),
            not_found_ttl: Duration::from_millis(not_found_ms),
            max_entries: 100,
            stale: StaleIfError::DEFAULT,
        }
    }

    /// A store whose calls take 50 ms, so concurrent misses really overlap.
    fn setup(ttl_ms: u64, not_found_ms: u64) -> (Arc<MemoryStore>, CachedStore) {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        store.set_latency(Duration::from_millis(50));
        let cached = CachedStore::new(store.clone(), settings(ttl_ms, not_found_ms));
        (store, cached)
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_key_make_one_backend_call() {
        // GIVEN a cold cache
        let (store, cached) = setup(60_000, 1_000);
        store.put(&item("k"), plain(json!("v")));
        // WHEN 200 readers miss at once
        let key = item("k");
        let reads = (0..200).map(|_| cached.get(&key, ReadMode::Plain));
        let results = futures::future::join_all(reads).await;
        // THEN the store was called once and everyone got the value
        assert_eq!(store.gets(), 1);
        for result in results {
            assert!(matches!(result.unwrap(), Lookup::Plain(v) if v.value == json!("v")));
        }
    }

    #[tokio::test]
    async fn values_expire_after_their_ttl() {
        let (store, cached) = setup(150, 1_000);
        store.put(&item("k"), plain(json!(1)));
        cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        store.put(&item("k"), plain(json!(2)));
        let hit = cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        assert!(
            matches!(hit, Lookup::Plain(v) if v.value == json!(1)),
            "served from cache"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        assert!(
            matches!(fresh, Lookup::Plain(v) if v.value == json!(2)),
            "reloaded after ttl"
        );
        assert_eq!(store.gets(), 2);
    }

    #[tokio::test]
    async fn secrets_are_never_cached_in_either_mode() {
        let (store, cached) = setup(60_000, 60_000);
        store.put(
            &item("k"),
            Found::Secret(Some(SecretValue::new(json!("hunter2"), None))),
        );
        for _ in 0..3 {
            assert_eq!(
                cached.get(&item("k"), ReadMode::Plain).await.unwrap(),
                Lookup::Secret(None)
            );
            let secure = cached.get(&item("k"), ReadMode::Decrypt).await.unwrap();
            assert!(matches!(secure, Lookup::Secret(Some(s)) if s.expose() == &json!("hunter2")));
        }
        assert_eq!(store.gets(), 6);
        assert_eq!(cached.cache.entry_count(), 0);
    }

    #[tokio::test]
    async fn not_found_is_cached_briefly_and_can_be_switched_off() {
        let (store, cached) = setup(60_000, 200);
        for _ in 0..3 {
            assert_eq!(
                cached.get(&item("k"), ReadMode::Plain).await.unwrap(),
                Lookup::Missing
            );
        }
        assert_eq!(store.gets(), 1);
        store.put(&item("k"), plain(json!("now")));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            cached.get(&item("k"), ReadMode::Plain).await.unwrap(),
            Lookup::Plain(_)
        ));

        let (store, cached) = setup(60_000, 0);
        for _ in 0..3 {
            cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        }
        assert_eq!(store.gets(), 3);
    }

    #[tokio::test]
    async fn failures_are_not_cached_past_the_retry_interval() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(60_000, 60_000));
        store.put(&item("k"), plain(json!("v")));
        store.set_failure(Some(StoreError::Throttled {
            store: StoreKind::ParameterStore,
            detail: "test".into(),
        }));
        assert!(matches!(
            cached.get(&item("k"), ReadMode::Plain).await,
            Err(StoreError::Throttled { .. })
        ));
        store.set_failure(None);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(matches!(
            cached.get(&item("k"), ReadMode::Plain).await.unwrap(),
            Lookup::Plain(_)
        ));
    }

    #[tokio::test]
    async fn batch_reads_serve_hits_from_memory_and_batch_the_misses() {
        let (store, cached) = setup(60_000, 60_000);
        store.put(&item("a"), plain(json!("A")));
        store.put(&item("b"), plain(json!("B")));
        store.put(
            &item("s"),
            Found::Secret(Some(SecretValue::new(json!("x"), None))),
        );
        cached.get(&item("a"), ReadMode::Plain).await.unwrap();
        let keys: Vec<ConfigKey> = ["a", "b", "s", "missing"]
            .iter()
            .map(|k| ConfigKey::parse(k).unwrap())
            .collect();
        let tenant = TenantId::parse("t1").unwrap();
        let service = ServiceName::parse("svc").unwrap();
        let results = cached.get_many(&tenant, &service, &keys).await.unwrap();
        assert_eq!(store.batches(), 1);
        assert!(matches!(&results[&keys[1]], Lookup::Plain(v) if v.value == json!("B")));
        assert_eq!(results[&keys[2]], Lookup::Secret(None));
        assert_eq!(results[&keys[3]], Lookup::Missing);
        // second batch: everything but the secret is a hit
        cached
            .get_many(&tenant, &service, &keys[..2])
            .await
            .unwrap();
        assert_eq!(store.batches(), 1);
    }

    #[tokio::test]
    async fn a_load_in_flight_during_invalidation_is_not_cached() {
        // GIVEN a read that is still waiting on the store
        let (store, cached) = setup(60_000, 60_000);
        store.put(&item("k"), plain(json!("old")));
        let key = item("k");
        let slow_read = cached.get(&key, ReadMode::Plain);
        // WHEN the entry is invalidated while that read is in flight
        let invalidate = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            store.put(&item("k"), plain(json!("new")));
            cached.invalidate(&key, Changed::Updated(None)).await;
        };
        let (old, ()) = tokio::join!(slow_read, invalidate);
        assert!(matches!(old.unwrap(), Lookup::Plain(v) if v.value == json!("old")));
        // THEN the next read goes to the store and sees the new value
        let fresh = cached.get(&key, ReadMode::Plain).await.unwrap();
        assert!(matches!(fresh, Lookup::Plain(v) if v.value == json!("new")));
        assert_eq!(store.gets(), 2);
    }

    #[tokio::test]
    async fn invalidate_drops_exactly_one_entry() {
        let (store, cached) = setup(60_000, 60_000);
        store.put(&item("a"), plain(json!(1)));
        store.put(&item("b"), plain(json!(1)));
        cached.get(&item("a"), ReadMode::Plain).await.unwrap();
        cached.get(&item("b"), ReadMode::Plain).await.unwrap();
        store.put(&item("a"), plain(json!(2)));
        store.put(&item("b"), plain(json!(2)));
        cached.invalidate(&item("a"), Changed::Updated(None)).await;
        assert!(
            matches!(cached.get(&item("a"), ReadMode::Plain).await.unwrap(), Lookup::Plain(v) if v.value == json!(2))
        );
        assert!(
            matches!(cached.get(&item("b"), ReadMode::Plain).await.unwrap(), Lookup::Plain(v) if v.value == json!(1))
        );
    }

    fn stale_settings(ttl_ms: u64, max_stale_ms: u64) -> CacheSettings {
        CacheSettings {
            stale: StaleIfError {
                max_stale: Duration::from_millis(max_stale_ms),
                retry_interval: Duration::from_millis(300),
                probe_timeout: Duration::from_millis(100),
            },
            ..settings(ttl_ms, 60_000)
        }
    }

    fn failing() -> Option<StoreError> {
        Some(StoreError::Unavailable {
            store: StoreKind::ParameterStore,
            detail: "injected".into(),
        })
    }

    fn is_stale(lookup: &Lookup, expected: serde_json::Value) -> bool {
        matches!(lookup, Lookup::Stale { value, .. } if value.value == expected)
    }

    #[tokio::test]
    async fn a_failing_store_gets_the_last_good_value_marked_stale_and_one_call_per_interval() {
        // GIVEN a value read once and expired since
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.put(&item("k"), plain(json!("good")));
        cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        // WHEN the store fails and 100 reads arrive within the retry interval
        store.set_failure(failing());
        let calls_before = store.gets();
        for _ in 0..100 {
            let lookup = cached.get(&item("k"), ReadMode::Plain).await.unwrap();
            // THEN every one is answered with the last good value, marked stale
            assert!(is_stale(&lookup, json!("good")), "{lookup:?}");
        }
        // AND the store saw one call for them all
        assert_eq!(store.gets() - calls_before, 1);
        // WHEN the interval passes, the next read probes again
        tokio::time::sleep(Duration::from_millis(350)).await;
        cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        assert_eq!(store.gets() - calls_before, 2);
        // AND once the store is back, the next probe serves fresh values
        store.set_failure(None);
        store.put(&item("k"), plain(json!("newer")));
        tokio::time::sleep(Duration::from_millis(350)).await;
        let fresh = cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        assert!(matches!(fresh, Lookup::Plain(v) if v.value == json!("newer")));
    }

    #[tokio::test]
    async fn a_reader_answered_stale_behind_a_load_in_flight_reads_fresh_once_it_settles() {
        // GIVEN an expired value whose store now answers a new one in 30 ms
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.put(&item("k"), plain(json!("old")));
        cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        store.put(&item("k"), plain(json!("new")));
        store.set_latency(Duration::from_millis(30));
        // WHEN one reader's load is in flight and a second reader arrives
        let key = item("k");
        let first = cached.get(&key, ReadMode::Plain);
        let second = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let settled = cached.loads_settled().clone();
            let load_ended = settled.notified();
            tokio::pin!(load_ended);
            load_ended.as_mut().enable();
            let early = cached.get(&key, ReadMode::Plain).await.unwrap();
            let started = Instant::now();
            tokio::time::timeout(Duration::from_secs(1), load_ended)
                .await
                .expect("the load in flight signals its end");
            (
                early,
                started.elapsed(),
                cached.get(&key, ReadMode::Plain).await.unwrap(),
            )
        };
        let (_, (early, waited, after)) = tokio::join!(first, second);
        // THEN the second is answered the last good value at once, marked stale
        assert!(is_stale(&early, json!("old")), "{early:?}");
        // AND is woken when the load ends, not after a fixed wait
        assert!(waited < Duration::from_millis(100), "{waited:?}");
        // AND its read then is the new value, from memory
        assert!(
            matches!(&after, Lookup::Plain(v) if v.value == json!("new")),
            "{after:?}"
        );
        assert_eq!(store.gets(), 2);
    }

    #[tokio::test]
    async fn a_stalled_store_is_answered_within_the_probe_timeout_and_readers_do_not_queue() {
        // GIVEN an expired value and a store that now takes 5 s per call
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.put(&item("k"), plain(json!("good")));
        cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        store.set_latency(Duration::from_secs(5));
        // WHEN 50 readers arrive at once
        let started = Instant::now();
        let key = item("k");
        let reads =
            futures::future::join_all((0..50).map(|_| cached.get(&key, ReadMode::Plain))).await;
        // THEN all are answered stale within the probe timeout (100 ms), with one store call
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        for lookup in reads {
            assert!(is_stale(&lookup.unwrap(), json!("good")));
        }
        assert_eq!(store.gets(), 2);
    }

    #[tokio::test]
    async fn with_nothing_to_fall_back_on_failures_are_errors_and_repeat_fast() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.put(&item("k"), plain(json!("v")));
        store.set_failure(failing());
        assert!(cached.get(&item("k"), ReadMode::Plain).await.is_err());
        // within the retry interval the error is repeated without a store call
        let started = Instant::now();
        for _ in 0..20 {
            assert!(cached.get(&item("k"), ReadMode::Plain).await.is_err());
        }
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(store.gets(), 1);
    }

    #[tokio::test]
    async fn past_max_stale_the_error_is_returned() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 100));
        store.put(&item("k"), plain(json!("v")));
        cached.get(&item("k"), ReadMode::Plain).await.unwrap();
        store.set_failure(failing());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cached.get(&item("k"), ReadMode::Plain).await.is_err());
    }

    #[tokio::test]
    async fn an_update_keeps_the_last_good_value_and_a_delete_drops_it() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(60_000, 60_000));
        for key in ["updated", "deleted"] {
            store.put(&item(key), plain(json!("v1")));
            cached.get(&item(key), ReadMode::Plain).await.unwrap();
        }
        // WHEN both change while the store is failing
        store.set_failure(failing());
        cached
            .invalidate(&item("updated"), Changed::Updated(None))
            .await;
        cached.invalidate(&item("deleted"), Changed::Deleted).await;
        // THEN the updated entry is refetched, fails, and is served stale
        let updated = cached.get(&item("updated"), ReadMode::Plain).await.unwrap();
        assert!(is_stale(&updated, json!("v1")));
        // AND the deleted one is never served again
        assert!(cached.get(&item("deleted"), ReadMode::Plain).await.is_err());
    }

    #[tokio::test]
    async fn a_confirmed_delete_or_a_switch_to_secret_drops_the_last_good_value() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.put(&item("gone"), plain(json!("v")));
        store.put(&item("secret"), plain(json!("v")));
        cached.get(&item("gone"), ReadMode::Plain).await.unwrap();
        cached.get(&item("secret"), ReadMode::Plain).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        // the store says: one deleted, one now a SecureString
        store.remove(&item("gone"));
        store.put(
            &item("secret"),
            Found::Secret(Some(SecretValue::new(json!("hunter2"), None))),
        );
        assert_eq!(
            cached.get(&item("gone"), ReadMode::Plain).await.unwrap(),
            Lookup::Missing
        );
        assert_eq!(
            cached.get(&item("secret"), ReadMode::Plain).await.unwrap(),
            Lookup::Secret(None)
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        store.set_failure(failing());
        for key in ["gone", "secret"] {
            let answer = cached.get(&item(key), ReadMode::Plain).await;
            assert!(
                !matches!(answer, Ok(Lookup::Stale { .. })),
                "{key}: {answer:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_change_of_type_drops_the_last_good_value_and_a_change_of_value_keeps_it() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(60_000, 60_000));
        for key in ["same", "now-secret", "now-list"] {
            store.put(&item(key), plain(json!("v1")));
            cached.get(&item(key), ReadMode::Plain).await.unwrap();
        }
        // WHEN each changes, the notification naming its new type, and the
        // store then fails
        store.set_failure(failing());
        cached
            .invalidate(&item("same"), Changed::Updated(Some(ValueKind::Plain)))
            .await;
        cached
            .invalidate(
                &item("now-secret"),
                Changed::Updated(Some(ValueKind::Secret)),
            )
            .await;
        cached
            .invalidate(
                &item("now-list"),
                Changed::Updated(Some(ValueKind::StringList)),
            )
            .await;
        // THEN a value of the same type is served stale
        let same = cached.get(&item("same"), ReadMode::Plain).await.unwrap();
        assert!(is_stale(&same, json!("v1")));
        // AND a value whose type changed is never served again, stale or not:
        // the String that became a SecureString least of all
        for key in ["now-secret", "now-list"] {
            let answer = cached.get(&item(key), ReadMode::Plain).await;
            assert!(answer.is_err(), "{key}: {answer:?}");
        }
    }

    fn item_of(tenant: &str, key: &str) -> ItemKey {
        ItemKey::new(
            TenantId::parse(tenant).unwrap(),
            ServiceName::parse("svc").unwrap(),
            ConfigKey::parse(key).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_tenant_past_its_share_gets_429s_without_store_calls_and_others_do_not() {
        // GIVEN each tenant may load 1 key a second, 2 at once; both tenants
        // have a value, and tenant t1 has one cached
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(60_000, 60_000))
            .with_load_limiter(Arc::new(TenantLoadLimiter::new(1, 2)));
        for (tenant, key) in [("t1", "cached"), ("t1", "a"), ("t1", "b"), ("t2", "c")] {
            store.put(&item_of(tenant, key), plain(json!(key)));
        }
        cached
            .get(&item_of("t1", "cached"), ReadMode::Plain)
            .await
            .unwrap();
        // WHEN t1 misses one more key, then a batch of two
        cached
            .get(&item_of("t1", "a"), ReadMode::Plain)
            .await
            .unwrap();
        let calls = (store.gets(), store.batches());
        let refused = cached
            .get_many(
                &TenantId::parse("t1").unwrap(),
                &ServiceName::parse("svc").unwrap(),
                &[
                    ConfigKey::parse("b").unwrap(),
                    ConfigKey::parse("x").unwrap(),
                ],
            )
            .await;
        // THEN the batch is refused with the wait, and the store was not asked
        match refused {
            Err(StoreError::TenantLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::from_millis(900), "{retry_after:?}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((store.gets(), store.batches()), calls);
        // AND the key t1 has cached is still served (hits are free)
        assert!(matches!(
            cached.get(&item_of("t1", "cached"), ReadMode::Plain).await,
            Ok(Lookup::Plain(_))
        ));
        // AND a refusal is no store failure: another tenant's reads go on
        // (no backoff, no failing state, no stale answers)
        assert!(matches!(
            cached.get(&item_of("t2", "c"), ReadMode::Plain).await,
            Ok(Lookup::Plain(v)) if v.value == json!("c")
        ));
        assert!(
            cached
                .store_failing(&TenantId::parse("t1").unwrap())
                .is_none()
        );
        // AND readers asking for the same new key at once, with the share
        // spent, are all refused: none of them loads it uncharged
        let calls = (store.gets(), store.batches());
        let key = item_of("t1", "b");
        let reads =
            futures::future::join_all((0..4).map(|_| cached.get(&key, ReadMode::Plain))).await;
        assert!(
            reads
                .iter()
                .all(|r| matches!(r, Err(StoreError::TenantLimited { .. }))),
            "{reads:?}"
        );
        assert_eq!((store.gets(), store.batches()), calls);
    }

    #[tokio::test]
    async fn one_tenants_failed_call_does_not_cut_another_tenants_calls_short() {
        // GIVEN a slow store (300 ms a call) and a 100 ms probe timeout
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(60_000, 60_000));
        store.put(&item_of("tenant-b", "k"), plain(json!("b")));
        store.set_latency(Duration::from_millis(300));
        // WHEN tenant A's call fails
        store.set_failure(failing());
        assert!(
            cached
                .get(&item_of("tenant-a", "k"), ReadMode::Plain)
                .await
                .is_err()
        );
        store.set_failure(None);
        // THEN tenant A's next call is cut short at the probe timeout
        let started = Instant::now();
        assert!(
            cached
                .get(&item_of("tenant-a", "other"), ReadMode::Plain)
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        // AND tenant B's first call still gets the store's time, and its value
        let answer = cached.get(&item_of("tenant-b", "k"), ReadMode::Plain).await;
        assert!(
            matches!(&answer, Ok(Lookup::Plain(v)) if v.value == json!("b")),
            "{answer:?}"
        );
    }

    #[tokio::test]
    async fn a_change_to_one_tenant_does_not_keep_another_tenants_load_from_being_cached() {
        // GIVEN a load of tenant B's key in flight (the store takes 200 ms)
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        store.put(&item_of("tenant-b", "k"), plain(json!("b")));
        store.put(&item_of("tenant-a", "k"), plain(json!("a")));
        store.set_latency(Duration::from_millis(200));
        let cached = Arc::new(CachedStore::new(store.clone(), settings(60_000, 60_000)));
        // Loads B's key while `changed` changes, then reads it again: the
        // store calls that second read made (0: the load was cached).
        let calls_after_a_load_racing = |changed: ItemKey| {
            let (cached, store) = (cached.clone(), store.clone());
            async move {
                let loading = {
                    let cached = cached.clone();
                    tokio::spawn(async move {
                        cached.get(&item_of("tenant-b", "k"), ReadMode::Plain).await
                    })
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
                cached.invalidate(&changed, Changed::Updated(None)).await;
                loading.await.unwrap().unwrap();
                let gets = store.gets();
                cached
                    .get(&item_of("tenant-b", "k"), ReadMode::Plain)
                    .await
                    .unwrap();
                store.gets() - gets
            }
        };
        // WHEN tenant A's key changes meanwhile THEN tenant B's value was
        // cached all the same: the next read is a hit
        assert_eq!(
            calls_after_a_load_racing(item_of("tenant-a", "k")).await,
            0,
            "served from the cache"
        );
        // AND a change to B's own service while loading still keeps it out
        cached
            .invalidate(&item_of("tenant-b", "k"), Changed::Updated(None))
            .await;
        assert_eq!(
            calls_after_a_load_racing(item_of("tenant-b", "other")).await,
            1,
            "the raced load was not kept"
        );
    }

    #[tokio::test]
    async fn secrets_are_never_answered_stale() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.put(
            &item("s"),
            Found::Secret(Some(SecretValue::new(json!("hunter2"), None))),
        );
        cached.get(&item("s"), ReadMode::Decrypt).await.unwrap();
        cached.get(&item("s"), ReadMode::Plain).await.unwrap();
        store.set_failure(failing());
        assert!(cached.get(&item("s"), ReadMode::Decrypt).await.is_err());
        assert!(cached.get(&item("s"), ReadMode::Plain).await.is_err());
    }

    /// Tenant t1 reads keys a and b of svc (cached 50 ms), they expire, the
    /// store fails, and the batch read again is answered with both last good
    /// values, marked stale.
    async fn a_batch_gone_stale(
        store: &MemoryStore,
        cached: &CachedStore,
    ) -> (TenantId, ServiceName, Vec<ConfigKey>) {
        let tenant = TenantId::parse("t1").unwrap();
        let service = ServiceName::parse("svc").unwrap();
        let keys: Vec<ConfigKey> = ["a", "b"]
            .iter()
            .map(|k| ConfigKey::parse(k).unwrap())
            .collect();
        store.put(&item("a"), plain(json!("A")));
        store.put(&item("b"), plain(json!("B")));
        cached.get_many(&tenant, &service, &keys).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        store.set_failure(failing());
        let stale = cached.get_many(&tenant, &service, &keys).await.unwrap();
        assert!(is_stale(&stale[&keys[0]], json!("A")));
        assert!(is_stale(&stale[&keys[1]], json!("B")));
        (tenant, service, keys)
    }

    #[tokio::test]
    async fn a_tenant_past_its_share_while_its_store_fails_still_gets_last_good_values() {
        // GIVEN a tenant with a share of 4 store calls that cached two keys
        // AND, once they expired, a batch that spent the rest of its share on
        // a failing store (answered stale)
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000))
            .with_load_limiter(Arc::new(TenantLoadLimiter::new(1, 4)));
        let (tenant, service, keys) = a_batch_gone_stale(&store, &cached).await;
        // WHEN it reads the batch again inside the store's backoff, its share spent
        let again = cached.get_many(&tenant, &service, &keys).await;
        // THEN it gets the last good values again, not a 429: no store is
        // called either way, and a single read would get them too
        let again = again.unwrap();
        assert!(is_stale(&again[&keys[0]], json!("A")));
        assert!(is_stale(&again[&keys[1]], json!("B")));
    }

    #[tokio::test]
    async fn a_failed_batch_answers_stale_only_when_every_missed_key_has_a_last_good_value() {
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        let (tenant, service, keys) = a_batch_gone_stale(&store, &cached).await;
        let with_unknown = [keys[0].clone(), ConfigKey::parse("never_read").unwrap()];
        assert!(
            cached
                .get_many(&tenant, &service, &with_unknown)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn while_the_store_fails_keys_with_nothing_cached_fail_within_the_probe_timeout() {
        // GIVEN a store that stalls for 5 s per call, and one key already failed
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.set_failure(failing());
        assert!(cached.get(&item("a"), ReadMode::Plain).await.is_err());
        store.set_failure(None);
        store.set_latency(Duration::from_secs(5));
        // WHEN another key nothing was cached for is read
        let started = Instant::now();
        let answer = cached.get(&item("b"), ReadMode::Plain).await;
        // THEN it fails after the probe timeout (100 ms), not the store's 5 s
        assert!(answer.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_batch_that_keeps_failing_still_probes_once_per_retry_interval() {
        // GIVEN a failing store and a batch of keys nothing was cached for
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.set_failure(failing());
        let tenant = TenantId::parse("t1").unwrap();
        let service = ServiceName::parse("svc").unwrap();
        let keys = [ConfigKey::parse("a").unwrap()];
        // WHEN it is asked for every 50 ms for a second
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            assert!(cached.get_many(&tenant, &service, &keys).await.is_err());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // THEN the store was probed about once per 300 ms interval: more than
        // once (the backoff ends), far fewer than the 20 requests
        assert!(
            (3..=5).contains(&store.batches()),
            "{} batches",
            store.batches()
        );
    }

    #[tokio::test]
    async fn a_probe_cut_short_while_the_store_throttles_is_still_a_throttle() {
        // GIVEN a store that throttled a moment ago and now backs off for 5 s
        let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let cached = CachedStore::new(store.clone(), stale_settings(50, 60_000));
        store.set_failure(Some(StoreError::Throttled {
            store: StoreKind::ParameterStore,
            detail: "injected".into(),
        }));
        assert!(cached.get(&item("a"), ReadMode::Plain).await.is_err());
        store.set_failure(None);
        store.set_latency(Duration::from_secs(5));
        // WHEN a key with nothing cached is read THEN the cut-short call is a throttle (503)
        let answer = cached.get(&item("b"), ReadMode::Plain).await;
        assert!(
            matches!(answer, Err(StoreError::Throttled { .. })),
            "{answer:?}"
        );
    }
}
