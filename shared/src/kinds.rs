//! The labels every layer names: which store ([`StoreKind`]) and which input
//! ([`Field`]). They import nothing, so the validated names, the domain types
//! and the error type can all use them without using each other in a circle.

use std::fmt;

/// Which backing store an error or value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StoreKind {
    #[serde(rename = "dynamodb")]
    DynamoDb,
    #[serde(rename = "parameter-store")]
    ParameterStore,
}

impl StoreKind {
    /// The `source` value reported to callers.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::DynamoDb => "dynamodb",
            StoreKind::ParameterStore => "parameter-store",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which identifier a validation failure is about; used in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Tenant,
    Service,
    Key,
    /// A tier (a shared layer between the global one and a tenant's).
    Tier,
    /// A value to write.
    Value,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Tenant => "tenant",
            Field::Service => "service",
            Field::Key => "key",
            Field::Tier => "tier",
            Field::Value => "value",
        })
    }
}
