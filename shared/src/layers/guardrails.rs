//! Guardrails of the shared layers: a layer may *lock* a key (no tenant the
//! layer reaches may hold its own value of it) and set a JSON Schema that
//! every effective value of the key it reaches must satisfy.
//!
//! A guardrail belongs to one shared layer and key; the global layer's reach
//! every tenant, a tier's the tier's tenants. A tenant's write is checked
//! against the guardrails of the global layer and of its tier (422
//! `key_locked` or `schema_violation`), on the *merged* result, not the
//! patch it sends. Setting a guardrail goes through the blast radius
//! ([`super::blast`]): a lock over tenants that already override the key, or
//! a schema some tenant's effective value fails, is refused unless forced.
//!
//! Guardrails live in the config table's reserved partition `GUARDRAIL`
//! (`sk = {layer segment}#{service}#{key}`, e.g. `_tiers/gold#billing#k`),
//! versioned like registrations so two platform administrators cannot
//! overwrite each other unknowingly. Writers remember them for
//! [`GUARDRAIL_CACHE_TTL`]; readers never need them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use moka::future::Cache;
use serde_json::Value;

use super::registry::version_after;
use super::{EntryKey, Layer};
use crate::error::{ConfigError, StoreError};
use crate::store::dynamodb::{
    PARTITION_KEY, SORT_KEY, VERSION_ATTRIBUTE, conditional_write, malformed, sdk_error,
};
use crate::validate::{ConfigKey, ServiceName, TierName};

/// The reserved partition holding guardrails.
pub const GUARDRAIL_PARTITION: &str = "GUARDRAIL";
/// How long a writer remembers a guardrail (or its absence).
pub const GUARDRAIL_CACHE_TTL: Duration = Duration::from_secs(10);
const LOCKED: &str = "locked";
const SCHEMA: &str = "schema";
const UPDATED_BY: &str = "updated_by";
const UPDATED_AT: &str = "updated_at";

/// What one shared layer demands of one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guardrail {
    /// No tenant the layer reaches may hold its own value of the key.
    pub locked: bool,
    /// Every effective value the layer reaches must satisfy it.
    pub schema: Option<Value>,
}

impl Guardrail {
    /// Refuses a schema that does not compile (400), before it is stored.
    pub fn compile(&self) -> Result<Option<jsonschema::Validator>, ConfigError> {
        self.schema
            .as_ref()
            .map(|schema| {
                jsonschema::validator_for(schema).map_err(|e| ConfigError::InvalidInput {
                    field: crate::kinds::Field::Value,
                    reason: format!("the guardrail's schema does not compile: {e}"),
                })
            })
            .transpose()
    }
}

/// A stored guardrail with its version and who set it when.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGuardrail {
    pub guardrail: Guardrail,
    pub version: i64,
    pub updated_by: Option<String>,
    pub updated_at_ms: Option<i64>,
}

/// Sort key of a layer's guardrail of one key.
pub fn guardrail_sort_key(entry: &EntryKey) -> String {
    format!(
        "{}#{}#{}",
        entry.layer.parameter_segment(),
        entry.service,
        entry.key
    )
}

/// Where guardrails are kept.
#[async_trait]
pub trait GuardrailStore: Send + Sync {
    async fn get(&self, entry: &EntryKey) -> Result<Option<StoredGuardrail>, StoreError>;

    /// Stores `guardrail` (`None`: removes it) if the stored version is
    /// `expected` (`None`: there is none). `Ok(Some(version))` with the new
    /// version (0 for a removal), `Ok(None)` when another write got there
    /// first.
    async fn put(
        &self,
        entry: &EntryKey,
        guardrail: Option<&Guardrail>,
        expected: Option<i64>,
        actor: &str,
        at_ms: i64,
    ) -> Result<Option<i64>, StoreError>;
}

/// Guardrails in the config table.
pub struct DynamoDbGuardrails {
    client: Client,
    table: String,
}

impl DynamoDbGuardrails {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn guardrail_key(sort_key: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(GUARDRAIL_PARTITION.to_owned()),
        ),
        (SORT_KEY.to_owned(), AttributeValue::S(sort_key)),
    ])
}

fn stored(item: &HashMap<String, AttributeValue>) -> Result<StoredGuardrail, StoreError> {
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    let schema = match item.get(SCHEMA) {
        Some(AttributeValue::S(text)) => Some(
            serde_json::from_str(text)
                .map_err(|e| malformed(format!("guardrail schema is not JSON: {e}")))?,
        ),
        _ => None,
    };
    Ok(StoredGuardrail {
        guardrail: Guardrail {
            locked: matches!(item.get(LOCKED), Some(AttributeValue::Bool(true))),
            schema,
        },
        version: number(VERSION_ATTRIBUTE)
            .ok_or_else(|| malformed("guardrail without a version".to_owned()))?,
        updated_by: match item.get(UPDATED_BY) {
            Some(AttributeValue::S(actor)) => Some(actor.clone()),
            _ => None,
        },
        updated_at_ms: number(UPDATED_AT),
    })
}

