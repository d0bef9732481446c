//! Service-level isolation: which services of its tenant a caller may read,
//! and of which it may read SecureStrings, granted per app client (the
//! token's `aud`: each consuming service signs its users in with its own
//! client). Operators change grants without a redeploy
//! (`tenant-config-admin grant`); every reader re-reads a client's grant
//! within [`GRANT_CACHE_TTL`].
//!
//! Grants live in the config table under the reserved partition `GRANTS`,
//! `sk = CLIENT#{client id}`, attributes `services` and `secure_services`
//! (lists of service names, `*` for every service). No tenant partition,
//! stream filter or listing sees them. A client without a grant reads
//! nothing; a refusal is the same `403 service_not_granted` whether or not
//! the key exists, decided before any store is asked.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use moka::future::Cache;

use crate::auth::Identity;
use crate::error::{ConfigError, StoreError};
use crate::store::dynamodb::{PARTITION_KEY, SORT_KEY, sdk_error};
use crate::validate::ServiceName;

/// The reserved partition holding grants.
pub const GRANTS_PARTITION: &str = "GRANTS";
/// Grants every service (in either list).
pub const ALL_SERVICES: &str = "*";
const SERVICES: &str = "services";
const SECURE_SERVICES: &str = "secure_services";
/// How long a client's grant (or its absence) is remembered per process:
/// a revoked grant stops working within this.
pub const GRANT_CACHE_TTL: Duration = Duration::from_secs(10);

/// Sort key of a client's grant.
pub fn grant_sort_key(client_id: &str) -> String {
    format!("CLIENT#{client_id}")
}

/// The table key of a client's grant.
fn grant_key(client_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(GRANTS_PARTITION.to_owned()),
        ),
        (
            SORT_KEY.to_owned(),
            AttributeValue::S(grant_sort_key(client_id)),
        ),
    ])
}

/// What one app client may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Services whose non-secret values it may read (and, for tenant
    /// administrators, write).
    pub services: BTreeSet<String>,
    /// Services whose SecureStrings it may read and write; each also needs
    /// to be in `services`.
    pub secure_services: BTreeSet<String>,
}

/// What a request wants of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Non-secret values: the cacheable reads, the agent, writes of plain values.
    Plain,
    /// SecureStrings: the secure route, writes of a SecureString.
    Secure,
}

impl Grant {
    fn names(set: &BTreeSet<String>, service: &ServiceName) -> bool {
        set.contains(ALL_SERVICES) || set.contains(service.as_str())
    }

    pub fn allows(&self, service: &ServiceName, access: Access) -> bool {
        Self::names(&self.services, service)
            && (access == Access::Plain || Self::names(&self.secure_services, service))
    }
}

/// Where grants come from.
#[async_trait]
pub trait GrantSource: Send + Sync {
    /// The client's grant; `None` when it has none.
    async fn grant(&self, client_id: &str) -> Result<Option<Grant>, StoreError>;
}

/// Grants in the config table.
pub struct DynamoDbGrants {
    client: Client,
    table: String,
}

impl DynamoDbGrants {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Stores (replaces) a client's grant: the operator's tool.
    pub async fn put(&self, client_id: &str, grant: &Grant) -> Result<(), StoreError> {
        let list = |set: &BTreeSet<String>| {
            AttributeValue::L(set.iter().cloned().map(AttributeValue::S).collect())
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(grant_key(client_id)))
            .item(SERVICES, list(&grant.services))
            .item(SECURE_SERVICES, list(&grant.secure_services))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// Removes a client's grant: it reads nothing any more.
    pub async fn delete(&self, client_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(grant_key(client_id)))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}

fn names_in(item: &HashMap<String, AttributeValue>, attribute: &str) -> BTreeSet<String> {
    match item.get(attribute) {
        Some(AttributeValue::L(values)) => values
            .iter()
            .filter_map(|v| v.as_s().ok().cloned())
            .collect(),
        Some(AttributeValue::Ss(values)) => values.iter().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

#[async_trait]
impl GrantSource for DynamoDbGrants {
    async fn grant(&self, client_id: &str) -> Result<Option<Grant>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(grant_key(client_id)))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(output.item().map(|item| Grant {
            services: names_in(item, SERVICES),
            secure_services: names_in(item, SECURE_SERVICES),
        }))
    }
}

/// Grants held in memory, for tests and in-process benchmarks.
#[derive(Default)]
pub struct MemoryGrants {
    grants: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
    failure: std::sync::Mutex<Option<StoreError>>,
}

impl MemoryGrants {
    pub fn set(&self, client_id: &str, grant: Grant) {
        if let Ok(mut grants) = self.grants.lock() {
            grants.insert(client_id.to_owned(), grant);
        }
    }

