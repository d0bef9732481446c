//! Read-through cache in front of a store.
//!
//! One [`CachedStore`] per store, keyed `tenantId:service:key`. Concurrent
//! misses for one key share a single backend call (moka's `try_get_with`
//! coalesces them). Only non-secret values and "not found" answers are
//! inserted; SecureStrings, in either read mode, always go to the store and
//! never enter the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::domain::StoreKind;
use crate::domain::{Found, ItemKey, PlainValue, ReadMode, SecretValue};
use crate::error::StoreError;
use crate::store::ConfigStore;
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// Size and lifetimes of one store's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a found value is served from memory.
    pub ttl: Duration,
    /// How long a "not found" answer is remembered; zero disables negative caching.
    pub not_found_ttl: Duration,
    /// Upper bound on cached entries.
    pub max_entries: u64,
}

/// What a read through the cache produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Plain(Arc<PlainValue>),
    /// A SecureString; the value is present only for decrypting reads.
    Secret(Option<SecretValue>),
    Missing,
}

#[derive(Debug, Clone)]
enum Cached {
    Value(Arc<PlainValue>),
    Missing,
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
    settings: CacheSettings,
    /// Bumped by every invalidation; a load that sees it change is not cached.
    invalidations: Arc<AtomicU64>,
}

impl CachedStore {
    pub fn new(store: Arc<dyn ConfigStore>, settings: CacheSettings) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(PerEntryTtl(settings))
            .build();
        Self {
            store,
            cache,
            settings,
            invalidations: Arc::new(AtomicU64::new(0)),
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

    /// Reads one entry. Decrypting reads bypass the cache completely.
    pub async fn get(&self, item: &ItemKey, mode: ReadMode) -> Result<Lookup, StoreError> {
        if mode == ReadMode::Decrypt {
            return Ok(match self.store.get(item, mode).await? {
                Some(Found::Plain(value)) => Lookup::Plain(value),
                Some(Found::Secret(secret)) => Lookup::Secret(secret),
                None => Lookup::Missing,
            });
        }
        let loaded = self
            .cache
            .try_get_with(item.cache_key(), async {
                let epoch = self.invalidations.load(Ordering::Acquire);
                let found = self
                    .store
                    .get(item, ReadMode::Plain)
                    .await
                    .map_err(Uncached::Failed)?;
                if self.invalidations.load(Ordering::Acquire) != epoch {
                    return Err(Uncached::Raced(match found {
                        Some(Found::Plain(value)) => Lookup::Plain(value),
                        Some(Found::Secret(_)) => Lookup::Secret(None),
                        None => Lookup::Missing,
                    }));
                }
                self.classify(found)
            })
            .await;
        match loaded {
            Ok(Cached::Value(value)) => Ok(Lookup::Plain(value)),
            Ok(Cached::Missing) => Ok(Lookup::Missing),
            Err(uncached) => match uncached.as_ref() {
                Uncached::Secret => Ok(Lookup::Secret(None)),
                Uncached::Missing => Ok(Lookup::Missing),
                Uncached::Failed(err) => Err(err.clone()),
                Uncached::Raced(lookup) => Ok(lookup.clone()),
            },
        }
    }

    /// Reads several keys of one tenant and service (plain mode): hits come
    /// from memory, all misses go to the store in one batched read.
    pub async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
    ) -> Result<HashMap<ConfigKey, Lookup>, StoreError> {
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
        if misses.is_empty() {
            return Ok(results);
        }
        let miss_keys: Vec<ConfigKey> = misses.iter().map(|(k, _)| (*k).clone()).collect();
        let epoch = self.invalidations.load(Ordering::Acquire);
        let mut loaded = self
            .store
            .get_many(tenant, service, &miss_keys, ReadMode::Plain)
            .await?;
        let raced = self.invalidations.load(Ordering::Acquire) != epoch;
        for (key, cache_key) in misses {
            let found = loaded.remove(key);
            let lookup = match self.classify(found) {
                Ok(cached) => {
                    if !raced {
                        self.cache.insert(cache_key, cached.clone()).await;
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
        Ok(results)
    }

    /// Drops one entry so the next read goes to the store. Loads already in
    /// flight finish but do not insert what they read.
    pub async fn invalidate(&self, item: &ItemKey) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(&item.cache_key()).await;
    }

    /// Drops every entry (a reader that lost track of changes); loads in
    /// flight do not insert what they read.
    pub fn invalidate_all(&self) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;

    fn plain(value: serde_json::Value) -> Found {
        Found::Plain(Arc::new(PlainValue {
            value,
            version: None,
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
    async fn failures_are_not_cached() {
        let (store, cached) = setup(60_000, 60_000);
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
            cached.invalidate(&key).await;
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
        cached.invalidate(&item("a")).await;
        assert!(
            matches!(cached.get(&item("a"), ReadMode::Plain).await.unwrap(), Lookup::Plain(v) if v.value == json!(2))
        );
        assert!(
            matches!(cached.get(&item("b"), ReadMode::Plain).await.unwrap(), Lookup::Plain(v) if v.value == json!(1))
        );
    }
}
