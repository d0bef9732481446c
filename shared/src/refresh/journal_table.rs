//! The change journal in its own DynamoDB table: one partition (`pk =
//! "changes"`), sort key = position, a TTL attribute a day out. Its own table
//! (not a partition of the configuration table) so that its IAM, TTL and
//! capacity are separate from tenant data and the configuration stream never
//! carries it. Items name entries, never values.
//!
//! Capacity: every warm reader makes one eventually consistent Query per
//! catch-up interval (a few small items, 0.5 RCU each), so one partition
//! serves thousands of readers; changes are rare writes.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};

use super::change::{ChangeAudit, ChangeRecord, Subject};
use super::journal::{ChangeJournal, JournalEntry, JournalError, RETENTION, position_at};
use super::proto::Operation;
use super::signing::unix_ms_now;
use crate::domain::{StoreKind, ValueKind};

const PARTITION: &str = "changes";
/// The counter sequence numbers are allocated from: its own partition, so
/// that a Query of the entries never meets it.
const SEQUENCE_PARTITION: &str = "sequence";
const SEQUENCE_ATTRIBUTE: &str = "head";
/// BatchWriteItem takes at most 25 items.
const WRITE_BATCH: usize = 25;
const UNPROCESSED_RETRIES: u32 = 4;

pub struct JournalTable {
    client: Client,
    table: String,
}

impl JournalTable {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn item(entry: &JournalEntry) -> HashMap<String, AttributeValue> {
    let change = &entry.change;
    let expires_at = entry.journaled_at_ms / 1000 + RETENTION.as_secs() as i64;
    let audit = &change.audit;
    let audit_attributes = [
        ("actor", audit.actor.clone().map(s)),
        ("from_version", audit.from_version.map(n)),
        ("to_version", audit.to_version.map(n)),
        ("rollback_of", audit.rollback_of.map(n)),
        (
            "value_type",
            change.value_type.map(|kind| s(kind.parameter_type())),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_owned(), value?)));
    let (tenant, service, key) = change.subject.wire();
    let mut attributes = HashMap::from([
        ("pk".to_owned(), s(PARTITION)),
        ("sk".to_owned(), s(entry.position.clone())),
        ("tenant".to_owned(), s(tenant)),
        ("service".to_owned(), s(service)),
        ("key".to_owned(), s(key)),
        ("store".to_owned(), s(change.store.as_str())),
        ("operation".to_owned(), s(change.operation.as_str_name())),
        ("change_id".to_owned(), s(change.change_id.clone())),
        ("change_time_ms".to_owned(), n(change.time_unix_ms)),
        ("journaled_at_ms".to_owned(), n(entry.journaled_at_ms)),
        ("expires_at".to_owned(), n(expires_at)),
        (
            "sequence".to_owned(),
            AttributeValue::N(entry.sequence.to_string()),
        ),
    ]);
    attributes.extend(audit_attributes);
    attributes
}

fn entry(item: &HashMap<String, AttributeValue>) -> Result<JournalEntry, JournalError> {
    let position = item
        .get("sk")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let unreadable = |reason: &str| JournalError::Unreadable {
        position: position.clone(),
        reason: reason.to_owned(),
    };
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            .ok_or_else(|| unreadable(&format!("no '{name}'")))
    };
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| unreadable(&format!("no numeric '{name}'")))
    };
    let store = match text("store")? {
        "dynamodb" => StoreKind::DynamoDb,
        "parameter-store" => StoreKind::ParameterStore,
        other => return Err(unreadable(&format!("unknown store '{other}'"))),
    };
    let operation = Operation::from_str_name(text("operation")?)
        .ok_or_else(|| unreadable("unknown operation"))?;
    let change = ChangeRecord {
        subject: Subject::from_wire(text("tenant")?, text("service")?, text("key")?)
            .map_err(|e| unreadable(&e.to_string()))?,
        store,
        operation,
        change_id: text("change_id")?.to_owned(),
        time_unix_ms: number("change_time_ms")?,
        // Optional: entries journaled before audits, and changes whose
        // source said nothing, have none of them.
        audit: ChangeAudit {
            actor: text("actor").ok().and_then(ChangeAudit::clean_actor),
            from_version: number("from_version").ok(),
            to_version: number("to_version").ok(),
            rollback_of: number("rollback_of").ok(),
        },
        value_type: text("value_type")
            .ok()
            .and_then(ValueKind::from_parameter_type),
    };
    Ok(JournalEntry {
        position: position.clone(),
        journaled_at_ms: number("journaled_at_ms")?,
        // Entries journaled before sequence numbers have none.
        sequence: number("sequence").ok().map_or(0, |n| n.max(0) as u64),
        change,
    })
}

