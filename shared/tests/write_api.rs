//! The write routes of the HTTP API over memory stores (the writer port's
//! memory adapter): who may write, optimistic concurrency with If-Match,
//! secrets never echoed, history and rollback, and readers of the same
//! container serving the write at once.

use std::sync::Arc;

use serde_json::{Value, json};
use tenant_config_shared::StoreKind;
use tenant_config_shared::api::{ApiRequest, ApiResponse, ConfigApi};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::schema::{MemorySchemas, Schemas};
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::writes::ConfigWrites;
use tenant_config_shared::{ConfigKey, ServiceName};
use tenant_config_testkit::agent::HOUR_LONG_CACHE;
use tenant_config_testkit::identity::{token, token_in_groups, verifier};
use tenant_config_testkit::values::{item, plain};

const ADMINS: &str = "config-admins";

fn api() -> ConfigApi {
    api_with(None)
}

fn api_with(schemas: Option<Arc<Schemas>>) -> ConfigApi {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    dynamodb.put(
        &item("tenant-b", "billing", "tenant_config_limits"),
        plain(json!("b-limits")),
    );
    api_over(dynamodb, parameters, schemas)
}

/// An API (one container) over the given stores.
fn api_over(
    dynamodb: Arc<MemoryStore>,
    parameters: Arc<MemoryStore>,
    schemas: Option<Arc<Schemas>>,
) -> ConfigApi {
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), HOUR_LONG_CACHE),
        CachedStore::new(parameters.clone(), HOUR_LONG_CACHE),
    );
    let mut writes = ConfigWrites::new(KeyRouter::default(), dynamodb, parameters, ADMINS);
    if let Some(schemas) = schemas {
        writes = writes.with_schemas(schemas);
    }
    ConfigApi::new(verifier(), reads).with_writes(writes)
}

struct Call<'a> {
    method: &'a str,
    path: &'a str,
    token: &'a str,
    body: Option<&'a str>,
    if_match: Option<&'a str>,
    if_none_match: Option<&'a str>,
}

impl<'a> Call<'a> {
    fn new(method: &'a str, path: &'a str, token: &'a str) -> Self {
        Self {
            method,
            path,
            token,
            body: None,
            if_match: None,
            if_none_match: None,
        }
    }
}

async fn send(api: &ConfigApi, call: Call<'_>) -> (ApiResponse, Value) {
    let authorization = format!("Bearer {}", call.token);
    let response = api
        .handle(&ApiRequest {
            method: call.method,
            path: call.path,
            authorization: Some(&authorization),
            body: call.body,
            if_match: call.if_match,
            if_none_match: call.if_none_match,
            ..Default::default()
        })
        .await;
    let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response, body)
}

fn header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

const LIMITS: &str = "/v1/config/billing/tenant_config_limits";

