//! The read use cases: one key, a batch of keys, one secret.
//!
//! Shared by every edge (HTTP Lambda, gRPC agent). Inputs are already
//! validated types; the tenant comes from a verified identity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CachedStore, Lookup};
use crate::catch_up::{CatchUp, Invalidate};
use crate::domain::{Changed, Found, ItemKey, PlainValue, ReadMode, SecretValue};
use crate::error::ConfigError;
use crate::kinds::StoreKind;
use crate::layers::Layer;
use crate::layers::merge::merge_values;
use crate::layers::view::{MergeMemo, SharedLayers, Underlay};
use crate::refresh::change::Subject;
use crate::rollouts::live::Applied;
use crate::routing::KeyRouter;
use crate::validate::{ConfigKey, ServiceName, TenantId, TierName};
use crate::warm_start::{FIRST_READ_DEADLINE, LastKnownGood, RememberedService};
use crate::watch::{ChangeFeed, Notice};

/// Most keys one batch read may name.
pub const MAX_BATCH_KEYS: usize = 50;

/// A non-secret value and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub source: StoreKind,
    pub value: Arc<PlainValue>,
    /// Set when the store failed and this is its last good value: how long
    /// ago it was read.
    pub stale: Option<Duration>,
}

/// Where an effective value came from: each layer that holds the key,
/// bottom to top, with its version and writer, and for each leaf of the
/// value (a JSON pointer) the layer that set it.
#[derive(Debug, Clone)]
pub struct Explained {
    pub entry: Entry,
    pub layers: Vec<(Layer, Arc<PlainValue>)>,
    pub leaves: std::collections::BTreeMap<String, Layer>,
    /// The live rollout of the key under this tenant, and the version the
    /// tenant reads of it.
    pub rollout: Option<Applied>,
}

/// An effective value with what decided it: the top layer holding the key
/// and the key's live rollout under this tenant. What an OpenFeature
/// evaluation answers, without [`Explained`]'s per-leaf work.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub entry: Entry,
    /// The top layer that holds the key (the tenant's own when it has a value).
    pub top: Option<Layer>,
    pub rollout: Option<Applied>,
}

/// Every non-secret key of a service resolved (see [`Resolved`]), in key
/// order, with the SecureStrings by name and whether a store had more.
#[derive(Debug, Clone, Default)]
pub struct ResolvedService {
    pub flags: Vec<(ConfigKey, Resolved)>,
    pub sensitive: Vec<ConfigKey>,
    pub truncated: bool,
}

/// A decrypted secret and where it came from.
#[derive(Debug, Clone)]
pub struct SecretEntry {
    pub source: StoreKind,
    pub value: SecretValue,
}

/// Result of a batch read: found values in request order, then missing keys.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub values: Vec<(ConfigKey, Entry)>,
    pub missing: Vec<ConfigKey>,
}

/// Result of a whole-service read: every non-secret value in key order, the
/// SecureStrings by name only, and whether a store had more than it lists.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    pub values: Vec<(ConfigKey, Entry)>,
    pub sensitive: Vec<ConfigKey>,
    pub truncated: bool,
}

#[derive(Clone)]
pub struct ConfigReads {
    router: KeyRouter,
    dynamodb: CachedStore,
    parameters: CachedStore,
    /// Converges the caches on the change journal before cached reads.
    catch_up: Option<Arc<CatchUp>>,
    /// The global and tier layers under each tenant's own (absent: every
    /// value is the tenant's own, as before layers).
    layers: Option<Arc<SharedLayers>>,
    /// Told what this reader learned changed (the agent's watchers).
    feed: Option<Arc<ChangeFeed>>,
    /// What this reader served, for an agent's warm start: recorded from
    /// fresh answers, answered (stale) when the stores fail.
    last_known_good: Option<Arc<LastKnownGood>>,
}

/// A tenant's own value, and how long ago it was read when stale.
type OwnValue = (Arc<PlainValue>, Option<Duration>);

