//! The store port: how configuration is read, whatever holds it.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};

use crate::domain::{Found, ItemKey, ReadMode};
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::layers::Layer;
use crate::validate::{ConfigKey, ServiceName, TenantId};

pub mod dynamodb;
pub mod memory;
pub mod ssm;

pub use dynamodb::DynamoDbStore;
pub use memory::MemoryStore;
pub use ssm::ParameterStore;

/// Most entries one store lists for one tenant's service (the whole-service
/// read); beyond it the listing says `truncated`.
pub const MAX_LISTED_ENTRIES: usize = 200;

/// Every entry of one tenant's service in one store, in key order (plain mode:
/// SecureStrings carry no value).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub entries: Vec<(ConfigKey, Found)>,
    /// More than [`MAX_LISTED_ENTRIES`] exist; only the first are listed.
    pub truncated: bool,
}

/// One key's values across tenants ([`ConfigStore::get_across`]).
#[derive(Debug, Clone, Default)]
pub struct Across {
    /// Tenants absent hold no value of the key.
    pub found: HashMap<TenantId, Found>,
    /// Store calls made.
    pub calls: usize,
}

/// A backing store of tenant configuration.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    fn kind(&self) -> StoreKind;

    /// Reads one entry. `Ok(None)` means it does not exist.
    async fn get(&self, item: &ItemKey, mode: ReadMode) -> Result<Option<Found>, StoreError>;

    /// Reads several keys of one tenant and service in as few calls as the
    /// store allows. Keys absent from the map do not exist.
    async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
        mode: ReadMode,
    ) -> Result<HashMap<ConfigKey, Found>, StoreError>;

    /// Every entry of one layer's service, never decrypted, at most
    /// [`MAX_LISTED_ENTRIES`]; entries whose key is not a valid key are
    /// skipped. Pages through the store as needed. A shared layer is read
    /// with the process's own credentials, never a tenant's.
    async fn list_layer(&self, layer: &Layer, service: &ServiceName)
    -> Result<Listing, StoreError>;

    /// One key of many tenants, plain (a blast radius reads the value of
    /// every tenant that holds one), in as few calls as the store and the
    /// credentials allow.
    async fn get_across(
        &self,
        tenants: &[TenantId],
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Across, StoreError> {
        one_by_one(self, tenants, service, key).await
    }

    /// Every entry of one tenant's service (its own layer).
    async fn list(&self, tenant: &TenantId, service: &ServiceName) -> Result<Listing, StoreError> {
        self.list_layer(&Layer::Tenant(tenant.clone()), service)
            .await
    }
}

/// Error codes AWS services use when they shed load; those become 503 so
/// callers back off, everything else is a 502.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "TooManyUpdates",
];

/// Classifies an SDK failure by its service error code.
pub(crate) fn classify_sdk_error(
    store: StoreKind,
    code: Option<&str>,
    detail: String,
) -> StoreError {
    match code {
        Some(code) if THROTTLING_CODES.contains(&code) => StoreError::Throttled { store, detail },
        _ => StoreError::Unavailable { store, detail },
    }
}

/// Reads in flight at once when a key of many tenants is read one tenant
/// at a time.
const ONE_BY_ONE_IN_FLIGHT: usize = 16;

/// [`ConfigStore::get_across`] one tenant at a time (a few in flight): what
/// a store does that cannot read across tenants in one call, or whose
/// clients carry one tenant's credentials each.
pub(crate) async fn one_by_one<S: ConfigStore + ?Sized>(
    store: &S,
    tenants: &[TenantId],
    service: &ServiceName,
    key: &ConfigKey,
) -> Result<Across, StoreError> {
    // Collected first: a stream holding the closure would not be Send for
    // every lifetime the async trait needs.
    let reads: Vec<_> = tenants
        .iter()
        .map(|tenant| async move {
            let item = ItemKey::new(tenant.clone(), service.clone(), key.clone());
            Ok::<_, StoreError>(
                store
                    .get(&item, ReadMode::Plain)
                    .await?
                    .map(|found| (tenant.clone(), found)),
            )
        })
        .collect();
    let found = stream::iter(reads)
        .buffer_unordered(ONE_BY_ONE_IN_FLIGHT)
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await?;
    Ok(Across {
        found,
        calls: tenants.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_become_throttled_and_others_unavailable() {
        let throttled = classify_sdk_error(
            StoreKind::DynamoDb,
            Some("ProvisionedThroughputExceededException"),
            "d".into(),
        );
        assert!(matches!(throttled, StoreError::Throttled { .. }));
        let other = classify_sdk_error(
            StoreKind::ParameterStore,
            Some("AccessDeniedException"),
            "d".into(),
        );
        assert!(matches!(other, StoreError::Unavailable { .. }));
        let dispatch = classify_sdk_error(StoreKind::ParameterStore, None, "timeout".into());
        assert!(matches!(dispatch, StoreError::Unavailable { .. }));
    }
}
