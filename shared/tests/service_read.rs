//! The whole-service read (`GET /v1/config/{service}` without `keys`, and
//! GetService over gRPC): both stores in one answer, secrets by name only,
//! the caller's tenant only, cached and dropped by the change feed.
//! In-memory stores; real caches, API and gRPC server.

use std::sync::Arc;

use serde_json::{Value, json};
use tenant_config_shared::StoreKind;
use tenant_config_shared::api::{ApiRequest, ConfigApi};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::domain::{Changed, Found, SecretValue};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::proto::GetServiceRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::agent::{HOUR_LONG_CACHE, TestAgent};
use tenant_config_testkit::identity::{token, verifier};
use tenant_config_testkit::values::{item, plain};

struct Stores {
    reads: ConfigReads,
    dynamodb: Arc<MemoryStore>,
    parameters: Arc<MemoryStore>,
}

/// Tenant A and B each with two DynamoDB keys, one parameter and one
/// SecureString in `billing`; A also has a key in another service.
fn stores() -> Stores {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    for tenant in ["tenant-a", "tenant-b"] {
        for key in ["tenant_config_limits", "tenant_config_theme"] {
            dynamodb.put(
                &item(tenant, "billing", key),
                plain(json!(format!("{tenant}/{key}"))),
            );
        }
        parameters.put(
            &item(tenant, "billing", "param_config_endpoint"),
            plain(json!(format!("{tenant}/endpoint"))),
        );
        parameters.put(
            &item(tenant, "billing", "param_config_db_password"),
            Found::Secret(Some(SecretValue::new(json!("hunter2"), None))),
        );
    }
    dynamodb.put(
        &item("tenant-a", "shipping", "tenant_config_zone"),
        plain(json!("eu")),
    );
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), HOUR_LONG_CACHE),
        CachedStore::new(parameters.clone(), HOUR_LONG_CACHE),
    );
    Stores {
        reads,
        dynamodb,
        parameters,
    }
}

async fn read_service(api: &ConfigApi, tenant: &str, service: &str) -> (u16, Value) {
    let authorization = format!("Bearer {}", token(tenant));
    let response = api
        .handle(&ApiRequest {
            method: "GET",
            path: &format!("/v1/config/{service}"),
            authorization: Some(&authorization),
            keys: None,
            ..Default::default()
        })
        .await;
    (
        response.status,
        serde_json::from_str(&response.body).unwrap(),
    )
}

#[tokio::test]
async fn a_tenant_reads_its_whole_service_from_both_stores_in_one_request() {
    // GIVEN both tenants' billing configuration
    let stores = stores();
    let api = ConfigApi::new(verifier(), stores.reads.clone());

    // WHEN tenant A reads the billing service
    let (status, body) = read_service(&api, "tenant-a", "billing").await;

    // THEN every value of A's billing comes back, from both stores
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["values"],
        json!({
            "param_config_endpoint": "tenant-a/endpoint",
            "tenant_config_limits": "tenant-a/tenant_config_limits",
            "tenant_config_theme": "tenant-a/tenant_config_theme",
        })
    );
    // AND the SecureString is named, never read
    assert_eq!(body["sensitive"], json!(["param_config_db_password"]));
    assert!(!body.to_string().contains("hunter2"));
    assert!(!body.to_string().contains("tenant-b"));
    assert_eq!(body["truncated"], false);
    // AND one listing per store was made, and the next read is from memory
    assert_eq!(
        (stores.dynamodb.listings(), stores.parameters.listings()),
        (1, 1)
    );
    read_service(&api, "tenant-a", "billing").await;
    assert_eq!(
        (stores.dynamodb.listings(), stores.parameters.listings()),
        (1, 1)
    );
}

#[tokio::test]
async fn a_change_to_any_key_of_the_service_drops_its_cached_listing() {
    let stores = stores();
    let api = ConfigApi::new(verifier(), stores.reads.clone());
    read_service(&api, "tenant-a", "billing").await;
    // WHEN a new key is added and the change feed names it
    let added = item("tenant-a", "billing", "tenant_config_new");
    stores.dynamodb.put(&added, plain(json!("fresh")));
    stores
        .reads
        .invalidate(&added, Changed::Updated(None))
        .await
        .unwrap();
    // THEN the next whole-service read lists it
    let (_, body) = read_service(&api, "tenant-a", "billing").await;
    assert_eq!(body["values"]["tenant_config_new"], "fresh");
    // AND a change in another service leaves this listing cached
    let before = stores.dynamodb.listings();
    stores
        .reads
        .invalidate(
            &item("tenant-a", "shipping", "tenant_config_zone"),
            Changed::Updated(None),
        )
        .await
        .unwrap();
    read_service(&api, "tenant-a", "billing").await;
    assert_eq!(stores.dynamodb.listings(), before);
}

#[tokio::test]
async fn an_empty_or_invalid_service_is_an_empty_listing_or_a_400() {
    let stores = stores();
    let api = ConfigApi::new(verifier(), stores.reads.clone());
    let (status, body) = read_service(&api, "tenant-a", "nothing-here").await;
    assert_eq!(status, 200);
    assert_eq!(body["values"], json!({}));
    let (status, _) = read_service(&api, "tenant-a", "..").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_agent_serves_the_whole_service_over_grpc() {
    let stores = stores();
    let agent = TestAgent::start(stores.reads.clone()).await;
    let mut client = ConfigReaderClient::connect(agent.endpoint()).await.unwrap();
    let mut request = tonic::Request::new(GetServiceRequest {
        service: "billing".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tenant-b")).parse().unwrap(),
    );
    let response = client.get_service(request).await.unwrap().into_inner();
    let keys: Vec<&str> = response.values.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "param_config_endpoint",
            "tenant_config_limits",
            "tenant_config_theme"
        ]
    );
    assert_eq!(response.values[0].value_json, "\"tenant-b/endpoint\"");
    assert_eq!(response.sensitive, ["param_config_db_password"]);
    assert!(!response.truncated);
}
