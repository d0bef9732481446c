//! The write use cases of platform administrators: the shared layers
//! (global, tiers) and the tenant registry.
//!
//! Only callers in the platform administrators' group may make them (the
//! token says so and the user pool still does); a tenant administrator
//! keeps writing its own tenant's layer only ([`crate::writes`]). A shared
//! layer holds no SecureString: a secret shared between tenants is an
//! isolation hazard (400).

use std::sync::Arc;

use super::blast::{BlastRadius, BlastReport, Proposal};
use super::guardrails::{Guardrail, GuardrailStore, Guardrails, StoredGuardrail};
use super::registry::{TenantRecord, TenantRegistry};
use super::{EntryKey, Layer};
use crate::auth::Identity;
use crate::domain::StoreKind;
use crate::error::ConfigError;
use crate::kinds::Field;
use crate::membership::{GroupMembership, require_member};
use crate::rollouts::store::RolloutStore;
use crate::routing::KeyRouter;
use crate::schema::Schemas;
use crate::validate::{ConfigKey, ServiceName, TenantId};
use crate::write::{
    Actor, ConfigWriter, Expected, NewValue, ValueKind, VersionRecord, WriteError, Written, now_ms,
};
use crate::writes::{
    MAX_HISTORY, ROLLBACK_LOOKBACK, ValueCheck, WriteOutcome, checked_put, checked_rollback,
};

/// How a shared change lands: weighed only (`?dry_run=true`), landed unless
/// it breaks a tenant, or landed anyway (`?force=true`, journaled as forced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    DryRun,
    Land,
    Force,
}

/// A shared change's answer: its blast radius only, or what it did with the
/// blast radius it was weighed by (`None` without one configured).
#[derive(Debug)]
pub enum Weighed<T> {
    DryRun(BlastReport),
    Landed {
        outcome: T,
        report: Option<BlastReport>,
    },
}

enum Verdict {
    DryRun(BlastReport),
    Land {
        actor: Actor,
        report: Option<BlastReport>,
    },
}

/// A tenant's registration as the registry holds it, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub tenant: TenantId,
    pub record: TenantRecord,
    /// `None`: never registered (no tier, active).
    pub version: Option<i64>,
    pub updated_by: Option<String>,
    pub updated_at_ms: Option<i64>,
}

pub struct PlatformWrites {
    router: KeyRouter,
    dynamodb: Arc<dyn ConfigWriter>,
    parameters: Arc<dyn ConfigWriter>,
    registry: Arc<dyn TenantRegistry>,
    group: String,
    membership: Option<Arc<dyn GroupMembership>>,
    schemas: Option<Arc<Schemas>>,
    /// Weighs each shared change against every tenant (absent: a shared
    /// value is checked alone against its key's schema, and dry runs are
    /// refused).
    blast: Option<BlastRadius>,
    /// Where guardrails are read and set (with the platform role), and the
    /// process's remembered guardrails, forgotten after a change.
    guardrails: Option<(Arc<dyn GuardrailStore>, Arc<Guardrails>)>,
    /// Where live rollouts are: an entry with one takes no other write.
    rollouts: Option<Arc<dyn RolloutStore>>,
}

impl PlatformWrites {
    pub fn new(
        router: KeyRouter,
        dynamodb: Arc<dyn ConfigWriter>,
        parameters: Arc<dyn ConfigWriter>,
        registry: Arc<dyn TenantRegistry>,
        group: impl Into<String>,
    ) -> Self {
        Self {
            router,
            dynamodb,
            parameters,
            registry,
            group: group.into(),
            membership: None,
            schemas: None,
            blast: None,
            guardrails: None,
            rollouts: None,
        }
    }

    /// Refuses writes to a shared entry while a rollout of it is live (409):
    /// the rollout's previous value is what its tenants fall back to.
    pub fn with_rollouts(mut self, store: Arc<dyn RolloutStore>) -> Self {
        self.rollouts = Some(store);
        self
    }

