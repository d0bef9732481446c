//! The HTTP API, independent of the Lambda runtime so it is tested without AWS.
//!
//! Routes (GET only):
//! - `/v1/config/{service}/{key}`: one value (cacheable; SecureString → 409)
//! - `/v1/config/{service}?keys=k1,k2`: up to 50 values (cacheable)
//! - `/v1/config/{service}`: every key of the service (cacheable)
//! - `/v1/secure/{service}/{key}`: one value with decryption, never cached
//!
//! The tenant always comes from the verified `Authorization` token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::TokenVerifier;
use crate::error::{AuthError, ConfigError};
use crate::metrics::{Counter, metrics};
use crate::reads::{ConfigReads, MAX_BATCH_KEYS};
use crate::refresh::stage_cache::FlushRequests;
use crate::validate::{ConfigKey, ServiceName};

/// What the API needs from an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    /// The `keys` query parameter: `None` when absent; `Some(Err)` when repeated.
    pub keys: Option<Result<&'a str, ()>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    One { service: &'a str, key: &'a str },
    Batch { service: &'a str },
    Secure { service: &'a str, key: &'a str },
}

/// Matches a path. A leading stage segment (`/prod/v1/...`, as API Gateway
/// passes it on some integrations) is tolerated.
fn route(path: &str) -> Option<Route<'_>> {
    let mut segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.first() != Some(&"v1") && segments.get(1) == Some(&"v1") {
        segments.remove(0);
    }
    match segments.as_slice() {
        ["v1", "config", service, key] => Some(Route::One { service, key }),
        ["v1", "config", service] => Some(Route::Batch { service }),
        ["v1", "secure", service, key] => Some(Route::Secure { service, key }),
        _ => None,
    }
}

#[derive(Serialize)]
struct OneBody<'a> {
    service: &'a str,
    key: &'a str,
    value: &'a Value,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    /// Present only when the store failed and this is its last good value.
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<Stale>,
}

#[derive(Serialize)]
struct ServiceBody<'a> {
    service: &'a str,
    values: Map<String, Value>,
    /// SecureStrings of the service, by name: read them on the secure route.
    sensitive: Vec<&'a str>,
    /// A store holds more than the documented bound; the rest by `?keys=`.
    truncated: bool,
}

#[derive(Serialize)]
struct Stale {
    age_ms: u64,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    service: &'a str,
    values: Map<String, Value>,
    missing: Vec<&'a str>,
    /// Keys answered with their last good value because their store failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale: Vec<&'a str>,
}

/// Header that marks a stale answer: the age in milliseconds of its oldest value.
pub const STALE_HEADER: &str = "x-config-stale-age-ms";

/// Asks for the API Gateway stage cache to be flushed when a cacheable route
/// answered degraded (stale or 5xx): the stage cache ignores the integration's
/// `Cache-Control` and would replay that answer for its whole TTL. At most one
/// request per `min_interval` per container; the queue's batching window
/// turns all containers' requests into one flush.
pub struct DegradedAnswerFlush {
    requests: Arc<dyn FlushRequests>,
    min_interval: Duration,
    last_sent: Mutex<Option<Instant>>,
}

/// Longest a flush request may hold up the answer that caused it.
const FLUSH_REQUEST_DEADLINE: Duration = Duration::from_millis(300);

impl DegradedAnswerFlush {
    pub fn new(requests: Arc<dyn FlushRequests>, min_interval: Duration) -> Self {
        Self {
            requests,
            min_interval,
            last_sent: Mutex::new(None),
        }
    }

    async fn degraded(&self, reason: &str) {
        {
            let Ok(mut last_sent) = self.last_sent.lock() else {
                return;
            };
            if last_sent.is_some_and(|at| at.elapsed() < self.min_interval) {
                return;
            }
            *last_sent = Some(Instant::now());
        }
        metrics().count(Counter::StageFlushRequests);
        let reason = [format!("degraded:{reason}")];
        match tokio::time::timeout(FLUSH_REQUEST_DEADLINE, self.requests.request(&reason)).await {
            Ok(Ok(())) => tracing::info!(reason = %reason[0], "asked for a stage cache flush"),
            Ok(Err(err)) => tracing::warn!(error = %err, "could not ask for a stage cache flush"),
            Err(_) => tracing::warn!("stage cache flush request timed out"),
        }
    }
}

