//! Entries and values for in-memory stores.

use std::sync::Arc;

use serde_json::Value;
use tenant_config_shared::StoreKind;
use tenant_config_shared::domain::{Found, PlainValue, ValueKind};
use tenant_config_shared::refresh::change::{ChangeRecord, Subject};
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::proto::Operation;
use tenant_config_shared::refresh::signing::unix_ms_now;
use tenant_config_shared::store::MemoryStore;
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

/// An update of `item` in `store`, as config-refresh would journal it now.
pub fn update_of(item: &ItemKey, store: StoreKind) -> ChangeRecord {
    ChangeRecord {
        subject: Subject::Entry(item.clone()),
        store,
        operation: Operation::Update,
        change_id: format!("c-{}", unix_ms_now()),
        time_unix_ms: unix_ms_now(),
        audit: Default::default(),
        value_type: None,
    }
}

/// A change of `item` to `value` written to `store` (DynamoDB) and
/// journaled, with no push: what a reader learns only by catching up.
pub async fn journal_only(
    store: &MemoryStore,
    journal: &dyn ChangeJournal,
    item: &ItemKey,
    value: Value,
) {
    store.put(item, plain(value));
    journal
        .append(&[update_of(item, StoreKind::DynamoDb)])
        .await
        .expect("the in-memory journal appends");
}
