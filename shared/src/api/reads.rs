//! The read routes: one value, a batch, a whole service, one secret. The
//! tenant comes from the verified token; cacheable answers are `private`.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::responses::{etag, json_response, mark_stale};
use super::route::Route;
use super::{ApiRequest, ApiResponse, ConfigApi};
use crate::error::ConfigError;
use crate::grants::Access;
use crate::reads::MAX_BATCH_KEYS;
use crate::secret_reads::{Via, read_secret};
use crate::validate::{ConfigKey, ServiceName};

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

impl ConfigApi {
    /// GET on a read route (writes were told apart before).
    pub(super) async fn read(
        &self,
        route: Route<'_>,
        request: &ApiRequest<'_>,
    ) -> Result<ApiResponse, ConfigError> {
        let identity = self.verifier.verify_header(request.authorization).await?;
        let tenant = identity.require_tenant()?;
        match route {
            Route::Explain { service, key } => self.explain(&identity, service, key).await,
            Route::One { service, key } => {
                let (service, key) = (ServiceName::parse(service)?, ConfigKey::parse(key)?);
                self.granted(&identity, &service, Access::Plain).await?;
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
                let entry = read_secret(
                    &self.reads,
                    self.grants.as_deref(),
                    &identity,
                    &service,
                    &key,
                    Via::Api,
                )
                .await?;
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
                self.granted(&identity, &service, Access::Plain).await?;
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
                self.granted(&identity, &service, Access::Plain).await?;
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
            Route::History { .. }
            | Route::Rollback { .. }
            | Route::Layer { .. }
            | Route::Tenant { .. }
            | Route::Rollouts
            | Route::Rollout { .. }
            | Route::RolloutAction { .. } => Err(ConfigError::MethodNotAllowed),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
