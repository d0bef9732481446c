//! The platform routes: platform administrators write the shared layers and
//! the tenant registry through the API; tenants read the result on their
//! own routes at once; nobody else may write them. In-memory stores and
//! registry; real API, caches and writers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tenant_config_shared::StoreKind;
use tenant_config_shared::api::{ApiRequest, ConfigApi};
use tenant_config_shared::cache::{CachedStore, StaleIfError};
use tenant_config_shared::layers::platform::PlatformWrites;
use tenant_config_shared::layers::registry::MemoryRegistry;
use tenant_config_shared::layers::view::{SharedLayerSettings, SharedLayers};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::writes::ConfigWrites;
use tenant_config_testkit::agent::HOUR_LONG_CACHE;
use tenant_config_testkit::identity::{token, token_in_groups, verifier};

const PLATFORM_GROUP: &str = "config-platform-admins";
const ADMIN_GROUP: &str = "config-admins";

fn api() -> ConfigApi {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    let registry = Arc::new(MemoryRegistry::default());
    let layers = Arc::new(SharedLayers::new(
        dynamodb.clone(),
        parameters.clone(),
        registry.clone(),
        SharedLayerSettings {
            ttl: Duration::from_secs(3600),
            stale: StaleIfError::DEFAULT,
            max_tenants: 100,
        },
    ));
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), HOUR_LONG_CACHE),
        CachedStore::new(parameters.clone(), HOUR_LONG_CACHE),
    )
    .with_layers(layers);
    ConfigApi::new(verifier(), reads)
        .with_writes(ConfigWrites::new(
            KeyRouter::default(),
            dynamodb.clone(),
            parameters.clone(),
            ADMIN_GROUP,
        ))
        .with_platform_writes(PlatformWrites::new(
            KeyRouter::default(),
            dynamodb,
            parameters,
            registry,
            PLATFORM_GROUP,
        ))
}

fn platform_admin() -> String {
    format!(
        "Bearer {}",
        token_in_groups("ops", "platform-admin-1", &[PLATFORM_GROUP])
    )
}

fn tenant_admin() -> String {
    format!(
        "Bearer {}",
        token_in_groups("tenant-a", "admin-a", &[ADMIN_GROUP])
    )
}

struct Call<'a> {
    method: &'a str,
    path: &'a str,
    bearer: &'a str,
    body: Option<&'a str>,
    if_match: Option<&'a str>,
    if_none_match: Option<&'a str>,
}

async fn call(api: &ConfigApi, c: Call<'_>) -> (u16, Value, Option<String>) {
    let response = api
        .handle(&ApiRequest {
            method: c.method,
            path: c.path,
            authorization: Some(c.bearer),
            body: c.body,
            if_match: c.if_match,
            if_none_match: c.if_none_match,
            ..Default::default()
        })
        .await;
    let etag = response
        .headers
        .iter()
        .find(|(n, _)| *n == "etag")
        .map(|(_, v)| v.clone());
    (
        response.status,
        serde_json::from_str(&response.body).unwrap_or(Value::Null),
        etag,
    )
}

async fn put(api: &ConfigApi, path: &str, bearer: &str, body: &str) -> (u16, Value) {
    let (status, body, _) = call(
        api,
        Call {
            method: "PUT",
            path,
            bearer,
            body: Some(body),
            if_match: None,
            if_none_match: Some("*"),
        },
    )
    .await;
    (status, body)
}

async fn read(api: &ConfigApi, tenant: &str, key: &str) -> (u16, Value) {
    let bearer = format!("Bearer {}", token(tenant));
    let (status, body, _) = call(
        api,
        Call {
            method: "GET",
            path: &format!("/v1/config/billing/{key}"),
            bearer: &bearer,
            body: None,
            if_match: None,
            if_none_match: None,
        },
    )
    .await;
    (status, body)
}

const GLOBAL_LIMITS: &str = "/v1/layers/global/billing/tenant_config_limits";
const GOLD_LIMITS: &str = "/v1/layers/tiers/gold/billing/tenant_config_limits";

