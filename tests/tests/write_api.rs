//! The write routes end to end: config-api under cargo lambda watch against
//! moto, real ID tokens from moto's Cognito (dana is in the admin group,
//! alice is not), and every reader serving a write through the change feed.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tenant_config_local_stack::fault_proxy::Route;
use tenant_config_local_stack::stack::{
    ALICE, Answer, DANA, LocalStack, PARAMETER_ROOT, SECURESTRING_KMS_KEY_ARN, SERVICE,
    StackOptions, TENANT_ROLE_ARN, TENANT_WRITE_ROLE_ARN,
};

const LIMITS: &str = "tenant_config_limits";

fn path(key: &str) -> String {
    format!("/v1/config/{SERVICE}/{key}")
}

async fn put(
    stack: &LocalStack,
    token: &str,
    key: &str,
    precondition: (&str, &str),
    body: serde_json::Value,
) -> Answer {
    stack
        .send(
            Method::PUT,
            &path(key),
            Some(token),
            &[precondition],
            Some(&body),
        )
        .await
        .unwrap()
}

/// Polls a reader until it serves `expected`; returns how long that took.
async fn served_within<F, Fut>(read: F, expected: &serde_json::Value, bound: Duration) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<serde_json::Value>>,
{
    let started = Instant::now();
    loop {
        if read().await.as_ref() == Some(expected) {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound, "not served within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_tenant_administrator_writes_conflicts_rolls_back_and_every_reader_follows() {
    // GIVEN tenant A's limits (version 1) cached by config-api and an agent,
    // with the write quota at 600 a minute (20 a second): this test writes in
    // quick succession to check write semantics, and at the default 4 a
    // second a slow second could group five of its writes (quotas have their
    // own tests, fairness.rs)
    let stack = LocalStack::start(
        StackOptions {
            settings: &[("TENANT_WRITES_PER_MINUTE", "600")],
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let dana = stack.token(DANA).await.unwrap();
    let alice = stack.token(ALICE).await.unwrap();
    let before = stack.get(&path(LIMITS), Some(&alice)).await.unwrap();
    assert_eq!(before.header("etag"), Some("\"1\""), "{:?}", before.headers);
    let agent = &stack.agents[0];
    agent.get_config(&alice, SERVICE, LIMITS).await.unwrap();

    // AND an operator's schema for the key (stored without a redeploy; config-api
    // reads schemas when it first writes a key, then every 10 s)
    tenant_config_shared::schema::DynamoDbSchemas::new(
        aws_sdk_dynamodb::Client::new(&stack.aws),
        tenant_config_local_stack::stack::TABLE,
    )
    .put(
        &tenant_config_shared::ServiceName::parse(SERVICE).unwrap(),
        Some(&tenant_config_shared::ConfigKey::parse(LIMITS).unwrap()),
        &json!({"type": "object", "required": ["max_users"], "properties": {"max_users": {"type": "integer", "minimum": 1}}}),
    )
    .await
    .unwrap();
    // WHEN a user outside the admin group tries to write THEN 403
    let refused = put(
        &stack,
        &alice,
        LIMITS,
        ("if-match", "1"),
        json!({"value": 1}),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);

    // WHEN the administrator writes from version 1
    let new = json!({"max_users": 75, "tier": "gold"});
    let started = Instant::now();
    let written = put(
        &stack,
        &dana,
        LIMITS,
        ("if-match", "1"),
        json!({"value": new}),
    )
    .await;
    let write_took = started.elapsed();
    assert_eq!(written.status, 200, "{}", written.text);
    assert_eq!(written.body["version"], 2);
    assert_eq!(written.header("etag"), Some("\"2\""));

    // THEN config-api (other requests, the change feed) and the agent serve it
    let api_took = served_within(
        || async {
            let answer = stack.get(&path(LIMITS), Some(&alice)).await.ok()?;
            Some(answer.body["value"].clone())
        },
        &new,
        Duration::from_secs(3),
    )
    .await;
    let agent_took = served_within(
        || async {
            let text = agent.get_config(&alice, SERVICE, LIMITS).await.ok()?;
            serde_json::from_str(&text).ok()
        },
        &new,
        Duration::from_secs(3),
    )
    .await;

    // WHEN a value breaking it is written THEN 422 names where, and nothing changes
    let invalid = put(
        &stack,
        &dana,
        LIMITS,
        ("if-match", "2"),
        json!({"value": {"max_users": "many"}}),
    )
    .await;
    assert_eq!(invalid.status, 422, "{}", invalid.text);
    assert!(
        invalid.body["message"]
            .as_str()
            .unwrap()
            .contains("/max_users"),
        "{}",
        invalid.text
    );
    assert_eq!(
        stack.get(&path(LIMITS), Some(&alice)).await.unwrap().body["value"],
        new
    );

    // WHEN a second write comes from the old version THEN 409 with the current one
    let stale = put(
        &stack,
        &dana,
        LIMITS,
        ("if-match", "1"),
        json!({"value": {"max_users": 1}}),
    )
    .await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    assert_eq!(stale.body["current_version"], 2);

    // WHEN version 1 is rolled back to
    let rolled = stack
        .send(
            Method::POST,
            &format!("{}/rollback", path(LIMITS)),
            Some(&dana),
            &[("if-match", "2")],
            Some(&json!({"version": 1})),
        )
        .await
        .unwrap();
    assert_eq!(rolled.status, 200, "{}", rolled.text);
    assert_eq!(rolled.body["version"], 3);
    // THEN readers serve version 1's value again, and the history says who
    served_within(
        || async {
            let answer = stack.get(&path(LIMITS), Some(&alice)).await.ok()?;
            Some(answer.body["value"].clone())
        },
        &before.body["value"],
        Duration::from_secs(3),
    )
    .await;
    let history = stack
        .get(&format!("{}/history", path(LIMITS)), Some(&dana))
        .await
        .unwrap();
    assert_eq!(history.status, 200, "{}", history.text);
    let versions = history.body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[0]["rollback_of"], 1);
    let dana_sub = versions[0]["actor"].as_str().unwrap();
    assert!(!dana_sub.is_empty() && dana_sub == versions[1]["actor"].as_str().unwrap());

    // AND a SecureString can be created, is never echoed, and is served on
    // the secure route only
    let secret = "param_config_signing_key";
    let created = put(
        &stack,
        &dana,
        secret,
        ("if-none-match", "*"),
        json!({"value": "s3cr3t-value", "type": "secure-string"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(!created.text.contains("s3cr3t-value"));
    // (encrypted with the stack's key, not aws/ssm)
    let stored = aws_sdk_ssm::Client::new(&stack.aws)
        .get_parameter_history()
        .name(format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/{secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.parameters()[0].key_id(),
        Some(SECURESTRING_KMS_KEY_ARN)
    );
    let secure = stack
        .get(&format!("/v1/secure/{SERVICE}/{secret}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(secure.body["value"], "s3cr3t-value");
    assert_eq!(
        stack.get(&path(secret), Some(&alice)).await.unwrap().status,
        409
    );
    // WHEN the administrator deletes the key at version 3
    let deleted = stack
        .send(
            Method::DELETE,
            &path(LIMITS),
            Some(&dana),
            &[("if-match", "3")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    // THEN readers stop serving it
    served_within(
        || async {
            let answer = stack.get(&path(LIMITS), Some(&alice)).await.ok()?;
            Some(answer.status.into())
        },
        &json!(404),
        Duration::from_secs(3),
    )
    .await;
    // AND the change journal is the audit: every change of the key with who
    // made it and from which version to which, never a value
    let journal = tenant_config_shared::refresh::journal_table::JournalTable::new(
        aws_sdk_dynamodb::Client::new(&stack.aws),
        tenant_config_local_stack::stack::JOURNAL_TABLE,
    );
    let audit: Vec<String> = {
        use tenant_config_shared::refresh::journal::ChangeJournal;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<String> = journal
                .since(0, 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| {
                    e.change.subject.entry().is_some_and(|item| {
                        item.key.as_str() == LIMITS && item.tenant.as_str() == "tenant-a"
                    })
                })
                .map(|e| format!("{:?} {}", e.change.operation, e.change.audit))
                .collect();
            if lines.len() >= 3 || Instant::now() > deadline {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(
        audit,
        vec![
            format!("Update v1 -> v2 by {dana_sub}"),
            format!("Update v2 -> v3 by {dana_sub} (rollback of v1)"),
            format!("Delete v3 -> ? by {dana_sub}"),
        ]
    );

    eprintln!(
        "API write {} ms; served by config-api after {} ms, by the agent after {} ms",
        write_took.as_millis(),
        api_took.as_millis(),
        agent_took.as_millis()
    );
}

#[tokio::test]
async fn reads_assume_the_read_role_and_only_an_administrators_write_assumes_the_write_role() {
    // GIVEN config-api with tenant credentials, its STS calls recorded
    let stack = LocalStack::start(
        StackOptions {
            fault_proxy: true,
            ..StackOptions::with_agents(0)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let proxy = stack.faults.as_ref().expect("the fault proxy runs");
    let assumed = || -> Vec<String> {
        proxy
            .calls()
            .into_iter()
            .filter(|call| call.route == Route::Sts)
            .filter_map(|call| call.name)
            .collect()
    };
    let (alice, dana) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    // WHEN a reader reads from both stores
    for key in [LIMITS, "param_config_endpoint"] {
        let read = stack.get(&path(key), Some(&alice)).await.unwrap();
        assert_eq!(read.status, 200, "{}", read.text);
    }
    // THEN only the read role was assumed
    assert!(!assumed().is_empty(), "reads use tenant credentials");
    assert!(
        assumed().iter().all(|role| role == TENANT_ROLE_ARN),
        "{:?}",
        assumed()
    );
    // WHEN the reader tries to write
    let refused = put(
        &stack,
        &alice,
        "tenant_config_banner",
        ("if-none-match", "*"),
        json!({"value": "x"}),
    )
    .await;
    // THEN it is refused before any store call: the write role is never assumed
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(
        !assumed().iter().any(|role| role == TENANT_WRITE_ROLE_ARN),
        "{:?}",
        assumed()
    );
    // WHEN an administrator of the tenant writes
    let written = put(
        &stack,
        &dana,
        "tenant_config_banner",
        ("if-none-match", "*"),
        json!({"value": "dark"}),
    )
    .await;
    assert_eq!(written.status, 201, "{}", written.text);
    // THEN that write assumed the write role
    assert!(
        assumed().iter().any(|role| role == TENANT_WRITE_ROLE_ARN),
        "{:?}",
        assumed()
    );
}

#[tokio::test]
async fn an_administrator_removed_from_the_group_cannot_write_with_the_token_they_still_hold() {
    // GIVEN config-api remembering the pool's membership answers for 1 s, and
    // dana, an administrator of tenant A, who writes
    let stack = LocalStack::start(
        StackOptions {
            settings: &[("ADMIN_MEMBERSHIP_TTL_SECS", "1")],
            ..StackOptions::with_agents(0)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let dana = stack.token(DANA).await.unwrap();
    let written = put(
        &stack,
        &dana,
        "tenant_config_banner",
        ("if-none-match", "*"),
        json!({"value": "before"}),
    )
    .await;
    assert_eq!(written.status, 201, "{}", written.text);

    // WHEN an operator removes her from the administrators' group (her ID
    // token still says she is in it, for up to an hour)
    aws_sdk_cognitoidentityprovider::Client::new(&stack.aws)
        .admin_remove_user_from_group()
        .user_pool_id(&stack.pool.pool_id)
        .username(DANA.username)
        .group_name(tenant_config_local_stack::stack::ADMIN_GROUP)
        .send()
        .await
        .unwrap();
    // THEN once the pool's remembered answer (1 s here, 30 s by default, 60
    // at most) has expired, her writes are refused with 403 and change nothing
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = put(
        &stack,
        &dana,
        "tenant_config_banner",
        ("if-match", "1"),
        json!({"value": "after"}),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(refused.body["error"], "forbidden", "{}", refused.text);
    let read = stack
        .get(&path("tenant_config_banner"), Some(&dana))
        .await
        .unwrap();
    assert_eq!(read.body["value"], "before", "{}", read.text);
}
