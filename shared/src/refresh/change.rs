//! The change record: what every change source (Parameter Store events from
//! EventBridge, DynamoDB Streams records) becomes, and what the rest of the
//! change path handles without knowing where it came from. It names an entry,
//! never its value.

use std::fmt;

use super::proto::Operation;
use crate::domain::{Changed, ItemKey, StoreKind, ValueKind};
use crate::error::ConfigError;
use crate::layers::{EntryKey, Layer};
use crate::validate::{ConfigKey, RESERVED_PREFIX, ServiceName, TenantId};

/// What one change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One tenant's own entry (what the service held before layers).
    Entry(ItemKey),
    /// An entry of a shared layer (global, or a tier's): every tenant of
    /// the layer reads it. Built by [`Subject::shared`] only.
    Shared {
        layer: Layer,
        service: ServiceName,
        key: ConfigKey,
    },
    /// A tenant's registration (its tier, whether it is active).
    Registration(TenantId),
    /// A rollout of a shared-layer entry started, took a step, paused or
    /// ended: which version each tenant reads of that entry may change.
    Rollout(EntryKey),
}

/// How a registration travels in the change protocol's tenant field.
const REGISTRATION_WIRE_PREFIX: &str = "_registry/";
/// How a rollout travels there: `_rollout/` and its layer's segment.
const ROLLOUT_WIRE_PREFIX: &str = "_rollout/";

impl Subject {
    /// An entry of `layer`: a tenant's own for a tenant layer.
    pub fn in_layer(layer: Layer, service: ServiceName, key: ConfigKey) -> Self {
        match layer {
            Layer::Tenant(tenant) => Subject::Entry(ItemKey::new(tenant, service, key)),
            shared => Subject::Shared {
                layer: shared,
                service,
                key,
            },
        }
    }

    /// The tenant's own entry this names, if it names one.
    pub fn entry(&self) -> Option<&ItemKey> {
        match self {
            Subject::Entry(item) => Some(item),
            _ => None,
        }
    }

    /// The configuration key this names in the store it routes to (none
    /// for a registration, nor for a rollout, which lives in DynamoDB
    /// whatever store its key routes to).
    pub fn key(&self) -> Option<&ConfigKey> {
        match self {
            Subject::Entry(item) => Some(&item.key),
            Subject::Shared { key, .. } => Some(key),
            Subject::Registration(_) | Subject::Rollout(_) => None,
        }
    }

    /// The three text fields of the change protocol (Refresh, journal):
    /// the tenant field carries a shared layer's reserved name (`_global`,
    /// `_tiers/{tier}`) or `_registry/{tenant}`, none of which a tenant id
    /// can be; a registration has no service or key.
    pub fn wire(&self) -> (String, String, String) {
        match self {
            Subject::Entry(item) => (
                item.tenant.to_string(),
                item.service.to_string(),
                item.key.to_string(),
            ),
            Subject::Shared {
                layer,
                service,
                key,
            } => (
                layer.parameter_segment(),
                service.to_string(),
                key.to_string(),
            ),
            Subject::Registration(tenant) => (
                format!("{REGISTRATION_WIRE_PREFIX}{tenant}"),
                String::new(),
                String::new(),
            ),
            Subject::Rollout(entry) => (
                format!("{ROLLOUT_WIRE_PREFIX}{}", entry.layer.parameter_segment()),
                entry.service.to_string(),
                entry.key.to_string(),
            ),
        }
    }

    /// The inverse of [`Self::wire`], validating every part.
    pub fn from_wire(tenant: &str, service: &str, key: &str) -> Result<Self, ConfigError> {
        if let Some(registered) = tenant.strip_prefix(REGISTRATION_WIRE_PREFIX) {
            if !service.is_empty() || !key.is_empty() {
                return Err(ConfigError::BadRequest(
                    "a registration change names no service or key".to_owned(),
                ));
            }
            return Ok(Subject::Registration(TenantId::parse(registered)?));
        }
        let service = ServiceName::parse(service)?;
        let key = ConfigKey::parse(key)?;
        if let Some(layer) = tenant.strip_prefix(ROLLOUT_WIRE_PREFIX) {
            return match Layer::from_parameter_segment(layer) {
                Some(layer) => Ok(Subject::Rollout(EntryKey::new(layer, service, key))),
                None => Err(ConfigError::BadRequest(format!(
                    "'{layer}' names no shared layer a rollout changes"
                ))),
            };
        }
        if tenant.starts_with(RESERVED_PREFIX) {
            let layer = Layer::from_parameter_segment(tenant).ok_or_else(|| {
                ConfigError::BadRequest(format!("'{tenant}' names no shared layer"))
            })?;
            return Ok(Subject::in_layer(layer, service, key));
        }
        Ok(Subject::Entry(ItemKey::new(
            TenantId::parse(tenant)?,
            service,
            key,
        )))
    }
}

