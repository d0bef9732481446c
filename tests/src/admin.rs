//! What an operator does by hand: put, get and delete a tenant's
//! configuration (validated and routed exactly like the API), mint a token
//! for a local user, and tell config-refresh that a key changed. Used by the
//! `tenant-config-admin` CLI, the demo's walk-through and the tests.

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterType;
use serde_json::Value;
use tenant_config_shared::domain::{Found, ReadMode};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::dynamodb::key_attributes;
use tenant_config_shared::store::ssm::parameter_name;
use tenant_config_shared::store::{ConfigStore, DynamoDbStore, ParameterStore};
use tenant_config_shared::{ItemKey, StoreKind};

use crate::seed;

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
    fn sdk(self) -> ParameterType {
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
        let parts = (
            item.tenant.as_str(),
            item.service.as_str(),
            item.key.as_str(),
        );
        match self.store(item)? {
            StoreKind::DynamoDb if kind != ParameterKind::String => Err(
                "DynamoDB keys hold plain values; use a Parameter Store key for lists and secrets"
                    .to_owned(),
            ),
            StoreKind::DynamoDb => {
                let version = self.next_version(aws, item).await?;
                seed::put_item(aws, &self.table, parts, value, version).await?;
                Ok(StoreKind::DynamoDb)
            }
            StoreKind::ParameterStore => {
                seed::put_parameter(aws, &self.parameter_root, parts, value, kind.sdk()).await?;
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
