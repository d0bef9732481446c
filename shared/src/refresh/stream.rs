//! DynamoDB Streams records, as the Lambda event source mapping delivers them,
//! → change records. The keys name the entry. Of the item images (the stream
//! is NEW_AND_OLD_IMAGES) only the audit attributes are looked up (version,
//! writer, time, rollback); the value is never read, copied or logged.
//!
//! Each record is parsed on its own: one malformed record becomes one batch
//! item failure, and the rest of the batch is still delivered. A malformed
//! image only costs the audit, never the change.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::change::{ChangeAudit, ChangeRecord, Classified, Subject, valid_change_id};
use super::proto::Operation;
use crate::kinds::StoreKind;
use crate::layers::Layer;
use crate::layers::registry::REGISTRY_PARTITION;
use crate::rollouts::store::{LIVE_PARTITION, parse_live_sort_key};
use crate::routing::KeyRouter;
use crate::store::dynamodb::{
    CONFIG_SORT_PREFIX, PARTITION_KEY, SORT_KEY, VERSION_ATTRIBUTE, parse_key, partition_key,
};
use crate::validate::{ConfigKey, ServiceName, TenantId};
use crate::write::dynamodb::{
    DELETED_ATTRIBUTE, HISTORY_SORT_PREFIX, ROLLBACK_OF_ATTRIBUTE, UPDATED_AT_ATTRIBUTE,
    UPDATED_BY_ATTRIBUTE, history_sort_key_of,
};

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
    let deleters = tombstones(&batch.records);
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
                .and_then(|record| classify(&record, router))
                .map(|classified| match classified {
                    Classified::Refresh(mut change) => {
                        change.audit = audit(raw, change.operation);
                        if let (Operation::Delete, Some(from)) =
                            (change.operation, change.audit.from_version)
                        {
                            let tombstone = match &change.subject {
                                Subject::Entry(item) => Some((
                                    partition_key(&item.tenant),
                                    history_sort_key_of(&item.service, &item.key, from + 1),
                                )),
                                Subject::Shared {
                                    layer,
                                    service,
                                    key,
                                } => Some((
                                    layer.partition_key(),
                                    history_sort_key_of(service, key, from + 1),
                                )),
                                Subject::Registration(_) | Subject::Rollout(_) => None,
                            };
                            change.audit.actor = tombstone.and_then(|t| deleters.get(&t).cloned());
                        }
                        Classified::Refresh(change)
                    }
                    ignored => ignored,
                });
            ParsedRecord {
                sequence_number,
                outcome,
            }
        })
        .collect()
}

fn image_attribute<'a>(raw: &'a Value, image: &str, name: &str, kind: &str) -> Option<&'a Value> {
    raw.get("dynamodb")?.get(image)?.get(name)?.get(kind)
}

fn image_number(raw: &Value, image: &str, name: &str) -> Option<i64> {
    image_attribute(raw, image, name, "N")?
        .as_str()?
        .parse()
        .ok()
}

fn image_text<'a>(raw: &'a Value, image: &str, name: &str) -> Option<&'a str> {
    image_attribute(raw, image, name, "S")?.as_str()
}

/// Who made the change, from the item images tenant-config's writer leaves:
/// it sets `updated_by` and `updated_at` on every write, so a write whose
/// `updated_at` did not move came from elsewhere and the `updated_by` on the
/// item is an earlier writer's (journaled as unknown, not misattributed).
fn audit(raw: &Value, operation: Operation) -> ChangeAudit {
    let from_version = image_number(raw, "OldImage", VERSION_ATTRIBUTE);
    match operation {
        Operation::Delete => ChangeAudit {
            from_version,
            ..ChangeAudit::default()
        },
        _ => {
            let written_at = image_number(raw, "NewImage", UPDATED_AT_ATTRIBUTE);
            let by_writer = written_at.is_some()
                && written_at != image_number(raw, "OldImage", UPDATED_AT_ATTRIBUTE);
            ChangeAudit {
                actor: by_writer
                    .then(|| image_text(raw, "NewImage", UPDATED_BY_ATTRIBUTE))
                    .flatten()
                    .and_then(ChangeAudit::clean_actor),
                from_version,
                to_version: image_number(raw, "NewImage", VERSION_ATTRIBUTE),
                rollback_of: by_writer
                    .then(|| image_number(raw, "NewImage", ROLLBACK_OF_ATTRIBUTE))
                    .flatten(),
            }
        }
    }
}