impl fmt::Display for Subject {
    /// For logs and the CLI: `tenant-a:billing:key`, `global:billing:key`,
    /// `tier:gold:billing:key`, `registration:tenant-a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Entry(item) => f.write_str(&item.cache_key()),
            Subject::Shared {
                layer,
                service,
                key,
            } => write!(f, "{layer}:{service}:{key}"),
            Subject::Registration(tenant) => write!(f, "registration:{tenant}"),
            Subject::Rollout(entry) => {
                write!(f, "rollout:{}:{}:{}", entry.layer, entry.service, entry.key)
            }
        }
    }
}

/// One change to one entry (of a tenant or a shared layer) or to a
/// tenant's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub subject: Subject,
    pub store: StoreKind,
    pub operation: Operation,
    /// Unique per change and stable across retries of it: the EventBridge
    /// event id, or the DynamoDB stream record's event id.
    pub change_id: String,
    /// When the store recorded the change, Unix milliseconds.
    pub time_unix_ms: i64,
    /// Who made it and between which versions, when the source says.
    pub audit: ChangeAudit,
    /// The entry's type after the change, when the source says (Parameter
    /// Store's events do): readers drop a last good value of another type.
    pub value_type: Option<ValueKind>,
}

impl super::proto::RefreshRequest {
    /// The entry a Refresh call (or a change notice's change) names.
    pub fn subject(&self) -> Result<Subject, ConfigError> {
        Subject::from_wire(&self.tenant_id, &self.service, &self.key)
    }

    /// What it means for a cache: what [`ChangeRecord::changed`] says of
    /// the change it was made from.
    pub fn changed(&self) -> Changed {
        if self.operation() == Operation::Delete {
            Changed::Deleted
        } else {
            Changed::Updated(ValueKind::from_parameter_type(&self.value_type))
        }
    }
}

impl ChangeRecord {
    /// The Refresh call naming this change (no target: a push sets it per
    /// agent; a change notice leaves it empty).
    pub fn refresh_request(&self) -> super::proto::RefreshRequest {
        let (tenant_id, service, key) = self.subject.wire();
        super::proto::RefreshRequest {
            tenant_id,
            service,
            key,
            operation: self.operation as i32,
            event_id: self.change_id.clone(),
            event_time_unix_ms: self.time_unix_ms,
            value_type: self
                .value_type
                .map(|kind| kind.parameter_type().to_owned())
                .unwrap_or_default(),
            target: String::new(),
        }
    }

    /// What the change means for a cache.
    pub fn changed(&self) -> Changed {
        match self.operation {
            Operation::Delete => Changed::Deleted,
            _ => Changed::Updated(self.value_type),
        }
    }
}

/// Who made a change and from which version to which: what the change
/// source reports, journaled with the change (the audit record *is* the
/// journal record). Each field is `None` when the source does not say: a
/// write made outside tenant-config's writers carries no actor, and a
/// Parameter Store delete names no deleter (CloudTrail's DeleteParameter
/// does). Never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeAudit {
    /// Token `sub` (API), `--actor` (CLI), as the writer recorded it.
    pub actor: Option<String>,
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    /// The version a rollback restored.
    pub rollback_of: Option<i64>,
}

/// Longest actor kept in a journal record (writers cap theirs at 256).
pub const MAX_AUDIT_ACTOR_CHARS: usize = 256;

impl ChangeAudit {
    /// The actor as it may be journaled and printed: at most
    /// [`MAX_AUDIT_ACTOR_CHARS`], control characters dropped, so that a
    /// hand-written description cannot forge log or CLI lines.
    pub fn clean_actor(actor: &str) -> Option<String> {
        let actor: String = actor
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_AUDIT_ACTOR_CHARS)
            .collect();
        (!actor.trim().is_empty()).then_some(actor)
    }
}

