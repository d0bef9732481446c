//! The HTTP API, independent of the Lambda runtime so it is tested without AWS.
//!
//! Routes:
//! - `/v1/config/{service}/{key}`: one value (cacheable; SecureString → 409)
//! - `/v1/config/{service}?keys=k1,k2`: up to 50 values (cacheable)
//! - `/v1/config/{service}`: every key of the service (cacheable)
//! - `/v1/secure/{service}/{key}`: one value with decryption, never cached
//! - `/v1/explain/{service}/{key}`: the value with the layer, version and
//!   writer of each part, never cached
//! - `PUT`/`DELETE /v1/config/{service}/{key}`, `GET .../history`,
//!   `POST .../rollback`: administrators only, with `If-Match`, never cached
//! - the same under `/v1/layers/global/{service}/{key}` and
//!   `/v1/layers/tiers/{tier}/{service}/{key}`, and `GET`/`PUT
//!   /v1/tenants/{tenant}` (`{"tier": "gold"}`): platform administrators
//!   only, never cached
//! - `POST /v1/rollouts`, `GET /v1/rollouts/{id}`, `POST
//!   /v1/rollouts/{id}/pause|resume|abort`: a shared change rolled out
//!   tenant by tenant; platform administrators only, never cached
//!
//! - `POST /v1/services/{service}/ofrep/v1/evaluate/flags[/{key}]`, `GET
//!   .../ofrep/v1/configuration`: OpenFeature's remote evaluation protocol
//!   (see [`crate::ofrep`]), never cached
//!
//! The tenant always comes from the verified `Authorization` token.

use std::sync::Arc;

use crate::auth::{Identity, TokenVerifier};
use crate::error::ConfigError;
use crate::grants::{Access, ServiceGrants};
use crate::layers::platform::PlatformWrites;
use crate::ofrep::{OfrepRequest, OfrepService};
use crate::reads::ConfigReads;
use crate::rollouts::control::RolloutControl;
use crate::validate::ServiceName;
use crate::writes::ConfigWrites;

mod explain;
mod flush;
mod platform;
mod reads;
mod responses;
mod rollouts;
mod route;
mod writes;

pub use flush::DegradedAnswerFlush;
pub(crate) use responses::mark_stale;
pub use responses::{ApiResponse, STALE_HEADER, error_response};

pub use route::ROUTES;
pub(crate) use route::segments;
use route::{LayerAction, Route, route};

/// Largest request body a write accepts.
pub const MAX_BODY_BYTES: usize = 128 * 1024;

/// What the API needs from an HTTP request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    /// The `keys` query parameter: `None` when absent; `Some(Err)` when repeated.
    pub keys: Option<Result<&'a str, ()>>,
    /// The request body (writes only).
    pub body: Option<&'a str>,
    /// `If-Match`: the version the caller read (the `ETag` of its GET).
    pub if_match: Option<&'a str>,
    /// `If-None-Match`: `*` to create a key that must not exist yet.
    pub if_none_match: Option<&'a str>,
    /// `?dry_run=` and `?force=` of a shared change (`None` when absent,
    /// `Some(Err)` when repeated).
    pub dry_run: Option<Result<&'a str, ()>>,
    pub force: Option<Result<&'a str, ()>>,
}

pub struct ConfigApi {
    verifier: Arc<TokenVerifier>,
    reads: ConfigReads,
    degraded_flush: Option<DegradedAnswerFlush>,
    /// Absent: the write routes answer 405.
    writes: Option<ConfigWrites>,
    /// Absent: the platform routes (shared layers, registry) answer 405.
    platform: Option<PlatformWrites>,
    /// Which services each app client may read and write (absent: every
    /// service of the caller's tenant).
    grants: Option<Arc<ServiceGrants>>,
    /// Absent: the rollout routes answer 405.
    rollouts: Option<Arc<RolloutControl>>,
    /// The OFREP routes, on the same verifier, reads and grants.
    ofrep: OfrepService,
}

impl ConfigApi {
    pub fn new(verifier: Arc<TokenVerifier>, reads: ConfigReads) -> Self {
        Self {
            ofrep: OfrepService::new(Arc::clone(&verifier), reads.clone(), None),
            verifier,
            reads,
            degraded_flush: None,
            writes: None,
            platform: None,
            grants: None,
            rollouts: None,
        }
    }

    /// Serves the rollout routes to platform administrators.
    pub fn with_rollouts(mut self, control: Arc<RolloutControl>) -> Self {
        self.rollouts = Some(control);
        self
    }

    /// Serves each caller only the services its app client is granted, and
    /// SecureStrings only where granted explicitly.
    pub fn with_service_grants(mut self, grants: Arc<ServiceGrants>) -> Self {
        self.ofrep = OfrepService::new(
            Arc::clone(&self.verifier),
            self.reads.clone(),
            Some(Arc::clone(&grants)),
        );
        self.grants = Some(grants);
        self
    }

    /// 403 unless the caller's app client has `access` to `service`.
    async fn granted(
        &self,
        identity: &Identity,
        service: &ServiceName,
        access: Access,
    ) -> Result<(), ConfigError> {
        match &self.grants {
            Some(grants) => grants.check(identity, service, access).await,
            None => Ok(()),
        }
    }

