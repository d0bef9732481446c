//! The store port: how configuration is read, whatever holds it.

use std::collections::HashMap;

use async_trait::async_trait;

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
