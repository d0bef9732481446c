//! Layered reads: the global layer, the tenant's tier and the tenant's own
//! values merged into the value every read route serves, with unchanged
//! contracts. In-memory stores and registry; real caches and API.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tenant_config_shared::api::{ApiRequest, ConfigApi};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::domain::{Found, PlainValue, SecretValue, ValueKind};
use tenant_config_shared::layers::Layer;
use tenant_config_shared::layers::registry::{MemoryRegistry, TenantRecord, TenantRegistry};
use tenant_config_shared::layers::view::{SharedLayerSettings, SharedLayers};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::rollouts::plan::{Progress, State};
use tenant_config_shared::rollouts::record::{Rollout, RolloutRequest};
use tenant_config_shared::rollouts::store::{MemoryRolloutStore, RolloutStore, Written};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::{ConfigKey, ServiceName, StoreKind, TenantId, TierName};
use tenant_config_testkit::agent::HOUR_LONG_CACHE;
use tenant_config_testkit::identity::{token, verifier};
use tenant_config_testkit::values::item;

struct World {
    api: ConfigApi,
    layers: Arc<SharedLayers>,
    dynamodb: Arc<MemoryStore>,
    parameters: Arc<MemoryStore>,
    registry: Arc<MemoryRegistry>,
    rollouts: Arc<MemoryRolloutStore>,
}

fn service() -> ServiceName {
    ServiceName::parse("billing").unwrap()
}

fn key(name: &str) -> ConfigKey {
    ConfigKey::parse(name).unwrap()
}

fn value(value: Value, version: i64) -> Arc<PlainValue> {
    Arc::new(PlainValue {
        value,
        version: Some(version),
        kind: ValueKind::Plain,
        written: Default::default(),
    })
}

fn gold() -> TierName {
    TierName::parse("gold").unwrap()
}

/// A global default for `tenant_config_limits` and `param_config_endpoint`,
/// a gold override of the first and a gold-only key, tenant-a in gold with
/// an exception of its own, tenant-b never registered.
async fn world() -> World {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    let registry = Arc::new(MemoryRegistry::default());
    let limits = key("tenant_config_limits");
    dynamodb.put_in_layer(
        &Layer::Global,
        &service(),
        &limits,
        value(
            json!({"requests": 10, "burst": 20, "theme": {"color": "blue", "font": "serif"}}),
            3,
        ),
    );
    dynamodb.put_in_layer(
        &Layer::Tier(gold()),
        &service(),
        &limits,
        value(json!({"requests": 50}), 7),
    );
    dynamodb.put_in_layer(
        &Layer::Tier(gold()),
        &service(),
        &key("tenant_config_gold_only"),
        value(json!(true), 1),
    );
    parameters.put_in_layer(
        &Layer::Global,
        &service(),
        &key("param_config_endpoint"),
        value(json!("https://default.example"), 2),
    );
    dynamodb.put(
        &item("tenant-a", "billing", "tenant_config_limits"),
        Found::Plain(value(json!({"theme": {"font": null}, "burst": 5}), 4)),
    );
    registry
        .put(
            &TenantId::parse("tenant-a").unwrap(),
            &TenantRecord {
                tier: Some(gold()),
                active: true,
            },
            None,
            "platform-admin",
            1,
        )
        .await
        .unwrap();
    let rollouts = Arc::new(MemoryRolloutStore::new());
    let layers = Arc::new(
        SharedLayers::new(
            dynamodb.clone(),
            parameters.clone(),
            registry.clone(),
            SharedLayerSettings {
                ttl: Duration::from_secs(3600),
                stale: tenant_config_shared::cache::StaleIfError::DEFAULT,
                max_tenants: 100,
            },
        )
        .with_rollouts(rollouts.clone()),
    );
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), HOUR_LONG_CACHE),
        CachedStore::new(parameters.clone(), HOUR_LONG_CACHE),
    )
    .with_layers(layers.clone());
    World {
        api: ConfigApi::new(verifier(), reads),
        layers,
        dynamodb,
        parameters,
        registry,
        rollouts,
    }
}

