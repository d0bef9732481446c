//! What the client holds: the watched keys' values as the agent last sent
//! them, typed once when they arrive so a read copies nothing but a
//! reference count.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::proto::{ConfigValue, WatchChange, WatchSnapshot};

/// One key's value, as the agent sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Typed,
    /// The store's version of the value, where it keeps one.
    pub version: Option<i64>,
    /// `"dynamodb"` or `"parameter-store"`.
    pub source: String,
    /// Set when the agent's store was failing and it sent its last good
    /// value: how old that was when sent.
    pub stale_for: Option<Duration>,
}

/// A value by its JSON type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Typed {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    /// An object, an array or null.
    Json(Arc<Value>),
}

impl Typed {
    fn from_json(value: Value) -> Self {
        match value {
            Value::Bool(b) => Typed::Bool(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Typed::Int(i),
                None => Typed::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Typed::Str(s.into()),
            other => Typed::Json(Arc::new(other)),
        }
    }

    /// The JSON type's name, for a mismatch.
    pub fn type_name(&self) -> &'static str {
        match self {
            Typed::Bool(_) => "boolean",
            Typed::Int(_) => "integer",
            Typed::Float(_) => "number",
            Typed::Str(_) => "string",
            Typed::Json(value) => match value.as_ref() {
                Value::Object(_) => "object",
                Value::Array(_) => "array",
                _ => "null",
            },
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Typed::Bool(b) => Value::Bool(*b),
            Typed::Int(i) => Value::from(*i),
            Typed::Float(f) => Value::from(*f),
            Typed::Str(s) => Value::String(s.to_string()),
            Typed::Json(value) => value.as_ref().clone(),
        }
    }
}

/// Why a key could not be read from memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("{0} has no value")]
    NotFound(String),
    #[error("{0} is not among the keys this client watches")]
    NotWatched(String),
    #[error("{0} holds a SecureString: read it with ConfigClient::secret (never cached)")]
    Sensitive(String),
    #[error("{key} holds a {found}, not a {expected}")]
    TypeMismatch {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("the agent no longer serves this client: {0}")]
    Refused(String),
}

#[derive(Default)]
struct Held {
    values: HashMap<String, Arc<Entry>>,
    sensitive: Vec<String>,
    /// Set when the agent refused the stream for good (e.g. the tenant was
    /// made inactive): nothing is served.
    refused: Option<String>,
}

/// The values of one watch, read by any number of threads, written by the
/// stream's task.
pub struct Values {
    /// The keys watched; `None`: the whole service.
    keys: Option<Vec<String>>,
    held: RwLock<Held>,
}

/// What an event changed: a key and its new value (`None`: it has none
/// now, or it became a SecureString).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub value: Option<Arc<Entry>>,
}

impl Values {
    pub(crate) fn new(keys: Option<Vec<String>>) -> Self {
        Self {
            keys,
            held: RwLock::new(Held::default()),
        }
    }

    /// The entry of `key`.
    pub fn entry(&self, key: &str) -> Result<Arc<Entry>, ReadError> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = held.values.get(key) {
            return Ok(Arc::clone(entry));
        }
        Err(self.absent(&held, key))
    }

    #[cold]
    fn absent(&self, held: &Held, key: &str) -> ReadError {
        if let Some(reason) = &held.refused {
            return ReadError::Refused(reason.clone());
        }
        if held.sensitive.iter().any(|k| k == key) {
            return ReadError::Sensitive(key.to_owned());
        }
        if let Some(keys) = &self.keys
            && !keys.iter().any(|k| k == key)
        {
            return ReadError::NotWatched(key.to_owned());
        }
        ReadError::NotFound(key.to_owned())
    }

    /// Every value held, by key.
    pub fn all(&self) -> HashMap<String, Arc<Entry>> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        held.values.clone()
    }

    /// Replaces everything with a snapshot; returns the keys that differ.
    pub(crate) fn apply_snapshot(&self, snapshot: WatchSnapshot) -> Vec<Change> {
        let mut fresh: HashMap<String, Arc<Entry>> = snapshot
            .values
            .into_iter()
            .filter_map(entry)
            .map(|e| (e.key.clone(), Arc::new(e)))
            .collect();
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        for (key, old) in &held.values {
            match fresh.get(key) {
                Some(new) if same(old, new) => {
                    // Keep the held Arc: readers holding it see no change.
                    let kept = Arc::clone(old);
                    fresh.insert(key.clone(), kept);
                }
                Some(new) => changed.push(Change {
                    key: key.clone(),
                    value: Some(Arc::clone(new)),
                }),
                None => changed.push(Change {
                    key: key.clone(),
                    value: None,
                }),
            }
        }
        for (key, new) in &fresh {
            if !held.values.contains_key(key) {
                changed.push(Change {
                    key: key.clone(),
                    value: Some(Arc::clone(new)),
                });
            }
        }
        held.values = fresh;
        held.sensitive = snapshot.sensitive;
        held.refused = None;
        changed
    }

    /// Applies one change; returns it unless it changed nothing.
    pub(crate) fn apply_change(&self, change: WatchChange) -> Option<Change> {
        let new = change.value.and_then(entry).map(Arc::new);
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let old = match &new {
            Some(new) => held.values.insert(change.key.clone(), Arc::clone(new)),
            None => held.values.remove(&change.key),
        };
        match (&old, &new) {
            (Some(old), Some(new)) if same(old, new) => {
                held.values.insert(change.key, Arc::clone(old));
                None
            }
            (None, None) => None,
            _ => Some(Change {
                key: change.key,
                value: new,
            }),
        }
    }

    /// The agent refused the stream for good: drop everything, answer
    /// `reason` to every read.
    pub(crate) fn refuse(&self, reason: String) -> Vec<Change> {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let dropped = held
            .values
            .drain()
            .map(|(key, _)| Change { key, value: None })
            .collect();
        held.sensitive.clear();
        held.refused = Some(reason);
        dropped
    }
}