#[async_trait]
impl GuardrailStore for DynamoDbGuardrails {
    async fn get(&self, entry: &EntryKey) -> Result<Option<StoredGuardrail>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(guardrail_key(guardrail_sort_key(entry))))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        output.item.as_ref().map(stored).transpose()
    }

    async fn put(
        &self,
        entry: &EntryKey,
        guardrail: Option<&Guardrail>,
        expected: Option<i64>,
        actor: &str,
        at_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let sort_key = guardrail_sort_key(entry);
        let Some(guardrail) = guardrail else {
            let Some(expected) = expected else {
                return Ok(Some(0));
            };
            let request = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(guardrail_key(sort_key)))
                .condition_expression("#ver = :expected")
                .expression_attribute_names("#ver", VERSION_ATTRIBUTE)
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()));
            return Ok(conditional_write(request.send().await)?.then_some(0));
        };
        let Some(version) = version_after(expected) else {
            return Ok(None);
        };
        let mut item = guardrail_key(sort_key);
        item.insert(LOCKED.to_owned(), AttributeValue::Bool(guardrail.locked));
        if let Some(schema) = &guardrail.schema {
            item.insert(SCHEMA.to_owned(), AttributeValue::S(schema.to_string()));
        }
        item.insert(
            VERSION_ATTRIBUTE.to_owned(),
            AttributeValue::N(version.to_string()),
        );
        item.insert(UPDATED_BY.to_owned(), AttributeValue::S(actor.to_owned()));
        item.insert(UPDATED_AT.to_owned(), AttributeValue::N(at_ms.to_string()));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = match expected {
            None => request
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY),
            Some(v) => request
                .condition_expression("#ver = :expected")
                .expression_attribute_names("#ver", VERSION_ATTRIBUTE)
                .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
        };
        Ok(conditional_write(request.send().await)?.then_some(version))
    }
}

/// Guardrails in memory (tests, benchmarks).
#[derive(Default)]
pub struct MemoryGuardrails(Mutex<HashMap<String, StoredGuardrail>>);

#[async_trait]
impl GuardrailStore for MemoryGuardrails {
    async fn get(&self, entry: &EntryKey) -> Result<Option<StoredGuardrail>, StoreError> {
        let all = self
            .0
            .lock()
            .map_err(|_| malformed("guardrails poisoned".to_owned()))?;
        Ok(all.get(&guardrail_sort_key(entry)).cloned())
    }

    async fn put(
        &self,
        entry: &EntryKey,
        guardrail: Option<&Guardrail>,
        expected: Option<i64>,
        actor: &str,
        at_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut all = self
            .0
            .lock()
            .map_err(|_| malformed("guardrails poisoned".to_owned()))?;
        let sort_key = guardrail_sort_key(entry);
        if all.get(&sort_key).map(|g| g.version) != expected {
            return Ok(None);
        }
        let Some(guardrail) = guardrail else {
            all.remove(&sort_key);
            return Ok(Some(0));
        };
        let Some(version) = version_after(expected) else {
            return Ok(None);
        };
        all.insert(
            sort_key,
            StoredGuardrail {
                guardrail: guardrail.clone(),
                version,
                updated_by: Some(actor.to_owned()),
                updated_at_ms: Some(at_ms),
            },
        );
        Ok(Some(version))
    }
}

/// One layer's guardrail, compiled.
pub struct Compiled {
    pub layer: Layer,
    pub locked: bool,
    validator: Option<jsonschema::Validator>,
}

impl Compiled {
    pub fn new(layer: Layer, guardrail: &Guardrail) -> Result<Self, ConfigError> {
        Ok(Self {
            layer,
            locked: guardrail.locked,
            validator: guardrail.compile()?,
        })
    }

    /// Why `value` fails this layer's schema: `(path, rule)`, never the value.
    pub fn violation(&self, value: &Value) -> Option<(String, String)> {
        let error = self.validator.as_ref()?.iter_errors(value).next()?;
        let path = match error.instance_path().to_string() {
            root if root.is_empty() => "/".to_owned(),
            path => path,
        };
        Some((
            path,
            format!("{} guardrail {}", self.layer, error.schema_path()),
        ))
    }
}

/// The guardrails over one key of one tenant: its global layer's and its
/// tier's, bottom first.
#[derive(Clone, Default)]
pub struct Constraints(pub Vec<Arc<Compiled>>);

impl Constraints {
    /// The lowest layer that locks the key, if one does.
    pub fn locked_by(&self) -> Option<&Layer> {
        self.0.iter().find(|c| c.locked).map(|c| &c.layer)
    }

    /// The first guardrail schema `value` fails: `(path, rule)`.
    pub fn violation(&self, value: &Value) -> Option<(String, String)> {
        self.0.iter().find_map(|c| c.violation(value))
    }