/// The effective value of one key: the values of the layers that hold it,
/// bottom to top, merged (see [`crate::layers::merge`]). One layer's value
/// is served as it is, without a copy; the version is the top layer's.
fn effective(
    source: StoreKind,
    below: &[(&Layer, &Arc<PlainValue>)],
    own: Option<OwnValue>,
    underlay_stale: Option<Duration>,
    memo: Option<&MergeMemo>,
) -> Option<Entry> {
    let (own, own_stale) = match own {
        Some((value, stale)) => (Some(value), stale),
        None => (None, None),
    };
    let stale = own_stale.max(underlay_stale);
    let value = match (below, own) {
        ([], None) => return None,
        ([], Some(own)) => own,
        ([(_, only)], None) => Arc::clone(only),
        (below, own) => {
            let mut inputs: smallvec::SmallVec<[&Arc<PlainValue>; 3]> =
                below.iter().map(|(_, v)| *v).collect();
            if let Some(own) = &own {
                inputs.push(own);
            }
            let merge = || {
                let values: smallvec::SmallVec<[&serde_json::Value; 3]> =
                    inputs.iter().map(|v| &v.value).collect();
                let top = inputs.last()?;
                // Each layer's writer is what explain answers; the merge has none.
                Some(Arc::new(PlainValue {
                    value: merge_values(&values)?,
                    version: top.version,
                    kind: top.kind,
                    written: Default::default(),
                }))
            };
            match memo {
                Some(memo) => memo.merged(&inputs, merge)?,
                None => merge()?,
            }
        }
    };
    Some(Entry {
        source,
        value,
        stale,
    })
}

/// The top layer holding a key: the tenant's own when it has a value, else
/// the highest of `below`.
fn top_layer<'a>(
    own_layer: &'a Layer,
    has_own: bool,
    below: &[(&'a Layer, &Arc<PlainValue>)],
) -> Option<&'a Layer> {
    if has_own {
        Some(own_layer)
    } else {
        below.last().map(|(layer, _)| *layer)
    }
}

/// What the tenant's own layer holds, for [`effective`]: `Err` for a
/// SecureString (served by the secure route only).
fn own_value(lookup: Lookup) -> Result<Option<OwnValue>, ()> {
    match lookup {
        Lookup::Plain(value) => Ok(Some((value, None))),
        Lookup::Stale { value, age } => Ok(Some((value, Some(age)))),
        Lookup::Missing => Ok(None),
        Lookup::Secret(_) => Err(()),
    }
}

/// Whether `error` is a store (or its credentials, or the registry)
/// failing, when a last-known-good value may stand in.
fn stores_failed(error: &ConfigError) -> bool {
    matches!(error.status(), 502 | 503)
        && !matches!(
            error,
            ConfigError::Unauthenticated(_) | ConfigError::MembershipUnavailable(_)
        )
        && !matches!(error, ConfigError::Store(store) if store.is_denial())
}

fn warn_served_from_snapshot(error: &ConfigError, values: usize) {
    tracing::warn!(%error, values, "the stores failed: answered from the warm-start snapshot, marked stale");
}

impl ConfigReads {
    pub fn new(router: KeyRouter, dynamodb: CachedStore, parameters: CachedStore) -> Self {
        let settled = dynamodb.loads_settled().clone();
        Self {
            router,
            dynamodb,
            parameters: parameters.with_loads_settled(settled),
            catch_up: None,
            layers: None,
            feed: None,
            last_known_good: None,
        }
    }

    /// Records every value answered fresh into `values`, and answers from
    /// it, stale, when the stores fail with nothing else to fall back on
    /// (see [`crate::warm_start`]).
    pub fn with_last_known_good(mut self, values: Arc<LastKnownGood>) -> Self {
        self.last_known_good = Some(values);
        self
    }

    /// Settles a single read with the last-known-good values: records what
    /// it answered, forgets what it found gone, and stands in when the
    /// stores failed.
    fn remembered(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
        read: Result<Entry, ConfigError>,
    ) -> Result<Entry, ConfigError> {
        let Some(kept) = &self.last_known_good else {
            return read;
        };
        match &read {
            Ok(entry) => kept.record(tenant, service, key, entry),
            Err(ConfigError::NotFound { .. } | ConfigError::SensitiveValue { .. }) => {
                kept.forget(tenant, service, key);
            }
            Err(ConfigError::TenantInactive) => kept.forget_tenant(tenant),
            Err(error) if stores_failed(error) => {
                if let Some(entry) = kept.lookup(tenant, service, key) {
                    warn_served_from_snapshot(error, 1);
                    return Ok(entry);
                }
            }
            Err(_) => {}
        }
        read
    }

