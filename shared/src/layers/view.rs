//! What a reader knows of the shared layers: each shared layer's entries of
//! a service (one snapshot per layer, service and store, shared by every
//! tenant that reads them) and each tenant's registration (its tier).
//!
//! A shared change drops one snapshot, not one entry per tenant: the write
//! side does no per-tenant work and a reader's memory grows with shared
//! keys, not with tenants × shared keys. Each tenant's own values stay in
//! the per-tenant caches ([`crate::cache::CachedStore`]); the effective
//! value is merged on read ([`super::merge`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;

use super::Layer;
use super::registry::{TenantRecord, TenantRegistry};
use crate::cache::StaleIfError;
use crate::domain::{Found, PlainValue};
use crate::error::{ConfigError, StoreError};
use crate::kinds::StoreKind;
use crate::store::{ConfigStore, Listing};
use crate::validate::{ConfigKey, ServiceName, TenantId, TierName};

/// How long snapshots and registrations are kept, and how a failing store
/// is ridden out (as the per-tenant caches do: [`StaleIfError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedLayerSettings {
    pub ttl: Duration,
    pub stale: StaleIfError,
    /// Most tenants' registrations kept.
    pub max_tenants: u64,
}

type SnapshotKey = (StoreKind, Layer, ServiceName);

#[derive(Clone)]
struct Kept<T> {
    value: T,
    read_at: Instant,
}

/// A shared layer's entries of one service, as last read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub listing: Arc<Listing>,
    /// Set when the store failed and this is the last good snapshot.
    pub stale: Option<Duration>,
}

impl Snapshot {
    /// The layer's plain value of `key`, if it holds one. A SecureString
    /// written around the API into a shared layer is never served.
    pub fn value(&self, key: &ConfigKey) -> Option<&Arc<PlainValue>> {
        let at = self
            .listing
            .entries
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()?;
        match &self.listing.entries[at].1 {
            Found::Plain(value) => Some(value),
            Found::Secret(_) => None,
        }
    }
}

/// The layers under a tenant's own, for one service and store.
#[derive(Debug, Clone)]
pub struct Underlay {
    /// Global first, then the tier's (when the tenant has one).
    pub layers: Vec<(Layer, Snapshot)>,
}

impl Underlay {
    /// Each layer's plain value of `key`, bottom to top.
    pub fn values<'a>(&'a self, key: &ConfigKey) -> Vec<(&'a Layer, &'a Arc<PlainValue>)> {
        self.layers
            .iter()
            .filter_map(|(layer, snapshot)| snapshot.value(key).map(|v| (layer, v)))
            .collect()
    }

    /// How long ago the oldest stale snapshot was read, if any is stale.
    pub fn stale(&self) -> Option<Duration> {
        self.layers.iter().filter_map(|(_, s)| s.stale).max()
    }
}

pub struct SharedLayers {
    dynamodb: Arc<dyn ConfigStore>,
    parameters: Arc<dyn ConfigStore>,
    registry: Arc<dyn TenantRegistry>,
    snapshots: Cache<SnapshotKey, Arc<Listing>>,
    last_good_snapshots: Cache<SnapshotKey, Kept<Arc<Listing>>>,
    registrations: Cache<TenantId, TenantRecord>,
    last_good_registrations: Cache<TenantId, Kept<TenantRecord>>,
    /// Bumped by every invalidation: a load that saw it move is returned
    /// but not kept (it may predate the change).
    epoch: AtomicU64,
    stale: StaleIfError,
    /// Per store (DynamoDB: layers and registry; Parameter Store), until
    /// when its last call counts as failed: calls with a last good value
    /// to fall back on are not made again until then.
    failing_until: std::sync::Mutex<[Option<Instant>; 2]>,
}

fn slot(kind: StoreKind) -> usize {
    match kind {
        StoreKind::DynamoDb => 0,
        StoreKind::ParameterStore => 1,
    }
}

