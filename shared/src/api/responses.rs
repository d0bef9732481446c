//! How answers are built: JSON bodies with their caching headers, the stale
//! marks, and the one place an error becomes an HTTP response.

use std::time::Duration;

use serde::Serialize;
use serde_json::Map;

use crate::error::{AuthError, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// Header that marks a stale answer: the age in milliseconds of its oldest value.
pub const STALE_HEADER: &str = "x-config-stale-age-ms";

pub(super) fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Marks an answer built from last good values: a header with the age of its
/// oldest value, the standard `Warning: 110`, and `no-store` so no client
/// cache keeps it.
pub(crate) fn mark_stale(mut response: ApiResponse, oldest: Option<Duration>) -> ApiResponse {
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

pub(super) fn json_response(
    status: u16,
    cache_control: &'static str,
    body: &impl Serialize,
) -> ApiResponse {
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
    if let ConfigError::BreaksTenants { report } = err {
        body.insert(
            "report".into(),
            serde_json::to_value(report).unwrap_or_default(),
        );
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
    if let Some(wait) = err.retry_after() {
        response
            .headers
            .push(("retry-after", retry_after_seconds(wait).to_string()));
    }
    response
}

/// `Retry-After` is whole seconds: rounded up, and at least 1 (0 would invite
/// a retry before the share has refilled).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

    #[test]
    fn a_429_says_when_to_retry_in_whole_seconds_rounded_up() {
        let limited = error_response(
            &crate::error::StoreError::TenantLimited {
                store: crate::kinds::StoreKind::ParameterStore,
                retry_after: Duration::from_millis(1200),
            }
            .into(),
        );
        assert_eq!(limited.status, 429);
        assert!(limited.headers.contains(&("retry-after", "2".to_owned())));
        let body: Value = serde_json::from_str(&limited.body).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
    }
}
