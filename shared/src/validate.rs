//! Strict validation of every identifier that can reach a store.
//!
//! Tenant ids, service names and keys end up inside DynamoDB key strings
//! (`TENANT#{tenant}`, `CONFIG#{service}#{key}`) and SSM paths
//! (`/config-service/{tenant}/{service}/{key}`). Anything outside
//! `[A-Za-z0-9_.-]` could change the meaning of those strings (`#`, `/`, `:`),
//! so it is rejected here, before any adapter sees it. The newtypes below can
//! only be built through these checks, so holding one is proof of validity.

use std::fmt;

use crate::error::ConfigError;
pub use crate::kinds::Field;

/// Longest accepted tenant id.
pub const MAX_TENANT_LEN: usize = 64;
/// Longest accepted service name.
pub const MAX_SERVICE_LEN: usize = 64;
/// Longest accepted key (prefix included).
pub const MAX_KEY_LEN: usize = 128;
/// Longest accepted tier name.
pub const MAX_TIER_LEN: usize = 32;
/// Tenant ids starting with this are refused: the shared layers' names
/// start with it in the stores (`{root}/_global/...`), so no tenant id can
/// ever name a shared layer (see [`crate::layers`]).
pub const RESERVED_PREFIX: char = '_';

fn check(field: Field, raw: &str, max_len: usize) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidInput {
        field,
        reason: reason.to_owned(),
    };
    if raw.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if raw.len() > max_len {
        return Err(invalid(&format!("must be at most {max_len} characters")));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(invalid("may only contain A-Z a-z 0-9 _ . -"));
    }
    if raw.starts_with('.') || raw.contains("..") {
        return Err(invalid("must not start with '.' or contain '..'"));
    }
    if matches!(field, Field::Tenant | Field::Tier) && raw.starts_with(RESERVED_PREFIX) {
        return Err(invalid(&format!(
            "must not start with '{RESERVED_PREFIX}' (reserved for shared layers)"
        )));
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $field:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `raw` and wraps it.
            pub fn parse(raw: &str) -> Result<Self, ConfigError> {
                check($field, raw, $max)?;
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

validated_name!(
    /// A tenant id, taken only from a verified token's `custom:tenantId` claim.
    TenantId,
    Field::Tenant,
    MAX_TENANT_LEN
);
validated_name!(
    /// The service a configuration key belongs to.
    ServiceName,
    Field::Service,
    MAX_SERVICE_LEN
);
validated_name!(
    /// A configuration key; its prefix decides the store (see [`crate::routing`]).
    ConfigKey,
    Field::Key,
    MAX_KEY_LEN
);
validated_name!(
    /// A tier: the shared layer between the global layer and the tenants
    /// registered in it (`free`, `gold`, ...).
    TierName,
    Field::Tier,
    MAX_TIER_LEN
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        for ok in [
            "a",
            "tenant-A_1.prod",
            "tenant_config_db.url",
            &"x".repeat(64),
        ] {
            assert!(ServiceName::parse(ok).is_ok(), "{ok} should be valid");
        }
        assert!(ConfigKey::parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn rejects_anything_that_could_change_a_store_key_or_path() {
        for bad in [
            "", "a/b", "a#b", "a:b", "..", "a..b", ".hidden", "a b", "a%2Fb", "ü", "a\0b", "a\nb",
            "a*", "a?b", "a\\b",
        ] {
            let err = ConfigKey::parse(bad).expect_err(bad);
            assert!(matches!(
                err,
                ConfigError::InvalidInput {
                    field: Field::Key,
                    ..
                }
            ));
        }
    }

    #[test]
    fn enforces_length_limits_per_field() {
        assert!(TenantId::parse(&"t".repeat(MAX_TENANT_LEN + 1)).is_err());
        assert!(ServiceName::parse(&"s".repeat(MAX_SERVICE_LEN + 1)).is_err());
        assert!(ConfigKey::parse(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn error_message_names_the_field() {
        let err = TenantId::parse("a/b").unwrap_err();
        assert!(err.to_string().contains("tenant"), "{err}");
    }

    #[test]
    fn no_tenant_id_or_tier_can_name_a_shared_layer() {
        for reserved in ["_global", "_tiers", "_"] {
            let err = TenantId::parse(reserved).expect_err(reserved);
            assert!(err.to_string().contains("reserved"), "{err}");
            assert!(TierName::parse(reserved).is_err(), "{reserved}");
        }
        // the same names without the prefix are ordinary tenants and tiers
        assert!(TenantId::parse("global").is_ok());
        assert!(TierName::parse("gold").is_ok());
        assert!(TierName::parse(&"g".repeat(MAX_TIER_LEN + 1)).is_err());
        // services and keys keep the whole charset
        assert!(ConfigKey::parse("_k").is_ok());
    }
}
