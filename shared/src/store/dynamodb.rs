//! DynamoDB adapter: `pk = TENANT#{tenant}`, `sk = CONFIG#{service}#{key}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures::{StreamExt, stream};
use serde_json::{Map, Number, Value};

use super::{ConfigStore, Listing, MAX_LISTED_ENTRIES, classify_sdk_error};
use crate::credentials::TenantClient;
use crate::domain::{Found, ItemKey, PlainValue, ReadMode, ValueKind, WrittenBy, decode_text};
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::layers::{EntryKey, Layer};
use crate::validate::{ConfigKey, ServiceName, TenantId};

pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
pub const VALUE_ATTRIBUTE: &str = "value";
pub const VERSION_ATTRIBUTE: &str = "version";
/// Who wrote the item's version, and when (Unix ms): set by every write.
pub const UPDATED_BY_ATTRIBUTE: &str = "updated_by";
pub const UPDATED_AT_ATTRIBUTE: &str = "updated_at";

/// BatchGetItem may hand back unprocessed keys under load; retry them this
/// many times with exponential backoff before answering "throttled".
const UNPROCESSED_RETRIES: u32 = 5;
const UNPROCESSED_BASE_DELAY: Duration = Duration::from_millis(25);
/// BatchGetItem takes at most 100 keys per call.
pub(crate) const BATCH_GET_KEYS: usize = 100;
/// Batches of one read across tenants in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;

const PARTITION_PREFIX: &str = "TENANT#";
/// Sort keys of configuration entries start with this; other items of the
/// table (if any) do not, and change streams filter on it.
pub const CONFIG_SORT_PREFIX: &str = "CONFIG#";

pub fn partition_key(tenant: &TenantId) -> String {
    format!("{PARTITION_PREFIX}{tenant}")
}

pub fn sort_key(service: &ServiceName, key: &ConfigKey) -> String {
    format!("{CONFIG_SORT_PREFIX}{service}#{key}")
}

/// Why a primary key names no configuration entry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyLayoutError {
    #[error("partition key is not TENANT#{{tenant}}")]
    NotATenantPartition,
    #[error("sort key is not CONFIG#{{service}}#{{key}}")]
    NotAConfigItem,
    #[error(transparent)]
    Invalid(#[from] crate::error::ConfigError),
}

/// The entry a primary key names: the inverse of [`partition_key`] and
/// [`sort_key`], with every part validated as strictly as a request.
pub fn parse_key(pk: &str, sk: &str) -> Result<ItemKey, KeyLayoutError> {
    let tenant = pk
        .strip_prefix(PARTITION_PREFIX)
        .ok_or(KeyLayoutError::NotATenantPartition)?;
    let (service, key) = sk
        .strip_prefix(CONFIG_SORT_PREFIX)
        .and_then(|rest| rest.split_once('#'))
        .ok_or(KeyLayoutError::NotAConfigItem)?;
    Ok(ItemKey::parse(tenant, service, key)?)
}

/// The primary key attributes (`pk`, `sk`) of one entry.
pub fn key_attributes(
    tenant: &TenantId,
    service: &ServiceName,
    key: &ConfigKey,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(partition_key(tenant)),
        ),
        (
            SORT_KEY.to_owned(),
            AttributeValue::S(sort_key(service, key)),
        ),
    ])
}

/// The primary key attributes of an entry of any layer.
pub fn entry_key_attributes(entry: &EntryKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(entry.layer.partition_key()),
        ),
        (
            SORT_KEY.to_owned(),
            AttributeValue::S(sort_key(&entry.service, &entry.key)),
        ),
    ])
}

#[derive(Clone)]
pub struct DynamoDbStore {
    /// The process's client, or per tenant one signed with the tenant's
    /// vended credentials (see [`crate::credentials`]).
    clients: TenantClient<Client>,
    table: Arc<str>,
}

impl DynamoDbStore {
    pub fn new(client: impl Into<TenantClient<Client>>, table: impl Into<Arc<str>>) -> Self {
        Self {
            clients: client.into(),
            table: table.into(),
        }
    }