    /// Serves the write routes (PUT, DELETE, history, rollback) to tenant
    /// administrators.
    pub fn with_writes(mut self, writes: ConfigWrites) -> Self {
        self.writes = Some(writes);
        self
    }

    /// Serves the platform routes (shared layers, tenant registry) to
    /// platform administrators.
    pub fn with_platform_writes(mut self, platform: PlatformWrites) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Flushes the stage cache after degraded answers on cacheable routes.
    pub fn with_degraded_answer_flush(mut self, flush: DegradedAnswerFlush) -> Self {
        self.degraded_flush = Some(flush);
        self
    }

    pub async fn handle(&self, request: &ApiRequest<'_>) -> ApiResponse {
        if crate::ofrep::route(request.path).is_some() {
            return self.ofrep(request).await;
        }
        let response = self.answer(request).await;
        let cacheable = matches!(
            route(request.path),
            Some(Route::One { .. } | Route::Batch { .. })
        ) && request.method == "GET";
        if let Some(flush) = &self.degraded_flush
            && cacheable
        {
            if response.status >= 500 {
                flush.degraded(&response.status.to_string()).await;
            } else if response
                .headers
                .iter()
                .any(|(name, _)| *name == STALE_HEADER)
            {
                flush.degraded("stale").await;
            }
        }
        response
    }

    /// An OFREP route: the query flags of other routes mean nothing here.
    async fn ofrep(&self, request: &ApiRequest<'_>) -> ApiResponse {
        if request.keys.is_some() || request.dry_run.is_some() || request.force.is_some() {
            return error_response(&ConfigError::BadRequest(
                "OFREP routes take no ?keys=, ?dry_run= or ?force=".to_owned(),
            ));
        }
        self.ofrep
            .handle(&OfrepRequest {
                method: request.method,
                path: request.path,
                authorization: request.authorization,
                body: request.body,
                if_none_match: request.if_none_match,
            })
            .await
    }

    async fn answer(&self, request: &ApiRequest<'_>) -> ApiResponse {
        match self.respond(request).await {
            Ok(response) => response,
            Err(ConfigError::MethodNotAllowed) => {
                let mut response = error_response(&ConfigError::MethodNotAllowed);
                if let Some(route) = route(request.path) {
                    response.headers.retain(|(name, _)| *name != "allow");
                    let on = match route {
                        Route::Layer { .. } | Route::Tenant { .. } => self.platform.is_some(),
                        Route::Rollouts | Route::Rollout { .. } | Route::RolloutAction { .. } => {
                            self.rollouts.is_some()
                        }
                        _ => self.writes.is_some(),
                    };
                    let methods = route.methods(on);
                    response.headers.push(("allow", methods.to_owned()));
                }
                response
            }
            Err(err) => {
                if err.status() >= 500 {
                    tracing::warn!(status = err.status(), error = %err, path = request.path, "request failed");
                } else {
                    tracing::info!(
                        status = err.status(),
                        code = err.code(),
                        path = request.path,
                        "request refused"
                    );
                }
                error_response(&err)
            }
        }
    }

    async fn respond(&self, request: &ApiRequest<'_>) -> Result<ApiResponse, ConfigError> {
        let route = route(request.path).ok_or(ConfigError::RouteNotFound)?;
        // A flag a route would ignore must not let a change land unweighed.
        let weighed = matches!(
            route,
            Route::Layer {
                action: LayerAction::Entry | LayerAction::Rollback | LayerAction::Guardrail,
                ..
            }
        ) && request.method != "GET";
        if (request.dry_run.is_some() || request.force.is_some()) && !weighed {
            return Err(ConfigError::BadRequest(
                "?dry_run= and ?force= apply to changes of a shared layer and its guardrails only \
                 (a registration or a tenant's own value is not weighed)"
                    .to_owned(),
            ));
        }
        if matches!(
            route,
            Route::Rollouts | Route::Rollout { .. } | Route::RolloutAction { .. }
        ) {
            let Some(control) = &self.rollouts else {
                return Err(ConfigError::MethodNotAllowed);
            };
            return self.rollouts(control, route, request).await;
        }
        if matches!(route, Route::Layer { .. } | Route::Tenant { .. }) {
            let Some(platform) = &self.platform else {
                return Err(ConfigError::MethodNotAllowed);
            };
            return self.platform(platform, route, request).await;
        }
        let write = match (&route, request.method) {
            (Route::One { .. }, "PUT" | "DELETE") | (Route::Rollback { .. }, "POST") => true,
            (Route::History { .. }, "GET") => true,
            (Route::Rollback { .. }, _) | (_, "PUT" | "DELETE" | "POST") => {
                return Err(ConfigError::MethodNotAllowed);
            }
            (_, "GET") => false,
            _ => return Err(ConfigError::MethodNotAllowed),
        };
        if write {
            let Some(writes) = &self.writes else {
                return Err(ConfigError::MethodNotAllowed);
            };
            return self.write(writes, route, request).await;
        }
        self.read(route, request).await
    }
}