    /// Tells `feed` of every change this reader learns (after dropping what
    /// it makes stale, so a watcher's read sees it).
    pub fn with_change_feed(mut self, feed: Arc<ChangeFeed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Signalled whenever a load of either store ends (see
    /// [`CachedStore::loads_settled`]).
    pub fn loads_settled(&self) -> &Arc<tokio::sync::Notify> {
        self.dynamodb.loads_settled()
    }

    /// Whether a load of `key` (of `tenant`'s `service`) is in flight in its
    /// store's cache.
    pub fn loading(&self, tenant: &TenantId, service: &ServiceName, key: &ConfigKey) -> bool {
        self.router.route(key).is_ok_and(|source| {
            self.store(source)
                .loading(&ItemKey::new(tenant.clone(), service.clone(), key.clone()))
        })
    }

    /// The feed in use, if any.
    pub fn change_feed(&self) -> Option<&Arc<ChangeFeed>> {
        self.feed.as_ref()
    }

    /// Catches up with the change journal now if the interval has passed
    /// (what a read does first), for a watcher while nobody reads.
    pub async fn catch_up_if_due(&self) {
        self.converge().await;
    }

    /// Serves effective values: the global and tier layers under each
    /// tenant's own.
    pub fn with_layers(mut self, layers: Arc<SharedLayers>) -> Self {
        self.layers = Some(layers);
        self
    }

    fn memo(&self) -> Option<&MergeMemo> {
        self.layers.as_deref().map(SharedLayers::memo)
    }

    /// The shared layers in use, if any.
    pub fn layers(&self) -> Option<&Arc<SharedLayers>> {
        self.layers.as_ref()
    }

    /// The tenant's tier when layers are on (an inactive tenant: 403).
    async fn tier(&self, tenant: &TenantId) -> Result<Option<TierName>, ConfigError> {
        match &self.layers {
            Some(layers) => layers.active_tier(tenant).await,
            None => Ok(None),
        }
    }

    /// The layers under the tenant's own in one store (none without
    /// layers): its registration, then the global and tier snapshots. Run
    /// beside the tenant's own lookup, so a failing store costs one probe
    /// deadline, not two in a row.
    async fn underlay(
        &self,
        tenant: &TenantId,
        kind: StoreKind,
        service: &ServiceName,
    ) -> Result<Underlay, ConfigError> {
        match &self.layers {
            Some(layers) => layers.underlay_of(tenant, kind, service).await,
            None => Ok(Underlay::default()),
        }
    }

    /// Catches up with the change journal (at most once per interval) before
    /// cached reads.
    pub fn with_catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = Some(Arc::new(catch_up));
        self
    }

    /// The catch-up in use, if any (for its counters).
    pub fn catch_up(&self) -> Option<&CatchUp> {
        self.catch_up.as_deref()
    }

    /// The catch-up in use, shared (a change feed's follower drives it).
    pub fn catch_up_shared(&self) -> Option<Arc<CatchUp>> {
        self.catch_up.clone()
    }

    async fn converge(&self) {
        if let Some(catch_up) = &self.catch_up {
            catch_up.maybe_catch_up(self).await;
        }
    }

    fn store(&self, kind: StoreKind) -> &CachedStore {
        match kind {
            StoreKind::DynamoDb => &self.dynamodb,
            StoreKind::ParameterStore => &self.parameters,
        }
    }

    /// Which store a key lives in (400 for an unknown prefix).
    pub fn route(&self, key: &ConfigKey) -> Result<StoreKind, ConfigError> {
        self.router.route(key)
    }

    /// One key's own (cached) value and the layers under it, read side by
    /// side after catching up: what [`Self::get`] and [`Self::explain`]
    /// merge. A SecureString of the tenant answers 409.
    async fn lookup_layers(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<(StoreKind, Option<OwnValue>, Underlay), ConfigError> {
        let source = self.router.route(key)?;
        let item = ItemKey::new(tenant.clone(), service.clone(), key.clone());
        self.converge().await;
        let (own, underlay) = tokio::join!(
            self.store(source).get(&item, ReadMode::Plain),
            self.underlay(tenant, source, service)
        );
        // An inactive tenant is refused whatever its own lookup said.
        let underlay = underlay?;
        let own = own_value(own?).map_err(|()| ConfigError::SensitiveValue {
            keys: vec![key.to_string()],
        })?;
        Ok((source, own, underlay))
    }

    /// One non-secret value. A SecureString answers 409.
    pub async fn get(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Entry, ConfigError> {
        let first = self.first_read(
            tenant,
            service,
            key,
            |entry| entry,
            |this, t, s, k| async move { this.get_live(&t, &s, &k).await },
        );
        if let Some(answer) = first.await {
            return answer;
        }
        self.get_live(tenant, service, key).await
    }

    async fn get_live(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Entry, ConfigError> {
        let read = self.read_one(tenant, service, key).await;
        self.remembered(tenant, service, key, read)
    }

    /// A just-started agent's first read of a key its snapshot holds (none
    /// otherwise): the stores' answer if `live` gives it within
    /// [`FIRST_READ_DEADLINE`], else the snapshot's (stale, made an answer by
    /// `from_snapshot`) while the read goes on to fill the caches. One such
    /// read per key at a time: the others answer the snapshot at once.
    async fn first_read<T, Live>(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
        from_snapshot: impl FnOnce(Entry) -> T,
        live: impl FnOnce(ConfigReads, TenantId, ServiceName, ConfigKey) -> Live,
    ) -> Option<Result<T, ConfigError>>
    where
        T: Send + 'static,
        Live: Future<Output = Result<T, ConfigError>> + Send + 'static,
    {
        let kept = self.last_known_good.as_ref()?;
        let remembered = from_snapshot(kept.unconfirmed(tenant, service, key)?);
        if !kept.begin_probe(tenant, service, key) {
            return Some(Ok(remembered));
        }
        let read = live(self.clone(), tenant.clone(), service.clone(), key.clone());
        let (kept, t, s, k) = (
            Arc::clone(kept),
            tenant.clone(),
            service.clone(),
            key.clone(),
        );
        let mut live = tokio::spawn(async move {
            let answer = read.await;
            kept.end_probe(&t, &s, &k);
            answer
        });
        Some(
            match tokio::time::timeout(FIRST_READ_DEADLINE, &mut live).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => {
                    tracing::info!(
                        deadline_ms = FIRST_READ_DEADLINE.as_millis() as u64,
                        "the stores did not answer a first read in time: answered from the warm-start snapshot, marked stale"
                    );
                    Ok(remembered)
                }
            },
        )
    }

    async fn read_one(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Entry, ConfigError> {
        let (source, own, underlay) = self.lookup_layers(tenant, service, key).await?;
        effective(
            source,
            &underlay.values(key),
            own,
            underlay.stale(),
            self.memo(),
        )
        .ok_or_else(|| not_found(service, key))
    }

    /// One value with the layer and rollout that decided it (see [`Resolved`]).
    pub async fn resolve(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Resolved, ConfigError> {
        // From the snapshot: which layer and rollout decided it is not kept.
        let from_snapshot = |entry| Resolved {
            entry,
            top: None,
            rollout: None,
        };
        let first = self.first_read(
            tenant,
            service,
            key,
            from_snapshot,
            |this, t, s, k| async move { this.resolve_live(&t, &s, &k).await },
        );
        if let Some(answer) = first.await {
            return answer;
        }
        self.resolve_live(tenant, service, key).await
    }

    async fn resolve_live(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Resolved, ConfigError> {
        let read = async {
            let (source, own, underlay) = self.lookup_layers(tenant, service, key).await?;
            let below = underlay.values(key);
            let own_layer = Layer::Tenant(tenant.clone());
            let top = top_layer(&own_layer, own.is_some(), &below).cloned();
            let entry = effective(source, &below, own, underlay.stale(), self.memo())
                .ok_or_else(|| not_found(service, key))?;
            Ok(Resolved {
                entry,
                top,
                rollout: underlay.rollout(key).cloned(),
            })
        };
        let read: Result<Resolved, ConfigError> = read.await;
        match read {
            Ok(resolved) => {
                // Recorded as a plain read would be.
                self.remembered(tenant, service, key, Ok(resolved.entry.clone()))?;
                Ok(resolved)
            }
            // From the snapshot: which layer and rollout decided it is not kept.
            Err(error) => self
                .remembered(tenant, service, key, Err(error))
                .map(|entry| Resolved {
                    entry,
                    top: None,
                    rollout: None,
                }),
        }
    }

    /// One value with where each part of it came from (see [`Explained`]).
    /// Read like [`Self::get`]; a SecureString answers 409 here too.
    pub async fn explain(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Explained, ConfigError> {
        let (source, own, underlay) = self.lookup_layers(tenant, service, key).await?;
        let below = underlay.values(key);
        let mut layers: Vec<(Layer, Arc<PlainValue>)> = below
            .iter()
            .map(|(layer, value)| ((*layer).clone(), Arc::clone(value)))
            .collect();
        if let Some((value, _)) = &own {
            layers.push((Layer::Tenant(tenant.clone()), value.clone()));
        }
        let entry = effective(source, &below, own, underlay.stale(), self.memo())
            .ok_or_else(|| not_found(service, key))?;
        let values: Vec<&serde_json::Value> = layers.iter().map(|(_, v)| &v.value).collect();
        let leaves: std::collections::BTreeMap<String, Layer> =
            crate::layers::merge::merge(&values)
                .map(|merged| {
                    merged
                        .leaves
                        .into_iter()
                        .map(|(pointer, at)| (pointer, layers[at].0.clone()))
                        .collect()
                })
                .unwrap_or_default();
        // A shared layer is shown only as far as it reaches this tenant (what
        // an upper layer removed or replaced stays out), and without its
        // writer: a platform administrator's identity is not the tenant's.
        let layers = layers
            .into_iter()
            .map(|(layer, value)| {
                if !layer.is_shared() {
                    return (layer, value);
                }
                let pointers = leaves
                    .iter()
                    .filter(|(_, at)| **at == layer)
                    .map(|(pointer, _)| pointer.as_str());
                let shown = PlainValue {
                    value: crate::layers::merge::project(&entry.value.value, pointers),
                    version: value.version,
                    kind: value.kind,
                    written: crate::domain::WrittenBy {
                        actor: None,
                        at_ms: value.written.at_ms,
                    },
                };
                (layer, Arc::new(shown))
            })
            .collect();
        Ok(Explained {
            entry,
            layers,
            leaves,
            rollout: underlay.rollout(key).cloned(),
        })
    }

    /// One value read with decryption and no caching. Plain values are served
    /// too, so a client may read any key uncached here.
    pub async fn get_secure(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<SecretEntry, ConfigError> {
        let source = self.router.route(key)?;
        let item = ItemKey::new(tenant.clone(), service.clone(), key.clone());
        // Refuses an inactive tenant before anything is decrypted.
        self.tier(tenant).await?;
        let own = match self.store(source).get(&item, ReadMode::Decrypt).await? {
            // A tenant's secret is its own: shared layers hold no secrets,
            // so nothing merges into it.
            Lookup::Secret(Some(value)) => return Ok(SecretEntry { source, value }),
            Lookup::Plain(plain) => Some((plain, None)),
            // Decrypting reads never use the cache, so never answer stale.
            Lookup::Stale { .. } | Lookup::Secret(None) | Lookup::Missing => None,
        };
        let underlay = self.underlay(tenant, source, service).await?;
        let entry = effective(source, &underlay.values(key), own, None, self.memo())
            .ok_or_else(|| not_found(service, key))?;
        Ok(SecretEntry {
            source,
            value: SecretValue::new(entry.value.value.clone(), entry.value.version),
        })
    }

    /// Several non-secret values of one service. Keys are de-duplicated in
    /// request order; every key is validated and routed before any store is
    /// called. Any SecureString among them answers 409 naming those keys.
    pub async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
    ) -> Result<Batch, ConfigError> {
        let read = self.read_many(tenant, service, keys).await;
        let Some(kept) = &self.last_known_good else {
            return read;
        };
        match read {
            Ok(batch) => {
                for (key, entry) in &batch.values {
                    kept.record(tenant, service, key, entry);
                }
                for key in &batch.missing {
                    kept.forget(tenant, service, key);
                }
                Ok(batch)
            }
            Err(ConfigError::SensitiveValue { keys: secret }) => {
                for key in secret.iter().filter_map(|k| ConfigKey::parse(k).ok()) {
                    kept.forget(tenant, service, &key);
                }
                Err(ConfigError::SensitiveValue { keys: secret })
            }
            Err(ConfigError::TenantInactive) => {
                kept.forget_tenant(tenant);
                Err(ConfigError::TenantInactive)
            }
            Err(error) if stores_failed(&error) => {
                // Every key from the snapshot, or the error.
                let mut seen = std::collections::HashSet::new();
                let mut batch = Batch::default();
                for key in keys.iter().filter(|key| seen.insert(*key)) {
                    match kept.lookup(tenant, service, key) {
                        Some(entry) => batch.values.push((key.clone(), entry)),
                        None => return Err(error),
                    }
                }
                warn_served_from_snapshot(&error, batch.values.len());
                Ok(batch)
            }
            Err(error) => Err(error),
        }
    }

    async fn read_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
    ) -> Result<Batch, ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError::BadRequest("name at least one key".to_owned()));
        }
        if keys.len() > MAX_BATCH_KEYS {
            return Err(ConfigError::BadRequest(format!(
                "at most {MAX_BATCH_KEYS} keys per request"
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let mut ordered = Vec::with_capacity(keys.len());
        let mut by_store: HashMap<StoreKind, Vec<ConfigKey>> = HashMap::new();
        for key in keys {
            if seen.insert(key) {
                let kind = self.router.route(key)?;
                ordered.push((key, kind));
                by_store.entry(kind).or_default().push(key.clone());
            }
        }
        self.converge().await;
        let read = |kind: StoreKind| {
            let keys = by_store.get(&kind).cloned().unwrap_or_default();
            async move {
                if keys.is_empty() {
                    return Ok((HashMap::new(), Underlay::default()));
                }
                let (own, underlay) = tokio::join!(
                    self.store(kind).get_many(tenant, service, &keys),
                    self.underlay(tenant, kind, service)
                );
                let underlay = underlay?;
                Ok::<_, ConfigError>((own?, underlay))
            }
        };
        let ((mut from_dynamodb, dynamodb_underlay), (mut from_parameters, parameters_underlay)) =
            tokio::try_join!(read(StoreKind::DynamoDb), read(StoreKind::ParameterStore))?;

        let mut batch = Batch::default();
        let mut sensitive = Vec::new();
        for (key, kind) in ordered {
            let (lookup, underlay) = match kind {
                StoreKind::DynamoDb => (from_dynamodb.remove(key), &dynamodb_underlay),
                StoreKind::ParameterStore => (from_parameters.remove(key), &parameters_underlay),
            };
            let Ok(own) = own_value(lookup.unwrap_or(Lookup::Missing)) else {
                sensitive.push(key.to_string());
                continue;
            };
            match effective(
                kind,
                &underlay.values(key),
                own,
                underlay.stale(),
                self.memo(),
            ) {
                Some(entry) => batch.values.push((key.clone(), entry)),
                None => batch.missing.push(key.clone()),
            }
        }
        if !sensitive.is_empty() {
            return Err(ConfigError::SensitiveValue { keys: sensitive });
        }
        Ok(batch)
    }

    /// Every key of one tenant's service from both stores (one listing per
    /// store, cached like single values). SecureStrings are named in
    /// `sensitive` and never read; an entry only counts in the store its key
    /// routes to.
    pub async fn get_service(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
    ) -> Result<ServiceConfig, ConfigError> {
        let mut config = ServiceConfig::default();
        let listed = self
            .each_of_service(tenant, service, |key, entry, _, _| {
                config.values.push((key.clone(), entry));
            })
            .await;
        match listed {
            Ok(names) => (config.sensitive, config.truncated) = names,
            Err(error) => {
                return self
                    .remembered_service(tenant, service, error)
                    .map(|remembered| ServiceConfig {
                        values: remembered.values,
                        sensitive: remembered.sensitive,
                        // Only keys read alone: say so.
                        truncated: !remembered.complete,
                    });
            }
        }
        config.values.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(kept) = &self.last_known_good {
            let values: Vec<(&ConfigKey, &Entry)> =
                config.values.iter().map(|(k, e)| (k, e)).collect();
            kept.record_service(
                tenant,
                service,
                &values,
                &config.sensitive,
                !config.truncated,
            );
        }
        Ok(config)
    }

    /// A whole service from the last-known-good values when the stores
    /// failed, or the error.
    fn remembered_service(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        error: ConfigError,
    ) -> Result<RememberedService, ConfigError> {
        match &self.last_known_good {
            Some(kept) if matches!(error, ConfigError::TenantInactive) => {
                kept.forget_tenant(tenant);
                Err(error)
            }
            Some(kept) if stores_failed(&error) => match kept.service(tenant, service) {
                Some(remembered) => {
                    warn_served_from_snapshot(&error, remembered.values.len());
                    Ok(remembered)
                }
                None => Err(error),
            },
            _ => Err(error),
        }
    }

    /// Every key of one tenant's service resolved, as [`Self::get_service`]
    /// reads them: each with its top layer and live rollout.
    pub async fn resolve_service(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
    ) -> Result<ResolvedService, ConfigError> {
        let mut resolved = ResolvedService::default();
        let listed = self
            .each_of_service(tenant, service, |key, entry, top, underlay| {
                resolved.flags.push((
                    key.clone(),
                    Resolved {
                        entry,
                        top: top.cloned(),
                        rollout: underlay.rollout(key).cloned(),
                    },
                ));
            })
            .await;
        match listed {
            Ok(names) => (resolved.sensitive, resolved.truncated) = names,
            Err(error) => {
                let remembered = self.remembered_service(tenant, service, error)?;
                return Ok(ResolvedService {
                    flags: remembered
                        .values
                        .into_iter()
                        .map(|(key, entry)| {
                            (
                                key,
                                Resolved {
                                    entry,
                                    top: None,
                                    rollout: None,
                                },
                            )
                        })
                        .collect(),
                    sensitive: remembered.sensitive,
                    truncated: !remembered.complete,
                });
            }
        }
        resolved.flags.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(kept) = &self.last_known_good {
            let values: Vec<(&ConfigKey, &Entry)> = resolved
                .flags
                .iter()
                .map(|(k, flag)| (k, &flag.entry))
                .collect();
            kept.record_service(
                tenant,
                service,
                &values,
                &resolved.sensitive,
                !resolved.truncated,
            );
        }
        Ok(resolved)
    }

    /// Reads both stores' listings of a service and its layers, and calls
    /// `each` with every non-secret key's effective value, its top layer
    /// and the underlay it was merged from.
    /// Answers the SecureStrings' names, sorted, and whether a listing was
    /// truncated.
    async fn each_of_service(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        mut each: impl FnMut(&ConfigKey, Entry, Option<&Layer>, &Underlay),
    ) -> Result<(Vec<ConfigKey>, bool), ConfigError> {
        self.converge().await;
        let own_layer = Layer::Tenant(tenant.clone());
        let (from_dynamodb, from_parameters, dynamodb_underlay, parameters_underlay) = tokio::try_join!(
            async { Ok::<_, ConfigError>(self.dynamodb.list(tenant, service).await?) },
            async { Ok::<_, ConfigError>(self.parameters.list(tenant, service).await?) },
            self.underlay(tenant, StoreKind::DynamoDb, service),
            self.underlay(tenant, StoreKind::ParameterStore, service),
        )?;
        let (mut sensitive, mut truncated) = (Vec::new(), false);
        for (kind, listing, underlay) in [
            (StoreKind::DynamoDb, &from_dynamodb, &dynamodb_underlay),
            (
                StoreKind::ParameterStore,
                &from_parameters,
                &parameters_underlay,
            ),
        ] {
            truncated |= listing.truncated;
            // Every key any layer holds, once, in key order.
            let mut keys: std::collections::BTreeSet<&ConfigKey> =
                listing.entries.iter().map(|(k, _)| k).collect();
            for snapshot in &underlay.layers {
                truncated |= snapshot.listing().truncated;
                keys.extend(snapshot.listing().entries.iter().map(|(k, _)| k));
            }
            keys.extend(underlay.staged_keys());
            for key in keys {
                if self.router.route(key).ok() != Some(kind) {
                    continue;
                }
                let own = listing
                    .entries
                    .binary_search_by(|(k, _)| k.cmp(key))
                    .ok()
                    .map(|at| &listing.entries[at].1);
                let own = match own {
                    Some(Found::Secret(_)) => {
                        sensitive.push(key.clone());
                        continue;
                    }
                    Some(Found::Plain(value)) => Some((value.clone(), None)),
                    None => None,
                };
                let below = underlay.values(key);
                let top = top_layer(&own_layer, own.is_some(), &below);
                if let Some(entry) = effective(kind, &below, own, underlay.stale(), self.memo()) {
                    each(key, entry, top, underlay);
                }
            }
        }
        sensitive.sort();
        Ok((sensitive, truncated))
    }

    /// Drops one cached entry (used by push invalidation and catch-up). The
    /// last good value survives unless the change was a delete or of type.
    pub async fn invalidate(&self, item: &ItemKey, change: Changed) -> Result<(), ConfigError> {
        let kind = self.router.route(&item.key)?;
        self.store(kind).invalidate(item, change).await;
        Ok(())
    }

    /// Drops what a change makes stale: a tenant's entry, a shared
    /// layer's snapshot of the service (every tenant reads the change on its
    /// next read, with no per-tenant work), or a tenant's registration.
    pub async fn invalidate_subject(
        &self,
        subject: &Subject,
        change: Changed,
    ) -> Result<(), ConfigError> {
        self.drop_subject(subject, change).await?;
        if let Some(feed) = &self.feed {
            feed.publish(Notice::Changed(subject.clone()));
        }
        Ok(())
    }

    async fn drop_subject(&self, subject: &Subject, change: Changed) -> Result<(), ConfigError> {
        match (subject, &self.layers) {
            (Subject::Entry(item), _) => self.invalidate(item, change).await,
            (Subject::Shared { layer, service, .. }, Some(layers)) => {
                layers.invalidate_layer(layer, service).await;
                Ok(())
            }
            (Subject::Registration(tenant), Some(layers)) => {
                layers.invalidate_registration(tenant).await;
                Ok(())
            }
            // The layer too: a rollout that finished wrote its value there
            // first, and its tenants must read it there, not flip back.
            (Subject::Rollout(entry), Some(layers)) => {
                layers.invalidate_layer(&entry.layer, &entry.service).await;
                layers.invalidate_rollouts();
                Ok(())
            }
            // Without layers nothing of a shared layer is cached.
            (Subject::Shared { .. } | Subject::Registration(_) | Subject::Rollout(_), None) => {
                Ok(())
            }
        }
    }

    /// Drops every cached entry of both stores, and the shared layers.
    pub fn invalidate_all(&self) {
        self.dynamodb.invalidate_all();
        self.parameters.invalidate_all();
        if let Some(layers) = &self.layers {
            layers.invalidate_all();
        }
        if let Some(feed) = &self.feed {
            feed.publish(Notice::Everything);
        }
    }
}

impl Invalidate for ConfigReads {
    fn invalidate(
        &self,
        subject: &Subject,
        change: Changed,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send {
        ConfigReads::invalidate_subject(self, subject, change)
    }

    fn invalidate_all(&self) {
        ConfigReads::invalidate_all(self)
    }
}

fn not_found(service: &ServiceName, key: &ConfigKey) -> ConfigError {
    ConfigError::NotFound {
        service: service.to_string(),
        key: key.to_string(),
    }
}
