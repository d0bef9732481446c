//! The refresh path and the agent's gRPC services, in process: real tonic
//! servers on ephemeral loopback ports, real signed Refresh calls, an
//! in-memory store standing in for Parameter Store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tenant_config_shared::auth::{AuthSettings, JwksSource, TokenVerifier};
use tenant_config_shared::cache::{CacheSettings, CachedStore};
use tenant_config_shared::domain::{Found, PlainValue, SecretValue};
use tenant_config_shared::grpc::{AgentServer, ReaderService, RefreshService};
use tenant_config_shared::refresh::discovery::{DiscoveryError, Instance, InstanceSource};
use tenant_config_shared::refresh::event::RefreshTarget;
use tenant_config_shared::refresh::fanout::{Fanout, FanoutSettings};
use tenant_config_shared::refresh::handler::{RefreshError, RefreshOutcome, Refresher};
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::proto::config_refresh_client::ConfigRefreshClient;
use tenant_config_shared::refresh::proto::{
    GetConfigRequest, GetConfigsRequest, Operation, RefreshRequest,
};
use tenant_config_shared::refresh::signing::{
    RefreshAuthenticator, RefreshKey, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, unix_ms_now,
};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::service::ConfigService;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName, StoreKind, TenantId};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST";
const CLIENT: &str = "agent-test-client";
const SERVICE: &str = "billing";

struct FixtureJwks;

#[async_trait]
impl JwksSource for FixtureJwks {
    async fn fetch(&self) -> Result<JwkSet, String> {
        serde_json::from_str(include_str!("fixtures/jwks.json")).map_err(|e| e.to_string())
    }
}

fn token(tenant: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": "u", "iss": ISSUER, "aud": CLIENT, "token_use": "id", "exp": now + 600, "custom:tenantId": tenant});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-key".into());
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(include_bytes!("fixtures/signing-key.pem")).unwrap(),
    )
    .unwrap()
}

fn refresh_key() -> RefreshKey {
    RefreshKey::new(b"test-refresh-key-of-at-least-32-bytes!".to_vec()).unwrap()
}

fn item(tenant: &str, key: &str) -> ItemKey {
    ItemKey::new(
        TenantId::parse(tenant).unwrap(),
        ServiceName::parse(SERVICE).unwrap(),
        ConfigKey::parse(key).unwrap(),
    )
}

fn plain(value: serde_json::Value) -> Found {
    Found::Plain(Arc::new(PlainValue {
        value,
        version: None,
    }))
}

/// The Parameter Store every agent reads, with the values of two tenants.
fn parameter_store() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    store.put(
        &item("tenant-a", "param_config_endpoint"),
        plain(json!("https://a/v1")),
    );
    store.put(
        &item("tenant-a", "param_config_other"),
        plain(json!("other-v1")),
    );
    store.put(
        &item("tenant-b", "param_config_endpoint"),
        plain(json!("https://b/v1")),
    );
    store.put(
        &item("tenant-a", "param_config_password"),
        Found::Secret(Some(SecretValue::new(json!("pw"), None))),
    );
    store
}

struct Agent {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts an agent with hour-long caches over `parameters`.
async fn start_agent(parameters: Arc<MemoryStore>) -> Agent {
    let hour = CacheSettings {
        ttl: Duration::from_secs(3600),
        not_found_ttl: Duration::from_secs(3600),
        max_entries: 1000,
    };
    let service = ConfigService::new(
        KeyRouter::default(),
        CachedStore::new(Arc::new(MemoryStore::new(StoreKind::DynamoDb)), hour),
        CachedStore::new(parameters, hour),
    );
    let auth = AuthSettings {
        issuer: ISSUER.into(),
        jwks_url: String::new(),
        client_ids: vec![CLIENT.into()],
        leeway: Duration::from_secs(5),
        token_cache_max_entries: 100,
        jwks_refresh_interval: Duration::from_secs(60),
    };
    let verifier = Arc::new(TokenVerifier::new(&auth, Arc::new(FixtureJwks)));
    let server = AgentServer::new(
        ReaderService::new(verifier, service.clone()),
        RefreshService::new(RefreshAuthenticator::new(refresh_key()), service),
    )
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Agent {
        address,
        stop: Some(stop),
    }
}

async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn read(address: SocketAddr, tenant: &str, key: &str) -> Result<String, tonic::Status> {
    let mut client = ConfigReaderClient::new(channel(address).await);
    let mut request = tonic::Request::new(GetConfigRequest {
        service: SERVICE.into(),
        key: key.into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(tenant)).parse().unwrap(),
    );
    let response = client.get_config(request).await?.into_inner();
    Ok(response.value.unwrap().value_json)
}

/// Asserts that the agent at `address` serves `expected` (JSON text) for `key` to `tenant`.
async fn assert_serves(address: SocketAddr, tenant: &str, key: &str, expected: &str) {
    let value = read(address, tenant, key).await.unwrap();
    assert_eq!(value, expected, "{address} serves {key} to {tenant}");
}

fn target(tenant: &str, key: &str, event_id: &str) -> RefreshTarget {
    RefreshTarget {
        item: item(tenant, key),
        operation: Operation::Update,
        event_id: event_id.into(),
        event_time_unix_ms: unix_ms_now(),
    }
}

fn instances(addresses: &[SocketAddr]) -> Vec<Instance> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, address)| Instance {
            id: format!("agent-{i}"),
            address: *address,
        })
        .collect()
}

