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
use crate::routing::KeyRouter;
use crate::validate::{ConfigKey, ServiceName, TenantId};

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

impl Entry {
    fn from_lookup(source: StoreKind, lookup: Lookup) -> Option<Self> {
        match lookup {
            Lookup::Plain(value) => Some(Entry {
                source,
                value,
                stale: None,
            }),
            Lookup::Stale { value, age } => Some(Entry {
                source,
                value,
                stale: Some(age),
            }),
            Lookup::Secret(_) | Lookup::Missing => None,
        }
    }
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
}

impl ConfigReads {
    pub fn new(router: KeyRouter, dynamodb: CachedStore, parameters: CachedStore) -> Self {
        Self {
            router,
            dynamodb,
            parameters,
            catch_up: None,
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

    /// One non-secret value. A SecureString answers 409.
    pub async fn get(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Entry, ConfigError> {
        let source = self.router.route(key)?;
        let item = ItemKey::new(tenant.clone(), service.clone(), key.clone());
        self.converge().await;
        match self.store(source).get(&item, ReadMode::Plain).await? {
            Lookup::Secret(_) => Err(ConfigError::SensitiveValue {
                keys: vec![key.to_string()],
            }),
            Lookup::Missing => Err(not_found(service, key)),
            found => Entry::from_lookup(source, found).ok_or_else(|| not_found(service, key)),
        }
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
        match self.store(source).get(&item, ReadMode::Decrypt).await? {
            Lookup::Secret(Some(value)) => Ok(SecretEntry { source, value }),
            Lookup::Plain(plain) => Ok(SecretEntry {
                source,
                value: SecretValue::new(plain.value.clone(), plain.version),
            }),
            // Decrypting reads never use the cache, so never answer stale.
            Lookup::Stale { .. } | Lookup::Secret(None) | Lookup::Missing => {
                Err(not_found(service, key))
            }
        }
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
                    return Ok(HashMap::new());
                }
                self.store(kind).get_many(tenant, service, &keys).await
            }
        };
        let (mut from_dynamodb, mut from_parameters) =
            tokio::try_join!(read(StoreKind::DynamoDb), read(StoreKind::ParameterStore))?;

        let mut batch = Batch::default();
        let mut sensitive = Vec::new();
        for (key, kind) in ordered {
            let lookup = match kind {
                StoreKind::DynamoDb => from_dynamodb.remove(key),
                StoreKind::ParameterStore => from_parameters.remove(key),
            };
            match lookup {
                Some(Lookup::Secret(_)) => sensitive.push(key.to_string()),
                Some(Lookup::Missing) | None => batch.missing.push(key.clone()),
                Some(found) => match Entry::from_lookup(kind, found) {
                    Some(entry) => batch.values.push((key.clone(), entry)),
                    None => batch.missing.push(key.clone()),
                },
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
        self.converge().await;
        let (from_dynamodb, from_parameters) = tokio::try_join!(
            self.dynamodb.list(tenant, service),
            self.parameters.list(tenant, service)
        )?;
        let mut config = ServiceConfig::default();
        for (kind, listing) in [
            (StoreKind::DynamoDb, &from_dynamodb),
            (StoreKind::ParameterStore, &from_parameters),
        ] {
            config.truncated |= listing.truncated;
            for (key, found) in &listing.entries {
                if self.router.route(key).ok() != Some(kind) {
                    continue;
                }
                match found {
                    Found::Plain(value) => config.values.push((
                        key.clone(),
                        Entry {
                            source: kind,
                            value: value.clone(),
                            stale: None,
                        },
                    )),
                    Found::Secret(_) => config.sensitive.push(key.clone()),
                }
            }
        }
        config.values.sort_by(|a, b| a.0.cmp(&b.0));
        config.sensitive.sort();
        Ok(config)
    }

    /// Drops one cached entry (used by push invalidation and catch-up). The
    /// last good value survives unless the change was a delete or of type.
    pub async fn invalidate(&self, item: &ItemKey, change: Changed) -> Result<(), ConfigError> {
        let kind = self.router.route(&item.key)?;
        self.store(kind).invalidate(item, change).await;
        Ok(())
    }

    /// Drops every cached entry of both stores.
    pub fn invalidate_all(&self) {
        self.dynamodb.invalidate_all();
        self.parameters.invalidate_all();
    }
}

impl Invalidate for ConfigReads {
    fn invalidate(
        &self,
        item: &ItemKey,
        change: Changed,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send {
        ConfigReads::invalidate(self, item, change)
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
