//! Settings from environment variables, checked once at start-up.
//!
//! Every variable, its default and its meaning is listed in the README. A bad
//! value stops the process at init with a message naming the variable, rather
//! than failing requests later.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::auth::AuthSettings;
use crate::cache::CacheSettings;
use crate::routing::{DEFAULT_DYNAMODB_PREFIX, DEFAULT_PARAMETER_PREFIX, KeyRouter};
use crate::store::ssm::{DEFAULT_PARAMETER_ROOT, validate_root};

#[derive(Debug, Error)]
#[error("{variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub table_name: String,
    pub parameter_root: String,
    pub router: KeyRouter,
    pub auth: AuthSettings,
    pub dynamodb_cache: CacheSettings,
    pub parameter_cache: CacheSettings,
}

/// Defaults that differ between the request/response Lambda and the
/// push-invalidated agent.
#[derive(Debug, Clone, Copy)]
pub struct CacheDefaults {
    pub ttl_secs: u64,
    pub not_found_ttl_secs: u64,
    pub max_entries: u64,
}

/// Defaults for config-api: short TTLs, since nothing invalidates its caches.
pub const LAMBDA_CACHE_DEFAULTS: CacheDefaults = CacheDefaults {
    ttl_secs: 60,
    not_found_ttl_secs: 5,
    max_entries: 10_000,
};

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn optional(&self, variable: &'static str) -> Option<String> {
        (self.lookup)(variable)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, variable: &'static str) -> Result<String, SettingsError> {
        self.optional(variable).ok_or_else(|| SettingsError {
            variable,
            reason: "must be set".to_owned(),
        })
    }

    fn or(&self, variable: &'static str, default: &str) -> String {
        self.optional(variable)
            .unwrap_or_else(|| default.to_owned())
    }

    fn number<T: FromStr>(&self, variable: &'static str, default: T) -> Result<T, SettingsError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(variable) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| SettingsError {
                variable,
                reason: format!("'{raw}' is not a valid number: {e}"),
            }),
        }
    }

    fn cache(
        &self,
        ttl_var: &'static str,
        max_var: &'static str,
        defaults: CacheDefaults,
    ) -> Result<CacheSettings, SettingsError> {
        Ok(CacheSettings {
            ttl: Duration::from_secs(self.number(ttl_var, defaults.ttl_secs)?),
            not_found_ttl: Duration::from_secs(
                self.number("NOT_FOUND_CACHE_TTL_SECS", defaults.not_found_ttl_secs)?,
            ),
            max_entries: self.number(max_var, defaults.max_entries)?,
        })
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env(defaults: CacheDefaults) -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok(), defaults)
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        defaults: CacheDefaults,
    ) -> Result<Self, SettingsError> {
        let env = Env { lookup };
        let parameter_root = env.or("PARAMETER_ROOT", DEFAULT_PARAMETER_ROOT);
        validate_root(&parameter_root).map_err(|reason| SettingsError {
            variable: "PARAMETER_ROOT",
            reason,
        })?;
        let router = KeyRouter::new(
            &env.or("DYNAMODB_KEY_PREFIX", DEFAULT_DYNAMODB_PREFIX),
            &env.or("PARAMETER_KEY_PREFIX", DEFAULT_PARAMETER_PREFIX),
        )
        .map_err(|reason| SettingsError {
            variable: "DYNAMODB_KEY_PREFIX/PARAMETER_KEY_PREFIX",
            reason,
        })?;
        let issuer = env
            .required("COGNITO_ISSUER")?
            .trim_end_matches('/')
            .to_owned();
        let jwks_url = env.or(
            "COGNITO_JWKS_URL",
            &format!("{issuer}/.well-known/jwks.json"),
        );
        let client_ids: Vec<String> = env
            .required("COGNITO_CLIENT_IDS")?
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect();
        if client_ids.is_empty() {
            return Err(SettingsError {
                variable: "COGNITO_CLIENT_IDS",
                reason: "must name at least one app client id".to_owned(),
            });
        }
        Ok(Self {
            table_name: env.required("CONFIG_TABLE_NAME")?,
            parameter_root,
            router,
            auth: AuthSettings {
                issuer,
                jwks_url,
                client_ids,
                leeway: Duration::from_secs(env.number("TOKEN_LEEWAY_SECS", 10)?),
                token_cache_max_entries: env.number("TOKEN_CACHE_MAX_ENTRIES", 10_000)?,
                jwks_refresh_interval: Duration::from_secs(
                    env.number("JWKS_REFRESH_INTERVAL_SECS", 60)?,
                ),
            },
            dynamodb_cache: env.cache(
                "DYNAMODB_CACHE_TTL_SECS",
                "DYNAMODB_CACHE_MAX_ENTRIES",
                defaults,
            )?,
            parameter_cache: env.cache(
                "PARAMETER_CACHE_TTL_SECS",
                "PARAMETER_CACHE_MAX_ENTRIES",
                defaults,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&|name| map.get(name).cloned(), LAMBDA_CACHE_DEFAULTS)
    }

    const REQUIRED: [(&str, &str); 3] = [
        ("CONFIG_TABLE_NAME", "tenant-config"),
        (
            "COGNITO_ISSUER",
            "https://cognito-idp.us-east-1.amazonaws.com/pool/",
        ),
        ("COGNITO_CLIENT_IDS", "a, b ,"),
    ];

    #[test]
    fn defaults_apply_when_only_required_variables_are_set() {
        let s = settings(&REQUIRED).unwrap();
        assert_eq!(s.parameter_root, "/config-service");
        assert_eq!(
            s.auth.issuer,
            "https://cognito-idp.us-east-1.amazonaws.com/pool"
        );
        assert_eq!(
            s.auth.jwks_url,
            "https://cognito-idp.us-east-1.amazonaws.com/pool/.well-known/jwks.json"
        );
        assert_eq!(s.auth.client_ids, vec!["a", "b"]);
        assert_eq!(s.dynamodb_cache.ttl, Duration::from_secs(60));
        assert_eq!(s.parameter_cache.not_found_ttl, Duration::from_secs(5));
    }

    #[test]
    fn missing_or_malformed_variables_name_the_variable() {
        let err = settings(&REQUIRED[1..]).unwrap_err();
        assert_eq!(err.variable, "CONFIG_TABLE_NAME");
        let mut vars = REQUIRED.to_vec();
        vars.push(("DYNAMODB_CACHE_TTL_SECS", "soon"));
        assert_eq!(
            settings(&vars).unwrap_err().variable,
            "DYNAMODB_CACHE_TTL_SECS"
        );
        let mut vars = REQUIRED.to_vec();
        vars.push(("PARAMETER_ROOT", "/config-service/"));
        assert_eq!(settings(&vars).unwrap_err().variable, "PARAMETER_ROOT");
    }
}
