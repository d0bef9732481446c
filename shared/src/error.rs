//! The one error type of the library and its mapping to HTTP status codes.
//!
//! Every failure a caller can see is a [`ConfigError`]. [`ConfigError::status`]
//! and [`ConfigError::code`] are the only place where errors become status codes
//! and machine-readable codes; the HTTP and gRPC edges both use them.

use thiserror::Error;

use crate::kinds::{Field, StoreKind};

/// Why a bearer token was refused. Shown to callers only as a short reason:
/// nothing here echoes token content.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm must be RS256")]
    DisallowedAlgorithm,
    #[error("token has no key id")]
    MissingKid,
    #[error("token signed by an unknown key")]
    UnknownKid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token audience is not an allowed client")]
    WrongAudience,
    #[error("token is not an ID token")]
    WrongTokenUse,
    #[error("signing keys are unavailable")]
    KeysUnavailable(JwksError),
}

/// Why the signing keys could not be had. Logged, never shown to callers.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("cannot build the JWKS client: {0}")]
    Client(String),
    #[error("GET {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error("JWKS at {url} is not a key set: {detail}")]
    NotAKeySet { url: String, detail: String },
    #[error(
        "the signing keys are older than their maximum age ({0:?}) and could not be fetched again"
    )]
    Expired(std::time::Duration),
}

/// A failure talking to a store. `detail` is for logs only.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("{store} is throttling requests: {detail}")]
    Throttled { store: StoreKind, detail: String },
    #[error("{store} request failed: {detail}")]
    Unavailable { store: StoreKind, detail: String },
    /// The tenant has spent its share of this process's store calls
    /// ([`crate::quota::TenantLoadLimiter`]); the store was not called.
    #[error("the tenant's share of {store} calls is spent for {retry_after:?}")]
    TenantLimited {
        store: StoreKind,
        retry_after: std::time::Duration,
    },
}

/// A per-tenant write quota ([`crate::quota::WriteQuotas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteQuota {
    /// Writes (put, delete, rollback) per minute.
    WritesPerMinute(u32),
    /// The same spread over the minute: at most this many in one second,
    /// so a minute's writes do not land on the stores in one burst.
    WritesPerSecond(u32),
    /// Keys stored at once, both stores together.
    StoredKeys(u32),
}

impl std::fmt::Display for WriteQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteQuota::WritesPerMinute(n) => write!(f, "{n} writes per minute"),
            WriteQuota::WritesPerSecond(n) => write!(f, "{n} writes per second"),
            WriteQuota::StoredKeys(n) => write!(f, "{n} stored keys"),
        }
    }
}

