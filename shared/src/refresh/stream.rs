//! DynamoDB Streams records, as the Lambda event source mapping delivers them,
//! → change records. Only the keys are read (the stream is KEYS_ONLY; an image,
//! if a deployment turns one on, is never looked at, so no value is parsed or
//! logged).
//!
//! Each record is parsed on its own: one malformed record becomes one batch
//! item failure, and the rest of the batch is still delivered.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::change::{ChangeRecord, Classified, valid_change_id};
use super::proto::Operation;
use crate::domain::StoreKind;
use crate::routing::KeyRouter;
use crate::store::dynamodb::{PARTITION_KEY, SORT_KEY, parse_key};

pub const EVENT_SOURCE: &str = "aws:dynamodb";

/// A batch of stream records: `{"Records": [...]}`.
#[derive(Debug, Deserialize)]
pub struct StreamBatch {
    #[serde(rename = "Records")]
    pub records: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct StreamRecord {
    #[serde(rename = "eventID")]
    event_id: String,
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "eventSource")]
    event_source: String,
    dynamodb: StreamData,
}

#[derive(Debug, Deserialize)]
struct StreamData {
    #[serde(rename = "Keys")]
    keys: HashMap<String, StringAttribute>,
    #[serde(rename = "ApproximateCreationDateTime", default)]
    created_unix_secs: Option<f64>,
    #[serde(rename = "SequenceNumber")]
    sequence_number: String,
}

#[derive(Debug, Deserialize)]
struct StringAttribute {
    #[serde(rename = "S")]
    s: Option<String>,
}

/// One record of a batch, classified; `sequence_number` is the batch item
/// identifier Lambda expects back for a failed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRecord {
    pub sequence_number: Option<String>,
    pub outcome: Result<Classified, String>,
}

/// Classifies every record of a batch. A record that cannot be read is an
/// `Err` with the reason (its sequence number kept when it has one).
pub fn classify_batch(batch: &StreamBatch, router: &KeyRouter) -> Vec<ParsedRecord> {
    batch
        .records
        .iter()
        .map(|raw| {
            let sequence_number = raw
                .pointer("/dynamodb/SequenceNumber")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let outcome = StreamRecord::deserialize(raw)
                .map_err(|e| format!("malformed stream record: {e}"))
                .and_then(|record| classify(&record, router));
            ParsedRecord {
                sequence_number,
                outcome,
            }
        })
        .collect()
}

