//! The refresh path and the agent's gRPC services, in process: real tonic
//! servers on ephemeral loopback ports, real signed Refresh calls, an
//! in-memory store standing in for Parameter Store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tenant_config_shared::StoreKind;
use tenant_config_shared::domain::{Found, SecretValue};
use tenant_config_shared::refresh::change::ChangeRecord;
use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::refresh::discovery::{DiscoveryError, InstanceHealth};
use tenant_config_shared::refresh::fanout::{Fanout, FanoutSettings, FanoutSource};
use tenant_config_shared::refresh::handler::{RefreshError, RefreshOutcome, Refresher};
use tenant_config_shared::refresh::journal::MemoryJournal;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::proto::config_refresh_client::ConfigRefreshClient;
use tenant_config_shared::refresh::proto::{
    GetConfigRequest, GetConfigsRequest, Operation, RefreshRequest,
};
use tenant_config_shared::refresh::signing::{
    RefreshKey, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, unix_ms_now,
};
use tenant_config_shared::refresh::stage_cache::{FlushRequests, StageCache, StageCacheError};
use tenant_config_shared::refresh::stale::StaleSettings;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::agent::{TestAgent, hour_long_reads, hour_long_reads_over, refresh_key};
use tenant_config_testkit::discovery::{StaticInstances, instances};
use tenant_config_testkit::identity::token;
use tenant_config_testkit::net::{SilentListener, dead_address};
use tenant_config_testkit::values::plain;
use tonic::Code;
use tonic::transport::Channel;

const SERVICE: &str = "billing";