    /// One batch of at most [`BATCH_GET_KEYS`] entries (see
    /// [`batch_get_items`]), key attributes included.
    async fn batch_get(
        &self,
        client: &Client,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<(Vec<HashMap<String, AttributeValue>>, usize), StoreError> {
        let (projection, mut names) = Self::projection();
        names.insert("#pk".to_owned(), PARTITION_KEY.to_owned());
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .projection_expression(format!("#pk, {projection}"))
            .set_expression_attribute_names(Some(names))
            .build()
            .map_err(|e| StoreError::Unavailable {
                store: StoreKind::DynamoDb,
                detail: e.to_string(),
            })?;
        batch_get_items(client, &self.table, request).await
    }

    fn projection() -> (String, HashMap<String, String>) {
        // `value` is a DynamoDB reserved word, hence the placeholders.
        (
            "#sk, #v, #ver, #by, #at".to_owned(),
            HashMap::from([
                ("#sk".to_owned(), SORT_KEY.to_owned()),
                ("#v".to_owned(), VALUE_ATTRIBUTE.to_owned()),
                ("#ver".to_owned(), VERSION_ATTRIBUTE.to_owned()),
                ("#by".to_owned(), UPDATED_BY_ATTRIBUTE.to_owned()),
                ("#at".to_owned(), UPDATED_AT_ATTRIBUTE.to_owned()),
            ]),
        )
    }
}

/// One BatchGetItem of at most [`BATCH_GET_KEYS`] keys of `table`, the
/// keys it hands back unprocessed asked again with backoff (throttled after
/// [`UNPROCESSED_RETRIES`]): the items found and the calls made. Every
/// batched read of the table goes through it.
pub(crate) async fn batch_get_items(
    client: &Client,
    table: &str,
    request: KeysAndAttributes,
) -> Result<(Vec<HashMap<String, AttributeValue>>, usize), StoreError> {
    let mut pending = HashMap::from([(table.to_owned(), request)]);
    let mut items = Vec::new();
    let mut attempt = 0;
    loop {
        let mut output = client
            .batch_get_item()
            .set_request_items(Some(pending))
            .send()
            .await
            .map_err(sdk_error)?;
        if let Some(found) = output.responses.as_mut().and_then(|r| r.remove(table)) {
            items.extend(found);
        }
        match output.unprocessed_keys {
            Some(unprocessed) if !unprocessed.is_empty() => {
                if attempt == UNPROCESSED_RETRIES {
                    return Err(StoreError::Throttled {
                        store: StoreKind::DynamoDb,
                        detail: "BatchGetItem kept returning unprocessed keys".to_owned(),
                    });
                }
                tokio::time::sleep(UNPROCESSED_BASE_DELAY * 2u32.pow(attempt)).await;
                attempt += 1;
                pending = unprocessed;
            }
            _ => return Ok((items, attempt as usize + 1)),
        }
    }
}

/// A DynamoDB SDK failure as a store error (throttling → 503, else 502); every
/// DynamoDB adapter (reads, writes, schemas) classifies through this.
pub(crate) fn sdk_error<
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
>(
    err: aws_sdk_dynamodb::error::SdkError<E, R>,
) -> StoreError {
    let code = err.code().map(str::to_owned);
    classify_sdk_error(
        StoreKind::DynamoDb,
        code.as_deref(),
        DisplayErrorContext(&err).to_string(),
    )
}

/// The outcome of a conditional write: `Ok(true)` when it was made,
/// `Ok(false)` when its condition held it back, a store error otherwise.
/// A DynamoDB answer (or a request built for it) this code cannot use:
/// reported as the store being unavailable, with the detail for logs.
pub(crate) fn malformed(detail: String) -> StoreError {
    StoreError::Unavailable {
        store: StoreKind::DynamoDb,
        detail,
    }
}

pub(crate) fn conditional_write<
    O,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
>(
    result: Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(err) => Err(sdk_error(err)),
    }
}

