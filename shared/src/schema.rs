//! Validation before anything is stored: JSON Schema documents per service
//! (and optionally per key) that operators change without a redeploy.
//!
//! Schemas live in the config table under the reserved partition `SCHEMA`:
//! `sk = SERVICE#{service}#KEY#{key}` for one key, `sk = SERVICE#{service}`
//! for every key of the service without its own; attribute `schema` holds the
//! document as JSON text. No tenant partition, stream filter (`CONFIG#`) or
//! listing sees them. The key's own schema wins; with none, writes are not
//! checked. A failure names where in the value and which schema rule failed,
//! never the value itself (it may be a secret).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use moka::future::Cache;
use serde_json::Value;

use crate::error::{ConfigError, StoreError};
use crate::kinds::StoreKind;
use crate::store::dynamodb::{PARTITION_KEY, SORT_KEY, sdk_error};
use crate::validate::{ConfigKey, ServiceName};

/// The reserved partition holding schemas.
pub const SCHEMA_PARTITION: &str = "SCHEMA";
pub const SCHEMA_ATTRIBUTE: &str = "schema";
/// How long a schema (or its absence) is remembered per container.
pub const SCHEMA_CACHE_TTL: Duration = Duration::from_secs(10);

/// Sort key of a service's schema, or of one key's.
pub fn schema_sort_key(service: &ServiceName, key: Option<&ConfigKey>) -> String {
    match key {
        Some(key) => format!("SERVICE#{service}#KEY#{key}"),
        None => format!("SERVICE#{service}"),
    }
}

/// Where schema documents come from.
#[async_trait]
pub trait SchemaSource: Send + Sync {
    /// The key's own schema, else the service's, else `None`.
    async fn schema(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Option<Value>, StoreError>;
}

/// Schemas in the config table.
pub struct DynamoDbSchemas {
    client: Client,
    table: String,
}

impl DynamoDbSchemas {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn document(&self, sort_key: String) -> Result<Option<Value>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                PARTITION_KEY,
                AttributeValue::S(SCHEMA_PARTITION.to_owned()),
            )
            .key(SORT_KEY, AttributeValue::S(sort_key.clone()))
            .send()
            .await
            .map_err(sdk_error)?;
        let Some(AttributeValue::S(text)) = output.item().and_then(|i| i.get(SCHEMA_ATTRIBUTE))
        else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| StoreError::Unavailable {
                store: StoreKind::DynamoDb,
                detail: format!("schema {sort_key} is not JSON: {e}"),
            })
    }

    /// Stores (or replaces) a schema document.
    pub async fn put(
        &self,
        service: &ServiceName,
        key: Option<&ConfigKey>,
        schema: &Value,
    ) -> Result<(), ConfigError> {
        compile(schema)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                (
                    PARTITION_KEY.to_owned(),
                    AttributeValue::S(SCHEMA_PARTITION.to_owned()),
                ),
                (
                    SORT_KEY.to_owned(),
                    AttributeValue::S(schema_sort_key(service, key)),
                ),
                (
                    SCHEMA_ATTRIBUTE.to_owned(),
                    AttributeValue::S(schema.to_string()),
                ),
            ])))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}

