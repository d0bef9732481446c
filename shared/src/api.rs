//! The HTTP API, independent of the Lambda runtime so it is tested without AWS.
//!
//! Routes:
//! - `/v1/config/{service}/{key}`: one value (cacheable; SecureString → 409)
//! - `/v1/config/{service}?keys=k1,k2`: up to 50 values (cacheable)
//! - `/v1/config/{service}`: every key of the service (cacheable)
//! - `/v1/secure/{service}/{key}`: one value with decryption, never cached
//! - `PUT`/`DELETE /v1/config/{service}/{key}`, `GET .../history`,
//!   `POST .../rollback`: administrators only, with `If-Match`, never cached
//!
//! The tenant always comes from the verified `Authorization` token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::auth::TokenVerifier;
use crate::domain::ItemKey;
use crate::error::{AuthError, ConfigError};
use crate::metrics::{Counter, metrics};
use crate::reads::{ConfigReads, MAX_BATCH_KEYS};
use crate::refresh::stage_cache::FlushRequests;
use crate::validate::{ConfigKey, ServiceName};
use crate::write::{Expected, NewValue, ValueKind};
use crate::writes::{ConfigWrites, WriteOutcome};

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
}

/// Largest request body a write accepts.
pub const MAX_BODY_BYTES: usize = 128 * 1024;

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
    History { service: &'a str, key: &'a str },
    Rollback { service: &'a str, key: &'a str },
}

impl Route<'_> {
    /// The methods the route answers (the `Allow` header of a 405).
    fn methods(&self) -> &'static str {
        match self {
            Route::One { .. } => "GET, PUT, DELETE",
            Route::Batch { .. } | Route::Secure { .. } | Route::History { .. } => "GET",
            Route::Rollback { .. } => "POST",
        }
    }
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
        ["v1", "config", service, key, "history"] => Some(Route::History { service, key }),
        ["v1", "config", service, key, "rollback"] => Some(Route::Rollback { service, key }),
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
struct WrittenBody<'a> {
    service: &'a str,
    key: &'a str,
    source: &'static str,
    version: i64,
    previous_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_of: Option<i64>,
}

#[derive(Serialize)]
struct DeletedBody<'a> {
    service: &'a str,
    key: &'a str,
    deleted_version: i64,
}

#[derive(Serialize)]
struct HistoryBody<'a> {
    service: &'a str,
    key: &'a str,
    versions: Vec<VersionBody>,
}

#[derive(Serialize)]
struct VersionBody {
    version: i64,
    /// Absent for SecureStrings and deletions.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(rename = "type")]
    kind: &'static str,
    written_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_of: Option<i64>,
}

/// The body of a PUT.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: Value,
    /// `string` (default), `string-list` or `secure-string`.
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// The body of a rollback.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: i64,
}

fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Plain => "string",
        ValueKind::StringList => "string-list",
        ValueKind::Secret => "secure-string",
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Option<&str>,
    shape: &str,
) -> Result<T, ConfigError> {
    let body = body.unwrap_or_default();
    if body.len() > MAX_BODY_BYTES {
        return Err(ConfigError::BadRequest(format!(
            "a request body holds at most {MAX_BODY_BYTES} bytes"
        )));
    }
    serde_json::from_str(body)
        .map_err(|_| ConfigError::BadRequest(format!("the body must be JSON: {shape}")))
}

/// The version a write expects, from `If-Match` / `If-None-Match`.
fn expected(request: &ApiRequest<'_>, may_create: bool) -> Result<Expected, ConfigError> {
    match (request.if_match, request.if_none_match) {
        (Some(tag), _) => {
            let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
            tag.parse::<i64>().map(Expected::Version).map_err(|_| {
                ConfigError::BadRequest("If-Match must be a version (the ETag of a GET)".to_owned())
            })
        }
        (None, Some("*")) if may_create => Ok(Expected::Absent),
        _ => Err(ConfigError::BadRequest(if may_create {
            "send If-Match with the version you read (the ETag of a GET), or If-None-Match: * to create".to_owned()
        } else {
            "send If-Match with the version you read (the ETag of a GET)".to_owned()
        })),
    }
}

fn etag(version: i64) -> String {
    format!("\"{version}\"")
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
    /// Absent: the write routes answer 405.
    writes: Option<ConfigWrites>,
}

impl ConfigApi {
    pub fn new(verifier: Arc<TokenVerifier>, reads: ConfigReads) -> Self {
        Self {
            verifier,
            reads,
            degraded_flush: None,
            writes: None,
        }
    }

