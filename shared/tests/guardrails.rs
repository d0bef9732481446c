//! Guardrails and blast radius through the API: a shared layer locks a key
//! or sets a schema; a tenant's write is judged merged over the layers under
//! it; a shared change is weighed against every tenant before it lands
//! (dry run, refusal naming the tenants it breaks, forced and recorded).
//! In-memory stores, registry, guardrails and override index (marked here
//! as config-refresh marks it from the change feed); real API and writers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tenant_config_shared::StoreKind;
use tenant_config_shared::api::{ApiRequest, ConfigApi};
use tenant_config_shared::cache::{CachedStore, StaleIfError};
use tenant_config_shared::domain::ItemKey;
use tenant_config_shared::layers::blast::BlastRadius;
use tenant_config_shared::layers::guardrails::{GuardrailStore, Guardrails, MemoryGuardrails};
use tenant_config_shared::layers::overrides::{MemoryOverrides, OverrideIndex};
use tenant_config_shared::layers::platform::{FORCED_MARK, PlatformWrites};
use tenant_config_shared::layers::registry::{MemoryRegistry, TenantRecord, TenantRegistry};
use tenant_config_shared::layers::view::{SharedLayerSettings, SharedLayers};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::schema::{MemorySchemas, Schemas};
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::writes::ConfigWrites;
use tenant_config_shared::{ConfigKey, ServiceName, TenantId, TierName};
use tenant_config_testkit::agent::HOUR_LONG_CACHE;
use tenant_config_testkit::identity::{token, token_in_groups, verifier};

const PLATFORM_GROUP: &str = "config-platform-admins";
const ADMIN_GROUP: &str = "config-admins";
const GLOBAL: &str = "/v1/layers/global/billing/tenant_config_limits";
const FREE: &str = "/v1/layers/tiers/free/billing/tenant_config_limits";
const OWN: &str = "/v1/config/billing/tenant_config_limits";

struct Stack {
    api: ConfigApi,
    registry: Arc<MemoryRegistry>,
    overrides: Arc<MemoryOverrides>,
    dynamodb: Arc<MemoryStore>,
}

fn stack() -> Stack {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    let registry = Arc::new(MemoryRegistry::default());
    let overrides = Arc::new(MemoryOverrides::default());
    let guardrail_store = Arc::new(MemoryGuardrails::default());
    let guardrails = Arc::new(Guardrails::new(guardrail_store.clone()));
    let guardrail_store_for_writes: Arc<dyn GuardrailStore> = guardrail_store.clone();
    // The key's own schema: limits are objects whose `requests` is at most 1000.
    let schema_source = Arc::new(MemorySchemas::default());
    schema_source.set(
        &ServiceName::parse("billing").unwrap(),
        Some(&ConfigKey::parse("tenant_config_limits").unwrap()),
        json!({"type": "object", "required": ["requests"],
               "properties": {"requests": {"type": "integer", "maximum": 1000}}}),
    );
    let schemas = Arc::new(Schemas::new(schema_source));
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
    .with_layers(layers.clone());
    let api = ConfigApi::new(verifier(), reads)
        .with_writes(
            ConfigWrites::new(
                KeyRouter::default(),
                dynamodb.clone(),
                parameters.clone(),
                ADMIN_GROUP,
            )
            .with_schemas(schemas.clone())
            .with_layers(layers)
            .with_guardrails(guardrails.clone()),
        )
        .with_platform_writes(
            PlatformWrites::new(
                KeyRouter::default(),
                dynamodb.clone(),
                parameters.clone(),
                registry.clone(),
                PLATFORM_GROUP,
            )
            .with_schemas(schemas.clone())
            .with_blast_radius(
                BlastRadius::new(
                    KeyRouter::default(),
                    dynamodb.clone(),
                    parameters,
                    registry.clone(),
                    overrides.clone(),
                    guardrail_store,
                )
                .with_schemas(schemas),
            )
            .with_guardrails(guardrail_store_for_writes, guardrails),
        );
    Stack {
        api,
        registry,
        overrides,
        dynamodb,
    }
}

fn platform_admin() -> String {
    format!(
        "Bearer {}",
        token_in_groups("ops", "platform-admin-1", &[PLATFORM_GROUP])
    )
}