#[async_trait]
impl SchemaSource for DynamoDbSchemas {
    async fn schema(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Option<Value>, StoreError> {
        match self.document(schema_sort_key(service, Some(key))).await? {
            Some(schema) => Ok(Some(schema)),
            None => self.document(schema_sort_key(service, None)).await,
        }
    }
}

/// Schemas held in memory (tests, benchmarks).
#[derive(Default)]
pub struct MemorySchemas(std::sync::Mutex<HashMap<String, Value>>);

impl MemorySchemas {
    pub fn set(&self, service: &ServiceName, key: Option<&ConfigKey>, schema: Value) {
        if let Ok(mut schemas) = self.0.lock() {
            schemas.insert(schema_sort_key(service, key), schema);
        }
    }
}

#[async_trait]
impl SchemaSource for MemorySchemas {
    async fn schema(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<Option<Value>, StoreError> {
        let schemas = self.0.lock().map_err(|_| StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail: "schema table poisoned".to_owned(),
        })?;
        Ok(schemas
            .get(&schema_sort_key(service, Some(key)))
            .or_else(|| schemas.get(&schema_sort_key(service, None)))
            .cloned())
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, ConfigError> {
    jsonschema::validator_for(schema).map_err(|e| ConfigError::InvalidSchema(e.to_string()))
}

/// Checks values against their schemas, remembering compiled schemas briefly.
pub struct Schemas {
    source: Arc<dyn SchemaSource>,
    compiled: Cache<String, Option<Arc<jsonschema::Validator>>>,
}

impl Schemas {
    pub fn new(source: Arc<dyn SchemaSource>) -> Self {
        Self {
            source,
            compiled: Cache::builder()
                .max_capacity(1000)
                .time_to_live(SCHEMA_CACHE_TTL)
                .build(),
        }
    }

    /// `Ok` when the value satisfies its schema (or there is none); else a
    /// 422 naming the value's failing location and the schema rule.
    pub async fn check(
        &self,
        service: &ServiceName,
        key: &ConfigKey,
        value: &Value,
    ) -> Result<(), ConfigError> {
        let validator = self
            .compiled
            .try_get_with(format!("{service}#{key}"), async {
                match self.source.schema(service, key).await {
                    Ok(Some(schema)) => compile(&schema).map(|v| Some(Arc::new(v))),
                    Ok(None) => Ok(None),
                    Err(err) => Err(ConfigError::Store(err)),
                }
            })
            .await
            .map_err(|e: Arc<ConfigError>| (*e).clone())?;
        let Some(validator) = validator else {
            return Ok(());
        };
        match validator.iter_errors(value).next() {
            None => Ok(()),
            Some(error) => Err(ConfigError::SchemaViolation {
                // A JSON Pointer: the whole value is "" there, "/" here.
                path: match error.instance_path().to_string() {
                    root if root.is_empty() => "/".to_owned(),
                    path => path,
                },
                rule: error.schema_path().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> (ServiceName, ConfigKey, ConfigKey) {
        (
            ServiceName::parse("billing").unwrap(),
            ConfigKey::parse("tenant_config_limits").unwrap(),
            ConfigKey::parse("tenant_config_theme").unwrap(),
        )
    }

    #[tokio::test]
    async fn a_key_schema_wins_over_the_service_schema_and_failures_never_show_the_value() {
        let (service, limits, theme) = names();
        let source = Arc::new(MemorySchemas::default());
        source.set(&service, None, json!({"type": "string"}));
        source.set(
            &service,
            Some(&limits),
            json!({"type": "object", "properties": {"max_users": {"type": "integer", "minimum": 1}}, "required": ["max_users"]}),
        );
        let schemas = Schemas::new(source);
        assert!(
            schemas
                .check(&service, &limits, &json!({"max_users": 5}))
                .await
                .is_ok()
        );
        let err = schemas
            .check(&service, &limits, &json!({"max_users": -7}))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 422);
        let message = err.public_message();
        assert!(message.contains("/max_users"), "{message}");
        assert!(message.contains("minimum"), "{message}");
        assert!(
            !message.contains("-7"),
            "the value never appears: {message}"
        );
        // the service schema covers keys without their own
        assert!(
            schemas
                .check(&service, &theme, &json!("dark"))
                .await
                .is_ok()
        );
        assert_eq!(
            schemas
                .check(&service, &theme, &json!(3))
                .await
                .unwrap_err()
                .status(),
            422
        );
        // no schema at all: anything goes
        let other = ServiceName::parse("shipping").unwrap();
        assert!(schemas.check(&other, &theme, &json!(3)).await.is_ok());
    }

    #[tokio::test]
    async fn a_schema_that_does_not_compile_refuses_writes_clearly() {
        let (service, limits, _) = names();
        let source = Arc::new(MemorySchemas::default());
        source.set(&service, None, json!({"type": "no-such-type"}));
        let err = Schemas::new(source)
            .check(&service, &limits, &json!(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSchema(_)), "{err:?}");
    }
}
