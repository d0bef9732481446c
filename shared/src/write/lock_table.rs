//! Version locks in the configuration table: one item per Parameter Store
//! key, in the tenant's partition under `PARAMLOCK#{service}#{key}` (no
//! reader, stream filter or listing looks there, and the write role may
//! write it: its leading key is the tenant's). Every change is a `PutItem`
//! conditional on the state the writer read, so DynamoDB decides which of
//! two concurrent writers claims a key.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::WriteError;
use super::lock::{Claim, LockState, VersionLocks};
use crate::credentials::TenantClient;
use crate::layers::EntryKey;
use crate::store::dynamodb::{PARTITION_KEY, SORT_KEY, conditional_write, sdk_error};

/// Sort keys of lock items start with this.
pub const LOCK_SORT_PREFIX: &str = "PARAMLOCK#";
const VERSION: &str = "lock_version";
const CLAIM: &str = "claim";
const CLAIMED_AT: &str = "claimed_at";
const GENERATION: &str = "lock_generation";

pub struct DynamoDbVersionLocks {
    /// The process's client, or one per tenant with vended credentials.
    clients: TenantClient<Client>,
    table: String,
}

impl DynamoDbVersionLocks {
    pub fn new(client: impl Into<TenantClient<Client>>, table: impl Into<String>) -> Self {
        Self {
            clients: client.into(),
            table: table.into(),
        }
    }

    fn key(item: &EntryKey) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                PARTITION_KEY.to_owned(),
                AttributeValue::S(item.layer.partition_key()),
            ),
            (
                SORT_KEY.to_owned(),
                AttributeValue::S(format!("{LOCK_SORT_PREFIX}{}#{}", item.service, item.key)),
            ),
        ])
    }
}

fn state_of(item: &HashMap<String, AttributeValue>) -> Result<LockState, WriteError> {
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    let version = number(VERSION).ok_or_else(|| {
        WriteError::Store(crate::error::StoreError::Unavailable {
            store: crate::domain::StoreKind::DynamoDb,
            detail: format!("lock item has no '{VERSION}'"),
        })
    })?;
    let generation = number(GENERATION).unwrap_or(0).max(0) as u64;
    let claim = match (item.get(CLAIM), number(CLAIMED_AT)) {
        (Some(AttributeValue::S(token)), Some(since_ms)) => Some(Claim {
            token: token.clone(),
            since_ms,
        }),
        _ => None,
    };
    Ok(LockState {
        version,
        claim,
        generation,
    })
}

#[async_trait]
impl VersionLocks for DynamoDbVersionLocks {
    async fn read(&self, item: &EntryKey) -> Result<Option<LockState>, WriteError> {
        let output = self
            .clients
            .for_layer(&item.layer)
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(item)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        output.item.as_ref().map(state_of).transpose()
    }

    async fn swap(
        &self,
        item: &EntryKey,
        observed: Option<&LockState>,
        next: &LockState,
    ) -> Result<bool, WriteError> {
        let mut attributes = Self::key(item);
        attributes.insert(
            VERSION.to_owned(),
            AttributeValue::N(next.version.to_string()),
        );
        attributes.insert(
            GENERATION.to_owned(),
            AttributeValue::N(next.generation.to_string()),
        );
        if let Some(claim) = &next.claim {
            attributes.insert(CLAIM.to_owned(), AttributeValue::S(claim.token.clone()));
            attributes.insert(
                CLAIMED_AT.to_owned(),
                AttributeValue::N(claim.since_ms.to_string()),
            );
        }
        let mut names = HashMap::from([("#pk".to_owned(), PARTITION_KEY.to_owned())]);
        let mut values = HashMap::new();
        let condition = match observed {
            None => "attribute_not_exists(#pk)".to_owned(),
            Some(state) => {
                names.insert("#ver".to_owned(), VERSION.to_owned());
                names.insert("#gen".to_owned(), GENERATION.to_owned());
                names.insert("#claim".to_owned(), CLAIM.to_owned());
                values.insert(
                    ":gen".to_owned(),
                    AttributeValue::N(state.generation.to_string()),
                );
                values.insert(
                    ":ver".to_owned(),
                    AttributeValue::N(state.version.to_string()),
                );
                match &state.claim {
                    None => {
                        "attribute_exists(#pk) AND #ver = :ver AND #gen = :gen AND attribute_not_exists(#claim)"
                            .to_owned()
                    }
                    Some(claim) => {
                        values.insert(":claim".to_owned(), AttributeValue::S(claim.token.clone()));
                        "attribute_exists(#pk) AND #ver = :ver AND #gen = :gen AND #claim = :claim".to_owned()
                    }
                }
            }
        };
        let result = self
            .clients
            .for_layer(&item.layer)
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attributes))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .send()
            .await;
        Ok(conditional_write(result)?)
    }
}
