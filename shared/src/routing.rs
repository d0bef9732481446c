//! Prefix routing: a key's prefix decides which store holds it.

use crate::error::ConfigError;
use crate::kinds::{Field, StoreKind};
use crate::validate::ConfigKey;

/// Default prefix of keys kept in DynamoDB.
pub const DEFAULT_DYNAMODB_PREFIX: &str = "tenant_config_";
/// Default prefix of keys kept in Parameter Store.
pub const DEFAULT_PARAMETER_PREFIX: &str = "param_config_";

/// Why two key prefixes cannot route keys unambiguously.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("store prefixes must not be empty")]
    Empty,
    #[error("store prefixes '{dynamodb}' and '{parameter}' overlap")]
    Overlap { dynamodb: String, parameter: String },
}

#[derive(Debug, Clone)]
pub struct KeyRouter {
    dynamodb_prefix: String,
    parameter_prefix: String,
}

impl Default for KeyRouter {
    fn default() -> Self {
        Self {
            dynamodb_prefix: DEFAULT_DYNAMODB_PREFIX.to_owned(),
            parameter_prefix: DEFAULT_PARAMETER_PREFIX.to_owned(),
        }
    }
}

impl KeyRouter {
    /// Builds a router. Prefixes must be non-empty and must not be prefixes of
    /// each other, or a key could belong to both stores.
    pub fn new(dynamodb_prefix: &str, parameter_prefix: &str) -> Result<Self, PrefixError> {
        if dynamodb_prefix.is_empty() || parameter_prefix.is_empty() {
            return Err(PrefixError::Empty);
        }
        if dynamodb_prefix.starts_with(parameter_prefix)
            || parameter_prefix.starts_with(dynamodb_prefix)
        {
            return Err(PrefixError::Overlap {
                dynamodb: dynamodb_prefix.to_owned(),
                parameter: parameter_prefix.to_owned(),
            });
        }
        Ok(Self {
            dynamodb_prefix: dynamodb_prefix.to_owned(),
            parameter_prefix: parameter_prefix.to_owned(),
        })
    }

    /// The store for `key`, or 400 when no prefix matches (or only the prefix is given).
    pub fn route(&self, key: &ConfigKey) -> Result<StoreKind, ConfigError> {
        let key = key.as_str();
        let store = if key.starts_with(&self.dynamodb_prefix) {
            (key.len() > self.dynamodb_prefix.len()).then_some(StoreKind::DynamoDb)
        } else if key.starts_with(&self.parameter_prefix) {
            (key.len() > self.parameter_prefix.len()).then_some(StoreKind::ParameterStore)
        } else {
            None
        };
        store.ok_or_else(|| ConfigError::InvalidInput {
            field: Field::Key,
            reason: format!(
                "must start with '{}' or '{}' followed by a name",
                self.dynamodb_prefix, self.parameter_prefix
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> ConfigKey {
        ConfigKey::parse(raw).unwrap()
    }

    #[test]
    fn routes_by_prefix() {
        let router = KeyRouter::default();
        assert_eq!(
            router.route(&key("tenant_config_db")).unwrap(),
            StoreKind::DynamoDb
        );
        assert_eq!(
            router.route(&key("param_config_flags")).unwrap(),
            StoreKind::ParameterStore
        );
    }

    #[test]
    fn unknown_prefix_or_bare_prefix_is_a_bad_request() {
        let router = KeyRouter::default();
        for raw in [
            "other_key",
            "tenant_config_",
            "param_config_",
            "Tenant_config_x",
        ] {
            let err = router.route(&key(raw)).unwrap_err();
            assert_eq!(err.status(), 400, "{raw}");
        }
    }

    #[test]
    fn prefixes_are_configurable_and_must_not_overlap() {
        let router = KeyRouter::new("db.", "ps.").unwrap();
        assert_eq!(router.route(&key("db.x")).unwrap(), StoreKind::DynamoDb);
        assert!(router.route(&key("tenant_config_x")).is_err());
        assert!(KeyRouter::new("cfg_", "cfg_secret_").is_err());
        assert!(KeyRouter::new("", "p_").is_err());
    }
}
