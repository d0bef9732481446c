//! The platform routes: the shared layers (`/v1/layers/global/...`,
//! `/v1/layers/tiers/{tier}/...`) and the tenant registry
//! (`/v1/tenants/{tenant}`), for platform administrators only, with
//! `If-Match` / `If-None-Match` like the tenant routes, never cached.

use serde::{Deserialize, Serialize};

use super::responses::{etag, json_response};
use super::route::{LayerAction, LayerName, Route};
use super::writes::{PutBody, RollbackBody, VersionBody, expected, parse_body};
use super::{ApiRequest, ApiResponse, ConfigApi};
use crate::domain::Changed;
use crate::error::ConfigError;
use crate::layers::Layer;
use crate::layers::blast::BlastReport;
use crate::layers::guardrails::Guardrail;
use crate::layers::platform::{Landing, PlatformWrites, Registration, Weighed};
use crate::layers::registry::TenantRecord;
use crate::refresh::change::Subject;
use crate::validate::{ConfigKey, ServiceName, TenantId, TierName};
use crate::write::{Expected, NewValue};

#[derive(Serialize)]
struct LayerWrittenBody<'a> {
    layer: String,
    service: &'a str,
    key: &'a str,
    source: &'static str,
    version: i64,
    previous_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_of: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blast_radius: Option<BlastReport>,
}

#[derive(Serialize)]
struct LayerDeletedBody<'a> {
    layer: String,
    service: &'a str,
    key: &'a str,
    deleted_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    blast_radius: Option<BlastReport>,
}

/// A dry run's answer: nothing landed.
#[derive(Serialize)]
struct DryRunBody {
    dry_run: bool,
    report: BlastReport,
}

#[derive(Serialize)]
struct GuardrailBody<'a> {
    layer: String,
    service: &'a str,
    key: &'a str,
    locked: bool,
    schema: Option<serde_json::Value>,
    /// 0 once removed.
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blast_radius: Option<BlastReport>,
}

/// The body of a guardrail: `{"locked": true, "schema": {...}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardrailInput {
    #[serde(default)]
    locked: bool,
    #[serde(default)]
    schema: Option<serde_json::Value>,
}

/// `?dry_run=true` weighs a shared change without landing it;
/// `?force=true` lands one that breaks tenants (journaled as forced).
fn landing(request: &ApiRequest<'_>) -> Result<Landing, ConfigError> {
    let flag = |name: &str, value: Option<Result<&str, ()>>| match value {
        None => Ok(false),
        Some(Ok("true")) => Ok(true),
        Some(Ok("false")) => Ok(false),
        Some(_) => Err(ConfigError::BadRequest(format!(
            "?{name}= takes true or false, once"
        ))),
    };
    match (
        flag("dry_run", request.dry_run)?,
        flag("force", request.force)?,
    ) {
        (true, true) => Err(ConfigError::BadRequest(
            "?dry_run=true and ?force=true together: a dry run lands nothing to force".to_owned(),
        )),
        (true, false) => Ok(Landing::DryRun),
        (false, true) => Ok(Landing::Force),
        (false, false) => Ok(Landing::Land),
    }
}

fn dry_run_response(report: BlastReport) -> ApiResponse {
    json_response(
        200,
        "no-store",
        &DryRunBody {
            dry_run: true,
            report,
        },
    )
}

#[derive(Serialize)]
struct LayerHistoryBody<'a> {
    layer: String,
    service: &'a str,
    key: &'a str,
    versions: Vec<VersionBody>,
}

#[derive(Serialize)]
struct RegistrationBody {
    tenant: String,
    tier: Option<String>,
    active: bool,
    /// Absent for a tenant never registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at_ms: Option<i64>,
}

