//! Tenant-scoped AWS credentials ("token vending"). With a tenant role
//! configured, every call that reads or writes a tenant's items or parameters
//! is signed with credentials from STS AssumeRole into that role with the
//! session tag `TenantId = {tenant}`. The role's policy allows DynamoDB only
//! where `dynamodb:LeadingKeys` is `TENANT#${aws:PrincipalTag/TenantId}` and
//! Parameter Store and KMS only under `{root}/${aws:PrincipalTag/TenantId}/`,
//! so even a bug that names the wrong tenant cannot read another tenant:
//! IAM refuses it.
//!
//! Each tenant gets one credentials provider, so both store clients share
//! its credentials through the SDK's identity cache, which refreshes them
//! shortly before they expire and makes concurrent callers wait for one
//! AssumeRole. At most `max_tenants` tenants are kept (least recently used
//! first out); an evicted tenant's next call assumes the role again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

use crate::layers::Layer;
use crate::validate::TenantId;

/// The session tag the tenant role's policy conditions on.
pub const TENANT_TAG: &str = "TenantId";

/// Gets credentials scoped to one tenant.
#[async_trait]
pub trait RoleAssumer: Send + Sync + std::fmt::Debug {
    async fn assume(&self, tenant: &TenantId) -> Result<Credentials, CredentialsError>;
}

/// STS AssumeRole into the tenant role, tagged with the tenant.
#[derive(Debug)]
pub struct StsTenantRole {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session: Duration,
}

impl StsTenantRole {
    pub fn new(sts: aws_sdk_sts::Client, role_arn: impl Into<String>, session: Duration) -> Self {
        Self {
            sts,
            role_arn: role_arn.into(),
            session,
        }
    }
}

/// `tenant-config-{tenant}`, within STS's 64 characters (tenant ids are
/// already in STS's session name alphabet).
fn session_name(tenant: &TenantId) -> String {
    format!("tenant-config-{tenant}").chars().take(64).collect()
}

#[async_trait]
impl RoleAssumer for StsTenantRole {
    async fn assume(&self, tenant: &TenantId) -> Result<Credentials, CredentialsError> {
        let tag = aws_sdk_sts::types::Tag::builder()
            .key(TENANT_TAG)
            .value(tenant.as_str())
            .build()
            .map_err(CredentialsError::invalid_configuration)?;
        assume_role(
            &self.sts,
            &self.role_arn,
            &session_name(tenant),
            Some(tag),
            self.session,
            "tenant-config-tenant-role",
        )
        .await
        .inspect(|c| tracing::info!(%tenant, expires = ?c.expiry(), "assumed the tenant role"))
    }
}

/// The platform write role (`PLATFORM_WRITE_ROLE_ARN`): assumed by
/// config-api's platform routes only, after the platform administrator
/// check, with no tenant tag; it writes the shared layers and the registry
/// and no tenant's data.
#[derive(Debug, Clone)]
pub struct StsPlatformRole {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session: Duration,
}

impl StsPlatformRole {
    pub fn new(sts: aws_sdk_sts::Client, role_arn: impl Into<String>, session: Duration) -> Self {
        Self {
            sts,
            role_arn: role_arn.into(),
            session,
        }
    }

    /// `base` signed with this role's credentials (one identity cache: one
    /// AssumeRole per session, refreshed before expiry).
    pub fn config(self, base: &SdkConfig) -> SdkConfig {
        base.to_builder()
            .identity_cache(aws_config::identity::IdentityCache::lazy().build())
            .credentials_provider(SharedCredentialsProvider::new(self))
            .build()
    }

    async fn assume(&self) -> Result<Credentials, CredentialsError> {
        assume_role(
            &self.sts,
            &self.role_arn,
            "tenant-config-platform",
            None,
            self.session,
            "tenant-config-platform-role",
        )
        .await
        .inspect(|c| tracing::info!(expires = ?c.expiry(), "assumed the platform write role"))
    }
}

impl ProvideCredentials for StsPlatformRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}

/// One AssumeRole (tagged when `tag` is given), counted, as credentials
/// that expire with the session; the tenant roles and the platform role
/// are assumed alike.
async fn assume_role(
    sts: &aws_sdk_sts::Client,
    role_arn: &str,
    session_name: &str,
    tag: Option<aws_sdk_sts::types::Tag>,
    session: Duration,
    provider_name: &'static str,
) -> Result<Credentials, CredentialsError> {
    crate::metrics::metrics().add(crate::metrics::Counter::AssumeRoles, 1);
    let output = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name(session_name)
        .set_tags(tag.map(|tag| vec![tag]))
        .duration_seconds(session.as_secs().clamp(900, 43_200) as i32)
        .send()
        .await
        .map_err(|e| {
            CredentialsError::provider_error(aws_sdk_sts::error::DisplayErrorContext(e).to_string())
        })?;
    let credentials = output
        .credentials
        .ok_or_else(|| CredentialsError::unhandled("AssumeRole returned no credentials"))?;
    let expiry = std::time::SystemTime::try_from(credentials.expiration)
        .map_err(|e| CredentialsError::unhandled(e.to_string()))?;
    Ok(Credentials::new(
        credentials.access_key_id,
        credentials.secret_access_key,
        Some(credentials.session_token),
        Some(expiry),
        provider_name,
    ))
}