fn admin_of(tenant: &str) -> String {
    format!(
        "Bearer {}",
        token_in_groups(tenant, &format!("admin-of-{tenant}"), &[ADMIN_GROUP])
    )
}

async fn call(
    api: &ConfigApi,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<&str>,
    query: &[(&str, &str)],
) -> (u16, Value) {
    let flag = |name: &str| {
        query
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| Ok::<&str, ()>(*v))
    };
    let header = |name: &str| query.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let response = api
        .handle(&ApiRequest {
            method,
            path,
            authorization: Some(bearer),
            body,
            if_match: header("If-Match"),
            if_none_match: header("If-None-Match"),
            dry_run: flag("dry_run"),
            force: flag("force"),
            ..Default::default()
        })
        .await;
    (
        response.status,
        serde_json::from_str(&response.body).unwrap_or(Value::Null),
    )
}

async fn register(stack: &Stack, tenant: &str, tier: Option<&str>, active: bool) {
    stack
        .registry
        .put(
            &TenantId::parse(tenant).unwrap(),
            &TenantRecord {
                tier: tier.map(|t| TierName::parse(t).unwrap()),
                active,
            },
            None,
            "seed",
            1,
        )
        .await
        .unwrap();
}

const CREATE: (&str, &str) = ("If-None-Match", "*");