    async fn refuse_during_rollout(&self, entry: &EntryKey) -> Result<(), ConfigError> {
        let Some(store) = &self.rollouts else {
            return Ok(());
        };
        match store.live().await?.into_iter().find(|r| &r.entry == entry) {
            Some(rollout) => Err(ConfigError::RolloutInProgress { id: rollout.id }),
            None => Ok(()),
        }
    }

    /// After a shared write landed: a rollout of the entry started between
    /// this write's check for one and its landing staged its value over the
    /// version this write replaced, so it is rolled back (its finish would
    /// fail anyway; meanwhile its tenants would read the staged value beside
    /// others reading this write's, at one version number). A rollout
    /// started after the landing started from it, and stays.
    async fn roll_back_overtaken(&self, entry: &EntryKey, actor: &Actor) {
        let Some(store) = &self.rollouts else {
            return;
        };
        let landed_ms = now_ms();
        let live = match store.live().await {
            Ok(live) => live,
            Err(error) => {
                tracing::error!(%entry, %error, "cannot look for a rollout this write overtook");
                return;
            }
        };
        for mut rollout in live
            .into_iter()
            .filter(|r| &r.entry == entry && r.created_ms <= landed_ms)
            // One that is landing started after this write, or fails to land.
            .filter(|r| r.progress.state != crate::rollouts::plan::State::Finishing)
        {
            rollout.progress.state = crate::rollouts::plan::State::RolledBack;
            rollout.progress.since_ms = landed_ms;
            rollout.reason = Some(format!(
                "the layer was written under it by {} as it started",
                actor.0
            ));
            rollout.revision += 1;
            match store.update(&rollout).await {
                Ok(_) => {
                    tracing::warn!(%entry, rollout = %rollout.id, "a rollout started under a shared write was rolled back")
                }
                Err(error) => {
                    tracing::error!(%entry, rollout = %rollout.id, %error, "cannot roll back a rollout a write overtook")
                }
            }
        }
    }

    /// Checks a value a rollout stages as a write of it would be checked
    /// (no SecureString, the size, the schema, the blast radius over every
    /// tenant), without writing it. Answers the entry's version now (none:
    /// the layer holds no value) and the value as its store will serve it.
    pub async fn check_staged(
        &self,
        actor: &str,
        entry: &EntryKey,
        value: &serde_json::Value,
    ) -> Result<(Option<i64>, serde_json::Value), ConfigError> {
        let (_, source, _) = self.target(&entry.layer, &entry.service, &entry.key)?;
        let staged = NewValue::json(value, ValueKind::Plain)?;
        staged.check(source)?;
        self.verdict(
            actor,
            proposal(entry, Some(Some(staged.read_back_in(source))), None),
            Landing::Land,
        )
        .await?;
        self.shared_check()
            .check(&entry.service, &entry.key, &staged.read_back_in(source))
            .await?;
        // A deletion is a version too (DynamoDB keeps its tombstone and
        // numbers on from it): the staged value lands as the one after.
        let base_version = self.newest(entry).await?.map(|v| v.version);
        Ok((base_version, staged.read_back_in(source)))
    }

    /// The newest version of a shared entry, if it has any.
    pub async fn newest(&self, entry: &EntryKey) -> Result<Option<VersionRecord>, ConfigError> {
        let (_, _, writer) = self.target(&entry.layer, &entry.service, &entry.key)?;
        Ok(writer.history(entry, 1).await?.into_iter().next())
    }