pub struct ConfigApi {
    verifier: Arc<TokenVerifier>,
    reads: ConfigReads,
    degraded_flush: Option<DegradedAnswerFlush>,
}

impl ConfigApi {
    pub fn new(verifier: Arc<TokenVerifier>, reads: ConfigReads) -> Self {
        Self {
            verifier,
            reads,
            degraded_flush: None,
        }
    }

    /// Flushes the stage cache after degraded answers on cacheable routes.
    pub fn with_degraded_answer_flush(mut self, flush: DegradedAnswerFlush) -> Self {
        self.degraded_flush = Some(flush);
        self
    }

    pub async fn handle(&self, request: &ApiRequest<'_>) -> ApiResponse {
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

    async fn answer(&self, request: &ApiRequest<'_>) -> ApiResponse {
        match self.respond(request).await {
            Ok(response) => response,
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
        if request.method != "GET" {
            return Err(ConfigError::MethodNotAllowed);
        }
        let identity = self.verifier.verify_header(request.authorization).await?;
        let tenant = identity.require_tenant()?;
        match route {
            Route::One { service, key } => {
                let (service, key) = (ServiceName::parse(service)?, ConfigKey::parse(key)?);
                let entry = self.reads.get(tenant, &service, &key).await?;
                let stale = entry.stale.map(|age| Stale {
                    age_ms: age.as_millis() as u64,
                });
                let body = OneBody {
                    service: service.as_str(),
                    key: key.as_str(),
                    value: &entry.value.value,
                    source: entry.source.as_str(),
                    version: entry.value.version,
                    stale,
                };
                Ok(mark_stale(
                    json_response(200, "private", &body),
                    entry.stale,
                ))
            }
            Route::Secure { service, key } => {
                let (service, key) = (ServiceName::parse(service)?, ConfigKey::parse(key)?);
                let entry = self.reads.get_secure(tenant, &service, &key).await?;
                Ok(json_response(
                    200,
                    "no-store",
                    &OneBody {
                        service: service.as_str(),
                        key: key.as_str(),
                        value: entry.value.expose(),
                        source: entry.source.as_str(),
                        version: entry.value.version,
                        stale: None,
                    },
                ))
            }
            Route::Batch { service } if request.keys.is_none() => {
                let service = ServiceName::parse(service)?;
                let config = self.reads.get_service(tenant, &service).await?;
                let values = config
                    .values
                    .iter()
                    .map(|(key, entry)| (key.to_string(), entry.value.value.clone()))
                    .collect();
                Ok(json_response(
                    200,
                    "private",
                    &ServiceBody {
                        service: service.as_str(),
                        values,
                        sensitive: config.sensitive.iter().map(ConfigKey::as_str).collect(),
                        truncated: config.truncated,
                    },
                ))
            }
            Route::Batch { service } => {
                let service = ServiceName::parse(service)?;
                let keys = parse_keys(request.keys)?;
                let batch = self.reads.get_many(tenant, &service, &keys).await?;
                let values = batch
                    .values
                    .iter()
                    .map(|(key, entry)| (key.to_string(), entry.value.value.clone()))
                    .collect();
                let oldest = batch.values.iter().filter_map(|(_, e)| e.stale).max();
                let body = BatchBody {
                    service: service.as_str(),
                    values,
                    missing: batch.missing.iter().map(ConfigKey::as_str).collect(),
                    stale: batch
                        .values
                        .iter()
                        .filter(|(_, e)| e.stale.is_some())
                        .map(|(k, _)| k.as_str())
                        .collect(),
                };
                Ok(mark_stale(json_response(200, "private", &body), oldest))
            }
        }
    }
}

fn parse_keys(raw: Option<Result<&str, ()>>) -> Result<Vec<ConfigKey>, ConfigError> {
    let raw = match raw {
        // The whole-service route takes requests without `keys`.
        None => return Err(ConfigError::BadRequest("name at least one key".to_owned())),
        Some(Err(())) => {
            return Err(ConfigError::BadRequest(
                "give 'keys' once, as a comma-separated list".to_owned(),
            ));
        }
        Some(Ok(raw)) => raw,
    };
    // Count before parsing so a huge list costs nothing.
    if raw.split(',').count() > MAX_BATCH_KEYS {
        return Err(ConfigError::BadRequest(format!(
            "at most {MAX_BATCH_KEYS} keys per request"
        )));
    }
    raw.split(',').map(|k| ConfigKey::parse(k.trim())).collect()
}

/// Marks an answer built from last good values: a header with the age of its
/// oldest value, the standard `Warning: 110`, and `no-store` so no client
/// cache keeps it.
fn mark_stale(mut response: ApiResponse, oldest: Option<Duration>) -> ApiResponse {
    if let Some(age) = oldest {
        response
            .headers
            .retain(|(name, _)| *name != "cache-control");
        response.headers.extend([
            ("cache-control", "no-store".to_owned()),
            (STALE_HEADER, age.as_millis().to_string()),
            ("warning", "110 - \"Response is Stale\"".to_owned()),
        ]);
    }
    response
}

fn json_response(status: u16, cache_control: &'static str, body: &impl Serialize) -> ApiResponse {
    // Serializing plain JSON values into a String cannot fail.
    let body = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    ApiResponse {
        status,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", cache_control.to_owned()),
        ],
        body,
    }
}

/// The one place an error becomes an HTTP response.
pub fn error_response(err: &ConfigError) -> ApiResponse {
    let mut body = Map::new();
    body.insert("error".into(), err.code().into());
    body.insert("message".into(), err.public_message().into());
    if let ConfigError::SensitiveValue { keys } = err {
        body.insert("keys".into(), keys.clone().into());
        body.insert("secure_route".into(), "/v1/secure/{service}/{key}".into());
    }
    let mut response = json_response(err.status(), "no-store", &body);
    match err {
        ConfigError::Unauthenticated(AuthError::Missing) => {
            response
                .headers
                .push(("www-authenticate", "Bearer".to_owned()));
        }
        ConfigError::Unauthenticated(reason) => response.headers.push((
            "www-authenticate",
            format!("Bearer error=\"invalid_token\", error_description=\"{reason}\""),
        )),
        ConfigError::MethodNotAllowed => response.headers.push(("allow", "GET".to_owned())),
        _ => {}
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_the_documented_paths() {
        assert_eq!(
            route("/v1/config/billing/tenant_config_x"),
            Some(Route::One {
                service: "billing",
                key: "tenant_config_x"
            })
        );
        assert_eq!(
            route("/v1/config/billing"),
            Some(Route::Batch { service: "billing" })
        );
        assert_eq!(
            route("/v1/config/billing/"),
            Some(Route::Batch { service: "billing" })
        );
        assert_eq!(
            route("/prod/v1/secure/billing/param_config_pw"),
            Some(Route::Secure {
                service: "billing",
                key: "param_config_pw"
            })
        );
        for unknown in [
            "/",
            "/v1",
            "/v1/config",
            "/v2/config/a/b",
            "/v1/config/a/b/c",
            "/v1/secure/a",
        ] {
            assert_eq!(route(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn keys_query_is_single_and_bounded() {
        assert_eq!(parse_keys(Some(Err(()))).unwrap_err().status(), 400);
        let too_many = vec!["tenant_config_k"; MAX_BATCH_KEYS + 1].join(",");
        assert_eq!(parse_keys(Some(Ok(&too_many))).unwrap_err().status(), 400);
        assert_eq!(parse_keys(Some(Ok("a,,b"))).unwrap_err().status(), 400);
        assert_eq!(parse_keys(Some(Ok("a, b"))).unwrap().len(), 2);
    }

    #[test]
    fn errors_are_json_with_code_message_and_auth_challenge() {
        let response = error_response(&AuthError::Expired.into());
        assert_eq!(response.status, 401);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["message"], "token has expired");
        assert!(
            response
                .headers
                .iter()
                .any(|(n, v)| *n == "www-authenticate" && v.starts_with("Bearer"))
        );

        let sensitive = error_response(&ConfigError::SensitiveValue {
            keys: vec!["param_config_pw".into()],
        });
        assert_eq!(sensitive.status, 409);
        let body: Value = serde_json::from_str(&sensitive.body).unwrap();
        assert_eq!(body["keys"][0], "param_config_pw");
        assert!(
            sensitive
                .headers
                .contains(&("cache-control", "no-store".to_owned()))
        );
    }
}
