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
//!
//! Beside each record, in the same transaction, the registry keeps what a
//! blast radius needs without listing every tenant: the active tenants of
//! each tier as members of their own partition (`TIER#{tier}`, `TIER#_none`
//! for no tier; `sk = TENANT#{id}`), and one item counting the active
//! tenants per tier and the inactive ones (`pk = TIERS`, `sk = COUNTS`).
//! Neither is in the `REGISTRY` partition, so the stream filter delivers
//! only records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, TransactWriteItem, Update, WriteRequest,
};
use futures::StreamExt;

use super::Listed;
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::store::dynamodb::{
    BATCH_GET_KEYS, PARTITION_KEY, SORT_KEY, VERSION_ATTRIBUTE, batch_get_items, malformed,
    sdk_error,
};
use crate::validate::{TenantId, TierName};

/// The reserved partition holding the registry.
pub const REGISTRY_PARTITION: &str = "REGISTRY";
const TIER: &str = "tier";
const ACTIVE: &str = "active";
const UPDATED_BY: &str = "updated_by";
const UPDATED_AT: &str = "updated_at";
/// The partition of the per-tier counts, and its one item's sort key.
pub const COUNTS_PARTITION: &str = "TIERS";
const COUNTS_SORT_KEY: &str = "COUNTS";
/// Tenants are counted under `active:{tier}` or `inactive:{tier}` (an
/// empty tier: none).
const INACTIVE_BUCKET_PREFIX: &str = "inactive:";
const ACTIVE_BUCKET_PREFIX: &str = "active:";
/// Record batches read at once.
const BATCHES_IN_FLIGHT: usize = 4;

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

    /// Several tenants' records (those registered), in as few calls as the
    /// store allows.
    async fn get_many(
        &self,
        tenants: &[TenantId],
    ) -> Result<Listed<(TenantId, Registered)>, StoreError>;

    /// How many tenants are registered active in each tier, and inactive.
    async fn counts(&self) -> Result<TierCounts, StoreError>;

    /// The first `limit` active tenants of a tier (`None`: no tier), by id.
    async fn members(
        &self,
        tier: Option<&TierName>,
        limit: usize,
    ) -> Result<Listed<TenantId>, StoreError>;
}

/// Registered tenants per tier: what a blast radius counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierCounts {
    /// Active tenants per tier (`None`: registered without one).
    pub active: BTreeMap<Option<TierName>, u64>,
    /// Inactive ones, by the tier they are registered in.
    pub inactive: BTreeMap<Option<TierName>, u64>,
}

/// The count a record falls in.
fn bucket(record: &TenantRecord) -> String {
    let prefix = if record.active {
        ACTIVE_BUCKET_PREFIX
    } else {
        INACTIVE_BUCKET_PREFIX
    };
    match &record.tier {
        Some(tier) => format!("{prefix}{tier}"),
        None => prefix.to_owned(),
    }
}

/// The partition a tier's active members are listed in.
pub fn members_partition(tier: Option<&TierName>) -> String {
    match tier {
        Some(tier) => format!("TIER#{tier}"),
        None => "TIER#_none".to_owned(),
    }
}

/// The version a write from `expected` stores: 1 for a first record.
/// `None` for `i64::MAX`: no stored version can be it (each write adds one
/// from 1), so naming it names a version that is not there, a lost race; both
/// registries answer it alike.
pub(crate) fn version_after(expected: Option<i64>) -> Option<i64> {
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

fn key_of(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(pk)),
        (SORT_KEY.to_owned(), AttributeValue::S(sk)),
    ])
}

fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| malformed(format!("registry request: {e}")))
}