fn classify(record: &StreamRecord, router: &KeyRouter) -> Result<Classified, String> {
    if record.event_source != EVENT_SOURCE {
        return Err(format!(
            "event source '{}' is not {EVENT_SOURCE}",
            record.event_source
        ));
    }
    let operation = match record.event_name.as_str() {
        "INSERT" => Operation::Create,
        "MODIFY" => Operation::Update,
        "REMOVE" => Operation::Delete,
        other => return Err(format!("unknown stream event name '{other}'")),
    };
    if !valid_change_id(&record.event_id) {
        return Err("stream record has no usable event id".to_owned());
    }
    if record.dynamodb.sequence_number.is_empty() {
        return Err("stream record has no sequence number".to_owned());
    }
    let key = |name: &str| {
        record
            .dynamodb
            .keys
            .get(name)
            .and_then(|a| a.s.as_deref())
            .ok_or_else(|| format!("stream record has no string key '{name}'"))
    };
    let item = match parse_key(key(PARTITION_KEY)?, key(SORT_KEY)?) {
        Ok(item) => item,
        // Not a configuration entry (or not one any reader could have read).
        Err(reason) => return Ok(Classified::Ignore(format!("item key: {reason}"))),
    };
    if router.route(&item.key).ok() != Some(StoreKind::DynamoDb) {
        return Ok(Classified::Ignore(format!(
            "key '{}' is not routed to DynamoDB, so no reader caches it from there",
            item.key
        )));
    }
    let time_unix_ms = record
        .dynamodb
        .created_unix_secs
        .map(|secs| (secs * 1000.0) as i64)
        .unwrap_or(0);
    Ok(Classified::Refresh(ChangeRecord {
        item,
        store: StoreKind::DynamoDb,
        operation,
        change_id: record.event_id.clone(),
        time_unix_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(event_name: &str, pk: &str, sk: &str, sequence: &str) -> Value {
        json!({
            "eventID": format!("evt{sequence}"),
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_795_424_400.0,
                "Keys": {"pk": {"S": pk}, "sk": {"S": sk}},
                "SequenceNumber": sequence,
                "SizeBytes": 60,
                "StreamViewType": "KEYS_ONLY"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/tenant-config/stream/2026-11-23T00:00:00.000"
        })
    }

    fn classify_all(records: Vec<Value>) -> Vec<ParsedRecord> {
        classify_batch(&StreamBatch { records }, &KeyRouter::default())
    }

    #[test]
    fn the_sample_batch_names_its_entries_with_the_store_and_operation() {
        let batch: StreamBatch =
            serde_json::from_str(include_str!("../../../events/dynamodb-stream-batch.json"))
                .unwrap();
        let parsed = classify_batch(&batch, &KeyRouter::default());
        let changes: Vec<(String, Operation)> = parsed
            .iter()
            .filter_map(|p| match &p.outcome {
                Ok(Classified::Refresh(change)) => {
                    assert_eq!(change.store, StoreKind::DynamoDb);
                    Some((change.item.cache_key(), change.operation))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            changes,
            vec![
                (
                    "tenant-a:billing:tenant_config_limits".to_owned(),
                    Operation::Update
                ),
                (
                    "tenant-a:billing:tenant_config_theme".to_owned(),
                    Operation::Create
                ),
                (
                    "tenant-b:billing:tenant_config_limits".to_owned(),
                    Operation::Delete
                ),
            ]
        );
    }

    #[test]
    fn inserts_modifies_and_removes_become_changes_with_time_and_id() {
        let parsed = classify_all(vec![record(
            "MODIFY",
            "TENANT#t1",
            "CONFIG#svc#tenant_config_x",
            "100",
        )]);
        let Ok(Classified::Refresh(change)) = &parsed[0].outcome else {
            panic!("{parsed:?}");
        };
        assert_eq!(change.time_unix_ms, 1_795_424_400_000);
        assert_eq!(change.change_id, "evt100");
        assert_eq!(parsed[0].sequence_number.as_deref(), Some("100"));
    }

    #[test]
    fn other_items_and_keys_of_the_other_store_are_ignored_with_a_reason() {
        for (pk, sk) in [
            ("JOURNAL#2026-11-23", "CHANGE#0001"),
            ("TENANT#t1", "SCHEMA#svc"),
            ("TENANT#t1", "CONFIG#svc#param_config_x"),
            ("TENANT#t 1", "CONFIG#svc#tenant_config_x"),
        ] {
            let parsed = classify_all(vec![record("INSERT", pk, sk, "1")]);
            assert!(
                matches!(parsed[0].outcome, Ok(Classified::Ignore(_))),
                "{pk} {sk}: {parsed:?}"
            );
        }
    }

    #[test]
    fn a_malformed_record_fails_alone_and_keeps_its_sequence_number() {
        let mut no_keys = record("INSERT", "TENANT#t1", "CONFIG#svc#tenant_config_x", "2");
        no_keys["dynamodb"]["Keys"] = json!({});
        let mut wrong_name = record("INSERT", "TENANT#t1", "CONFIG#svc#tenant_config_x", "3");
        wrong_name["eventName"] = json!("TRUNCATE");
        let parsed = classify_all(vec![
            record("INSERT", "TENANT#t1", "CONFIG#svc#tenant_config_a", "1"),
            no_keys,
            wrong_name,
            json!({"not": "a record"}),
            record("REMOVE", "TENANT#t1", "CONFIG#svc#tenant_config_b", "5"),
        ]);
        let failed: Vec<Option<&str>> = parsed
            .iter()
            .filter(|p| p.outcome.is_err())
            .map(|p| p.sequence_number.as_deref())
            .collect();
        assert_eq!(failed, vec![Some("2"), Some("3"), None]);
        assert!(matches!(parsed[0].outcome, Ok(Classified::Refresh(_))));
        assert!(matches!(parsed[4].outcome, Ok(Classified::Refresh(_))));
    }
}
