//! The agent's gRPC services: ConfigReader for callers, ConfigRefresh for
//! config-refresh. Both run on the shared core (same stores, same caches).

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::auth::TokenVerifier;
use crate::domain::ItemKey;
use crate::error::ConfigError;
use crate::refresh::proto::config_reader_server::ConfigReader;
use crate::refresh::proto::config_refresh_server::ConfigRefresh;
use crate::refresh::proto::{
    ConfigValue, GetConfigRequest, GetConfigResponse, GetConfigsRequest, GetConfigsResponse, RefreshRequest,
    RefreshResponse,
};
use crate::refresh::signing::{RefreshAuthenticator, SIGNATURE_HEADER, TIMESTAMP_HEADER, Verified, unix_ms_now};
use crate::service::{ConfigService, Entry};
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// gRPC status for a library error, derived from the one HTTP mapping.
pub fn status(err: &ConfigError) -> Status {
    let code = match err.status() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        502 | 503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, err.public_message())
}

fn metadata_str<'a>(metadata: &'a MetadataMap, name: &str) -> Option<&'a str> {
    metadata.get(name).and_then(|v| v.to_str().ok())
}

fn config_value(key: &ConfigKey, entry: &Entry) -> ConfigValue {
    ConfigValue {
        key: key.to_string(),
        value_json: entry.value.value.to_string(),
        source: entry.source.as_str().to_owned(),
        version: entry.value.version,
    }
}

/// Serves configuration to callers; the tenant comes from the verified token
/// in the `authorization` metadata.
pub struct ReaderService {
    verifier: Arc<TokenVerifier>,
    service: ConfigService,
}

impl ReaderService {
    pub fn new(verifier: Arc<TokenVerifier>, service: ConfigService) -> Self {
        Self { verifier, service }
    }

    async fn tenant(&self, metadata: &MetadataMap) -> Result<TenantId, ConfigError> {
        let identity = self.verifier.verify_header(metadata_str(metadata, "authorization")).await?;
        Ok(identity.require_tenant()?.clone())
    }
}

#[tonic::async_trait]
impl ConfigReader for ReaderService {
    async fn get_config(&self, request: Request<GetConfigRequest>) -> Result<Response<GetConfigResponse>, Status> {
        let answer = async {
            let tenant = self.tenant(request.metadata()).await?;
            let body = request.get_ref();
            let (service, key) = (ServiceName::parse(&body.service)?, ConfigKey::parse(&body.key)?);
            let entry = self.service.get(&tenant, &service, &key).await?;
            Ok::<_, ConfigError>(GetConfigResponse {
                service: service.to_string(),
                value: Some(config_value(&key, &entry)),
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }

    async fn get_configs(&self, request: Request<GetConfigsRequest>) -> Result<Response<GetConfigsResponse>, Status> {
        let answer = async {
            let tenant = self.tenant(request.metadata()).await?;
            let body = request.get_ref();
            let service = ServiceName::parse(&body.service)?;
            if body.keys.len() > crate::service::MAX_BATCH_KEYS {
                return Err(ConfigError::BadRequest(format!(
                    "at most {} keys per request",
                    crate::service::MAX_BATCH_KEYS
                )));
            }
            let keys = body.keys.iter().map(|k| ConfigKey::parse(k)).collect::<Result<Vec<_>, _>>()?;
            let batch = self.service.get_many(&tenant, &service, &keys).await?;
            Ok(GetConfigsResponse {
                service: service.to_string(),
                values: batch.values.iter().map(|(k, e)| config_value(k, e)).collect(),
                missing: batch.missing.iter().map(ToString::to_string).collect(),
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }
}

/// Receives signed Refresh calls and drops exactly the named cache entry.
pub struct RefreshService {
    authenticator: RefreshAuthenticator,
    service: ConfigService,
}

impl RefreshService {
    pub fn new(authenticator: RefreshAuthenticator, service: ConfigService) -> Self {
        Self { authenticator, service }
    }
}

#[tonic::async_trait]
impl ConfigRefresh for RefreshService {
    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        let metadata = request.metadata();
        let body = request.get_ref();
        let verified = self
            .authenticator
            .verify(
                body,
                metadata_str(metadata, TIMESTAMP_HEADER),
                metadata_str(metadata, SIGNATURE_HEADER),
                unix_ms_now(),
            )
            .map_err(|reason| {
                tracing::warn!(%reason, "refused a Refresh call");
                Status::unauthenticated(reason.to_string())
            })?;
        if verified == Verified::Replay {
            tracing::info!(event_id = %body.event_id, "ignored a repeated refresh event");
            return Ok(Response::new(RefreshResponse { duplicate: true }));
        }
        let item = (|| {
            Ok::<_, ConfigError>(ItemKey::new(
                TenantId::parse(&body.tenant_id)?,
                ServiceName::parse(&body.service)?,
                ConfigKey::parse(&body.key)?,
            ))
        })()
        .map_err(|e| status(&e))?;
        self.service.invalidate(&item).await.map_err(|e| status(&e))?;
        tracing::info!(
            entry = %item.cache_key(),
            operation = body.operation().as_str_name(),
            event_id = %body.event_id,
            "dropped cache entry"
        );
        Ok(Response::new(RefreshResponse { duplicate: false }))
    }
}
