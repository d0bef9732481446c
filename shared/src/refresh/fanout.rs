//! Sending one signed Refresh to every agent, concurrently, with deadlines.

use crate::metrics::{Counter, metrics};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

use super::change::ChangeRecord;
use super::discovery::Instance;
use super::proto::RefreshRequest;
use super::proto::config_refresh_client::ConfigRefreshClient;
use super::signing::{RefreshKey, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, unix_ms_now};

#[derive(Debug, Clone, Copy)]
pub struct FanoutSettings {
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Budget per instance, retry included.
    pub deadline: Duration,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            deadline: Duration::from_secs(2),
        }
    }
}

/// Outcome of one fan-out.
#[derive(Debug, Clone, Default)]
pub struct FanoutReport {
    pub instances: usize,
    pub ok: usize,
    /// Ids of the instances that acknowledged.
    pub acknowledged: Vec<String>,
    /// Instance id and reason, for every instance that did not acknowledge.
    pub failed: Vec<(String, String)>,
    pub elapsed: Duration,
}

/// Where config-refresh's fan-out comes from: a [`Fanout`] is one, always
/// ready; [`super::key::KeyLoadingFanout`] builds one once the signing key can
/// be read, so that a missing or malformed key stops pushes only.
#[async_trait::async_trait]
pub trait FanoutSource: Send + Sync {
    /// The fan-out to push with, or why there is none.
    async fn fanout(&self) -> Result<&Fanout, String>;

    /// The signing key alone: change notices need it, not the agents'
    /// transport, so a missing CA stops pushes, never the change feed.
    async fn signing_key(&self) -> Result<RefreshKey, String> {
        self.fanout().await.map(|fanout| fanout.key().clone())
    }
}

#[async_trait::async_trait]
impl FanoutSource for Fanout {
    async fn fanout(&self) -> Result<&Fanout, String> {
        Ok(self)
    }
}

/// Pause before the single retry of a transient failure.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Sends Refresh calls; keeps one channel per agent address across calls (and
/// across warm Lambda invocations) so a warm fan-out reuses connections.
pub struct Fanout {
    key: RefreshKey,
    settings: FanoutSettings,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
    /// TLS to the agents' Refresh listeners, when configured; replaced
    /// (with every channel) when the agents' CA bundle changes.
    tls: std::sync::RwLock<Option<ClientTlsConfig>>,
}

/// How config-refresh verifies agents' Refresh listeners: the CA that signed
/// their certificates (PEM) and the name those certificates carry (agents
/// are reached by IP, so the name is given, not taken from the address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTls {
    pub ca_pem: String,
    pub domain: String,
}

impl Fanout {
    pub fn new(key: RefreshKey, settings: FanoutSettings) -> Self {
        Self {
            key,
            settings,
            channels: Mutex::new(HashMap::new()),
            tls: std::sync::RwLock::new(None),
        }
    }

    /// Calls agents over TLS, verifying their certificates against `tls`.
    pub fn with_tls(self, tls: &RefreshTls) -> Self {
        self.replace_tls(tls);
        self
    }

    /// Verifies agents against `tls` from now on: channels opened with the
    /// previous CA bundle are dropped, so the next call connects afresh.
    pub fn replace_tls(&self, tls: &RefreshTls) {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .domain_name(&tls.domain);
        if let Ok(mut current) = self.tls.write() {
            *current = Some(config);
        }
        if let Ok(mut channels) = self.channels.lock() {
            channels.clear();
        }
    }

    pub fn settings(&self) -> FanoutSettings {
        self.settings
    }

    fn channel(&self, address: SocketAddr) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| "channel pool poisoned".to_owned())?;
        if let Some(channel) = channels.get(&address) {
            return Ok(channel.clone());
        }
        let tls = self
            .tls
            .read()
            .map_err(|_| "TLS settings poisoned".to_owned())?
            .clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{address}")).map_err(|e| e.to_string())?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let channel = endpoint
            .connect_timeout(self.settings.deadline)
            .timeout(self.settings.deadline)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address, channel.clone());
        Ok(channel)
    }

    /// Forgets channels of agents that are no longer registered.
    fn retain_channels(&self, instances: &[Instance]) {
        let current: HashSet<SocketAddr> = instances.iter().map(|i| i.address).collect();
        if let Ok(mut channels) = self.channels.lock() {
            channels.retain(|address, _| current.contains(address));
        }
    }

    /// The key Refresh calls (and change notices) are signed with.
    pub fn key(&self) -> &RefreshKey {
        &self.key
    }

    /// Sends a Refresh naming `change` to every instance and waits for all answers (or deadlines).
    pub async fn send(&self, instances: &[Instance], change: &ChangeRecord) -> FanoutReport {
        let started = Instant::now();
        self.retain_channels(instances);
        // The target is set per agent, as each call is signed.
        let request = change.refresh_request();
        let results: Vec<(&Instance, Result<(), String>)> = futures::stream::iter(instances)
            .map(|instance| {
                let request = &request;
                async move { (instance, self.send_one(instance, request).await) }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let mut report = FanoutReport {
            instances: instances.len(),
            ..FanoutReport::default()
        };
        for (instance, result) in results {
            match result {
                Ok(()) => {
                    report.ok += 1;
                    report.acknowledged.push(instance.id.clone());
                }
                Err(reason) => report.failed.push((instance.id.clone(), reason)),
            }
        }
        report.elapsed = started.elapsed();
        metrics().add(Counter::RefreshDeliveries, report.ok as u64);
        metrics().add(Counter::RefreshFailures, report.failed.len() as u64);
        report
    }

    /// One instance: a call, and one retry for a transient failure if the
    /// instance's budget allows it.
    async fn send_one(&self, instance: &Instance, request: &RefreshRequest) -> Result<(), String> {
        let budget_end = Instant::now() + self.settings.deadline;
        let channel = self.channel(instance.address)?;
        let mut attempt = 0;
        loop {
            let remaining = budget_end.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!("deadline of {:?} exceeded", self.settings.deadline));
            }
            // Signed for this agent only.
            let request = RefreshRequest {
                target: instance.address.to_string(),
                ..request.clone()
            };
            let (timestamp, signature) = sign(&self.key, &request, unix_ms_now());
            let mut call = Request::new(request);
            let metadata = call.metadata_mut();
            metadata.insert(
                TIMESTAMP_HEADER,
                timestamp.parse().map_err(|_| "bad timestamp metadata")?,
            );
            metadata.insert(
                SIGNATURE_HEADER,
                signature.parse().map_err(|_| "bad signature metadata")?,
            );
            call.set_timeout(remaining);
            let mut client = ConfigRefreshClient::new(channel.clone());
            let status = match tokio::time::timeout(remaining, client.refresh(call)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(status)) => status,
                Err(_) => return Err(format!("deadline of {:?} exceeded", self.settings.deadline)),
            };
            let transient = matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::ResourceExhausted | Code::Aborted
            );
            if !transient || attempt == 1 {
                return Err(format!("{:?}: {}", status.code(), status.message()));
            }
            attempt += 1;
            tokio::time::sleep(
                RETRY_PAUSE.min(budget_end.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }
}
