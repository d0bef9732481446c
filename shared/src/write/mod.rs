//! The writer port: every write in the product (the admin CLI, the local
//! stack's seeding, the tests) goes through [`ConfigWriter`], so each one is
//! versioned, checked against the version the writer read, recorded in the
//! entry's history with who made it, and routed exactly like reads.
//!
//! - DynamoDB ([`dynamodb`]): the entry and a history item are written in one
//!   transaction, conditional on the expected version. History items live in
//!   the tenant's partition under `HISTORY#{service}#{key}#{version}` (no
//!   reader, stream filter or listing looks there) and expire after
//!   [`HISTORY_RETENTION`].
//! - Parameter Store ([`ssm`]): versions and history are native (the last 100
//!   versions); the writer is kept in the version's description. Parameter
//!   Store has no conditional write: the writer claims the key's version lock
//!   in DynamoDB first ([`lock`], [`lock_table`]), so the expected version is
//!   checked and written while no other writer can change it. Without locks
//!   the version is checked just before the write, and a write that raced
//!   into that window is reported as a conflict afterwards (both land).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use thiserror::Error;

use crate::domain::StoreKind;
use crate::error::{ConfigError, StoreError};
use crate::kinds::Field;
use crate::layers::EntryKey;

pub mod dynamodb;
pub mod lock;
pub mod lock_table;
pub mod memory;
pub mod ssm;

pub use dynamodb::DynamoDbWriter;
pub use lock::{MemoryVersionLocks, VersionLocks};
pub use lock_table::DynamoDbVersionLocks;
pub use ssm::ParameterWriter;

/// How long DynamoDB keeps an entry's previous versions.
pub const HISTORY_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Most bytes of one stored value (DynamoDB items stop at 400 KB, standard
/// parameters at 4 KB: the store refuses what it cannot hold).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

pub use crate::domain::ValueKind;

/// A value to store, as the text the store keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct NewValue {
    text: String,
    pub kind: ValueKind,
    /// The text is a JSON boolean or number, read back as one where the
    /// store keeps types (DynamoDB); Parameter Store keeps text only.
    scalar: bool,
}

impl std::fmt::Debug for NewValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ValueKind::Secret => write!(f, "NewValue(Secret, <redacted>)"),
            kind => write!(f, "NewValue({kind:?}, {:?})", self.text),
        }
    }
}

impl NewValue {
    /// Text as given (a JSON document stays a document when read back).
    pub fn text(text: impl Into<String>, kind: ValueKind) -> Self {
        Self {
            text: text.into(),
            kind,
            scalar: false,
        }
    }

