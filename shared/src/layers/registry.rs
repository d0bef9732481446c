//! The tenant registry: each tenant's tier and whether it is active, in the
//! config table's reserved partition `REGISTRY` (`sk = TENANT#{id}`),
//! changed by platform administrators only.
//!
//! A reader needs a tenant's tier before it reads the tenant's layers, so
//! the registry sits in a partition of its own that config-api and the
//! agents may read with their own roles (as they read `SCHEMA` and
//! `GRANTS`), never inside a tenant's partition. A tenant that was never
//! registered has no tier and is active: a stack that registers nobody
//! reads exactly as before layers.
//!
//! Writes are versioned like values: `put` lands only on the version the
//! writer read (`None`: the tenant is not registered yet), so two platform
//! administrators cannot overwrite each other unknowingly.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::Listed;
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::store::dynamodb::{
    PARTITION_KEY, SORT_KEY, VERSION_ATTRIBUTE, conditional_write, sdk_error,
};
use crate::validate::{TenantId, TierName};

/// The reserved partition holding the registry.
pub const REGISTRY_PARTITION: &str = "REGISTRY";
const TIER: &str = "tier";
const ACTIVE: &str = "active";
const UPDATED_BY: &str = "updated_by";
const UPDATED_AT: &str = "updated_at";

/// What the registry says about one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tier whose layer sits between the global layer and the tenant's.
    pub tier: Option<TierName>,
    /// An inactive tenant's reads and its administrators' writes are
    /// refused (403 `tenant_inactive`).
    pub active: bool,
}

impl TenantRecord {
    /// A tenant never registered: no tier, active.
    pub fn unregistered() -> Self {
        Self {
            tier: None,
            active: true,
        }
    }
}

/// A stored record with its version and who wrote it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub record: TenantRecord,
    pub version: i64,
    pub updated_by: Option<String>,
    pub updated_at_ms: Option<i64>,
}

/// Where tenants' records are kept.
#[async_trait]
pub trait TenantRegistry: Send + Sync {
    /// The tenant's record, `None` when it was never registered.
    async fn get(&self, tenant: &TenantId) -> Result<Option<Registered>, StoreError>;

    /// Stores `record` if the stored version is `expected` (`None`: not
    /// registered yet). `Ok(Some(version))` with the new version, `Ok(None)`
    /// when another write got there first.
    async fn put(
        &self,
        tenant: &TenantId,
        record: &TenantRecord,
        expected: Option<i64>,
        actor: &str,
        at_ms: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Every registered tenant's record (a blast radius's first read).
    async fn list(&self) -> Result<Listed<(TenantId, TenantRecord)>, StoreError>;
}

/// The version a write from `expected` stores: 1 for a first record.
/// `None` for `i64::MAX`: no stored version can be it (each write adds one
/// from 1), so naming it names a version that is not there, a lost race; both
/// registries answer it alike.
fn version_after(expected: Option<i64>) -> Option<i64> {
    expected.map_or(Some(1), |v| v.checked_add(1))
}

/// Sort key of a tenant's record.
pub fn registry_sort_key(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

fn registry_key(tenant: &TenantId) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(REGISTRY_PARTITION.to_owned()),
        ),
        (
            SORT_KEY.to_owned(),
            AttributeValue::S(registry_sort_key(tenant)),
        ),
    ])
}

/// The registry in the config table.
#[derive(Clone)]
pub struct DynamoDbRegistry {
    client: Client,
    table: String,
}

