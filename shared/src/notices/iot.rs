//! The change feed on AWS IoT Core.
//!
//! config-refresh publishes through IoT's HTTPS data plane (`iot:Publish`,
//! `iot:RetainPublish` on the stack's topic). Readers connect over MQTT on
//! WebSocket to `wss://{endpoint}/mqtt`, the URL presigned with SigV4 for
//! the `iotdevicegateway` service with the reader's role credentials at
//! every (re)connection, the session token added after signing as IoT Core
//! requires (`iot:Connect` on `client/{prefix}-*`, `iot:Subscribe` on the
//! topic filter, `iot:Receive` on the topic).
//!
//! Locally moto accepts an IoT data plane publish but delivers it to no one,
//! so the local stack runs a real broker (`mqtt://`) instead; this adapter's
//! requests are checked against moto and the presigned URL by its shape.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SessionTokenMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use super::feed::{FeedEndpoint, FeedSettings, NoticePublisher, PUBLISH_TIMEOUT, PublishError};
use super::mqtt::{Connector, base_options};

/// How long a presigned URL may be used to connect.
const PRESIGNED_FOR: Duration = Duration::from_secs(300);
const SIGNING_NAME: &str = "iotdevicegateway";

/// Publishes through IoT Core's data plane (HTTPS, the SDK's own timeouts
/// and retries, bounded again by [`PUBLISH_TIMEOUT`]).
pub struct IotCorePublisher {
    client: aws_sdk_iotdataplane::Client,
    topic: String,
}

impl IotCorePublisher {
    /// Against a data plane URL: `https://{the feed's endpoint}`, or
    /// moto's. `aws` is the function's SDK config (its timeouts apply).
    pub fn with_endpoint_url(aws: &aws_config::SdkConfig, url: &str, topic: &str) -> Self {
        let config = aws_sdk_iotdataplane::config::Builder::from(aws)
            .endpoint_url(url)
            .build();
        Self {
            client: aws_sdk_iotdataplane::Client::from_conf(config),
            topic: topic.to_owned(),
        }
    }
}

#[async_trait]
impl NoticePublisher for IotCorePublisher {
    async fn publish(&self, payloads: &[Vec<u8>]) -> Result<(), PublishError> {
        let all = async {
            for payload in payloads {
                self.client
                    .publish()
                    .topic(&self.topic)
                    .qos(1)
                    .retain(true)
                    .payload(aws_sdk_iotdataplane::primitives::Blob::new(payload.clone()))
                    .send()
                    .await
                    .map_err(|e| {
                        PublishError::Failed(
                            aws_sdk_iotdataplane::error::DisplayErrorContext(e).to_string(),
                        )
                    })?;
            }
            Ok(())
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, all)
            .await
            .map_err(|_| PublishError::TimedOut(PUBLISH_TIMEOUT))?
    }
}

/// Readers' connections to IoT Core: WebSocket over TLS (the system's
/// roots), the URL presigned at each connection.
pub struct IotCoreConnector {
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
    tls: Arc<rustls::ClientConfig>,
}

impl IotCoreConnector {
    pub fn new(aws: &aws_config::SdkConfig, settings: &FeedSettings) -> Result<Self, String> {
        let FeedEndpoint::IotCore { endpoint } = &settings.endpoint else {
            return Err("the change feed is not IoT Core".to_owned());
        };
        let credentials = aws
            .credentials_provider()
            .ok_or("no AWS credentials to sign the IoT Core connection with")?;
        let region = aws
            .region()
            .map(ToString::to_string)
            .ok_or("no AWS region for IoT Core")?;
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for certificate in native.certs {
            let _ = roots.add(certificate);
        }
        if roots.is_empty() {
            return Err("no trusted root certificates on this host for IoT Core".to_owned());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            endpoint: endpoint.clone(),
            region,
            credentials,
            tls: Arc::new(tls),
        })
    }
}

/// `request`'s URI presigned for IoT Core (query-string SigV4 over the host
/// header only, the session token appended after signing).
pub fn presign(
    request: &mut http::Request<()>,
    credentials: &aws_credential_types::Credentials,
    region: &str,
    at: SystemTime,
) -> Result<(), String> {
    let uri = request.uri().to_string();
    let host = request
        .uri()
        .host()
        .ok_or("the IoT Core URL has no host")?
        .to_owned();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGNED_FOR);
    settings.session_token_mode = SessionTokenMode::Exclude;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "GET",
        uri,
        std::iter::once(("host", host.as_str())),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

#[async_trait]
impl Connector for IotCoreConnector {
    async fn options(&self, client_id: String) -> Result<MqttOptions, String> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| format!("no credentials for IoT Core: {e}"))?;
        let mut options = base_options(client_id, &format!("wss://{}/mqtt", self.endpoint), 443);
        options.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
            self.tls.clone(),
        )));
        let region = self.region.clone();
        options.set_request_modifier(move |mut request: http::Request<()>| {
            let credentials = credentials.clone();
            let region = region.clone();
            async move {
                if let Err(error) = presign(&mut request, &credentials, &region, SystemTime::now())
                {
                    // Unsigned, IoT Core refuses the upgrade: the loop retries.
                    tracing::warn!(%error, "change feed: cannot sign the IoT Core connection");
                }
                request
            }
        });
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presigned_url_signs_the_host_for_iot_and_carries_the_session_token_unsigned() {
        let mut request = http::Request::builder()
            .uri("wss://abc-ats.iot.eu-west-1.amazonaws.com/mqtt")
            .header("Sec-WebSocket-Protocol", "mqtt")
            .body(())
            .unwrap();
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("token/with+chars".into()),
            None,
            "test",
        );
        presign(
            &mut request,
            &credentials,
            "eu-west-1",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap();
        let query = request.uri().query().unwrap().to_owned();
        assert!(
            query.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            "{query}"
        );
        assert!(
            query.contains("X-Amz-Credential=AKIDEXAMPLE%2F20270115%2Feu-west-1%2Fiotdevicegateway%2Faws4_request"),
            "{query}"
        );
        assert!(query.contains("X-Amz-SignedHeaders=host"), "{query}");
        assert!(query.contains("X-Amz-Expires=300"), "{query}");
        assert!(query.contains("X-Amz-Signature="), "{query}");
        // After the signature, as IoT Core requires.
        let token = query
            .find("X-Amz-Security-Token=token%2Fwith%2Bchars")
            .unwrap();
        assert!(token > query.find("X-Amz-Signature=").unwrap(), "{query}");
        assert_eq!(request.uri().path(), "/mqtt");
    }
}