/// An address nothing listens on: connections are refused.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An address that accepts TCP but never answers: only a deadline ends a call.
async fn silent_address() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

#[tokio::test]
async fn refresh_reaches_every_agent_and_drops_exactly_the_named_entry() {
    // GIVEN three agents that cached two keys of tenant A
    let store = parameter_store();
    let agents = [
        start_agent(store.clone()).await,
        start_agent(store.clone()).await,
        start_agent(store.clone()).await,
    ];
    for agent in &agents {
        assert_serves(
            agent.address,
            "tenant-a",
            "param_config_endpoint",
            "\"https://a/v1\"",
        )
        .await;
        assert_serves(
            agent.address,
            "tenant-a",
            "param_config_other",
            "\"other-v1\"",
        )
        .await;
    }
    // AND both keys then change in the store
    store.put(
        &item("tenant-a", "param_config_endpoint"),
        plain(json!("https://a/v2")),
    );
    store.put(
        &item("tenant-a", "param_config_other"),
        plain(json!("other-v2")),
    );

    // WHEN a refresh names only the endpoint
    let fanout = Fanout::new(refresh_key(), FanoutSettings::default());
    let addresses: Vec<SocketAddr> = agents.iter().map(|a| a.address).collect();
    let report = fanout
        .send(
            &instances(&addresses),
            &target("tenant-a", "param_config_endpoint", "evt-1"),
        )
        .await;

    // THEN every agent acknowledged and serves the new endpoint at once,
    // while the other key is still served from its (hour-long) cache
    assert_eq!((report.ok, report.failed.len()), (3, 0), "{report:?}");
    for agent in &agents {
        assert_serves(
            agent.address,
            "tenant-a",
            "param_config_endpoint",
            "\"https://a/v2\"",
        )
        .await;
        assert_serves(
            agent.address,
            "tenant-a",
            "param_config_other",
            "\"other-v1\"",
        )
        .await;
    }
}

#[tokio::test]
async fn a_dead_agent_fails_the_fanout_but_the_live_ones_still_refresh() {
    let store = parameter_store();
    let live = [
        start_agent(store.clone()).await,
        start_agent(store.clone()).await,
    ];
    for agent in &live {
        read(agent.address, "tenant-a", "param_config_endpoint")
            .await
            .unwrap();
    }
    store.put(
        &item("tenant-a", "param_config_endpoint"),
        plain(json!("https://a/v2")),
    );
    let addresses = vec![live[0].address, dead_address().await, live[1].address];
    let fanout = Fanout::new(refresh_key(), FanoutSettings::default());

    let report = fanout
        .send(
            &instances(&addresses),
            &target("tenant-a", "param_config_endpoint", "evt-2"),
        )
        .await;

    assert_eq!(report.ok, 2, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "agent-1");
    assert!(
        report.elapsed < Duration::from_secs(2),
        "refused connections fail fast: {:?}",
        report.elapsed
    );
    for agent in &live {
        assert_serves(
            agent.address,
            "tenant-a",
            "param_config_endpoint",
            "\"https://a/v2\"",
        )
        .await;
    }
}

