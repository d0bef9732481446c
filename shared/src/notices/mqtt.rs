//! The change feed over MQTT 3.1.1 (rumqttc): a reader's subscription loop,
//! and the publisher config-refresh uses against a plain broker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};

use crate::catch_up::Invalidate;
use crate::refresh::signing::{TrustedKeys, unix_ms_now};

use super::feed::{FeedSettings, NoticePublisher, PUBLISH_TIMEOUT, PublishError};
use super::follower::NoticeFollower;
use super::{MAX_NOTICE_BYTES, random_share, verify};

/// MQTT keep-alive: a dead connection is noticed when a second ping goes
/// unanswered, within about twice this.
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// How often the follower checks for a gap outliving its grace.
const TICK: Duration = Duration::from_millis(200);
/// Reconnection waits: a random share of this, doubling with each failure
/// up to [`MAX_RETRY`]. Random from the first: a fleet cut off together
/// (a broker restart) comes back spread over seconds, not in one burst of
/// connections and journal reads (IoT Core limits connections per second).
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Connect timeout, seconds (rumqttc counts whole seconds).
const CONNECT_TIMEOUT_SECS: u64 = 5;

/// The options every connection of ours starts from.
pub fn base_options(client_id: String, host: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_NOTICE_BYTES + 4096, MAX_NOTICE_BYTES + 4096);
    options
}

/// How a reader's connection is made: plain MQTT, or IoT Core's signed
/// WebSocket ([`super::iot::IotCoreConnector`]).
#[async_trait]
pub trait Connector: Send + Sync {
    /// The options for a connection with `client_id`.
    async fn options(&self, client_id: String) -> Result<MqttOptions, String>;
}

/// Plain MQTT to `mqtt://host:port`.
pub struct PlainConnector {
    pub host: String,
    pub port: u16,
}

#[async_trait]
impl Connector for PlainConnector {
    async fn options(&self, client_id: String) -> Result<MqttOptions, String> {
        Ok(base_options(client_id, &self.host, self.port))
    }
}

/// Follows the feed until the task is dropped: connects, subscribes, hands
/// every verified notice to `follower`, and reconnects whenever the
/// connection breaks, telling the follower so that the reader polls the
/// journal meanwhile. The follower's clock (gaps, silence) ticks in a task
/// of its own, so that the connection's events are never given up half
/// read (rumqttc's connect is not cancel-safe).
pub async fn follow<R: Invalidate + Send + 'static>(
    settings: FeedSettings,
    connector: Arc<dyn Connector>,
    keys: TrustedKeys,
    follower: Arc<NoticeFollower<R>>,
) {
    // However this ends (dropped, or a panic), the reader goes back to
    // polling the journal, and its ticks stop.
    let _guard = Following {
        follower: follower.clone(),
        ticks: tokio::spawn(tick(follower.clone())),
    };
    let mut retry = FIRST_RETRY;
    loop {
        let client_id = settings.client_id("reader");
        match connector.options(client_id).await {
            Ok(options) => {
                if session(&settings, options, &keys, &follower).await {
                    retry = FIRST_RETRY;
                }
            }
            Err(error) => tracing::warn!(%error, "change feed: cannot make connection options"),
        }
        follower.on_disconnected();
        tokio::time::sleep(jittered(retry)).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Ends a follow: the reader polls again, its ticks stop.
struct Following<R: Invalidate + Send + 'static> {
    follower: Arc<NoticeFollower<R>>,
    ticks: tokio::task::JoinHandle<()>,
}

impl<R: Invalidate + Send + 'static> Drop for Following<R> {
    fn drop(&mut self) {
        self.ticks.abort();
        self.follower.on_disconnected();
    }
}

async fn tick<R: Invalidate + Send + 'static>(follower: Arc<NoticeFollower<R>>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        follower.tick().await;
    }
}

/// 10 % to 100 % of the wait.
fn jittered(wait: Duration) -> Duration {
    wait / 10 + random_share(wait * 9 / 10)
}

/// One connection, until it breaks; returns whether it was subscribed.
async fn session<R: Invalidate + Send + 'static>(
    settings: &FeedSettings,
    options: MqttOptions,
    keys: &TrustedKeys,
    follower: &NoticeFollower<R>,
) -> bool {
    let (client, mut events) = AsyncClient::new(options, 16);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    events.set_network_options(network);
    let mut subscribed = false;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // QoS 0: IoT Core meters every PUBACK a client sends as a
                // message, doubling each delivery's price; a notice lost
                // on the way is what the sequence numbers are for.
                if let Err(error) = client.try_subscribe(&settings.topic, QoS::AtMostOnce) {
                    tracing::warn!(%error, "change feed: cannot subscribe");
                    return subscribed;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    tracing::warn!(topic = %settings.topic, "change feed: subscription refused");
                    return subscribed;
                }
                subscribed = true;
                tracing::info!(topic = %settings.topic, "change feed: subscribed");
                follower.on_subscribed().await;
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                match verify(&publish.payload, keys, unix_ms_now()) {
                    Ok(notice) => follower.on_notice(&notice).await,
                    Err(error) => tracing::warn!(%error, "change feed: dropped a notice"),
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "change feed: connection broke");
                return subscribed;
            }
        }
    }
}