/// Converts a stored item into the value callers see.
fn item_to_found(item: &HashMap<String, AttributeValue>) -> Result<Found, StoreError> {
    let value = item
        .get(VALUE_ATTRIBUTE)
        .ok_or_else(|| StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail: format!("item has no '{VALUE_ATTRIBUTE}' attribute"),
        })?;
    let version = match item.get(VERSION_ATTRIBUTE) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    };
    let written = WrittenBy {
        actor: match item.get(UPDATED_BY_ATTRIBUTE) {
            Some(AttributeValue::S(actor)) => Some(actor.clone()),
            _ => None,
        },
        at_ms: match item.get(UPDATED_AT_ATTRIBUTE) {
            Some(AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        },
    };
    Ok(Found::Plain(Arc::new(PlainValue {
        value: attribute_to_json(value),
        version,
        kind: ValueKind::Plain,
        written,
    })))
}

/// Maps a DynamoDB attribute to JSON: strings keep the JSON-document rule of
/// [`decode_text`], maps and lists become objects and arrays.
pub fn attribute_to_json(attribute: &AttributeValue) -> Value {
    match attribute {
        AttributeValue::S(s) => decode_text(s),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), attribute_to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        AttributeValue::L(list) => Value::Array(list.iter().map(attribute_to_json).collect()),
        AttributeValue::Ss(set) => Value::Array(set.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(set) => Value::Array(set.iter().map(|n| number(n)).collect()),
        AttributeValue::B(blob) => Value::String(aws_smithy_types::base64::encode(blob.as_ref())),
        AttributeValue::Bs(set) => Value::Array(
            set.iter()
                .map(|b| Value::String(aws_smithy_types::base64::encode(b.as_ref())))
                .collect(),
        ),
        // The SDK's enum is non-exhaustive; a future type is reported as text.
        other => Value::String(format!("{other:?}")),
    }
}

fn number(n: &str) -> Value {
    n.parse::<Number>()
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(n.to_owned()))
}

#[async_trait]
impl ConfigStore for DynamoDbStore {
    fn kind(&self) -> StoreKind {
        StoreKind::DynamoDb
    }

