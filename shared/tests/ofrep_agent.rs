//! OFREP on the agent's reader listener: HTTP/1.1 beside gRPC on one port,
//! over in-memory stores that fail on demand; the real caches, verifier and
//! server.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tenant_config_shared::StoreKind;
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::error::StoreError;
use tenant_config_shared::ofrep::MAX_REQUEST_BYTES;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::proto::GetConfigRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::agent::{TestAgent, short_lived_cache};
use tenant_config_testkit::identity::token;
use tenant_config_testkit::values::{item, plain};

const TTL: Duration = Duration::from_millis(100);

async fn agent() -> (TestAgent, Arc<MemoryStore>) {
    let settings = short_lived_cache(TTL);
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    dynamodb.put(
        &item("tenant-a", "billing", "tenant_config_beta"),
        plain(json!(true)),
    );
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), settings),
        CachedStore::new(
            Arc::new(MemoryStore::new(StoreKind::ParameterStore)),
            settings,
        ),
    );
    (TestAgent::start(reads).await, dynamodb)
}

async fn post(
    agent: &TestAgent,
    path: &str,
    body: String,
    tag: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", agent.endpoint()))
        .bearer_auth(token("tenant-a"))
        .timeout(Duration::from_secs(5))
        .body(body);
    if let Some(tag) = tag {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().await.expect("the agent answers HTTP/1.1");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

const FLAG: &str = "/v1/services/billing/ofrep/v1/evaluate/flags/tenant_config_beta";
const FLAGS: &str = "/v1/services/billing/ofrep/v1/evaluate/flags";

#[tokio::test]
async fn one_port_answers_grpc_and_ofrep_and_bounds_what_it_reads() {
    let (agent, _) = agent().await;
    // GIVEN an agent WHEN a flag is evaluated over HTTP/1.1 THEN typed, with its reason
    let (status, _, body) = post(&agent, FLAG, "{}".into(), None).await;
    assert_eq!(status, 200, "{body}");
    let evaluation: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(evaluation["value"], true);
    assert_eq!(evaluation["reason"], "TARGETING_MATCH");
    // AND gRPC on the same port still answers
    let mut client = ConfigReaderClient::connect(agent.endpoint()).await.unwrap();
    let mut request = tonic::Request::new(GetConfigRequest {
        service: "billing".into(),
        key: "tenant_config_beta".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tenant-a")).parse().unwrap(),
    );
    let value = client.get_config(request).await.unwrap().into_inner();
    assert_eq!(value.value.unwrap().value_json, "true");

    // WHEN a body is over the bound THEN refused unread, as OFREP's parse error
    let huge = format!(
        r#"{{"context": {{"x": "{}"}}}}"#,
        "a".repeat(MAX_REQUEST_BYTES * 4)
    );
    let (status, _, body) = post(&agent, FLAG, huge, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["errorCode"],
        "PARSE_ERROR"
    );
    // WHEN another path of ours is asked over HTTP THEN a JSON 404, no value
    let (status, _, body) = post(
        &agent,
        "/v1/config/billing/tenant_config_beta",
        String::new(),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("true"), "{body}");
}

#[tokio::test]
async fn a_failing_store_gives_a_stale_flag_and_never_a_304() {
    let (agent, dynamodb) = agent().await;
    let (status, headers, _) = post(&agent, FLAGS, String::new(), None).await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(post(&agent, FLAG, String::new(), None).await.0, 200);
    // GIVEN the store fails after the flag and the service were read
    dynamodb.set_failure(Some(StoreError::Unavailable {
        store: StoreKind::DynamoDb,
        detail: "injected".into(),
    }));
    tokio::time::sleep(TTL * 2).await;
    // WHEN the flag is evaluated THEN its last good value, marked stale
    let (status, headers, body) = post(&agent, FLAG, String::new(), None).await;
    assert_eq!(status, 200, "{body}");
    let evaluation: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (evaluation["value"].clone(), evaluation["reason"].clone()),
        (json!(true), json!("STALE"))
    );
    assert!(headers.contains_key("x-config-stale-age-ms") && headers.contains_key("warning"));
    assert_eq!(headers["cache-control"], "no-store");
    // AND a bulk revalidation is never told "not modified" when nothing
    // could be read: a listing keeps no last good value, so 502, OFREP's body
    let (status, _, body) = post(&agent, FLAGS, String::new(), Some(&etag)).await;
    assert_eq!(status, 502, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["errorCode"], "GENERAL");
}
