//! Put, get, delete, history and rollback of a tenant's configuration in
//! either store, validated and routed exactly like the API; every write goes
//! through the writer port (`tenant_config_shared::write`). Used by the CLI,
//! the local stack's seeding and walk-through, and the tests.

use std::sync::Arc;
use tenant_config_shared::layers::EntryKey;

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterType;
use serde_json::Value;
use tenant_config_shared::domain::{Found, ReadMode};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::schema::{DynamoDbSchemas, Schemas};
use tenant_config_shared::store::ssm::parameter_name;
use tenant_config_shared::store::{ConfigStore, DynamoDbStore, ParameterStore};
use tenant_config_shared::write::{
    Actor, ConfigWriter, DynamoDbVersionLocks, DynamoDbWriter, Expected, NewValue, ParameterWriter,
    ValueKind, VersionRecord, WriteError, Written,
};
use tenant_config_shared::writes::{ValueCheck, checked_put, checked_rollback};
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName, StoreKind};

/// Where configuration lives: the same settings the functions read.
#[derive(Debug, Clone)]
pub struct Target {
    pub table: String,
    pub parameter_root: String,
    pub router: KeyRouter,
    /// The KMS key SecureStrings are written with (config-api's
    /// `SECURESTRING_KMS_KEY_ID`); `None`: `aws/ssm`.
    pub secure_string_key: Option<String>,
}

/// How a Parameter Store value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterKind {
    String,
    StringList,
    SecureString,
}

impl ParameterKind {
    pub fn sdk(self) -> ParameterType {
        match self {
            ParameterKind::String => ParameterType::String,
            ParameterKind::StringList => ParameterType::StringList,
            ParameterKind::SecureString => ParameterType::SecureString,
        }
    }
}

impl ParameterKind {
    /// How the writer port stores this kind.
    pub fn value_kind(self) -> ValueKind {
        match self {
            ParameterKind::String => ValueKind::Plain,
            ParameterKind::StringList => ValueKind::StringList,
            ParameterKind::SecureString => ValueKind::Secret,
        }
    }
}

/// Who the CLI writes as: `cli:{USER}` unless `--actor` says otherwise.
pub fn default_actor() -> Actor {
    Actor(format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
    ))
}

impl Target {
    fn store(&self, item: &ItemKey) -> Result<StoreKind, String> {
        self.router.route(&item.key).map_err(|e| e.to_string())
    }

    /// Full SSM name of a Parameter Store key.
    pub fn parameter_name(&self, item: &ItemKey) -> String {
        parameter_name(&self.parameter_root, &item.tenant, &item.service, &item.key)
    }

    /// The writer of the store the key's prefix names.
    pub fn writer(&self, aws: &SdkConfig, item: &ItemKey) -> Result<Box<dyn ConfigWriter>, String> {
        self.writer_for_key(aws, &item.key)
    }

    /// The writer of the store `key`'s prefix names, for an entry of any layer.
    pub fn writer_for_key(
        &self,
        aws: &SdkConfig,
        key: &ConfigKey,
    ) -> Result<Box<dyn ConfigWriter>, String> {
        let store = self.router.route(key).map_err(|e| e.to_string())?;
        Ok(match store {
            StoreKind::DynamoDb => Box::new(DynamoDbWriter::new(
                aws_sdk_dynamodb::Client::new(aws),
                self.table.as_str(),
            )),
            // The same version locks as config-api's writes, so that the
            // CLI's --expect-version and the API's If-Match exclude each other.
            StoreKind::ParameterStore => Box::new(
                ParameterWriter::new(aws_sdk_ssm::Client::new(aws), self.parameter_root.as_str())
                    .with_secure_string_key(self.secure_string_key.clone())
                    .with_version_locks(std::sync::Arc::new(DynamoDbVersionLocks::new(
                        aws_sdk_dynamodb::Client::new(aws),
                        self.table.as_str(),
                    ))),
            ),
        })
    }

    /// Writes a value over whatever version is there, as [`default_actor`].
    pub async fn put(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        value: &str,
        kind: ParameterKind,
    ) -> Result<StoreKind, String> {
        self.write(aws, item, value, kind, Expected::Any, &default_actor())
            .await
            .map(|(store, _)| store)
    }

    /// Writes a value through the writer port to the store the key's prefix
    /// names, if the entry is at `expected`. `kind` applies to Parameter
    /// Store keys only (DynamoDB has no list or secret type: refused).
    pub async fn write(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        value: &str,
        kind: ParameterKind,
        expected: Expected,
        actor: &Actor,
    ) -> Result<(StoreKind, Written), String> {
        let value = NewValue::text(value, kind.value_kind());
        self.write_value(aws, item, &value, expected, actor).await
    }

    /// [`Self::write`] of a value given as JSON, as the API's `PUT` takes
    /// it: a boolean or number stays typed where the store keeps types.
    pub async fn write_json(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        value: &Value,
        expected: Expected,
        actor: &Actor,
    ) -> Result<(StoreKind, Written), String> {
        let value = NewValue::json(value, tenant_config_shared::write::ValueKind::Plain)
            .map_err(|e| e.to_string())?;
        self.write_value(aws, item, &value, expected, actor).await
    }