async fn get(api: &ConfigApi, tenant: &str, path: &str, keys: Option<&str>) -> (u16, Value) {
    let authorization = format!("Bearer {}", token(tenant));
    let response = api
        .handle(&ApiRequest {
            method: "GET",
            path,
            authorization: Some(&authorization),
            keys: keys.map(Ok),
            ..Default::default()
        })
        .await;
    (
        response.status,
        serde_json::from_str(&response.body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_tenant_reads_global_then_tier_then_its_own_merged() {
    let w = world().await;
    // WHEN tenant-a (gold, with an exception) and tenant-b (no tier, no
    // value of its own) read the same key
    let (status, a) = get(
        &w.api,
        "tenant-a",
        "/v1/config/billing/tenant_config_limits",
        None,
    )
    .await;
    assert_eq!(status, 200, "{a}");
    let (status, b) = get(
        &w.api,
        "tenant-b",
        "/v1/config/billing/tenant_config_limits",
        None,
    )
    .await;
    assert_eq!(status, 200, "{b}");
    // THEN tenant-a gets the default patched by gold, then by its own
    // (a null removed the font), at its own layer's version
    assert_eq!(
        a["value"],
        json!({"requests": 50, "burst": 5, "theme": {"color": "blue"}})
    );
    assert_eq!(a["version"], json!(4));
    // AND tenant-b the global default as written, at its version
    assert_eq!(
        b["value"],
        json!({"requests": 10, "burst": 20, "theme": {"color": "blue", "font": "serif"}})
    );
    assert_eq!(b["version"], json!(3));
    // AND a key only gold holds is found for tenant-a and not for tenant-b
    let (status, _) = get(
        &w.api,
        "tenant-a",
        "/v1/config/billing/tenant_config_gold_only",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = get(
        &w.api,
        "tenant-b",
        "/v1/config/billing/tenant_config_gold_only",
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn batch_and_whole_service_reads_serve_the_same_effective_values() {
    let w = world().await;
    let keys = "param_config_endpoint,tenant_config_gold_only,tenant_config_limits";
    let (status, batch) = get(&w.api, "tenant-b", "/v1/config/billing", Some(keys)).await;
    assert_eq!(status, 200, "{batch}");
    // GIVEN tenant-b has no value of its own: it reads the defaults
    let text = batch.to_string();
    assert!(text.contains("https://default.example"), "{text}");
    assert!(text.contains("\"serif\""), "{text}");
    assert!(
        text.contains("tenant_config_gold_only"),
        "the missing key is named: {text}"
    );
    // AND the whole service lists every key a layer of tenant-a holds
    let (status, service) = get(&w.api, "tenant-a", "/v1/config/billing", None).await;
    assert_eq!(status, 200, "{service}");
    let text = service.to_string();
    for expected in [
        "tenant_config_limits",
        "tenant_config_gold_only",
        "param_config_endpoint",
        "\"requests\":50",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    assert!(!text.contains("serif"), "tenant-a removed the font: {text}");
}

#[tokio::test]
async fn a_shared_change_reaches_every_tenant_with_one_snapshot_dropped() {
    let w = world().await;
    let path = "/v1/config/billing/param_config_endpoint";
    for tenant in ["tenant-a", "tenant-b"] {
        get(&w.api, tenant, path, None).await;
    }
    let listings = w.parameters.listings();
    // WHEN the global default changes and its one snapshot is dropped
    w.parameters.put_in_layer(
        &Layer::Global,
        &service(),
        &key("param_config_endpoint"),
        value(json!("https://new.example"), 3),
    );
    w.layers.invalidate_layer(&Layer::Global, &service()).await;
    // THEN both tenants read the new default, for one listing of the layer
    for tenant in ["tenant-a", "tenant-b"] {
        let (status, body) = get(&w.api, tenant, path, None).await;
        assert_eq!(
            (status, body["value"].clone()),
            (200, json!("https://new.example"))
        );
    }
    assert_eq!(w.parameters.listings(), listings + 1);
}

#[tokio::test]
async fn a_tenant_moved_to_a_tier_reads_its_layer_and_an_inactive_one_is_refused() {
    let w = world().await;
    let b = TenantId::parse("tenant-b").unwrap();
    let path = "/v1/config/billing/tenant_config_limits";
    let (_, before) = get(&w.api, "tenant-b", path, None).await;
    assert_eq!(before["value"]["requests"], json!(10));
    // WHEN tenant-b is registered in gold
    let version = w
        .registry
        .put(
            &b,
            &TenantRecord {
                tier: Some(gold()),
                active: true,
            },
            None,
            "platform-admin",
            2,
        )
        .await
        .unwrap();
    w.layers.invalidate_registration(&b).await;
    // THEN it reads gold's override
    let (_, after) = get(&w.api, "tenant-b", path, None).await;
    assert_eq!(after["value"]["requests"], json!(50));
    // AND once deactivated its reads are refused, with a reason
    w.registry
        .put(
            &b,
            &TenantRecord {
                tier: Some(gold()),
                active: false,
            },
            version,
            "platform-admin",
            3,
        )
        .await
        .unwrap();
    w.layers.invalidate_registration(&b).await;
    let (status, body) = get(&w.api, "tenant-b", path, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (403, json!("tenant_inactive"))
    );
}

#[tokio::test]
async fn a_tenants_secret_is_its_own_and_a_shared_default_reads_on_the_secure_route() {
    let w = world().await;
    w.parameters.put(
        &item("tenant-a", "billing", "param_config_endpoint"),
        Found::Secret(Some(SecretValue::new(
            json!("https://private.example"),
            Some(1),
        ))),
    );
    // GIVEN tenant-a holds the key as a SecureString over a plain default
    // THEN the plain route refuses it (409) as before layers
    let (status, _) = get(
        &w.api,
        "tenant-a",
        "/v1/config/billing/param_config_endpoint",
        None,
    )
    .await;
    assert_eq!(status, 409);
    // AND the secure route answers the secret, nothing merged into it
    let (status, secret) = get(
        &w.api,
        "tenant-a",
        "/v1/secure/billing/param_config_endpoint",
        None,
    )
    .await;
    assert_eq!(
        (status, secret["value"].clone()),
        (200, json!("https://private.example"))
    );
    // AND tenant-b reads the shared default on the secure route too
    let (status, default) = get(
        &w.api,
        "tenant-b",
        "/v1/secure/billing/param_config_endpoint",
        None,
    )
    .await;
    assert_eq!(
        (status, default["value"].clone()),
        (200, json!("https://default.example"))
    );
    let _ = &w.dynamodb;
}

#[tokio::test]
async fn explain_names_the_layer_and_version_of_every_leaf() {
    let w = world().await;
    let (status, body) = get(
        &w.api,
        "tenant-a",
        "/v1/explain/billing/tenant_config_limits",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // GIVEN global (v3), gold (v7) and tenant-a's own (v4) hold the key
    let layers: Vec<(String, i64)> = body["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["layer"].as_str().unwrap().to_owned(),
                l["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        layers,
        vec![
            ("global".to_owned(), 3),
            ("tier:gold".to_owned(), 7),
            ("tenant:tenant-a".to_owned(), 4)
        ]
    );
    // THEN each leaf names the layer that set it; a removed member is gone
    assert_eq!(
        body["leaves"],
        json!({
            "/requests": "tier:gold",
            "/burst": "tenant:tenant-a",
            "/theme/color": "global"
        })
    );
    assert_eq!(
        body["value"],
        json!({"requests": 50, "burst": 5, "theme": {"color": "blue"}})
    );
    // AND a shared layer shows only what reaches the tenant: not what gold
    // replaced or the tenant removed, and never who wrote it
    assert_eq!(
        body["layers"][0]["value"],
        json!({"theme": {"color": "blue"}})
    );
    assert_eq!(body["layers"][1]["value"], json!({"requests": 50}));
    assert!(body["layers"][0].get("updated_by").is_none(), "{body}");
    // AND a tenant with nothing of its own sees only the global layer
    let (_, b) = get(
        &w.api,
        "tenant-b",
        "/v1/explain/billing/tenant_config_limits",
        None,
    )
    .await;
    assert_eq!(b["leaves"]["/burst"], "global");
    assert_eq!(b["layers"].as_array().unwrap().len(), 1);
    // AND a key no layer holds is a 404
    let (status, _) = get(
        &w.api,
        "tenant-b",
        "/v1/explain/billing/tenant_config_none",
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// A rollout of `body`'s change at `step`, in `state`, started from the
/// layer's version `base`.
fn rollout(id: &str, body: Value, base: Option<i64>, step: usize, state: State) -> Rollout {
    let request = RolloutRequest::parse(&body).unwrap();
    let progress = Progress {
        state,
        step,
        since_ms: 0,
    };
    let mut rollout = Rollout::new(id, request, progress, "platform-admin", 1, 1);
    rollout.base_version = base;
    rollout
}

/// Moves a stored rollout on: the driver's write, then the change readers hear of.
async fn move_to(w: &World, mut rollout: Rollout, step: usize, state: State) -> Rollout {
    rollout.progress.step = step;
    rollout.progress.state = state;
    rollout.revision += 1;
    assert_eq!(w.rollouts.update(&rollout).await.unwrap(), Written::Stored);
    w.layers.invalidate_rollouts();
    rollout
}

#[tokio::test]
async fn a_rollout_serves_each_tenant_one_version_merged_under_its_own_layers() {
    let w = world().await;
    let path = "/v1/config/billing/tenant_config_limits";
    let (_, before_a) = get(&w.api, "tenant-a", path, None).await;
    // GIVEN a rollout of a new global default, tenant-b its canary
    let staged = rollout(
        "r1",
        json!({
            "layer": "global", "service": "billing", "key": "tenant_config_limits",
            "value": {"requests": 99, "burst": 20, "queue": "fifo"},
            "steps": [{"canary": ["tenant-b"]}, "everyone"], "bake_seconds": 60, "alarms": []
        }),
        Some(3),
        0,
        State::Baking,
    );
    assert_eq!(w.rollouts.create(&staged).await.unwrap(), Written::Stored);
    w.layers.invalidate_rollouts();
    // WHEN both tenants read
    let (_, b) = get(&w.api, "tenant-b", path, None).await;
    let (_, a) = get(&w.api, "tenant-a", path, None).await;
    // THEN the canary reads the staged value, as the version it will land as
    assert_eq!(
        b["value"],
        json!({"requests": 99, "burst": 20, "queue": "fifo"})
    );
    assert_eq!(b["version"], json!(4));
    // AND tenant-a, not in the step, reads exactly what it read before
    assert_eq!(a, before_a);
    // AND explain says which version each reads, and at which step
    let (_, explain_b) = get(
        &w.api,
        "tenant-b",
        "/v1/explain/billing/tenant_config_limits",
        None,
    )
    .await;
    assert_eq!(
        explain_b["rollout"],
        json!({"id": "r1", "layer": "global", "state": "baking", "step": 0, "steps": 2, "version": "new"})
    );
    assert_eq!(explain_b["leaves"]["/queue"], "global");
    let (_, explain_a) = get(
        &w.api,
        "tenant-a",
        "/v1/explain/billing/tenant_config_limits",
        None,
    )
    .await;
    assert_eq!(explain_a["rollout"]["version"], "previous");
    assert!(
        !explain_a.to_string().contains("fifo"),
        "a staged value is not shown to a tenant not on it: {explain_a}"
    );

    // WHEN the rollout reaches everyone
    let staged = move_to(&w, staged, 1, State::Rolling).await;
    // THEN tenant-a reads the new default under gold's override and its own exception
    let (_, a) = get(&w.api, "tenant-a", path, None).await;
    // (its own null for the font leaves an empty theme: RFC 7396)
    assert_eq!(
        a["value"],
        json!({"requests": 50, "burst": 5, "queue": "fifo", "theme": {}})
    );
    // AND a gate's alarm rolls both back to what they read before
    move_to(&w, staged, 1, State::RolledBack).await;
    let (_, a) = get(&w.api, "tenant-a", path, None).await;
    let (_, b) = get(&w.api, "tenant-b", path, None).await;
    assert_eq!(a, before_a);
    assert_eq!(b["value"]["requests"], json!(10));
    let (_, explain_b) = get(
        &w.api,
        "tenant-b",
        "/v1/explain/billing/tenant_config_limits",
        None,
    )
    .await;
    assert!(explain_b.get("rollout").is_none(), "{explain_b}");
}

#[tokio::test]
async fn a_rollout_of_a_key_no_layer_holds_yet_is_listed_for_its_tenants_only() {
    let w = world().await;
    // GIVEN a gold rollout of a key no layer holds, every gold tenant at once
    let staged = rollout(
        "r2",
        json!({
            "layer": "tier:gold", "service": "billing", "key": "param_config_new_flag",
            "value": true, "steps": ["everyone"], "bake_seconds": 0, "alarms": []
        }),
        None,
        0,
        State::Baking,
    );
    assert_eq!(w.rollouts.create(&staged).await.unwrap(), Written::Stored);
    // WHEN tenant-a (gold) and tenant-b (no tier) read the whole service and the key
    let (_, a) = get(&w.api, "tenant-a", "/v1/config/billing", None).await;
    let (_, b) = get(&w.api, "tenant-b", "/v1/config/billing", None).await;
    // THEN gold's tenant lists it at version 1, the other does not see it
    assert!(a.to_string().contains("param_config_new_flag"), "{a}");
    assert!(!b.to_string().contains("param_config_new_flag"), "{b}");
    let (status, one) = get(
        &w.api,
        "tenant-a",
        "/v1/config/billing/param_config_new_flag",
        None,
    )
    .await;
    assert_eq!(
        (status, one["value"].clone(), one["version"].clone()),
        (200, json!(true), json!(1))
    );
    let (status, _) = get(
        &w.api,
        "tenant-b",
        "/v1/config/billing/param_config_new_flag",
        None,
    )
    .await;
    assert_eq!(status, 404);
}
