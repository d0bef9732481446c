//! Entries and values for in-memory stores.

use std::sync::Arc;

use serde_json::Value;
use tenant_config_shared::domain::{Found, PlainValue, ValueKind};
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName, TenantId};

/// A validated entry; panics on an invalid part (a fixture bug).
pub fn item(tenant: &str, service: &str, key: &str) -> ItemKey {
    ItemKey::new(
        TenantId::parse(tenant).expect("fixture tenant is valid"),
        ServiceName::parse(service).expect("fixture service is valid"),
        ConfigKey::parse(key).expect("fixture key is valid"),
    )
}

/// A plain (cacheable) value without a version.
pub fn plain(value: Value) -> Found {
    Found::Plain(Arc::new(PlainValue {
        value,
        version: None,
        kind: ValueKind::Plain,
        written: Default::default(),
    }))
}
