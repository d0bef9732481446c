//! The agent's gRPC services: ConfigReader for callers, ConfigRefresh for
//! config-refresh. Both run on the same read use cases (same stores, same caches).

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::auth::TokenVerifier;
use crate::domain::ItemKey;
use crate::error::ConfigError;
use crate::reads::{ConfigReads, Entry};
use crate::refresh::proto::config_reader_server::ConfigReader;
use crate::refresh::proto::config_refresh_server::ConfigRefresh;
use crate::refresh::proto::{
    ConfigValue, GetConfigRequest, GetConfigResponse, GetConfigsRequest, GetConfigsResponse,
    GetServiceRequest, GetServiceResponse, Operation, RefreshRequest, RefreshResponse,
};
use crate::refresh::signing::{
    RefreshAuthenticator, SIGNATURE_HEADER, TIMESTAMP_HEADER, Verified, unix_ms_now,
};
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
        stale_age_ms: entry.stale.map(|age| age.as_millis() as u64),
    }
}

/// Serves configuration to callers; the tenant comes from the verified token
/// in the `authorization` metadata.
pub struct ReaderService {
    verifier: Arc<TokenVerifier>,
    reads: ConfigReads,
}

impl ReaderService {
    pub fn new(verifier: Arc<TokenVerifier>, reads: ConfigReads) -> Self {
        Self { verifier, reads }
    }

    async fn tenant(&self, metadata: &MetadataMap) -> Result<TenantId, ConfigError> {
        let identity = self
            .verifier
            .verify_header(metadata_str(metadata, "authorization"))
            .await?;
        Ok(identity.require_tenant()?.clone())
    }
}

#[tonic::async_trait]
impl ConfigReader for ReaderService {
    async fn get_config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let answer = async {
            let tenant = self.tenant(request.metadata()).await?;
            let body = request.get_ref();
            let (service, key) = (
                ServiceName::parse(&body.service)?,
                ConfigKey::parse(&body.key)?,
            );
            let entry = self.reads.get(&tenant, &service, &key).await?;
            Ok::<_, ConfigError>(GetConfigResponse {
                service: service.to_string(),
                value: Some(config_value(&key, &entry)),
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }

    async fn get_configs(
        &self,
        request: Request<GetConfigsRequest>,
    ) -> Result<Response<GetConfigsResponse>, Status> {
        let answer = async {
            let tenant = self.tenant(request.metadata()).await?;
            let body = request.get_ref();
            let service = ServiceName::parse(&body.service)?;
            if body.keys.len() > crate::reads::MAX_BATCH_KEYS {
                return Err(ConfigError::BadRequest(format!(
                    "at most {} keys per request",
                    crate::reads::MAX_BATCH_KEYS
                )));
            }
            let keys = body
                .keys
                .iter()
                .map(|k| ConfigKey::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            let batch = self.reads.get_many(&tenant, &service, &keys).await?;
            Ok(GetConfigsResponse {
                service: service.to_string(),
                values: batch
                    .values
                    .iter()
                    .map(|(k, e)| config_value(k, e))
                    .collect(),
                missing: batch.missing.iter().map(ToString::to_string).collect(),
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        let answer = async {
            let tenant = self.tenant(request.metadata()).await?;
            let service = ServiceName::parse(&request.get_ref().service)?;
            let config = self.reads.get_service(&tenant, &service).await?;
            Ok::<_, ConfigError>(GetServiceResponse {
                service: service.to_string(),
                values: config
                    .values
                    .iter()
                    .map(|(k, e)| config_value(k, e))
                    .collect(),
                sensitive: config.sensitive.iter().map(ToString::to_string).collect(),
                truncated: config.truncated,
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }
}

/// Receives signed Refresh calls and drops exactly the named cache entry.
pub struct RefreshService {
    authenticator: RefreshAuthenticator,
    reads: ConfigReads,
}

impl RefreshService {
    pub fn new(authenticator: RefreshAuthenticator, reads: ConfigReads) -> Self {
        Self {
            authenticator,
            reads,
        }
    }
}

#[tonic::async_trait]
impl ConfigRefresh for RefreshService {
    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
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
        let item =
            ItemKey::parse(&body.tenant_id, &body.service, &body.key).map_err(|e| status(&e))?;
        let deleted = body.operation() == Operation::Delete;
        self.reads
            .invalidate(&item, deleted)
            .await
            .map_err(|e| status(&e))?;
        tracing::info!(
            entry = %item.cache_key(),
            operation = body.operation().as_str_name(),
            event_id = %body.event_id,
            "dropped cache entry"
        );
        Ok(Response::new(RefreshResponse { duplicate: false }))
    }
}

/// The agent's gRPC server: ConfigReader, ConfigRefresh and grpc.health.v1.
pub struct AgentServer {
    /// Flip to NOT_SERVING before draining, so health checks stop routing here.
    pub health: tonic_health::server::HealthReporter,
    router: tonic::transport::server::Router,
}

impl AgentServer {
    /// Builds the server with both services reported SERVING.
    pub async fn new(reader: ReaderService, refresh: RefreshService) -> Self {
        use crate::refresh::proto::config_reader_server::ConfigReaderServer;
        use crate::refresh::proto::config_refresh_server::ConfigRefreshServer;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ConfigReaderServer<ReaderService>>()
            .await;
        health
            .set_serving::<ConfigRefreshServer<RefreshService>>()
            .await;
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(ConfigReaderServer::new(reader))
            .add_service(ConfigRefreshServer::new(refresh));
        Self { health, router }
    }

    /// Reports every service NOT_SERVING (first step of a graceful stop).
    pub async fn set_not_serving(health: &tonic_health::server::HealthReporter) {
        use crate::refresh::proto::config_reader_server::ConfigReaderServer;
        use crate::refresh::proto::config_refresh_server::ConfigRefreshServer;
        health
            .set_not_serving::<ConfigReaderServer<ReaderService>>()
            .await;
        health
            .set_not_serving::<ConfigRefreshServer<RefreshService>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    }

    /// Serves on `listener` until `shutdown` completes, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.router
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            )
            .await
    }
}