    /// Every later lookup fails with `failure` (`None` heals).
    pub fn set_failure(&self, failure: Option<StoreError>) {
        if let Ok(mut current) = self.failure.lock() {
            *current = failure;
        }
    }
}

#[async_trait]
impl GrantSource for MemoryGrants {
    async fn grant(&self, client_id: &str) -> Result<Option<Grant>, StoreError> {
        if let Some(err) = self.failure.lock().ok().and_then(|f| f.clone()) {
            return Err(err);
        }
        Ok(self
            .grants
            .lock()
            .ok()
            .and_then(|g| g.get(client_id).cloned()))
    }
}

/// The check every route and the agent make before reading or writing.
pub struct ServiceGrants {
    source: Arc<dyn GrantSource>,
    /// Client id → its grant (or none), for [`GRANT_CACHE_TTL`].
    cache: Cache<String, Option<Arc<Grant>>>,
    /// The last grant read per client, for [`GRANT_MAX_STALE`]: while the
    /// table cannot be read, reads go on under the grant last known instead
    /// of failing with it (a store outage must not stop cached reads).
    last_good: Cache<String, Option<Arc<Grant>>>,
    /// Clients whose lookup failed within [`GRANT_RETRY_INTERVAL`]: their
    /// last known grant answers without a lookup (one probe per interval).
    backoff: Cache<String, ()>,
    /// An agent's warm-start snapshot: grants read by the agent before it
    /// restarted, the last known grant when the table fails now.
    snapshot: Option<Arc<crate::warm_start::LastKnownGood>>,
}

/// How long the last grant read keeps serving while the table fails.
pub const GRANT_MAX_STALE: Duration = Duration::from_secs(3600);
/// How long a grant lookup may take when a last known grant can answer.
pub const GRANT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed lookup, the last known grant answers alone this long
/// (one probe per client per interval while the table fails).
const GRANT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

impl ServiceGrants {
    pub fn new(source: Arc<dyn GrantSource>) -> Self {
        Self::with_ttl(source, GRANT_CACHE_TTL)
    }

    pub fn with_ttl(source: Arc<dyn GrantSource>, ttl: Duration) -> Self {
        Self {
            source,
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            last_good: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(GRANT_MAX_STALE)
                .build(),
            backoff: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(GRANT_RETRY_INTERVAL)
                .build(),
            snapshot: None,
        }
    }

    /// Records each grant read into an agent's warm-start snapshot, and
    /// takes the one there as the last known grant (within
    /// [`GRANT_MAX_STALE`] of its reading) when the table fails.
    pub fn with_last_known_good(mut self, snapshot: Arc<crate::warm_start::LastKnownGood>) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// `Ok` when the caller's app client may have `access` to `service`;
    /// `403 service_not_granted` otherwise (whatever the key), and the
    /// store's error when the grant cannot be read and none is known
    /// (nothing is served unchecked).
    pub async fn check(
        &self,
        identity: &Identity,
        service: &ServiceName,
        access: Access,
    ) -> Result<(), ConfigError> {
        if self.allows(identity, service, access).await? {
            return Ok(());
        }
        tracing::info!(client = %identity.client_id, %service, ?access, "service not granted to the caller's app client");
        Err(ConfigError::ServiceNotGranted)
    }

    /// Whether the caller's app client has `access` to `service`.
    pub async fn allows(
        &self,
        identity: &Identity,
        service: &ServiceName,
        access: Access,
    ) -> Result<bool, ConfigError> {
        let grant = self.grant_of(&identity.client_id).await?;
        Ok(grant.is_some_and(|g| g.allows(service, access)))
    }