impl SharedLayers {
    pub fn new(
        dynamodb: Arc<dyn ConfigStore>,
        parameters: Arc<dyn ConfigStore>,
        registry: Arc<dyn TenantRegistry>,
        settings: SharedLayerSettings,
    ) -> Self {
        let ttl = settings.ttl.max(Duration::from_millis(1));
        let kept = ttl + settings.stale.max_stale;
        Self {
            dynamodb,
            parameters,
            registry,
            snapshots: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            last_good_snapshots: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(kept)
                .build(),
            registrations: Cache::builder()
                .max_capacity(settings.max_tenants)
                .time_to_live(ttl)
                .build(),
            last_good_registrations: Cache::builder()
                .max_capacity(settings.max_tenants)
                .time_to_live(kept)
                .build(),
            epoch: AtomicU64::new(0),
            stale: settings.stale,
            failing_until: std::sync::Mutex::new([None, None]),
        }
    }

    fn failing(&self, kind: StoreKind) -> bool {
        self.failing_until
            .lock()
            .ok()
            .and_then(|f| f[slot(kind)])
            .is_some_and(|until| Instant::now() < until)
    }

    /// One call to a store, bounded by the probe timeout when there is a
    /// last good answer to fall back on or the store is failing (a frozen
    /// store must not hold every read for the SDK's whole timeout); a
    /// failure marks the store failing for the retry interval.
    async fn call<T>(
        &self,
        kind: StoreKind,
        bounded: bool,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = if bounded || self.failing(kind) {
            let timeout = self.stale.probe_timeout;
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable {
                        store: kind,
                        detail: format!("no answer within the probe timeout ({timeout:?})"),
                    })
                })
        } else {
            call.await
        };
        if result.is_err()
            && let Ok(mut failing) = self.failing_until.lock()
        {
            failing[slot(kind)] = Some(Instant::now() + self.stale.retry_interval);
        }
        result
    }

    fn store(&self, kind: StoreKind) -> &Arc<dyn ConfigStore> {
        match kind {
            StoreKind::DynamoDb => &self.dynamodb,
            StoreKind::ParameterStore => &self.parameters,
        }
    }

    /// The tenant's registration (unregistered: no tier, active). While the
    /// registry fails, the last one read stands in; without one, the error.
    pub async fn registration(&self, tenant: &TenantId) -> Result<TenantRecord, StoreError> {
        if let Some(record) = self.registrations.get(tenant).await {
            return Ok(record);
        }
        let last_good = self.last_good_registrations.get(tenant).await;
        if let Some(kept) = &last_good
            && self.failing(StoreKind::DynamoDb)
        {
            return Ok(kept.value.clone());
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let read = self.call(
            StoreKind::DynamoDb,
            last_good.is_some(),
            self.registry.get(tenant),
        );
        match read.await {
            Ok(registered) => {
                let record = registered.map_or_else(TenantRecord::unregistered, |r| r.record);
                if self.epoch.load(Ordering::Acquire) == epoch {
                    self.registrations
                        .insert(tenant.clone(), record.clone())
                        .await;
                    self.last_good_registrations
                        .insert(
                            tenant.clone(),
                            Kept {
                                value: record.clone(),
                                read_at: Instant::now(),
                            },
                        )
                        .await;
                }
                Ok(record)
            }
            Err(err) => match last_good {
                Some(kept) => {
                    tracing::warn!(%tenant, error = %err, age_ms = kept.read_at.elapsed().as_millis() as u64, "served the last good registration");
                    Ok(kept.value)
                }
                None => Err(err),
            },
        }
    }

    /// The tenant's tier, refusing an inactive tenant (403).
    pub async fn active_tier(&self, tenant: &TenantId) -> Result<Option<TierName>, ConfigError> {
        let record = self.registration(tenant).await?;
        if !record.active {
            return Err(ConfigError::TenantInactive);
        }
        Ok(record.tier)
    }

    /// One shared layer's entries of a service in one store.
    pub async fn snapshot(
        &self,
        kind: StoreKind,
        layer: &Layer,
        service: &ServiceName,
    ) -> Result<Snapshot, StoreError> {
        let key = (kind, layer.clone(), service.clone());
        if let Some(listing) = self.snapshots.get(&key).await {
            return Ok(Snapshot {
                listing,
                stale: None,
            });
        }
        let last_good = self.last_good_snapshots.get(&key).await;
        if let Some(kept) = &last_good
            && self.failing(kind)
        {
            return Ok(Snapshot {
                listing: kept.value.clone(),
                stale: Some(kept.read_at.elapsed()),
            });
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let read = self.call(
            kind,
            last_good.is_some(),
            self.store(kind).list_layer(layer, service),
        );
        match read.await {
            Ok(listing) => {
                if listing.truncated {
                    tracing::error!(%layer, %service, store = kind.as_str(), "a shared layer holds more keys than one listing: the rest are not served");
                }
                let listing = Arc::new(listing);
                if self.epoch.load(Ordering::Acquire) == epoch {
                    self.snapshots.insert(key.clone(), listing.clone()).await;
                    self.last_good_snapshots
                        .insert(
                            key,
                            Kept {
                                value: listing.clone(),
                                read_at: Instant::now(),
                            },
                        )
                        .await;
                }
                Ok(Snapshot {
                    listing,
                    stale: None,
                })
            }
            Err(err) => match last_good {
                Some(kept) => {
                    let age = kept.read_at.elapsed();
                    tracing::warn!(%layer, %service, store = kind.as_str(), error = %err, age_ms = age.as_millis() as u64, "served the last good shared layer");
                    Ok(Snapshot {
                        listing: kept.value,
                        stale: Some(age),
                    })
                }
                None => Err(err),
            },
        }
    }

    /// The global layer and the tier's, for one service and store.
    pub async fn underlay(
        &self,
        kind: StoreKind,
        tier: Option<&TierName>,
        service: &ServiceName,
    ) -> Result<Underlay, StoreError> {
        let global = self.snapshot(kind, &Layer::Global, service);
        let mut layers = Vec::with_capacity(2);
        match tier {
            Some(tier) => {
                let tier = Layer::Tier(tier.clone());
                let (global, tiered) =
                    tokio::try_join!(global, self.snapshot(kind, &tier, service))?;
                layers.push((Layer::Global, global));
                layers.push((tier, tiered));
            }
            None => layers.push((Layer::Global, global.await?)),
        }
        Ok(Underlay { layers })
    }

    /// A shared layer's entry changed: drop the layer's snapshots of the
    /// service (the last good one stays, for a failing store).
    pub async fn invalidate_layer(&self, layer: &Layer, service: &ServiceName) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for kind in [StoreKind::DynamoDb, StoreKind::ParameterStore] {
            self.snapshots
                .invalidate(&(kind, layer.clone(), service.clone()))
                .await;
        }
    }

    /// A tenant's registration changed (its tier, or whether it is active).
    pub async fn invalidate_registration(&self, tenant: &TenantId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.registrations.invalidate(tenant).await;
        // A deactivation must not be undone by an older record standing in.
        self.last_good_registrations.invalidate(tenant).await;
    }

    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.snapshots.invalidate_all();
        self.registrations.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ValueKind;
    use crate::layers::registry::MemoryRegistry;
    use crate::store::MemoryStore;

    fn plain(value: serde_json::Value, version: i64) -> Arc<PlainValue> {
        Arc::new(PlainValue {
            value,
            version: Some(version),
            kind: ValueKind::Plain,
            written: Default::default(),
        })
    }

    fn settings() -> SharedLayerSettings {
        SharedLayerSettings {
            ttl: Duration::from_secs(60),
            stale: StaleIfError::DEFAULT,
            max_tenants: 100,
        }
    }

    struct Fixture {
        parameters: Arc<MemoryStore>,
        registry: Arc<MemoryRegistry>,
        layers: SharedLayers,
        service: ServiceName,
        key: ConfigKey,
    }

    fn fixture() -> Fixture {
        let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
        let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        let registry = Arc::new(MemoryRegistry::default());
        let layers = SharedLayers::new(dynamodb, parameters.clone(), registry.clone(), settings());
        Fixture {
            parameters,
            registry,
            layers,
            service: ServiceName::parse("billing").unwrap(),
            key: ConfigKey::parse("param_config_limits").unwrap(),
        }
    }

    #[tokio::test]
    async fn one_snapshot_serves_every_tenant_until_the_layer_changes() {
        // GIVEN a global default
        let f = fixture();
        f.parameters
            .put_in_layer(&Layer::Global, &f.service, &f.key, plain(json!(1), 1));
        // WHEN it is read twice (as for two tenants)
        for _ in 0..2 {
            let underlay = f
                .layers
                .underlay(StoreKind::ParameterStore, None, &f.service)
                .await
                .unwrap();
            assert_eq!(underlay.values(&f.key)[0].1.value, json!(1));
        }
        // THEN the store was listed once
        assert_eq!(f.parameters.listings(), 1);
        // AND a change to the layer is seen after its invalidation
        f.parameters
            .put_in_layer(&Layer::Global, &f.service, &f.key, plain(json!(2), 2));
        f.layers.invalidate_layer(&Layer::Global, &f.service).await;
        let underlay = f
            .layers
            .underlay(StoreKind::ParameterStore, None, &f.service)
            .await
            .unwrap();
        assert_eq!(underlay.values(&f.key)[0].1.value, json!(2));
        assert_eq!(f.parameters.listings(), 2);
    }

    #[tokio::test]
    async fn a_failing_store_serves_the_last_good_snapshot_marked_stale() {
        let f = fixture();
        f.parameters
            .put_in_layer(&Layer::Global, &f.service, &f.key, plain(json!(1), 1));
        f.layers
            .underlay(StoreKind::ParameterStore, None, &f.service)
            .await
            .unwrap();
        f.layers.invalidate_layer(&Layer::Global, &f.service).await;
        // GIVEN the store fails after one good read
        f.parameters.set_failure(Some(StoreError::Unavailable {
            store: StoreKind::ParameterStore,
            detail: "down".into(),
        }));
        // THEN the last good snapshot answers, marked stale
        let underlay = f
            .layers
            .underlay(StoreKind::ParameterStore, None, &f.service)
            .await
            .unwrap();
        assert!(underlay.stale().is_some());
        assert_eq!(underlay.values(&f.key)[0].1.value, json!(1));
        // AND a layer never read answers the store's error
        let gold = TierName::parse("gold").unwrap();
        assert!(
            f.layers
                .underlay(StoreKind::ParameterStore, Some(&gold), &f.service)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn an_inactive_tenant_is_refused_once_its_registration_changes() {
        let f = fixture();
        let tenant = TenantId::parse("tenant-a").unwrap();
        // GIVEN an unregistered tenant: active, no tier
        assert_eq!(f.layers.active_tier(&tenant).await.unwrap(), None);
        // WHEN it is registered in gold, then deactivated
        let gold = TierName::parse("gold").unwrap();
        let v = f
            .registry
            .put(
                &tenant,
                &TenantRecord {
                    tier: Some(gold.clone()),
                    active: true,
                },
                None,
                "ops",
                1,
            )
            .await
            .unwrap();
        f.layers.invalidate_registration(&tenant).await;
        assert_eq!(f.layers.active_tier(&tenant).await.unwrap(), Some(gold));
        f.registry
            .put(
                &tenant,
                &TenantRecord {
                    tier: None,
                    active: false,
                },
                v,
                "ops",
                2,
            )
            .await
            .unwrap();
        f.layers.invalidate_registration(&tenant).await;
        // THEN its reads are refused (403)
        let refused = f.layers.active_tier(&tenant).await.unwrap_err();
        assert_eq!(refused.status(), 403);
    }
}
