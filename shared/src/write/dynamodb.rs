//! DynamoDB writer: the entry and its history item in one conditional
//! transaction. Versions only grow: a key created again after a delete
//! continues after the last version in its history.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::{
    Actor, ConfigWriter, Expected, HISTORY_RETENTION, NewValue, ValueKind, VersionRecord,
    WriteError, Written, deletable, now_ms,
};
use crate::credentials::TenantClient;
use crate::domain::StoreKind;
use crate::error::StoreError;
use crate::layers::EntryKey;
use crate::store::dynamodb::{
    PARTITION_KEY, SORT_KEY, VALUE_ATTRIBUTE, VERSION_ATTRIBUTE, entry_key_attributes, sdk_error,
};
use crate::validate::{ConfigKey, ServiceName};

pub use crate::store::dynamodb::{UPDATED_AT_ATTRIBUTE, UPDATED_BY_ATTRIBUTE};
/// TTL attribute of history items (seconds since the epoch).
pub const EXPIRES_AT_ATTRIBUTE: &str = "expires_at";
/// `true` on the history item a delete leaves (its tombstone).
pub const DELETED_ATTRIBUTE: &str = "deleted";
/// On an entry and its history item: the version a rollback restored.
pub const ROLLBACK_OF_ATTRIBUTE: &str = "rollback_of";
/// Sort keys of history items start with this.
pub const HISTORY_SORT_PREFIX: &str = "HISTORY#";

/// Sort key prefix of one entry's history items.
fn history_prefix(item: &EntryKey) -> String {
    format!("{HISTORY_SORT_PREFIX}{}#{}#", item.service, item.key)
}

/// Zero-padded so that sort order is version order.
pub fn history_sort_key(item: &EntryKey, version: i64) -> String {
    history_sort_key_of(&item.service, &item.key, version)
}

/// [`history_sort_key`] of an entry of any layer (the layer is the
/// partition).
pub fn history_sort_key_of(service: &ServiceName, key: &ConfigKey, version: i64) -> String {
    format!("{HISTORY_SORT_PREFIX}{service}#{key}#{version:012}")
}

pub struct DynamoDbWriter {
    /// The process's client, or one per tenant with vended credentials.
    clients: TenantClient<Client>,
    table: String,
}

