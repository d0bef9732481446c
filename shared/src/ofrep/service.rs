//! OFREP's routes over our reads, free of any transport: config-api serves
//! them behind API Gateway, the agent on its loopback reader listener.
//!
//! Under a service's base URL, `{base} = /v1/services/{service}`:
//! - `POST {base}/ofrep/v1/evaluate/flags/{key}`: one flag
//! - `POST {base}/ofrep/v1/evaluate/flags`: every flag of the service, with
//!   an `ETag`; `If-None-Match` with it answers 304
//! - `GET {base}/ofrep/v1/configuration`: what this server supports
//!
//! One OpenFeature client is configured with one service's base URL, so its
//! flag keys are the service's keys. The tenant comes from the verified
//! bearer token only, as on every route; the evaluation context is checked
//! for shape and never read for a tenant.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{ErrorCode, Evaluation, EvaluationError, Resolution, bulk_etag, not_modified};
use crate::api::{ApiResponse, error_response, mark_stale};
use crate::auth::{Identity, TokenVerifier};
use crate::error::ConfigError;
use crate::grants::{Access, ServiceGrants};
use crate::reads::ConfigReads;
use crate::validate::{ConfigKey, ServiceName, TenantId};

/// The OFREP routes API Gateway must pass to config-api (part of
/// [`crate::api::ROUTES`]).
pub const ROUTES: [(&str, &str); 3] = [
    (
        "POST",
        "/v1/services/{service}/ofrep/v1/evaluate/flags/{key}",
    ),
    ("POST", "/v1/services/{service}/ofrep/v1/evaluate/flags"),
    ("GET", "/v1/services/{service}/ofrep/v1/configuration"),
];

/// The shortest poll a client should make of a bulk evaluation: a change
/// reaches every reader within about a second (bench/RESULTS.md), so
/// polling faster only spends requests.
pub const MIN_POLLING_INTERVAL_MS: u64 = 1_000;

/// What an OFREP route needs from an HTTP request.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfrepRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub body: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

/// Which OFREP route a path names (names unchecked: validated by the handler).
#[derive(Debug, PartialEq, Eq)]
pub enum OfrepRoute<'a> {
    Flag { service: &'a str, key: &'a str },
    Flags { service: &'a str },
    Configuration { service: &'a str },
}

impl OfrepRoute<'_> {
    fn method(&self) -> &'static str {
        match self {
            OfrepRoute::Flag { .. } | OfrepRoute::Flags { .. } => "POST",
            OfrepRoute::Configuration { .. } => "GET",
        }
    }
}

/// Matches an OFREP path under a service's base URL. A leading stage
/// segment (`/prod/v1/...`) is tolerated, as on every route.
pub fn route(path: &str) -> Option<OfrepRoute<'_>> {
    // Every request to config-api asks this first: the other routes pass
    // without splitting the path.
    if !path.contains("/ofrep/v1/") {
        return None;
    }
    match crate::api::segments(path).as_slice() {
        [
            "v1",
            "services",
            service,
            "ofrep",
            "v1",
            "evaluate",
            "flags",
            key,
        ] => Some(OfrepRoute::Flag { service, key }),
        [
            "v1",
            "services",
            service,
            "ofrep",
            "v1",
            "evaluate",
            "flags",
        ] => Some(OfrepRoute::Flags { service }),
        ["v1", "services", service, "ofrep", "v1", "configuration"] => {
            Some(OfrepRoute::Configuration { service })
        }
        _ => None,
    }
}

/// Serves the OFREP routes with the same token rules, grants and caches as
/// every other read.
#[derive(Clone)]
pub struct OfrepService {
    verifier: Arc<TokenVerifier>,
    reads: ConfigReads,
    grants: Option<Arc<ServiceGrants>>,
}

#[derive(Serialize)]
struct BulkBody {
    flags: Vec<Evaluation>,
    /// The flag set's metadata: the service, and whether a store held more
    /// keys than one listing returns (read the rest one by one).
    metadata: Map<String, Value>,
}

impl OfrepService {
    pub fn new(
        verifier: Arc<TokenVerifier>,
        reads: ConfigReads,
        grants: Option<Arc<ServiceGrants>>,
    ) -> Self {
        Self {
            verifier,
            reads,
            grants,
        }
    }

