//! Where rollouts live: the config table, so that a rollout outlives any
//! function or agent restart, and every reader reads the same records.
//!
//! - `ROLLOUT#{id}` / `RECORD`: every rollout, live or final, for `GET
//!   /v1/rollouts/{id}`;
//! - `ROLLOUTS` / `{layer}#{service}#{key}`: a copy of each live one, one per
//!   entry (the condition that keeps two rollouts off one key), which is the
//!   one small partition readers query to merge rollouts into their answers.
//!
//! Both change in one transaction, conditional on the record's revision, so
//! the driver, an administrator's pause and a second driver tick cannot
//! overwrite each other.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::record::Rollout;
use crate::error::StoreError;
use crate::layers::EntryKey;
use crate::store::dynamodb::{PARTITION_KEY, SORT_KEY, malformed, sdk_error};

/// The partition of the live rollouts' copies, which readers query.
pub const LIVE_PARTITION: &str = "ROLLOUTS";
const RECORD_SORT_KEY: &str = "RECORD";
const RECORD: &str = "record";
const REVISION: &str = "revision";

/// What a conditional rollout write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Stored,
    /// Create: the entry already has a live rollout. Update: the stored
    /// revision is not the one the writer read.
    Conflict,
}

#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// Every live (not final) rollout, what readers merge.
    async fn live(&self) -> Result<Vec<Rollout>, StoreError>;
    async fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError>;
    /// Stores a new rollout (revision 1), unless its entry has a live one.
    async fn create(&self, rollout: &Rollout) -> Result<Written, StoreError>;
    /// Stores `rollout` over the revision before it; a final state takes its
    /// entry's live copy away.
    async fn update(&self, rollout: &Rollout) -> Result<Written, StoreError>;
}

/// The live copy's sort key: `{layer}#{service}#{key}`.
pub fn live_sort_key(entry: &EntryKey) -> String {
    format!("{}#{}#{}", entry.layer, entry.service, entry.key)
}

/// The inverse of [`live_sort_key`], validating every part.
pub fn parse_live_sort_key(sk: &str) -> Option<EntryKey> {
    let mut parts = sk.split('#');
    let (layer, service, key) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(EntryKey::new(
        super::record::parse_layer(layer).ok()?,
        crate::validate::ServiceName::parse(service).ok()?,
        crate::validate::ConfigKey::parse(key).ok()?,
    ))
}

fn record_partition(id: &str) -> String {
    format!("ROLLOUT#{id}")
}

fn parse(item: &HashMap<String, AttributeValue>) -> Result<Rollout, StoreError> {
    let Some(AttributeValue::S(record)) = item.get(RECORD) else {
        return Err(malformed("rollout item without its record".to_owned()));
    };
    let json: serde_json::Value = serde_json::from_str(record)
        .map_err(|e| malformed(format!("rollout record is not JSON: {e}")))?;
    Rollout::from_json(&json).map_err(|e| malformed(e.to_string()))
}

pub struct DynamoDbRolloutStore {
    client: Client,
    table: String,
}

