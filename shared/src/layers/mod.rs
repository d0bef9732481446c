//! Layered configuration: an effective value is merged from the global
//! layer, the tenant's tier layer and the tenant layer, bottom to top.
//!
//! - [`Layer`]: which layer a value lives in, and where the stores keep it;
//! - [`merge`]: JSON Merge Patch (RFC 7396, formerly 7386) across the layers, with the layer
//!   every leaf of the result came from (what `?explain=true` answers);
//! - [`registry`]: each tenant's tier and whether it is active.
//!
//! Shared layers are named in the stores with [`RESERVED_PREFIX`], which no
//! tenant id may start with, so a tenant can never read or write a shared
//! layer through its own paths.
//!
//! [`RESERVED_PREFIX`]: crate::validate::RESERVED_PREFIX

pub mod blast;
pub mod guardrails;
pub mod merge;
pub mod overrides;
pub mod platform;
pub mod registry;
pub mod reindex;
pub mod view;

use std::fmt;

use crate::domain::ItemKey;
use crate::validate::{ConfigKey, RESERVED_PREFIX, ServiceName, TenantId, TierName};

/// The first segment of a tier layer's parameter paths (`_tiers/{tier}`).
pub const TIERS_SEGMENT: &str = "_tiers";

/// One layer of an effective value, bottom to top.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// Defaults for every tenant.
    Global,
    /// Overrides for the tenants registered in one tier.
    Tier(TierName),
    /// One tenant's own values (what the service stored before layers).
    Tenant(TenantId),
}

impl Layer {
    /// Whether more than one tenant reads this layer (global, tier): such a
    /// layer refuses SecureStrings, a secret shared between tenants.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Layer::Tenant(_))
    }

    /// The layer's segment of a Parameter Store path under the root:
    /// `_global`, `_tiers/{tier}`, or the tenant id.
    pub fn parameter_segment(&self) -> String {
        match self {
            Layer::Global => format!("{RESERVED_PREFIX}global"),
            Layer::Tier(tier) => format!("{TIERS_SEGMENT}/{tier}"),
            Layer::Tenant(tenant) => tenant.to_string(),
        }
    }

    /// The inverse of [`Self::parameter_segment`] for the shared layers.
    pub fn from_parameter_segment(segment: &str) -> Option<Layer> {
        let shared = segment.strip_prefix(RESERVED_PREFIX)?;
        if shared == "global" {
            return Some(Layer::Global);
        }
        let tier = segment.strip_prefix(TIERS_SEGMENT)?.strip_prefix('/')?;
        TierName::parse(tier).ok().map(Layer::Tier)
    }

    /// The shared layer a DynamoDB partition key names (`LAYER#global`,
    /// `LAYER#tier#{tier}`).
    pub fn from_partition_key(pk: &str) -> Option<Layer> {
        let shared = pk.strip_prefix("LAYER#")?;
        if shared == "global" {
            return Some(Layer::Global);
        }
        let tier = shared.strip_prefix("tier#")?;
        TierName::parse(tier).ok().map(Layer::Tier)
    }

    /// The layer's DynamoDB partition key: `LAYER#global`,
    /// `LAYER#tier#{tier}`, or the tenant's `TENANT#{id}`.
    pub fn partition_key(&self) -> String {
        match self {
            Layer::Global => "LAYER#global".to_owned(),
            Layer::Tier(tier) => format!("LAYER#tier#{tier}"),
            Layer::Tenant(tenant) => format!("TENANT#{tenant}"),
        }
    }
}

/// A listing of a reserved partition, with the store calls it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub calls: usize,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            calls: 0,
        }
    }
}

/// One entry of one layer: what the writers write. A tenant's own entry
/// is its [`ItemKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    pub layer: Layer,
    pub service: ServiceName,
    pub key: ConfigKey,
}

impl EntryKey {
    pub fn new(layer: Layer, service: ServiceName, key: ConfigKey) -> Self {
        Self {
            layer,
            service,
            key,
        }
    }

    /// `{layer segment}:{service}:{key}`: a tenant entry's cache key, and
    /// for a shared layer one no tenant's can be (see [`RESERVED_PREFIX`]).
    pub fn cache_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.layer.parameter_segment(),
            self.service,
            self.key
        )
    }

    /// The tenant's entry this is, if it is one.
    pub fn item(&self) -> Option<ItemKey> {
        match &self.layer {
            Layer::Tenant(tenant) => Some(ItemKey::new(
                tenant.clone(),
                self.service.clone(),
                self.key.clone(),
            )),
            _ => None,
        }
    }
}

impl From<&ItemKey> for EntryKey {
    fn from(item: &ItemKey) -> Self {
        Self::new(
            Layer::Tenant(item.tenant.clone()),
            item.service.clone(),
            item.key.clone(),
        )
    }
}

impl fmt::Display for EntryKey {
    /// `tenant:tenant-a/billing/key`, `global/billing/key`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.layer, self.service, self.key)
    }
}

impl fmt::Display for Layer {
    /// How explain and the audit name a layer: `global`, `tier:gold`,
    /// `tenant:tenant-a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Global => f.write_str("global"),
            Layer::Tier(tier) => write!(f, "tier:{tier}"),
            Layer::Tenant(tenant) => write!(f, "tenant:{tenant}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_layers_live_where_no_tenant_id_can_reach() {
        let gold = Layer::Tier(TierName::parse("gold").unwrap());
        let tenant = Layer::Tenant(TenantId::parse("global").unwrap());
        // GIVEN a tenant whose id reads like a layer's name
        // THEN its paths and partition are its own, never the shared layer's
        assert_ne!(
            Layer::Global.parameter_segment(),
            tenant.parameter_segment()
        );
        assert_ne!(Layer::Global.partition_key(), tenant.partition_key());
        assert_eq!(gold.parameter_segment(), "_tiers/gold");
        assert_eq!(gold.partition_key(), "LAYER#tier#gold");
        assert_eq!(tenant.partition_key(), "TENANT#global");
        // AND no tenant id can be the shared layers' first segment
        assert!(TenantId::parse(&Layer::Global.parameter_segment()).is_err());
        assert!(Layer::Global.is_shared() && gold.is_shared() && !tenant.is_shared());
        assert_eq!(gold.to_string(), "tier:gold");
    }
}