    /// Answers a request whose path [`route`] matched; any other path is 404.
    pub async fn handle(&self, request: &OfrepRequest<'_>) -> ApiResponse {
        let Some(route) = route(request.path) else {
            return refusal(&ConfigError::RouteNotFound, None, None);
        };
        let key = match route {
            OfrepRoute::Flag { key, .. } => Some(key),
            _ => None,
        };
        if request.method != route.method() {
            let mut response = refusal(&ConfigError::MethodNotAllowed, key, None);
            response.headers.retain(|(name, _)| *name != "allow");
            response.headers.push(("allow", route.method().to_owned()));
            return response;
        }
        let answer = match route {
            OfrepRoute::Flag { service, key } => self.flag(request, service, key).await,
            OfrepRoute::Flags { service } => self.flags(request, service).await,
            OfrepRoute::Configuration { service } => self.configuration(request, service).await,
        };
        answer.unwrap_or_else(|Refusal { err, ofrep }| {
            if err.status() >= 500 {
                tracing::warn!(status = err.status(), error = %err, path = request.path, "OFREP evaluation failed");
            } else {
                tracing::info!(status = err.status(), code = err.code(), path = request.path, "OFREP evaluation refused");
            }
            refusal(
                &err,
                key,
                ofrep.as_ref().map(|(code, details)| (*code, details.as_str())),
            )
        })
    }

    /// The caller's tenant and the service, once its token is verified and
    /// its app client may read the service.
    async fn caller(
        &self,
        request: &OfrepRequest<'_>,
        service: &str,
    ) -> Result<(Arc<Identity>, TenantId, ServiceName), Refusal> {
        let identity = self.verifier.verify_header(request.authorization).await?;
        let tenant = identity.require_tenant()?.clone();
        let service = ServiceName::parse(service)?;
        if let Some(grants) = &self.grants {
            grants.check(&identity, &service, Access::Plain).await?;
        }
        Ok((identity, tenant, service))
    }

    async fn flag(
        &self,
        request: &OfrepRequest<'_>,
        service: &str,
        key: &str,
    ) -> Result<ApiResponse, Refusal> {
        let (_, tenant, service) = self.caller(request, service).await?;
        context(request)?;
        let key = ConfigKey::parse(key)?;
        let resolved = match self.reads.resolve(&tenant, &service, &key).await {
            // A SecureString is no flag: it is served by the secure route
            // only, never evaluated, and a bulk evaluation leaves it out.
            Err(ConfigError::SensitiveValue { .. }) => {
                return Err(Refusal {
                    err: ConfigError::NotFound {
                        service: service.to_string(),
                        key: key.to_string(),
                    },
                    ofrep: Some((
                        ErrorCode::FlagNotFound,
                        format!(
                            "{key} is a SecureString: secrets are not flags; read it on \
                             /v1/secure/{service}/{key}"
                        ),
                    )),
                });
            }
            other => other?,
        };
        let evaluation = Evaluation::new(key.as_str(), &Resolution::from(&resolved));
        Ok(mark_stale(json(200, &evaluation), resolved.entry.stale))
    }

    async fn flags(
        &self,
        request: &OfrepRequest<'_>,
        service: &str,
    ) -> Result<ApiResponse, Refusal> {
        let (_, tenant, service) = self.caller(request, service).await?;
        context(request)?;
        let resolved = self.reads.resolve_service(&tenant, &service).await?;
        let oldest = resolved
            .flags
            .iter()
            .filter_map(|(_, flag)| flag.entry.stale)
            .max();
        let flags: Vec<Evaluation> = resolved
            .flags
            .iter()
            .map(|(key, flag)| Evaluation::new(key.as_str(), &Resolution::from(flag)))
            .collect();
        let etag = bulk_etag(&flags, resolved.truncated);
        if oldest.is_none() && not_modified(request.if_none_match, &etag) {
            return Ok(ApiResponse {
                status: 304,
                headers: vec![
                    ("etag", etag),
                    ("cache-control", "private, no-cache".to_owned()),
                ],
                body: String::new(),
            });
        }
        let mut metadata = Map::new();
        metadata.insert("service".into(), Value::from(service.as_str()));
        metadata.insert("truncated".into(), Value::from(resolved.truncated));
        let mut response = json(200, &BulkBody { flags, metadata });
        response.headers.push(("etag", etag));
        Ok(mark_stale(response, oldest))
    }