#[tokio::test]
async fn unresponsive_agents_cost_one_deadline_in_total_not_one_each() {
    let store = parameter_store();
    let live = start_agent(store.clone()).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(silent_address().await);
    }
    let mut addresses: Vec<SocketAddr> = silent.iter().map(|(a, _)| *a).collect();
    addresses.push(live.address);
    let deadline = Duration::from_millis(400);
    let fanout = Fanout::new(
        refresh_key(),
        FanoutSettings {
            concurrency: 64,
            deadline,
        },
    );

    let started = Instant::now();
    let report = fanout
        .send(
            &instances(&addresses),
            &target("tenant-a", "param_config_endpoint", "evt-3"),
        )
        .await;
    let took = started.elapsed();

    assert_eq!((report.ok, report.failed.len()), (1, 4), "{report:?}");
    assert!(took >= deadline, "waited for the deadline: {took:?}");
    assert!(
        took < deadline * 2,
        "four silent agents cost one deadline, not four: {took:?}"
    );
}

async fn raw_refresh(
    address: SocketAddr,
    request: RefreshRequest,
    metadata: &[(&'static str, String)],
) -> Result<bool, tonic::Status> {
    let mut client = ConfigRefreshClient::new(channel(address).await);
    let mut call = tonic::Request::new(request);
    for (name, value) in metadata {
        call.metadata_mut().insert(*name, value.parse().unwrap());
    }
    Ok(client.refresh(call).await?.into_inner().duplicate)
}

fn refresh_request(event_id: &str) -> RefreshRequest {
    RefreshRequest {
        tenant_id: "tenant-a".into(),
        service: SERVICE.into(),
        key: "param_config_endpoint".into(),
        operation: Operation::Update as i32,
        event_id: event_id.into(),
        event_time_unix_ms: unix_ms_now(),
    }
}

#[tokio::test]
async fn unsigned_forged_stale_and_replayed_refreshes_leave_the_cache_alone() {
    // GIVEN an agent that cached tenant A's endpoint, which then changed in the store
    let store = parameter_store();
    let agent = start_agent(store.clone()).await;
    read(agent.address, "tenant-a", "param_config_endpoint")
        .await
        .unwrap();
    store.put(
        &item("tenant-a", "param_config_endpoint"),
        plain(json!("https://a/v2")),
    );
    let cached = "\"https://a/v1\"";

    // WHEN refreshes arrive unsigned, signed with another key, or signed too long ago
    let request = refresh_request("evt-4");
    let (ts, forged) = sign(
        &RefreshKey::new(vec![9u8; 32]).unwrap(),
        &request,
        unix_ms_now(),
    );
    let (old_ts, old_sig) = sign(&refresh_key(), &request, unix_ms_now() - 61_000);
    for metadata in [
        vec![],
        vec![(TIMESTAMP_HEADER, ts.clone()), (SIGNATURE_HEADER, forged)],
        vec![(TIMESTAMP_HEADER, old_ts), (SIGNATURE_HEADER, old_sig)],
    ] {
        let err = raw_refresh(agent.address, request.clone(), &metadata)
            .await
            .unwrap_err();
        // THEN each is UNAUTHENTICATED and the cached value stays
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert_serves(agent.address, "tenant-a", "param_config_endpoint", cached).await;
    }

    // WHEN a valid refresh arrives THEN the entry is dropped
    let (ts, sig) = sign(&refresh_key(), &request, unix_ms_now());
    let valid = [(TIMESTAMP_HEADER, ts), (SIGNATURE_HEADER, sig)];
    assert!(
        !raw_refresh(agent.address, request.clone(), &valid)
            .await
            .unwrap()
    );
    assert_serves(
        agent.address,
        "tenant-a",
        "param_config_endpoint",
        "\"https://a/v2\"",
    )
    .await;

    // WHEN the same event is replayed after the value changed again
    store.put(
        &item("tenant-a", "param_config_endpoint"),
        plain(json!("https://a/v3")),
    );
    let (ts, sig) = sign(&refresh_key(), &request, unix_ms_now());
    let replayed = raw_refresh(
        agent.address,
        request,
        &[(TIMESTAMP_HEADER, ts), (SIGNATURE_HEADER, sig)],
    )
    .await
    .unwrap();
    // THEN it is acknowledged as a duplicate and does nothing
    assert!(replayed);
    assert_serves(
        agent.address,
        "tenant-a",
        "param_config_endpoint",
        "\"https://a/v2\"",
    )
    .await;
}

#[tokio::test]
async fn callers_read_only_their_own_tenant_over_grpc() {
    let agent = start_agent(parameter_store()).await;
    assert_serves(
        agent.address,
        "tenant-b",
        "param_config_endpoint",
        "\"https://b/v1\"",
    )
    .await;
    let err = read(agent.address, "tenant-b", "param_config_other")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "tenant B cannot see tenant A's key"
    );
    assert!(!err.message().contains("other-v1"));
    let secret = read(agent.address, "tenant-a", "param_config_password")
        .await
        .unwrap_err();
    assert_eq!(secret.code(), Code::FailedPrecondition);

    let mut client = ConfigReaderClient::new(channel(agent.address).await);
    let anonymous = client
        .get_config(GetConfigRequest {
            service: SERVICE.into(),
            key: "param_config_endpoint".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let mut batch = tonic::Request::new(GetConfigsRequest {
        service: SERVICE.into(),
        keys: vec!["param_config_endpoint".into(), "param_config_other".into()],
    });
    batch.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tenant-b")).parse().unwrap(),
    );
    let answer = client.get_configs(batch).await.unwrap().into_inner();
    assert_eq!(answer.values.len(), 1);
    assert_eq!(answer.values[0].value_json, "\"https://b/v1\"");
    assert_eq!(answer.missing, vec!["param_config_other".to_owned()]);
}

#[tokio::test]
async fn the_agent_reports_serving_on_grpc_health() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let agent = start_agent(parameter_store()).await;
    let mut health = HealthClient::new(channel(agent.address).await);
    for service in [
        "",
        "tenantconfig.v1.ConfigReader",
        "tenantconfig.v1.ConfigRefresh",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 1, "{service} is SERVING");
    }
}

