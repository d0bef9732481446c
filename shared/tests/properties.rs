//! Adversarial inputs as properties (proptest): the validators, the routing
//! and store layouts, the HTTP API, the change event parsers and the token
//! parser. No input panics; every accepted key maps to exactly one store
//! location inside the caller's tenant; every rejected request is a 4xx.

use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use serde_json::{Value, json};
use tenant_config_shared::api::{ApiRequest, ConfigApi};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::domain::StoreKind;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::event::parse_parameter_name;
use tenant_config_shared::refresh::fanout::{Fanout, FanoutSettings};
use tenant_config_shared::refresh::handler::Refresher;
use tenant_config_shared::refresh::journal::MemoryJournal;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::store::dynamodb::{parse_key, partition_key, sort_key};
use tenant_config_shared::store::ssm::parameter_name;
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName, TenantId};
use tenant_config_testkit::agent::{HOUR_LONG_CACHE, refresh_key};
use tenant_config_testkit::discovery::StaticInstances;
use tenant_config_testkit::identity::{token, verifier};
use tenant_config_testkit::values::{item, plain};

const ROOT: &str = "/config-service";

/// Strings that look like identifiers, with hostile characters mixed in.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{0,70}",
        "(tenant_config_|param_config_)[A-Za-z0-9_.-]{0,130}",
        "[A-Za-z0-9_./:#%?&=\\\\ -]{0,40}",
        "\\PC{0,40}",
        Just("..".to_owned()),
        Just("tenant_config_../../etc".to_owned()),
        Just("tenant-b".to_owned()),
        Just("billing".to_owned()),
        Just("tenant_config_limits".to_owned()),
        Just("param_config_endpoint".to_owned()),
        Just("tenant_config_".to_owned()),
    ]
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
    });
    &RUNTIME
}

/// config-api over memory stores holding the same keys for two tenants, with
/// values that name their tenant.
fn api() -> &'static ConfigApi {
    static API: LazyLock<ConfigApi> = LazyLock::new(|| {
        let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
        let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        for tenant in ["tenant-a", "tenant-b"] {
            dynamodb.put(
                &item(tenant, "billing", "tenant_config_limits"),
                plain(json!(format!("{tenant}-limits"))),
            );
            parameters.put(
                &item(tenant, "billing", "param_config_endpoint"),
                plain(json!(format!("{tenant}-endpoint"))),
            );
        }
        let reads = ConfigReads::new(
            KeyRouter::default(),
            CachedStore::new(dynamodb, HOUR_LONG_CACHE),
            CachedStore::new(parameters, HOUR_LONG_CACHE),
        );
        ConfigApi::new(verifier(), reads)
    });
    &API
}