fn number(attributes: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    match attributes.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// A stored value as the attribute DynamoDB keeps: a boolean or number
/// with its type, anything else as its text.
fn value_attribute(value: &NewValue) -> AttributeValue {
    match value.scalar() {
        Some(serde_json::Value::Bool(b)) => AttributeValue::Bool(b),
        Some(serde_json::Value::Number(n)) => AttributeValue::N(n.to_string()),
        _ => AttributeValue::S(value.stored_text().to_owned()),
    }
}

/// The value a stored attribute holds, as [`value_attribute`] wrote it.
fn stored_value(attributes: &HashMap<String, AttributeValue>, name: &str) -> Option<NewValue> {
    match attributes.get(name)? {
        AttributeValue::S(s) => Some(NewValue::text(s.clone(), ValueKind::Plain)),
        AttributeValue::Bool(b) => {
            NewValue::json(&serde_json::Value::Bool(*b), ValueKind::Plain).ok()
        }
        AttributeValue::N(n) => serde_json::from_str::<serde_json::Number>(n)
            .ok()
            .and_then(|n| NewValue::json(&serde_json::Value::Number(n), ValueKind::Plain).ok()),
        _ => None,
    }
}

fn text(attributes: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    match attributes.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

fn invalid_request(e: impl std::fmt::Display) -> WriteError {
    WriteError::Store(StoreError::Unavailable {
        store: StoreKind::DynamoDb,
        detail: e.to_string(),
    })
}

/// What one history item says.
struct HistoryEntry {
    version: i64,
    value: Option<NewValue>,
    deleted: bool,
    rollback_of: Option<i64>,
    written_at_ms: i64,
    actor: Option<String>,
}

impl DynamoDbWriter {
    pub fn new(client: impl Into<TenantClient<Client>>, table: impl Into<String>) -> Self {
        Self {
            clients: client.into(),
            table: table.into(),
        }
    }

    /// The entry's current version (strongly consistent), if it exists.
    async fn current_version(&self, item: &EntryKey) -> Result<Option<i64>, WriteError> {
        let output = self
            .clients
            .for_layer(&item.layer)
            .get_item()
            .table_name(&self.table)
            .set_key(Some(entry_key_attributes(item)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(output
            .item()
            .map(|attributes| number(attributes, VERSION_ATTRIBUTE).unwrap_or(0)))
    }

    /// Newest history items first.
    async fn history_entries(
        &self,
        item: &EntryKey,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, WriteError> {
        let output = self
            .clients
            .for_layer(&item.layer)
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(item.layer.partition_key()))
            .expression_attribute_values(":prefix", AttributeValue::S(history_prefix(item)))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(output
            .items()
            .iter()
            .map(|attributes| HistoryEntry {
                version: number(attributes, VERSION_ATTRIBUTE).unwrap_or_default(),
                value: stored_value(attributes, VALUE_ATTRIBUTE),
                deleted: matches!(
                    attributes.get(DELETED_ATTRIBUTE),
                    Some(AttributeValue::Bool(true))
                ),
                rollback_of: number(attributes, ROLLBACK_OF_ATTRIBUTE),
                written_at_ms: number(attributes, UPDATED_AT_ATTRIBUTE).unwrap_or_default(),
                actor: text(attributes, UPDATED_BY_ATTRIBUTE),
            })
            .collect())
    }

    fn history_item(
        &self,
        item: &EntryKey,
        version: i64,
        value: Option<&NewValue>,
        actor: &Actor,
        now: i64,
        rollback_of: Option<i64>,
    ) -> HashMap<String, AttributeValue> {
        let mut attributes = HashMap::from([
            (
                PARTITION_KEY.to_owned(),
                AttributeValue::S(item.layer.partition_key()),
            ),
            (
                SORT_KEY.to_owned(),
                AttributeValue::S(history_sort_key(item, version)),
            ),
            (
                VERSION_ATTRIBUTE.to_owned(),
                AttributeValue::N(version.to_string()),
            ),
            (
                UPDATED_BY_ATTRIBUTE.to_owned(),
                AttributeValue::S(actor.0.clone()),
            ),
            (
                UPDATED_AT_ATTRIBUTE.to_owned(),
                AttributeValue::N(now.to_string()),
            ),
            (
                EXPIRES_AT_ATTRIBUTE.to_owned(),
                AttributeValue::N((now / 1000 + HISTORY_RETENTION.as_secs() as i64).to_string()),
            ),
        ]);
        match value {
            Some(value) => {
                attributes.insert(VALUE_ATTRIBUTE.to_owned(), value_attribute(value));
            }
            None => {
                attributes.insert(DELETED_ATTRIBUTE.to_owned(), AttributeValue::Bool(true));
            }
        }
        if let Some(from) = rollback_of {
            attributes.insert(
                ROLLBACK_OF_ATTRIBUTE.to_owned(),
                AttributeValue::N(from.to_string()),
            );
        }
        attributes
    }

    /// Runs a transaction; a cancelled one is a conflict when the entry is
    /// no longer at `expected`.
    async fn transact(
        &self,
        item: &EntryKey,
        items: Vec<TransactWriteItem>,
        expected: Option<i64>,
    ) -> Result<(), WriteError> {
        match self
            .clients
            .for_layer(&item.layer)
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                let current = self.current_version(item).await?;
                if current != expected {
                    return Err(WriteError::Conflict { current });
                }
                Err(sdk_error(err).into())
            }
            Err(err) => Err(sdk_error(err).into()),
        }
    }

    async fn write(
        &self,
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
        rollback_of: Option<i64>,
    ) -> Result<Written, WriteError> {
        value.check(StoreKind::DynamoDb)?;
        let current = match expected {
            Expected::Any => self.current_version(item).await?,
            Expected::Absent => None,
            Expected::Version(v) => Some(v),
        };
        let version = match current {
            Some(v) => next_version(v)?,
            // Created (again): continue after the last version in the history.
            None => self
                .history_entries(item, 1)
                .await?
                .first()
                .map_or(Ok(1), |h| next_version(h.version))?,
        };
        let now = now_ms();
        let mut entry = entry_key_attributes(item);
        entry.extend([
            (VALUE_ATTRIBUTE.to_owned(), value_attribute(value)),
            (
                VERSION_ATTRIBUTE.to_owned(),
                AttributeValue::N(version.to_string()),
            ),
            (
                UPDATED_BY_ATTRIBUTE.to_owned(),
                AttributeValue::S(actor.0.clone()),
            ),
            (
                UPDATED_AT_ATTRIBUTE.to_owned(),
                AttributeValue::N(now.to_string()),
            ),
        ]);
        // On the entry too, so the stream record of this write says it.
        if let Some(from) = rollback_of {
            entry.insert(
                ROLLBACK_OF_ATTRIBUTE.to_owned(),
                AttributeValue::N(from.to_string()),
            );
        }
        let mut put = Put::builder().table_name(&self.table).set_item(Some(entry));
        put = match current {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY),
            Some(v) => put
                .condition_expression("#ver = :expected")
                .expression_attribute_names("#ver", VERSION_ATTRIBUTE)
                .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
        };
        let history = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.history_item(
                item,
                version,
                Some(value),
                actor,
                now,
                rollback_of,
            )))
            .build()
            .map_err(invalid_request)?;
        self.transact(
            item,
            vec![
                TransactWriteItem::builder()
                    .put(put.build().map_err(invalid_request)?)
                    .build(),
                TransactWriteItem::builder().put(history).build(),
            ],
            current,
        )
        .await?;
        Ok(Written {
            version,
            previous: current,
        })
    }
}

