//! What a reader knows of the shared layers: each shared layer's entries of
//! a service (one snapshot per layer, service and store, shared by every
//! tenant that reads them) and each tenant's registration (its tier).
//!
//! A shared change drops one snapshot, not one entry per tenant: the write
//! side does no per-tenant work and a reader's memory grows with shared
//! keys, not with tenants × shared keys. Each tenant's own values stay in
//! the per-tenant caches ([`crate::cache::CachedStore`]); the effective
//! value is merged on read ([`super::merge`]), and a merge is remembered by
//! its inputs ([`MergeMemo`]) so a warm read of a layered key copies
//! nothing.
//!
//! The warm path allocates nothing: caches are keyed by a hash of what
//! they hold, and a hit is checked against the entry's own names.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use smallvec::{SmallVec, smallvec};

use super::Layer;
use super::registry::{TenantRecord, TenantRegistry};
use crate::cache::StaleIfError;
use crate::domain::{Found, PlainValue};
use crate::error::{ConfigError, StoreError};
use crate::kinds::StoreKind;
use crate::rollouts::live::{Applied, LiveRollouts};
use crate::rollouts::record::Version;
use crate::rollouts::store::RolloutStore;
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

#[derive(Clone)]
struct Kept<T> {
    value: T,
    read_at: Instant,
}

/// One shared layer's entries of one service in one store.
#[derive(Debug)]
struct Loaded {
    kind: StoreKind,
    layer: Layer,
    service: ServiceName,
    listing: Listing,
}

impl Loaded {
    fn is(&self, kind: StoreKind, layer: LayerRef<'_>, service: &ServiceName) -> bool {
        self.kind == kind && layer.names(&self.layer) && &self.service == service
    }
}

/// A shared layer named without a copy of its name.
#[derive(Clone, Copy)]
enum LayerRef<'a> {
    Global,
    Tier(&'a TierName),
}

impl LayerRef<'_> {
    fn of(layer: &Layer) -> Option<LayerRef<'_>> {
        match layer {
            Layer::Global => Some(LayerRef::Global),
            Layer::Tier(tier) => Some(LayerRef::Tier(tier)),
            Layer::Tenant(_) => None,
        }
    }

    fn names(self, layer: &Layer) -> bool {
        match (self, layer) {
            (LayerRef::Global, Layer::Global) => true,
            (LayerRef::Tier(a), Layer::Tier(b)) => a == b,
            _ => false,
        }
    }

    fn owned(self) -> Layer {
        match self {
            LayerRef::Global => Layer::Global,
            LayerRef::Tier(tier) => Layer::Tier(tier.clone()),
        }
    }

    fn hash_into(self, hasher: &mut impl Hasher) {
        match self {
            LayerRef::Global => 0u8.hash(hasher),
            LayerRef::Tier(tier) => {
                1u8.hash(hasher);
                tier.as_str().hash(hasher);
            }
        }
    }
}

/// A shared layer's entries of one service, as last read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    loaded: Arc<Loaded>,
    /// Set when the store failed and this is the last good snapshot.
    pub stale: Option<Duration>,
}

impl Snapshot {
    pub fn layer(&self) -> &Layer {
        &self.loaded.layer
    }

    pub fn listing(&self) -> &Listing {
        &self.loaded.listing
    }

    /// The layer's plain value of `key`, if it holds one. A SecureString
    /// written around the API into a shared layer is never served.
    pub fn value(&self, key: &ConfigKey) -> Option<&Arc<PlainValue>> {
        let entries = &self.loaded.listing.entries;
        let at = entries.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        match &entries[at].1 {
            Found::Plain(value) => Some(value),
            Found::Secret(_) => None,
        }
    }
}

/// Each layer's value of one key, bottom to top (at most three: no heap).
pub type LayerValues<'a> = SmallVec<[(&'a Layer, &'a Arc<PlainValue>); 3]>;

/// The layers under a tenant's own, for one service and store.
#[derive(Debug, Clone, Default)]
pub struct Underlay {
    /// Global first, then the tier's (when the tenant has one).
    pub layers: SmallVec<[Snapshot; 2]>,
    /// The live rollouts of these layers' entries of the service, with the
    /// version this tenant reads of each.
    pub rollouts: SmallVec<[Applied; 1]>,
    /// Set when the rollouts are the last good load of a failing store.
    pub rollouts_stale: Option<Duration>,
}

