//! Fairness between tenants end to end: config-api under cargo lambda watch
//! with small per-tenant limits, real tokens from moto's Cognito. Tenant A
//! (alice reads, dana writes) spends its share; tenant B (bob) is served.

use reqwest::Method;
use serde_json::json;
use tenant_config_admin::access::recount_keys;
use tenant_config_admin::values::Target;
use tenant_config_local_stack::stack::{
    ALICE, Answer, BOB, DANA, LocalStack, PARAMETER_ROOT, PARAMETERS, SERVICE, StackOptions, TABLE,
};
use tenant_config_shared::TenantId;

fn path(key: &str) -> String {
    format!("/v1/config/{SERVICE}/{key}")
}

/// Writes are paced: at 4 a minute a tenant may make 2 in one second, and
/// these steps are about the minute's quota and the stored keys.
const WRITE_PACE: std::time::Duration = std::time::Duration::from_millis(550);

async fn create(stack: &LocalStack, token: &str, key: &str) -> Answer {
    tokio::time::sleep(WRITE_PACE).await;
    stack
        .send(
            Method::PUT,
            &path(key),
            Some(token),
            &[("if-none-match", "*")],
            Some(&json!({"value": key})),
        )
        .await
        .unwrap()
}

fn retry_after(answer: &Answer) -> u64 {
    answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", answer.headers))
}

#[tokio::test]
async fn a_tenant_reading_random_keys_is_limited_and_another_tenant_is_not() {
    // GIVEN each tenant may load 5 keys a second from the stores, 50 at once
    let stack = LocalStack::start(
        StackOptions {
            settings: &[
                ("TENANT_STORE_READS_PER_SEC", "5"),
                ("TENANT_STORE_READS_BURST", "50"),
                ("NOT_FOUND_CACHE_TTL_SECS", "60"),
            ],
            ..StackOptions::with_agents(0)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let alice = stack.token(ALICE).await.unwrap();
    let bob = stack.token(BOB).await.unwrap();
    let batch = |n: usize| {
        let keys: Vec<String> = (0..if n == 3 { 49 } else { 50 })
            .map(|i| format!("param_config_random_{n}_{i:02}"))
            .collect();
        format!("/v1/config/{SERVICE}?keys={}", keys.join(","))
    };

    // WHEN tenant A asks for 50 keys nobody has (one full burst), then 50 more
    let flushes_before = stack.stage_cache.flushes().len();
    let first = stack.get(&batch(1), Some(&alice)).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text);
    let second = stack.get(&batch(2), Some(&alice)).await.unwrap();

    // THEN the second batch is refused with 429 and when to retry (50 keys at
    // 5 a second: 10 s), without a stale mark or a store call
    assert_eq!(second.status, 429, "{}", second.text);
    assert_eq!(second.body["error"], "rate_limited", "{}", second.text);
    let wait = retry_after(&second);
    assert!((9..=10).contains(&wait), "Retry-After {wait}");
    assert_eq!(second.header("cache-control"), Some("no-store"));

    // AND a key tenant A has cached is still served from memory
    let cached = stack.get(&batch(1), Some(&alice)).await.unwrap();
    assert_eq!(cached.status, 200, "{}", cached.text);

    // AND tenant B, reading at the same time, is served from the stores
    // (one key, then a batch of 49 new keys: its own full burst)
    let b_one = stack
        .get(&path("tenant_config_limits"), Some(&bob))
        .await
        .unwrap();
    assert_eq!(b_one.status, 200, "{}", b_one.text);
    let b_batch = stack.get(&batch(3), Some(&bob)).await.unwrap();
    assert_eq!(b_batch.status, 200, "{}", b_batch.text);

    // AND the refusal flushed no stage cache (only 5xx and stale answers ask
    // for a flush, which the flush queue delivers within its 2 s window)
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(
        stack.stage_cache.flushes().len(),
        flushes_before,
        "a 429 flushed the stage cache"
    );
}

#[tokio::test]
async fn write_quotas_refuse_past_the_minute_and_past_the_stored_keys_with_429() {
    // GIVEN tenant A may write 4 times a minute (2 in one second) and store
    // 2 keys (counted in the table, so every config-api container agrees)
    let stack = LocalStack::start(
        StackOptions {
            settings: &[("TENANT_WRITES_PER_MINUTE", "4"), ("TENANT_MAX_KEYS", "2")],
            ..StackOptions::with_agents(0)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let dana = stack.token(DANA).await.unwrap();

    // WHEN dana creates two keys THEN both land
    for key in ["tenant_config_quota_a", "param_config_quota_b"] {
        let created = create(&stack, &dana, key).await;
        assert_eq!(created.status, 201, "{key}: {}", created.text);
    }
    // WHEN she creates a third THEN 429 key_quota_exceeded, and nothing is stored
    let third = create(&stack, &dana, "tenant_config_quota_c").await;
    assert_eq!(third.status, 429, "{}", third.text);
    assert_eq!(third.body["error"], "key_quota_exceeded", "{}", third.text);
    retry_after(&third);
    let absent = stack
        .get(&path("tenant_config_quota_c"), Some(&dana))
        .await
        .unwrap();
    assert_eq!(absent.status, 404, "{}", absent.text);

    // WHEN she deletes one key THEN the next create fits again
    tokio::time::sleep(WRITE_PACE).await;
    let deleted = stack
        .send(
            Method::DELETE,
            &path("tenant_config_quota_a"),
            Some(&dana),
            &[("if-match", "1")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text);

    // AND that was her 4th write this minute (3 creates tried, 1 delete): the
    // 5th is refused with 429 rate_limited until the minute ends, unless the
    // minute turned meanwhile (then the quota starts again and it lands)
    let fifth = create(&stack, &dana, "tenant_config_quota_d").await;
    match fifth.status {
        429 => {
            assert_eq!(fifth.body["error"], "rate_limited", "{}", fifth.text);
            assert!((1..=60).contains(&retry_after(&fifth)));
        }
        201 => eprintln!("the minute turned during the test; the write quota started again"),
        other => panic!("{other}: {}", fifth.text),
    }

    // AND the counters live in tenant A's own partition, under QUOTA#
    let stored_keys = || async {
        let counters = aws_sdk_dynamodb::Client::new(&stack.aws)
            .get_item()
            .table_name(TABLE)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("TENANT#tenant-a".into()),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S("QUOTA#keys".into()),
            )
            .send()
            .await
            .unwrap();
        let item = counters.item().expect("a stored-keys counter");
        item["count"].as_n().unwrap().parse::<u32>().unwrap()
    };
    let stored = if fifth.status == 201 { 2 } else { 1 };
    assert_eq!(stored_keys().await, stored);

    // WHEN an operator recounts tenant A's keys (the seeded ones were written
    // outside the API, so the counter does not know them)
    let target = Target {
        secure_string_key: None,
        table: TABLE.to_owned(),
        parameter_root: PARAMETER_ROOT.to_owned(),
        router: Default::default(),
    };
    let tenant = TenantId::parse("tenant-a").unwrap();
    let counted = recount_keys(&stack.aws, &target, &tenant).await.unwrap();
    // THEN the counter holds every key both stores hold for tenant A (the
    // seeded ones, the one created through the API and still there), and a
    // create is now refused until keys are deleted
    let seeded_parameters = PARAMETERS.iter().filter(|p| p.0 == "tenant-a").count() as u32;
    assert!(counted > seeded_parameters + 1, "{counted}");
    assert_eq!(stored_keys().await, counted);
    let after = create(&stack, &dana, "tenant_config_quota_e").await;
    assert_eq!(after.status, 429, "{}", after.text);
}