    async fn configuration(
        &self,
        request: &OfrepRequest<'_>,
        service: &str,
    ) -> Result<ApiResponse, Refusal> {
        self.caller(request, service).await?;
        Ok(json(
            200,
            &json!({
                "name": "tenant-config",
                "capabilities": {
                    "cacheInvalidation": {
                        "polling": {
                            "enabled": true,
                            "minPollingIntervalMs": MIN_POLLING_INTERVAL_MS
                        }
                    },
                    "flagEvaluation": {
                        "supportedTypes": ["boolean", "string", "int", "float", "object"]
                    }
                }
            }),
        ))
    }
}

/// A refused evaluation: the error (its status and headers), and the OFREP
/// code and details when they are not the error's own.
struct Refusal {
    err: ConfigError,
    ofrep: Option<(ErrorCode, String)>,
}

impl From<ConfigError> for Refusal {
    fn from(err: ConfigError) -> Self {
        Self { err, ofrep: None }
    }
}

/// The request's evaluation context, checked for shape only.
fn context(request: &OfrepRequest<'_>) -> Result<(), Refusal> {
    super::parse_context(request.body)
        .map(drop)
        .map_err(|(code, details)| Refusal {
            err: ConfigError::BadRequest(details.clone()),
            ofrep: Some((code, details)),
        })
}

/// OFREP's code for one of our errors.
fn error_code(err: &ConfigError) -> ErrorCode {
    match err {
        ConfigError::NotFound { .. } => ErrorCode::FlagNotFound,
        _ => ErrorCode::General,
    }
}

/// An error as OFREP answers it: the status and headers of our one error
/// mapping (`WWW-Authenticate`, `Retry-After`), OFREP's body with `ofrep`'s
/// code and details, or the error's own.
pub fn refusal(
    err: &ConfigError,
    key: Option<&str>,
    ofrep: Option<(ErrorCode, &str)>,
) -> ApiResponse {
    let mut response = error_response(err);
    let body = match ofrep {
        Some((code, details)) => EvaluationError::new(key, code, details),
        None => EvaluationError::new(key, error_code(err), err.public_message()),
    };
    response.body = serde_json::to_string(&body).unwrap_or_default();
    response
}

fn json(status: u16, body: &impl Serialize) -> ApiResponse {
    ApiResponse {
        status,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            // The caller's own values: no shared cache keeps them, and a
            // client revalidates (a bulk answer with its ETag).
            ("cache-control", "private, no-cache".to_owned()),
        ],
        body: serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ofrep_paths_sit_under_a_services_base_url() {
        assert_eq!(
            route("/v1/services/billing/ofrep/v1/evaluate/flags/tenant_config_beta"),
            Some(OfrepRoute::Flag {
                service: "billing",
                key: "tenant_config_beta"
            })
        );
        assert_eq!(
            route("/prod/v1/services/billing/ofrep/v1/evaluate/flags"),
            Some(OfrepRoute::Flags { service: "billing" })
        );
        assert_eq!(
            route("/v1/services/billing/ofrep/v1/configuration"),
            Some(OfrepRoute::Configuration { service: "billing" })
        );
        for other in [
            "/v1/services/billing",
            "/v1/services/billing/ofrep/v1/evaluate",
            "/v1/services/billing/ofrep/v2/evaluate/flags",
            "/v1/services/billing/ofrep/v1/evaluate/flags/a/b",
            "/v1/config/billing/tenant_config_beta",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }

    #[test]
    fn every_ofrep_route_is_one_api_gateway_must_pass() {
        for (method, path) in ROUTES {
            assert!(
                crate::api::ROUTES.contains(&(method, path)),
                "{method} {path}"
            );
            let matched = route(path).expect(path);
            assert_eq!(matched.method(), method);
        }
    }

    #[test]
    fn errors_keep_their_status_and_headers_with_an_ofrep_body() {
        let missing = refusal(
            &ConfigError::NotFound {
                service: "billing".into(),
                key: "tenant_config_x".into(),
            },
            Some("tenant_config_x"),
            None,
        );
        assert_eq!(missing.status, 404);
        let body: Value = serde_json::from_str(&missing.body).unwrap();
        assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
        assert_eq!(body["key"], "tenant_config_x");
        let unauthenticated = refusal(&crate::error::AuthError::Expired.into(), Some("k"), None);
        assert_eq!(unauthenticated.status, 401);
        assert!(
            unauthenticated
                .headers
                .iter()
                .any(|(name, _)| *name == "www-authenticate")
        );
        let body: Value = serde_json::from_str(&unauthenticated.body).unwrap();
        assert_eq!(body["errorCode"], "GENERAL");
    }
}
