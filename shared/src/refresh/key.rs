//! Where config-refresh's private signing key comes from: one SecureString
//! parameter only config-refresh's role may read, read once at start-up.
//! Agents never read it: they are given the public keys (`REFRESH_PUBLIC_KEYS`).

use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;
use thiserror::Error;

use super::signing::{RefreshKey, SignatureError};

/// Why the refresh key cannot be used. Never carries the key itself.
#[derive(Debug, Error)]
pub enum RefreshKeyError {
    #[error("refresh key parameter '{name}' must be outside the watched root '{root}'")]
    UnderWatchedRoot { name: String, root: String },
    #[error("cannot read refresh key '{name}': {detail}")]
    Unreadable { name: String, detail: String },
    #[error("refresh key '{name}' is empty")]
    Empty { name: String },
    #[error("refresh key '{name}' must be a SecureString")]
    NotSecure { name: String },
    #[error("refresh key '{name}': {source}")]
    Unusable {
        name: String,
        source: SignatureError,
    },
}

/// Refuses a key parameter under the watched root: a change to it would
/// itself trigger refresh events (and it would sit among tenant data).
pub fn outside_watched_root(name: &str, watched_root: &str) -> Result<(), RefreshKeyError> {
    if name.starts_with(&format!("{watched_root}/")) {
        return Err(RefreshKeyError::UnderWatchedRoot {
            name: name.to_owned(),
            root: watched_root.to_owned(),
        });
    }
    Ok(())
}

/// Reads the refresh key from its SecureString parameter. Refuses a parameter
/// of another type, or one under the watched root (a change to it would itself
/// trigger refresh events).
pub async fn load_refresh_key(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
    watched_root: &str,
) -> Result<RefreshKey, RefreshKeyError> {
    outside_watched_root(name, watched_root)?;
    let output = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| RefreshKeyError::Unreadable {
            name: name.to_owned(),
            detail: DisplayErrorContext(e).to_string(),
        })?;
    let parameter = output.parameter.ok_or_else(|| RefreshKeyError::Empty {
        name: name.to_owned(),
    })?;
    if parameter.r#type != Some(ParameterType::SecureString) {
        return Err(RefreshKeyError::NotSecure {
            name: name.to_owned(),
        });
    }
    RefreshKey::parse(parameter.value.as_deref().unwrap_or_default()).map_err(|source| {
        RefreshKeyError::Unusable {
            name: name.to_owned(),
            source,
        }
    })
}
