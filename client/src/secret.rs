//! A secret read through the agent: held by the caller only, never by the
//! client, and never printed.

use std::fmt;

use serde_json::Value;

/// A decrypted value. `Debug` prints no value; there is no `Display`.
pub struct Secret {
    value: Value,
    /// The store's version of the secret.
    pub version: Option<i64>,
}

impl Secret {
    pub(crate) fn new(value: Value, version: Option<i64>) -> Self {
        Self { value, version }
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &Value {
        &self.value
    }

    /// The value as text, when it is a JSON string (a SecureString is).
    pub fn expose_str(&self) -> Option<&str> {
        self.value.as_str()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("value", &"<redacted>")
            .field("version", &self.version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new(Value::String("hunter2".into()), Some(4));
        let printed = format!("{secret:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("version: Some(4)"), "{printed}");
        assert_eq!(secret.expose_str(), Some("hunter2"));
    }
}