    /// `Ok` when `value` satisfies every guardrail schema; else the 422.
    pub fn check(&self, value: &Value) -> Result<(), ConfigError> {
        match self.violation(value) {
            None => Ok(()),
            Some((path, rule)) => Err(ConfigError::SchemaViolation { path, rule }),
        }
    }
}

/// Guardrails as writers read them: compiled and remembered briefly.
pub struct Guardrails {
    store: Arc<dyn GuardrailStore>,
    compiled: Cache<String, Option<Arc<Compiled>>>,
}

impl Guardrails {
    pub fn new(store: Arc<dyn GuardrailStore>) -> Self {
        Self {
            store,
            compiled: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(GUARDRAIL_CACHE_TTL)
                .build(),
        }
    }

    pub fn store(&self) -> &Arc<dyn GuardrailStore> {
        &self.store
    }

    /// One layer's guardrail of the key, compiled (`None`: it has none).
    pub async fn of(&self, entry: &EntryKey) -> Result<Option<Arc<Compiled>>, ConfigError> {
        self.compiled
            .try_get_with(guardrail_sort_key(entry), async {
                match self.store.get(entry).await {
                    Ok(Some(stored)) => Compiled::new(entry.layer.clone(), &stored.guardrail)
                        .map(|c| Some(Arc::new(c))),
                    Ok(None) => Ok(None),
                    Err(err) => Err(ConfigError::Store(err)),
                }
            })
            .await
            .map_err(|e: Arc<ConfigError>| (*e).clone())
    }

    /// The guardrails over a tenant of `tier` (or of none) for the key.
    pub async fn over(
        &self,
        tier: Option<&TierName>,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Constraints, ConfigError> {
        let mut constraints = Vec::with_capacity(2);
        let entry = |layer| EntryKey::new(layer, service.clone(), key.clone());
        if let Some(global) = self.of(&entry(Layer::Global)).await? {
            constraints.push(global);
        }
        if let Some(tier) = tier
            && let Some(tiered) = self.of(&entry(Layer::Tier(tier.clone()))).await?
        {
            constraints.push(tiered);
        }
        Ok(Constraints(constraints))
    }

    /// Forgets what this process remembers of one guardrail (after its own
    /// write, so its next check sees it at once).
    pub async fn forget(&self, entry: &EntryKey) {
        self.compiled.invalidate(&guardrail_sort_key(entry)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> (ServiceName, ConfigKey, TierName) {
        (
            ServiceName::parse("billing").unwrap(),
            ConfigKey::parse("tenant_config_limits").unwrap(),
            TierName::parse("free").unwrap(),
        )
    }

    #[tokio::test]
    async fn a_tenant_is_held_to_its_global_and_its_tiers_guardrails_only() {
        let (service, key, free) = names();
        let store = Arc::new(MemoryGuardrails::default());
        // GIVEN a global schema and a lock on the free tier
        let global = EntryKey::new(Layer::Global, service.clone(), key.clone());
        let tier = EntryKey::new(Layer::Tier(free.clone()), service.clone(), key.clone());
        store
            .put(
                &global,
                Some(&Guardrail {
                    locked: false,
                    schema: Some(
                        json!({"type": "object", "properties": {"max": {"maximum": 100}}}),
                    ),
                }),
                None,
                "pat",
                1,
            )
            .await
            .unwrap();
        store
            .put(
                &tier,
                Some(&Guardrail {
                    locked: true,
                    schema: None,
                }),
                None,
                "pat",
                2,
            )
            .await
            .unwrap();
        let guardrails = Guardrails::new(store.clone());
        // THEN a free tenant finds the key locked by its tier
        let free_tenant = guardrails.over(Some(&free), &service, &key).await.unwrap();
        assert_eq!(free_tenant.locked_by(), Some(&Layer::Tier(free.clone())));
        // AND a tenant of no tier is not locked, but held to the global schema
        let untiered = guardrails.over(None, &service, &key).await.unwrap();
        assert_eq!(untiered.locked_by(), None);
        let err = untiered.check(&json!({"max": 500})).unwrap_err();
        assert_eq!(err.status(), 422);
        assert!(err.public_message().contains("/max"), "{err}");
        assert!(err.public_message().contains("global guardrail"), "{err}");
        assert!(!err.public_message().contains("500"), "never the value");
        assert!(untiered.check(&json!({"max": 5})).is_ok());
        // AND a stale version cannot remove the tier's lock
        assert_eq!(
            store.put(&tier, None, Some(7), "pat", 3).await.unwrap(),
            None
        );
        assert_eq!(
            store.put(&tier, None, Some(1), "pat", 3).await.unwrap(),
            Some(0)
        );
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused_before_it_is_stored() {
        let broken = Guardrail {
            locked: false,
            schema: Some(json!({"type": "no-such-type"})),
        };
        assert_eq!(broken.compile().unwrap_err().status(), 400);
    }
}
