//! Put, get and delete a tenant's configuration in either store, validated and
//! routed exactly like the API. Used by the CLI, the local stack's seeding and
//! walk-through, and the tests.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ssm::types::ParameterType;
use serde_json::Value;
use tenant_config_shared::domain::{Found, ReadMode};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::dynamodb::{VALUE_ATTRIBUTE, VERSION_ATTRIBUTE, key_attributes};
use tenant_config_shared::store::ssm::parameter_name;
use tenant_config_shared::store::{ConfigStore, DynamoDbStore, ParameterStore};
use tenant_config_shared::{ItemKey, StoreKind};

/// Where configuration lives: the same settings the functions read.
#[derive(Debug, Clone)]
pub struct Target {
    pub table: String,
    pub parameter_root: String,
    pub router: KeyRouter,
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

impl Target {
    fn store(&self, item: &ItemKey) -> Result<StoreKind, String> {
        self.router.route(&item.key).map_err(|e| e.to_string())
    }

    /// Full SSM name of a Parameter Store key.
    pub fn parameter_name(&self, item: &ItemKey) -> String {
        parameter_name(&self.parameter_root, &item.tenant, &item.service, &item.key)
    }

    /// Writes a value to the store the key's prefix names. `kind` applies to
    /// Parameter Store keys only (DynamoDB has no secret type: refused).
    pub async fn put(
        &self,
        aws: &SdkConfig,
        item: &ItemKey,
        value: &str,
        kind: ParameterKind,
    ) -> Result<StoreKind, String> {
        match self.store(item)? {
            StoreKind::DynamoDb if kind != ParameterKind::String => Err(
                "DynamoDB keys hold plain values; use a Parameter Store key for lists and secrets"
                    .to_owned(),
            ),
            StoreKind::DynamoDb => {
                let version = self.next_version(aws, item).await?;
                put_item(aws, &self.table, item, value, version).await?;
                Ok(StoreKind::DynamoDb)
            }
            StoreKind::ParameterStore => {
                put_parameter(aws, &self.parameter_root, item, value, kind).await?;
                Ok(StoreKind::ParameterStore)
            }
        }
    }

    async fn next_version(&self, aws: &SdkConfig, item: &ItemKey) -> Result<i64, String> {
        let current = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), self.table.as_str())
            .get(item, ReadMode::Plain)
            .await
            .map_err(|e| e.to_string())?;
        Ok(match current {
            Some(Found::Plain(value)) => value.version.unwrap_or(0) + 1,
            _ => 1,
        })
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

    /// Deletes a value; `Ok(false)` when there was none.
    pub async fn delete(&self, aws: &SdkConfig, item: &ItemKey) -> Result<bool, String> {
        match self.store(item)? {
            StoreKind::DynamoDb => {
                let output = aws_sdk_dynamodb::Client::new(aws)
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key_attributes(&item.tenant, &item.service, &item.key)))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "DeleteItem: {}",
                            aws_sdk_dynamodb::error::DisplayErrorContext(e)
                        )
                    })?;
                Ok(output.attributes.is_some())
            }
            StoreKind::ParameterStore => {
                let result = aws_sdk_ssm::Client::new(aws)
                    .delete_parameter()
                    .name(self.parameter_name(item))
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(true),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_parameter_not_found()) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(format!(
                        "DeleteParameter: {}",
                        aws_sdk_ssm::error::DisplayErrorContext(e)
                    )),
                }
            }
        }
    }
}

/// Writes a value to the DynamoDB table (string attribute) with a version.
pub async fn put_item(
    aws: &SdkConfig,
    table: &str,
    item: &ItemKey,
    value: &str,
    version: i64,
) -> Result<(), String> {
    let mut attributes = key_attributes(&item.tenant, &item.service, &item.key);
    attributes.insert(
        VALUE_ATTRIBUTE.to_owned(),
        AttributeValue::S(value.to_owned()),
    );
    attributes.insert(
        VERSION_ATTRIBUTE.to_owned(),
        AttributeValue::N(version.to_string()),
    );
    aws_sdk_dynamodb::Client::new(aws)
        .put_item()
        .table_name(table)
        .set_item(Some(attributes))
        .send()
        .await
        .map_err(|e| {
            format!(
                "PutItem: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}

/// Writes (or overwrites) the parameter `{root}/{tenant}/{service}/{key}`;
/// returns its name.
pub async fn put_parameter(
    aws: &SdkConfig,
    root: &str,
    item: &ItemKey,
    value: &str,
    kind: ParameterKind,
) -> Result<String, String> {
    let name = parameter_name(root, &item.tenant, &item.service, &item.key);
    aws_sdk_ssm::Client::new(aws)
        .put_parameter()
        .name(&name)
        .value(value)
        .r#type(kind.sdk())
        .overwrite(true)
        .send()
        .await
        .map_err(|e| {
            format!(
                "PutParameter: {}",
                aws_sdk_ssm::error::DisplayErrorContext(e)
            )
        })?;
    Ok(name)
}
