//! Where the change feed is, and the port config-refresh publishes through.
//!
//! `CHANGE_FEED_URL` names the broker:
//! - `iot://{endpoint}`: AWS IoT Core, the account's data endpoint
//!   (`aws iot describe-endpoint --endpoint-type iot:Data-ATS`). Readers
//!   connect over MQTT on WebSocket (TLS, SigV4 with their role's
//!   credentials: [`super::iot`]); config-refresh publishes through IoT's
//!   HTTPS data plane ([`super::iot::IotCorePublisher`]).
//! - `mqtt://{host}:{port}`: a plain MQTT 3.1.1 broker (the local stack's
//!   embedded rumqttd); both sides speak MQTT ([`super::mqtt`]).

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

/// A broker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEndpoint {
    Mqtt { host: String, port: u16 },
    IotCore { endpoint: String },
}

/// The change feed's settings, as config-refresh and the agents read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSettings {
    pub endpoint: FeedEndpoint,
    /// The topic notices are published on: one per stack.
    pub topic: String,
    /// Readers' MQTT client ids start with it (IoT Core's policy allows
    /// `client/{prefix}-*` only).
    pub client_prefix: String,
}

pub const DEFAULT_TOPIC: &str = "tenant-config/changes";
pub const DEFAULT_CLIENT_PREFIX: &str = "tenant-config";
/// MQTT topics are up to 65,535 bytes; IoT Core's up to 256 with 7 slashes.
const MAX_TOPIC_LEN: usize = 256;
/// IoT Core client ids are up to 128 bytes; ours add "-reader-" and 16 hex
/// digits.
const MAX_CLIENT_PREFIX_LEN: usize = 104;
/// How long a publish (connect, publish, acknowledgement) may take.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FeedSettingsError {
    #[error(
        "CHANGE_FEED_URL is 'iot://{{IoT data endpoint}}' or 'mqtt://{{host}}:{{port}}', not '{0}'"
    )]
    Url(String),
    #[error("CHANGE_FEED_TOPIC is 1 to 256 of [A-Za-z0-9/_-] without wildcards, not '{0}'")]
    Topic(String),
    #[error("CHANGE_FEED_CLIENT_PREFIX is 1 to 104 of [A-Za-z0-9_-], not '{0}'")]
    ClientPrefix(String),
}

fn host_ok(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

impl FeedSettings {
    pub fn parse(
        url: &str,
        topic: Option<&str>,
        client_prefix: Option<&str>,
    ) -> Result<Self, FeedSettingsError> {
        let bad_url = || FeedSettingsError::Url(url.to_owned());
        let endpoint = if let Some(endpoint) = url.strip_prefix("iot://") {
            let endpoint = endpoint.trim_end_matches('/');
            if !host_ok(endpoint) {
                return Err(bad_url());
            }
            FeedEndpoint::IotCore {
                endpoint: endpoint.to_owned(),
            }
        } else if let Some(address) = url.strip_prefix("mqtt://") {
            let (host, port) = address.rsplit_once(':').ok_or_else(bad_url)?;
            let port: u16 = port.parse().map_err(|_| bad_url())?;
            if !host_ok(host) || port == 0 {
                return Err(bad_url());
            }
            FeedEndpoint::Mqtt {
                host: host.to_owned(),
                port,
            }
        } else {
            return Err(bad_url());
        };
        let topic = topic.unwrap_or(DEFAULT_TOPIC);
        let topic_ok = !topic.is_empty()
            && topic.len() <= MAX_TOPIC_LEN
            && !topic.starts_with('/')
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
        if !topic_ok {
            return Err(FeedSettingsError::Topic(topic.to_owned()));
        }
        let client_prefix = client_prefix.unwrap_or(DEFAULT_CLIENT_PREFIX);
        let prefix_ok = !client_prefix.is_empty()
            && client_prefix.len() <= MAX_CLIENT_PREFIX_LEN
            && client_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !prefix_ok {
            return Err(FeedSettingsError::ClientPrefix(client_prefix.to_owned()));
        }
        Ok(Self {
            endpoint,
            topic: topic.to_owned(),
            client_prefix: client_prefix.to_owned(),
        })
    }

    /// A client id no other reader has: the prefix, a role, random hex.
    pub fn client_id(&self, role: &str) -> String {
        let mut bytes = [0u8; 8];
        // Uniqueness, not secrecy: a clock-derived id is fine if randomness
        // is unavailable.
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            bytes = crate::refresh::signing::unix_ms_now().to_le_bytes();
        }
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{role}-{suffix}", self.client_prefix)
    }
}

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("change feed publish failed: {0}")]
    Failed(String),
    #[error("change feed publish timed out after {0:?}")]
    TimedOut(Duration),
}

/// Where config-refresh publishes notices: IoT Core's data plane in AWS,
/// MQTT locally.
#[async_trait]
pub trait NoticePublisher: Send + Sync {
    /// Publishes each payload on the topic, retained, at least once, in
    /// order; bounded by [`PUBLISH_TIMEOUT`] in all.
    async fn publish(&self, payloads: &[Vec<u8>]) -> Result<(), PublishError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_urls_name_iot_core_or_an_mqtt_broker() {
        let iot = FeedSettings::parse("iot://abc123-ats.iot.eu-west-1.amazonaws.com", None, None)
            .unwrap();
        assert_eq!(
            iot.endpoint,
            FeedEndpoint::IotCore {
                endpoint: "abc123-ats.iot.eu-west-1.amazonaws.com".into()
            }
        );
        assert_eq!(iot.topic, DEFAULT_TOPIC);
        let local = FeedSettings::parse(
            "mqtt://127.0.0.1:41883",
            Some("tc/stack-1/changes"),
            Some("s1"),
        )
        .unwrap();
        assert_eq!(
            local.endpoint,
            FeedEndpoint::Mqtt {
                host: "127.0.0.1".into(),
                port: 41883
            }
        );
        assert!(local.client_id("agent").starts_with("s1-agent-"));
        assert_ne!(local.client_id("agent"), local.client_id("agent"));
    }

    #[test]
    fn hostile_feed_settings_are_refused() {
        for url in [
            "",
            "https://example.com",
            "mqtt://host",
            "mqtt://host:0",
            "mqtt://ho st:1883",
            "iot://",
            "iot://evil.com/path?x",
        ] {
            assert!(FeedSettings::parse(url, None, None).is_err(), "{url}");
        }
        for topic in ["", "a/+/b", "a/#", "/abs", "a b"] {
            assert_eq!(
                FeedSettings::parse("mqtt://h:1", Some(topic), None),
                Err(FeedSettingsError::Topic(topic.into()))
            );
        }
        assert!(FeedSettings::parse("mqtt://h:1", None, Some("a/b")).is_err());
    }
}