/// Publishes to a plain MQTT broker (the local stack's, or one of your
/// own), QoS 1, retained. The connection is kept between invocations while
/// it has been idle for less than the keep-alive (the broker drops a client
/// silent for 1.5 × that): a process that stays up between invocations
/// (cargo lambda watch, a container) announces without a connection's
/// handshake each time, which a broker serving thousands of readers answers
/// slowly. One idle longer (a Lambda function frozen between invocations)
/// connects again. A kept connection that fails, or does not acknowledge
/// within [`KEPT_CONNECTION_PATIENCE`] (a socket that died silently), is
/// replaced once; a notice published twice only drops entries twice.
pub struct MqttPublisher {
    settings: FeedSettings,
    host: String,
    port: u16,
    kept: tokio::sync::Mutex<Option<Kept>>,
    connections: std::sync::atomic::AtomicUsize,
}

/// How long a kept connection may take to acknowledge before the notices go
/// out on a new one, within [`PUBLISH_TIMEOUT`].
pub const KEPT_CONNECTION_PATIENCE: Duration = Duration::from_secs(2);

/// A publisher's connection and when it last carried a packet.
struct Kept {
    client: AsyncClient,
    events: EventLoop,
    used: tokio::time::Instant,
}

impl MqttPublisher {
    /// For the broker at `host:port` (the feed's `mqtt://` endpoint).
    pub fn new(settings: &FeedSettings, host: &str, port: u16) -> Self {
        Self {
            settings: settings.clone(),
            host: host.to_owned(),
            port,
            kept: tokio::sync::Mutex::new(None),
            connections: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Connections made so far: publishes within the keep-alive of the last
    /// share one; a failure or a longer idle makes another.
    pub fn connections_made(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn connect(&self) -> Kept {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let options = base_options(self.settings.client_id("publisher"), &self.host, self.port);
        // Requests queued at once: a chunk of notices (see `publish_on`)
        // and a ping.
        let (client, events) = AsyncClient::new(options, 64);
        Kept {
            client,
            events,
            used: tokio::time::Instant::now(),
        }
    }

    async fn publish_all(&self, payloads: &[Vec<u8>]) -> Result<(), PublishError> {
        let mut kept = self.kept.lock().await;
        // Idle for less than the keep-alive: the broker still holds it. A
        // ping still unanswered would make rumqttc drop it at the next
        // keep-alive tick.
        let reusable = kept
            .take()
            .filter(|k| k.used.elapsed() < KEEP_ALIVE && !k.events.state.await_pingresp);
        let (mut connection, retry) = match reusable {
            Some(connection) => (connection, true),
            None => (self.connect(), false),
        };
        let mut outcome = if retry {
            tokio::time::timeout(
                KEPT_CONNECTION_PATIENCE,
                self.publish_on(&mut connection, payloads),
            )
            .await
            .unwrap_or(Err(PublishError::TimedOut(KEPT_CONNECTION_PATIENCE)))
        } else {
            self.publish_on(&mut connection, payloads).await
        };
        if outcome.is_err() && retry {
            tracing::info!("change feed: the kept connection failed; publishing on a new one");
            connection = self.connect();
            outcome = self.publish_on(&mut connection, payloads).await;
        }
        if outcome.is_ok() {
            connection.used = tokio::time::Instant::now();
            *kept = Some(connection);
        }
        outcome
    }

    /// Publishes on one connection and waits for every acknowledgement.
    async fn publish_on(
        &self,
        connection: &mut Kept,
        payloads: &[Vec<u8>],
    ) -> Result<(), PublishError> {
        let mut acknowledged = 0;
        for chunk in payloads.chunks(32) {
            for payload in chunk {
                connection
                    .client
                    .try_publish(
                        &self.settings.topic,
                        QoS::AtLeastOnce,
                        true,
                        payload.clone(),
                    )
                    .map_err(|e| PublishError::Failed(e.to_string()))?;
            }
            let wanted = acknowledged + chunk.len();
            while acknowledged < wanted {
                match connection.events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acknowledged += 1,
                    Ok(_) => {}
                    Err(error) => return Err(PublishError::Failed(error.to_string())),
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl NoticePublisher for MqttPublisher {
    async fn publish(&self, payloads: &[Vec<u8>]) -> Result<(), PublishError> {
        if payloads.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(PUBLISH_TIMEOUT, self.publish_all(payloads))
            .await
            .map_err(|_| PublishError::TimedOut(PUBLISH_TIMEOUT))?
    }
}
