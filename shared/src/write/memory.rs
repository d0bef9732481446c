//! The writer port over [`MemoryStore`], for tests and benchmarks: the same
//! version rules as the AWS adapters (conditional, versions never reused,
//! history newest first, secrets never returned).

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Actor, ConfigWriter, Expected, NewValue, ValueKind, VersionRecord, WriteError, Written,
    deletable, now_ms, replaceable,
};
use crate::domain::{Found, PlainValue, SecretValue, StoreKind};
use crate::layers::EntryKey;
use crate::store::{ConfigStore, MemoryStore};

fn version_of(found: &Found) -> i64 {
    match found {
        Found::Plain(value) => value.version.unwrap_or(0),
        Found::Secret(secret) => secret.as_ref().and_then(|s| s.version).unwrap_or(0),
    }
}

impl MemoryStore {
    fn check_expected(
        &self,
        item: &EntryKey,
        expected: Expected,
    ) -> Result<Option<i64>, WriteError> {
        replaceable(
            self.entry(&item.cache_key()).map(|f| version_of(&f)),
            expected,
        )
    }

    fn last_version(&self, item: &EntryKey) -> i64 {
        self.history
            .lock()
            .ok()
            .and_then(|h| {
                h.get(&item.cache_key())
                    .and_then(|v| v.last())
                    .map(|r| r.version)
            })
            .unwrap_or(0)
    }

    fn record(&self, item: &EntryKey, record: VersionRecord) {
        if let Ok(mut history) = self.history.lock() {
            history.entry(item.cache_key()).or_default().push(record);
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
        value.check(ConfigStore::kind(self))?;
        self.behave().await?;
        let previous = self.check_expected(item, expected)?;
        let version = previous.unwrap_or(0).max(self.last_version(item)) + 1;
        let found = match value.kind {
            ValueKind::Secret => {
                if let Ok(mut secrets) = self.secret_versions.lock() {
                    secrets.insert((item.cache_key(), version), value.stored_text().to_owned());
                }
                Found::Secret(Some(SecretValue::new(
                    value.read_back_in(ConfigStore::kind(self)),
                    Some(version),
                )))
            }
            kind => Found::Plain(Arc::new(PlainValue {
                value: value.read_back_in(ConfigStore::kind(self)),
                version: Some(version),
                kind,
                written: crate::domain::WrittenBy {
                    actor: Some(actor.0.clone()),
                    at_ms: Some(now_ms()),
                },
            })),
        };
        self.put_entry(item, found);
        self.record(
            item,
            VersionRecord {
                version,
                value: (value.kind != ValueKind::Secret)
                    .then(|| value.read_back_in(ConfigStore::kind(self))),
                kind: value.kind,
                written_at_ms: now_ms(),
                actor: Some(actor.0.clone()),
                deleted: false,
                rollback_of,
            },
        );
        Ok(Written { version, previous })
    }
}

#[async_trait]
impl ConfigWriter for MemoryStore {
    fn kind(&self) -> StoreKind {
        ConfigStore::kind(self)
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
        self.behave().await?;
        let current = self.entry(&item.cache_key()).map(|f| version_of(&f));
        let version = deletable(current, expected)?;
        self.remove_entry(item);
        self.record(
            item,
            VersionRecord {
                version: version + 1,
                value: None,
                kind: ValueKind::Plain,
                written_at_ms: now_ms(),
                actor: Some(actor.0.clone()),
                deleted: true,
                rollback_of: None,
            },
        );
        Ok(version)
    }

    async fn history(
        &self,
        item: &EntryKey,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, WriteError> {
        self.behave().await?;
        Ok(self
            .history
            .lock()
            .ok()
            .and_then(|h| h.get(&item.cache_key()).cloned())
            .unwrap_or_default()
            .into_iter()
            .rev()
            .take(limit)
            .collect())
    }

    async fn rollback(
        &self,
        item: &EntryKey,
        to: i64,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError> {
        let old = ConfigWriter::history(self, item, usize::MAX)
            .await?
            .into_iter()
            .find(|r| r.version == to)
            .ok_or(WriteError::UnknownVersion(to))?;
        if old.deleted {
            return Err(WriteError::Invalid(format!(
                "version {to} is a deletion; nothing to restore"
            )));
        }
        let restored = match (old.kind, &old.value) {
            // A boolean or number is restored as one (where the store keeps types).
            (
                ValueKind::Plain,
                Some(scalar @ (serde_json::Value::Bool(_) | serde_json::Value::Number(_))),
            ) => NewValue::json(scalar, ValueKind::Plain)?,
            (ValueKind::Secret, _) => self
                .secret_versions
                .lock()
                .ok()
                .and_then(|s| s.get(&(item.cache_key(), to)).cloned())
                .map(|text| NewValue::text(text, old.kind))
                .ok_or(WriteError::UnknownVersion(to))?,
            (ValueKind::StringList, Some(serde_json::Value::Array(items))) => NewValue::text(
                items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                old.kind,
            ),
            (_, Some(serde_json::Value::String(s))) => NewValue::text(s.clone(), old.kind),
            (_, Some(other)) => NewValue::text(other.to_string(), old.kind),
            (_, None) => return Err(WriteError::UnknownVersion(to)),
        };
        self.write(item, &restored, expected, actor, Some(to)).await
    }
}
