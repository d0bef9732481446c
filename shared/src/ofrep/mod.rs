//! The OpenFeature Remote Evaluation Protocol (OFREP) over our reads: its
//! shapes and rules, free of any transport.
//!
//! With OFREP every OpenFeature SDK reads our configuration through its OFREP
//! provider, with no code of ours in the client: a flag key is one of our
//! keys, a flag's value the key's effective value for the caller's tenant.
//! This module holds what a request body may carry, how an effective value
//! becomes an evaluation (value, reason, variant, metadata), the error codes
//! and statuses, and the ETag of a bulk answer.
//!
//! The tenant never comes from the evaluation context, its `targetingKey`
//! included: only from the verified token, as on every route. A context is
//! checked for shape (an object; a `targetingKey`, if any, a string) and
//! otherwise not read.
//!
//! The protocol: <https://openfeature.dev/specification/appendix-c>.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::fnv::fnv1a_64;
mod service;

pub use service::{
    MIN_POLLING_INTERVAL_MS, OfrepRequest, OfrepRoute, OfrepService, ROUTES, refusal, route,
};

use crate::layers::Layer;
use crate::reads::Resolved;
use crate::rollouts::record::Version;

/// Largest request body an evaluation accepts (a context is a few fields).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Why the caller's tenant gets the value it gets, in OpenFeature's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// A shared layer's value (global or the tenant's tier), the same for
    /// every tenant that reads that layer.
    Static,
    /// The tenant's own value, set for it alone.
    TargetingMatch,
    /// A rollout in progress decided which of two values the tenant reads.
    Split,
    /// The store failed and this is its last good value.
    Stale,
}

/// What decided an effective value: the input of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<'a> {
    pub value: &'a Value,
    pub version: Option<i64>,
    /// The top layer that holds the key.
    pub layer: Option<&'a Layer>,
    /// `dynamodb` or `parameter-store`.
    pub source: &'static str,
    /// A live rollout of the key and whether this tenant reads its staged value.
    pub rollout: Option<(&'a str, bool)>,
    pub stale: bool,
}

impl<'a> From<&'a Resolved> for Resolution<'a> {
    fn from(resolved: &'a Resolved) -> Self {
        Self {
            value: &resolved.entry.value.value,
            version: resolved.entry.value.version,
            layer: resolved.top.as_ref(),
            source: resolved.entry.source.as_str(),
            rollout: resolved.rollout.as_ref().map(|applied| {
                (
                    applied.live.rollout.id.as_str(),
                    applied.version == Version::New,
                )
            }),
            stale: resolved.entry.stale.is_some(),
        }
    }
}

/// One flag's evaluation, as OFREP answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub key: String,
    pub value: Value,
    pub reason: Reason,
    /// The layer and version that decided the value, e.g. `tier:gold:v3`
    /// (a tenant's own layer is `tenant`, whichever tenant).
    pub variant: String,
    /// Flat, as OFREP requires: strings, numbers and booleans only.
    pub metadata: Map<String, Value>,
}

impl Evaluation {
    pub fn new(key: &str, resolution: &Resolution<'_>) -> Self {
        // The top layer decides: a tenant's own value wins over a rollout's
        // staged value below it.
        let reason = if resolution.stale {
            Reason::Stale
        } else if matches!(resolution.layer, Some(Layer::Tenant(_))) {
            Reason::TargetingMatch
        } else if resolution.rollout.is_some_and(|(_, staged)| staged) {
            Reason::Split
        } else {
            Reason::Static
        };
        // A tenant's own layer is named by what it is, not by the tenant:
        // the variant is the same word for every tenant's own value.
        let layer = match resolution.layer {
            Some(Layer::Tenant(_)) | None => "tenant".to_owned(),
            Some(shared) => shared.to_string(),
        };
        let variant = match resolution.version {
            Some(version) => format!("{layer}:v{version}"),
            None => layer.clone(),
        };
        let mut metadata = Map::new();
        metadata.insert("layer".into(), Value::from(layer));
        metadata.insert("source".into(), Value::from(resolution.source));
        if let Some(version) = resolution.version {
            metadata.insert("version".into(), Value::from(version));
        }
        if let Some((rollout, _)) = resolution.rollout {
            metadata.insert("rollout".into(), Value::from(rollout));
        }
        Self {
            key: key.to_owned(),
            value: resolution.value.clone(),
            reason,
            variant,
            metadata,
        }
    }
}

/// OFREP's error codes, each with the HTTP status OFREP gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: the body is no JSON object.
    ParseError,
    /// 400: the context is no object, or its `targetingKey` no string.
    InvalidContext,
    /// 404: the caller's tenant has no such key (or may not read it).
    FlagNotFound,
    /// 500 and others: anything else.
    General,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::ParseError | ErrorCode::InvalidContext => 400,
            ErrorCode::FlagNotFound => 404,
            ErrorCode::General => 500,
        }
    }
}

