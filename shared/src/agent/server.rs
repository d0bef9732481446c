//! The agent's gRPC services: ConfigReader for callers, ConfigRefresh for
//! config-refresh. Both run on the same read use cases (same stores, same caches).

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::auth::Identity;
use crate::auth::TokenVerifier;
use crate::error::ConfigError;
use crate::grants::{Access, ServiceGrants};
use crate::ofrep::OfrepService;
use crate::reads::{ConfigReads, Entry};
use crate::refresh::proto::config_reader_server::ConfigReader;
use crate::refresh::proto::config_refresh_server::ConfigRefresh;
use crate::refresh::proto::{
    ConfigValue, ExplainResponse, GetConfigRequest, GetConfigResponse, GetConfigsRequest,
    GetConfigsResponse, GetSecretResponse, GetServiceRequest, GetServiceResponse, LayerValue, Leaf,
    RefreshRequest, RefreshResponse, WatchEvent, WatchRequest,
};
use crate::refresh::signing::{
    RefreshAuthenticator, SIGNATURE_HEADER, TIMESTAMP_HEADER, Verified, unix_ms_now,
};
use crate::secret_reads::{Via, forwarded, loopback_only, read_secret};
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// gRPC status for a library error, derived from the one HTTP mapping.
pub fn status(err: &ConfigError) -> Status {
    let code = match err.status() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        502 | 503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, err.public_message())
}

fn metadata_str<'a>(metadata: &'a MetadataMap, name: &str) -> Option<&'a str> {
    metadata.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn config_value(key: &ConfigKey, entry: &Entry) -> ConfigValue {
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
    /// Which services each app client may read (absent: every service).
    grants: Option<Arc<ServiceGrants>>,
    /// Bounds the Watch streams served at once, in all and per tenant.
    watches: Arc<tokio::sync::Semaphore>,
    tenant_watches: Arc<super::watch::TenantWatches>,
    /// Set when the agent stops: Watch streams end, to resume elsewhere.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Whether GetSecret answers ([`Self::serving_secrets`]).
    serve_secrets: bool,
}

impl ReaderService {
    /// Serves `reads`. Watch streams hear what they learn through their
    /// change feed ([`ConfigReads::with_change_feed`]; without one, Watch is
    /// UNIMPLEMENTED): give the Refresh service the same reads.
    pub fn new(verifier: Arc<TokenVerifier>, reads: ConfigReads) -> Self {
        Self {
            verifier,
            reads,
            grants: None,
            watches: super::watch::watch_permits(),
            tenant_watches: Arc::default(),
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
            serve_secrets: false,
        }
    }

    /// Answers GetSecret (to callers on this host only); without it every
    /// GetSecret is PERMISSION_DENIED.
    pub fn serving_secrets(mut self) -> Self {
        self.serve_secrets = true;
        self
    }

    /// Serves each caller only the services its app client is granted.
    pub fn with_service_grants(mut self, grants: Arc<ServiceGrants>) -> Self {
        self.grants = Some(grants);
        self
    }

    /// OFREP on the same verifier, reads and grants.
    fn ofrep(&self) -> OfrepService {
        OfrepService::new(
            Arc::clone(&self.verifier),
            self.reads.clone(),
            self.grants.clone(),
        )
    }

    async fn identity(&self, metadata: &MetadataMap) -> Result<Arc<Identity>, ConfigError> {
        self.verifier
            .verify_header(metadata_str(metadata, "authorization"))
            .await
    }

    /// The caller's tenant, if its app client may read `service` (checked
    /// before any store is asked).
    async fn tenant(
        &self,
        identity: &Identity,
        service: &ServiceName,
    ) -> Result<TenantId, ConfigError> {
        let tenant = identity.require_tenant()?.clone();
        if let Some(grants) = &self.grants {
            grants.check(identity, service, Access::Plain).await?;
        }
        Ok(tenant)
    }
}

