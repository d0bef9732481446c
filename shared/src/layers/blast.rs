//! The blast radius of a shared change before it lands: how many tenants'
//! effective values a global or tier write (or a guardrail) changes, which
//! tenants keep their own value, which would fail their schema or a
//! guardrail, and which override a key the change locks.
//!
//! Its store reads grow with the tenants that hold their own value of the
//! key, not with all tenants: tenants without one share an effective value
//! per tier, computed once per tier and counted from the registry's
//! per-tier counts (one item); only the overriding tenants (from the
//! [`OverrideIndex`]) and their registrations and values are read, in as
//! few calls as the stores allow (100 items a BatchGetItem, 10 parameters a
//! GetParameters), and the
//! names of other tenants a change reaches come from the first members of
//! each tier (at most [`NAMED`] and the overriders, per tier).
//!
//! Tenants are known from the registry and the override index; a tenant
//! never registered and holding no value of its own reads the global layer
//! alone, and the report answers for that case once
//! ([`BlastReport::unregistered`]). Inactive tenants read nothing: they are
//! counted apart and never block a change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::future::try_join_all;

use serde::Serialize;
use serde_json::Value;

use super::guardrails::{Compiled, Constraints, Guardrail, GuardrailStore};
use super::merge::merge_values;
use super::overrides::OverrideIndex;
use super::registry::{TenantRecord, TenantRegistry};
use super::{EntryKey, Layer};
use crate::domain::{Found, StoreKind};
use crate::error::{ConfigError, StoreError};
use crate::routing::KeyRouter;
use crate::schema::Schemas;
use crate::store::ConfigStore;
use crate::validate::{ConfigKey, ServiceName, TenantId, TierName};

/// Most tenants a report names per list.
pub const NAMED: usize = 100;

/// A shared change to weigh: a new value of the layer's entry, a new
/// guardrail, or both (`None`: unchanged; `Some(None)`: removed).
#[derive(Debug, Clone)]
pub struct Proposal {
    pub layer: Layer,
    pub service: ServiceName,
    pub key: ConfigKey,
    pub value: Option<Option<Value>>,
    pub guardrail: Option<Option<Guardrail>>,
}

/// A tenant whose effective value would fail a schema or a guardrail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub tenant: String,
    /// Where in the value (a JSON Pointer), never the value.
    pub path: String,
    pub rule: String,
}

/// What the change does to a tenant that was never registered and holds no
/// value of its own (global changes only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnregisteredOutcome {
    pub changes: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fails: Option<Failure>,
}

/// The answer of a dry run, and of a refused or forced write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlastReport {
    pub layer: String,
    pub service: String,
    pub key: String,
    /// Active tenants the layer reaches that are known (registered, or
    /// holding their own value of the key).
    pub tenants: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// Tenants whose own value keeps their effective value as it is.
    pub keeping_own_value: usize,
    pub failing: usize,
    /// Tenants holding their own value of a key the change locks.
    pub locked_overrides: usize,
    /// The first [`NAMED`] of each, by tenant id.
    pub changed_tenants: Vec<String>,
    pub keeping_own_value_tenants: Vec<String>,
    pub failing_tenants: Vec<Failure>,
    pub locked_override_tenants: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unregistered: Option<UnregisteredOutcome>,
    /// Registered but inactive: they read nothing, so nothing changes for them.
    pub inactive: usize,
    /// Store calls the report made.
    pub store_reads: usize,
}

impl BlastReport {
    /// Whether the change breaks a tenant: a real write is refused (422)
    /// unless forced.
    pub fn breaks_tenants(&self) -> bool {
        self.failing > 0
            || self.locked_overrides > 0
            || self
                .unregistered
                .as_ref()
                .is_some_and(|u| u.fails.is_some())
    }
}

/// Computes blast radii; reads with the platform role.
pub struct BlastRadius {
    router: KeyRouter,
    dynamodb: Arc<dyn ConfigStore>,
    parameters: Arc<dyn ConfigStore>,
    registry: Arc<dyn TenantRegistry>,
    overrides: Arc<dyn OverrideIndex>,
    guardrails: Arc<dyn GuardrailStore>,
    schemas: Option<Arc<Schemas>>,
}

/// One tier's layers of the key before and after the change.
struct TierView {
    before: Vec<Value>,
    after: Vec<Value>,
    before_constraints: Constraints,
    after_constraints: Constraints,
}