/// A stale mark's age alone is no change (as the agent decides); a value
/// held stale that arrives fresh is.
fn same(old: &Entry, new: &Entry) -> bool {
    old.value == new.value
        && old.version == new.version
        && old.source == new.source
        && (old.stale_for.is_none() || new.stale_for.is_some())
}

/// An entry from the wire; a value that is not JSON is dropped with a log
/// line (the agent never sends one).
fn entry(value: ConfigValue) -> Option<Entry> {
    match serde_json::from_str::<Value>(&value.value_json) {
        Ok(json) => Some(Entry {
            value: Typed::from_json(json),
            key: value.key,
            version: value.version,
            source: value.source,
            stale_for: value.stale_age_ms.map(Duration::from_millis),
        }),
        Err(error) => {
            tracing::warn!(key = %value.key, %error, "the agent sent a value that is not JSON; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(key: &str, json: &str, version: i64) -> ConfigValue {
        ConfigValue {
            key: key.into(),
            value_json: json.into(),
            source: "dynamodb".into(),
            version: Some(version),
            stale_age_ms: None,
        }
    }

    fn snapshot(values: Vec<ConfigValue>, sensitive: &[&str]) -> WatchSnapshot {
        WatchSnapshot {
            values,
            missing: vec![],
            sensitive: sensitive.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn values_arrive_typed_and_absent_keys_say_why() {
        // GIVEN a whole-service watch's snapshot
        let values = Values::new(None);
        let changed = values.apply_snapshot(snapshot(
            vec![
                wire("tenant_config_beta", "true", 1),
                wire("tenant_config_limit", "250", 2),
                wire("tenant_config_ratio", "0.25", 3),
                wire("tenant_config_name", "\"gold\"", 4),
                wire("tenant_config_doc", r#"{"a":[1,2]}"#, 5),
            ],
            &["param_config_db_password"],
        ));
        assert_eq!(changed.len(), 5);
        // THEN each value is typed by its JSON type
        let typed = |key| values.entry(key).unwrap().value.clone();
        assert_eq!(typed("tenant_config_beta"), Typed::Bool(true));
        assert_eq!(typed("tenant_config_limit"), Typed::Int(250));
        assert_eq!(typed("tenant_config_ratio"), Typed::Float(0.25));
        assert_eq!(typed("tenant_config_name"), Typed::Str("gold".into()));
        assert_eq!(typed("tenant_config_doc").type_name(), "object");
        // AND a secret, a missing key and an unwatched key are told apart
        assert_eq!(
            values.entry("param_config_db_password").unwrap_err(),
            ReadError::Sensitive("param_config_db_password".into())
        );
        assert!(matches!(
            values.entry("tenant_config_nope"),
            Err(ReadError::NotFound(_))
        ));
        let named = Values::new(Some(vec!["tenant_config_beta".into()]));
        assert!(matches!(
            named.entry("tenant_config_other"),
            Err(ReadError::NotWatched(_))
        ));
        assert!(matches!(
            named.entry("tenant_config_beta"),
            Err(ReadError::NotFound(_))
        ));
    }

    #[test]
    fn changes_and_snapshots_report_only_what_differs() {
        let values = Values::new(None);
        values.apply_snapshot(snapshot(
            vec![wire("k_a", "1", 1), wire("k_b", "2", 1)],
            &[],
        ));
        // WHEN the same value comes again, marked stale THEN no change
        let mut stale = wire("k_a", "1", 1);
        stale.stale_age_ms = Some(500);
        assert_eq!(
            values.apply_change(WatchChange {
                key: "k_a".into(),
                value: Some(stale)
            }),
            None
        );
        // WHEN a value changes THEN it is reported and served
        let change = values
            .apply_change(WatchChange {
                key: "k_a".into(),
                value: Some(wire("k_a", "7", 2)),
            })
            .unwrap();
        assert_eq!(change.key, "k_a");
        assert_eq!(change.value.unwrap().value, Typed::Int(7));
        // WHEN a delete comes THEN the key is gone
        assert!(
            values
                .apply_change(WatchChange {
                    key: "k_b".into(),
                    value: None
                })
                .is_some()
        );
        assert!(matches!(values.entry("k_b"), Err(ReadError::NotFound(_))));
        // WHEN a snapshot after a reset holds one new key and drops another
        let changed = values.apply_snapshot(snapshot(vec![wire("k_c", "\"x\"", 1)], &[]));
        let mut keys: Vec<_> = changed
            .iter()
            .map(|c| (c.key.as_str(), c.value.is_some()))
            .collect();
        keys.sort();
        assert_eq!(keys, vec![("k_a", false), ("k_c", true)]);
        // WHEN the agent refuses the stream for good THEN nothing is served
        values.refuse("the tenant is not active".into());
        assert!(matches!(values.entry("k_c"), Err(ReadError::Refused(_))));
    }
}