fn item(tenant: &str, key: &str) -> tenant_config_shared::ItemKey {
    tenant_config_testkit::values::item(tenant, SERVICE, key)
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

/// Starts an agent with hour-long caches over `parameters`.
async fn start_agent(parameters: Arc<MemoryStore>) -> TestAgent {
    TestAgent::start(hour_long_reads(parameters)).await
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

fn target(tenant: &str, key: &str, change_id: &str) -> ChangeRecord {
    ChangeRecord {
        subject: Subject::Entry(item(tenant, key)),
        store: StoreKind::ParameterStore,
        operation: Operation::Update,
        change_id: change_id.into(),
        time_unix_ms: unix_ms_now(),
        audit: Default::default(),
        value_type: None,
    }
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
        silent.push(SilentListener::start().await);
    }
    let mut addresses: Vec<SocketAddr> = silent.iter().map(|s| s.address).collect();
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
        value_type: String::new(),
        target: String::new(),
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
    // (a key the agent does not trust, and another key claiming a trusted id)
    let (ts, foreign) = sign(
        &RefreshKey::from_seed("elsewhere", &[9u8; 32]).unwrap(),
        &request,
        unix_ms_now(),
    );
    let (forged_ts, forged) = sign(
        &RefreshKey::from_seed(refresh_key().id(), &[9u8; 32]).unwrap(),
        &request,
        unix_ms_now(),
    );
    let (old_ts, old_sig) = sign(&refresh_key(), &request, unix_ms_now() - 61_000);
    for metadata in [
        vec![],
        vec![(TIMESTAMP_HEADER, ts.clone()), (SIGNATURE_HEADER, foreign)],
        vec![(TIMESTAMP_HEADER, forged_ts), (SIGNATURE_HEADER, forged)],
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

fn refresher(addresses: &[SocketAddr]) -> Refresher {
    Refresher::new(
        "/config-service",
        KeyRouter::default(),
        Arc::new(StaticInstances(instances(addresses))),
        Arc::new(Fanout::new(refresh_key(), FanoutSettings::default())),
        Arc::new(MemoryJournal::new()),
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

/// A DynamoDB stream record as the event source mapping delivers it.
fn stream_record(event_name: &str, tenant: &str, key: &str, sequence: &str) -> serde_json::Value {
    json!({
        "eventID": format!("stream-{sequence}"),
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": (unix_ms_now() / 1000) as f64,
            "Keys": {"pk": {"S": format!("TENANT#{tenant}")}, "sk": {"S": format!("CONFIG#{SERVICE}#{key}")}},
            "SequenceNumber": sequence,
            "SizeBytes": 60,
            "StreamViewType": "KEYS_ONLY"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/tenant-config/stream/2026-11-23T00:00:00.000"
    })
}

#[tokio::test]
async fn a_stream_batch_refreshes_dynamodb_entries_and_reports_only_the_bad_record() {
    // GIVEN two agents that cached two DynamoDB values of tenant A, which
    // then both change in the table
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    for (key, value) in [
        ("tenant_config_limits", "v1"),
        ("tenant_config_theme", "dark"),
    ] {
        dynamodb.put(&item("tenant-a", key), plain(json!(value)));
    }
    let agents = [
        TestAgent::start(hour_long_reads_over(dynamodb.clone(), parameter_store())).await,
        TestAgent::start(hour_long_reads_over(dynamodb.clone(), parameter_store())).await,
    ];
    for agent in &agents {
        assert_serves(agent.address, "tenant-a", "tenant_config_limits", "\"v1\"").await;
        assert_serves(agent.address, "tenant-a", "tenant_config_theme", "\"dark\"").await;
    }
    dynamodb.put(
        &item("tenant-a", "tenant_config_limits"),
        plain(json!("v2")),
    );
    dynamodb.put(
        &item("tenant-a", "tenant_config_theme"),
        plain(json!("light")),
    );

    // WHEN config-refresh gets a batch naming the limits, a record it cannot
    // read, and an item that is not configuration
    let mut unreadable = stream_record("MODIFY", "tenant-a", "tenant_config_x", "200");
    unreadable["dynamodb"]["Keys"] = json!({"pk": {"N": "1"}});
    let mut journal = stream_record("INSERT", "tenant-a", "tenant_config_x", "300");
    journal["dynamodb"]["Keys"]["sk"] = json!({"S": "JOURNAL#0001"});
    let batch = json!({"Records": [
        stream_record("MODIFY", "tenant-a", "tenant_config_limits", "100"),
        unreadable,
        journal,
    ]});
    let addresses: Vec<SocketAddr> = agents.iter().map(|a| a.address).collect();
    let outcome = refresher(&addresses).handle(batch).await.unwrap();

    // THEN only the unreadable record is reported for retry, every agent
    // serves the new limits, and the theme (not named) stays cached
    assert_eq!(
        outcome.to_json(),
        json!({"batchItemFailures": [{"itemIdentifier": "200"}]})
    );
    let RefreshOutcome::Batch(report) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (report.records, report.delivered, report.ignored),
        (3, 1, 1)
    );
    for agent in &agents {
        assert_serves(agent.address, "tenant-a", "tenant_config_limits", "\"v2\"").await;
        assert_serves(agent.address, "tenant-a", "tenant_config_theme", "\"dark\"").await;
    }
}

#[tokio::test]
async fn records_an_agent_did_not_acknowledge_are_reported_for_retry() {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let live = TestAgent::start(hour_long_reads_over(dynamodb, parameter_store())).await;
    let batch = json!({"Records": [
        stream_record("MODIFY", "tenant-a", "tenant_config_limits", "100"),
        stream_record("REMOVE", "tenant-a", "tenant_config_theme", "101"),
    ]});

    let started = Instant::now();
    let outcome = refresher(&[live.address, dead_address().await])
        .handle(batch)
        .await
        .unwrap();

    assert_eq!(
        outcome.to_json(),
        json!({"batchItemFailures": [{"itemIdentifier": "100"}, {"itemIdentifier": "101"}]})
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Records which instances config-refresh marked UNHEALTHY.
#[derive(Default)]
struct RecordingHealth(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl InstanceHealth for RecordingHealth {
    async fn mark_unhealthy(&self, instance_id: &str) -> Result<(), DiscoveryError> {
        self.0.lock().unwrap().push(instance_id.to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn an_agent_that_keeps_failing_is_marked_unhealthy_and_stops_failing_events() {
    // GIVEN a live agent and a crashed one that is still registered
    let agent = start_agent(parameter_store()).await;
    let health = Arc::new(RecordingHealth::default());
    let refresher = refresher(&[agent.address, dead_address().await]).with_stale_marking(
        StaleSettings {
            failures: 2,
            min_age: Duration::ZERO,
        },
        health.clone(),
    );
    let event = || {
        serde_json::from_str::<serde_json::Value>(include_str!(
            "../../events/parameter-store-change-update.json"
        ))
        .unwrap()
    };
    // WHEN the first change fails on the dead one
    let first = refresher.handle(event()).await;
    assert!(
        matches!(first, Err(RefreshError::Undelivered { ok: 1, .. })),
        "{first:?}"
    );
    assert!(health.0.lock().unwrap().is_empty());
    // THEN at the second consecutive failure it is marked UNHEALTHY and the
    // change counts as delivered
    let second = refresher.handle(event()).await;
    assert!(
        matches!(second, Ok(RefreshOutcome::Delivered(_))),
        "{second:?}"
    );
    assert_eq!(*health.0.lock().unwrap(), vec!["agent-1".to_owned()]);
}

/// Records flush requests and flushes; flushes fail while `failing` is set.
#[derive(Default)]
struct RecordingStageCache {
    requests: std::sync::Mutex<Vec<Vec<String>>>,
    flushes: std::sync::atomic::AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl FlushRequests for RecordingStageCache {
    async fn request(&self, change_ids: &[String]) -> Result<(), StageCacheError> {
        self.requests.lock().unwrap().push(change_ids.to_vec());
        Ok(())
    }
}

#[async_trait::async_trait]
impl StageCache for RecordingStageCache {
    async fn flush(&self) -> Result<(), StageCacheError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StageCacheError::Flush("TooManyRequestsException".into()));
        }
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

fn queue_batch(messages: usize) -> serde_json::Value {
    let records: Vec<serde_json::Value> = (0..messages)
        .map(|i| {
            json!({
                "messageId": format!("m-{i}"),
                "receiptHandle": format!("r-{i}"),
                "body": "{\"flush\":\"stage-cache\",\"change_ids\":[\"c\"]}",
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:flush",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn every_change_requests_a_flush_and_a_batch_of_requests_flushes_once() {
    // GIVEN config-refresh with a stage cache in front of config-api
    let agent = start_agent(parameter_store()).await;
    let cache = Arc::new(RecordingStageCache::default());
    let refresher = refresher(&[agent.address]).with_stage_cache(cache.clone(), cache.clone());
    // WHEN a parameter change and a stream batch of two changes come in
    let event: serde_json::Value = serde_json::from_str(include_str!(
        "../../events/parameter-store-change-update.json"
    ))
    .unwrap();
    refresher.handle(event).await.unwrap();
    let batch = json!({"Records": [
        stream_record("MODIFY", "tenant-a", "tenant_config_limits", "100"),
        stream_record("INSERT", "tenant-a", "tenant_config_theme", "101"),
    ]});
    refresher.handle(batch).await.unwrap();
    // THEN each invocation asked for one flush naming its changes, and
    // nothing was flushed yet (the requests wait out their delay)
    let requests = cache.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[1],
        vec!["stream-100".to_owned(), "stream-101".to_owned()]
    );
    assert_eq!(cache.flushes.load(std::sync::atomic::Ordering::SeqCst), 0);
    // WHEN the queue delivers the requests as one batch (the sample event
    // of events/, in the shape the SQS event source mapping sends) THEN one flush
    let delivered: serde_json::Value = serde_json::from_str(include_str!(
        "../../events/sqs-stage-cache-flush-batch.json"
    ))
    .unwrap();
    let outcome = refresher.handle(delivered).await.unwrap();
    assert_eq!(
        outcome.to_json(),
        json!({"status": "flushed", "requests": 2})
    );
    assert_eq!(cache.flushes.load(std::sync::atomic::Ordering::SeqCst), 1);
    // AND a failed flush fails the invocation, so the queue delivers it again
    cache
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = refresher.handle(queue_batch(1)).await;
    assert!(
        matches!(&failed, Err(e) if e.kind() == "StageCacheFailed"),
        "{failed:?}"
    );
}

/// A fan-out that cannot be built: the signing key is missing or malformed.
struct NoSigningKey;

#[async_trait::async_trait]
impl FanoutSource for NoSigningKey {
    async fn fanout(&self) -> Result<&Fanout, String> {
        Err("refresh key '/tenant-config/refresh-key' is malformed".to_owned())
    }
}

#[tokio::test]
async fn without_a_usable_signing_key_changes_are_journaled_and_flushed_and_only_pushes_stop() {
    // GIVEN config-refresh whose signing key cannot be used, an agent that
    // cached the endpoint, and a stage cache
    let store = parameter_store();
    let agent = start_agent(store.clone()).await;
    assert_serves(
        agent.address,
        "tenant-a",
        "param_config_endpoint",
        "\"https://a/v1\"",
    )
    .await;
    store.put(
        &item("tenant-a", "param_config_endpoint"),
        plain(json!("https://a/v2")),
    );
    let journal = Arc::new(MemoryJournal::new());
    let cache = Arc::new(RecordingStageCache::default());
    let refresher = Refresher::new(
        "/config-service",
        KeyRouter::default(),
        Arc::new(StaticInstances(instances(&[agent.address]))),
        Arc::new(NoSigningKey),
        journal.clone(),
    )
    .with_stage_cache(cache.clone(), cache.clone());
    let unpushed_before = tenant_config_shared::metrics::metrics()
        .pending(tenant_config_shared::metrics::Counter::UnpushedChanges);
    // WHEN a parameter change and a stream batch of two changes come in
    let event: serde_json::Value = serde_json::from_str(include_str!(
        "../../events/parameter-store-change-update.json"
    ))
    .unwrap();
    let single = refresher.handle(event).await.unwrap();
    let batch = refresher
        .handle(json!({"Records": [
            stream_record("MODIFY", "tenant-a", "tenant_config_limits", "100"),
            stream_record("INSERT", "tenant-a", "tenant_config_theme", "101"),
        ]}))
        .await
        .unwrap();
    // THEN both succeed (a retry cannot help) and say they pushed nothing
    assert_eq!(single.to_json()["status"], "journaled_not_pushed");
    assert!(
        single.to_json()["reason"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );
    assert_eq!(batch.to_json(), json!({"batchItemFailures": []}));
    // AND all three changes are journaled, their flushes asked for, and counted
    let journaled = tenant_config_shared::refresh::journal::ChangeJournal::since(&*journal, 0, 10)
        .await
        .unwrap();
    assert_eq!(journaled.len(), 3);
    assert_eq!(cache.requests.lock().unwrap().len(), 2);
    let unpushed = tenant_config_shared::metrics::metrics()
        .pending(tenant_config_shared::metrics::Counter::UnpushedChanges);
    assert!(
        unpushed - unpushed_before >= 3,
        "{unpushed_before} → {unpushed}"
    );
    // AND the agent was told nothing: it still serves what it cached
    assert_serves(
        agent.address,
        "tenant-a",
        "param_config_endpoint",
        "\"https://a/v1\"",
    )
    .await;
}
