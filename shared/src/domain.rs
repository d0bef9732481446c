//! Domain types: what is read, and what a store answers.

use std::fmt;

use serde_json::Value;

use crate::error::ConfigError;
pub use crate::kinds::StoreKind;
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// One configuration entry of one tenant: the unit that is stored, cached and
/// invalidated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemKey {
    pub tenant: TenantId,
    pub service: ServiceName,
    pub key: ConfigKey,
}

impl ItemKey {
    pub fn new(tenant: TenantId, service: ServiceName, key: ConfigKey) -> Self {
        Self {
            tenant,
            service,
            key,
        }
    }

    /// Validates each part, refusing exactly what the API refuses.
    pub fn parse(tenant: &str, service: &str, key: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(
            TenantId::parse(tenant)?,
            ServiceName::parse(service)?,
            ConfigKey::parse(key)?,
        ))
    }

    /// Cache key `tenantId:service:key`. Unambiguous because ':' cannot occur
    /// in any validated part.
    pub fn cache_key(&self) -> String {
        format!("{}:{}:{}", self.tenant, self.service, self.key)
    }
}

/// Whether a read may decrypt SecureString values. Only the secure route
/// (never cached anywhere) reads with [`ReadMode::Decrypt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    Plain,
    Decrypt,
}

/// How a value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Text or a JSON document.
    Plain,
    /// A list of strings (Parameter Store StringList).
    StringList,
    /// A SecureString (Parameter Store only); never echoed back.
    Secret,
}

impl ValueKind {
    /// Parameter Store's name of the type (`detail.type` of its change events).
    pub fn parameter_type(self) -> &'static str {
        match self {
            ValueKind::Plain => "String",
            ValueKind::StringList => "StringList",
            ValueKind::Secret => "SecureString",
        }
    }

    pub fn from_parameter_type(name: &str) -> Option<Self> {
        match name {
            "String" => Some(ValueKind::Plain),
            "StringList" => Some(ValueKind::StringList),
            "SecureString" => Some(ValueKind::Secret),
            _ => None,
        }
    }
}

/// What a change notification says about an entry, for the caches that drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// Created or updated; with the type it has now, when the source says
    /// (Parameter Store's change events do; DynamoDB holds plain values only).
    Updated(Option<ValueKind>),
    Deleted,
}

/// Who wrote a stored version and when, as far as the store says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrittenBy {
    pub actor: Option<String>,
    pub at_ms: Option<i64>,
}

/// A non-secret value: safe to cache and to put in the API Gateway cache.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainValue {
    pub value: Value,
    pub version: Option<i64>,
    /// How it is stored (`Plain` or `StringList`): a change of type drops a
    /// last good value (see [`crate::cache`]).
    pub kind: ValueKind,
    /// Who wrote this version and when, where the store says (what explain
    /// answers): DynamoDB keeps both on the item, Parameter Store the time.
    pub written: WrittenBy,
}

/// A decrypted SecureString. Its `Debug` is redacted so it cannot leak into logs.
#[derive(Clone, PartialEq)]
pub struct SecretValue {
    value: Value,
    pub version: Option<i64>,
}

impl SecretValue {
    pub fn new(value: Value, version: Option<i64>) -> Self {
        Self { value, version }
    }

    /// The clear value, for the one place that returns it to the caller.
    pub fn expose(&self) -> &Value {
        &self.value
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// What a store found for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Plain(std::sync::Arc<PlainValue>),
    /// A SecureString. The value is present only for [`ReadMode::Decrypt`] reads.
    Secret(Option<SecretValue>),
}

/// Turns stored text into the JSON a caller receives: a stored JSON document
/// (object or array) stays a document, anything else stays a string. Text such
/// as `"42"` or `"true"` is deliberately kept a string so a value's type never
/// depends on its content by accident.
pub fn decode_text(text: &str) -> Value {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(doc) = serde_json::from_str::<Value>(text)
    {
        return doc;
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_documents_stay_documents_and_text_stays_text() {
        assert_eq!(decode_text(r#"{"a":[1,2]}"#), json!({"a": [1, 2]}));
        assert_eq!(decode_text("[1, 2]"), json!([1, 2]));
        assert_eq!(decode_text("42"), json!("42"));
        assert_eq!(decode_text("{not json"), json!("{not json"));
        assert_eq!(decode_text("postgres://db"), json!("postgres://db"));
    }

    #[test]
    fn secret_values_are_redacted_in_debug_output() {
        let secret = SecretValue::new(json!("hunter2"), Some(1));
        let shown = format!("{:?}", Found::Secret(Some(secret)));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn cache_key_is_tenant_service_key() {
        let key = ItemKey::new(
            TenantId::parse("t1").unwrap(),
            ServiceName::parse("billing").unwrap(),
            ConfigKey::parse("tenant_config_x").unwrap(),
        );
        assert_eq!(key.cache_key(), "t1:billing:tenant_config_x");
    }
}