impl std::fmt::Display for ChangeAudit {
    /// `v3 -> v4 by alice (rollback of v2)`, with `?` for what is unknown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = |v: Option<i64>| v.map_or_else(|| "?".to_owned(), |v| format!("v{v}"));
        match (self.from_version, self.to_version) {
            (None, Some(to)) => write!(f, "new -> v{to}")?,
            (from, to) => write!(f, "{} -> {}", version(from), version(to))?,
        }
        write!(f, " by {}", self.actor.as_deref().unwrap_or("unknown"))?;
        if let Some(of) = self.rollback_of {
            write!(f, " (rollback of v{of})")?;
        }
        Ok(())
    }
}

/// Longest change id accepted (EventBridge ids are 36, stream ids 32).
pub const MAX_CHANGE_ID_LEN: usize = 128;

/// Whether `id` can travel in a Refresh and a log line unchanged.
pub fn valid_change_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHANGE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What a change source record means for the readers' caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Refresh(ChangeRecord),
    /// Not a change any reader caches (outside the root, another kind of
    /// item, a key routed to the other store), with the reason.
    Ignore(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_round_trips_through_the_protocols_fields() {
        let service = ServiceName::parse("billing").unwrap();
        let key = ConfigKey::parse("tenant_config_limits").unwrap();
        let tier = crate::validate::TierName::parse("gold").unwrap();
        for subject in [
            Subject::Entry(ItemKey::parse("tenant-a", "billing", "tenant_config_limits").unwrap()),
            Subject::in_layer(Layer::Global, service.clone(), key.clone()),
            Subject::in_layer(Layer::Tier(tier.clone()), service.clone(), key.clone()),
            Subject::Registration(TenantId::parse("tenant-a").unwrap()),
            Subject::Rollout(EntryKey::new(Layer::Global, service.clone(), key.clone())),
            Subject::Rollout(EntryKey::new(
                Layer::Tier(tier),
                service.clone(),
                key.clone(),
            )),
        ] {
            let (tenant, service, key) = subject.wire();
            assert_eq!(
                Subject::from_wire(&tenant, &service, &key).unwrap(),
                subject
            );
        }
        // a tenant layer built through in_layer is the tenant's own entry
        assert!(
            Subject::in_layer(Layer::Tenant(TenantId::parse("t").unwrap()), service, key)
                .entry()
                .is_some()
        );
        for (tenant, service, key) in [
            ("_registry/tenant-a", "billing", ""),
            ("_registry/_global", "", ""),
            ("_tiers/../x", "billing", "tenant_config_limits"),
            ("_other", "billing", "tenant_config_limits"),
            ("_global", "", "tenant_config_limits"),
            ("_rollout/tenant-a", "billing", "tenant_config_limits"),
            ("_rollout/_tiers/_x", "billing", "tenant_config_limits"),
        ] {
            assert!(
                Subject::from_wire(tenant, service, key).is_err(),
                "{tenant}"
            );
        }
    }

    #[test]
    fn an_audit_reads_as_from_to_by_with_unknowns_marked() {
        let audit = ChangeAudit {
            actor: Some("alice".into()),
            from_version: Some(3),
            to_version: Some(4),
            rollback_of: Some(2),
        };
        assert_eq!(audit.to_string(), "v3 -> v4 by alice (rollback of v2)");
        let created = ChangeAudit {
            to_version: Some(1),
            ..ChangeAudit::default()
        };
        assert_eq!(created.to_string(), "new -> v1 by unknown");
        assert_eq!(ChangeAudit::default().to_string(), "? -> ? by unknown");
    }

    #[test]
    fn actors_lose_control_characters_and_excess_length() {
        assert_eq!(
            ChangeAudit::clean_actor("eve\n2026 forged line").as_deref(),
            Some("eve2026 forged line")
        );
        assert_eq!(ChangeAudit::clean_actor(" \t"), None);
        assert_eq!(
            ChangeAudit::clean_actor(&"x".repeat(1000)).map(|a| a.len()),
            Some(MAX_AUDIT_ACTOR_CHARS)
        );
    }
}
