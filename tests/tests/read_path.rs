//! End to end: moto (DynamoDB, SSM, Cognito) + config-api under
//! `cargo lambda watch`, called over HTTP with real Cognito ID tokens.

use serde_json::{Value, json};
use tenant_config_local_stack::seed;
use tenant_config_local_stack::stack::{
    ALICE, BOB, CAROL, LocalStack, PASSWORD, SERVICE, StackOptions,
};
use tenant_config_testkit::identity::OTHER_KEY_PEM;

use crate::jwt_parts::{claiming_tenant, decode_part, encode_part};

async fn stack() -> LocalStack {
    LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("local stack starts")
}

fn path(key: &str) -> String {
    format!("/v1/config/{SERVICE}/{key}")
}

#[tokio::test]
async fn each_tenant_reads_its_own_values_from_both_stores() {
    // GIVEN two tenants with values in DynamoDB and Parameter Store
    let stack = stack().await;
    let alice = stack.token(ALICE).await.unwrap();
    let bob = stack.token(BOB).await.unwrap();

    // WHEN tenant A reads a DynamoDB key THEN it gets its JSON document
    let answer = stack
        .get(&path("tenant_config_limits"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.body,
        json!({"service": SERVICE, "key": "tenant_config_limits", "value": {"max_users": 50, "tier": "gold"}, "source": "dynamodb", "version": 1})
    );
    // AND a Parameter Store key, and a StringList as an array
    let endpoint = stack
        .get(&path("param_config_endpoint"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(endpoint.body["value"], "https://billing.tenant-a.example");
    assert_eq!(endpoint.body["source"], "parameter-store");
    let regions = stack
        .get(&path("param_config_regions"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(regions.body["value"], json!(["eu-west-1", "us-east-1"]));

    // WHEN tenant B reads the same keys THEN it gets its own values
    let limits_b = stack
        .get(&path("tenant_config_limits"), Some(&bob))
        .await
        .unwrap();
    assert_eq!(
        limits_b.body["value"],
        json!({"max_users": 5, "tier": "free"})
    );
    let endpoint_b = stack
        .get(&path("param_config_endpoint"), Some(&bob))
        .await
        .unwrap();
    assert_eq!(endpoint_b.body["value"], "https://billing.tenant-b.example");

    // WHEN tenant A batch-reads keys of both stores plus an unknown one
    let batch = stack
        .get(
            &format!("/v1/config/{SERVICE}?keys=tenant_config_limits,param_config_endpoint,param_config_regions,tenant_config_absent"),
            Some(&alice),
        )
        .await
        .unwrap();
    // THEN found values and the missing key come back in one answer
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(
        batch.body,
        json!({
            "service": SERVICE,
            "values": {
                "tenant_config_limits": {"max_users": 50, "tier": "gold"},
                "param_config_endpoint": "https://billing.tenant-a.example",
                "param_config_regions": ["eu-west-1", "us-east-1"],
            },
            "missing": ["tenant_config_absent"],
        })
    );

    // WHEN tenant B reads its whole billing service (no `keys`)
    let whole = stack
        .get(&format!("/v1/config/{SERVICE}"), Some(&bob))
        .await
        .unwrap();
    // THEN every key of B's billing comes back from both stores in one
    // answer (DynamoDB Query, GetParametersByPath), its SecureString by name
    assert_eq!(whole.status, 200, "{}", whole.text);
    let values = whole.body["values"].as_object().unwrap();
    assert_eq!(
        values["tenant_config_limits"],
        json!({"max_users": 5, "tier": "free"})
    );
    assert_eq!(
        values["param_config_endpoint"],
        "https://billing.tenant-b.example"
    );
    assert!(
        values
            .keys()
            .all(|k| k.starts_with("tenant_config_") || k.starts_with("param_config_")),
        "{values:?}"
    );
    assert!(!whole.text.contains("tenant-a"), "{}", whole.text);
    assert_eq!(whole.body["truncated"], false);
    // A's whole service names its SecureString but never holds its value
    let whole_a = stack
        .get(&format!("/v1/config/{SERVICE}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(
        whole_a.body["sensitive"],
        json!(["param_config_db_password"])
    );
    assert!(!whole_a.text.contains("tenant-a-db-secret"));
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_values() {
    // GIVEN tenant A has a theme and a secret that tenant B does not have
    let stack = stack().await;
    let bob = stack.token(BOB).await.unwrap();

    // WHEN tenant B asks for them on every route THEN it gets 404 and never A's value
    for route in [
        path("tenant_config_theme"),
        path("param_config_db_password"),
        format!("/v1/secure/{SERVICE}/param_config_db_password"),
        format!("/v1/secure/{SERVICE}/tenant_config_theme"),
    ] {
        let answer = stack.get(&route, Some(&bob)).await.unwrap();
        assert_eq!(answer.status, 404, "{route}: {}", answer.text);
        assert_eq!(answer.body["error"], "not_found");
        assert!(
            !answer.text.contains("dark") && !answer.text.contains("tenant-a"),
            "{}",
            answer.text
        );
    }
    let batch = stack
        .get(
            &format!("/v1/config/{SERVICE}?keys=tenant_config_theme,tenant_config_limits"),
            Some(&bob),
        )
        .await
        .unwrap();
    assert_eq!(batch.body["missing"], json!(["tenant_config_theme"]));
    assert_eq!(batch.body["values"]["tenant_config_limits"]["tier"], "free");
    // AND a set of keys has one spelling (one stage cache entry): another
    // order or a repeat is redirected (308) to the sorted, deduplicated one,
    // which a client following redirects (as `stack.get` does) is served
    let unsorted = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(stack.api_url(&format!(
            "/v1/config/{SERVICE}?keys=tenant_config_theme,tenant_config_limits,tenant_config_theme"
        )))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(unsorted.status(), 308);
    assert_eq!(
        unsorted.headers()["location"],
        "?keys=tenant_config_limits,tenant_config_theme"
    );

    // AND a tenant named in the path, query or headers is ignored: B still reads B
    let spoofed = reqwest::Client::new()
        .get(stack.api_url(&format!(
            "{}?tenantId=tenant-a",
            path("tenant_config_limits")
        )))
        .bearer_auth(&bob)
        .header("x-tenant-id", "tenant-a")
        .send()
        .await
        .unwrap();
    let body: Value = spoofed.json().await.unwrap();
    assert_eq!(body["value"]["tier"], "free");
}

#[tokio::test]
async fn secure_strings_are_served_only_on_the_uncached_secure_route() {
    let stack = stack().await;
    let alice = stack.token(ALICE).await.unwrap();

    // WHEN the cached route is asked for a SecureString THEN 409 without the value
    let refused = stack
        .get(&path("param_config_db_password"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(refused.body["error"], "sensitive_value");
    assert!(!refused.text.contains("tenant-a-db-secret"));
    let batch = stack
        .get(
            &format!("/v1/config/{SERVICE}?keys=param_config_endpoint,param_config_db_password"),
            Some(&alice),
        )
        .await
        .unwrap();
    assert_eq!(batch.status, 409, "{}", batch.text);
    assert_eq!(batch.body["keys"], json!(["param_config_db_password"]));
    assert!(!batch.text.contains("tenant-a-db-secret"));

    // WHEN the secure route is asked THEN the clear value comes back, marked no-store
    let secure = stack
        .get(
            &format!("/v1/secure/{SERVICE}/param_config_db_password"),
            Some(&alice),
        )
        .await
        .unwrap();
    assert_eq!(secure.status, 200, "{}", secure.text);
    assert_eq!(secure.body["value"], "tenant-a-db-secret");
    assert_eq!(secure.header("cache-control"), Some("no-store"));

    // AND the secret never appears in the function's logs
    assert!(!stack.watch.log_tail().contains("tenant-a-db-secret"));
}

#[tokio::test]
async fn forged_foreign_and_missing_tokens_are_refused() {
    let stack = stack().await;
    let alice = stack.token(ALICE).await.unwrap();
    let parts: Vec<&str> = alice.split('.').collect();
    let (header, mut claims) = (decode_part(parts[0]), decode_part(parts[1]));
    claims["custom:tenantId"] = json!("tenant-b");

    // A real token whose payload was edited to claim tenant B.
    let tampered = claiming_tenant(&alice, "tenant-b");
    // The same claims, unsigned (alg none).
    let unsigned = format!(
        "{}.{}.",
        encode_part(&json!({"alg": "none", "typ": "JWT", "kid": header["kid"]})),
        encode_part(&claims)
    );
    // The same claims signed by a key that is not the pool's, with the pool's kid.
    let mut forged_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    forged_header.kid = header["kid"].as_str().map(str::to_owned);
    let foreign_key = jsonwebtoken::EncodingKey::from_rsa_pem(OTHER_KEY_PEM.as_bytes()).unwrap();
    let foreign = jsonwebtoken::encode(&forged_header, &claims, &foreign_key).unwrap();
    // A genuine token for an app client this API does not trust.
    let other_client = seed::create_app_client(&stack.aws, &stack.pool.pool_id, "untrusted-app")
        .await
        .unwrap();
    let wrong_audience =
        tenant_config_admin::tokens::id_token(&stack.aws, &other_client, ALICE.username, PASSWORD)
            .await
            .unwrap();

    for (name, token) in [
        ("tampered", tampered.as_str()),
        ("alg none", unsigned.as_str()),
        ("foreign key", foreign.as_str()),
        ("untrusted client", wrong_audience.as_str()),
        ("garbage", "not-a-jwt"),
    ] {
        let answer = stack
            .get(&path("tenant_config_limits"), Some(token))
            .await
            .unwrap();
        assert_eq!(answer.status, 401, "{name}: {}", answer.text);
        assert_eq!(answer.body["error"], "unauthorized", "{name}");
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{name}"
        );
        assert!(
            !answer.text.contains("gold") && !answer.text.contains("free"),
            "{name}"
        );
    }
    let missing = stack
        .get(&path("tenant_config_limits"), None)
        .await
        .unwrap();
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));

    // A valid user without a tenant is authenticated but forbidden.
    let carol = stack.token(CAROL).await.unwrap();
    let forbidden = stack
        .get(&path("tenant_config_limits"), Some(&carol))
        .await
        .unwrap();
    assert_eq!(forbidden.status, 403, "{}", forbidden.text);
}

#[tokio::test]
async fn hostile_or_malformed_input_is_a_clear_400() {
    let stack = stack().await;
    let alice = stack.token(ALICE).await.unwrap();
    let too_many = (0..51)
        .map(|i| format!("tenant_config_{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for (route, field) in [
        (path("tenant_config_a%23b"), "key"),
        (path("tenant_config_..x"), "key"),
        (path("other_prefix_key"), "key"),
        (
            format!("/v1/config/{}/tenant_config_x", "s".repeat(65)),
            "service",
        ),
        (
            "/v1/config/bill%2Fing/tenant_config_x".to_owned(),
            "service",
        ),
        (format!("/v1/config/{SERVICE}?keys={too_many}"), "50"),
        (format!("/v1/config/{SERVICE}?keys="), "key"),
        (
            format!("/v1/config/{SERVICE}?keys=tenant_config_a,tenant:config"),
            "key",
        ),
    ] {
        let answer = stack.get(&route, Some(&alice)).await.unwrap();
        assert_eq!(answer.status, 400, "{route}: {}", answer.text);
        assert!(
            answer.body["message"].as_str().unwrap().contains(field),
            "{route}: {}",
            answer.text
        );
    }
    let unknown = stack.get("/v1/nothing/here", Some(&alice)).await.unwrap();
    assert_eq!(unknown.status, 404);
}