impl TierView {
    /// Whether the change locks the key for this tier where it was not
    /// locked: only then does an override block it (a lock already in
    /// place was weighed when it was set).
    fn newly_locked(&self) -> bool {
        self.after_constraints.locked_by().is_some()
            && self.before_constraints.locked_by().is_none()
    }
}

/// A shared layer's current value of the key and guardrail, and the store
/// reads that found them.
#[derive(Default)]
struct LayerState {
    value: Option<Value>,
    guardrail: Option<Guardrail>,
    reads: usize,
}

/// Tier layers by tier, and the store reads that found them.
struct TierStates {
    states: Vec<(Option<TierName>, LayerState)>,
    reads: usize,
}

/// Where a value fails and which rule: `(path, rule)`.
type Violation = (String, String);
/// What the change does to one effective value, and why the new one fails.
type Judgement = (Outcome, Option<Violation>);

/// What the change does to one effective value.
enum Outcome {
    Changed,
    Unchanged,
}

impl BlastRadius {
    pub fn new(
        router: KeyRouter,
        dynamodb: Arc<dyn ConfigStore>,
        parameters: Arc<dyn ConfigStore>,
        registry: Arc<dyn TenantRegistry>,
        overrides: Arc<dyn OverrideIndex>,
        guardrails: Arc<dyn GuardrailStore>,
    ) -> Self {
        Self {
            router,
            dynamodb,
            parameters,
            registry,
            overrides,
            guardrails,
            schemas: None,
        }
    }

    /// Holds effective values to the keys' JSON Schemas too.
    pub fn with_schemas(mut self, schemas: Arc<Schemas>) -> Self {
        self.schemas = Some(schemas);
        self
    }

    fn store(&self, kind: StoreKind) -> &Arc<dyn ConfigStore> {
        match kind {
            StoreKind::DynamoDb => &self.dynamodb,
            StoreKind::ParameterStore => &self.parameters,
        }
    }

    /// The layer's current value of the key (one listing of the layer).
    async fn shared_value(
        &self,
        kind: StoreKind,
        layer: &Layer,
        proposal: &Proposal,
    ) -> Result<Option<Value>, StoreError> {
        let listing = self
            .store(kind)
            .list_layer(layer, &proposal.service)
            .await?;
        Ok(listing
            .entries
            .into_iter()
            .find(|(key, _)| key == &proposal.key)
            .and_then(|(_, found)| match found {
                Found::Plain(plain) => Some(plain.value.clone()),
                Found::Secret(_) => None,
            }))
    }

    async fn guardrail(
        &self,
        layer: &Layer,
        proposal: &Proposal,
    ) -> Result<Option<Guardrail>, StoreError> {
        let entry = EntryKey::new(
            layer.clone(),
            proposal.service.clone(),
            proposal.key.clone(),
        );
        Ok(self
            .guardrails
            .get(&entry)
            .await?
            .map(|stored| stored.guardrail))
    }

    /// A shared layer's value of the key and its guardrail, read side by side.
    async fn layer_state(
        &self,
        kind: StoreKind,
        layer: &Layer,
        proposal: &Proposal,
    ) -> Result<LayerState, ConfigError> {
        let (value, guardrail) = tokio::try_join!(
            self.shared_value(kind, layer, proposal),
            self.guardrail(layer, proposal)
        )?;
        Ok(LayerState {
            value,
            guardrail,
            reads: 2,
        })
    }

    /// The tier layers of `tiers` (`None`, no tier, has none), all at once.
    async fn tier_states(
        &self,
        kind: StoreKind,
        tiers: &[Option<TierName>],
        proposal: &Proposal,
    ) -> Result<TierStates, ConfigError> {
        let states = try_join_all(tiers.iter().map(|tier| async move {
            let state = match tier {
                Some(name) => {
                    self.layer_state(kind, &Layer::Tier(name.clone()), proposal)
                        .await?
                }
                None => LayerState::default(),
            };
            Ok::<_, ConfigError>((tier.clone(), state))
        }))
        .await?;
        Ok(TierStates {
            reads: states.iter().map(|(_, s)| s.reads).sum(),
            states,
        })
    }

