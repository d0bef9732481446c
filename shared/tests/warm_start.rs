//! An agent's warm start: one agent serves values and seals what it served
//! to disk; a second agent, started from that file while the stores fail,
//! answers those values marked stale (single reads, batches, the whole
//! service, OFREP, Watch) and fresh values once the stores answer. The real
//! server, caches and sealing; in-memory stores and data keys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tenant_config_shared::StoreKind;
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::error::StoreError;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::proto::{
    GetConfigRequest, GetConfigsRequest, GetServiceRequest, WatchRequest, watch_event,
};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::warm_start::sealed::{MemoryDataKeys, SharedDataKeys};
use tenant_config_shared::warm_start::{WarmStart, WarmStartSettings};
use tenant_config_testkit::agent::{TestAgent, short_lived_cache};
use tenant_config_testkit::identity::token;
use tenant_config_testkit::values::{item, plain};

const LIMITS: &str = "tenant_config_limits";
const SEATS: &str = "tenant_config_max_seats";
const NEVER_READ: &str = "tenant_config_never_read";

struct Stores {
    dynamodb: Arc<MemoryStore>,
    parameters: Arc<MemoryStore>,
}

impl Stores {
    fn failing(&self, failing: bool) {
        for store in [&self.dynamodb, &self.parameters] {
            store.set_failure(failing.then(|| StoreError::Unavailable {
                store: StoreKind::DynamoDb,
                detail: "injected: unreachable".into(),
            }));
        }
    }
}

fn settings(path: PathBuf) -> WarmStartSettings {
    WarmStartSettings {
        path,
        kms_key_id: "alias/agent-snapshots".into(),
        max_bytes: 1 << 20,
        interval: Duration::from_millis(100),
    }
}

/// An agent over `stores` with a warm start from `path`, its cache TTL short
/// so a test sees the stores, not only memory.
async fn agent(
    stores: &Stores,
    path: PathBuf,
    keys: SharedDataKeys,
) -> (TestAgent, Arc<WarmStart>) {
    let warm = Arc::new(WarmStart::open(settings(path), keys, Duration::from_secs(3600)).await);
    let cache = short_lived_cache(Duration::from_millis(100));
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(stores.dynamodb.clone(), cache),
        CachedStore::new(stores.parameters.clone(), cache),
    )
    .with_last_known_good(Arc::clone(&warm.values));
    (TestAgent::start(reads).await, warm)
}

fn authorized<T>(body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tenant-a")).parse().unwrap(),
    );
    request
}

fn one(key: &str) -> GetConfigRequest {
    GetConfigRequest {
        service: "billing".into(),
        key: key.into(),
    }
}

#[tokio::test]
async fn an_agent_started_while_its_stores_fail_answers_what_the_last_one_served() {
    let directory = std::env::temp_dir().join(format!("warm-start-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("agent.snapshot");
    let keys: SharedDataKeys = Arc::new(MemoryDataKeys::default());
    let stores = Stores {
        dynamodb: Arc::new(MemoryStore::new(StoreKind::DynamoDb)),
        parameters: Arc::new(MemoryStore::new(StoreKind::ParameterStore)),
    };
    stores.dynamodb.put(
        &item("tenant-a", "billing", LIMITS),
        plain(json!({"rps": 100})),
    );
    stores
        .dynamodb
        .put(&item("tenant-a", "billing", SEATS), plain(json!(25)));
    stores
        .dynamodb
        .put(&item("tenant-a", "billing", NEVER_READ), plain(json!("x")));

    // GIVEN an agent that served two keys (one alone, the service whole)
    // and wrote its snapshot as it stopped
    {
        let (first, warm) = agent(&stores, path.clone(), keys.clone()).await;
        let mut client = ConfigReaderClient::connect(first.endpoint()).await.unwrap();
        client.get_config(authorized(one(LIMITS))).await.unwrap();
        client.get_config(authorized(one(SEATS))).await.unwrap();
        // (the whole service too, once NEVER_READ is gone: a complete listing)
        stores
            .dynamodb
            .remove(&item("tenant-a", "billing", NEVER_READ));
        client
            .get_service(authorized(GetServiceRequest {
                service: "billing".into(),
            }))
            .await
            .unwrap();
        warm.write_last().await;
        stores
            .dynamodb
            .put(&item("tenant-a", "billing", NEVER_READ), plain(json!("x")));
    }
    assert!(path.exists());

    // WHEN the stores fail and a new agent starts from the file
    stores.failing(true);
    let started = Instant::now();
    let (second, _warm) = agent(&stores, path.clone(), keys).await;
    let mut client = ConfigReaderClient::connect(second.endpoint())
        .await
        .unwrap();
    let limits = client
        .get_config(authorized(one(LIMITS)))
        .await
        .expect("answered from the snapshot")
        .into_inner()
        .value
        .unwrap();
    let first_answer = started.elapsed();
    // THEN it answers what the last agent served, marked stale, at once
    assert_eq!(limits.value_json, r#"{"rps":100}"#);
    assert!(limits.stale_age_ms.is_some(), "{limits:?}");
    assert!(
        first_answer < Duration::from_millis(500),
        "{first_answer:?}"
    );
    eprintln!("start to first answer from the snapshot: {first_answer:?}");
    // AND a batch of remembered keys, and the whole service as far as remembered
    let batch = client
        .get_configs(authorized(GetConfigsRequest {
            service: "billing".into(),
            keys: vec![LIMITS.into(), SEATS.into()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.values.len(), 2);
    let service = client
        .get_service(authorized(GetServiceRequest {
            service: "billing".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(service.values.len(), 2, "{service:?}");
    assert!(service.values.iter().all(|v| v.stale_age_ms.is_some()));
    assert!(!service.truncated, "a complete listing stands behind it");
    // AND another tenant gets none of tenant-a's values
    let mut other = tonic::Request::new(one(SEATS));
    other.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tenant-b")).parse().unwrap(),
    );
    let refused = client.get_config(other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // AND a key the last agent never served fails as before, bounded
    let never = client
        .get_config(authorized(one(NEVER_READ)))
        .await
        .unwrap_err();
    assert_eq!(never.code(), tonic::Code::Unavailable, "{never:?}");
    // AND OFREP tells the flag is stale
    let evaluation: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/v1/services/billing/ofrep/v1/evaluate/flags/{SEATS}",
            second.endpoint()
        ))
        .bearer_auth(token("tenant-a"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(evaluation["value"], 25);
    assert_eq!(evaluation["reason"], "STALE");

    // WHEN a service watches, then the stores come back with a new value
    let mut stream = client
        .watch(authorized(WatchRequest {
            service: "billing".into(),
            keys: vec![SEATS.into()],
            resume_from: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let snapshot = stream.message().await.unwrap().unwrap();
    let Some(watch_event::Event::Snapshot(snapshot)) = snapshot.event else {
        panic!("a snapshot first");
    };
    assert!(snapshot.values[0].stale_age_ms.is_some());
    stores
        .dynamodb
        .put(&item("tenant-a", "billing", SEATS), plain(json!(30)));
    stores.failing(false);
    // THEN the agent catches up: the watcher gets the new value, fresh
    let change = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a change once the stores answer")
        .unwrap()
        .unwrap();
    let Some(watch_event::Event::Change(change)) = change.event else {
        panic!("a change, got {change:?}");
    };
    let value = change.value.unwrap();
    assert_eq!(
        (value.value_json.as_str(), value.stale_age_ms),
        ("30", None)
    );
    std::fs::remove_dir_all(&directory).unwrap();
}