impl DynamoDbRegistry {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn malformed(detail: String) -> StoreError {
    StoreError::Unavailable {
        store: StoreKind::DynamoDb,
        detail,
    }
}

fn registered(item: &HashMap<String, AttributeValue>) -> Result<Registered, StoreError> {
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    let tier = match item.get(TIER) {
        Some(AttributeValue::S(tier)) => Some(
            TierName::parse(tier).map_err(|e| malformed(format!("registry tier '{tier}': {e}")))?,
        ),
        None | Some(AttributeValue::Null(_)) => None,
        Some(other) => return Err(malformed(format!("registry tier {other:?}"))),
    };
    let active = match item.get(ACTIVE) {
        Some(AttributeValue::Bool(active)) => *active,
        other => return Err(malformed(format!("registry 'active' {other:?}"))),
    };
    Ok(Registered {
        record: TenantRecord { tier, active },
        version: number(VERSION_ATTRIBUTE)
            .ok_or_else(|| malformed("registry record without a version".to_owned()))?,
        updated_by: match item.get(UPDATED_BY) {
            Some(AttributeValue::S(actor)) => Some(actor.clone()),
            _ => None,
        },
        updated_at_ms: number(UPDATED_AT),
    })
}

#[async_trait]
impl TenantRegistry for DynamoDbRegistry {
    async fn get(&self, tenant: &TenantId) -> Result<Option<Registered>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(registry_key(tenant)))
            // The version a writer reads must be the latest, or its
            // conditional write fails for no reason; readers cache records.
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        output.item.as_ref().map(registered).transpose()
    }

    async fn put(
        &self,
        tenant: &TenantId,
        record: &TenantRecord,
        expected: Option<i64>,
        actor: &str,
        at_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let Some(version) = version_after(expected) else {
            return Ok(None);
        };
        let mut item = registry_key(tenant);
        if let Some(tier) = &record.tier {
            item.insert(TIER.to_owned(), AttributeValue::S(tier.to_string()));
        }
        item.insert(ACTIVE.to_owned(), AttributeValue::Bool(record.active));
        item.insert(
            VERSION_ATTRIBUTE.to_owned(),
            AttributeValue::N(version.to_string()),
        );
        item.insert(UPDATED_BY.to_owned(), AttributeValue::S(actor.to_owned()));
        item.insert(UPDATED_AT.to_owned(), AttributeValue::N(at_ms.to_string()));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = match expected {
            None => request
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY),
            Some(v) => request
                .condition_expression("#ver = :expected")
                .expression_attribute_names("#ver", VERSION_ATTRIBUTE)
                .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
        };
        let landed = conditional_write(request.send().await)?;
        Ok(landed.then_some(version))
    }

    async fn list(&self) -> Result<Listed<(TenantId, TenantRecord)>, StoreError> {
        let mut listed = Listed::default();
        let mut start = None;
        loop {
            listed.calls += 1;
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(
                    ":pk",
                    AttributeValue::S(REGISTRY_PARTITION.to_owned()),
                )
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in page.items() {
                let tenant = match item.get(SORT_KEY) {
                    Some(AttributeValue::S(sk)) => sk
                        .strip_prefix("TENANT#")
                        .and_then(|t| TenantId::parse(t).ok()),
                    _ => None,
                };
                let Some(tenant) = tenant else {
                    tracing::warn!(sk = ?item.get(SORT_KEY), "registry item names no valid tenant; skipped");
                    continue;
                };
                listed.items.push((tenant, registered(item)?.record));
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(listed);
            }
        }
    }
}

/// The registry in memory, for tests.
#[derive(Default)]
pub struct MemoryRegistry {
    records: Mutex<HashMap<TenantId, Registered>>,
}

#[async_trait]
impl TenantRegistry for MemoryRegistry {
    async fn get(&self, tenant: &TenantId) -> Result<Option<Registered>, StoreError> {
        Ok(self
            .records
            .lock()
            .map_err(|_| malformed("registry poisoned".to_owned()))?
            .get(tenant)
            .cloned())
    }

    async fn put(
        &self,
        tenant: &TenantId,
        record: &TenantRecord,
        expected: Option<i64>,
        actor: &str,
        at_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| malformed("registry poisoned".to_owned()))?;
        let current = records.get(tenant).map(|r| r.version);
        if current != expected {
            return Ok(None);
        }
        let Some(version) = version_after(expected) else {
            return Ok(None);
        };
        records.insert(
            tenant.clone(),
            Registered {
                record: record.clone(),
                version,
                updated_by: Some(actor.to_owned()),
                updated_at_ms: Some(at_ms),
            },
        );
        Ok(Some(version))
    }
    async fn list(&self) -> Result<Listed<(TenantId, TenantRecord)>, StoreError> {
        let records = self
            .records
            .lock()
            .map_err(|_| malformed("registry poisoned".to_owned()))?;
        Ok(Listed {
            items: records
                .iter()
                .map(|(tenant, r)| (tenant.clone(), r.record.clone()))
                .collect(),
            calls: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn a_record_lands_only_on_the_version_its_writer_read() {
        let registry = MemoryRegistry::default();
        let gold = TenantRecord {
            tier: Some(TierName::parse("gold").unwrap()),
            active: true,
        };
        // GIVEN tenant A not registered
        assert_eq!(registry.get(&tenant("a")).await.unwrap(), None);
        // WHEN two administrators register it from "not registered"
        let first = registry
            .put(&tenant("a"), &gold, None, "p1", 1)
            .await
            .unwrap();
        let second = registry
            .put(&tenant("a"), &TenantRecord::unregistered(), None, "p2", 2)
            .await
            .unwrap();
        // THEN one lands (version 1) and the other is told it lost
        assert_eq!((first, second), (Some(1), None));
        let stored = registry.get(&tenant("a")).await.unwrap().unwrap();
        assert_eq!(stored.record, gold);
        assert_eq!(stored.updated_by.as_deref(), Some("p1"));
        // AND the next change names version 1
        assert_eq!(
            registry
                .put(
                    &tenant("a"),
                    &TenantRecord::unregistered(),
                    Some(1),
                    "p2",
                    3
                )
                .await
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            registry
                .put(&tenant("a"), &gold, Some(i64::MAX), "p2", 4)
                .await
                .unwrap(),
            None
        );
    }
}
