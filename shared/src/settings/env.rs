//! Reading variables: what every process's settings read alike. A variable
//! that is unset or blank takes its default; a value that is set is used as
//! given or refused with a [`SettingsError`] naming it, never adjusted.

use std::ops::RangeInclusive;
use std::str::FromStr;

use thiserror::Error;

use crate::routing::{DEFAULT_DYNAMODB_PREFIX, DEFAULT_PARAMETER_PREFIX, KeyRouter};
use crate::store::ssm::{DEFAULT_PARAMETER_ROOT, validate_root};

/// The value of `REFRESH_PLAINTEXT` that serves Refresh without TLS.
pub const PLAINTEXT_ALLOWED: &str = "allow";

/// Why a process refused to start: the variable and what is wrong with it.
#[derive(Debug, Error)]
#[error("{variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

/// The variables a process sees (the environment, or a map in tests).
pub(super) struct Env<'a> {
    pub(super) lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The trimmed value; blank counts as unset.
    pub(super) fn optional(&self, variable: &'static str) -> Option<String> {
        (self.lookup)(variable)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn required(&self, variable: &'static str) -> Result<String, SettingsError> {
        self.optional(variable).ok_or_else(|| SettingsError {
            variable,
            reason: "must be set".to_owned(),
        })
    }

    pub(super) fn or(&self, variable: &'static str, default: &str) -> String {
        self.optional(variable)
            .unwrap_or_else(|| default.to_owned())
    }

    pub(super) fn number<T: FromStr>(
        &self,
        variable: &'static str,
        default: T,
    ) -> Result<T, SettingsError>
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

    /// A number of at least 1 (0 would switch off what it bounds).
    pub(super) fn positive<T>(&self, variable: &'static str, default: T) -> Result<T, SettingsError>
    where
        T: FromStr + PartialOrd + From<u8>,
        T::Err: std::fmt::Display,
    {
        let value = self.number(variable, default)?;
        if value < T::from(1) {
            return Err(SettingsError {
                variable,
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(value)
    }

    /// A number inside `range`; `why` says where the bounds come from.
    pub(super) fn within<T>(
        &self,
        variable: &'static str,
        default: T,
        range: RangeInclusive<T>,
        why: &str,
    ) -> Result<T, SettingsError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let value = self.number(variable, default)?;
        if !range.contains(&value) {
            return Err(SettingsError {
                variable,
                reason: format!(
                    "{value} is outside {}..={} ({why})",
                    range.start(),
                    range.end()
                ),
            });
        }
        Ok(value)
    }

    pub(super) fn flag(
        &self,
        variable: &'static str,
        default: bool,
    ) -> Result<bool, SettingsError> {
        match self.optional(variable).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(SettingsError {
                variable,
                reason: format!("'{v}' is not true/false"),
            }),
        }
    }

    pub(super) fn parsed<T: FromStr>(
        &self,
        variable: &'static str,
        default: &str,
    ) -> Result<T, SettingsError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.or(variable, default);
        raw.parse().map_err(|e| SettingsError {
            variable,
            reason: format!("'{raw}': {e}"),
        })
    }

    /// Whether the Refresh listener may be plaintext (`REFRESH_PLAINTEXT`,
    /// read alike by agents and config-refresh): only the exact value
    /// [`PLAINTEXT_ALLOWED`], a choice for local stacks; anything else is refused.
    pub(super) fn refresh_plaintext(&self) -> Result<bool, SettingsError> {
        match self.optional("REFRESH_PLAINTEXT") {
            None => Ok(false),
            Some(value) if value == PLAINTEXT_ALLOWED => Ok(true),
            Some(value) => Err(SettingsError {
                variable: "REFRESH_PLAINTEXT",
                reason: format!("'{value}': only '{PLAINTEXT_ALLOWED}' (local use), or unset"),
            }),
        }
    }

    /// The change feed (`CHANGE_FEED_URL`, `CHANGE_FEED_TOPIC`,
    /// `CHANGE_FEED_CLIENT_PREFIX`; see [`crate::notices::feed`]), read
    /// alike by config-refresh and agents; unset URL: no feed.
    pub(super) fn change_feed(
        &self,
    ) -> Result<Option<crate::notices::feed::FeedSettings>, SettingsError> {
        // Topic and prefix are read (and checked) with or without a URL: a
        // deploy that sets them for later gets its mistakes now.
        let topic = self.optional("CHANGE_FEED_TOPIC");
        let prefix = self.optional("CHANGE_FEED_CLIENT_PREFIX");
        crate::notices::feed::FeedSettings::parse(
            "mqtt://localhost:1",
            topic.as_deref(),
            prefix.as_deref(),
        )
        .map_err(|error| SettingsError {
            variable: match error {
                crate::notices::feed::FeedSettingsError::ClientPrefix(_) => {
                    "CHANGE_FEED_CLIENT_PREFIX"
                }
                _ => "CHANGE_FEED_TOPIC",
            },
            reason: error.to_string(),
        })?;
        let Some(url) = self.optional("CHANGE_FEED_URL") else {
            return Ok(None);
        };
        crate::notices::feed::FeedSettings::parse(&url, topic.as_deref(), prefix.as_deref())
            .map(Some)
            .map_err(|error| SettingsError {
                variable: match error {
                    crate::notices::feed::FeedSettingsError::Url(_) => "CHANGE_FEED_URL",
                    crate::notices::feed::FeedSettingsError::Topic(_) => "CHANGE_FEED_TOPIC",
                    crate::notices::feed::FeedSettingsError::ClientPrefix(_) => {
                        "CHANGE_FEED_CLIENT_PREFIX"
                    }
                },
                reason: error.to_string(),
            })
    }

    /// Where configuration lives: the parameter root and the key prefixes
    /// that route keys to their store (readers and config-refresh alike).
    pub(super) fn root_and_router(&self) -> Result<(String, KeyRouter), SettingsError> {
        let parameter_root = self.or("PARAMETER_ROOT", DEFAULT_PARAMETER_ROOT);
        validate_root(&parameter_root).map_err(|reason| SettingsError {
            variable: "PARAMETER_ROOT",
            reason: reason.to_string(),
        })?;
        let router = KeyRouter::new(
            &self.or("DYNAMODB_KEY_PREFIX", DEFAULT_DYNAMODB_PREFIX),
            &self.or("PARAMETER_KEY_PREFIX", DEFAULT_PARAMETER_PREFIX),
        )
        .map_err(|reason| SettingsError {
            variable: "DYNAMODB_KEY_PREFIX/PARAMETER_KEY_PREFIX",
            reason: reason.to_string(),
        })?;
        Ok((parameter_root, router))
    }
}

/// A lookup over `vars`, for tests.
#[cfg(test)]
pub(super) fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}