#[derive(Debug, Clone, Error)]
pub enum ConfigError {
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: Field, reason: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    #[error("token carries no valid tenant")]
    NoTenant,
    #[error("configuration {service}/{key} not found")]
    NotFound { service: String, key: String },
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{} holds a SecureString; read it from /v1/secure/{{service}}/{{key}} (or an agent's GetSecret)", keys.join(", "))]
    SensitiveValue { keys: Vec<String> },
    #[error("this app client is not granted this service")]
    ServiceNotGranted,
    #[error(
        "secrets are served only to callers on the agent's host (loopback), never through a proxy"
    )]
    NotLoopback,
    #[error(
        "this agent serves no secrets (AGENT_SERVE_SECRETS); read them from /v1/secure/{{service}}/{{key}}"
    )]
    SecretsNotServed,
    #[error("the tenant is not active")]
    TenantInactive,
    #[error("writing configuration needs membership of the '{group}' group")]
    NotAnAdministrator { group: String },
    /// The user pool could not confirm an administrator's membership now.
    #[error("cannot check group membership: {0}")]
    MembershipUnavailable(String),
    #[error("version conflict: the entry is at version {}", current.map_or("none (it does not exist)".to_owned(), |v| v.to_string()))]
    VersionConflict { current: Option<i64> },
    #[error("{0}")]
    NoSuchVersion(String),
    #[error("the value at '{path}' does not satisfy the schema (rule {rule})")]
    SchemaViolation { path: String, rule: String },
    #[error("the stored schema does not compile: {0}")]
    InvalidSchema(String),
    #[error("the {layer} layer locks this key: no tenant it reaches may hold its own value")]
    KeyLocked { layer: String },
    /// A shared change some tenants' effective values would not survive.
    #[error("the change would break {} tenant(s): {} failing their schema or a guardrail, {} holding their own value of a key it locks; fix them first, or force it with ?force=true (journaled)", report.failing + usize::from(report.unregistered.as_ref().is_some_and(|u| u.fails.is_some())) + report.locked_overrides, report.failing, report.locked_overrides)]
    BreaksTenants {
        report: Box<crate::layers::blast::BlastReport>,
    },
    #[error("rollout {id} of this entry is in progress: pause, abort or let it finish first")]
    RolloutInProgress { id: String },
    #[error("no rollout '{0}'")]
    NoSuchRollout(String),
    #[error("rollout {id} is {state}: {action} does not apply")]
    RolloutState {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error("the tenant's quota of {quota} is reached")]
    QuotaExceeded {
        quota: WriteQuota,
        retry_after: std::time::Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreError {
    /// Whether the store refused this caller (IAM, a disabled or
    /// inaccessible KMS key) rather than failed to answer: not an outage a
    /// last good value may ride out.
    pub fn is_denial(&self) -> bool {
        const DENIALS: &[&str] = &[
            "AccessDenied",
            "UnrecognizedClientException",
            "KMSAccessDenied",
            "KMSDisabled",
            "KMSInvalidState",
            "InvalidClientTokenId",
        ];
        match self {
            StoreError::Unavailable { detail, .. } => {
                DENIALS.iter().any(|code| detail.contains(code))
            }
            _ => false,
        }
    }
}

impl ConfigError {
    /// HTTP status for this error. The single mapping used by every edge.
    pub fn status(&self) -> u16 {
        match self {
            ConfigError::InvalidInput { .. } | ConfigError::BadRequest(_) => 400,
            ConfigError::Unauthenticated(AuthError::KeysUnavailable(_))
            | ConfigError::MembershipUnavailable(_) => 503,
            ConfigError::Unauthenticated(_) => 401,
            ConfigError::NoTenant
            | ConfigError::NotAnAdministrator { .. }
            | ConfigError::ServiceNotGranted
            | ConfigError::NotLoopback
            | ConfigError::SecretsNotServed
            | ConfigError::TenantInactive => 403,
            ConfigError::NotFound { .. }
            | ConfigError::RouteNotFound
            | ConfigError::NoSuchVersion(_)
            | ConfigError::NoSuchRollout(_) => 404,
            ConfigError::MethodNotAllowed => 405,
            ConfigError::SensitiveValue { .. }
            | ConfigError::VersionConflict { .. }
            | ConfigError::RolloutInProgress { .. }
            | ConfigError::RolloutState { .. } => 409,
            ConfigError::SchemaViolation { .. }
            | ConfigError::KeyLocked { .. }
            | ConfigError::BreaksTenants { .. } => 422,
            ConfigError::InvalidSchema(_) => 502,
            ConfigError::QuotaExceeded { .. }
            | ConfigError::Store(StoreError::TenantLimited { .. }) => 429,
            ConfigError::Store(StoreError::Throttled { .. }) => 503,
            ConfigError::Store(StoreError::Unavailable { .. }) => 502,
        }
    }

    /// Stable machine-readable code for the JSON body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::InvalidInput { .. } => "invalid_input",
            ConfigError::BadRequest(_) => "bad_request",
            ConfigError::Unauthenticated(AuthError::KeysUnavailable(_))
            | ConfigError::MembershipUnavailable(_) => "auth_unavailable",
            ConfigError::Unauthenticated(_) => "unauthorized",
            ConfigError::NoTenant | ConfigError::NotAnAdministrator { .. } => "forbidden",
            ConfigError::ServiceNotGranted => "service_not_granted",
            ConfigError::NotLoopback => "not_loopback",
            ConfigError::SecretsNotServed => "secrets_not_served",
            ConfigError::TenantInactive => "tenant_inactive",
            ConfigError::NotFound { .. }
            | ConfigError::NoSuchVersion(_)
            | ConfigError::NoSuchRollout(_) => "not_found",
            ConfigError::RolloutInProgress { .. } => "rollout_in_progress",
            ConfigError::RolloutState { .. } => "rollout_state",
            ConfigError::VersionConflict { .. } => "version_conflict",
            ConfigError::RouteNotFound => "route_not_found",
            ConfigError::MethodNotAllowed => "method_not_allowed",
            ConfigError::SensitiveValue { .. } => "sensitive_value",
            ConfigError::SchemaViolation { .. } => "schema_violation",
            ConfigError::InvalidSchema(_) => "invalid_schema",
            ConfigError::KeyLocked { .. } => "key_locked",
            ConfigError::BreaksTenants { .. } => "breaks_tenants",
            ConfigError::QuotaExceeded {
                quota: WriteQuota::WritesPerMinute(_) | WriteQuota::WritesPerSecond(_),
                ..
            }
            | ConfigError::Store(StoreError::TenantLimited { .. }) => "rate_limited",
            ConfigError::QuotaExceeded {
                quota: WriteQuota::StoredKeys(_),
                ..
            } => "key_quota_exceeded",
            ConfigError::Store(StoreError::Throttled { .. }) => "store_throttled",
            ConfigError::Store(StoreError::Unavailable { .. }) => "store_unavailable",
        }
    }

    /// How long a refused caller should wait (`Retry-After`), for 429s.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ConfigError::QuotaExceeded { retry_after, .. }
            | ConfigError::Store(StoreError::TenantLimited { retry_after, .. }) => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// Message safe to show a caller: store and key-server details stay in logs.
    pub fn public_message(&self) -> String {
        match self {
            ConfigError::Store(StoreError::Throttled { store, .. }) => {
                format!("{store} is throttling requests; retry with backoff")
            }
            ConfigError::Store(StoreError::Unavailable { store, .. }) => {
                format!("{store} request failed")
            }
            ConfigError::Unauthenticated(AuthError::KeysUnavailable(_)) => {
                "token signing keys are unavailable; retry later".to_owned()
            }
            ConfigError::InvalidSchema(_) => {
                "the schema for this key does not compile; an operator must fix it".to_owned()
            }
            ConfigError::MembershipUnavailable(_) => {
                "group membership cannot be checked now; retry later".to_owned()
            }
            ConfigError::Store(StoreError::TenantLimited { .. }) => {
                "this tenant is reading uncached keys faster than its share; retry after the time in Retry-After".to_owned()
            }
            ConfigError::QuotaExceeded {
                quota: WriteQuota::StoredKeys(n),
                ..
            } => format!(
                "this tenant stores {n} keys, its quota: delete keys first, or ask an operator to raise it"
            ),
            ConfigError::QuotaExceeded { quota, .. } => {
                format!("this tenant's quota of {quota} is reached; retry after the time in Retry-After")
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_the_documented_status() {
        let store = StoreKind::DynamoDb;
        let cases = [
            (ConfigError::BadRequest("x".into()), 400),
            (ConfigError::MembershipUnavailable("x".into()), 503),
            (AuthError::BadSignature.into(), 401),
            (ConfigError::NoTenant, 403),
            (
                ConfigError::NotFound {
                    service: "s".into(),
                    key: "k".into(),
                },
                404,
            ),
            (
                ConfigError::SensitiveValue {
                    keys: vec!["k".into()],
                },
                409,
            ),
            (
                StoreError::Unavailable {
                    store,
                    detail: "d".into(),
                }
                .into(),
                502,
            ),
            (
                StoreError::Throttled {
                    store,
                    detail: "d".into(),
                }
                .into(),
                503,
            ),
            (
                StoreError::TenantLimited {
                    store,
                    retry_after: std::time::Duration::from_millis(300),
                }
                .into(),
                429,
            ),
            (
                ConfigError::QuotaExceeded {
                    quota: WriteQuota::StoredKeys(10),
                    retry_after: std::time::Duration::from_secs(60),
                },
                429,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err:?}");
        }
    }

    #[test]
    fn store_details_never_reach_the_public_message() {
        let err: ConfigError = StoreError::Unavailable {
            store: StoreKind::ParameterStore,
            detail: "arn:aws:kms:secret-internal".into(),
        }
        .into();
        assert!(!err.public_message().contains("arn:aws"));
    }
}
