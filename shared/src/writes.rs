//! The write use cases for tenant administrators: put, delete, history and
//! rollback of one key of their own tenant, through the writer port.
//!
//! Only callers in the administrators' group may write; the tenant still
//! comes only from the verified token, and the change is recorded as the
//! token's `sub`. Inputs are already validated types.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Identity;
use crate::domain::StoreKind;
use crate::error::ConfigError;
use serde_json::Value;

use crate::layers::guardrails::{Constraints, Guardrails};
use crate::layers::merge::merge_values;
use crate::layers::view::SharedLayers;
use crate::layers::{EntryKey, Layer};
use crate::membership::{GroupMembership, require_member};
use crate::metrics::{Counter, metrics};
use crate::quota::{QuotaError, RememberedRefusals, WriteQuotas, current_second, refusal};
use crate::routing::KeyRouter;
use crate::schema::Schemas;
use crate::validate::{ConfigKey, ServiceName, TenantId, TierName};
use crate::write::{
    Actor, ConfigWriter, Expected, NewValue, ValueKind, VersionRecord, WriteError, Written,
};

/// Most versions one history answer lists.
pub const MAX_HISTORY: usize = 100;
/// How far back a rollback target is looked up to check it against the
/// schema (Parameter Store keeps 100 versions; DynamoDB history is kept for
/// its retention, and a target older than this is refused as unknown).
pub const ROLLBACK_LOOKBACK: usize = 1000;

pub struct ConfigWrites {
    router: KeyRouter,
    dynamodb: Arc<dyn ConfigWriter>,
    parameters: Arc<dyn ConfigWriter>,
    admin_group: String,
    /// Checked before anything is stored (absent: no validation).
    schemas: Option<Arc<Schemas>>,
    /// Asked whether an administrator still is one (absent: the token's
    /// groups alone decide).
    membership: Option<Arc<dyn GroupMembership>>,
    /// Each tenant's writes per minute and stored keys (absent: unlimited).
    quotas: Option<Arc<dyn WriteQuotas>>,
    /// The shared layers under a tenant's own and its registration
    /// (absent: a tenant's value is judged alone and every tenant is active).
    layers: Option<Arc<SharedLayers>>,
    /// The shared layers' locks and schemas (absent: none).
    guardrails: Option<Arc<Guardrails>>,
}

/// What a write did and where.
#[derive(Debug, Clone, Copy)]
pub struct WriteOutcome {
    pub source: StoreKind,
    pub written: Written,
}

impl ConfigWrites {
    pub fn new(
        router: KeyRouter,
        dynamodb: Arc<dyn ConfigWriter>,
        parameters: Arc<dyn ConfigWriter>,
        admin_group: impl Into<String>,
    ) -> Self {
        Self {
            router,
            dynamodb,
            parameters,
            admin_group: admin_group.into(),
            schemas: None,
            membership: None,
            quotas: None,
            layers: None,
            guardrails: None,
        }
    }

    /// Refuses an inactive tenant's writes and judges a tenant's value by
    /// what its readers get: merged over its tier's and the global layer.
    pub fn with_layers(mut self, layers: Arc<SharedLayers>) -> Self {
        self.layers = Some(layers);
        self
    }

    /// Holds a tenant's writes to the locks and schemas of the shared
    /// layers over it (422).
    pub fn with_guardrails(mut self, guardrails: Arc<Guardrails>) -> Self {
        self.guardrails = Some(guardrails);
        self
    }

    /// Counts every write against its tenant's quotas (429 past them); a
    /// window once refused is refused in this process without a counter
    /// call until it ends ([`RememberedRefusals`]).
    pub fn with_quotas(mut self, quotas: Arc<dyn WriteQuotas>) -> Self {
        self.quotas = Some(Arc::new(RememberedRefusals::new(quotas)));
        self
    }

    /// Counts one write (put, delete, rollback) in the tenant's minute.
    async fn count_write(&self, tenant: &TenantId) -> Result<(), ConfigError> {
        let Some(quotas) = self
            .quotas
            .as_ref()
            .filter(|q| q.limits().writes_per_minute > 0)
        else {
            return Ok(());
        };
        let (second, next_second, next_minute) = current_second();
        quotas
            .count_write(tenant, second)
            .await
            .map_err(|err| refused(tenant, err, next_second, next_minute))
    }

    /// Makes room for a key a put creates.
    async fn reserve_key(&self, tenant: &TenantId) -> Result<bool, ConfigError> {
        let Some(quotas) = self.quotas.as_ref().filter(|q| q.limits().max_keys > 0) else {
            return Ok(false);
        };
        quotas
            .reserve_key(tenant)
            .await
            .map_err(|err| refused(tenant, err, Duration::ZERO, Duration::ZERO))?;
        Ok(true)
    }

    /// Gives a key's room back; a failure leaves the count high (the tenant
    /// may be refused early until `quota recount`), so it is logged.
    async fn release_key(&self, tenant: &TenantId) {
        if let Some(quotas) = self.quotas.as_ref().filter(|q| q.limits().max_keys > 0)
            && let Err(err) = quotas.release_key(tenant).await
        {
            tracing::warn!(%tenant, error = %err, "could not give a key back to the tenant's quota");
        }
    }