    /// A JSON value as it is read back: strings as their text, anything else
    /// as JSON text; a list of strings under [`ValueKind::StringList`].
    pub fn json(value: &Value, kind: ValueKind) -> Result<Self, WriteError> {
        let text = match (value, kind) {
            (Value::Array(items), ValueKind::StringList) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(s) if !s.contains(',') => parts.push(s.to_owned()),
                        _ => {
                            return Err(WriteError::Invalid(
                                "a StringList is an array of strings without commas".to_owned(),
                            ));
                        }
                    }
                }
                parts.join(",")
            }
            (_, ValueKind::StringList) => {
                return Err(WriteError::Invalid(
                    "a StringList is an array of strings".to_owned(),
                ));
            }
            (Value::String(s), _) => s.clone(),
            (other, _) => other.to_string(),
        };
        let scalar = kind == ValueKind::Plain && matches!(value, Value::Bool(_) | Value::Number(_));
        let text = match value {
            // A float without a fraction is stored as the integer it is:
            // DynamoDB keeps numbers normalised (1.0 reads back as 1), and
            // what a schema or a blast radius judged must be what is read.
            Value::Number(n) if scalar => normalised_number(n)?,
            _ => text,
        };
        Ok(Self { text, kind, scalar })
    }

    /// The JSON boolean or number this value is, if it is one (DynamoDB
    /// stores it as BOOL or N, so it reads back with its type).
    pub fn scalar(&self) -> Option<Value> {
        self.scalar
            .then(|| serde_json::from_str(&self.text).ok())
            .flatten()
    }

    /// The stored text (for adapters).
    pub fn stored_text(&self) -> &str {
        &self.text
    }

    /// The value readers of `store` will get (what a schema checks): a
    /// boolean or number keeps its type in DynamoDB and is text in
    /// Parameter Store.
    pub fn read_back_in(&self, store: StoreKind) -> Value {
        if store == StoreKind::DynamoDb
            && let Some(scalar) = self.scalar()
        {
            return scalar;
        }
        self.read_back_as_text()
    }

    fn read_back_as_text(&self) -> Value {
        match self.kind {
            ValueKind::StringList => Value::Array(
                self.text
                    .split(',')
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
            _ => crate::domain::decode_text(&self.text),
        }
    }

    pub(crate) fn check(&self, store: StoreKind) -> Result<(), WriteError> {
        if self.text.len() > MAX_VALUE_BYTES {
            return Err(WriteError::Invalid(format!(
                "a value holds at most {MAX_VALUE_BYTES} bytes"
            )));
        }
        if self.text.is_empty() && store == StoreKind::ParameterStore {
            return Err(WriteError::Invalid(
                "Parameter Store cannot hold an empty value".to_owned(),
            ));
        }
        if store == StoreKind::DynamoDb && self.kind != ValueKind::Plain {
            return Err(WriteError::Invalid(
                "DynamoDB keys hold plain values; use a Parameter Store key for lists and secrets"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// Which version a write expects to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever is there (or nothing).
    Any,
    /// Nothing: create only.
    Absent,
    /// Exactly this version (the one the writer read).
    Version(i64),
}

/// Who made a change: a token's `sub` or an IAM principal. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: i64,
    pub previous: Option<i64>,
}

/// One version of an entry, newest first in [`ConfigWriter::history`].
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub version: i64,
    /// `None` for SecureStrings (never echoed) and deletions.
    pub value: Option<Value>,
    pub kind: ValueKind,
    pub written_at_ms: i64,
    pub actor: Option<String>,
    /// This version is a deletion.
    pub deleted: bool,
    /// This version restored that earlier one.
    pub rollback_of: Option<i64>,
}

#[derive(Debug, Clone, Error)]
pub enum WriteError {
    #[error("version conflict: the entry is at version {current:?}")]
    Conflict { current: Option<i64> },
    #[error("{0}")]
    Invalid(String),
    #[error("no such entry")]
    NotFound,
    #[error("no version {0} in the entry's history")]
    UnknownVersion(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a refused write reaches callers (the API's status codes).
impl From<WriteError> for ConfigError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Conflict { current } => ConfigError::VersionConflict { current },
            WriteError::Invalid(reason) => ConfigError::InvalidInput {
                field: Field::Value,
                reason,
            },
            WriteError::NotFound => ConfigError::NoSuchVersion("no such entry".to_owned()),
            WriteError::UnknownVersion(v) => {
                ConfigError::NoSuchVersion(format!("no version {v} in the entry's history"))
            }
            WriteError::Store(err) => ConfigError::Store(err),
        }
    }
}

/// Writes one store's configuration.
#[async_trait]
pub trait ConfigWriter: Send + Sync {
    fn kind(&self) -> StoreKind;

    /// Stores `value` if the entry is at `expected`; the new version is one
    /// more than the previous.
    async fn put(
        &self,
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError>;

    /// Deletes the entry if it is at `expected`; returns the deleted version.
    async fn delete(
        &self,
        item: &EntryKey,
        expected: Expected,
        actor: &Actor,
    ) -> Result<i64, WriteError>;

    /// The entry's versions, newest first, at most `limit`.
    async fn history(
        &self,
        item: &EntryKey,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, WriteError>;

    /// Stores version `to`'s value again as a new version (if the entry is at
    /// `expected`).
    async fn rollback(
        &self,
        item: &EntryKey,
        to: i64,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError>;
}

/// The version a put replaces (`None`: it creates), given the entry's
/// `current` version and what the caller expects; the twin of [`deletable`].
pub(crate) fn replaceable(
    current: Option<i64>,
    expected: Expected,
) -> Result<Option<i64>, WriteError> {
    match expected {
        Expected::Any => Ok(current),
        Expected::Absent if current.is_none() => Ok(None),
        Expected::Version(v) if current == Some(v) => Ok(current),
        _ => Err(WriteError::Conflict { current }),
    }
}

/// A JSON number as DynamoDB can hold and will serve it: at most 38
/// significant digits, magnitude under 1e126 and, unless zero, at least
/// 1e-130; an integral float as its integer.
fn normalised_number(n: &serde_json::Number) -> Result<String, WriteError> {
    let out_of_range = || {
        WriteError::Invalid(
            "a number holds at most 38 significant digits, with a magnitude between 1e-130 and \
             1e126 (send it as a string to store it as text)"
                .to_owned(),
        )
    };
    if n.is_i64() || n.is_u64() {
        return Ok(n.to_string());
    }
    let f = n.as_f64().ok_or_else(out_of_range)?;
    if !f.is_finite() || f.abs() >= 1e126 || (f != 0.0 && f.abs() < 1e-130) {
        return Err(out_of_range());
    }
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        return Ok((f as i64).to_string());
    }
    Ok(n.to_string())
}

/// The version a delete removes, given the entry's `current` version and what
/// the caller expects (shared by every adapter, so they refuse alike).
pub(crate) fn deletable(current: Option<i64>, expected: Expected) -> Result<i64, WriteError> {
    match (current, expected) {
        (None, Expected::Version(_)) => Err(WriteError::Conflict { current }),
        (None, _) => Err(WriteError::NotFound),
        (Some(_), Expected::Absent) => Err(WriteError::Conflict { current }),
        (Some(v), Expected::Version(e)) if v != e => Err(WriteError::Conflict { current }),
        (Some(v), _) => Ok(v),
    }
}

/// Milliseconds since the Unix epoch, for written-at stamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn booleans_and_numbers_keep_their_type_where_the_store_keeps_types() {
        for value in [json!(true), json!(25), json!(0.25), json!(-3)] {
            let new = NewValue::json(&value, ValueKind::Plain).unwrap();
            assert_eq!(new.read_back_in(StoreKind::DynamoDb), value);
            // Parameter Store holds text: the same value reads back as text.
            assert_eq!(
                new.read_back_in(StoreKind::ParameterStore),
                Value::String(value.to_string())
            );
        }
        // Text that looks like a number stays text everywhere.
        let text = NewValue::json(&json!("42"), ValueKind::Plain).unwrap();
        assert_eq!(text.scalar(), None);
        assert_eq!(text.read_back_in(StoreKind::DynamoDb), json!("42"));
        assert_eq!(NewValue::text("true", ValueKind::Plain).scalar(), None);
        // Normalised as DynamoDB serves it, and refused past what it holds.
        let integral = NewValue::json(&json!(1.0), ValueKind::Plain).unwrap();
        assert_eq!(integral.read_back_in(StoreKind::DynamoDb), json!(1));
        for huge in [json!(1e200), json!(-1e130), json!(1e-200)] {
            assert!(NewValue::json(&huge, ValueKind::Plain).is_err(), "{huge}");
        }
    }

    #[test]
    fn json_values_become_the_text_that_reads_back_as_them() {
        let text = |v: Value, kind| NewValue::json(&v, kind).map(|n| n.text);
        assert_eq!(text(json!("dark"), ValueKind::Plain).unwrap(), "dark");
        assert_eq!(
            text(json!({"a": 1}), ValueKind::Plain).unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(text(json!(42), ValueKind::Plain).unwrap(), "42");
        assert_eq!(
            text(json!(["eu", "us"]), ValueKind::StringList).unwrap(),
            "eu,us"
        );
        assert!(text(json!(["a,b"]), ValueKind::StringList).is_err());
        assert!(text(json!("x"), ValueKind::StringList).is_err());
    }

    #[test]
    fn secrets_are_redacted_and_dynamodb_takes_plain_values_only() {
        let secret = NewValue::text("hunter2", ValueKind::Secret);
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(secret.check(StoreKind::DynamoDb).is_err());
        assert!(secret.check(StoreKind::ParameterStore).is_ok());
        let huge = NewValue::text("x".repeat(MAX_VALUE_BYTES + 1), ValueKind::Plain);
        assert!(huge.check(StoreKind::DynamoDb).is_err());
    }
}
