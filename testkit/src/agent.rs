//! Real agent servers (ConfigReader, ConfigRefresh, health) on ephemeral
//! loopback ports, over whatever stores a test gives them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tenant_config_shared::StoreKind;
use tenant_config_shared::agent::server::{AgentServer, ReaderService, RefreshService};
use tenant_config_shared::auth::TokenVerifier;
use tenant_config_shared::cache::{CacheSettings, CachedStore, StaleIfError};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::signing::{RefreshAuthenticator, RefreshKey, TrustedKeys};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::watch::ChangeFeed;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::identity;

/// Caches that only a Refresh empties within a test's lifetime.
pub const HOUR_LONG_CACHE: CacheSettings = CacheSettings {
    ttl: Duration::from_secs(3600),
    not_found_ttl: Duration::from_secs(3600),
    max_entries: 1000,
    stale: StaleIfError::DEFAULT,
};

/// Caches whose entries live `ttl`, for the stale-if-error suites: a
/// failing store is retried every 200 ms, its last good value served for a
/// minute.
pub const fn short_lived_cache(ttl: Duration) -> CacheSettings {
    CacheSettings {
        ttl,
        not_found_ttl: ttl,
        max_entries: 100,
        stale: StaleIfError {
            max_stale: Duration::from_secs(60),
            retry_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(200),
        },
    }
}

/// The signing key the test fan-outs use.
pub fn refresh_key() -> RefreshKey {
    RefreshKey::from_seed("test", &[0x5a; 32]).expect("a 32-byte seed")
}

/// The public half of [`refresh_key`], which the test agents trust.
pub fn trusted_keys() -> TrustedKeys {
    refresh_key().trusted()
}

/// Reads over `parameters` (and an empty DynamoDB), with hour-long caches.
pub fn hour_long_reads(parameters: Arc<MemoryStore>) -> ConfigReads {
    hour_long_reads_over(Arc::new(MemoryStore::new(StoreKind::DynamoDb)), parameters)
}

/// Reads over both in-memory stores, with hour-long caches.
pub fn hour_long_reads_over(
    dynamodb: Arc<MemoryStore>,
    parameters: Arc<MemoryStore>,
) -> ConfigReads {
    ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb, HOUR_LONG_CACHE),
        CachedStore::new(parameters, HOUR_LONG_CACHE),
    )
}

/// The server an agent runs: ConfigReader with `verifier`, ConfigRefresh
/// trusting `keys`, both over `reads`.
pub async fn server(
    verifier: Arc<TokenVerifier>,
    reads: ConfigReads,
    keys: TrustedKeys,
) -> AgentServer {
    agent_server(ReaderService::new, verifier, reads, keys).await
}

/// [`server`] answering GetSecret too (`AGENT_SERVE_SECRETS=true`).
pub async fn secrets_server(
    verifier: Arc<TokenVerifier>,
    reads: ConfigReads,
    keys: TrustedKeys,
) -> AgentServer {
    let reader = |verifier, reads| ReaderService::new(verifier, reads).serving_secrets();
    agent_server(reader, verifier, reads, keys).await
}

async fn agent_server(
    reader: impl FnOnce(Arc<TokenVerifier>, ConfigReads) -> ReaderService,
    verifier: Arc<TokenVerifier>,
    reads: ConfigReads,
    keys: TrustedKeys,
) -> AgentServer {
    // As the agent does: one change feed for the reader and Refresh.
    let reads = match reads.change_feed() {
        Some(_) => reads,
        None => reads.with_change_feed(Arc::new(ChangeFeed::default())),
    };
    AgentServer::new(
        reader(verifier, reads.clone()),
        RefreshService::new(RefreshAuthenticator::new(keys), reads),
    )
    .await
}

/// An agent serving on a loopback port; stops when dropped.
pub struct TestAgent {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl TestAgent {
    /// Trusts the fixture identity pool and [`refresh_key`]'s public half.
    pub async fn start(reads: ConfigReads) -> Self {
        Self::start_with(identity::verifier(), reads, trusted_keys()).await
    }

    pub async fn start_with(
        verifier: Arc<TokenVerifier>,
        reads: ConfigReads,
        keys: TrustedKeys,
    ) -> Self {
        Self::start_on("127.0.0.1:0", verifier, reads, keys).await
    }

    /// Serving on `address` (e.g. `0.0.0.0:0`, to be reached from a
    /// routable address as well as loopback).
    pub async fn start_on(
        address: &str,
        verifier: Arc<TokenVerifier>,
        reads: ConfigReads,
        keys: TrustedKeys,
    ) -> Self {
        Self::serve_on(address, server(verifier, reads, keys).await).await
    }

    /// `server` on `address`.
    pub async fn serve_on(address: &str, server: AgentServer) -> Self {
        let listener = TcpListener::bind(address).await.expect("bind a port");
        let address = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
        }
    }

    /// `http://address`, for a tonic endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
