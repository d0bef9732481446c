//! The live rollouts as a reader holds them: one load of the live
//! partition, shared by every tenant, and for one tenant's read the
//! rollouts under it with the version it reads of each.

use std::sync::Arc;

use smallvec::SmallVec;

use super::record::{Rollout, Version};
use crate::domain::{PlainValue, ValueKind, WrittenBy};
use crate::layers::Layer;
use crate::validate::{ConfigKey, ServiceName, TenantId, TierName};

/// One live rollout and its staged value, built once per load so that every
/// read of it shares one value (and the merge memo recognises it).
#[derive(Debug)]
pub struct LiveRollout {
    pub rollout: Rollout,
    pub staged: Arc<PlainValue>,
}

/// Every live rollout one load found.
#[derive(Debug, Default)]
pub struct LiveRollouts {
    rollouts: Vec<Arc<LiveRollout>>,
}

/// A rollout under one tenant's read, and the version that tenant reads.
#[derive(Debug, Clone)]
pub struct Applied {
    pub live: Arc<LiveRollout>,
    pub version: Version,
}

impl Applied {
    /// Whether this rollout stages `key` of `layer`.
    pub fn stages(&self, layer: &Layer, key: &ConfigKey) -> bool {
        let entry = &self.live.rollout.entry;
        &entry.key == key && &entry.layer == layer
    }
}

impl LiveRollouts {
    /// The live ones of `rollouts` (a final one decides nothing).
    pub fn new(rollouts: Vec<Rollout>) -> Self {
        let rollouts = rollouts
            .into_iter()
            .filter(|rollout| !rollout.progress.state.is_final())
            .map(|rollout| {
                let staged = Arc::new(PlainValue {
                    value: rollout.value.clone(),
                    version: Some(rollout.staged_version()),
                    kind: ValueKind::Plain,
                    // A platform administrator's identity is not a tenant's.
                    written: WrittenBy {
                        actor: None,
                        at_ms: Some(rollout.created_ms),
                    },
                });
                Arc::new(LiveRollout { rollout, staged })
            })
            .collect();
        Self { rollouts }
    }

    /// The entries of rollouts in this set that `later` no longer holds.
    pub fn ended_since(&self, later: &LiveRollouts) -> Vec<crate::layers::EntryKey> {
        self.rollouts
            .iter()
            .filter(|live| {
                !later
                    .rollouts
                    .iter()
                    .any(|still| still.rollout.id == live.rollout.id)
            })
            .map(|live| live.rollout.entry.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.rollouts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rollouts.len()
    }

    /// The rollouts of `service` in the layers under `tenant` (the global
    /// one and its tier's), each with the version the tenant reads now.
    pub fn applying(
        &self,
        tenant: &TenantId,
        tier: Option<&TierName>,
        service: &ServiceName,
    ) -> SmallVec<[Applied; 1]> {
        self.rollouts
            .iter()
            .filter(|live| {
                let entry = &live.rollout.entry;
                &entry.service == service
                    && match &entry.layer {
                        Layer::Global => true,
                        Layer::Tier(of) => Some(of) == tier,
                        Layer::Tenant(_) => false,
                    }
            })
            .map(|live| Applied {
                version: live.rollout.version_for(tenant, tier),
                live: Arc::clone(live),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rollouts::plan::{Progress, State};
    use crate::rollouts::record::RolloutRequest;

    fn rollout(id: &str, layer: &str, state: State) -> Rollout {
        let request = RolloutRequest::parse(&json!({
            "layer": layer, "service": "billing", "key": "tenant_config_limits",
            "value": {"max": 10}, "steps": [{"canary": ["t1"]}, "everyone"],
            "bake_seconds": 60, "alarms": []
        }))
        .unwrap();
        let progress = Progress {
            state,
            step: 0,
            since_ms: 0,
        };
        let mut rollout = Rollout::new(id, request, progress, "admin", 5, 1);
        rollout.base_version = Some(2);
        rollout
    }

    #[test]
    fn a_tenant_sees_the_rollouts_of_its_own_layers_only_with_its_version() {
        // GIVEN a live global rollout, a live gold one, a silver one and a done one
        let live = LiveRollouts::new(vec![
            rollout("r-global", "global", State::Baking),
            rollout("r-gold", "tier:gold", State::Baking),
            rollout("r-silver", "tier:silver", State::Baking),
            rollout("r-done", "global", State::Done),
        ]);
        assert_eq!(live.len(), 3);
        let gold = TierName::parse("gold").unwrap();
        let billing = ServiceName::parse("billing").unwrap();
        // WHEN a gold canary and a gold non-canary read billing
        let names = |tenant: &str| -> Vec<(String, Version)> {
            live.applying(&TenantId::parse(tenant).unwrap(), Some(&gold), &billing)
                .iter()
                .map(|a| (a.live.rollout.id.clone(), a.version))
                .collect()
        };
        // THEN each sees the global and gold rollouts, never silver's or a final one
        assert_eq!(
            names("t1"),
            [
                ("r-global".to_owned(), Version::New),
                ("r-gold".to_owned(), Version::New)
            ]
        );
        assert_eq!(
            names("t2"),
            [
                ("r-global".to_owned(), Version::Previous),
                ("r-gold".to_owned(), Version::Previous)
            ]
        );
        // AND another service has none, and the staged value is the next version
        let other = ServiceName::parse("orders").unwrap();
        let t1 = TenantId::parse("t1").unwrap();
        assert!(live.applying(&t1, Some(&gold), &other).is_empty());
        let applied = &live.applying(&t1, None, &billing)[0];
        assert_eq!(applied.live.staged.version, Some(3));
        assert_eq!(applied.live.staged.value, json!({"max": 10}));
    }
}
