//! Reading through a config agent as a caller does.

use std::time::Duration;

use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::proto::{
    ConfigValue, ExplainResponse, GetConfigRequest, GetSecretResponse,
};

/// GetConfig through the agent at `endpoint` (`http://host:port`) as a caller
/// with `token`; returns the value's JSON text.
pub async fn get_config(
    endpoint: &str,
    token: &str,
    service: &str,
    key: &str,
) -> Result<String, tonic::Status> {
    Ok(get_config_value(endpoint, token, service, key)
        .await?
        .map(|v| v.value_json)
        .unwrap_or_default())
}

/// [`get_config`] with all the agent says of the value: its version,
/// source, and how old it is when the store failed and this is its last
/// good value (`stale_age_ms`).
pub async fn get_config_value(
    endpoint: &str,
    token: &str,
    service: &str,
    key: &str,
) -> Result<Option<ConfigValue>, tonic::Status> {
    let (channel, request) = call(endpoint, token, service, key).await?;
    Ok(ConfigReaderClient::new(channel)
        .get_config(request)
        .await?
        .into_inner()
        .value)
}

/// GetSecret through the agent at `endpoint`, which must be on this host
/// (the agent answers secrets to loopback callers only): the decrypted value.
pub async fn get_secret(
    endpoint: &str,
    token: &str,
    service: &str,
    key: &str,
) -> Result<GetSecretResponse, tonic::Status> {
    let (channel, request) = call(endpoint, token, service, key).await?;
    Ok(ConfigReaderClient::new(channel)
        .get_secret(request)
        .await?
        .into_inner())
}

/// Explain through the agent at `endpoint`: the value, its layers and the
/// layer of each leaf.
pub async fn explain(
    endpoint: &str,
    token: &str,
    service: &str,
    key: &str,
) -> Result<ExplainResponse, tonic::Status> {
    let (channel, request) = call(endpoint, token, service, key).await?;
    Ok(ConfigReaderClient::new(channel)
        .explain(request)
        .await?
        .into_inner())
}

/// A channel to the agent (5 s to connect, 10 s per call) and a request for
/// one key carrying the caller's token.
async fn call(
    endpoint: &str,
    token: &str,
    service: &str,
    key: &str,
) -> Result<(tonic::transport::Channel, tonic::Request<GetConfigRequest>), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(GetConfigRequest {
        service: service.into(),
        key: key.into(),
    });
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("token is not valid metadata"))?;
    request.metadata_mut().insert("authorization", bearer);
    Ok((channel, request))
}
