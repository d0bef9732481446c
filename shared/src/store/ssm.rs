//! Parameter Store adapter: `{root}/{tenant}/{service}/{key}`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ssm::types::{Parameter, ParameterType};
use futures::future::try_join_all;
use futures::{StreamExt, stream};
use serde_json::Value;

use super::{ConfigStore, Listing, MAX_LISTED_ENTRIES, classify_sdk_error};
use crate::credentials::TenantClient;
use crate::domain::{
    Found, ItemKey, PlainValue, ReadMode, SecretValue, ValueKind, WrittenBy, decode_text,
};
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::layers::{EntryKey, Layer};
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// Default root of all tenant parameters.
pub const DEFAULT_PARAMETER_ROOT: &str = "/config-service";
/// GetParameters accepts at most ten names per call.
const GET_PARAMETERS_BATCH: usize = 10;
/// GetParameters calls of one read across tenants in flight at once.
const CALLS_IN_FLIGHT: usize = 8;

/// A parameter root that cannot hold tenant parameters safely.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    #[error("parameter root '{0}' must start with '/'")]
    NotAbsolute(String),
    #[error(
        "parameter root '{0}' must be '/'-separated segments of A-Z a-z 0-9 _ . - without a trailing '/'"
    )]
    BadSegment(String),
}

/// Checks a configured parameter root: absolute, no trailing slash, and made of
/// the same strict segments as everything else.
pub fn validate_root(root: &str) -> Result<(), RootError> {
    let Some(rest) = root.strip_prefix('/') else {
        return Err(RootError::NotAbsolute(root.to_owned()));
    };
    if rest.is_empty()
        || rest.split('/').any(|segment| {
            segment.is_empty()
                || segment.contains("..")
                || !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        })
    {
        return Err(RootError::BadSegment(root.to_owned()));
    }
    Ok(())
}

/// The one layout of tenant parameter names: `{root}/{tenant}/{service}/{key}`.
pub fn parameter_name(
    root: &str,
    tenant: &TenantId,
    service: &ServiceName,
    key: &ConfigKey,
) -> String {
    format!("{root}/{tenant}/{service}/{key}")
}

/// The parameter name of an entry of any layer:
/// `{root}/{tenant | _global | _tiers/{tier}}/{service}/{key}`.
pub fn layer_parameter_name(root: &str, entry: &EntryKey) -> String {
    format!(
        "{root}/{}/{}/{}",
        entry.layer.parameter_segment(),
        entry.service,
        entry.key
    )
}

#[derive(Clone)]
pub struct ParameterStore {
    /// The process's client, or per tenant one signed with the tenant's
    /// vended credentials (see [`crate::credentials`]).
    clients: TenantClient<Client>,
    root: Arc<str>,
}

impl ParameterStore {
    /// `root` must satisfy [`validate_root`]; settings check it at start-up.
    pub fn new(client: impl Into<TenantClient<Client>>, root: impl Into<Arc<str>>) -> Self {
        Self {
            clients: client.into(),
            root: root.into(),
        }
    }

    pub fn parameter_name(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        key: &ConfigKey,
    ) -> String {
        parameter_name(&self.root, tenant, service, key)
    }
}

/// A Parameter Store SDK failure as a store error (throttling → 503, else
/// 502); the reader and the writer classify through this.
pub(crate) fn sdk_error<
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
>(
    err: aws_sdk_ssm::error::SdkError<E, R>,
) -> StoreError {
    let code = err.code().map(str::to_owned);
    classify_sdk_error(
        StoreKind::ParameterStore,
        code.as_deref(),
        DisplayErrorContext(&err).to_string(),
    )
}

/// Converts a parameter into what callers may see. A SecureString read
/// without decryption yields no value at all: the ciphertext is dropped here.
fn parameter_to_found(parameter: Parameter, mode: ReadMode) -> Found {
    let version = Some(parameter.version);
    // Parameter Store lists no writer with a value (its history does).
    let written = WrittenBy {
        actor: None,
        at_ms: parameter
            .last_modified_date
            .and_then(|at| at.to_millis().ok()),
    };
    let text = parameter.value.unwrap_or_default();
    match parameter.r#type {
        Some(ParameterType::SecureString) => Found::Secret(match mode {
            ReadMode::Decrypt => Some(SecretValue::new(decode_text(&text), version)),
            ReadMode::Plain => None,
        }),
        Some(ParameterType::StringList) => Found::Plain(Arc::new(PlainValue {
            value: Value::Array(
                text.split(',')
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
            version,
            kind: ValueKind::StringList,
            written,
        })),
        _ => Found::Plain(Arc::new(PlainValue {
            value: decode_text(&text),
            version,
            kind: ValueKind::Plain,
            written,
        })),
    }
}

#[async_trait]
impl ConfigStore for ParameterStore {
    fn kind(&self) -> StoreKind {
        StoreKind::ParameterStore
    }