impl DynamoDbRegistry {
    /// One batch of at most [`BATCH_GET_KEYS`] records.
    async fn get_batch(
        &self,
        chunk: &[TenantId],
    ) -> Result<Listed<(TenantId, Registered)>, StoreError> {
        let request = built(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.iter().map(registry_key).collect()))
                .consistent_read(true)
                .build(),
        )?;
        let (items, calls) = batch_get_items(&self.client, &self.table, request).await?;
        let mut listed = Listed {
            items: Vec::with_capacity(items.len()),
            calls,
        };
        for item in &items {
            let tenant = match item.get(SORT_KEY) {
                Some(AttributeValue::S(sk)) => sk
                    .strip_prefix("TENANT#")
                    .and_then(|t| TenantId::parse(t).ok()),
                _ => None,
            };
            if let Some(tenant) = tenant {
                listed.items.push((tenant, registered(item)?));
            }
        }
        Ok(listed)
    }

    /// The record item a write stores.
    fn record_item(
        tenant: &TenantId,
        record: &TenantRecord,
        version: i64,
        actor: &str,
        at_ms: i64,
    ) -> HashMap<String, AttributeValue> {
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
        item
    }

    fn member_key(
        tenant: &TenantId,
        record: &TenantRecord,
    ) -> Option<HashMap<String, AttributeValue>> {
        record.active.then(|| {
            key_of(
                members_partition(record.tier.as_ref()),
                registry_sort_key(tenant),
            )
        })
    }

    fn counts_key() -> HashMap<String, AttributeValue> {
        key_of(COUNTS_PARTITION.to_owned(), COUNTS_SORT_KEY.to_owned())
    }

    /// Registers many tenants none of which is registered yet (onboarding
    /// existing tenants at once): records and tier members in batches, then
    /// one change of the counts. Unlike [`TenantRegistry::put`] it is not
    /// one transaction per tenant, and it checks nothing: a tenant already
    /// registered would be overwritten and counted twice.
    pub async fn import(
        &self,
        records: &[(TenantId, TenantRecord)],
        actor: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(records.len() * 2);
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for (tenant, record) in records {
            writes.push(Self::record_item(tenant, record, 1, actor, at_ms));
            if let Some(member) = Self::member_key(tenant, record) {
                writes.push(member);
            }
            *counts.entry(bucket(record)).or_default() += 1;
        }
        for chunk in writes.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    Ok(WriteRequest::builder()
                        .put_request(built(
                            aws_sdk_dynamodb::types::PutRequest::builder()
                                .set_item(Some(item.clone()))
                                .build(),
                        )?)
                        .build())
                })
                .collect::<Result<_, StoreError>>()?;
            while !requests.is_empty() {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        if !counts.is_empty() {
            self.add_counts(&counts).await?;
        }
        Ok(())
    }

    async fn add_counts(&self, counts: &BTreeMap<String, i64>) -> Result<(), StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::counts_key()));
        let mut adds = Vec::new();
        for (i, (bucket, n)) in counts.iter().enumerate() {
            adds.push(format!("#b{i} :n{i}"));
            request = request
                .expression_attribute_names(format!("#b{i}"), bucket)
                .expression_attribute_values(format!(":n{i}"), AttributeValue::N(n.to_string()));
        }
        request
            .update_expression(format!("ADD {}", adds.join(", ")))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
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
        // The record it replaces says which member and count to move.
        let previous = self.get(tenant).await?;
        if previous.as_ref().map(|r| r.version) != expected {
            return Ok(None);
        }
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::record_item(
                tenant, record, version, actor, at_ms,
            )));
        put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY),
            Some(v) => put
                .condition_expression("#ver = :expected")
                .expression_attribute_names("#ver", VERSION_ATTRIBUTE)
                .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
        };
        let mut items = vec![
            TransactWriteItem::builder()
                .put(built(put.build())?)
                .build(),
        ];
        let old_record = previous.map(|p| p.record);
        let old_member = old_record
            .as_ref()
            .and_then(|r| Self::member_key(tenant, r));
        let new_member = Self::member_key(tenant, record);
        if old_member != new_member {
            if let Some(old) = old_member {
                items.push(
                    TransactWriteItem::builder()
                        .delete(built(
                            Delete::builder()
                                .table_name(&self.table)
                                .set_key(Some(old))
                                .build(),
                        )?)
                        .build(),
                );
            }
            if let Some(new) = new_member {
                items.push(
                    TransactWriteItem::builder()
                        .put(built(
                            Put::builder()
                                .table_name(&self.table)
                                .set_item(Some(new))
                                .build(),
                        )?)
                        .build(),
                );
            }
        }
        let old_bucket = old_record.as_ref().map(bucket);
        let new_bucket = bucket(record);
        if old_bucket.as_ref() != Some(&new_bucket) {
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::counts_key()))
                .expression_attribute_names("#new", &new_bucket)
                .expression_attribute_values(":plus", AttributeValue::N("1".to_owned()));
            update = match &old_bucket {
                Some(old) => update
                    .update_expression("ADD #new :plus, #old :minus")
                    .expression_attribute_names("#old", old)
                    .expression_attribute_values(":minus", AttributeValue::N("-1".to_owned())),
                None => update.update_expression("ADD #new :plus"),
            };
            items.push(
                TransactWriteItem::builder()
                    .update(built(update.build())?)
                    .build(),
            );
        }
        // Registrations of different tenants meet on the counts item: a
        // transaction cancelled by another in flight (not by the record's
        // condition) is tried again, a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let Err(err) = result else {
                return Ok(Some(version));
            };
            let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                err.as_service_error()
            else {
                return Err(sdk_error(err));
            };
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .filter_map(|r| r.code())
                .collect();
            // The record's own condition: another write got there first.
            if codes.first() == Some(&"ConditionalCheckFailed") || codes.is_empty() {
                return Ok(None);
            }
            if attempt >= 4 || !codes.contains(&"TransactionConflict") {
                return Err(StoreError::Unavailable {
                    store: StoreKind::DynamoDb,
                    detail: format!("registration cancelled: {codes:?}"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
        }
    }

    async fn get_many(
        &self,
        tenants: &[TenantId],
    ) -> Result<Listed<(TenantId, Registered)>, StoreError> {
        // A few batches at once; collected first so the stream holds no
        // closure (the async trait needs it Send for every lifetime).
        let batches: Vec<_> = tenants
            .chunks(BATCH_GET_KEYS)
            .map(|chunk| self.get_batch(chunk))
            .collect();
        let mut batches = futures::stream::iter(batches).buffer_unordered(BATCHES_IN_FLIGHT);
        let mut listed = Listed::default();
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            listed.calls += batch.calls;
            listed.items.extend(batch.items);
        }
        Ok(listed)
    }

    async fn counts(&self) -> Result<TierCounts, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::counts_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let mut counts = TierCounts::default();
        for (name, value) in output.item().into_iter().flatten() {
            let Some(n) = value.as_n().ok().and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            let n = n.max(0) as u64;
            let (counted, tier) = if let Some(tier) = name.strip_prefix(ACTIVE_BUCKET_PREFIX) {
                (&mut counts.active, tier)
            } else if let Some(tier) = name.strip_prefix(INACTIVE_BUCKET_PREFIX) {
                (&mut counts.inactive, tier)
            } else {
                continue;
            };
            let tier = match tier {
                "" => None,
                tier => Some(
                    TierName::parse(tier)
                        .map_err(|e| malformed(format!("counted tier '{tier}': {e}")))?,
                ),
            };
            counted.insert(tier, n);
        }
        Ok(counts)
    }

    async fn members(
        &self,
        tier: Option<&TierName>,
        limit: usize,
    ) -> Result<Listed<TenantId>, StoreError> {
        let mut listed = Listed::default();
        let mut start = None;
        while listed.items.len() < limit {
            listed.calls += 1;
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", AttributeValue::S(members_partition(tier)))
                .limit(i32::try_from(limit - listed.items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in page.items() {
                if let Some(AttributeValue::S(sk)) = item.get(SORT_KEY)
                    && let Some(tenant) = sk
                        .strip_prefix("TENANT#")
                        .and_then(|t| TenantId::parse(t).ok())
                {
                    listed.items.push(tenant);
                }
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                break;
            }
        }
        Ok(listed)
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
    async fn get_many(
        &self,
        tenants: &[TenantId],
    ) -> Result<Listed<(TenantId, Registered)>, StoreError> {
        let records = self
            .records
            .lock()
            .map_err(|_| malformed("registry poisoned".to_owned()))?;
        Ok(Listed {
            items: tenants
                .iter()
                .filter_map(|t| records.get(t).map(|r| (t.clone(), r.clone())))
                .collect(),
            calls: tenants.len().div_ceil(BATCH_GET_KEYS),
        })
    }

    async fn counts(&self) -> Result<TierCounts, StoreError> {
        let records = self
            .records
            .lock()
            .map_err(|_| malformed("registry poisoned".to_owned()))?;
        let mut counts = TierCounts::default();
        for registered in records.values() {
            let counted = if registered.record.active {
                &mut counts.active
            } else {
                &mut counts.inactive
            };
            *counted.entry(registered.record.tier.clone()).or_default() += 1;
        }
        Ok(counts)
    }

    async fn members(
        &self,
        tier: Option<&TierName>,
        limit: usize,
    ) -> Result<Listed<TenantId>, StoreError> {
        let records = self
            .records
            .lock()
            .map_err(|_| malformed("registry poisoned".to_owned()))?;
        let mut members: Vec<TenantId> = records
            .iter()
            .filter(|(_, r)| r.record.active && r.record.tier.as_ref() == tier)
            .map(|(t, _)| t.clone())
            .collect();
        members.sort();
        members.truncate(limit);
        Ok(Listed {
            items: members,
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