    async fn write_value(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
    ) -> Result<(StoreKind, Written), String> {
        let writer = self.writer(aws, item)?;
        // The same rule as the API: the value passes its schema first.
        let written = checked_put(
            writer.as_ref(),
            &ValueCheck::schema(Some(&self.schemas(aws))),
            &EntryKey::from(item),
            value,
            expected,
            actor,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok((writer.kind(), written))
    }

    /// Reads a value as the functions do; `decrypt` reveals SecureStrings.
    pub async fn get(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        decrypt: bool,
    ) -> Result<Option<Value>, String> {
        let mode = if decrypt {
            ReadMode::Decrypt
        } else {
            ReadMode::Plain
        };
        let found = match self.store(item)? {
            StoreKind::DynamoDb => {
                DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), self.table.as_str())
                    .get(item, mode)
                    .await
            }
            StoreKind::ParameterStore => {
                ParameterStore::new(aws_sdk_ssm::Client::new(aws), self.parameter_root.as_str())
                    .get(item, mode)
                    .await
            }
        }
        .map_err(|e| e.to_string())?;
        Ok(found.map(|found| match found {
            Found::Plain(value) => value.value.clone(),
            Found::Secret(Some(secret)) => secret.expose().clone(),
            Found::Secret(None) => {
                Value::String("<SecureString: pass --decrypt to read>".to_owned())
            }
        }))
    }

    /// Deletes a value; `Ok(None)` when there was none, else the deleted version.
    pub async fn delete(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Option<i64>, String> {
        match self
            .writer(aws, item)?
            .delete(&EntryKey::from(item), expected, actor)
            .await
        {
            Ok(version) => Ok(Some(version)),
            Err(WriteError::NotFound) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The entry's versions, newest first.
    pub async fn history(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, String> {
        self.writer(aws, item)?
            .history(&EntryKey::from(item), limit)
            .await
            .map_err(|e| e.to_string())
    }

    /// Stores the JSON Schema every write of `service` (or of one key) must satisfy.
    pub async fn put_schema(
        &self,
        aws: &SdkConfig,
        service: &ServiceName,
        key: Option<&ConfigKey>,
        schema: &Value,
    ) -> Result<(), String> {
        DynamoDbSchemas::new(aws_sdk_dynamodb::Client::new(aws), self.table.as_str())
            .put(service, key, schema)
            .await
            .map_err(|e| e.to_string())
    }

    /// Stores version `to` again as a new version.
    pub async fn rollback(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        to: i64,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, String> {
        let writer = self.writer(aws, item)?;
        checked_rollback(
            writer.as_ref(),
            &ValueCheck::schema(Some(&self.schemas(aws))),
            &EntryKey::from(item),
            to,
            expected,
            actor,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// The schemas in the configuration table, as the API reads them.
    pub fn schemas(&self, aws: &SdkConfig) -> Schemas {
        Schemas::new(Arc::new(DynamoDbSchemas::new(
            aws_sdk_dynamodb::Client::new(aws),
            self.table.as_str(),
        )))
    }
}

/// Who seeds the local stack and the tests' stores.
fn seeder() -> Actor {
    Actor("tenant-config-local-stack".to_owned())
}

/// Writes a value to the DynamoDB table through the writer port (whatever
/// version is there); returns the new version.
pub async fn put_item(
    aws: &SdkConfig,
    table: &str,
    item: &ItemKey,
    value: &str,
) -> Result<i64, String> {
    DynamoDbWriter::new(aws_sdk_dynamodb::Client::new(aws), table)
        .put(
            &EntryKey::from(item),
            &NewValue::text(value, ValueKind::Plain),
            Expected::Any,
            &seeder(),
        )
        .await
        .map(|written| written.version)
        .map_err(|e| format!("write {}: {e}", item.cache_key()))
}

/// Writes (or overwrites) the parameter `{root}/{tenant}/{service}/{key}`
/// through the writer port; returns its name.
pub async fn put_parameter(
    aws: &SdkConfig,
    root: &str,
    item: &ItemKey,
    value: &str,
    kind: ParameterKind,
) -> Result<String, String> {
    ParameterWriter::new(aws_sdk_ssm::Client::new(aws), root)
        .put(
            &EntryKey::from(item),
            &NewValue::text(value, kind.value_kind()),
            Expected::Any,
            &seeder(),
        )
        .await
        .map_err(|e| format!("write {}: {e}", item.cache_key()))?;
    Ok(parameter_name(root, &item.tenant, &item.service, &item.key))
}

/// Generates an Ed25519 signing key, stores it as the SecureString
/// `parameter` (outside the watched root), returns its public entry. A
/// usable key already there is replaced only with `overwrite`: replacing the
/// key config-refresh signs with makes every agent refuse its pushes until
/// they trust the new one (rotation uses a new parameter). Anything else
/// there (a hex string, a hand-written value) is no key: it is replaced.
pub async fn put_refresh_key(
    ssm: &aws_sdk_ssm::Client,
    parameter: &str,
    watched_root: &str,
    key_id: &str,
    overwrite: bool,
) -> Result<String, String> {
    tenant_config_shared::refresh::key::outside_watched_root(parameter, watched_root)
        .map_err(|e| e.to_string())?;
    use tenant_config_shared::refresh::signing::RefreshKey;
    let stored = ssm
        .get_parameter()
        .name(parameter)
        .with_decryption(true)
        .send()
        .await;
    let holds_a_key = match stored {
        Ok(found) => found
            .parameter()
            .and_then(|p| p.value())
            .is_some_and(|value| RefreshKey::parse(value).is_ok()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            false
        }
        Err(e) => return Err(aws_sdk_ssm::error::DisplayErrorContext(e).to_string()),
    };
    if holds_a_key && !overwrite {
        return Err(format!(
            "{parameter} already holds a key: agents trust it, and replacing it makes them \
             refuse every push. Rotate into a new parameter (docs/operations.md, rotating the \
             refresh key), or pass --overwrite to replace it anyway"
        ));
    }
    let (key, text) = RefreshKey::generate(key_id).map_err(|e| e.to_string())?;
    ssm.put_parameter()
        .name(parameter)
        .value(text)
        .r#type(ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string())?;
    Ok(key.public_entry())
}