    async fn grant_of(&self, client: &str) -> Result<Option<Arc<Grant>>, ConfigError> {
        // The common case, a grant read within the TTL, asks nothing else.
        if let Some(fresh) = self.cache.get(client).await {
            return Ok(fresh);
        }
        let last = self.last_good.get(client).await;
        if last.is_none()
            && let Some(remembered) = self
                .snapshot
                .as_ref()
                .and_then(|snapshot| snapshot.grant(client, GRANT_MAX_STALE))
        {
            return Ok(self.first_lookup(client, remembered.map(Arc::new)).await);
        }
        if let Some(last) = &last
            && self.backoff.contains_key(client)
        {
            return Ok(last.clone());
        }
        let source = self.source.clone();
        let owned = client.to_owned();
        let bounded = last.is_some();
        let loaded = self
            .cache
            .try_get_with(owned.clone(), async move {
                let lookup = source.grant(&owned);
                let found = if bounded {
                    tokio::time::timeout(GRANT_PROBE_TIMEOUT, lookup)
                        .await
                        .unwrap_or_else(|_| {
                            Err(StoreError::Unavailable {
                                store: crate::kinds::StoreKind::DynamoDb,
                                detail: format!(
                                    "no grant within the probe timeout ({GRANT_PROBE_TIMEOUT:?})"
                                ),
                            })
                        })
                } else {
                    lookup.await
                };
                found.map(|g| g.map(Arc::new))
            })
            .await;
        match (loaded, last) {
            (Ok(grant), _) => {
                if let Some(snapshot) = &self.snapshot {
                    snapshot.record_grant(client, grant.as_deref());
                }
                self.last_good
                    .insert(client.to_owned(), grant.clone())
                    .await;
                Ok(grant)
            }
            (Err(err), Some(last)) => {
                tracing::warn!(%client, error = %err, "the grants of an app client cannot be read; the last known grant answers");
                self.backoff.insert(client.to_owned(), ()).await;
                Ok(last)
            }
            (Err(err), None) => {
                tracing::warn!(%client, error = %err, "the grants of an app client cannot be read");
                Err(ConfigError::Store(err.as_ref().clone()))
            }
        }
    }