    /// Weighs `proposal` against every tenant it reaches.
    pub async fn weigh(&self, proposal: &Proposal) -> Result<BlastReport, ConfigError> {
        let started = Instant::now();
        let kind = self.router.route(&proposal.key)?;
        let reaches = |tier: &Option<TierName>| match &proposal.layer {
            Layer::Global => true,
            Layer::Tier(changed) => tier.as_ref() == Some(changed),
            Layer::Tenant(_) => false,
        };
        let (counts, overriding) = tokio::try_join!(
            self.registry.counts(),
            self.overrides.tenants(&proposal.service, &proposal.key)
        )?;
        let mut reads = 1 + overriding.calls;
        let indexed = started.elapsed();

        // Side by side: the overriding tenants' registrations (the others
        // are counted) and values, and the shared layers of every tier
        // with active tenants.
        let counted_tiers: Vec<Option<TierName>> = counts
            .active
            .iter()
            .filter(|(tier, n)| **n > 0 && reaches(tier))
            .map(|(tier, _)| tier.clone())
            .collect();
        // A global change reaches every overrider, so their values are read
        // at once; a tier change only its own tier's, known from their
        // registrations.
        let reaches_all = proposal.layer == Layer::Global;
        let (registrations, early_values, global, counted_layers) = tokio::try_join!(
            async {
                self.registry
                    .get_many(&overriding.items)
                    .await
                    .map_err(ConfigError::from)
            },
            async {
                if !reaches_all {
                    return Ok(None);
                }
                self.store(kind)
                    .get_across(&overriding.items, &proposal.service, &proposal.key)
                    .await
                    .map(Some)
                    .map_err(ConfigError::from)
            },
            self.layer_state(kind, &Layer::Global, proposal),
            self.tier_states(kind, &counted_tiers, proposal),
        )?;
        reads += registrations.calls + global.reads + counted_layers.reads;
        let registered: HashMap<TenantId, TenantRecord> = registrations
            .items
            .into_iter()
            .map(|(tenant, r)| (tenant, r.record))
            .collect();
        // A tier only an overrider names (counts catch up in the same
        // transaction as a registration, so this is rare), and tenants of
        // no tier.
        let uncounted: Vec<Option<TierName>> = registered
            .values()
            .map(|r| r.tier.clone())
            .filter(|tier| tier.is_some() && reaches(tier) && !counted_tiers.contains(tier))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let uncounted_layers = self.tier_states(kind, &uncounted, proposal).await?;
        reads += uncounted_layers.reads;
        let mut views: BTreeMap<Option<TierName>, TierView> = BTreeMap::new();
        let tier_layers = counted_layers
            .states
            .into_iter()
            .chain(uncounted_layers.states)
            .chain(std::iter::once((None, LayerState::default())));
        for (tier, state) in tier_layers {
            if !reaches(&tier) {
                continue;
            }
            let view = self.tier_view(proposal, tier.as_ref(), &global, &state)?;
            views.insert(tier, view);
        }

        let mut report = BlastReport {
            layer: proposal.layer.to_string(),
            service: proposal.service.to_string(),
            key: proposal.key.to_string(),
            tenants: 0,
            changed: 0,
            unchanged: 0,
            keeping_own_value: 0,
            failing: 0,
            locked_overrides: 0,
            changed_tenants: Vec::new(),
            keeping_own_value_tenants: Vec::new(),
            failing_tenants: Vec::new(),
            locked_override_tenants: Vec::new(),
            unregistered: None,
            inactive: counts
                .inactive
                .iter()
                .filter(|(tier, _)| reaches(tier))
                .map(|(_, n)| *n as usize)
                .sum(),
            store_reads: 0,
        };

        // The overriding tenants the change reaches and that read (inactive
        // ones read nothing, so nothing changes for them).
        let mut overriders: Vec<(TenantId, TenantRecord)> = overriding
            .items
            .into_iter()
            .map(|tenant| {
                let record = registered
                    .get(&tenant)
                    .cloned()
                    .unwrap_or_else(TenantRecord::unregistered);
                (tenant, record)
            })
            .filter(|(_, record)| reaches(&record.tier) && record.active)
            .collect();
        overriders.sort_by(|a, b| a.0.cmp(&b.0));
        let own_values = match early_values {
            Some(values) => values,
            None => {
                let reached: Vec<TenantId> = overriders.iter().map(|(t, _)| t.clone()).collect();
                self.store(kind)
                    .get_across(&reached, &proposal.service, &proposal.key)
                    .await?
            }
        };
        reads += own_values.calls;
        let own_values = own_values.found;
        let loaded = started.elapsed();

        // Tenants without their own value: one answer per tier, counted.
        let mut overriders_in: HashMap<Option<TierName>, HashSet<TenantId>> = HashMap::new();
        for (tenant, record) in &overriders {
            if own_values.contains_key(tenant) {
                overriders_in
                    .entry(record.tier.clone())
                    .or_default()
                    .insert(tenant.clone());
            }
        }
        // Tiers whose tenants without a value of their own are named: (tier,
        // whether it changes, its failure).
        let mut to_name: Vec<(Option<TierName>, bool, Option<Violation>)> = Vec::new();
        for (tier, view) in &views {
            let (outcome, failure) = self.outcome(proposal, view, None).await?;
            let changes = matches!(outcome, Outcome::Changed);
            if proposal.layer == Layer::Global && tier.is_none() {
                report.unregistered = Some(UnregisteredOutcome {
                    changes,
                    fails: failure.as_ref().map(|(path, rule)| Failure {
                        tenant: "(any tenant never registered, without its own value)".to_owned(),
                        path: path.clone(),
                        rule: rule.clone(),
                    }),
                });
            }
            // Registered tenants of the tier that hold no value of their own.
            let overriding_here = overriders_in.get(tier);
            let registered_overriders = overriding_here.map_or(0, |o| {
                o.iter().filter(|t| registered.contains_key(*t)).count() as u64
            });
            let plain = counts
                .active
                .get(tier)
                .copied()
                .unwrap_or_default()
                .saturating_sub(registered_overriders) as usize;
            report.tenants += plain;
            if changes {
                report.changed += plain;
            } else {
                report.unchanged += plain;
            }
            if failure.is_some() {
                report.failing += plain;
            }
            if plain > 0 && (changes || failure.is_some()) {
                to_name.push((tier.clone(), changes, failure));
            }
        }
        // Their names: each such tier's first members (bounded reads, all
        // tiers at once).
        let members = try_join_all(to_name.iter().map(|(tier, _, _)| {
            let skip = overriders_in.get(tier).map_or(0, HashSet::len);
            self.registry.members(tier.as_ref(), NAMED + skip)
        }))
        .await?;
        for ((tier, changes, failure), members) in to_name.into_iter().zip(members) {
            reads += members.calls;
            let overriding_here = overriders_in.get(&tier);
            for tenant in members
                .items
                .into_iter()
                .filter(|t| overriding_here.is_none_or(|o| !o.contains(t)))
                .take(NAMED)
            {
                let name = tenant.to_string();
                if changes {
                    report.changed_tenants.push(name.clone());
                }
                if let Some((path, rule)) = &failure {
                    report.failing_tenants.push(Failure {
                        tenant: name,
                        path: path.clone(),
                        rule: rule.clone(),
                    });
                }
            }
        }
        let named = started.elapsed();

        // Tenants with their own value: one by one.
        for (tenant, record) in &overriders {
            let Some(view) = views.get(&record.tier) else {
                continue;
            };
            // The index lags: a value deleted meanwhile is no override.
            let Some(own) = own_values.get(tenant) else {
                continue;
            };
            report.tenants += 1;
            let name = tenant.to_string();
            if view.newly_locked() {
                report.locked_overrides += 1;
                report.locked_override_tenants.push(name.clone());
            }
            let (changes, failure) = match own {
                // A SecureString of its own replaces whatever lies under it.
                Found::Secret(_) => (false, None),
                Found::Plain(plain) => {
                    let (outcome, failure) =
                        self.outcome(proposal, view, Some(&plain.value)).await?;
                    (matches!(outcome, Outcome::Changed), failure)
                }
            };
            if changes {
                report.changed += 1;
                report.changed_tenants.push(name.clone());
            } else {
                report.unchanged += 1;
                report.keeping_own_value += 1;
                report.keeping_own_value_tenants.push(name.clone());
            }
            if let Some((path, rule)) = failure {
                report.failing += 1;
                report.failing_tenants.push(Failure {
                    tenant: name,
                    path,
                    rule,
                });
            }
        }
        for names in [
            &mut report.changed_tenants,
            &mut report.keeping_own_value_tenants,
            &mut report.locked_override_tenants,
        ] {
            names.sort();
            names.truncate(NAMED);
        }
        report
            .failing_tenants
            .sort_by(|a, b| a.tenant.cmp(&b.tenant));
        report.failing_tenants.truncate(NAMED);
        report.store_reads = reads;
        tracing::info!(
            layer = %proposal.layer,
            service = %proposal.service,
            key = %proposal.key,
            tenants = report.tenants,
            overriding = overriders.len(),
            store_reads = reads,
            index_ms = indexed.as_millis() as u64,
            loaded_ms = loaded.as_millis() as u64,
            named_ms = named.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "blast radius weighed"
        );
        Ok(report)
    }

