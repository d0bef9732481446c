//! The refresh path: Parameter Store change events, their signed delivery to
//! every agent found in Cloud Map, and the agents' side of it.

pub mod discovery;
pub mod event;
pub mod fanout;
pub mod handler;
pub mod proto;
pub mod signing;

use signing::RefreshKey;

/// Reads the shared refresh key from its SecureString parameter. Refuses a
/// parameter of another type, or one under the watched root (a change to it
/// would itself trigger refresh events).
pub async fn load_refresh_key(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
    watched_root: &str,
) -> Result<RefreshKey, String> {
    if name.starts_with(&format!("{watched_root}/")) {
        return Err(format!(
            "refresh key parameter '{name}' must be outside the watched root '{watched_root}'"
        ));
    }
    let output = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read refresh key '{name}': {}",
                aws_sdk_ssm::error::DisplayErrorContext(e)
            )
        })?;
    let parameter = output
        .parameter
        .ok_or_else(|| format!("refresh key '{name}' is empty"))?;
    if parameter.r#type != Some(aws_sdk_ssm::types::ParameterType::SecureString) {
        return Err(format!("refresh key '{name}' must be a SecureString"));
    }
    RefreshKey::new(parameter.value.unwrap_or_default().into_bytes())
        .map_err(|e| format!("refresh key '{name}': {e}"))
}