    /// Lands the value of a rollout that reached every tenant, over the
    /// version it started from (the one write its live rollout allows).
    pub async fn land_staged(
        &self,
        actor: &str,
        entry: &EntryKey,
        value: &serde_json::Value,
        base_version: Option<i64>,
    ) -> Result<Written, ConfigError> {
        let (_, source, writer) = self.target(&entry.layer, &entry.service, &entry.key)?;
        let staged = NewValue::json(value, ValueKind::Plain)?;
        let Verdict::Land { actor, .. } = self
            .verdict(
                actor,
                proposal(entry, Some(Some(staged.read_back_in(source))), None),
                Landing::Land,
            )
            .await?
        else {
            unreachable!("a landing is never a dry run");
        };
        // Over the version the rollout started from: that version still
        // newest, as a value, or as a deletion (then there is nothing to
        // replace, and the entry is created).
        let newest = self.newest(entry).await?;
        let expected = match (&newest, base_version) {
            (None, None) => Expected::Absent,
            (Some(v), Some(base)) if v.version == base && v.deleted => Expected::Absent,
            (Some(v), Some(base)) if v.version == base => Expected::Version(base),
            (newest, _) => {
                return Err(ConfigError::VersionConflict {
                    current: newest.as_ref().map(|v| v.version),
                });
            }
        };
        let written = checked_put(
            writer,
            &self.shared_check(),
            entry,
            &staged,
            expected,
            &actor,
        )
        .await?;
        tracing::info!(%entry, version = written.version, actor = %actor.0, "rollout landed its value in the layer");
        Ok(written)
    }

    /// Weighs every shared change (values and guardrails) before it lands.
    pub fn with_blast_radius(mut self, blast: BlastRadius) -> Self {
        self.blast = Some(blast);
        self
    }

    /// Where guardrails are set (`store`, written with the platform role)
    /// and what this process remembers of them (`remembered`, forgotten
    /// after each change); absent, the guardrail routes answer 404.
    pub fn with_guardrails(
        mut self,
        store: Arc<dyn GuardrailStore>,
        remembered: Arc<Guardrails>,
    ) -> Self {
        self.guardrails = Some((store, remembered));
        self
    }

    /// Weighs a proposal and decides how it lands: a dry run answers the
    /// report; a change that breaks tenants is refused unless forced (then
    /// recorded as forced, so the journal and the history say so). Without
    /// a blast radius configured a change lands unweighed and a dry run is
    /// refused.
    async fn verdict(
        &self,
        actor: &str,
        proposal: Proposal,
        landing: Landing,
    ) -> Result<Verdict, ConfigError> {
        let actor = Actor(actor.to_owned());
        let Some(blast) = &self.blast else {
            return match landing {
                Landing::DryRun => Err(ConfigError::BadRequest(
                    "dry runs need the override index, which this deployment does not configure"
                        .to_owned(),
                )),
                _ => Ok(Verdict::Land {
                    actor,
                    report: None,
                }),
            };
        };
        let report = blast.weigh(&proposal).await?;
        match landing {
            Landing::DryRun => Ok(Verdict::DryRun(report)),
            Landing::Land if report.breaks_tenants() => {
                tracing::info!(layer = %proposal.layer, service = %proposal.service, key = %proposal.key, failing = report.failing, locked_overrides = report.locked_overrides, "shared change refused: it breaks tenants");
                Err(ConfigError::BreaksTenants {
                    report: Box::new(report),
                })
            }
            Landing::Force if report.breaks_tenants() => {
                tracing::warn!(layer = %proposal.layer, service = %proposal.service, key = %proposal.key, failing = report.failing, locked_overrides = report.locked_overrides, actor = %actor.0, "shared change forced past broken tenants");
                Ok(Verdict::Land {
                    actor: Actor(format!("{}{FORCED_MARK}", actor.0)),
                    report: Some(report),
                })
            }
            _ => Ok(Verdict::Land {
                actor,
                report: Some(report),
            }),
        }
    }