#[async_trait]
impl ChangeJournal for JournalTable {
    async fn append(&self, changes: &[ChangeRecord]) -> Result<Vec<JournalEntry>, JournalError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let last = self.allocate(changes.len() as u64).await?;
        let first = last + 1 - changes.len() as u64;
        let now = unix_ms_now();
        let entries: Vec<JournalEntry> = changes
            .iter()
            .zip(first..)
            .map(|(change, sequence)| {
                JournalEntry::new(change.clone(), now).with_sequence(sequence)
            })
            .collect();
        for chunk in entries.chunks(WRITE_BATCH) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|entry| {
                    PutRequest::builder()
                        .set_item(Some(item(entry)))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(|e| JournalError::Unavailable {
                            operation: "BatchWriteItem",
                            detail: e.to_string(),
                        })
                })
                .collect::<Result<_, _>>()?;
            for attempt in 0..=UNPROCESSED_RETRIES {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| JournalError::Unavailable {
                        operation: "BatchWriteItem",
                        detail: DisplayErrorContext(e).to_string(),
                    })?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt == UNPROCESSED_RETRIES {
                    return Err(JournalError::Unavailable {
                        operation: "BatchWriteItem",
                        detail: format!("{} items left unprocessed", requests.len()),
                    });
                }
                tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
            }
        }
        Ok(entries)
    }

    async fn since(&self, from_ms: i64, limit: usize) -> Result<Vec<JournalEntry>, JournalError> {
        self.query("sk >= :from", position_at(from_ms), limit).await
    }

    async fn after(&self, position: &str, limit: usize) -> Result<Vec<JournalEntry>, JournalError> {
        self.query("sk > :from", position.to_owned(), limit).await
    }

    async fn head(&self) -> Result<u64, JournalError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(counter_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| JournalError::Unavailable {
                operation: "GetItem",
                detail: DisplayErrorContext(e).to_string(),
            })?;
        Ok(counter(output.item()).unwrap_or(0))
    }
}

/// The sequence counter item's key.
fn counter_key() -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(SEQUENCE_PARTITION)),
        ("sk".to_owned(), s(SEQUENCE_PARTITION)),
    ])
}

/// The counter's value in an item (a GetItem's, or an UpdateItem's new
/// attributes).
fn counter(item: Option<&HashMap<String, AttributeValue>>) -> Option<u64> {
    item?.get(SEQUENCE_ATTRIBUTE)?.as_n().ok()?.parse().ok()
}

impl JournalTable {
    /// Allocates `count` sequence numbers (one atomic ADD on the counter
    /// item); returns the last of them.
    async fn allocate(&self, count: u64) -> Result<u64, JournalError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(counter_key()))
            .update_expression("ADD #head :count")
            .expression_attribute_names("#head", SEQUENCE_ATTRIBUTE)
            .expression_attribute_values(":count", AttributeValue::N(count.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| JournalError::Unavailable {
                operation: "UpdateItem",
                detail: DisplayErrorContext(e).to_string(),
            })?;
        counter(output.attributes()).ok_or_else(|| JournalError::Unavailable {
            operation: "UpdateItem",
            detail: "the sequence counter came back without a number".to_owned(),
        })
    }

    /// Entries of the one partition whose position meets `condition` on
    /// `:from`, in order, at most `limit` (following DynamoDB's pages).
    async fn query(
        &self,
        condition: &str,
        from: String,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        let mut entries = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(format!("pk = :p AND {condition}"))
                .expression_attribute_values(":p", s(PARTITION))
                .expression_attribute_values(":from", s(from.clone()))
                .limit(
                    i32::try_from(limit.saturating_sub(entries.len()).max(1)).unwrap_or(i32::MAX),
                )
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| JournalError::Unavailable {
                    operation: "Query",
                    detail: DisplayErrorContext(e).to_string(),
                })?;
            for item in output.items() {
                entries.push(entry(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if entries.len() < limit => start = Some(key),
                _ => return Ok(entries),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_through_its_item_without_any_value() {
        let change = ChangeRecord {
            subject: Subject::Entry(
                crate::domain::ItemKey::parse("tenant-a", "billing", "param_config_endpoint")
                    .unwrap(),
            ),
            store: StoreKind::ParameterStore,
            operation: Operation::Delete,
            change_id: "evt-1".into(),
            time_unix_ms: 1_795_424_400_000,
            audit: ChangeAudit {
                actor: Some("sub-dana".into()),
                from_version: Some(3),
                to_version: Some(4),
                rollback_of: Some(2),
            },
            value_type: Some(ValueKind::Secret),
        };
        let journaled = JournalEntry::new(change, 1_795_424_400_123).with_sequence(41);
        let item = item(&journaled);
        assert_eq!(
            item["expires_at"].as_n().unwrap(),
            &(1_795_424_400 + 86_400).to_string()
        );
        assert!(!item.contains_key("value"));
        assert_eq!(entry(&item).unwrap(), journaled);
    }

    #[test]
    fn an_item_that_is_not_an_entry_is_an_error_not_a_panic() {
        let mut broken = item(&JournalEntry::new(
            ChangeRecord {
                subject: Subject::Entry(
                    crate::domain::ItemKey::parse("t", "s", "tenant_config_k").unwrap(),
                ),
                store: StoreKind::DynamoDb,
                operation: Operation::Create,
                change_id: "x".into(),
                time_unix_ms: 0,
                audit: ChangeAudit::default(),
                value_type: None,
            },
            1,
        ));
        broken.insert("tenant".into(), s("../etc"));
        assert!(matches!(
            entry(&broken),
            Err(JournalError::Unreadable { .. })
        ));
        broken.remove("store");
        assert!(entry(&broken).is_err());
    }
}