impl From<Registration> for RegistrationBody {
    fn from(r: Registration) -> Self {
        Self {
            tenant: r.tenant.to_string(),
            tier: r.record.tier.map(|t| t.to_string()),
            active: r.record.active,
            version: r.version,
            updated_by: r.updated_by,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

/// The body of a registration: `{"tier": "gold"}`, `"tier": null` for none,
/// `"active": false` to refuse the tenant's reads and writes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    tier: Option<String>,
    #[serde(default = "active_by_default")]
    active: bool,
}

fn active_by_default() -> bool {
    true
}

impl ConfigApi {
    /// Shared layers and registrations: platform administrators only.
    pub(super) async fn platform(
        &self,
        platform: &PlatformWrites,
        route: Route<'_>,
        request: &ApiRequest<'_>,
    ) -> Result<ApiResponse, ConfigError> {
        let identity = self.verifier.verify_header(request.authorization).await?;
        match route {
            Route::Tenant { tenant } => {
                let tenant = TenantId::parse(tenant)?;
                match request.method {
                    "GET" => {
                        let registration = platform.registration(&identity, &tenant).await?;
                        let version = registration.version;
                        let mut response =
                            json_response(200, "no-store", &RegistrationBody::from(registration));
                        if let Some(version) = version {
                            response.headers.push(("etag", etag(version)));
                        }
                        Ok(response)
                    }
                    "PUT" => {
                        let expected = expected(request, true)?;
                        let body: RegisterBody = parse_body(
                            request.body,
                            r#"{"tier": "<tier>" | null, "active": true | false}"#,
                        )?;
                        let record = TenantRecord {
                            tier: body.tier.as_deref().map(TierName::parse).transpose()?,
                            active: body.active,
                        };
                        let written = platform
                            .register(&identity, &tenant, &record, expected)
                            .await?;
                        // This container serves the new tier at once; others
                        // by the change feed.
                        let _ = self
                            .reads
                            .invalidate_subject(
                                &Subject::Registration(tenant.clone()),
                                Changed::Updated(None),
                            )
                            .await;
                        let status = if expected == Expected::Absent {
                            201
                        } else {
                            200
                        };
                        let mut response = json_response(
                            status,
                            "no-store",
                            &RegistrationBody {
                                tenant: tenant.to_string(),
                                tier: record.tier.map(|t| t.to_string()),
                                active: record.active,
                                version: Some(written.version),
                                updated_by: Some(identity.subject.clone()),
                                updated_at_ms: None,
                            },
                        );
                        response.headers.push(("etag", etag(written.version)));
                        Ok(response)
                    }
                    _ => Err(ConfigError::MethodNotAllowed),
                }
            }
            Route::Layer {
                layer,
                service,
                key,
                action,
            } => {
                let layer = match layer {
                    LayerName::Global => Layer::Global,
                    LayerName::Tier(tier) => Layer::Tier(TierName::parse(tier)?),
                };
                let (service, key) = (ServiceName::parse(service)?, ConfigKey::parse(key)?);
                self.layer_entry(platform, &identity, layer, service, key, action, request)
                    .await
            }
            _ => Err(ConfigError::RouteNotFound),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn layer_entry(
        &self,
        platform: &PlatformWrites,
        identity: &crate::auth::Identity,
        layer: Layer,
        service: ServiceName,
        key: ConfigKey,
        action: LayerAction,
        request: &ApiRequest<'_>,
    ) -> Result<ApiResponse, ConfigError> {
        let subject = Subject::in_layer(layer.clone(), service.clone(), key.clone());
        let written = |outcome: crate::writes::WriteOutcome,
                       status: u16,
                       rollback_of,
                       blast_radius: Option<BlastReport>| {
            let mut response = json_response(
                status,
                "no-store",
                &LayerWrittenBody {
                    layer: layer.to_string(),
                    service: service.as_str(),
                    key: key.as_str(),
                    source: outcome.source.as_str(),
                    version: outcome.written.version,
                    previous_version: outcome.written.previous,
                    rollback_of,
                    blast_radius,
                },
            );
            response
                .headers
                .push(("etag", etag(outcome.written.version)));
            response
        };
        match (request.method, action) {
            ("PUT", LayerAction::Entry) => {
                let expected = expected(request, true)?;
                let landing = landing(request)?;
                let body: PutBody = parse_body(request.body, PutBody::SHAPE)?;
                let value = NewValue::json(&body.value, body.value_kind()?)?;
                let (outcome, report) = match platform
                    .put(identity, &layer, &service, &key, &value, expected, landing)
                    .await?
                {
                    Weighed::DryRun(report) => return Ok(dry_run_response(report)),
                    Weighed::Landed { outcome, report } => (outcome, report),
                };
                let _ = self
                    .reads
                    .invalidate_subject(&subject, Changed::Updated(Some(value.kind)))
                    .await;
                let status = if expected == Expected::Absent {
                    201
                } else {
                    200
                };
                Ok(written(outcome, status, None, report))
            }
            ("DELETE", LayerAction::Entry) => {
                let expected = expected(request, false)?;
                let (deleted, report) = match platform
                    .delete(
                        identity,
                        &layer,
                        &service,
                        &key,
                        expected,
                        landing(request)?,
                    )
                    .await?
                {
                    Weighed::DryRun(report) => return Ok(dry_run_response(report)),
                    Weighed::Landed { outcome, report } => (outcome, report),
                };
                let _ = self
                    .reads
                    .invalidate_subject(&subject, Changed::Deleted)
                    .await;
                Ok(json_response(
                    200,
                    "no-store",
                    &LayerDeletedBody {
                        layer: layer.to_string(),
                        service: service.as_str(),
                        key: key.as_str(),
                        deleted_version: deleted,
                        blast_radius: report,
                    },
                ))
            }
            ("POST", LayerAction::Rollback) => {
                let expected = expected(request, false)?;
                let landing = landing(request)?;
                let body: RollbackBody = parse_body(request.body, r#"{"version": <number>}"#)?;
                let (outcome, report) = match platform
                    .rollback(
                        identity,
                        &layer,
                        &service,
                        &key,
                        body.version,
                        expected,
                        landing,
                    )
                    .await?
                {
                    Weighed::DryRun(report) => return Ok(dry_run_response(report)),
                    Weighed::Landed { outcome, report } => (outcome, report),
                };
                let _ = self
                    .reads
                    .invalidate_subject(&subject, Changed::Updated(None))
                    .await;
                Ok(written(outcome, 200, Some(body.version), report))
            }
            ("GET", LayerAction::Guardrail) => {
                let stored = platform
                    .guardrail(identity, &layer, &service, &key)
                    .await?
                    .ok_or_else(|| ConfigError::NotFound {
                        service: service.to_string(),
                        key: format!("{key} guardrail of the {layer} layer"),
                    })?;
                let mut response = json_response(
                    200,
                    "no-store",
                    &GuardrailBody {
                        layer: layer.to_string(),
                        service: service.as_str(),
                        key: key.as_str(),
                        locked: stored.guardrail.locked,
                        schema: stored.guardrail.schema,
                        version: stored.version,
                        updated_by: stored.updated_by,
                        updated_at_ms: stored.updated_at_ms,
                        blast_radius: None,
                    },
                );
                response.headers.push(("etag", etag(stored.version)));
                Ok(response)
            }
            (method @ ("PUT" | "DELETE"), LayerAction::Guardrail) => {
                let put = method == "PUT";
                let expected = expected(request, put)?;
                let landing = landing(request)?;
                let guardrail = if put {
                    let body: GuardrailInput = parse_body(
                        request.body,
                        r#"{"locked": true | false, "schema": <JSON Schema> | null}"#,
                    )?;
                    Some(Guardrail {
                        locked: body.locked,
                        schema: body.schema.filter(|s| !s.is_null()),
                    })
                } else {
                    None
                };
                let (version, report) = match platform
                    .set_guardrail(
                        identity,
                        &layer,
                        &service,
                        &key,
                        guardrail.as_ref(),
                        expected,
                        landing,
                    )
                    .await?
                {
                    Weighed::DryRun(report) => return Ok(dry_run_response(report)),
                    Weighed::Landed { outcome, report } => (outcome, report),
                };
                let guardrail = guardrail.unwrap_or_default();
                let status = if expected == Expected::Absent {
                    201
                } else {
                    200
                };
                let mut response = json_response(
                    status,
                    "no-store",
                    &GuardrailBody {
                        layer: layer.to_string(),
                        service: service.as_str(),
                        key: key.as_str(),
                        locked: guardrail.locked,
                        schema: guardrail.schema,
                        version,
                        updated_by: None,
                        updated_at_ms: None,
                        blast_radius: report,
                    },
                );
                if put {
                    response.headers.push(("etag", etag(version)));
                }
                Ok(response)
            }
            ("GET", LayerAction::History) => {
                let versions = platform.history(identity, &layer, &service, &key).await?;
                Ok(json_response(
                    200,
                    "no-store",
                    &LayerHistoryBody {
                        layer: layer.to_string(),
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