    /// The layers under a tenant of `tier` before and after the change.
    fn tier_view(
        &self,
        proposal: &Proposal,
        tier: Option<&TierName>,
        global: &LayerState,
        tier_state: &LayerState,
    ) -> Result<TierView, ConfigError> {
        let (global_value, global_guardrail) = (&global.value, &global.guardrail);
        let (tier_value, tier_guardrail) = (&tier_state.value, &tier_state.guardrail);
        let changes = |layer: &Layer| &proposal.layer == layer;
        let tier_layer = tier.map(|t| Layer::Tier(t.clone()));
        let pick_value = |layer: &Layer, current: &Option<Value>| match &proposal.value {
            Some(new) if changes(layer) => new.clone(),
            _ => current.clone(),
        };
        let pick_guardrail = |layer: &Layer, current: &Option<Guardrail>| match &proposal.guardrail
        {
            Some(new) if changes(layer) => new.clone(),
            _ => current.clone(),
        };
        let mut before = Vec::with_capacity(2);
        let mut after = Vec::with_capacity(2);
        let mut before_constraints = Vec::with_capacity(2);
        let mut after_constraints = Vec::with_capacity(2);
        let mut layers = vec![(Layer::Global, global_value, global_guardrail)];
        if let Some(layer) = tier_layer {
            layers.push((layer, tier_value, tier_guardrail));
        }
        for (layer, value, guardrail) in layers {
            before.extend(value.clone());
            after.extend(pick_value(&layer, value));
            if let Some(g) = guardrail {
                before_constraints.push(Arc::new(Compiled::new(layer.clone(), g)?));
            }
            if let Some(g) = pick_guardrail(&layer, guardrail) {
                after_constraints.push(Arc::new(Compiled::new(layer.clone(), &g)?));
            }
        }
        Ok(TierView {
            before,
            after,
            before_constraints: Constraints(before_constraints),
            after_constraints: Constraints(after_constraints),
        })
    }