impl DynamoDbRolloutStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn item(&self, pk: String, sk: String, rollout: &Rollout) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PARTITION_KEY.to_owned(), AttributeValue::S(pk)),
            (SORT_KEY.to_owned(), AttributeValue::S(sk)),
            (
                RECORD.to_owned(),
                AttributeValue::S(rollout.to_json().to_string()),
            ),
            (
                REVISION.to_owned(),
                AttributeValue::N(rollout.revision.to_string()),
            ),
        ])
    }

    fn key(pk: String, sk: String) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PARTITION_KEY.to_owned(), AttributeValue::S(pk)),
            (SORT_KEY.to_owned(), AttributeValue::S(sk)),
        ])
    }

    /// Runs one conditional transaction: a cancelled condition is a conflict.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Written, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Written::Stored),
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled))
                    if cancelled
                        .cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
                {
                    Ok(Written::Conflict)
                }
                _ => Err(sdk_error(err)),
            },
        }
    }

    fn put(
        &self,
        item: HashMap<String, AttributeValue>,
        condition: &str,
        expected: Option<u64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#pk", PARTITION_KEY);
        if let Some(revision) = expected {
            put = put
                .expression_attribute_names("#rev", REVISION)
                .expression_attribute_values(":rev", AttributeValue::N(revision.to_string()));
        }
        let put = put
            .build()
            .map_err(|e| malformed(format!("rollout request: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

#[async_trait]
impl RolloutStore for DynamoDbRolloutStore {
    async fn live(&self) -> Result<Vec<Rollout>, StoreError> {
        let mut rollouts = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", AttributeValue::S(LIVE_PARTITION.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in page.items() {
                // One item this reader cannot read (damaged, or written by a
                // newer version with a step kind it does not know) must not
                // stop every read, write and tick: it is skipped, loudly, and
                // its tenants read the layer's own value meanwhile.
                match parse(item) {
                    Ok(rollout) => rollouts.push(rollout),
                    Err(error) => {
                        let entry = match item.get(SORT_KEY) {
                            Some(AttributeValue::S(sk)) => sk.as_str(),
                            _ => "?",
                        };
                        tracing::error!(entry, %error, "a live rollout item cannot be read: skipped");
                    }
                }
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(rollouts);
            }
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(
                record_partition(id),
                RECORD_SORT_KEY.to_owned(),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        item.item().map(parse).transpose()
    }

    async fn create(&self, rollout: &Rollout) -> Result<Written, StoreError> {
        let record = self.item(
            record_partition(&rollout.id),
            RECORD_SORT_KEY.to_owned(),
            rollout,
        );
        let live = self.item(
            LIVE_PARTITION.to_owned(),
            live_sort_key(&rollout.entry),
            rollout,
        );
        self.transact(vec![
            self.put(record, "attribute_not_exists(#pk)", None)?,
            self.put(live, "attribute_not_exists(#pk)", None)?,
        ])
        .await
    }

    async fn update(&self, rollout: &Rollout) -> Result<Written, StoreError> {
        let expected = rollout.revision.saturating_sub(1);
        let record = self.item(
            record_partition(&rollout.id),
            RECORD_SORT_KEY.to_owned(),
            rollout,
        );
        let mut items = vec![self.put(
            record,
            "#rev = :rev AND attribute_exists(#pk)",
            Some(expected),
        )?];
        let live_key = Self::key(LIVE_PARTITION.to_owned(), live_sort_key(&rollout.entry));
        if rollout.progress.state.is_final() {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(live_key))
                .build()
                .map_err(|e| malformed(format!("rollout request: {e}")))?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        } else {
            let live = self.item(
                LIVE_PARTITION.to_owned(),
                live_sort_key(&rollout.entry),
                rollout,
            );
            items.push(self.put(
                live,
                "#rev = :rev AND attribute_exists(#pk)",
                Some(expected),
            )?);
        }
        self.transact(items).await
    }
}

/// Rollouts in memory, for tests.
#[derive(Default)]
pub struct MemoryRolloutStore {
    records: Mutex<HashMap<String, Rollout>>,
}

impl MemoryRolloutStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RolloutStore for MemoryRolloutStore {
    async fn live(&self) -> Result<Vec<Rollout>, StoreError> {
        let records = self
            .records
            .lock()
            .map_err(|_| malformed("poisoned".into()))?;
        let mut live: Vec<Rollout> = records
            .values()
            .filter(|r| !r.progress.state.is_final())
            .cloned()
            .collect();
        live.sort_by_key(|r| live_sort_key(&r.entry));
        Ok(live)
    }

    async fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let records = self
            .records
            .lock()
            .map_err(|_| malformed("poisoned".into()))?;
        Ok(records.get(id).cloned())
    }

    async fn create(&self, rollout: &Rollout) -> Result<Written, StoreError> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| malformed("poisoned".into()))?;
        let taken = records.contains_key(&rollout.id)
            || records
                .values()
                .any(|r| !r.progress.state.is_final() && r.entry == rollout.entry);
        if taken {
            return Ok(Written::Conflict);
        }
        records.insert(rollout.id.clone(), rollout.clone());
        Ok(Written::Stored)
    }

    async fn update(&self, rollout: &Rollout) -> Result<Written, StoreError> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| malformed("poisoned".into()))?;
        match records.get(&rollout.id) {
            Some(stored) if stored.revision + 1 == rollout.revision => {
                records.insert(rollout.id.clone(), rollout.clone());
                Ok(Written::Stored)
            }
            _ => Ok(Written::Conflict),
        }
    }
}