impl Underlay {
    /// Each layer's plain value of `key`, bottom to top: a rollout's staged
    /// value in place of its layer's for a tenant on the new version.
    pub fn values<'a>(&'a self, key: &ConfigKey) -> LayerValues<'a> {
        self.layers
            .iter()
            .filter_map(|snapshot| {
                let layer = snapshot.layer();
                let staged = self
                    .rollouts
                    .iter()
                    .find(|applied| applied.version == Version::New && applied.stages(layer, key));
                match staged {
                    Some(applied) => Some((layer, &applied.live.staged)),
                    None => snapshot.value(key).map(|v| (layer, v)),
                }
            })
            .collect()
    }

    /// The live rollout of `key` under this tenant, if any (at most one per
    /// layer entry; the tier's, above the global one, first).
    pub fn rollout(&self, key: &ConfigKey) -> Option<&Applied> {
        self.rollouts
            .iter()
            .rev()
            .find(|applied| &applied.live.rollout.entry.key == key)
    }

    /// Keys a rollout stages that the layers may not hold yet.
    pub fn staged_keys(&self) -> impl Iterator<Item = &ConfigKey> {
        self.rollouts
            .iter()
            .filter(|applied| applied.version == Version::New)
            .map(|applied| &applied.live.rollout.entry.key)
    }

    /// How long ago the oldest stale snapshot was read, if any is stale.
    pub fn stale(&self) -> Option<Duration> {
        self.layers
            .iter()
            .filter_map(|s| s.stale)
            .chain(self.rollouts_stale)
            .max()
    }
}

/// A tenant's registration as a reader keeps it.
#[derive(Debug)]
struct Registration {
    tenant: TenantId,
    record: TenantRecord,
}

/// Merged values remembered by their inputs: the same layer values (the
/// same `Arc`s, kept alive here so their addresses cannot be reused) merge
/// to the same value, whoever reads them. Invalidation is free: a changed
/// layer is a new `Arc`, hence a new key.
pub struct MergeMemo {
    cache: Cache<[usize; 3], Arc<Memo>>,
}

struct Memo {
    inputs: Vec<Arc<PlainValue>>,
    merged: Arc<PlainValue>,
}

impl MergeMemo {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::new(capacity),
        }
    }

    /// The merge of `inputs` (2 or 3 layers, bottom to top): remembered, or
    /// made by `merge` and remembered.
    pub fn merged(
        &self,
        inputs: &[&Arc<PlainValue>],
        merge: impl FnOnce() -> Option<Arc<PlainValue>>,
    ) -> Option<Arc<PlainValue>> {
        if inputs.len() > 3 {
            return merge();
        }
        let mut key = [0usize; 3];
        for (slot, input) in key.iter_mut().zip(inputs) {
            *slot = Arc::as_ptr(input) as usize;
        }
        if let Some(memo) = self.cache.get(&key)
            && memo.inputs.len() == inputs.len()
            && memo
                .inputs
                .iter()
                .zip(inputs)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return Some(memo.merged.clone());
        }
        let merged = merge()?;
        self.cache.insert(
            key,
            Arc::new(Memo {
                inputs: inputs.iter().map(|v| Arc::clone(v)).collect(),
                merged: merged.clone(),
            }),
        );
        Some(merged)
    }
}

/// The live rollouts as last loaded.
#[derive(Clone)]
struct LiveKept {
    set: Arc<LiveRollouts>,
    read_at: Instant,
    /// Cleared by a rollout's change: the next read loads again (this one
    /// stays the last good).
    fresh: bool,
}

pub struct SharedLayers {
    dynamodb: Arc<dyn ConfigStore>,
    parameters: Arc<dyn ConfigStore>,
    registry: Arc<dyn TenantRegistry>,
    hasher: RandomState,
    snapshots: Cache<u64, Arc<Loaded>>,
    last_good_snapshots: Cache<u64, Kept<Arc<Loaded>>>,
    registrations: Cache<u64, Arc<Registration>>,
    last_good_registrations: Cache<u64, Kept<Arc<Registration>>>,
    memo: MergeMemo,
    /// Bumped by every invalidation: a load that saw it move is returned
    /// but not kept (it may predate the change).
    epoch: AtomicU64,
    stale: StaleIfError,
    /// Per store (DynamoDB: layers and registry; Parameter Store), until
    /// when its last call counts as failed: calls with a last good value
    /// to fall back on are not made again until then.
    failing_until: std::sync::Mutex<[Option<Instant>; 2]>,
    /// Where live rollouts are read (absent: no rollouts are merged).
    rollouts: Option<Arc<dyn RolloutStore>>,
    live: std::sync::RwLock<Option<LiveKept>>,
    ttl: Duration,
}