#[tokio::test]
async fn an_administrator_creates_and_updates_from_the_version_read() {
    let api = api();
    let admin = token_in_groups("tenant-a", "sub-ann", &[ADMINS]);
    // WHEN an administrator creates a key (If-None-Match: *)
    let (created, body) = send(
        &api,
        Call {
            body: Some(r#"{"value": {"max_users": 10}}"#),
            if_none_match: Some("*"),
            ..Call::new("PUT", LIMITS, &admin)
        },
    )
    .await;
    // THEN it is version 1 of the caller's tenant, read back at once
    assert_eq!(created.status, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(header(&created, "etag"), Some("\"1\""));
    let (read, value) = send(&api, Call::new("GET", LIMITS, &admin)).await;
    assert_eq!(value["value"], json!({"max_users": 10}));
    assert_eq!(header(&read, "etag"), Some("\"1\""));
    // WHEN it is updated from version 1 THEN it is version 2
    let (updated, body) = send(
        &api,
        Call {
            body: Some(r#"{"value": {"max_users": 20}}"#),
            if_match: Some("\"1\""),
            ..Call::new("PUT", LIMITS, &admin)
        },
    )
    .await;
    assert_eq!(updated.status, 200, "{body}");
    assert_eq!(
        (body["version"].clone(), body["previous_version"].clone()),
        (json!(2), json!(1))
    );
    // WHEN someone writes from version 1 again THEN 409 with the current version
    let (conflict, body) = send(
        &api,
        Call {
            body: Some(r#"{"value": 1}"#),
            if_match: Some("1"),
            ..Call::new("PUT", LIMITS, &admin)
        },
    )
    .await;
    assert_eq!(conflict.status, 409, "{body}");
    assert_eq!(body["error"], "version_conflict");
    assert_eq!(body["current_version"], 2);
    let (_, value) = send(&api, Call::new("GET", LIMITS, &admin)).await;
    assert_eq!(value["value"], json!({"max_users": 20}), "nothing changed");
    // AND another tenant's key of the same name is untouched
    let (_, other) = send(&api, Call::new("GET", LIMITS, &token("tenant-b"))).await;
    assert_eq!(other["value"], "b-limits");
}

#[tokio::test]
async fn only_administrators_write_and_every_write_states_its_precondition() {
    let api = api();
    let user = token("tenant-a");
    fn put(token: &str) -> Call<'_> {
        Call {
            body: Some(r#"{"value": "x"}"#),
            if_none_match: Some("*"),
            ..Call::new("PUT", LIMITS, token)
        }
    }
    let (refused, body) = send(&api, put(&user)).await;
    assert_eq!(refused.status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains(ADMINS));
    let other_group = token_in_groups("tenant-a", "sub-x", &["readers"]);
    assert_eq!(send(&api, put(&other_group)).await.0.status, 403);
    let admin = token_in_groups("tenant-a", "sub-ann", &[ADMINS]);
    // no precondition, a bad one, a bad body, an unknown type, a secret in DynamoDB
    for (call, status) in [
        (
            Call {
                body: Some(r#"{"value": "x"}"#),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        (
            Call {
                body: Some(r#"{"value": "x"}"#),
                if_match: Some("latest"),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        // versions whose successor would overflow, and versions below 1
        (
            Call {
                body: Some(r#"{"value": "x"}"#),
                if_match: Some("9223372036854775807"),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        (
            Call {
                body: Some(r#"{"value": "x"}"#),
                if_match: Some("-1"),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        (
            Call {
                body: Some("not json"),
                if_none_match: Some("*"),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        (
            Call {
                body: Some(r#"{"value": "x", "tenant": "tenant-b"}"#),
                if_none_match: Some("*"),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        (
            Call {
                body: Some(r#"{"value": "x", "type": "blob"}"#),
                if_none_match: Some("*"),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        (
            Call {
                body: Some(r#"{"value": "x", "type": "secure-string"}"#),
                if_none_match: Some("*"),
                ..Call::new("PUT", LIMITS, &admin)
            },
            400,
        ),
        // deleting from a version that does not exist: someone else deleted it
        (
            Call {
                if_match: Some("1"),
                ..Call::new("DELETE", LIMITS, &admin)
            },
            409,
        ),
        (Call::new("POST", LIMITS, &admin), 405),
        (
            Call {
                body: Some(r#"{"value": "x"}"#),
                if_none_match: Some("*"),
                ..Call::new("PUT", "/v1/secure/billing/tenant_config_limits", &admin)
            },
            405,
        ),
    ] {
        let path = call.path;
        let (response, body) = send(&api, call).await;
        assert_eq!(response.status, status, "{path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn secrets_are_written_never_echoed_and_history_and_rollback_work() {
    let api = api();
    let admin = token_in_groups("tenant-a", "sub-ann", &[ADMINS]);
    let secret = "/v1/config/billing/param_config_db_password";
    for (value, precondition) in [("first-secret", None), ("second-secret", Some("1"))] {
        let body = format!(r#"{{"value": "{value}", "type": "secure-string"}}"#);
        let (response, _) = send(
            &api,
            Call {
                body: Some(&body),
                if_none_match: precondition.is_none().then_some("*"),
                if_match: precondition,
                ..Call::new("PUT", secret, &admin)
            },
        )
        .await;
        assert!(response.status < 300, "{}", response.body);
        assert!(!response.body.contains("secret\""), "{}", response.body);
    }
    // The cached route still refuses it; the history never shows a value.
    assert_eq!(
        send(&api, Call::new("GET", secret, &admin)).await.0.status,
        409
    );
    let history_path = format!("{secret}/history");
    let (history, body) = send(&api, Call::new("GET", &history_path, &admin)).await;
    assert_eq!(history.status, 200, "{body}");
    assert_eq!(body["versions"][0]["version"], 2);
    assert_eq!(body["versions"][0]["actor"], "sub-ann");
    assert_eq!(body["versions"][0]["type"], "secure-string");
    assert!(!history.body.contains("first-secret") && !history.body.contains("second-secret"));
    // Rollback to version 1 from version 2 restores the first secret as version 3.
    let rollback_path = format!("{secret}/rollback");
    let (rolled, body) = send(
        &api,
        Call {
            body: Some(r#"{"version": 1}"#),
            if_match: Some("2"),
            ..Call::new("POST", &rollback_path, &admin)
        },
    )
    .await;
    assert_eq!(rolled.status, 200, "{body}");
    assert_eq!(
        (body["version"].clone(), body["rollback_of"].clone()),
        (json!(3), json!(1))
    );
    let secure = "/v1/secure/billing/param_config_db_password";
    let (_, read) = send(&api, Call::new("GET", secure, &admin)).await;
    assert_eq!(read["value"], "first-secret");
    // A non-administrator may not read the history either.
    assert_eq!(
        send(&api, Call::new("GET", &history_path, &token("tenant-a")))
            .await
            .0
            .status,
        403
    );
    // Delete from the current version; the key is gone for readers at once.
    let (deleted, body) = send(
        &api,
        Call {
            if_match: Some("3"),
            ..Call::new("DELETE", secret, &admin)
        },
    )
    .await;
    assert_eq!(deleted.status, 200, "{body}");
    assert_eq!(body["deleted_version"], 3);
    assert_eq!(
        send(&api, Call::new("GET", secure, &admin)).await.0.status,
        404
    );
}

#[tokio::test]
async fn a_value_that_fails_its_schema_is_refused_with_422_and_never_stored() {
    // GIVEN a schema for tenant_config_limits in billing
    let source = Arc::new(MemorySchemas::default());
    source.set(
        &ServiceName::parse("billing").unwrap(),
        Some(&ConfigKey::parse("tenant_config_limits").unwrap()),
        json!({"type": "object", "properties": {"max_users": {"type": "integer", "minimum": 1}}, "required": ["max_users"]}),
    );
    let api = api_with(Some(Arc::new(Schemas::new(source))));
    let admin = token_in_groups("tenant-a", "sub-ann", &[ADMINS]);
    // WHEN an administrator writes a value that breaks it
    let (refused, body) = send(
        &api,
        Call {
            body: Some(r#"{"value": {"max_users": 0}}"#),
            if_none_match: Some("*"),
            ..Call::new("PUT", LIMITS, &admin)
        },
    )
    .await;
    // THEN 422 names the failing location and rule, never the value
    assert_eq!(refused.status, 422, "{body}");
    assert_eq!(body["error"], "schema_violation");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("/max_users") && message.contains("minimum"),
        "{message}"
    );
    // AND nothing was stored
    assert_eq!(
        send(&api, Call::new("GET", LIMITS, &admin)).await.0.status,
        404
    );
    // WHEN the value satisfies the schema THEN it is stored
    let (stored, body) = send(
        &api,
        Call {
            body: Some(r#"{"value": {"max_users": 3}}"#),
            if_none_match: Some("*"),
            ..Call::new("PUT", LIMITS, &admin)
        },
    )
    .await;
    assert_eq!(stored.status, 201, "{body}");
}

#[tokio::test]
async fn a_rollback_to_a_value_todays_schema_refuses_is_refused() {
    // GIVEN limits written as v1 {"max_users": 0} and v2 {"max_users": 5}
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    let before = api_over(dynamodb.clone(), parameters.clone(), None);
    let admin = token_in_groups("tenant-a", "sub-ann", &[ADMINS]);
    for (body, precondition) in [
        (r#"{"value": {"max_users": 0}}"#, (None, Some("*"))),
        (r#"{"value": {"max_users": 5}}"#, (Some("1"), None)),
    ] {
        let (written, answer) = send(
            &before,
            Call {
                body: Some(body),
                if_match: precondition.0,
                if_none_match: precondition.1,
                ..Call::new("PUT", LIMITS, &admin)
            },
        )
        .await;
        assert!(written.status < 300, "{answer}");
    }
    // AND a schema added since then that requires max_users >= 1
    let source = Arc::new(MemorySchemas::default());
    source.set(
        &ServiceName::parse("billing").unwrap(),
        None,
        json!({"properties": {"max_users": {"type": "integer", "minimum": 1}}}),
    );
    let api = api_over(dynamodb, parameters, Some(Arc::new(Schemas::new(source))));
    // WHEN the administrator rolls back to v1
    let rollback = format!("{LIMITS}/rollback");
    let (refused, body) = send(
        &api,
        Call {
            body: Some(r#"{"version": 1}"#),
            if_match: Some("2"),
            ..Call::new("POST", &rollback, &admin)
        },
    )
    .await;
    // THEN 422 names the rule, and v2 is still served
    assert_eq!(refused.status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("minimum"),
        "{body}"
    );
    let (_, current) = send(&api, Call::new("GET", LIMITS, &admin)).await;
    assert_eq!(current["value"], json!({"max_users": 5}));
    // AND a rollback to a version that never existed is a 404, not a pass
    let (unknown, body) = send(
        &api,
        Call {
            body: Some(r#"{"version": 9}"#),
            if_match: Some("2"),
            ..Call::new("POST", &rollback, &admin)
        },
    )
    .await;
    assert_eq!(unknown.status, 404, "{body}");
}

/// A user pool that cannot answer (throttling, an outage).
struct UnreachablePool;

#[async_trait::async_trait]
impl tenant_config_shared::membership::GroupMembership for UnreachablePool {
    async fn is_member(&self, _: &str, _: &str) -> Result<bool, String> {
        Err("ThrottlingException: Rate exceeded".to_owned())
    }
}

#[tokio::test]
async fn a_write_whose_administrator_the_pool_cannot_confirm_is_refused_with_503() {
    // GIVEN config-api confirming administrators with a pool that cannot answer
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), HOUR_LONG_CACHE),
        CachedStore::new(parameters.clone(), HOUR_LONG_CACHE),
    );
    let writes = ConfigWrites::new(KeyRouter::default(), dynamodb.clone(), parameters, ADMINS)
        .with_membership(Arc::new(UnreachablePool));
    let api = ConfigApi::new(verifier(), reads).with_writes(writes);
    // WHEN an administrator (by the token) writes
    let admin = token_in_groups("tenant-a", "sub-dana", &[ADMINS]);
    let mut call = Call::new("PUT", LIMITS, &admin);
    call.body = Some(r#"{"value": {"max": 5}}"#);
    call.if_none_match = Some("*");
    let (response, body) = send(&api, call).await;
    // THEN it is refused, not made on an unconfirmed membership, and says why
    assert_eq!(response.status, 503, "{body}");
    assert_eq!(body["error"], "auth_unavailable");
    assert!(
        !response.body.contains("Throttling"),
        "no pool detail leaks: {}",
        response.body
    );
    let (read, _) = send(&api, Call::new("GET", LIMITS, &admin)).await;
    assert_eq!(read.status, 404, "nothing stored");
}
