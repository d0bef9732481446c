//! The change feed's broker in the local stack: rumqttd, a real MQTT 3.1.1
//! broker, run as a process of its own (`tenant-config-broker`, this
//! package's second binary: a broker with thousands of clients needs file
//! descriptors of its own) on a free loopback port. It plays AWS
//! IoT Core, which moto does not deliver through: config-refresh publishes to
//! it and agents subscribe to it over plain MQTT (`mqtt://127.0.0.1:PORT`).
//! What IoT Core adds (TLS, SigV4, its policy) is covered by
//! `tenant_config_shared::notices::iot`'s tests and the template's checks.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::process::Command;

use crate::process::{ProcessGroup, binary_of};

/// The largest message the broker takes (a notice is at most 128 KB).
const MAX_PAYLOAD: usize = 256 * 1024;

pub struct Broker {
    pub port: u16,
    _process: ProcessGroup,
}

/// Runs a broker on `listen` until the process ends (the binary's body).
pub fn serve(listen: SocketAddr, max_connections: usize) -> Result<(), String> {
    let server = ServerSettings {
        name: "tenant-config-feed".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: max_connections.max(16),
            max_outgoing_packet_count: 1000,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    };
    rumqttd::Broker::new(config)
        .start()
        .map_err(|e| format!("the broker stopped: {e}"))
}

impl Broker {
    /// Starts the `profile` build of the broker taking up to
    /// `max_connections` clients (the scale benchmark's readers are each
    /// one) and waits until it accepts.
    pub async fn start(max_connections: usize, profile: &str) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port for the broker: {e}"))?
            .port();
        Self::start_on(port, max_connections, profile).await
    }

    /// As [`Broker::start`], on `port`: a broker restarted where its
    /// clients knew it.
    pub async fn start_on(
        port: u16,
        max_connections: usize,
        profile: &str,
    ) -> Result<Self, String> {
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(binary_of("tenant-config-broker", profile));
        command
            .arg(listen.to_string())
            .arg(max_connections.to_string())
            .env("RUST_LOG", "warn");
        let mut process = ProcessGroup::spawn("mqtt-broker", command).map_err(|e| e.to_string())?;
        process
            .wait_until(
                "accept connections",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || async move {
                    TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
                },
            )
            .await?;
        Ok(Self {
            port,
            _process: process,
        })
    }

    /// `CHANGE_FEED_URL` for this broker.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}