    /// Serves the write routes (PUT, DELETE, history, rollback) to tenant
    /// administrators.
    pub fn with_writes(mut self, writes: ConfigWrites) -> Self {
        self.writes = Some(writes);
        self
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
            Err(ConfigError::MethodNotAllowed) => {
                let mut response = error_response(&ConfigError::MethodNotAllowed);
                if let Some(route) = route(request.path) {
                    response.headers.retain(|(name, _)| *name != "allow");
                    response.headers.push(("allow", route.methods().to_owned()));
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
                let mut response = json_response(200, "private", &body);
                if let Some(version) = entry.value.version {
                    response.headers.push(("etag", etag(version)));
                }
                Ok(mark_stale(response, entry.stale))
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
                // One stage cache entry per set of keys, not per order: any
                // other spelling is sent to the sorted, deduplicated one.
                let canonical = canonical_keys(&keys);
                if request.keys != Some(Ok(canonical.as_str())) {
                    return Ok(redirect_to_canonical(&canonical));
                }
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
            // Write routes were answered above.
            Route::History { .. } | Route::Rollback { .. } => Err(ConfigError::MethodNotAllowed),
        }
    }
}

impl ConfigApi {
    /// PUT, DELETE, history and rollback: administrators of the token's
    /// tenant only; never cached, never echoing a value written.
    async fn write(
        &self,
        writes: &ConfigWrites,
        route: Route<'_>,
        request: &ApiRequest<'_>,
    ) -> Result<ApiResponse, ConfigError> {
        let identity = self.verifier.verify_header(request.authorization).await?;
        let (service, key) = match route {
            Route::One { service, key }
            | Route::History { service, key }
            | Route::Rollback { service, key } => (service, key),
            _ => return Err(ConfigError::RouteNotFound),
        };
        let (service, key) = (ServiceName::parse(service)?, ConfigKey::parse(key)?);
        let tenant = writes.authorize(&identity)?.clone();
        let item = ItemKey::new(tenant, service.clone(), key.clone());
        let written = |outcome: WriteOutcome, status: u16, rollback_of: Option<i64>| {
            let mut response = json_response(
                status,
                "no-store",
                &WrittenBody {
                    service: service.as_str(),
                    key: key.as_str(),
                    source: outcome.source.as_str(),
                    version: outcome.written.version,
                    previous_version: outcome.written.previous,
                    rollback_of,
                },
            );
            response
                .headers
                .push(("etag", etag(outcome.written.version)));
            response
        };
        match (request.method, route) {
            ("PUT", _) => {
                let expected = expected(request, true)?;
                let body: PutBody = parse_body(
                    request.body,
                    r#"{"value": <JSON>, "type": "string" | "string-list" | "secure-string"}"#,
                )?;
                let kind = match body.kind.as_deref() {
                    None | Some("string") => ValueKind::Plain,
                    Some("string-list") => ValueKind::StringList,
                    Some("secure-string") => ValueKind::Secret,
                    Some(_) => {
                        return Err(ConfigError::BadRequest(
                            "type is string, string-list or secure-string".to_owned(),
                        ));
                    }
                };
                let value = NewValue::json(&body.value, kind)?;
                let outcome = writes
                    .put(&identity, &service, &key, &value, expected)
                    .await?;
                // This container serves its own write at once; others by the change feed.
                let _ = self.reads.invalidate(&item, false).await;
                let status = if expected == Expected::Absent {
                    201
                } else {
                    200
                };
                Ok(written(outcome, status, None))
            }
            ("DELETE", _) => {
                let expected = expected(request, false)?;
                let deleted = writes.delete(&identity, &service, &key, expected).await?;
                let _ = self.reads.invalidate(&item, true).await;
                Ok(json_response(
                    200,
                    "no-store",
                    &DeletedBody {
                        service: service.as_str(),
                        key: key.as_str(),
                        deleted_version: deleted,
                    },
                ))
            }
            ("POST", Route::Rollback { .. }) => {
                let expected = expected(request, false)?;
                let body: RollbackBody = parse_body(request.body, r#"{"version": <number>}"#)?;
                let outcome = writes
                    .rollback(&identity, &service, &key, body.version, expected)
                    .await?;
                let _ = self.reads.invalidate(&item, false).await;
                Ok(written(outcome, 200, Some(body.version)))
            }
            ("GET", Route::History { .. }) => {
                let versions = writes.history(&identity, &service, &key).await?;
                Ok(json_response(
                    200,
                    "no-store",
                    &HistoryBody {
                        service: service.as_str(),
                        key: key.as_str(),
                        versions: versions
                            .into_iter()
                            .map(|v| VersionBody {
                                version: v.version,
                                value: v.value,
                                kind: kind_name(v.kind),
                                written_at_ms: v.written_at_ms,
                                actor: v.actor,
                                deleted: v.deleted,
                                rollback_of: v.rollback_of,
                            })
                            .collect(),
                    },
                ))
            }
            _ => Err(ConfigError::MethodNotAllowed),
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

/// The batch route's one spelling of a set of keys: sorted, each once.
fn canonical_keys(keys: &[ConfigKey]) -> String {
    let mut names: Vec<&str> = keys.iter().map(ConfigKey::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

/// `308` to the same path with the canonical `keys` (a query-only relative
/// reference, so it resolves under whatever prefix the caller used). API
/// Gateway caches the redirect under the caller's spelling, so a repeated
/// spelling costs no invocation, and the values are cached once per set.
fn redirect_to_canonical(canonical: &str) -> ApiResponse {
    let location = format!("?keys={canonical}");
    let mut response = json_response(
        308,
        "private",
        &json!({
            "message": "keys are served in their canonical spelling: sorted, each once",
            "location": location,
        }),
    );
    response.headers.push(("location", location));
    response
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
    if let ConfigError::VersionConflict { current } = err {
        body.insert("current_version".into(), (*current).into());
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
    fn a_set_of_keys_has_one_spelling_and_others_are_redirected_to_it() {
        let keys =
            parse_keys(Some(Ok("tenant_config_b, tenant_config_a,tenant_config_b"))).unwrap();
        let canonical = canonical_keys(&keys);
        assert_eq!(canonical, "tenant_config_a,tenant_config_b");
        let redirect = redirect_to_canonical(&canonical);
        assert_eq!(redirect.status, 308);
        assert!(redirect.headers.contains(&(
            "location",
            "?keys=tenant_config_a,tenant_config_b".to_owned()
        )));
        let body: Value = serde_json::from_str(&redirect.body).unwrap();
        assert_eq!(body["location"], "?keys=tenant_config_a,tenant_config_b");
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