#[async_trait]
impl ConfigWriter for DynamoDbWriter {
    fn kind(&self) -> StoreKind {
        StoreKind::DynamoDb
    }

    async fn put(
        &self,
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError> {
        self.write(item, value, expected, actor, None).await
    }

    async fn delete(
        &self,
        item: &EntryKey,
        expected: Expected,
        actor: &Actor,
    ) -> Result<i64, WriteError> {
        let current = self.current_version(item).await?;
        let version = deletable(current, expected)?;
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(entry_key_attributes(item)))
            .condition_expression("#ver = :expected")
            .expression_attribute_names("#ver", VERSION_ATTRIBUTE)
            .expression_attribute_values(":expected", AttributeValue::N(version.to_string()))
            .build()
            .map_err(invalid_request)?;
        let tombstone = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.history_item(
                item,
                next_version(version)?,
                None,
                actor,
                now_ms(),
                None,
            )))
            .build()
            .map_err(invalid_request)?;
        self.transact(
            item,
            vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder().put(tombstone).build(),
            ],
            Some(version),
        )
        .await?;
        Ok(version)
    }

    async fn history(
        &self,
        item: &EntryKey,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, WriteError> {
        Ok(self
            .history_entries(item, limit)
            .await?
            .into_iter()
            .map(|entry| VersionRecord {
                version: entry.version,
                value: entry
                    .value
                    .as_ref()
                    .map(|value| value.read_back_in(StoreKind::DynamoDb)),
                kind: ValueKind::Plain,
                written_at_ms: entry.written_at_ms,
                actor: entry.actor,
                deleted: entry.deleted,
                rollback_of: entry.rollback_of,
            })
            .collect())
    }

    async fn rollback(
        &self,
        item: &EntryKey,
        to: i64,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError> {
        let output = self
            .clients
            .for_layer(&item.layer)
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(item.layer.partition_key()))
            .key(SORT_KEY, AttributeValue::S(history_sort_key(item, to)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let attributes = output.item().ok_or(WriteError::UnknownVersion(to))?;
        let value = stored_value(attributes, VALUE_ATTRIBUTE).ok_or_else(|| {
            WriteError::Invalid(format!("version {to} is a deletion; nothing to restore"))
        })?;
        self.write(item, &value, expected, actor, Some(to)).await
    }
}
/// The version after `v`; a version so large that none can follow is
/// refused rather than wrapped (an expected version comes from a caller).
fn next_version(v: i64) -> Result<i64, WriteError> {
    v.checked_add(1)
        .ok_or_else(|| WriteError::Invalid(format!("version {v} has no successor")))
}