struct StaticInstances(Vec<Instance>);

#[async_trait]
impl InstanceSource for StaticInstances {
    async fn healthy_instances(&self) -> Result<Vec<Instance>, DiscoveryError> {
        Ok(self.0.clone())
    }
}

fn refresher(addresses: &[SocketAddr]) -> Refresher {
    Refresher::new(
        "/config-service",
        KeyRouter::default(),
        Arc::new(StaticInstances(instances(addresses))),
        Fanout::new(refresh_key(), FanoutSettings::default()),
    )
}

#[tokio::test]
async fn the_refresh_handler_delivers_the_sample_event_and_fails_on_undelivered() {
    let event: serde_json::Value = serde_json::from_str(include_str!(
        "../../events/parameter-store-change-update.json"
    ))
    .unwrap();
    let store = parameter_store();
    let agent = start_agent(store.clone()).await;
    read(agent.address, "tenant-a", "param_config_endpoint")
        .await
        .unwrap();
    store.put(
        &item("tenant-a", "param_config_endpoint"),
        plain(json!("https://a/v2")),
    );

    let outcome = refresher(&[agent.address])
        .handle(event.clone())
        .await
        .unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Delivered(ref r) if r.ok == 1),
        "{outcome:?}"
    );
    assert_serves(
        agent.address,
        "tenant-a",
        "param_config_endpoint",
        "\"https://a/v2\"",
    )
    .await;

    let with_dead = refresher(&[agent.address, dead_address().await])
        .handle(event)
        .await;
    assert!(
        matches!(
            with_dead,
            Err(RefreshError::Undelivered {
                ok: 1,
                instances: 2,
                ..
            })
        ),
        "{with_dead:?}"
    );

    let nobody = refresher(&[])
        .handle(
            serde_json::from_str(include_str!(
                "../../events/parameter-store-change-create.json"
            ))
            .unwrap(),
        )
        .await;
    assert!(
        matches!(nobody, Ok(RefreshOutcome::Delivered(ref r)) if r.instances == 0),
        "zero agents is success"
    );

    let malformed = refresher(&[])
        .handle(json!({"detail-type": "Parameter Store Change"}))
        .await;
    assert!(
        matches!(malformed, Err(RefreshError::Malformed(_))),
        "{malformed:?}"
    );
    let mut foreign = serde_json::from_str::<serde_json::Value>(include_str!(
        "../../events/parameter-store-change-update.json"
    ))
    .unwrap();
    foreign["detail"]["name"] = json!("/other-app/tenant-a/billing/param_config_endpoint");
    assert!(matches!(
        refresher(&[]).handle(foreign).await,
        Ok(RefreshOutcome::Ignored(_))
    ));
}
