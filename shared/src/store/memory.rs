//! An in-memory store: for tests, benchmarks and trying the service without
//! AWS. It behaves like the real adapters (SecureStrings carry no value unless
//! decrypting), counts calls, and can add latency or fail on demand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{ConfigStore, Listing, MAX_LISTED_ENTRIES};
use crate::domain::{Found, ItemKey, ReadMode};
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::layers::{EntryKey, Layer};
use crate::validate::{ConfigKey, ServiceName, TenantId};

pub struct MemoryStore {
    kind: StoreKind,
    values: Mutex<HashMap<String, Found>>,
    latency: Mutex<Duration>,
    failure: Mutex<Option<StoreError>>,
    gets: AtomicUsize,
    batches: AtomicUsize,
    listings: AtomicUsize,
    /// Versions written through the writer port, per entry, oldest first.
    pub(crate) history: Mutex<HashMap<String, Vec<crate::write::VersionRecord>>>,
    /// Secret texts by (entry, version), for rollback (never returned).
    pub(crate) secret_versions: Mutex<HashMap<(String, i64), String>>,
}

impl MemoryStore {
    pub fn new(kind: StoreKind) -> Self {
        Self {
            kind,
            values: Mutex::new(HashMap::new()),
            latency: Mutex::new(Duration::ZERO),
            failure: Mutex::new(None),
            gets: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            listings: AtomicUsize::new(0),
            history: Mutex::new(HashMap::new()),
            secret_versions: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `found` under `item` (replacing any value).
    pub fn put(&self, item: &ItemKey, found: Found) {
        if let Ok(mut values) = self.values.lock() {
            values.insert(item.cache_key(), found);
        }
    }

    /// Stores a plain value in a shared layer (a tenant's own layer is
    /// [`Self::put`]).
    pub fn put_in_layer(
        &self,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        value: std::sync::Arc<crate::domain::PlainValue>,
    ) {
        if let Ok(mut values) = self.values.lock() {
            values.insert(
                format!("{}:{service}:{key}", layer.parameter_segment()),
                Found::Plain(value),
            );
        }
    }

    /// Stores `found` under an entry of any layer.
    pub(crate) fn put_entry(&self, entry: &EntryKey, found: Found) {
        if let Ok(mut values) = self.values.lock() {
            values.insert(entry.cache_key(), found);
        }
    }

    pub(crate) fn remove_entry(&self, entry: &EntryKey) {
        if let Ok(mut values) = self.values.lock() {
            values.remove(&entry.cache_key());
        }
    }

    pub fn remove(&self, item: &ItemKey) {
        if let Ok(mut values) = self.values.lock() {
            values.remove(&item.cache_key());
        }
    }

    /// Every call waits this long first, so concurrent calls overlap.
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut l) = self.latency.lock() {
            *l = latency;
        }
    }

    /// Every call fails with `failure` until it is set back to `None`.
    pub fn set_failure(&self, failure: Option<StoreError>) {
        if let Ok(mut f) = self.failure.lock() {
            *f = failure;
        }
    }

    /// Single-key reads so far.
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// Batch reads so far.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::SeqCst)
    }

    /// Whole-service listings so far.
    pub fn listings(&self) -> usize {
        self.listings.load(Ordering::SeqCst)
    }

    /// The stored entry (for the writer port).
    pub(crate) fn entry(&self, cache_key: &str) -> Option<Found> {
        self.values.lock().ok()?.get(cache_key).cloned()
    }

    pub(crate) async fn behave(&self) -> Result<(), StoreError> {
        let latency = self.latency.lock().map(|l| *l).unwrap_or_default();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match self.failure.lock().ok().and_then(|f| f.clone()) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn lookup(&self, cache_key: &str, mode: ReadMode) -> Option<Found> {
        let found = self.values.lock().ok()?.get(cache_key).cloned()?;
        Some(match (found, mode) {
            (Found::Secret(_), ReadMode::Plain) => Found::Secret(None),
            (other, _) => other,
        })
    }
}

#[async_trait]
impl ConfigStore for MemoryStore {
    fn kind(&self) -> StoreKind {
        self.kind
    }

    async fn get(&self, item: &ItemKey, mode: ReadMode) -> Result<Option<Found>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        // Snapshot first, answer after the latency: like a real store, the
        // answer reflects the moment the request arrived.
        let found = self.lookup(&item.cache_key(), mode);
        self.behave().await?;
        Ok(found)
    }

    async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
        mode: ReadMode,
    ) -> Result<HashMap<ConfigKey, Found>, StoreError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        let found = keys
            .iter()
            .filter_map(|key| {
                let item = ItemKey::new(tenant.clone(), service.clone(), key.clone());
                self.lookup(&item.cache_key(), mode)
                    .map(|found| (key.clone(), found))
            })
            .collect();
        self.behave().await?;
        Ok(found)
    }

    async fn list_layer(
        &self,
        layer: &Layer,
        service: &ServiceName,
    ) -> Result<Listing, StoreError> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{}:{service}:", layer.parameter_segment());
        let mut entries: Vec<(ConfigKey, Found)> = self
            .values
            .lock()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|(cache_key, found)| {
                        let key = ConfigKey::parse(cache_key.strip_prefix(&prefix)?).ok()?;
                        let found = match found {
                            Found::Secret(_) => Found::Secret(None),
                            other => other.clone(),
                        };
                        Some((key, found))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.behave().await?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let truncated = entries.len() > MAX_LISTED_ENTRIES;
        entries.truncate(MAX_LISTED_ENTRIES);
        Ok(Listing { entries, truncated })
    }
}
