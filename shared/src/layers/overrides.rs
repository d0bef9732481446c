//! The override index: which tenants hold their own value of a key, so a
//! blast radius reads the tenants that override a key, not every tenant.
//!
//! config-refresh keeps it: every change of a tenant's own entry (from
//! either store, made through tenant-config or not) marks the tenant as
//! holding the key or not. Marks carry the change's time and a mark only
//! replaces an older one, so retried or reordered deliveries cannot undo a
//! later change; on a tie (the sources' times are whole seconds) holding
//! wins, the safe side. A removal stays as a tombstone (`present = false`),
//! read and filtered by every listing of the key (not expired yet).
//!
//! Items live in the config table: `pk = OVERRIDES#{service}#{key}`,
//! `sk = {tenant}`. The index follows the change feed, so it lags a write
//! by about as long as a push (a blast radius right after a tenant's write
//! may not count it yet); it starts empty on a stack that held tenant values
//! before it existed, until an operator rebuilds it once ([`super::reindex`],
//! `tenant-config-admin layer reindex-overrides`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::Listed;
use crate::domain::ItemKey;
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::store::dynamodb::{PARTITION_KEY, SORT_KEY, conditional_write, sdk_error};
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// Partition key prefix of the index.
pub const OVERRIDES_PREFIX: &str = "OVERRIDES#";
const PRESENT: &str = "present";
const AT: &str = "at";

/// The index's partition of one key.
pub fn overrides_partition(service: &ServiceName, key: &ConfigKey) -> String {
    format!("{OVERRIDES_PREFIX}{service}#{key}")
}

#[async_trait]
pub trait OverrideIndex: Send + Sync {
    /// The tenants holding their own value of the key.
    async fn tenants(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Listed<TenantId>, StoreError>;

    /// Marks the tenant as holding the key (`present`) or not, as of a
    /// change at `at_ms`; an older mark never replaces a newer one.
    async fn mark(&self, item: &ItemKey, present: bool, at_ms: i64) -> Result<(), StoreError>;
}

/// The index in the config table.
pub struct DynamoDbOverrides {
    client: Client,
    table: String,
}

impl DynamoDbOverrides {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl OverrideIndex for DynamoDbOverrides {
    async fn tenants(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Listed<TenantId>, StoreError> {
        let mut tenants = Vec::new();
        let mut start = None;
        let mut calls = 0;
        loop {
            calls += 1;
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .filter_expression("#present = :yes")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#present", PRESENT)
                .expression_attribute_values(
                    ":pk",
                    AttributeValue::S(overrides_partition(service, key)),
                )
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in page.items() {
                match item.get(SORT_KEY) {
                    Some(AttributeValue::S(tenant)) => match TenantId::parse(tenant) {
                        Ok(tenant) => tenants.push(tenant),
                        Err(err) => {
                            tracing::warn!(%tenant, error = %err, "override index names no valid tenant; skipped")
                        }
                    },
                    other => {
                        tracing::warn!(?other, "override index item without a tenant; skipped")
                    }
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(Listed {
                    items: tenants,
                    calls,
                });
            }
        }
    }

    async fn mark(&self, item: &ItemKey, present: bool, at_ms: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                PARTITION_KEY,
                AttributeValue::S(overrides_partition(&item.service, &item.key)),
            )
            .item(SORT_KEY, AttributeValue::S(item.tenant.to_string()))
            .item(PRESENT, AttributeValue::Bool(present))
            .item(AT, AttributeValue::N(at_ms.to_string()))
            // Change times are whole seconds at the source: on a tie the
            // tenant is marked as holding the key (reading a value that is
            // gone costs one read; missing one lets a change land unweighed).
            .condition_expression(if present {
                "attribute_not_exists(#at) OR #at <= :at"
            } else {
                "attribute_not_exists(#at) OR #at < :at"
            })
            .expression_attribute_names("#at", AT)
            .expression_attribute_values(":at", AttributeValue::N(at_ms.to_string()))
            .send()
            .await;
        // A refused condition: a later change's mark is already there.
        conditional_write(result).map(|_| ())
    }
}

/// Per (service, key), each tenant's mark: present, and as of when.
type Marks = HashMap<(String, String), HashMap<TenantId, (bool, i64)>>;

/// The index in memory (tests, benchmarks).
#[derive(Default)]
pub struct MemoryOverrides {
    marks: Mutex<Marks>,
    calls: AtomicUsize,
}

impl MemoryOverrides {
    /// Calls made so far (tests count what a blast radius reads).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable {
        store: StoreKind::DynamoDb,
        detail: "override index poisoned".to_owned(),
    }
}

#[async_trait]
impl OverrideIndex for MemoryOverrides {
    async fn tenants(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Listed<TenantId>, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let marks = self.marks.lock().map_err(|_| poisoned())?;
        let mut tenants: Vec<TenantId> = marks
            .get(&(service.to_string(), key.to_string()))
            .map(|m| {
                m.iter()
                    .filter(|(_, (present, _))| *present)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default();
        tenants.sort();
        Ok(Listed {
            items: tenants,
            calls: 1,
        })
    }

    async fn mark(&self, item: &ItemKey, present: bool, at_ms: i64) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut marks = self.marks.lock().map_err(|_| poisoned())?;
        let key = marks
            .entry((item.service.to_string(), item.key.to_string()))
            .or_default();
        match key.get(&item.tenant) {
            Some((_, at)) if *at > at_ms || (*at == at_ms && !present) => {}
            _ => {
                key.insert(item.tenant.clone(), (present, at_ms));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_late_delivery_of_an_older_change_cannot_undo_a_newer_one() {
        let index = MemoryOverrides::default();
        let item = ItemKey::new(
            TenantId::parse("tenant-a").unwrap(),
            ServiceName::parse("billing").unwrap(),
            ConfigKey::parse("tenant_config_limits").unwrap(),
        );
        // GIVEN the tenant deleted its value (t=20) after writing it (t=10)
        index.mark(&item, false, 20).await.unwrap();
        // WHEN the write's mark arrives late
        index.mark(&item, true, 10).await.unwrap();
        // THEN the tenant is not counted as overriding the key
        assert!(
            index
                .tenants(&item.service, &item.key)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        // AND a newer write counts it again, and a removal in the same
        // (whole-second) time does not hide it
        index.mark(&item, true, 30).await.unwrap();
        index.mark(&item, false, 30).await.unwrap();
        assert_eq!(
            index.tenants(&item.service, &item.key).await.unwrap().items,
            vec![item.tenant.clone()]
        );
    }
}