fn bounded<V: Clone + Send + Sync + 'static>(capacity: u64, ttl: Duration) -> Cache<u64, V> {
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl)
        .build()
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
            hasher: RandomState::new(),
            snapshots: bounded(10_000, ttl),
            last_good_snapshots: bounded(10_000, kept),
            registrations: bounded(settings.max_tenants, ttl),
            last_good_registrations: bounded(settings.max_tenants, kept),
            memo: MergeMemo::new(settings.max_tenants.max(1000) * 4),
            epoch: AtomicU64::new(0),
            stale: settings.stale,
            failing_until: std::sync::Mutex::new([None, None]),
            rollouts: None,
            live: std::sync::RwLock::new(None),
            ttl,
        }
    }

    /// Merges the live rollouts of shared-layer entries into every read.
    pub fn with_rollouts(mut self, store: Arc<dyn RolloutStore>) -> Self {
        self.rollouts = Some(store);
        self
    }

    /// The live rollouts: one load of the live partition per TTL (or after
    /// a rollout changed), shared by every tenant; while DynamoDB fails the
    /// last good load stands in, with its age. Without a rollout store,
    /// none.
    pub async fn live_rollouts(&self) -> Result<(Arc<LiveRollouts>, Option<Duration>), StoreError> {
        let Some(store) = &self.rollouts else {
            return Ok((Arc::default(), None));
        };
        let kept = self.live.read().ok().and_then(|kept| kept.clone());
        if let Some(kept) = &kept
            && kept.fresh
            && kept.read_at.elapsed() < self.ttl
        {
            return Ok((kept.set.clone(), None));
        }
        let last_good =
            kept.filter(|kept| kept.read_at.elapsed() < self.ttl + self.stale.max_stale);
        if let Some(kept) = &last_good
            && self.failing(StoreKind::DynamoDb)
        {
            return Ok((kept.set.clone(), Some(kept.read_at.elapsed())));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        match self
            .call(StoreKind::DynamoDb, last_good.is_some(), store.live())
            .await
        {
            Ok(rollouts) => {
                let set = Arc::new(LiveRollouts::new(rollouts));
                if self.epoch.load(Ordering::Acquire) == epoch
                    && let Ok(mut live) = self.live.write()
                {
                    *live = Some(LiveKept {
                        set: set.clone(),
                        read_at: Instant::now(),
                        fresh: true,
                    });
                }
                // A rollout gone since the last load ended (done: its value
                // is now the layer's; rolled back): this reader may not have
                // heard yet, so it reads the layer again rather than serve
                // its tenants the layer's old value in between. (After the
                // set is kept: dropping a snapshot moves the epoch.)
                if let Some(kept) = &last_good {
                    for ended in kept.set.ended_since(&set) {
                        self.invalidate_layer(&ended.layer, &ended.service).await;
                    }
                }
                Ok((set, None))
            }
            Err(err) => match last_good {
                Some(kept) => {
                    let age = kept.read_at.elapsed();
                    tracing::warn!(error = %err, age_ms = age.as_millis() as u64, "served the last good live rollouts");
                    Ok((kept.set, Some(age)))
                }
                None => Err(err),
            },
        }
    }

    /// A rollout changed (a step, a pause, its end): the next read loads
    /// the live rollouts again.
    pub fn invalidate_rollouts(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut live) = self.live.write()
            && let Some(kept) = live.as_mut()
        {
            kept.fresh = false;
        }
    }

    /// Remembered merges of layer values (see [`MergeMemo`]).
    pub fn memo(&self) -> &MergeMemo {
        &self.memo
    }

    fn snapshot_key(&self, kind: StoreKind, layer: LayerRef<'_>, service: &ServiceName) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        kind.hash(&mut hasher);
        layer.hash_into(&mut hasher);
        service.as_str().hash(&mut hasher);
        hasher.finish()
    }

    fn tenant_key(&self, tenant: &TenantId) -> u64 {
        self.hasher.hash_one(tenant.as_str())
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

    async fn registered(&self, tenant: &TenantId) -> Result<Arc<Registration>, StoreError> {
        let key = self.tenant_key(tenant);
        if let Some(registration) = self.registrations.get(&key)
            && &registration.tenant == tenant
        {
            return Ok(registration);
        }
        let last_good = self
            .last_good_registrations
            .get(&key)
            .filter(|kept| &kept.value.tenant == tenant);
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
                let registration = Arc::new(Registration {
                    tenant: tenant.clone(),
                    record: registered.map_or_else(TenantRecord::unregistered, |r| r.record),
                });
                if self.epoch.load(Ordering::Acquire) == epoch {
                    self.registrations.insert(key, registration.clone());
                    self.last_good_registrations.insert(
                        key,
                        Kept {
                            value: registration.clone(),
                            read_at: Instant::now(),
                        },
                    );
                }
                Ok(registration)
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

    /// The tenant's registration (unregistered: no tier, active). While the
    /// registry fails, the last one read stands in; without one, the error.
    pub async fn registration(&self, tenant: &TenantId) -> Result<TenantRecord, StoreError> {
        Ok(self.registered(tenant).await?.record.clone())
    }

    /// The tenant's tier as the registry holds it now, refusing an inactive
    /// tenant (403): what a write asks, so that a tenant deactivated a
    /// moment ago cannot write while readers' caches converge. It also
    /// refreshes what this process remembers.
    pub async fn current_active_tier(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<TierName>, ConfigError> {
        let record = self
            .registry
            .get(tenant)
            .await?
            .map_or_else(TenantRecord::unregistered, |r| r.record);
        let key = self.tenant_key(tenant);
        let registration = Arc::new(Registration {
            tenant: tenant.clone(),
            record: record.clone(),
        });
        self.registrations.insert(key, registration.clone());
        self.last_good_registrations.insert(
            key,
            Kept {
                value: registration,
                read_at: Instant::now(),
            },
        );
        if !record.active {
            return Err(ConfigError::TenantInactive);
        }
        Ok(record.tier)
    }

    /// The tenant's tier, refusing an inactive tenant (403).
    pub async fn active_tier(&self, tenant: &TenantId) -> Result<Option<TierName>, ConfigError> {
        let registration = self.registered(tenant).await?;
        if !registration.record.active {
            return Err(ConfigError::TenantInactive);
        }
        Ok(registration.record.tier.clone())
    }

    /// The layers under the tenant's own in one store: its tier's and the
    /// global one (403 for an inactive tenant).
    pub async fn underlay_of(
        &self,
        tenant: &TenantId,
        kind: StoreKind,
        service: &ServiceName,
    ) -> Result<Underlay, ConfigError> {
        let registration = self.registered(tenant).await?;
        if !registration.record.active {
            return Err(ConfigError::TenantInactive);
        }
        let tier = registration.record.tier.as_ref();
        if self.rollouts.is_none() {
            return Ok(self.underlay(kind, tier, service).await?);
        }
        // The live rollouts first: a load that finds one ended drops its
        // layer's snapshot, which the underlay must then not be read from.
        let (live, stale) = self.live_rollouts().await?;
        let mut underlay = self.underlay(kind, tier, service).await?;
        if !live.is_empty() {
            underlay.rollouts = live.applying(tenant, tier, service);
            underlay.rollouts_stale = stale;
        }
        Ok(underlay)
    }

    /// One shared layer's entries of a service in one store.
    pub async fn snapshot(
        &self,
        kind: StoreKind,
        layer: &Layer,
        service: &ServiceName,
    ) -> Result<Snapshot, StoreError> {
        let layer = LayerRef::of(layer).ok_or_else(|| StoreError::Unavailable {
            store: kind,
            detail: "a tenant's own layer has no shared snapshot".to_owned(),
        })?;
        self.snapshot_of(kind, layer, service).await
    }

    /// A snapshot in memory (not expired), if there is one.
    fn cached(
        &self,
        kind: StoreKind,
        layer: LayerRef<'_>,
        service: &ServiceName,
    ) -> Option<Snapshot> {
        let loaded = self
            .snapshots
            .get(&self.snapshot_key(kind, layer, service))?;
        loaded.is(kind, layer, service).then_some(Snapshot {
            loaded,
            stale: None,
        })
    }

    async fn snapshot_of(
        &self,
        kind: StoreKind,
        layer: LayerRef<'_>,
        service: &ServiceName,
    ) -> Result<Snapshot, StoreError> {
        let key = self.snapshot_key(kind, layer, service);
        if let Some(loaded) = self.snapshots.get(&key)
            && loaded.is(kind, layer, service)
        {
            return Ok(Snapshot {
                loaded,
                stale: None,
            });
        }
        let last_good = self
            .last_good_snapshots
            .get(&key)
            .filter(|kept| kept.value.is(kind, layer, service));
        if let Some(kept) = &last_good
            && self.failing(kind)
        {
            return Ok(Snapshot {
                loaded: kept.value.clone(),
                stale: Some(kept.read_at.elapsed()),
            });
        }
        let owned = layer.owned();
        let epoch = self.epoch.load(Ordering::Acquire);
        let read = self.call(
            kind,
            last_good.is_some(),
            self.store(kind).list_layer(&owned, service),
        );
        match read.await {
            Ok(listing) => {
                if listing.truncated {
                    tracing::error!(layer = %owned, %service, store = kind.as_str(), "a shared layer holds more keys than one listing: the rest are not served");
                }
                let loaded = Arc::new(Loaded {
                    kind,
                    layer: owned,
                    service: service.clone(),
                    listing,
                });
                if self.epoch.load(Ordering::Acquire) == epoch {
                    self.snapshots.insert(key, loaded.clone());
                    self.last_good_snapshots.insert(
                        key,
                        Kept {
                            value: loaded.clone(),
                            read_at: Instant::now(),
                        },
                    );
                }
                Ok(Snapshot {
                    loaded,
                    stale: None,
                })
            }
            Err(err) => match last_good {
                Some(kept) => {
                    let age = kept.read_at.elapsed();
                    tracing::warn!(layer = %kept.value.layer, %service, store = kind.as_str(), error = %err, age_ms = age.as_millis() as u64, "served the last good shared layer");
                    Ok(Snapshot {
                        loaded: kept.value,
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
        // Warm: both in memory, answered without a future in between.
        let global = self.cached(kind, LayerRef::Global, service);
        let tiered = tier.map(|tier| self.cached(kind, LayerRef::Tier(tier), service));
        let layers = match (global, tier, tiered) {
            (Some(global), None, _) => smallvec![global],
            (Some(global), Some(_), Some(Some(tiered))) => smallvec![global, tiered],
            (_, None, _) => smallvec![self.snapshot_of(kind, LayerRef::Global, service).await?],
            (_, Some(tier), _) => {
                let (global, tiered) = tokio::try_join!(
                    self.snapshot_of(kind, LayerRef::Global, service),
                    self.snapshot_of(kind, LayerRef::Tier(tier), service)
                )?;
                smallvec![global, tiered]
            }
        };
        Ok(Underlay {
            layers,
            ..Underlay::default()
        })
    }

    /// A shared layer's entry changed: drop the layer's snapshots of the
    /// service (the last good one stays, for a failing store).
    pub async fn invalidate_layer(&self, layer: &Layer, service: &ServiceName) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let Some(layer) = LayerRef::of(layer) else {
            return;
        };
        for kind in [StoreKind::DynamoDb, StoreKind::ParameterStore] {
            self.snapshots
                .invalidate(&self.snapshot_key(kind, layer, service));
        }
    }

    /// A tenant's registration changed (its tier, or whether it is active).
    pub async fn invalidate_registration(&self, tenant: &TenantId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let key = self.tenant_key(tenant);
        self.registrations.invalidate(&key);
        // A deactivation must not be undone by an older record standing in.
        self.last_good_registrations.invalidate(&key);
    }

    pub fn invalidate_all(&self) {
        self.invalidate_rollouts();
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

    #[test]
    fn a_merge_is_remembered_by_its_inputs_and_a_changed_layer_merges_again() {
        let memo = MergeMemo::new(100);
        let (global, tier) = (plain(json!({"a": 1, "b": 1}), 1), plain(json!({"b": 2}), 1));
        let merges = std::cell::Cell::new(0);
        let merge = |inputs: &[&Arc<PlainValue>]| {
            merges.set(merges.get() + 1);
            let values: Vec<&serde_json::Value> = inputs.iter().map(|v| &v.value).collect();
            Some(plain(crate::layers::merge::merge_values(&values)?, 1))
        };
        // GIVEN two reads of the same layer values
        let first = memo
            .merged(&[&global, &tier], || merge(&[&global, &tier]))
            .unwrap();
        let second = memo
            .merged(&[&global, &tier], || merge(&[&global, &tier]))
            .unwrap();
        // THEN they merged once and share one value
        assert_eq!(merges.get(), 1);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.value, json!({"a": 1, "b": 2}));
        // WHEN a layer changes (a new value, so a new Arc) THEN it merges again
        let changed = plain(json!({"b": 3}), 2);
        let third = memo
            .merged(&[&global, &changed], || merge(&[&global, &changed]))
            .unwrap();
        assert_eq!(
            (merges.get(), third.value.clone()),
            (2, json!({"a": 1, "b": 3}))
        );
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
