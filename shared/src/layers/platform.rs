//! The write use cases of platform administrators: the shared layers
//! (global, tiers) and the tenant registry.
//!
//! Only callers in the platform administrators' group may make them (the
//! token says so and the user pool still does); a tenant administrator
//! keeps writing its own tenant's layer only ([`crate::writes`]). A shared
//! layer holds no SecureString: a secret shared between tenants is an
//! isolation hazard (400).

use std::sync::Arc;

use super::registry::{TenantRecord, TenantRegistry};
use super::{EntryKey, Layer};
use crate::auth::Identity;
use crate::domain::StoreKind;
use crate::error::ConfigError;
use crate::kinds::Field;
use crate::membership::{GroupMembership, require_member};
use crate::routing::KeyRouter;
use crate::schema::Schemas;
use crate::validate::{ConfigKey, ServiceName, TenantId};
use crate::write::{
    Actor, ConfigWriter, Expected, NewValue, ValueKind, VersionRecord, WriteError, Written, now_ms,
};
use crate::writes::{MAX_HISTORY, WriteOutcome, checked_put, checked_rollback};

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

    pub async fn put(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        value: &NewValue,
        expected: Expected,
    ) -> Result<WriteOutcome, ConfigError> {
        self.authorize(identity).await?;
        if value.kind == ValueKind::Secret {
            return Err(ConfigError::InvalidInput {
                field: Field::Value,
                reason: "a shared layer holds no SecureString: every tenant of the layer would \
                         read it; store a secret in each tenant's own layer"
                    .to_owned(),
            });
        }
        let (entry, source, writer) = self.target(layer, service, key)?;
        let written = checked_put(
            writer,
            self.schemas.as_deref(),
            &entry,
            value,
            expected,
            &actor(identity),
        )
        .await?;
        tracing::info!(%entry, version = written.version, actor = %identity.subject, "shared configuration written");
        Ok(WriteOutcome { source, written })
    }

    pub async fn delete(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        expected: Expected,
    ) -> Result<i64, ConfigError> {
        self.authorize(identity).await?;
        let (entry, _, writer) = self.target(layer, service, key)?;
        let version = writer.delete(&entry, expected, &actor(identity)).await?;
        tracing::info!(%entry, version, actor = %identity.subject, "shared configuration deleted");
        Ok(version)
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

    pub async fn rollback(
        &self,
        identity: &Identity,
        layer: &Layer,
        service: &ServiceName,
        key: &ConfigKey,
        to: i64,
        expected: Expected,
    ) -> Result<WriteOutcome, ConfigError> {
        self.authorize(identity).await?;
        let (entry, source, writer) = self.target(layer, service, key)?;
        let written = checked_rollback(
            writer,
            self.schemas.as_deref(),
            &entry,
            to,
            expected,
            &actor(identity),
        )
        .await?;
        tracing::info!(%entry, version = written.version, rollback_of = to, actor = %identity.subject, "shared configuration rolled back");
        Ok(WriteOutcome { source, written })
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
        let from = match (expected, current) {
            (Expected::Absent, None) => None,
            (Expected::Version(v), Some(c)) if v == c => Some(v),
            (Expected::Any, current) => current,
            _ => return Err(WriteError::Conflict { current }.into()),
        };
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

fn actor(identity: &Identity) -> Actor {
    Actor(identity.subject.clone())
}