/// One tenant's credentials provider (the SDK caches what it returns).
#[derive(Debug)]
struct TenantProvider {
    tenant: TenantId,
    assumer: Arc<dyn RoleAssumer>,
}

impl ProvideCredentials for TenantProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assumer.assume(&self.tenant))
    }
}

/// A bounded cache that keeps the tenants used last. moka's default policy
/// (TinyLFU) does not admit a key it has seen rarely while the cache is full
/// of busier ones: a new tenant would then get a new configuration, and so a
/// new AssumeRole, on every call.
fn lru_cache<V: Clone + Send + Sync + 'static>(capacity: u64) -> moka::sync::Cache<TenantId, V> {
    moka::sync::Cache::builder()
        .max_capacity(capacity.max(1))
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .build()
}

/// Per-tenant SDK configurations: the process's configuration with the
/// tenant's credentials provider.
pub struct TenantCredentials {
    base: SdkConfig,
    assumer: Arc<dyn RoleAssumer>,
    configs: moka::sync::Cache<TenantId, SdkConfig>,
}

impl TenantCredentials {
    pub fn new(base: SdkConfig, assumer: Arc<dyn RoleAssumer>, max_tenants: u64) -> Self {
        Self {
            base,
            assumer,
            configs: lru_cache(max_tenants),
        }
    }

    /// The configuration every client of `tenant` is built from.
    pub fn config(&self, tenant: &TenantId) -> SdkConfig {
        self.configs.get_with(tenant.clone(), || {
            let provider = TenantProvider {
                tenant: tenant.clone(),
                assumer: self.assumer.clone(),
            };
            // One identity cache per tenant, shared by every client built
            // from this configuration: one AssumeRole per tenant, refreshed
            // shortly before expiry, concurrent callers waiting on one call.
            self.base
                .to_builder()
                .identity_cache(aws_config::identity::IdentityCache::lazy().build())
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build()
        })
    }
}

/// The SDK client a store uses for a tenant's calls: the process's own, or
/// one signed with the tenant's vended credentials.
#[derive(Clone)]
pub enum TenantClient<C> {
    Shared(C),
    Vended {
        credentials: Arc<TenantCredentials>,
        clients: moka::sync::Cache<TenantId, C>,
        build: fn(&SdkConfig) -> C,
    },
}

impl<C: Clone + Send + Sync + 'static> TenantClient<C> {
    /// Clients built by `build` from each tenant's configuration (bounded
    /// like the configurations).
    pub fn vended(credentials: Arc<TenantCredentials>, build: fn(&SdkConfig) -> C) -> Self {
        let capacity = credentials.configs.policy().max_capacity().unwrap_or(1000);
        Self::Vended {
            credentials,
            clients: lru_cache(capacity),
            build,
        }
    }

    /// The client for a layer's calls: a tenant's own layer with its
    /// credentials, a shared layer with the process's own.
    pub fn for_layer(&self, layer: &Layer) -> C {
        match (layer, self) {
            (Layer::Tenant(tenant), _) => self.for_tenant(tenant),
            (_, Self::Shared(client)) => client.clone(),
            (
                _,
                Self::Vended {
                    credentials, build, ..
                },
            ) => build(&credentials.base),
        }
    }

    pub fn for_tenant(&self, tenant: &TenantId) -> C {
        match self {
            Self::Shared(client) => client.clone(),
            Self::Vended {
                credentials,
                clients,
                build,
            } => clients.get_with(tenant.clone(), || build(&credentials.config(tenant))),
        }
    }
}

impl<C> From<C> for TenantClient<C> {
    fn from(client: C) -> Self {
        Self::Shared(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never called: these tests only build configurations.
    #[derive(Debug)]
    struct Unused;

    #[async_trait]
    impl RoleAssumer for Unused {
        async fn assume(&self, _: &TenantId) -> Result<Credentials, CredentialsError> {
            Err(CredentialsError::not_loaded("not in this test"))
        }
    }

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn a_new_tenant_is_kept_even_when_the_cache_is_full_of_busy_ones() {
        // GIVEN room for two tenants, both busy
        let base = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let credentials = TenantCredentials::new(base, Arc::new(Unused), 2);
        let (a, b, c) = (tenant("tenant-a"), tenant("tenant-b"), tenant("tenant-c"));
        for _ in 0..50 {
            credentials.config(&a);
            credentials.config(&b);
        }
        credentials.config(&a);
        credentials.configs.run_pending_tasks();
        // WHEN a third tenant calls
        credentials.config(&c);
        credentials.configs.run_pending_tasks();
        // THEN it is kept (its next call reuses its credentials) and the
        // tenant used longest ago makes room
        assert!(
            credentials.configs.contains_key(&c),
            "the new tenant is kept"
        );
        assert!(
            !credentials.configs.contains_key(&b),
            "the least recently used goes"
        );
        assert!(credentials.configs.contains_key(&a));
    }
}