#[tokio::test]
async fn a_platform_administrator_sets_a_default_every_tenant_reads_at_once() {
    let api = api();
    // WHEN a platform administrator creates a global default
    let (status, body) = put(
        &api,
        GLOBAL_LIMITS,
        &platform_admin(),
        r#"{"value": {"requests": 10, "burst": 20}}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["layer"], "global");
    // THEN tenants that never wrote the key read it
    for tenant in ["tenant-a", "tenant-b"] {
        let (status, body) = read(&api, tenant, "tenant_config_limits").await;
        assert_eq!(
            (status, body["value"].clone()),
            (200, json!({"requests": 10, "burst": 20}))
        );
    }
    // AND a tenant's own exception patches it for that tenant only
    let (status, body) = put(
        &api,
        "/v1/config/billing/tenant_config_limits",
        &tenant_admin(),
        r#"{"value": {"burst": 5}}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, a) = read(&api, "tenant-a", "tenant_config_limits").await;
    assert_eq!(a["value"], json!({"requests": 10, "burst": 5}));
    let (_, b) = read(&api, "tenant-b", "tenant_config_limits").await;
    assert_eq!(b["value"], json!({"requests": 10, "burst": 20}));
    // AND the default's history names its writer
    let (status, history, _) = call(
        &api,
        Call {
            method: "GET",
            path: &format!("{GLOBAL_LIMITS}/history"),
            bearer: &platform_admin(),
            body: None,
            if_match: None,
            if_none_match: None,
        },
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["versions"][0]["actor"], "platform-admin-1");
}

#[tokio::test]
async fn only_platform_administrators_write_shared_layers_and_never_a_secret() {
    let api = api();
    // GIVEN a tenant administrator: its own tenant's layer only
    let (status, body) = put(&api, GLOBAL_LIMITS, &tenant_admin(), r#"{"value": 1}"#).await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    let (status, _) = put(
        &api,
        "/v1/tenants/tenant-a",
        &tenant_admin(),
        r#"{"tier": "gold"}"#,
    )
    .await;
    assert_eq!(status, 403);
    // AND a plain reader
    let reader = format!("Bearer {}", token("tenant-a"));
    let (status, _) = put(&api, GOLD_LIMITS, &reader, r#"{"value": 1}"#).await;
    assert_eq!(status, 403);
    // WHEN a platform administrator stores a SecureString in a shared layer
    let (status, body) = put(
        &api,
        "/v1/layers/global/billing/param_config_password",
        &platform_admin(),
        r#"{"value": "hunter2", "type": "secure-string"}"#,
    )
    .await;
    // THEN it is refused, and nothing is stored
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("SecureString"));
    let (status, _) = read(&api, "tenant-a", "param_config_password").await;
    assert_eq!(status, 404);
    // AND layer and tenant names that could be a shared layer's are refused
    for path in [
        "/v1/layers/tiers/_global/billing/tenant_config_limits",
        "/v1/tenants/_global",
    ] {
        let (status, body) = put(&api, path, &platform_admin(), r#"{"value": 1}"#).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_tier_change_is_versioned_and_moves_the_tenant_to_its_layer() {
    let api = api();
    put(
        &api,
        GLOBAL_LIMITS,
        &platform_admin(),
        r#"{"value": {"requests": 10}}"#,
    )
    .await;
    put(
        &api,
        GOLD_LIMITS,
        &platform_admin(),
        r#"{"value": {"requests": 50}}"#,
    )
    .await;
    // WHEN tenant-a is registered in gold
    let (status, body) = put(
        &api,
        "/v1/tenants/tenant-a",
        &platform_admin(),
        r#"{"tier": "gold"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // THEN it reads gold's value, another tenant the default
    let (_, a) = read(&api, "tenant-a", "tenant_config_limits").await;
    assert_eq!(a["value"], json!({"requests": 50}));
    let (_, b) = read(&api, "tenant-b", "tenant_config_limits").await;
    assert_eq!(b["value"], json!({"requests": 10}));
    // AND its registration reads back with a version to change it from
    let (status, registration, etag) = call(
        &api,
        Call {
            method: "GET",
            path: "/v1/tenants/tenant-a",
            bearer: &platform_admin(),
            body: None,
            if_match: None,
            if_none_match: None,
        },
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(registration["tier"], "gold");
    assert_eq!(registration["updated_by"], "platform-admin-1");
    let etag = etag.unwrap();
    // AND a change from a version it is not at is a conflict (409)
    let (status, body, _) = call(
        &api,
        Call {
            method: "PUT",
            path: "/v1/tenants/tenant-a",
            bearer: &platform_admin(),
            body: Some(r#"{"tier": null}"#),
            if_match: Some("\"7\""),
            if_none_match: None,
        },
    )
    .await;
    assert_eq!(status, 409, "{body}");
    // AND deactivating it from its version refuses its reads
    let (status, _, _) = call(
        &api,
        Call {
            method: "PUT",
            path: "/v1/tenants/tenant-a",
            bearer: &platform_admin(),
            body: Some(r#"{"tier": "gold", "active": false}"#),
            if_match: Some(&etag),
            if_none_match: None,
        },
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = read(&api, "tenant-a", "tenant_config_limits").await;
    assert_eq!(
        (status, body["error"].clone()),
        (403, json!("tenant_inactive"))
    );
}
