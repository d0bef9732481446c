//! An OpenFeature provider over the client's in-memory values: a flag key
//! is a config key of the client's service, resolved with no network call.
//!
//! - **Reason:** `CACHED` (held in memory, kept current by the stream);
//!   `STALE` when the agent sent its last good value or the stream is down.
//! - **Variant:** `v{version}` when the store keeps versions.
//! - **Metadata:** `source` (`dynamodb` / `parameter-store`) and `version`.
//! - **Errors:** `FLAG_NOT_FOUND` for a key with no value, outside the
//!   watched keys, or holding a SecureString (never a flag); `TYPE_MISMATCH`
//!   for a value of another JSON type; `GENERAL` once the agent refused the
//!   tenant.
//!
//! The evaluation context is not used: the tenant is the token's.

use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationError, EvaluationErrorCode, EvaluationReason, EvaluationResult,
    FlagMetadata, StructValue,
};

use crate::client::ConfigClient;
use crate::values::{Entry, ReadError, Typed};

/// Serves `client`'s values to an OpenFeature client.
pub struct ConfigProvider {
    client: ConfigClient,
    metadata: ProviderMetadata,
}

impl ConfigProvider {
    pub fn new(client: ConfigClient) -> Self {
        Self {
            client,
            metadata: ProviderMetadata::new("tenant-config"),
        }
    }

    fn resolve<T>(
        &self,
        key: &str,
        expected: &'static str,
        typed: impl FnOnce(&Typed) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let entry = self.client.entry(key).map_err(evaluation_error)?;
        let value = typed(&entry.value).ok_or_else(|| {
            evaluation_error(ReadError::TypeMismatch {
                key: key.to_owned(),
                expected,
                found: entry.value.type_name(),
            })
        })?;
        Ok(self.details(value, &entry))
    }

    fn details<T>(&self, value: T, entry: &Entry) -> ResolutionDetails<T> {
        let stale = entry.stale_for.is_some() || !self.client.connected();
        let mut metadata = FlagMetadata::default().with_value("source", entry.source.clone());
        if let Some(version) = entry.version {
            metadata.add_value("version", version);
        }
        ResolutionDetails {
            value,
            variant: entry.version.map(|v| format!("v{v}")),
            reason: Some(if stale {
                EvaluationReason::Other("STALE".into())
            } else {
                EvaluationReason::Cached
            }),
            flag_metadata: Some(metadata),
        }
    }
}

fn evaluation_error(error: ReadError) -> EvaluationError {
    let code = match &error {
        ReadError::NotFound(_) | ReadError::NotWatched(_) | ReadError::Sensitive(_) => {
            EvaluationErrorCode::FlagNotFound
        }
        ReadError::TypeMismatch { .. } => EvaluationErrorCode::TypeMismatch,
        ReadError::Refused(_) => EvaluationErrorCode::General("refused".into()),
    };
    EvaluationError::builder()
        .code(code)
        .message(error.to_string())
        .build()
}

#[async_trait::async_trait]
impl FeatureProvider for ConfigProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    /// Ready while the stream is up; `STALE` while it reconnects (values
    /// are the last received).
    fn status(&self) -> ProviderStatus {
        if self.client.connected() {
            ProviderStatus::Ready
        } else {
            ProviderStatus::STALE
        }
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(key, "boolean", |v| match v {
            Typed::Bool(b) => Some(*b),
            _ => None,
        })
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(key, "integer", |v| match v {
            Typed::Int(i) => Some(*i),
            _ => None,
        })
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(key, "number", |v| match v {
            Typed::Float(f) => Some(*f),
            Typed::Int(i) => Some(*i as f64),
            _ => None,
        })
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(key, "string", |v| match v {
            Typed::Str(s) => Some(s.to_string()),
            _ => None,
        })
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(key, "object", |v| match v {
            Typed::Json(json) if json.is_object() => {
                match open_feature::Value::try_from(json.as_ref()) {
                    Ok(open_feature::Value::Struct(s)) => Some(s),
                    _ => None,
                }
            }
            _ => None,
        })
    }
}