#[tonic::async_trait]
impl ConfigReader for ReaderService {
    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let start = async {
            let identity = self.identity(request.metadata()).await?;
            let body = request.get_ref();
            let service = ServiceName::parse(&body.service)?;
            let tenant = self.tenant(&identity, &service).await?;
            let keys = super::watch::watched_keys(&body.keys)?;
            let resume_from = body
                .resume_from
                .as_deref()
                .map(super::watch::parse_position)
                .transpose()?;
            Ok::<_, ConfigError>((identity, tenant, service, keys, resume_from))
        };
        let (identity, tenant, service, keys, resume_from) = start.await.map_err(|e| status(&e))?;
        let permit = Arc::clone(&self.watches).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this agent serves {} watches at most",
                super::watch::MAX_WATCHES
            ))
        })?;
        let tenant_permit = self.tenant_watches.acquire(&tenant).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "a tenant holds {} watches per agent at most",
                super::watch::MAX_WATCHES_PER_TENANT
            ))
        })?;
        let (events, stream) = tokio::sync::mpsc::channel(super::watch::EVENT_BUFFER);
        let watcher = super::watch::Watcher {
            watched: super::watch::Watched {
                tenant,
                service,
                keys,
            },
            reads: self.reads.clone(),
            expires_at: identity.expires_at,
            events,
            stopping: self.stopping.subscribe(),
            permits: (permit, tenant_permit),
        };
        tokio::spawn(watcher.run(resume_from));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            stream,
        )))
    }

    async fn get_config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let answer = async {
            let identity = self.identity(request.metadata()).await?;
            let body = request.get_ref();
            let (service, key) = (
                ServiceName::parse(&body.service)?,
                ConfigKey::parse(&body.key)?,
            );
            let tenant = self.tenant(&identity, &service).await?;
            let entry = self.reads.get(&tenant, &service, &key).await?;
            Ok::<_, ConfigError>(GetConfigResponse {
                service: service.to_string(),
                value: Some(config_value(&key, &entry)),
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }

    async fn get_secret(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let peer = request.remote_addr();
        let answer = async {
            if !self.serve_secrets {
                return Err(ConfigError::SecretsNotServed);
            }
            loopback_only(peer, forwarded(request.metadata().as_ref()))?;
            let identity = self.identity(request.metadata()).await?;
            let body = request.get_ref();
            let (service, key) = (
                ServiceName::parse(&body.service)?,
                ConfigKey::parse(&body.key)?,
            );
            let entry = read_secret(
                &self.reads,
                self.grants.as_deref(),
                &identity,
                &service,
                &key,
                Via::Agent { peer },
            )
            .await?;
            Ok::<_, ConfigError>(GetSecretResponse {
                value_json: entry.value.expose().to_string(),
                service: service.to_string(),
                key: key.to_string(),
                source: entry.source.as_str().to_owned(),
                version: entry.value.version,
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }

    async fn explain(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let answer = async {
            let identity = self.identity(request.metadata()).await?;
            let body = request.get_ref();
            let (service, key) = (
                ServiceName::parse(&body.service)?,
                ConfigKey::parse(&body.key)?,
            );
            let tenant = self.tenant(&identity, &service).await?;
            let explained = self.reads.explain(&tenant, &service, &key).await?;
            Ok::<_, ConfigError>(ExplainResponse {
                service: service.to_string(),
                value: Some(config_value(&key, &explained.entry)),
                layers: explained
                    .layers
                    .iter()
                    .map(|(layer, value)| LayerValue {
                        layer: layer.to_string(),
                        value_json: value.value.to_string(),
                        version: value.version,
                        updated_by: value.written.actor.clone(),
                        updated_at_ms: value.written.at_ms,
                    })
                    .collect(),
                leaves: explained
                    .leaves
                    .iter()
                    .map(|(pointer, layer)| Leaf {
                        pointer: pointer.clone(),
                        layer: layer.to_string(),
                    })
                    .collect(),
            })
        };
        answer.await.map(Response::new).map_err(|e| status(&e))
    }

    async fn get_configs(
        &self,
        request: Request<GetConfigsRequest>,
    ) -> Result<Response<GetConfigsResponse>, Status> {
        let answer = async {
            let identity = self.identity(request.metadata()).await?;
            let body = request.get_ref();
            let service = ServiceName::parse(&body.service)?;
            let tenant = self.tenant(&identity, &service).await?;
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
            let identity = self.identity(request.metadata()).await?;
            let service = ServiceName::parse(&request.get_ref().service)?;
            let tenant = self.tenant(&identity, &service).await?;
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
    refusals: RefusalLog,
}

impl RefreshService {
    pub fn new(authenticator: RefreshAuthenticator, reads: ConfigReads) -> Self {
        Self {
            authenticator,
            reads,
            refusals: RefusalLog::new(REFUSAL_LOG_INTERVAL),
        }
    }
}

/// At most one refused-Refresh WARN line per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs refused Refresh calls at a bounded rate: anyone who can reach the
/// Refresh port could otherwise make the agent write one line per call.
/// Each line says how many refusals it stands for; every refusal is counted
/// in the `RefusedRefreshes` metric.
pub struct RefusalLog {
    interval_ms: i64,
    next_at_ms: std::sync::atomic::AtomicI64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl RefusalLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as i64,
            next_at_ms: std::sync::atomic::AtomicI64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Records a refusal at `now_ms`; returns how many refusals the line it
    /// wrote stands for, or `None` when it wrote none.
    pub fn refused(&self, reason: &dyn std::fmt::Display, now_ms: i64) -> Option<u64> {
        use std::sync::atomic::Ordering;
        crate::metrics::metrics().count(crate::metrics::Counter::RefusedRefreshes);
        let next = self.next_at_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_at_ms
                .compare_exchange(
                    next,
                    now_ms + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let refusals = self.suppressed.swap(0, Ordering::Relaxed) + 1;
            tracing::warn!(%reason, refusals, "refused Refresh calls (one line per interval)");
            return Some(refusals);
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
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
                self.refusals.refused(&reason, unix_ms_now());
                Status::unauthenticated(reason.to_string())
            })?;
        if verified == Verified::Replay {
            tracing::info!(event_id = %body.event_id, "ignored a repeated refresh event");
            return Ok(Response::new(RefreshResponse { duplicate: true }));
        }
        let subject = body.subject().map_err(|e| status(&e))?;
        self.reads
            .invalidate_subject(&subject, body.changed())
            .await
            .map_err(|e| status(&e))?;
        tracing::info!(
            entry = %subject,
            operation = body.operation().as_str_name(),
            event_id = %body.event_id,
            "dropped cache entry"
        );
        Ok(Response::new(RefreshResponse { duplicate: false }))
    }
}

/// Largest request a caller may send (a GetConfigs names at most 50 keys).
pub const MAX_READER_REQUEST_BYTES: usize = 64 * 1024;
/// Largest Refresh request (it names one entry, never a value).
pub const MAX_REFRESH_REQUEST_BYTES: usize = 4 * 1024;
/// Calls in flight per connection, and HTTP/2 streams per connection.
pub const MAX_CALLS_PER_CONNECTION: usize = 64;
/// Longest a call may take before the server answers DEADLINE_EXCEEDED.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's gRPC server: ConfigReader, ConfigRefresh and grpc.health.v1.
///
/// The agent runs beside its service, so callers reach it on loopback; only
/// config-refresh needs it from the network. [`AgentServer::serve_split`]
/// serves the readers on one listener and Refresh (with health, for the
/// orchestrator's checks) on another; [`AgentServer::serve`] serves all on
/// one (in-process test agents). Every listener bounds request sizes, calls
/// per connection and call time.
pub struct AgentServer {
    /// Flip to NOT_SERVING before draining, so health checks stop routing here.
    pub health: tonic_health::server::HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    reader: ConfigReaderServer<ReaderService>,
    /// OFREP over HTTP/1.1, beside ConfigReader on the readers' listener.
    ofrep: OfrepService,
    /// Ends every Watch stream when the server stops.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    refresh: ConfigRefreshServer<RefreshService>,
    /// TLS on the Refresh listener (split mode), when certificates are given.
    refresh_tls: Option<tonic::transport::ServerTlsConfig>,
}

use crate::refresh::proto::config_reader_server::ConfigReaderServer;
use crate::refresh::proto::config_refresh_server::ConfigRefreshServer;

fn limited() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .max_concurrent_streams(MAX_CALLS_PER_CONNECTION as u32)
        .timeout(CALL_TIMEOUT)
}

/// The readers' listener also takes HTTP/1.1, for OFREP's clients.
fn readers_server() -> tonic::transport::Server {
    limited().accept_http1(true)
}

fn with_ofrep(routes: tonic::service::Routes, ofrep: OfrepService) -> tonic::service::Routes {
    routes
        .into_axum_router()
        .merge(crate::agent::ofrep_http::routes(ofrep))
        .into()
}

impl AgentServer {
    /// Builds the server with both services reported SERVING.
    pub async fn new(reader: ReaderService, refresh: RefreshService) -> Self {
        let health = tonic_health::server::HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        health
            .set_serving::<ConfigReaderServer<ReaderService>>()
            .await;
        health
            .set_serving::<ConfigRefreshServer<RefreshService>>()
            .await;
        Self {
            health,
            health_service,
            ofrep: reader.ofrep(),
            stopping: Arc::clone(&reader.stopping),
            reader: ConfigReaderServer::new(reader)
                .max_decoding_message_size(MAX_READER_REQUEST_BYTES),
            refresh: ConfigRefreshServer::new(refresh)
                .max_decoding_message_size(MAX_REFRESH_REQUEST_BYTES),
            refresh_tls: None,
        }
    }

    /// Serves the Refresh listener over TLS with this certificate chain and
    /// key (PEM). config-refresh verifies it against the CA it is given.
    pub fn with_refresh_tls(mut self, certificate_pem: &[u8], key_pem: &[u8]) -> Self {
        self.refresh_tls = Some(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(certificate_pem, key_pem),
        ));
        self
    }

    /// Reports every service NOT_SERVING (first step of a graceful stop).
    pub async fn set_not_serving(health: &tonic_health::server::HealthReporter) {
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

    /// Serves every service on `listener` until `shutdown` completes, then
    /// drains in-flight calls.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let routes = tonic::service::Routes::new(self.health_service)
            .add_service(self.reader)
            .add_service(self.refresh);
        let stopping = self.stopping;
        readers_server()
            .add_routes(with_ofrep(routes, self.ofrep))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    shutdown.await;
                    // Streams never finish on their own: end them, or the
                    // drain would wait out the whole grace period.
                    stopping.send_replace(true);
                },
            )
            .await
    }

    /// Serves ConfigReader (and health) on `readers`, ConfigRefresh (and
    /// health) on `refresh`, until `shutdown` completes; then both drain.
    pub async fn serve_split(
        self,
        readers: tokio::net::TcpListener,
        refresh: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopped_too = stopped.clone();
        let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let routes =
            tonic::service::Routes::new(self.health_service.clone()).add_service(self.reader);
        let readers = readers_server()
            .add_routes(with_ofrep(routes, self.ofrep))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(readers),
                until(stopped),
            );
        let mut refresh_server = limited();
        if let Some(tls) = self.refresh_tls {
            refresh_server = refresh_server.tls_config(tls)?;
        }
        let refresh = refresh_server
            .add_service(self.health_service)
            .add_service(self.refresh)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(refresh),
                until(stopped_too),
            );
        let stopping = self.stopping;
        let signal = async move {
            shutdown.await;
            // Streams never finish on their own: end them, or the drain
            // would wait out the whole grace period.
            stopping.send_replace(true);
            let _ = stop.send(true);
            Ok(())
        };
        tokio::try_join!(readers, refresh, signal).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refused_refreshes_writes_one_line_per_interval_counting_the_rest() {
        let log = RefusalLog::new(Duration::from_secs(10));
        let written: Vec<Option<u64>> = (0..1000).map(|i| log.refused(&"bad", i)).collect();
        assert_eq!(written[0], Some(1));
        assert_eq!(written.iter().filter(|w| w.is_some()).count(), 1);
        // the next line, an interval later, stands for everything refused since
        assert_eq!(log.refused(&"bad", 10_000), Some(1000));
        assert_eq!(log.refused(&"bad", 10_001), None);
    }
}
