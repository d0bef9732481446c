//! Stale-if-error through the edges a caller sees: the HTTP API (body field,
//! headers, status, stage cache flush requests) and the agent over gRPC.
//! In-memory stores that fail on demand; real caches, API and gRPC server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tenant_config_shared::StoreKind;
use tenant_config_shared::api::{
    ApiRequest, ApiResponse, ConfigApi, DegradedAnswerFlush, STALE_HEADER,
};
use tenant_config_shared::cache::{CacheSettings, CachedStore};
use tenant_config_shared::error::StoreError;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::proto::GetConfigRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::stage_cache::{FlushRequests, StageCacheError};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::agent::{TestAgent, short_lived_cache};
use tenant_config_testkit::identity::{token, verifier};
use tenant_config_testkit::values::{item, plain};

const TTL: Duration = Duration::from_millis(100);

fn settings() -> CacheSettings {
    short_lived_cache(TTL)
}

/// Both stores in memory, DynamoDB holding two keys of tenant-a.
fn reads() -> (ConfigReads, Arc<MemoryStore>) {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    for key in ["tenant_config_limits", "tenant_config_plan"] {
        dynamodb.put(&item("tenant-a", "billing", key), plain(json!(key)));
    }
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), settings()),
        CachedStore::new(
            Arc::new(MemoryStore::new(StoreKind::ParameterStore)),
            settings(),
        ),
    );
    (reads, dynamodb)
}

fn unavailable() -> Option<StoreError> {
    Some(StoreError::Unavailable {
        store: StoreKind::DynamoDb,
        detail: "injected".into(),
    })
}

#[derive(Default)]
struct RecordedFlushes(Mutex<Vec<String>>);

#[async_trait]
impl FlushRequests for RecordedFlushes {
    async fn request(&self, reasons: &[String]) -> Result<(), StageCacheError> {
        self.0.lock().unwrap().extend(reasons.iter().cloned());
        Ok(())
    }
}

impl RecordedFlushes {
    fn taken(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn get(api: &ConfigApi, path: &str, keys: Option<&str>) -> (ApiResponse, Value) {
    let authorization = format!("Bearer {}", token("tenant-a"));
    let response = api
        .handle(&ApiRequest {
            method: "GET",
            path,
            authorization: Some(&authorization),
            keys: keys.map(Ok),
            ..Default::default()
        })
        .await;
    let body = serde_json::from_str(&response.body).unwrap();
    (response, body)
}

fn header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_failing_store_is_answered_stale_marked_and_a_stage_cache_flush_is_requested() {
    // GIVEN config-api read a key once, and the entry has expired since
    let (reads, dynamodb) = reads();
    let flushes = Arc::new(RecordedFlushes::default());
    let api = ConfigApi::new(verifier(), reads).with_degraded_answer_flush(
        DegradedAnswerFlush::new(flushes.clone(), Duration::from_millis(500)),
    );
    let one = "/v1/config/billing/tenant_config_limits";
    let (fresh, body) = get(&api, one, None).await;
    assert_eq!(fresh.status, 200);
    assert!(body.get("stale").is_none());
    assert!(header(&fresh, STALE_HEADER).is_none());
    tokio::time::sleep(TTL * 2).await;

    // WHEN DynamoDB starts failing
    dynamodb.set_failure(unavailable());
    let (stale, body) = get(&api, one, None).await;

    // THEN the caller still gets the value, marked stale in the body and headers
    assert_eq!(stale.status, 200);
    assert_eq!(body["value"], "tenant_config_limits");
    assert!(body["stale"]["age_ms"].as_u64().unwrap() >= TTL.as_millis() as u64);
    assert!(header(&stale, STALE_HEADER).is_some());
    assert_eq!(
        header(&stale, "warning"),
        Some("110 - \"Response is Stale\"")
    );
    assert_eq!(header(&stale, "cache-control"), Some("no-store"));
    // AND the stage cache is asked to drop what it may have stored
    assert_eq!(flushes.taken(), ["degraded:stale"]);

    // WHEN a key never read before is asked for in a batch
    let (failed, body) = get(
        &api,
        "/v1/config/billing",
        Some("tenant_config_limits,tenant_config_plan"),
    )
    .await;
    // THEN it fails as a 502 (nothing to fall back on), and a flush within
    // the minimum interval is not requested again
    assert_eq!(failed.status, 502, "{body}");
    assert_eq!(body["error"], "store_unavailable");
    assert!(flushes.taken().is_empty());

    // WHEN the store is back, answers are fresh again
    dynamodb.set_failure(None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (batch, body) = get(
        &api,
        "/v1/config/billing",
        Some("tenant_config_limits,tenant_config_plan"),
    )
    .await;
    assert_eq!(batch.status, 200);
    assert!(body.get("stale").is_none(), "{body}");
    assert!(flushes.taken().is_empty());
}

#[tokio::test]
async fn a_batch_lists_exactly_the_keys_answered_stale() {
    let (reads, dynamodb) = reads();
    let api = ConfigApi::new(verifier(), reads);
    let keys = Some("tenant_config_limits,tenant_config_plan");
    get(&api, "/v1/config/billing", keys).await;
    tokio::time::sleep(TTL * 2).await;
    dynamodb.set_failure(unavailable());
    let (response, body) = get(&api, "/v1/config/billing", keys).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        body["stale"],
        json!(["tenant_config_limits", "tenant_config_plan"])
    );
    assert_eq!(body["values"]["tenant_config_plan"], "tenant_config_plan");
}

#[tokio::test]
async fn the_agent_answers_stale_over_grpc_with_the_age() {
    // GIVEN an agent that served a key, whose entry then expired
    let (reads, dynamodb) = reads();
    let agent = TestAgent::start(reads).await;
    let mut client = ConfigReaderClient::connect(agent.endpoint()).await.unwrap();
    let request = || {
        let mut request = tonic::Request::new(GetConfigRequest {
            service: "billing".into(),
            key: "tenant_config_limits".into(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token("tenant-a")).parse().unwrap(),
        );
        request
    };
    let fresh = client.get_config(request()).await.unwrap().into_inner();
    assert_eq!(fresh.value.unwrap().stale_age_ms, None);
    tokio::time::sleep(TTL * 2).await;
    // WHEN its store fails
    dynamodb.set_failure(unavailable());
    let stale = client.get_config(request()).await.unwrap().into_inner();
    // THEN it answers with the last good value and says how old it is
    let value = stale.value.unwrap();
    assert_eq!(value.value_json, "\"tenant_config_limits\"");
    assert!(value.stale_age_ms.unwrap() >= TTL.as_millis() as u64);
}
