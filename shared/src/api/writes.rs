//! The write routes: PUT, DELETE, history and rollback, for administrators
//! of the token's tenant, with `If-Match`, never cached.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::responses::{etag, json_response};
use super::route::Route;
use super::{ApiRequest, ApiResponse, ConfigApi, MAX_BODY_BYTES};
use crate::domain::{Changed, ItemKey, StoreKind};
use crate::error::ConfigError;
use crate::grants::Access;
use crate::validate::{ConfigKey, ServiceName};
use crate::write::{Expected, NewValue, ValueKind};
use crate::writes::{ConfigWrites, WriteOutcome};

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
pub(super) struct VersionBody {
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

impl From<crate::write::VersionRecord> for VersionBody {
    fn from(v: crate::write::VersionRecord) -> Self {
        VersionBody {
            version: v.version,
            value: v.value,
            kind: kind_name(v.kind),
            written_at_ms: v.written_at_ms,
            actor: v.actor,
            deleted: v.deleted,
            rollback_of: v.rollback_of,
        }
    }
}

/// The body of a PUT.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutBody {
    pub(super) value: Value,
    /// `string` (default), `string-list` or `secure-string`.
    #[serde(rename = "type", default)]
    pub(super) kind: Option<String>,
}

impl PutBody {
    pub(super) const SHAPE: &'static str =
        r#"{"value": <JSON>, "type": "string" | "string-list" | "secure-string"}"#;

    pub(super) fn value_kind(&self) -> Result<ValueKind, ConfigError> {
        match self.kind.as_deref() {
            None | Some("string") => Ok(ValueKind::Plain),
            Some("string-list") => Ok(ValueKind::StringList),
            Some("secure-string") => Ok(ValueKind::Secret),
            Some(_) => Err(ConfigError::BadRequest(
                "type is string, string-list or secure-string".to_owned(),
            )),
        }
    }
}

/// The body of a rollback.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    pub(super) version: i64,
}

pub(super) fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Plain => "string",
        ValueKind::StringList => "string-list",
        ValueKind::Secret => "secure-string",
    }
}

pub(super) fn parse_body<T: for<'de> Deserialize<'de>>(
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
pub(super) fn expected(
    request: &ApiRequest<'_>,
    may_create: bool,
) -> Result<Expected, ConfigError> {
    match (request.if_match, request.if_none_match) {
        (Some(tag), _) => {
            let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
            // A version is at least 1, and the next one must fit too.
            match tag.parse::<i64>() {
                Ok(version) if (1..i64::MAX).contains(&version) => Ok(Expected::Version(version)),
                _ => Err(ConfigError::BadRequest(
                    "If-Match must be a version (the ETag of a GET)".to_owned(),
                )),
            }
        }
        (None, Some("*")) if may_create => Ok(Expected::Absent),
        _ => Err(ConfigError::BadRequest(if may_create {
            "send If-Match with the version you read (the ETag of a GET), or If-None-Match: * to create".to_owned()
        } else {
            "send If-Match with the version you read (the ETag of a GET)".to_owned()
        })),
    }
}

impl ConfigApi {
    /// PUT, DELETE, history and rollback: administrators of the token's
    /// tenant only; never cached, never echoing a value written.
    pub(super) async fn write(
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
        let tenant = writes.authorize(&identity).await?.clone();
        self.granted(&identity, &service, Access::Plain).await?;
        // A client not granted the service's SecureStrings may not overwrite,
        // delete or roll back one either (it could destroy a secret it may
        // not read); asked of the store only for such clients.
        let may_change_secrets = match &self.grants {
            None => true,
            Some(grants) => grants.allows(&identity, &service, Access::Secure).await?,
        };
        let reads_history = request.method == "GET" && matches!(route, Route::History { .. });
        if !(may_change_secrets || reads_history)
            && writes.holds_secret(&tenant, &service, &key).await?
        {
            tracing::info!(client = %identity.client_id, %service, "write to a SecureString refused: its SecureStrings are not granted");
            return Err(ConfigError::ServiceNotGranted);
        }
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
                let body: PutBody = parse_body(request.body, PutBody::SHAPE)?;
                let kind = body.value_kind()?;
                if kind == ValueKind::Secret {
                    self.granted(&identity, &service, Access::Secure).await?;
                }
                let value = NewValue::json(&body.value, kind)?;
                let outcome = writes
                    .put(&identity, &service, &key, &value, expected)
                    .await?;
                // This container serves its own write at once; others by the change feed.
                let _ = self
                    .reads
                    .invalidate(&item, Changed::Updated(Some(value.kind)))
                    .await;
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
                let _ = self.reads.invalidate(&item, Changed::Deleted).await;
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
                // A rollback restores the old version's type too (a String
                // may come back as a SecureString), which is not known here:
                // in Parameter Store the last good value goes as for a delete.
                let change = match outcome.source {
                    StoreKind::ParameterStore => Changed::Deleted,
                    StoreKind::DynamoDb => Changed::Updated(None),
                };
                let _ = self.reads.invalidate(&item, change).await;
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
                        versions: versions.into_iter().map(VersionBody::from).collect(),
                    },
                ))
            }
            _ => Err(ConfigError::MethodNotAllowed),
        }
    }
}