fn tenant_a_token() -> &'static str {
    static TOKEN: LazyLock<String> = LazyLock::new(|| format!("Bearer {}", token("tenant-a")));
    &TOKEN
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_key_has_one_store_location_inside_its_tenant(
        tenant in name_like(), service in name_like(), key in name_like()
    ) {
        let (Ok(t), Ok(s), Ok(k)) = (
            TenantId::parse(&tenant),
            ServiceName::parse(&service),
            ConfigKey::parse(&key),
        ) else {
            return Ok(());
        };
        // accepted parts use the strict character set only
        for part in [&tenant, &service, &key] {
            prop_assert!(part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
            prop_assert!(!part.contains(".."));
        }
        let item = ItemKey::new(t.clone(), s.clone(), k.clone());
        match KeyRouter::default().route(&k) {
            Ok(StoreKind::DynamoDb) => {
                let (pk, sk) = (partition_key(&t), sort_key(&s, &k));
                prop_assert_eq!(&pk, &format!("TENANT#{tenant}"));
                prop_assert_eq!(parse_key(&pk, &sk).ok(), Some(item));
            }
            Ok(StoreKind::ParameterStore) => {
                let name = parameter_name(ROOT, &t, &s, &k);
                let tenant_prefix = format!("{ROOT}/{tenant}/");
                prop_assert!(name.starts_with(&tenant_prefix));
                prop_assert_eq!(parse_parameter_name(&name, ROOT).ok(), Some(item));
            }
            Err(err) => {
                prop_assert_eq!(err.status(), 400);
                // refused: no prefix, or nothing after it
                let named = |prefix: &str| key.len() > prefix.len() && key.starts_with(prefix);
                prop_assert!(!named("tenant_config_") && !named("param_config_"), "{key}");
            }
        }
    }

    #[test]
    fn every_request_is_answered_from_the_callers_tenant_or_refused_with_a_4xx(
        segments in proptest::collection::vec(name_like(), 0..6),
        prefix in prop_oneof![Just("/v1/config"), Just("/v1/secure"), Just("/prod/v1/config"), Just("")],
        keys in proptest::option::of(name_like()),
        method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
    ) {
        let path = format!("{prefix}/{}", segments.join("/"));
        let response = runtime().block_on(api().handle(&ApiRequest {
            method,
            path: &path,
            authorization: Some(tenant_a_token()),
            keys: keys.as_deref().map(Ok),
            ..Default::default()
        }));
        let body: Value = serde_json::from_str(&response.body).expect("every answer is JSON");
        // A batch's keys spelled another way than sorted and each once is
        // sent to the canonical spelling (308), on the same path.
        let canonical = response.status == 308
            && body["location"].as_str().is_some_and(|l| l.starts_with("?keys="));
        prop_assert!(
            response.status == 200 || canonical || (400..500).contains(&response.status),
            "{} {path}: {} {}", method, response.status, response.body
        );
        // tenant B's values never reach tenant A, whatever the path says
        for foreign in ["tenant-b-limits", "tenant-b-endpoint"] {
            prop_assert!(!response.body.contains(foreign), "{path}: {}", response.body);
        }
        if response.status != 200 && !canonical {
            prop_assert!(body["error"].is_string());
        }
    }

    #[test]
    fn the_token_parser_refuses_garbage_with_a_401(
        raw in prop_oneof![
            "\\PC{0,300}",
            "[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,80}",
            "eyJ[A-Za-z0-9_-]{0,60}\\.eyJ[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,40}",
        ]
    ) {
        let result = runtime().block_on(verifier().verify(&raw));
        let err = result.expect_err("garbage is never a verified identity");
        prop_assert_eq!(err.status(), 401);
    }

    #[test]
    fn change_events_and_stream_batches_never_panic(event in json_value()) {
        let refresher = Refresher::new(
            ROOT,
            KeyRouter::default(),
            Arc::new(StaticInstances(Vec::new())),
            Arc::new(Fanout::new(refresh_key(), FanoutSettings::default())),
            Arc::new(MemoryJournal::new()),
        );
        // Whatever arrives, the answer is an outcome or an error, never a panic.
        let _ = runtime().block_on(refresher.handle(event));
    }
}

/// JSON shaped like the events config-refresh receives, with any part
/// replaced by arbitrary JSON.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,30}".prop_map(Value::from),
        Just(Value::from("aws.ssm")),
        Just(Value::from("Parameter Store Change")),
        Just(Value::from("aws:dynamodb")),
        Just(Value::from("aws:sqs")),
        Just(Value::from(
            "/config-service/tenant-a/billing/param_config_x"
        )),
    ];
    let any_json = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("Records".to_owned()),
                    Just("dynamodb".to_owned()),
                    Just("Keys".to_owned()),
                    Just("detail".to_owned()),
                    Just("eventSource".to_owned()),
                    "[a-zA-Z-]{1,12}",
                ],
                inner,
                0..5
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    prop_oneof![
        any_json.clone(),
        any_json
            .clone()
            .prop_map(|records| json!({"Records": [records]})),
        (any_json.clone(), any_json).prop_map(|(name, operation)| json!({
            "id": "4f1c8e2e-1111-2222-3333-444455556666",
            "source": "aws.ssm",
            "detail-type": "Parameter Store Change",
            "detail": {"name": name, "operation": operation, "type": "String"}
        })),
    ]
}