    /// What a shared value is checked against before it lands: the key's
    /// schema on the value alone, unless the blast radius judged every
    /// tenant's effective value already.
    fn shared_check(&self) -> ValueCheck<'_> {
        match &self.blast {
            Some(_) => ValueCheck::default(),
            None => ValueCheck::schema(self.schemas.as_deref()),
        }
    }

    /// Asks the user pool whether a platform administrator still is one.
    pub fn with_membership(mut self, membership: Arc<dyn GroupMembership>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// Checks every shared value against its key's JSON Schema.
    pub fn with_schemas(mut self, schemas: Arc<Schemas>) -> Self {
        self.schemas = Some(schemas);
        self
    }

    /// The platform administrators' group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// 403 unless the caller is a platform administrator now (503 when the
    /// pool cannot say).
    pub async fn authorize(&self, identity: &Identity) -> Result<(), ConfigError> {
        require_member(identity, &self.group, self.membership.as_deref()).await
    }

    fn target(
        &self,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<(EntryKey, StoreKind, &dyn ConfigWriter), ConfigError> {
        if !layer.is_shared() {
            return Err(ConfigError::BadRequest(
                "a tenant's own layer is written through /v1/config".to_owned(),
            ));
        }
        let kind = self.router.route(key)?;
        let writer: &dyn ConfigWriter = match kind {
            StoreKind::DynamoDb => self.dynamodb.as_ref(),
            StoreKind::ParameterStore => self.parameters.as_ref(),
        };
        Ok((
            EntryKey::new(layer.clone(), service.clone(), key.clone()),
            kind,
            writer,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        value: &NewValue,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<WriteOutcome>, ConfigError> {
        self.authorize(identity).await?;
        self.put_as(
            &identity.subject,
            layer,
            service,
            key,
            value,
            expected,
            landing,
        )
        .await
    }

    /// [`Self::put`] without the group check, recorded as `actor`: for
    /// the operator CLI, whose AWS credentials are its authorization.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_as(
        &self,
        actor: &str,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        value: &NewValue,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<WriteOutcome>, ConfigError> {
        if value.kind == ValueKind::Secret {
            return Err(ConfigError::InvalidInput {
                field: Field::Value,
                reason: "a shared layer holds no SecureString: every tenant of the layer would \
                         read it; store a secret in each tenant's own layer"
                    .to_owned(),
            });
        }
        let (entry, source, writer) = self.target(layer, service, key)?;
        self.refuse_during_rollout(&entry).await?;
        let (actor, report) = match self
            .verdict(
                actor,
                proposal(&entry, Some(Some(value.read_back_in(source))), None),
                landing,
            )
            .await?
        {
            Verdict::DryRun(report) => return Ok(Weighed::DryRun(report)),
            Verdict::Land { actor, report } => (actor, report),
        };
        let written = checked_put(
            writer,
            &self.shared_check(),
            &entry,
            value,
            expected,
            &actor,
        )
        .await?;
        tracing::info!(%entry, version = written.version, actor = %actor.0, "shared configuration written");
        self.roll_back_overtaken(&entry, &actor).await;
        Ok(Weighed::Landed {
            outcome: WriteOutcome { source, written },
            report,
        })
    }

    pub async fn delete(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<i64>, ConfigError> {
        self.authorize(identity).await?;
        self.delete_as(&identity.subject, layer, service, key, expected, landing)
            .await
    }

    /// [`Self::delete`] without the group check, recorded as `actor`: for
    /// the operator CLI, whose AWS credentials are its authorization.
    #[allow(clippy::too_many_arguments)]
    pub async fn delete_as(
        &self,
        actor: &str,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<i64>, ConfigError> {
        let (entry, _, writer) = self.target(layer, service, key)?;
        self.refuse_during_rollout(&entry).await?;
        let (actor, report) = match self
            .verdict(actor, proposal(&entry, Some(None), None), landing)
            .await?
        {
            Verdict::DryRun(report) => return Ok(Weighed::DryRun(report)),
            Verdict::Land { actor, report } => (actor, report),
        };
        let version = writer.delete(&entry, expected, &actor).await?;
        tracing::info!(%entry, version, actor = %actor.0, "shared configuration deleted");
        self.roll_back_overtaken(&entry, &actor).await;
        Ok(Weighed::Landed {
            outcome: version,
            report,
        })
    }

    pub async fn history(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Vec<VersionRecord>, ConfigError> {
        self.authorize(identity).await?;
        let (entry, _, writer) = self.target(layer, service, key)?;
        Ok(writer.history(&entry, MAX_HISTORY).await?)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn rollback(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        to: i64,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<WriteOutcome>, ConfigError> {
        self.authorize(identity).await?;
        self.rollback_as(
            &identity.subject,
            layer,
            service,
            key,
            to,
            expected,
            landing,
        )
        .await
    }

    /// [`Self::rollback`] without the group check, recorded as `actor`: for
    /// the operator CLI, whose AWS credentials are its authorization.
    #[allow(clippy::too_many_arguments)]
    pub async fn rollback_as(
        &self,
        actor: &str,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        to: i64,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<WriteOutcome>, ConfigError> {
        let (entry, source, writer) = self.target(layer, service, key)?;
        self.refuse_during_rollout(&entry).await?;
        let restored = match &self.blast {
            // The value it restores is weighed like a new one.
            Some(_) => Some(
                writer
                    .history(&entry, ROLLBACK_LOOKBACK)
                    .await?
                    .into_iter()
                    .find(|v| v.version == to && !v.deleted)
                    .ok_or(WriteError::UnknownVersion(to))?
                    .value,
            ),
            None => None,
        };
        let (actor, report) = match self
            .verdict(actor, proposal(&entry, restored, None), landing)
            .await?
        {
            Verdict::DryRun(report) => return Ok(Weighed::DryRun(report)),
            Verdict::Land { actor, report } => (actor, report),
        };
        let written =
            checked_rollback(writer, &self.shared_check(), &entry, to, expected, &actor).await?;
        tracing::info!(%entry, version = written.version, rollback_of = to, actor = %actor.0, "shared configuration rolled back");
        self.roll_back_overtaken(&entry, &actor).await;
        Ok(Weighed::Landed {
            outcome: WriteOutcome { source, written },
            report,
        })
    }

    fn guardrails(&self) -> Result<(&dyn GuardrailStore, &Guardrails), ConfigError> {
        self.guardrails
            .as_ref()
            .map(|(store, remembered)| (store.as_ref(), remembered.as_ref()))
            .ok_or(ConfigError::RouteNotFound)
    }

    /// A shared layer's guardrail of a key (`None`: it sets none).
    pub async fn guardrail(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Option<StoredGuardrail>, ConfigError> {
        self.authorize(identity).await?;
        self.target(layer, service, key)?;
        Ok(self
            .guardrails()?
            .0
            .get(&EntryKey::new(layer.clone(), service.clone(), key.clone()))
            .await?)
    }

    /// Sets (or with `None` removes) a shared layer's guardrail of a key if
    /// it is at `expected`, weighed like a value: a lock over tenants that
    /// hold their own value, or a schema a tenant's effective value fails,
    /// is refused unless forced. Returns the new version (0: removed).
    #[allow(clippy::too_many_arguments)]
    pub async fn set_guardrail(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        guardrail: Option<&Guardrail>,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<i64>, ConfigError> {
        self.authorize(identity).await?;
        self.set_guardrail_as(
            &identity.subject,
            layer,
            service,
            key,
            guardrail,
            expected,
            landing,
        )
        .await
    }

    /// [`Self::set_guardrail`] without the group check, recorded as `actor`: for
    /// the operator CLI, whose AWS credentials are its authorization.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_guardrail_as(
        &self,
        actor: &str,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        guardrail: Option<&Guardrail>,
        expected: Expected,
        landing: Landing,
    ) -> Result<Weighed<i64>, ConfigError> {
        let (entry, _, _) = self.target(layer, service, key)?;
        let (store, remembered) = self.guardrails()?;
        if let Some(guardrail) = guardrail {
            guardrail.compile()?;
        }
        let (actor, report) = match self
            .verdict(
                actor,
                proposal(&entry, None, Some(guardrail.cloned())),
                landing,
            )
            .await?
        {
            Verdict::DryRun(report) => return Ok(Weighed::DryRun(report)),
            Verdict::Land { actor, report } => (actor, report),
        };
        let current = store.get(&entry).await?.map(|g| g.version);
        let from = stored_version_expected(expected, current)?;
        if guardrail.is_none() && from.is_none() {
            return Err(WriteError::NotFound.into());
        }
        let Some(version) = store
            .put(&entry, guardrail, from, &actor.0, now_ms())
            .await?
        else {
            let current = store.get(&entry).await?.map(|g| g.version);
            return Err(WriteError::Conflict { current }.into());
        };
        remembered.forget(&entry).await;
        tracing::info!(%entry, locked = guardrail.is_some_and(|g| g.locked), schema = guardrail.is_some_and(|g| g.schema.is_some()), removed = guardrail.is_none(), version, actor = %actor.0, "guardrail set");
        Ok(Weighed::Landed {
            outcome: version,
            report,
        })
    }

    /// A tenant's registration (never registered: no tier, active).
    pub async fn registration(
        &self,
        identity: &Identity,
        tenant: &TenantId,
    ) -> Result<Registration, ConfigError> {
        self.authorize(identity).await?;
        let registered = self.registry.get(tenant).await?;
        Ok(match registered {
            Some(registered) => Registration {
                tenant: tenant.clone(),
                record: registered.record,
                version: Some(registered.version),
                updated_by: registered.updated_by,
                updated_at_ms: registered.updated_at_ms,
            },
            None => Registration {
                tenant: tenant.clone(),
                record: TenantRecord::unregistered(),
                version: None,
                updated_by: None,
                updated_at_ms: None,
            },
        })
    }

    /// Registers a tenant (its tier, whether it is active) if its record is
    /// at `expected`: a tier change is journaled, pushed and converged like
    /// any change (the registry item's stream record).
    pub async fn register(
        &self,
        identity: &Identity,
        tenant: &TenantId,
        record: &TenantRecord,
        expected: Expected,
    ) -> Result<Written, ConfigError> {
        self.authorize(identity).await?;
        let current = self.registry.get(tenant).await?.map(|r| r.version);
        let from = stored_version_expected(expected, current)?;
        let version = self
            .registry
            .put(tenant, record, from, &identity.subject, now_ms())
            .await?;
        let Some(version) = version else {
            // Another write got there first: name the version it left.
            let current = self.registry.get(tenant).await?.map(|r| r.version);
            return Err(WriteError::Conflict { current }.into());
        };
        tracing::info!(%tenant, tier = ?record.tier.as_ref().map(|t| t.to_string()), active = record.active, version, actor = %identity.subject, "tenant registered");
        Ok(Written {
            version,
            previous: from,
        })
    }
}

fn proposal(
    entry: &EntryKey,
    value: Option<Option<serde_json::Value>>,
    guardrail: Option<Option<Guardrail>>,
) -> Proposal {
    Proposal {
        layer: entry.layer.clone(),
        service: entry.service.clone(),
        key: entry.key.clone(),
        value,
        guardrail,
    }
}

/// What a forced change's actor ends with.
pub const FORCED_MARK: &str = " (forced past broken tenants)";

/// The stored version a versioned record (a registration, a guardrail) is
/// written from, if `expected` allows its `current` one (409 otherwise).
fn stored_version_expected(
    expected: Expected,
    current: Option<i64>,
) -> Result<Option<i64>, ConfigError> {
    match (expected, current) {
        (Expected::Absent, None) => Ok(None),
        (Expected::Version(v), Some(c)) if v == c => Ok(Some(v)),
        (Expected::Any, current) => Ok(current),
        _ => Err(WriteError::Conflict { current }.into()),
    }
}