    /// Whether an effective value changes, and why the new one fails, only
    /// for a failure the change causes: the value changes and fails, or the
    /// value passed the rules before the change and fails those after it (a
    /// value that already failed is not the change's doing, and a guardrail
    /// removed can only loosen them).
    async fn outcome(
        &self,
        proposal: &Proposal,
        view: &TierView,
        own: Option<&Value>,
    ) -> Result<Judgement, ConfigError> {
        let stack = |layers: &[Value]| {
            let mut refs: Vec<&Value> = layers.iter().collect();
            refs.extend(own);
            merge_values(&refs)
        };
        let (before, after) = (stack(&view.before), stack(&view.after));
        let outcome = if before == after {
            Outcome::Unchanged
        } else {
            Outcome::Changed
        };
        let changed = matches!(outcome, Outcome::Changed);
        if !changed && proposal.guardrail.is_none() {
            return Ok((outcome, None));
        }
        let Some(after) = after else {
            return Ok((outcome, None));
        };
        let Some(failure) = self
            .violation(proposal, &view.after_constraints, &after)
            .await?
        else {
            return Ok((outcome, None));
        };
        if !changed
            && let Some(before) = &before
            && self
                .violation(proposal, &view.before_constraints, before)
                .await?
                .is_some()
        {
            return Ok((outcome, None));
        }
        Ok((outcome, Some(failure)))
    }

    /// Why `value` fails `constraints` or the key's schema, if it does.
    async fn violation(
        &self,
        proposal: &Proposal,
        constraints: &Constraints,
        value: &Value,
    ) -> Result<Option<Violation>, ConfigError> {
        if let Some(violation) = constraints.violation(value) {
            return Ok(Some(violation));
        }
        let Some(schemas) = &self.schemas else {
            return Ok(None);
        };
        match schemas.check(&proposal.service, &proposal.key, value).await {
            Ok(()) => Ok(None),
            Err(ConfigError::SchemaViolation { path, rule }) => Ok(Some((path, rule))),
            Err(other) => Err(other),
        }
    }
}