/// A tenant's own value, created through its administrator and marked in
/// the override index as config-refresh would mark it.
async fn own_value(stack: &Stack, tenant: &str, value: &str) {
    let (status, body) = call(
        &stack.api,
        "PUT",
        OWN,
        &admin_of(tenant),
        Some(value),
        &[CREATE],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    stack
        .overrides
        .mark(
            &ItemKey::parse(tenant, "billing", "tenant_config_limits").unwrap(),
            true,
            1,
        )
        .await
        .unwrap();
}

async fn effective(stack: &Stack, tenant: &str) -> Value {
    let bearer = format!("Bearer {}", token(tenant));
    let (status, body) = call(
        &stack.api,
        "GET",
        "/v1/config/billing/tenant_config_limits",
        &bearer,
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["value"].clone()
}

#[tokio::test]
async fn a_tenant_write_is_judged_by_what_its_readers_get_and_locked_keys_refuse_it() {
    let stack = stack();
    register(&stack, "tenant-a", Some("free"), true).await;
    // GIVEN a global default that satisfies the key's schema
    let (status, body) = call(
        &stack.api,
        "PUT",
        GLOBAL,
        &platform_admin(),
        Some(r#"{"value": {"requests": 100, "burst": 20}}"#),
        &[CREATE],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // WHEN tenant A patches one member (its patch alone lacks "requests",
    // which the schema requires)
    own_value(&stack, "tenant-a", r#"{"value": {"burst": 5}}"#).await;
    // THEN it lands: merged, its readers get a valid value
    assert_eq!(
        effective(&stack, "tenant-a").await,
        json!({"requests": 100, "burst": 5})
    );
    // AND a patch whose merged result breaks the schema is refused (422)
    let (status, body) = call(
        &stack.api,
        "PUT",
        OWN,
        &admin_of("tenant-a"),
        Some(r#"{"value": {"requests": 5000}}"#),
        &[("If-Match", "1")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("schema_violation")),
        "{body}"
    );

    // GIVEN the free tier locks the key (forced: tenant A already holds its own)
    let (status, body) = call(
        &stack.api,
        "PUT",
        &format!("{FREE}/guardrail"),
        &platform_admin(),
        Some(r#"{"locked": true}"#),
        &[CREATE],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("breaks_tenants")),
        "{body}"
    );
    assert_eq!(
        body["report"]["locked_override_tenants"],
        json!(["tenant-a"])
    );
    let (status, body) = call(
        &stack.api,
        "PUT",
        &format!("{FREE}/guardrail"),
        &platform_admin(),
        Some(r#"{"locked": true}"#),
        &[CREATE, ("force", "true")],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // THEN tenant A may no longer write the key (422 key_locked) ...
    let (status, body) = call(
        &stack.api,
        "PUT",
        OWN,
        &admin_of("tenant-a"),
        Some(r#"{"value": {"burst": 6}}"#),
        &[("If-Match", "1")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("key_locked")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("tier:free"),
        "{body}"
    );
    // ... but may delete its own value, giving the key back to the layers
    let (status, body) = call(
        &stack.api,
        "DELETE",
        OWN,
        &admin_of("tenant-a"),
        None,
        &[("If-Match", "1")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // AND the lock in place (weighed when it was set) blocks no later change
    // of the free tier's value, and removing it is never refused
    let (status, body) = call(
        &stack.api,
        "PUT",
        FREE,
        &platform_admin(),
        Some(r#"{"value": {"requests": 10}}"#),
        &[CREATE],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &stack.api,
        "DELETE",
        &format!("{FREE}/guardrail"),
        &platform_admin(),
        None,
        &[("If-Match", "1")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // AND a flag on a route that weighs nothing is refused, never ignored
    let (status, body) = call(
        &stack.api,
        "PUT",
        "/v1/tenants/tenant-a",
        &platform_admin(),
        Some(r#"{"tier": "gold"}"#),
        &[("If-Match", "1"), ("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // AND a tenant of no tier is not locked by the free tier
    let (status, body) = call(
        &stack.api,
        "PUT",
        OWN,
        &admin_of("tenant-b"),
        Some(r#"{"value": {"burst": 6}}"#),
        &[CREATE],
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn an_inactive_tenants_administrators_can_neither_write_nor_read_history() {
    let stack = stack();
    own_value(&stack, "tenant-a", r#"{"value": {"requests": 1}}"#).await;
    register(&stack, "tenant-a", None, false).await;
    for (method, path, body) in [
        ("PUT", OWN, Some(r#"{"value": {"requests": 2}}"#)),
        ("DELETE", OWN, None),
        (
            "GET",
            "/v1/config/billing/tenant_config_limits/history",
            None,
        ),
    ] {
        let (status, answer) = call(
            &stack.api,
            method,
            path,
            &admin_of("tenant-a"),
            body,
            &[("If-Match", "1")],
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("tenant_inactive")),
            "{method} {path}: {answer}"
        );
    }
}

#[tokio::test]
async fn a_shared_change_is_weighed_against_every_tenant_before_it_lands() {
    let stack = stack();
    // GIVEN 30 free tenants, 20 gold ones, one inactive, and a default
    for n in 0..30 {
        register(&stack, &format!("free-{n:02}"), Some("free"), true).await;
    }
    for n in 0..20 {
        register(&stack, &format!("gold-{n:02}"), Some("gold"), true).await;
    }
    register(&stack, "gone", Some("free"), false).await;
    let (status, _) = call(
        &stack.api,
        "PUT",
        GLOBAL,
        &platform_admin(),
        Some(r#"{"value": {"requests": 100}}"#),
        &[CREATE],
    )
    .await;
    assert_eq!(status, 201);
    // AND gold's own requests, and two free tenants' own values: one
    // replacing requests, one patching another member
    let (status, _) = call(
        &stack.api,
        "PUT",
        "/v1/layers/tiers/gold/billing/tenant_config_limits",
        &platform_admin(),
        Some(r#"{"value": {"requests": 500}}"#),
        &[CREATE],
    )
    .await;
    assert_eq!(status, 201);
    own_value(&stack, "free-00", r#"{"value": {"requests": 7}}"#).await;
    own_value(&stack, "free-01", r#"{"value": {"burst": 3}}"#).await;
    let reads_before = stack.overrides.calls();

    // WHEN the default is raised past the schema's maximum, as a dry run
    let (status, body) = call(
        &stack.api,
        "PUT",
        GLOBAL,
        &platform_admin(),
        Some(r#"{"value": {"requests": 2000}}"#),
        &[("If-Match", "1"), ("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let report = &body["report"];
    // THEN it names who changes (29 free tenants: all but free-00), who keeps
    // its own value (free-00; gold's tier override keeps gold as it is),
    // and who would fail the schema (the 29 whose requests become 2000)
    assert_eq!(report["tenants"], 50, "{report}");
    assert_eq!(report["inactive"], 1, "{report}");
    assert_eq!(report["changed"], 29, "{report}");
    assert_eq!(report["unchanged"], 21, "{report}");
    assert_eq!(report["keeping_own_value"], 1, "{report}");
    assert_eq!(report["keeping_own_value_tenants"], json!(["free-00"]));
    assert_eq!(report["failing"], 29, "{report}");
    assert_eq!(report["failing_tenants"][0]["tenant"], "free-01");
    assert_eq!(report["failing_tenants"][0]["path"], "/requests");
    assert_eq!(report["unregistered"]["changes"], true);
    // AND it read the index once, not once per tenant
    assert_eq!(stack.overrides.calls() - reads_before, 1);
    // AND nothing landed
    assert_eq!(effective(&stack, "free-05").await, json!({"requests": 100}));

    // WHEN it is written for real
    let (status, body) = call(
        &stack.api,
        "PUT",
        GLOBAL,
        &platform_admin(),
        Some(r#"{"value": {"requests": 2000}}"#),
        &[("If-Match", "1")],
    )
    .await;
    // THEN it is refused with the same report
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("breaks_tenants")),
        "{body}"
    );
    assert_eq!(body["report"]["failing"], 29);
    assert_eq!(effective(&stack, "free-05").await, json!({"requests": 100}));

    // WHEN it is forced
    let (status, body) = call(
        &stack.api,
        "PUT",
        GLOBAL,
        &platform_admin(),
        Some(r#"{"value": {"requests": 2000}}"#),
        &[("If-Match", "1"), ("force", "true")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blast_radius"]["failing"], 29);
    // THEN it lands, and its history records it as forced
    assert_eq!(
        effective(&stack, "free-05").await,
        json!({"requests": 2000})
    );
    assert_eq!(effective(&stack, "gold-03").await, json!({"requests": 500}));
    let (_, history) = call(
        &stack.api,
        "GET",
        &format!("{GLOBAL}/history"),
        &platform_admin(),
        None,
        &[],
    )
    .await;
    assert_eq!(
        history["versions"][0]["actor"],
        format!("platform-admin-1{FORCED_MARK}")
    );

    // AND a change that breaks nobody lands without force, with its report
    let (status, body) = call(
        &stack.api,
        "PUT",
        GLOBAL,
        &platform_admin(),
        Some(r#"{"value": {"requests": 200}}"#),
        &[("If-Match", "2")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blast_radius"]["failing"], 0);
    assert_eq!(body["blast_radius"]["changed"], 29);

    // AND flags are checked: both at once, or a value that is no boolean
    for query in [
        &[("If-Match", "3"), ("dry_run", "true"), ("force", "true")][..],
        &[("If-Match", "3"), ("dry_run", "yes")][..],
    ] {
        let (status, _) = call(
            &stack.api,
            "PUT",
            GLOBAL,
            &platform_admin(),
            Some(r#"{"value": {"requests": 1}}"#),
            query,
        )
        .await;
        assert_eq!(status, 400, "{query:?}");
    }
}

#[tokio::test]
async fn a_tier_change_reads_the_own_values_of_that_tiers_tenants_only() {
    let stack = stack();
    // GIVEN two free tenants and thirty gold ones, each holding its own value
    for n in 0..2 {
        register(&stack, &format!("free-{n:02}"), Some("free"), true).await;
        own_value(
            &stack,
            &format!("free-{n:02}"),
            r#"{"value": {"requests": 7}}"#,
        )
        .await;
    }
    for n in 0..30 {
        register(&stack, &format!("gold-{n:02}"), Some("gold"), true).await;
        own_value(
            &stack,
            &format!("gold-{n:02}"),
            r#"{"value": {"requests": 9}}"#,
        )
        .await;
    }
    let gets_before = stack.dynamodb.gets();

    // WHEN a change of the free tier is weighed
    let (status, body) = call(
        &stack.api,
        "PUT",
        FREE,
        &platform_admin(),
        Some(r#"{"value": {"requests": 50, "burst": 2}}"#),
        &[CREATE, ("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // THEN only the free tenants' own values were read (the gold ones'
    // cannot change with it), and both keep their own requests
    assert_eq!(stack.dynamodb.gets() - gets_before, 2);
    let report = &body["report"];
    assert_eq!(report["tenants"], 2, "{report}");
    assert_eq!(
        report["changed_tenants"],
        json!(["free-00", "free-01"]),
        "{report}"
    );
}