/// An evaluation that failed, as OFREP's error body: `key` on a single
/// evaluation, none on a bulk one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub error_code: ErrorCode,
    pub error_details: String,
}

impl EvaluationError {
    pub fn new(key: Option<&str>, error_code: ErrorCode, details: impl Into<String>) -> Self {
        Self {
            key: key.map(str::to_owned),
            error_code,
            error_details: details.into(),
        }
    }
}

/// The evaluation context of a request body, checked for shape only.
pub fn parse_context(body: Option<&str>) -> Result<Map<String, Value>, (ErrorCode, String)> {
    let body = body.map(str::trim).unwrap_or_default();
    if body.is_empty() {
        return Ok(Map::new());
    }
    if body.len() > MAX_REQUEST_BYTES {
        return Err((
            ErrorCode::ParseError,
            format!("the body is over {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    let request: Value = serde_json::from_str(body)
        .map_err(|e| (ErrorCode::ParseError, format!("the body is no JSON: {e}")))?;
    let Value::Object(mut request) = request else {
        return Err((
            ErrorCode::ParseError,
            "the body must be a JSON object".to_owned(),
        ));
    };
    let context = match request.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(context)) => context,
        Some(_) => {
            return Err((
                ErrorCode::InvalidContext,
                "context must be an object".to_owned(),
            ));
        }
    };
    match context.get("targetingKey") {
        None | Some(Value::String(_)) => Ok(context),
        Some(_) => Err((
            ErrorCode::InvalidContext,
            "targetingKey must be a string".to_owned(),
        )),
    }
}

/// The ETag of a bulk answer: the same flags, variants and values give the
/// same tag on every reader (FNV-1a, 64 bit, of the answer's canonical JSON),
/// so a client polling any config-api or agent gets a 304 until something it
/// reads changes.
pub fn bulk_etag(evaluations: &[Evaluation], truncated: bool) -> String {
    let mut sorted: Vec<&Evaluation> = evaluations.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    // Each flag's canonical JSON (serde_json writes object members in key
    // order, no preserve_order: equal values give equal bytes), each ended
    // by a NUL so that no two lists run together alike.
    let mut canonical = String::new();
    for evaluation in sorted {
        canonical.push_str(
            &serde_json::json!([
                evaluation.key,
                evaluation.variant,
                evaluation.reason,
                evaluation.value,
                evaluation.metadata
            ])
            .to_string(),
        );
        canonical.push('\0');
    }
    canonical.push_str(if truncated { "truncated" } else { "complete" });
    format!("\"{:016x}\"", fnv1a_64(canonical.into_bytes()))
}

/// Whether an `If-None-Match` header names `etag` (a weak comparison, as
/// RFC 9110 asks of it). `*` is no match here: on a POST it would call for
/// a 412, and a client polling for changes never sends it.
pub fn not_modified(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|header| {
        header
            .split(',')
            .map(str::trim)
            .any(|tag| tag == etag || tag.strip_prefix("W/") == Some(etag))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use serde_json::json;

    fn resolution<'a>(value: &'a Value, layer: Option<&'a Layer>) -> Resolution<'a> {
        Resolution {
            value,
            version: Some(3),
            layer,
            source: "dynamodb",
            rollout: None,
            stale: false,
        }
    }

    #[test]
    fn the_reason_says_which_layer_or_rollout_decided_the_value() {
        let value = json!({"max_seats": 50});
        let tenant = Layer::Tenant(TenantId::parse("tenant-a").unwrap());
        let global = Layer::Global;
        // A shared layer's value is the same for every tenant: static.
        let shared = Evaluation::new("tenant_config_limits", &resolution(&value, Some(&global)));
        assert_eq!(shared.reason, Reason::Static);
        assert_eq!(shared.variant, "global:v3");
        // The tenant's own value was set for it: a targeting match, named
        // without the tenant.
        let own = Evaluation::new("tenant_config_limits", &resolution(&value, Some(&tenant)));
        assert_eq!(own.reason, Reason::TargetingMatch);
        assert_eq!(own.variant, "tenant:v3");
        assert!(!serde_json::to_string(&own).unwrap().contains("tenant-a"));
        // A rollout's staged value: a split; its previous value: as before.
        let mut staged = resolution(&value, Some(&global));
        staged.rollout = Some(("r-1", true));
        let split = Evaluation::new("k", &staged);
        assert_eq!(split.reason, Reason::Split);
        assert_eq!(split.metadata["rollout"], "r-1");
        staged.rollout = Some(("r-1", false));
        assert_eq!(Evaluation::new("k", &staged).reason, Reason::Static);
        // The tenant's own value over a staged one: its own decided.
        let mut own_over_staged = resolution(&value, Some(&tenant));
        own_over_staged.rollout = Some(("r-1", true));
        assert_eq!(
            Evaluation::new("k", &own_over_staged).reason,
            Reason::TargetingMatch
        );
        // A last good value while the store fails says so above all.
        staged.stale = true;
        assert_eq!(Evaluation::new("k", &staged).reason, Reason::Stale);
    }

    #[test]
    fn an_evaluation_serializes_as_ofrep_with_flat_metadata() {
        let value = json!(true);
        let global = Layer::Global;
        let evaluation = Evaluation::new("tenant_config_beta", &resolution(&value, Some(&global)));
        let body = serde_json::to_value(&evaluation).unwrap();
        assert_eq!(
            body,
            json!({
                "key": "tenant_config_beta",
                "value": true,
                "reason": "STATIC",
                "variant": "global:v3",
                "metadata": {"layer": "global", "source": "dynamodb", "version": 3}
            })
        );
        assert!(
            body["metadata"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| !v.is_object() && !v.is_array())
        );
    }

    #[test]
    fn errors_carry_ofrep_codes_and_statuses() {
        let missing = EvaluationError::new(Some("k"), ErrorCode::FlagNotFound, "no such flag");
        assert_eq!(
            serde_json::to_value(&missing).unwrap(),
            json!({"key": "k", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "no such flag"})
        );
        assert_eq!(ErrorCode::FlagNotFound.status(), 404);
        assert_eq!(ErrorCode::InvalidContext.status(), 400);
        assert_eq!(ErrorCode::ParseError.status(), 400);
        let bulk = EvaluationError::new(None, ErrorCode::General, "x");
        assert!(serde_json::to_value(&bulk).unwrap().get("key").is_none());
    }

    #[test]
    fn a_context_is_checked_for_shape_and_never_names_the_tenant() {
        assert_eq!(parse_context(None), Ok(Map::new()));
        assert_eq!(parse_context(Some("  ")), Ok(Map::new()));
        let context = parse_context(Some(
            r#"{"context": {"targetingKey": "tenant-b", "plan": "gold"}}"#,
        ))
        .unwrap();
        // Returned as sent, for nothing but shape: no tenant is read from it.
        assert_eq!(context["targetingKey"], "tenant-b");
        let code = |body: &str| parse_context(Some(body)).unwrap_err().0;
        assert_eq!(code("{"), ErrorCode::ParseError);
        assert_eq!(code("[1]"), ErrorCode::ParseError);
        assert_eq!(code(r#"{"context": 5}"#), ErrorCode::InvalidContext);
        assert_eq!(
            code(r#"{"context": {"targetingKey": 7}}"#),
            ErrorCode::InvalidContext
        );
        let huge = format!(
            r#"{{"context": {{"x": "{}"}}}}"#,
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert_eq!(code(&huge), ErrorCode::ParseError);
    }

    #[test]
    fn the_bulk_etag_follows_values_and_versions_not_their_order() {
        let (one, two) = (json!(1), json!(2));
        let global = Layer::Global;
        let a = Evaluation::new("a", &resolution(&one, Some(&global)));
        let b = Evaluation::new("b", &resolution(&two, Some(&global)));
        let tag = bulk_etag(&[a.clone(), b.clone()], false);
        assert_eq!(tag, bulk_etag(&[b.clone(), a.clone()], false));
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18);
        // A new value, or the same value at another version, is a new tag.
        let changed = Evaluation::new("b", &resolution(&one, Some(&global)));
        assert_ne!(tag, bulk_etag(&[a.clone(), changed], false));
        let mut later = resolution(&two, Some(&global));
        later.version = Some(4);
        assert_ne!(
            tag,
            bulk_etag(&[a.clone(), Evaluation::new("b", &later)], false)
        );
        // Key and value boundaries count: ("ab", "c") is not ("a", "bc").
        let s = |v: &str| json!(v);
        let (ab, c, a_, bc) = (s("ab"), s("c"), s("a"), s("bc"));
        let pair = |k1: &str, v1: &Value, k2: &str, v2: &Value| {
            bulk_etag(
                &[
                    Evaluation::new(k1, &resolution(v1, Some(&global))),
                    Evaluation::new(k2, &resolution(v2, Some(&global))),
                ],
                false,
            )
        };
        assert_ne!(pair("k1", &ab, "k2", &c), pair("k1", &a_, "k2", &bc));
        // A rollout starting (metadata) or a truncated listing is a new tag.
        let mut rolling = resolution(&two, Some(&global));
        rolling.rollout = Some(("r-1", false));
        assert_ne!(
            tag,
            bulk_etag(&[a.clone(), Evaluation::new("b", &rolling)], false)
        );
        assert_ne!(tag, bulk_etag(&[a.clone(), b.clone()], true));
    }

    #[test]
    fn if_none_match_names_the_tag_in_a_list_or_as_a_weak_tag() {
        let tag = "\"00000000000000ff\"";
        assert!(not_modified(Some(tag), tag));
        assert!(not_modified(Some("\"x\", \"00000000000000ff\""), tag));
        assert!(not_modified(Some("W/\"00000000000000ff\""), tag));
        assert!(!not_modified(Some("*"), tag));
        assert!(!not_modified(Some("\"00000000000000fe\""), tag));
        assert!(!not_modified(None, tag));
    }
}