    /// A just-started agent's first lookup of a client its snapshot knows:
    /// the lookup runs to its end in the background (concurrent ones share
    /// it), filling the caches, so a grant changed since the snapshot takes
    /// effect as soon as the table answers; until then, or if the table
    /// fails, the snapshot's grant answers.
    async fn first_lookup(
        &self,
        client: &str,
        remembered: Option<Arc<Grant>>,
    ) -> Option<Arc<Grant>> {
        if self.backoff.contains_key(client) {
            return remembered;
        }
        let (cache, last_good, backoff, source) = (
            self.cache.clone(),
            self.last_good.clone(),
            self.backoff.clone(),
            self.source.clone(),
        );
        let snapshot = self.snapshot.clone();
        let owned = client.to_owned();
        let lookup = tokio::spawn(async move {
            let loaded = cache
                .try_get_with(owned.clone(), async {
                    source.grant(&owned).await.map(|g| g.map(Arc::new))
                })
                .await;
            match loaded {
                Ok(grant) => {
                    if let Some(snapshot) = &snapshot {
                        snapshot.record_grant(&owned, grant.as_deref());
                    }
                    last_good.insert(owned, grant.clone()).await;
                    Some(grant)
                }
                Err(err) => {
                    tracing::warn!(client = %owned, error = %err, "the grants of an app client cannot be read; the snapshot's grant answers");
                    backoff.insert(owned, ()).await;
                    None
                }
            }
        });
        match tokio::time::timeout(crate::warm_start::FIRST_READ_DEADLINE, lookup).await {
            Ok(Ok(Some(grant))) => grant,
            _ => remembered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::StoreKind;

    fn identity(client: &str) -> Identity {
        Identity {
            subject: "s".into(),
            tenant: None,
            expires_at: 0,
            groups: vec![],
            username: "u".into(),
            client_id: client.into(),
        }
    }

    fn service(name: &str) -> ServiceName {
        ServiceName::parse(name).unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_client_reads_only_its_services_and_secrets_only_where_granted() {
        // GIVEN the orders client granted orders (secrets too) and billing
        let source = Arc::new(MemoryGrants::default());
        source.set(
            "orders-client",
            Grant {
                services: set(&["orders", "billing"]),
                secure_services: set(&["orders"]),
            },
        );
        source.set(
            "ops-client",
            Grant {
                services: set(&["*"]),
                secure_services: set(&[]),
            },
        );
        let grants = ServiceGrants::new(source);
        let orders = identity("orders-client");
        // THEN
        let check = |who: &Identity, svc: &str, access| {
            let grants = &grants;
            let who = who.clone();
            let svc = service(svc);
            async move { grants.check(&who, &svc, access).await }
        };
        assert!(check(&orders, "orders", Access::Secure).await.is_ok());
        assert!(check(&orders, "billing", Access::Plain).await.is_ok());
        let refused = check(&orders, "billing", Access::Secure).await.unwrap_err();
        assert_eq!(
            (refused.status(), refused.code()),
            (403, "service_not_granted")
        );
        assert!(check(&orders, "payments", Access::Plain).await.is_err());
        assert!(
            check(&identity("ops-client"), "payments", Access::Plain)
                .await
                .is_ok()
        );
        assert!(
            check(&identity("ops-client"), "payments", Access::Secure)
                .await
                .is_err()
        );
        // AND a client without a grant reads nothing
        assert!(
            check(&identity("unknown"), "orders", Access::Plain)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn unreadable_grants_refuse_with_the_stores_error_and_a_change_is_seen_after_the_ttl() {
        let source = Arc::new(MemoryGrants::default());
        let grants = ServiceGrants::with_ttl(source.clone(), Duration::from_millis(50));
        source.set_failure(Some(StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail: "down".into(),
        }));
        let refused = grants
            .check(&identity("c"), &service("orders"), Access::Plain)
            .await
            .unwrap_err();
        assert_eq!(refused.status(), 502);
        source.set_failure(None);
        source.set(
            "c",
            Grant {
                services: set(&["orders"]),
                secure_services: set(&[]),
            },
        );
        grants
            .check(&identity("c"), &service("orders"), Access::Plain)
            .await
            .unwrap();
        // WHEN the table fails once the grant is known THEN the last known
        // grant answers (a store outage does not stop reads), past the TTL
        source.set_failure(Some(StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail: "down".into(),
        }));
        tokio::time::sleep(Duration::from_millis(80)).await;
        grants
            .check(&identity("c"), &service("orders"), Access::Plain)
            .await
            .unwrap();
        source.set_failure(None);
        // WHEN the grant is revoked THEN it stops working within the TTL
        // (and the retry interval of the failed lookup)
        source.set("c", Grant::default());
        tokio::time::sleep(GRANT_RETRY_INTERVAL + Duration::from_millis(80)).await;
        assert!(
            grants
                .check(&identity("c"), &service("orders"), Access::Plain)
                .await
                .is_err()
        );
    }

    /// A grant table that answers after `delay` (a first TLS connection,
    /// credentials being fetched).
    struct SlowGrants {
        grants: MemoryGrants,
        delay: Duration,
    }

    #[async_trait]
    impl GrantSource for SlowGrants {
        async fn grant(&self, client_id: &str) -> Result<Option<Grant>, StoreError> {
            tokio::time::sleep(self.delay).await;
            self.grants.grant(client_id).await
        }
    }

    /// A restarted agent's snapshot in which `billing-client` was granted
    /// billing.
    fn snapshot_granting_billing() -> Arc<crate::warm_start::LastKnownGood> {
        let snapshot = Arc::new(crate::warm_start::LastKnownGood::new(
            1 << 20,
            Duration::from_secs(3600),
        ));
        snapshot.record_grant(
            "billing-client",
            Some(&Grant {
                services: set(&["billing"]),
                secure_services: set(&[]),
            }),
        );
        snapshot
    }

    #[tokio::test]
    async fn a_grant_revoked_since_the_snapshot_is_refused_as_soon_as_the_table_answers() {
        // GIVEN a restarted agent whose snapshot granted billing to a client
        // whose grant has been revoked since, and a table answering in 100 ms
        let snapshot = snapshot_granting_billing();
        let source = Arc::new(SlowGrants {
            grants: MemoryGrants::default(),
            delay: Duration::from_millis(100),
        });
        let grants = ServiceGrants::new(source).with_last_known_good(snapshot.clone());
        let who = identity("billing-client");
        // WHEN it checks before the table answers THEN the snapshot's grant answers
        assert!(
            grants
                .check(&who, &service("billing"), Access::Plain)
                .await
                .is_ok()
        );
        // AND once the table has answered (the lookup went on) the revocation holds
        tokio::time::sleep(Duration::from_millis(150)).await;
        let refused = grants
            .check(&who, &service("billing"), Access::Plain)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), "service_not_granted");
        // AND the snapshot now knows it too
        assert_eq!(
            snapshot.grant("billing-client", GRANT_MAX_STALE),
            Some(None)
        );
    }

    #[tokio::test]
    async fn with_the_table_failing_a_snapshots_grant_answers_and_an_unknown_client_gets_the_error()
    {
        let snapshot = snapshot_granting_billing();
        let source = Arc::new(MemoryGrants::default());
        source.set_failure(Some(StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail: "connection refused".into(),
        }));
        let grants = ServiceGrants::new(source).with_last_known_good(snapshot);
        let who = identity("billing-client");
        assert!(
            grants
                .check(&who, &service("billing"), Access::Plain)
                .await
                .is_ok()
        );
        assert!(
            grants
                .check(&who, &service("orders"), Access::Plain)
                .await
                .is_err()
        );
        // a client the snapshot does not know gets the table's error
        let unknown = grants
            .check(&identity("other"), &service("billing"), Access::Plain)
            .await
            .unwrap_err();
        assert_eq!(unknown.status(), 502);
    }
}