    async fn get(&self, item: &ItemKey, _mode: ReadMode) -> Result<Option<Found>, StoreError> {
        let (projection, names) = Self::projection();
        let output = self
            .clients
            .for_tenant(&item.tenant)
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key_attributes(&item.tenant, &item.service, &item.key)))
            .projection_expression(projection)
            .set_expression_attribute_names(Some(names))
            .send()
            .await
            .map_err(sdk_error)?;
        output.item().map(item_to_found).transpose()
    }

    async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
        _mode: ReadMode,
    ) -> Result<HashMap<ConfigKey, Found>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(found);
        }
        let by_sort_key: HashMap<String, &ConfigKey> =
            keys.iter().map(|k| (sort_key(service, k), k)).collect();
        let client = self.clients.for_tenant(tenant);
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let keys = chunk
                .iter()
                .map(|k| key_attributes(tenant, service, k))
                .collect();
            for item in self.batch_get(&client, keys).await?.0 {
                let Some(AttributeValue::S(sk)) = item.get(SORT_KEY) else {
                    continue;
                };
                if let Some(key) = by_sort_key.get(sk) {
                    found.insert((*key).clone(), item_to_found(&item)?);
                }
            }
        }
        Ok(found)
    }

    async fn get_across(
        &self,
        tenants: &[TenantId],
        service: &ServiceName,
        key: &ConfigKey,
    ) -> Result<super::Across, StoreError> {
        // A tenant's vended credentials read its partition only.
        let TenantClient::Shared(client) = &self.clients else {
            return super::one_by_one(self, tenants, service, key).await;
        };
        let by_partition: HashMap<String, &TenantId> =
            tenants.iter().map(|t| (partition_key(t), t)).collect();
        // Collected first, like one_by_one's reads.
        let batches: Vec<_> = tenants
            .chunks(BATCH_GET_KEYS)
            .map(|chunk| {
                let keys = chunk
                    .iter()
                    .map(|tenant| key_attributes(tenant, service, key))
                    .collect();
                self.batch_get(client, keys)
            })
            .collect();
        let mut calls = 0;
        let mut found = HashMap::new();
        let mut batches = stream::iter(batches).buffer_unordered(BATCHES_IN_FLIGHT);
        while let Some(batch) = batches.next().await {
            let (items, made) = batch?;
            calls += made;
            for item in items {
                let Some(AttributeValue::S(pk)) = item.get(PARTITION_KEY) else {
                    continue;
                };
                if let Some(tenant) = by_partition.get(pk) {
                    found.insert((*tenant).clone(), item_to_found(&item)?);
                }
            }
        }
        Ok(super::Across { found, calls })
    }

    async fn list_layer(
        &self,
        layer: &Layer,
        service: &ServiceName,
    ) -> Result<Listing, StoreError> {
        let (projection, mut names) = Self::projection();
        names.insert("#pk".to_owned(), PARTITION_KEY.to_owned());
        let prefix = format!("{CONFIG_SORT_PREFIX}{service}#");
        let mut listing = Listing::default();
        let mut start = None;
        loop {
            let output = self
                .clients
                .for_layer(layer)
                .query()
                .table_name(self.table.as_ref())
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_values(":pk", AttributeValue::S(layer.partition_key()))
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.clone()))
                .set_expression_attribute_names(Some(names.clone()))
                .projection_expression(projection.clone())
                // Strongly consistent: a layer is loaded once per TTL or
                // change, and a reader told a rollout ended must see the
                // value it landed, or its tenants would flip back.
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in output.items() {
                let Some(AttributeValue::S(sk)) = item.get(SORT_KEY) else {
                    continue;
                };
                let Some(key) = sk
                    .strip_prefix(&prefix)
                    .and_then(|k| ConfigKey::parse(k).ok())
                else {
                    continue;
                };
                if listing.entries.len() == MAX_LISTED_ENTRIES {
                    listing.truncated = true;
                    return Ok(listing);
                }
                listing.entries.push((key, item_to_found(item)?));
            }
            match output.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(listing),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_round_trips_and_refuses_anything_else() {
        let item = ItemKey::parse("tenant-a", "billing", "tenant_config_limits").unwrap();
        let pk = partition_key(&item.tenant);
        let sk = sort_key(&item.service, &item.key);
        assert_eq!(
            (pk.as_str(), sk.as_str()),
            ("TENANT#tenant-a", "CONFIG#billing#tenant_config_limits")
        );
        assert_eq!(parse_key(&pk, &sk).unwrap(), item);
        for (pk, sk) in [
            ("tenant-a", "CONFIG#billing#tenant_config_limits"),
            ("TENANT#tenant-a", "JOURNAL#0001"),
            ("TENANT#tenant-a", "CONFIG#billing"),
            ("TENANT#tenant-a", "CONFIG#billing#a#b"),
            ("TENANT#../x", "CONFIG#billing#tenant_config_limits"),
        ] {
            assert!(parse_key(pk, sk).is_err(), "{pk} {sk}");
        }
    }
    use serde_json::json;

    #[test]
    fn keys_follow_the_documented_schema() {
        let tenant = TenantId::parse("acme").unwrap();
        let service = ServiceName::parse("billing").unwrap();
        let key = ConfigKey::parse("tenant_config_limit").unwrap();
        assert_eq!(partition_key(&tenant), "TENANT#acme");
        assert_eq!(
            sort_key(&service, &key),
            "CONFIG#billing#tenant_config_limit"
        );
    }

    #[test]
    fn attributes_map_to_natural_json() {
        let map = AttributeValue::M(HashMap::from([
            ("n".to_owned(), AttributeValue::N("3.5".into())),
            ("b".to_owned(), AttributeValue::Bool(true)),
            (
                "l".to_owned(),
                AttributeValue::L(vec![AttributeValue::S("x".into())]),
            ),
        ]));
        assert_eq!(
            attribute_to_json(&map),
            json!({"n": 3.5, "b": true, "l": ["x"]})
        );
        assert_eq!(
            attribute_to_json(&AttributeValue::S(r#"{"a":1}"#.into())),
            json!({"a": 1})
        );
        assert_eq!(
            attribute_to_json(&AttributeValue::S("plain".into())),
            json!("plain")
        );
    }

    #[test]
    fn item_without_value_is_a_store_error_not_a_panic() {
        let item = HashMap::from([("sk".to_owned(), AttributeValue::S("CONFIG#s#k".into()))]);
        assert!(item_to_found(&item).is_err());
    }
}