/// The deleters the batch names: the writer's delete removes the entry and
/// inserts a tombstone history item (version + 1, `deleted`, `updated_by`) in
/// one transaction, and the mapping's filter lets tombstones through. Keyed
/// by (partition key, sort key). A delete whose tombstone lands in another
/// batch is journaled without its actor (the entry's history still has it).
fn tombstones(records: &[Value]) -> HashMap<(String, String), String> {
    records
        .iter()
        .filter(|raw| raw.get("eventName").and_then(Value::as_str) == Some("INSERT"))
        .filter(|raw| {
            image_attribute(raw, "NewImage", DELETED_ATTRIBUTE, "BOOL") == Some(&Value::Bool(true))
        })
        .filter_map(|raw| {
            let key = |name: &str| raw.pointer(&format!("/dynamodb/Keys/{name}/S"))?.as_str();
            let sk = key(SORT_KEY).filter(|sk| sk.starts_with(HISTORY_SORT_PREFIX))?;
            let actor =
                ChangeAudit::clean_actor(image_text(raw, "NewImage", UPDATED_BY_ATTRIBUTE)?)?;
            Some(((key(PARTITION_KEY)?.to_owned(), sk.to_owned()), actor))
        })
        .collect()
}

/// What an item's primary key names: a tenant's entry (`TENANT#{id}`), a
/// shared layer's (`LAYER#global`, `LAYER#tier#{tier}`), both with
/// `CONFIG#{service}#{key}`, a registration (`REGISTRY`, `TENANT#{id}`) or
/// a live rollout (`ROLLOUTS`, `{layer}#{service}#{key}`).
fn subject_of(pk: &str, sk: &str) -> Result<Subject, String> {
    if pk == LIVE_PARTITION {
        return parse_live_sort_key(sk)
            .map(Subject::Rollout)
            .ok_or_else(|| format!("a live rollout item whose sort key '{sk}' names no entry"));
    }
    if pk == REGISTRY_PARTITION {
        let tenant = sk
            .strip_prefix("TENANT#")
            .ok_or("a registry item that names no tenant")?;
        return TenantId::parse(tenant)
            .map(Subject::Registration)
            .map_err(|e| e.to_string());
    }
    if let Some(layer) = Layer::from_partition_key(pk) {
        let (service, key) = sk
            .strip_prefix(CONFIG_SORT_PREFIX)
            .and_then(|rest| rest.split_once('#'))
            .ok_or("sort key is not CONFIG#{service}#{key}")?;
        let service = ServiceName::parse(service).map_err(|e| e.to_string())?;
        let key = ConfigKey::parse(key).map_err(|e| e.to_string())?;
        return Ok(Subject::in_layer(layer, service, key));
    }
    parse_key(pk, sk)
        .map(Subject::Entry)
        .map_err(|e| e.to_string())
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
    let subject = match subject_of(key(PARTITION_KEY)?, key(SORT_KEY)?) {
        Ok(subject) => subject,
        // Not a configuration entry (or not one any reader could have read).
        Err(reason) => return Ok(Classified::Ignore(format!("item key: {reason}"))),
    };
    if let Some(key) = subject.key()
        && router.route(key).ok() != Some(StoreKind::DynamoDb)
    {
        return Ok(Classified::Ignore(format!(
            "key '{key}' is not routed to DynamoDB, so no reader caches it from there"
        )));
    }
    let time_unix_ms = record
        .dynamodb
        .created_unix_secs
        .map(|secs| (secs * 1000.0) as i64)
        .unwrap_or(0);
    Ok(Classified::Refresh(ChangeRecord {
        subject,
        store: StoreKind::DynamoDb,
        operation,
        change_id: record.event_id.clone(),
        time_unix_ms,
        audit: ChangeAudit::default(),
        value_type: None,
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
    fn shared_layer_and_registry_items_are_changes_of_their_own() {
        let parsed = classify_all(vec![
            record(
                "MODIFY",
                "LAYER#global",
                "CONFIG#billing#tenant_config_limits",
                "1",
            ),
            record(
                "INSERT",
                "LAYER#tier#gold",
                "CONFIG#billing#tenant_config_limits",
                "2",
            ),
            record("MODIFY", "REGISTRY", "TENANT#tenant-a", "3"),
            record(
                "MODIFY",
                "LAYER#tier#_x",
                "CONFIG#billing#tenant_config_limits",
                "4",
            ),
            record(
                "MODIFY",
                "LAYER#global",
                "CONFIG#billing#param_config_endpoint",
                "5",
            ),
            // a rollout's live copy, whatever store its key routes to
            record(
                "MODIFY",
                "ROLLOUTS",
                "tier:gold#billing#param_config_endpoint",
                "6",
            ),
            record(
                "REMOVE",
                "ROLLOUTS",
                "global#billing#tenant_config_limits",
                "7",
            ),
            // its full record is not a change readers act on; a damaged copy neither
            record("MODIFY", "ROLLOUT#r1", "RECORD", "8"),
            record(
                "MODIFY",
                "ROLLOUTS",
                "tenant:t1#billing#tenant_config_limits",
                "9",
            ),
        ]);
        let subjects: Vec<Option<String>> = parsed
            .iter()
            .map(|p| match &p.outcome {
                Ok(Classified::Refresh(change)) => Some(change.subject.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            subjects,
            vec![
                Some("global:billing:tenant_config_limits".to_owned()),
                Some("tier:gold:billing:tenant_config_limits".to_owned()),
                Some("registration:tenant-a".to_owned()),
                // no such tier name; a key routed to Parameter Store
                None,
                None,
                Some("rollout:tier:gold:billing:param_config_endpoint".to_owned()),
                Some("rollout:global:billing:tenant_config_limits".to_owned()),
                None,
                None,
            ]
        );
    }

    #[test]
    fn the_sample_batch_names_its_entries_with_the_store_and_operation() {
        let batch: StreamBatch =
            serde_json::from_str(include_str!("../../../events/dynamodb-stream-batch.json"))
                .unwrap();
        let parsed = classify_batch(&batch, &KeyRouter::default());
        let changes: Vec<(String, Operation, String)> = parsed
            .iter()
            .filter_map(|p| match &p.outcome {
                Ok(Classified::Refresh(change)) => {
                    assert_eq!(change.store, StoreKind::DynamoDb);
                    Some((
                        change.subject.to_string(),
                        change.operation,
                        change.audit.to_string(),
                    ))
                }
                _ => None,
            })
            .collect();
        let change =
            |key: &str, operation, audit: &str| (key.to_owned(), operation, audit.to_owned());
        assert_eq!(
            changes,
            vec![
                change(
                    "tenant-a:billing:tenant_config_limits",
                    Operation::Update,
                    "v3 -> v4 by 9a8b7c6d-admin-dana"
                ),
                change(
                    "tenant-a:billing:tenant_config_theme",
                    Operation::Create,
                    "new -> v1 by 9a8b7c6d-admin-dana"
                ),
                change(
                    "tenant-b:billing:tenant_config_limits",
                    Operation::Delete,
                    "v2 -> ? by 5e4d3c2b-admin-erin"
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

    fn with_images(mut record: Value, old: Option<Value>, new: Option<Value>) -> Value {
        record["dynamodb"]["StreamViewType"] = json!("NEW_AND_OLD_IMAGES");
        if let Some(old) = old {
            record["dynamodb"]["OldImage"] = old;
        }
        if let Some(new) = new {
            record["dynamodb"]["NewImage"] = new;
        }
        record
    }

    fn image(version: i64, by: &str, at: i64) -> Value {
        json!({
            "pk": {"S": "TENANT#t1"}, "sk": {"S": "CONFIG#svc#tenant_config_x"},
            "value": {"S": "{\"max\":5}"}, "version": {"N": version.to_string()},
            "updated_by": {"S": by}, "updated_at": {"N": at.to_string()}
        })
    }

    fn audit_of(parsed: &ParsedRecord) -> ChangeAudit {
        match &parsed.outcome {
            Ok(Classified::Refresh(change)) => change.audit.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_writers_update_is_journaled_with_who_and_from_which_version_to_which() {
        // GIVEN the stream record of a write by the writer (v3 -> v4, a rollback)
        let mut new = image(4, "sub-dana", 2_000);
        new["rollback_of"] = json!({"N": "2"});
        let modify = with_images(
            record("MODIFY", "TENANT#t1", "CONFIG#svc#tenant_config_x", "1"),
            Some(image(3, "sub-bob", 1_000)),
            Some(new),
        );
        // WHEN it is classified THEN the change carries the audit
        let parsed = classify_all(vec![modify]);
        assert_eq!(
            audit_of(&parsed[0]).to_string(),
            "v3 -> v4 by sub-dana (rollback of v2)"
        );
    }

    #[test]
    fn a_write_from_elsewhere_is_not_attributed_to_the_last_writer() {
        // GIVEN a console edit that left updated_by/updated_at as they were
        let modify = with_images(
            record("MODIFY", "TENANT#t1", "CONFIG#svc#tenant_config_x", "1"),
            Some(image(3, "sub-bob", 1_000)),
            Some(image(3, "sub-bob", 1_000)),
        );
        let audit = audit_of(&classify_all(vec![modify])[0]);
        assert_eq!(audit.actor, None);
        assert_eq!(audit.to_string(), "v3 -> v3 by unknown");
    }

    #[test]
    fn a_delete_takes_its_deleter_from_the_tombstone_in_the_batch() {
        // GIVEN the writer's delete of v3: the entry's REMOVE and the v4 tombstone
        let remove = with_images(
            record("REMOVE", "TENANT#t1", "CONFIG#svc#tenant_config_x", "1"),
            Some(image(3, "sub-bob", 1_000)),
            None,
        );
        let tombstone = with_images(
            record(
                "INSERT",
                "TENANT#t1",
                "HISTORY#svc#tenant_config_x#000000000004",
                "2",
            ),
            None,
            Some(json!({"version": {"N": "4"}, "deleted": {"BOOL": true},
                        "updated_by": {"S": "sub-dana"}, "updated_at": {"N": "3000"}})),
        );
        let parsed = classify_all(vec![remove.clone(), tombstone.clone()]);
        // THEN the delete is journaled with its deleter; the tombstone is no change
        assert_eq!(audit_of(&parsed[0]).to_string(), "v3 -> ? by sub-dana");
        assert!(matches!(parsed[1].outcome, Ok(Classified::Ignore(_))));
        // A tombstone in another batch: the delete is still a change, actor unknown.
        assert_eq!(
            audit_of(&classify_all(vec![remove])[0]).to_string(),
            "v3 -> ? by unknown"
        );
        // A tombstone of another tenant's entry lends nothing.
        let mut foreign = tombstone;
        foreign["dynamodb"]["Keys"]["pk"] = json!({"S": "TENANT#t2"});
        let remove_again = with_images(
            record("REMOVE", "TENANT#t1", "CONFIG#svc#tenant_config_x", "3"),
            Some(image(3, "sub-bob", 1_000)),
            None,
        );
        assert_eq!(
            audit_of(&classify_all(vec![remove_again, foreign])[0]).actor,
            None
        );
    }

    #[test]
    fn a_malformed_image_costs_the_audit_never_the_change() {
        let modify = with_images(
            record("MODIFY", "TENANT#t1", "CONFIG#svc#tenant_config_x", "1"),
            Some(json!("not an image")),
            Some(json!({"version": {"N": "four"}, "updated_by": {"N": "7"}, "updated_at": 5})),
        );
        assert_eq!(
            audit_of(&classify_all(vec![modify])[0]),
            ChangeAudit::default()
        );
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