    /// Confirms every write's group membership with the user pool (see
    /// [`crate::membership`]), beside the token's groups.
    pub fn with_membership(mut self, membership: Arc<dyn GroupMembership>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// Checks every value against its JSON Schema before it is stored.
    pub fn with_schemas(mut self, schemas: Arc<Schemas>) -> Self {
        self.schemas = Some(schemas);
        self
    }

    /// The caller's tenant, if the caller may administer it: the token says
    /// so, and the user pool still does (403 otherwise; 503 when the pool
    /// cannot say).
    pub async fn authorize<'a>(&self, identity: &'a Identity) -> Result<&'a TenantId, ConfigError> {
        Ok(self.admit(identity).await?.0)
    }

    /// The caller's tenant and its tier: the caller administers it and the
    /// tenant is active (403 `tenant_inactive` otherwise).
    async fn admit<'a>(
        &self,
        identity: &'a Identity,
    ) -> Result<(&'a TenantId, Option<TierName>), ConfigError> {
        let tenant = identity.require_tenant()?;
        require_member(identity, &self.admin_group, self.membership.as_deref()).await?;
        let tier = match &self.layers {
            Some(layers) => layers.current_active_tier(tenant).await?,
            None => None,
        };
        Ok((tenant, tier))
    }

    /// What a tenant's new value of the key must satisfy: no shared layer
    /// over it locks the key (422 `key_locked`), and merged over the shared
    /// layers it passes the key's schema and their guardrails.
    async fn value_check(
        &self,
        tier: Option<&TierName>,
        source: StoreKind,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<ValueCheck<'_>, ConfigError> {
        let constraints = match &self.guardrails {
            Some(guardrails) => guardrails.over(tier, service, key).await?,
            None => Constraints::default(),
        };
        if let Some(layer) = constraints.locked_by() {
            return Err(ConfigError::KeyLocked {
                layer: layer.to_string(),
            });
        }
        let under = match &self.layers {
            Some(layers) => layers
                .underlay(source, tier, service)
                .await?
                .values(key)
                .iter()
                .map(|(_, value)| value.value.clone())
                .collect(),
            None => Vec::new(),
        };
        Ok(ValueCheck {
            schemas: self.schemas.as_deref(),
            under,
            constraints,
        })
    }

    fn target(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<(EntryKey, StoreKind, &dyn ConfigWriter), ConfigError> {
        let kind = self.router.route(key)?;
        let writer: &dyn ConfigWriter = match kind {
            StoreKind::DynamoDb => self.dynamodb.as_ref(),
            StoreKind::ParameterStore => self.parameters.as_ref(),
        };
        let item = EntryKey::new(Layer::Tenant(tenant.clone()), service.clone(), key.clone());
        Ok((item, kind, writer))
    }

    pub async fn put(
        &self,
        identity: &Identity,
        service: &ServiceName,
        key: &ConfigKey,
        value: &NewValue,
        expected: Expected,
    ) -> Result<WriteOutcome, ConfigError> {
        let (tenant, tier) = self.admit(identity).await?;
        let (item, source, writer) = self.target(tenant, service, key)?;
        // Counted first: a tenant past its quota costs no guardrail or
        // shared-layer read.
        self.count_write(tenant).await?;
        let check = self
            .value_check(tier.as_ref(), source, service, key)
            .await?;
        // Only a create adds a key (a put of an existing key names its version).
        let reserved = expected == Expected::Absent && self.reserve_key(tenant).await?;
        let written = checked_put(writer, &check, &item, value, expected, &actor(identity)).await;
        if reserved && written.is_err() {
            self.release_key(tenant).await;
        }
        let written = written?;
        tracing::info!(
            entry = %item.cache_key(),
            version = written.version,
            actor = %identity.subject,
            "configuration written"
        );
        Ok(WriteOutcome { source, written })
    }

    /// Deletes the key; returns the deleted version.
    pub async fn delete(
        &self,
        identity: &Identity,
        service: &ServiceName,
        key: &ConfigKey,
        expected: Expected,
    ) -> Result<i64, ConfigError> {
        let (tenant, _) = self.admit(identity).await?;
        let (item, _, writer) = self.target(tenant, service, key)?;
        self.count_write(tenant).await?;
        let version = writer.delete(&item, expected, &actor(identity)).await?;
        self.release_key(tenant).await;
        tracing::info!(entry = %item.cache_key(), version, actor = %identity.subject, "configuration deleted");
        Ok(version)
    }

    /// Whether the key holds a SecureString now (only Parameter Store keys
    /// can: DynamoDB holds no secrets), for callers that may not change one.
    pub async fn holds_secret(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<bool, ConfigError> {
        let (item, source, writer) = self.target(tenant, service, key)?;
        if source == StoreKind::DynamoDb {
            return Ok(false);
        }
        Ok(writer
            .history(&item, 1)
            .await?
            .first()
            .is_some_and(|v| v.kind == crate::domain::ValueKind::Secret && !v.deleted))
    }

    pub async fn history(
        &self,
        identity: &Identity,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Vec<VersionRecord>, ConfigError> {
        let (tenant, _) = self.admit(identity).await?;
        let (item, _, writer) = self.target(tenant, service, key)?;
        Ok(writer.history(&item, MAX_HISTORY).await?)
    }

    pub async fn rollback(
        &self,
        identity: &Identity,
        service: &ServiceName,
        key: &ConfigKey,
        to: i64,
        expected: Expected,
    ) -> Result<WriteOutcome, ConfigError> {
        let (tenant, tier) = self.admit(identity).await?;
        let (item, source, writer) = self.target(tenant, service, key)?;
        // Counted first: a tenant past its quota costs no guardrail or
        // shared-layer read.
        self.count_write(tenant).await?;
        let check = self
            .value_check(tier.as_ref(), source, service, key)
            .await?;
        let written =
            checked_rollback(writer, &check, &item, to, expected, &actor(identity)).await?;
        tracing::info!(
            entry = %item.cache_key(),
            version = written.version,
            rollback_of = to,
            actor = %identity.subject,
            "configuration rolled back"
        );
        Ok(WriteOutcome { source, written })
    }
}

/// A quota refusal, counted and logged (store failures pass as they are).
fn refused(
    tenant: &TenantId,
    err: QuotaError,
    until_next_second: Duration,
    until_next_minute: Duration,
) -> ConfigError {
    if let QuotaError::Exceeded(quota) = &err {
        metrics().count(Counter::WriteQuotaRefusals);
        tracing::info!(%tenant, %quota, "write refused by the tenant's quota");
    }
    refusal(err, until_next_second, until_next_minute)
}

/// Changes are recorded as the token's subject.
fn actor(identity: &Identity) -> Actor {
    Actor(identity.subject.clone())
}

/// What a value must satisfy before it is stored: its key's JSON Schema
/// and the guardrails over it, judged on the value merged over the shared
/// layers under it (a tenant's patch is judged by what its readers get).
#[derive(Default, Clone)]
pub struct ValueCheck<'a> {
    pub schemas: Option<&'a Schemas>,
    /// The lower layers' values of the key, bottom first.
    pub under: Vec<Value>,
    pub constraints: Constraints,
}

impl<'a> ValueCheck<'a> {
    /// The key's schema alone, on the value alone.
    pub fn schema(schemas: Option<&'a Schemas>) -> Self {
        Self {
            schemas,
            ..Self::default()
        }
    }

    fn checks_nothing(&self) -> bool {
        self.schemas.is_none() && self.constraints.0.is_empty()
    }

    /// `Ok` when `value` (merged over the layers under it) passes; else 422.
    pub async fn check(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
        value: &Value,
    ) -> Result<(), ConfigError> {
        let merged;
        let judged = if self.under.is_empty() {
            value
        } else {
            let mut layers: Vec<&Value> = self.under.iter().collect();
            layers.push(value);
            merged = merge_values(&layers).unwrap_or(Value::Null);
            &merged
        };
        if let Some(schemas) = self.schemas {
            schemas.check(service, key, judged).await?;
        }
        self.constraints.check(judged)
    }
}

/// Stores `value` if it passes `check`: the write rule the API and the CLI
/// share (nothing that fails reaches a store, so no reader).
pub async fn checked_put(
    writer: &dyn ConfigWriter,
    check: &ValueCheck<'_>,
    item: &EntryKey,
    value: &NewValue,
    expected: Expected,
    actor: &Actor,
) -> Result<Written, ConfigError> {
    if !check.checks_nothing() {
        let read_back = value.read_back_in(writer.kind());
        if value.kind == ValueKind::Secret {
            // Nothing merges into a SecureString: readers get it whole.
            let alone = ValueCheck {
                under: Vec::new(),
                ..check.clone()
            };
            alone.check(&item.service, &item.key, &read_back).await?;
        } else {
            check.check(&item.service, &item.key, &read_back).await?;
        }
    }
    Ok(writer.put(item, value, expected, actor).await?)
}

/// Restores version `to` if its value passes today's `check` (the schema
/// may have been tightened since that version was written).
pub async fn checked_rollback(
    writer: &dyn ConfigWriter,
    check: &ValueCheck<'_>,
    item: &EntryKey,
    to: i64,
    expected: Expected,
    actor: &Actor,
) -> Result<Written, ConfigError> {
    if !check.checks_nothing() {
        let old = writer
            .history(item, ROLLBACK_LOOKBACK)
            .await?
            .into_iter()
            .find(|v| v.version == to)
            .ok_or(WriteError::UnknownVersion(to))?;
        // A SecureString's old value never leaves the writer, so it is
        // restored unchecked (it passed the schema when it was written).
        if let Some(value) = &old.value {
            check.check(&item.service, &item.key, value).await?;
        }
    }
    Ok(writer.rollback(item, to, expected, actor).await?)
}