    async fn get(&self, item: &ItemKey, mode: ReadMode) -> Result<Option<Found>, StoreError> {
        let result = self
            .clients
            .for_tenant(&item.tenant)
            .get_parameter()
            .name(self.parameter_name(&item.tenant, &item.service, &item.key))
            .with_decryption(mode == ReadMode::Decrypt)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.parameter.map(|p| parameter_to_found(p, mode))),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(err) => Err(sdk_error(err)),
        }
    }

    async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
        mode: ReadMode,
    ) -> Result<HashMap<ConfigKey, Found>, StoreError> {
        let by_name: HashMap<String, &ConfigKey> = keys
            .iter()
            .map(|k| (self.parameter_name(tenant, service, k), k))
            .collect();
        let names: Vec<&String> = by_name.keys().collect();
        let client = self.clients.for_tenant(tenant);
        let calls = names.chunks(GET_PARAMETERS_BATCH).map(|chunk| {
            client
                .get_parameters()
                .set_names(Some(chunk.iter().map(|n| (*n).clone()).collect()))
                .with_decryption(mode == ReadMode::Decrypt)
                .send()
        });
        let outputs = try_join_all(calls).await.map_err(sdk_error)?;
        let mut found = HashMap::with_capacity(keys.len());
        for parameter in outputs
            .into_iter()
            .flat_map(|o| o.parameters.unwrap_or_default())
        {
            let key = parameter.name.as_deref().and_then(|name| by_name.get(name));
            if let Some(key) = key {
                found.insert((*key).clone(), parameter_to_found(parameter, mode));
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
        // A tenant's vended credentials read its own path only.
        let TenantClient::Shared(client) = &self.clients else {
            return super::one_by_one(self, tenants, service, key).await;
        };
        let by_name: HashMap<String, &TenantId> = tenants
            .iter()
            .map(|t| (self.parameter_name(t, service, key), t))
            .collect();
        let names: Vec<&String> = by_name.keys().collect();
        // Collected first, like one_by_one's reads.
        let calls: Vec<_> = names
            .chunks(GET_PARAMETERS_BATCH)
            .map(|chunk| {
                client
                    .get_parameters()
                    .set_names(Some(chunk.iter().map(|n| (*n).clone()).collect()))
                    .with_decryption(false)
                    .send()
            })
            .collect();
        let count = calls.len();
        let mut outputs = stream::iter(calls).buffer_unordered(CALLS_IN_FLIGHT);
        let mut found = HashMap::new();
        while let Some(output) = outputs.next().await {
            for parameter in output.map_err(sdk_error)?.parameters.unwrap_or_default() {
                let tenant = parameter.name.as_deref().and_then(|name| by_name.get(name));
                if let Some(tenant) = tenant {
                    found.insert(
                        (*tenant).clone(),
                        parameter_to_found(parameter, ReadMode::Plain),
                    );
                }
            }
        }
        Ok(super::Across {
            found,
            calls: count,
        })
    }

    async fn list_layer(
        &self,
        layer: &Layer,
        service: &ServiceName,
    ) -> Result<Listing, StoreError> {
        let path = format!("{}/{}/{service}", self.root, layer.parameter_segment());
        let prefix = format!("{path}/");
        let mut listing = Listing::default();
        let mut token = None;
        loop {
            let output = self
                .clients
                .for_layer(layer)
                .get_parameters_by_path()
                .path(&path)
                .recursive(false)
                // Never decrypted: a SecureString is listed by name only.
                .with_decryption(false)
                .max_results(10)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            for parameter in output.parameters.unwrap_or_default() {
                let Some(key) = parameter
                    .name
                    .as_deref()
                    .and_then(|name| name.strip_prefix(&prefix))
                    .and_then(|k| ConfigKey::parse(k).ok())
                else {
                    continue;
                };
                if listing.entries.len() == MAX_LISTED_ENTRIES {
                    listing.truncated = true;
                    // Sorted like a whole listing: readers search it by key.
                    listing.entries.sort_by(|a, b| a.0.cmp(&b.0));
                    return Ok(listing);
                }
                listing
                    .entries
                    .push((key, parameter_to_found(parameter, ReadMode::Plain)));
            }
            match output.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        // Parameter Store pages in its own order; callers get key order.
        listing.entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parameter(kind: ParameterType, value: &str) -> Parameter {
        Parameter::builder()
            .r#type(kind)
            .value(value)
            .version(3)
            .build()
    }

    #[test]
    fn secure_string_without_decryption_carries_no_value() {
        let found = parameter_to_found(
            parameter(ParameterType::SecureString, "AQICAH-cipher"),
            ReadMode::Plain,
        );
        assert_eq!(found, Found::Secret(None));
    }

    #[test]
    fn secure_string_with_decryption_is_a_secret_value() {
        let found = parameter_to_found(
            parameter(ParameterType::SecureString, "s3cret"),
            ReadMode::Decrypt,
        );
        let Found::Secret(Some(secret)) = found else {
            panic!("expected a secret, got {found:?}");
        };
        assert_eq!(secret.expose(), &json!("s3cret"));
    }

    #[test]
    fn string_list_becomes_an_array_and_json_stays_json() {
        let Found::Plain(list) =
            parameter_to_found(parameter(ParameterType::StringList, "a,b"), ReadMode::Plain)
        else {
            panic!()
        };
        assert_eq!(list.value, json!(["a", "b"]));
        let Found::Plain(doc) = parameter_to_found(
            parameter(ParameterType::String, r#"{"on":true}"#),
            ReadMode::Plain,
        ) else {
            panic!()
        };
        assert_eq!(doc.value, json!({"on": true}));
        assert_eq!(doc.version, Some(3));
    }

    #[test]
    fn root_must_be_a_clean_absolute_path() {
        assert!(validate_root("/config-service").is_ok());
        assert!(validate_root("/org/config-service").is_ok());
        for bad in [
            "config-service",
            "/",
            "/a/",
            "/a//b",
            "/a/../b",
            "/a b",
            "/a#b",
        ] {
            assert!(validate_root(bad).is_err(), "{bad}");
        }
    }
}
