//! Layered configuration end to end: a platform administrator (pat, in the
//! platform group) writes a global default, a tier override and a tenant's
//! tier through config-api under cargo lambda watch; the DynamoDB stream
//! reaches config-refresh, which journals one entry per change and pushes
//! it; config-api and the agents serve every tenant's effective value.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tenant_config_local_stack::stack::{
    ALICE, Answer, BOB, DANA, JOURNAL_TABLE, LocalStack, PAT, SERVICE, StackOptions,
};
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::journal_table::JournalTable;

const KEY: &str = "tenant_config_rate_limits";

async fn put(stack: &LocalStack, token: &str, path: &str, body: Value) -> Answer {
    stack
        .send(
            Method::PUT,
            path,
            Some(token),
            &[("if-none-match", "*")],
            Some(&body),
        )
        .await
        .unwrap()
}

/// Polls `read` until it answers `expected`; how long that took.
async fn until<F, Fut>(read: F, expected: &Value, bound: Duration) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<Value>>,
{
    let started = Instant::now();
    loop {
        let got = read().await;
        if got.as_ref() == Some(expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "not served within {bound:?}: last {got:?}, want {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_default_a_tier_and_an_exception_reach_every_reader_of_every_tenant() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let (pat, dana) = (
        stack.token(PAT).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    let (alice, bob) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(BOB).await.unwrap(),
    );
    let agent = &stack.agents[0];
    let path = format!("/v1/config/{SERVICE}/{KEY}");
    let via_api = |token: String| {
        let (stack, path) = (&stack, path.clone());
        move || {
            let (token, path) = (token.clone(), path.clone());
            async move {
                let answer = stack.get(&path, Some(&token)).await.ok()?;
                (answer.status == 200).then(|| answer.body["value"].clone())
            }
        }
    };
    let via_agent = |token: String| {
        move || {
            let token = token.clone();
            async move {
                let text = agent.get_config(&token, SERVICE, KEY).await.ok()?;
                serde_json::from_str(&text).ok()
            }
        }
    };
    // GIVEN no tenant has the key; the agent has read it (and cached that)
    assert_eq!(stack.get(&path, Some(&bob)).await.unwrap().status, 404);
    assert!(agent.get_config(&bob, SERVICE, KEY).await.is_err());

    // WHEN a tenant administrator tries the global layer THEN 403
    let global = format!("/v1/layers/global/{SERVICE}/{KEY}");
    let refused = put(&stack, &dana, &global, json!({"value": 1})).await;
    assert_eq!(refused.status, 403, "{}", refused.text);

    // WHEN the platform administrator sets a global default
    let default = json!({"per_second": 10, "burst": 20});
    let created = put(&stack, &pat, &global, json!({"value": default})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    // THEN both tenants read it, from config-api and from the agent (pushed
    // through the stream and config-refresh), within the convergence bound
    let bound = Duration::from_secs(2);
    until(via_api(alice.clone()), &default, bound).await;
    until(via_api(bob.clone()), &default, bound).await;
    let agent_took = until(via_agent(bob.clone()), &default, bound).await;

    // WHEN gold overrides one member and tenant-b moves to gold
    let gold = format!("/v1/layers/tiers/gold/{SERVICE}/{KEY}");
    let tiered = put(&stack, &pat, &gold, json!({"value": {"per_second": 50}})).await;
    assert_eq!(tiered.status, 201, "{}", tiered.text);
    let registered = put(
        &stack,
        &pat,
        "/v1/tenants/tenant-b",
        json!({"tier": "gold"}),
    )
    .await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    // THEN tenant-b reads the merge everywhere; tenant-a keeps the default
    let gold_value = json!({"per_second": 50, "burst": 20});
    until(via_api(bob.clone()), &gold_value, bound).await;
    until(via_agent(bob.clone()), &gold_value, bound).await;
    until(via_agent(alice.clone()), &default, bound).await;

    // WHEN tenant-a's administrator makes an exception (a null removes)
    let own = put(
        &stack,
        &dana,
        &path,
        json!({"value": {"burst": null, "per_second": 5}}),
    )
    .await;
    assert_eq!(own.status, 201, "{}", own.text);
    // THEN tenant-a alone reads it
    until(via_agent(alice.clone()), &json!({"per_second": 5}), bound).await;
    until(via_api(bob.clone()), &gold_value, bound).await;

    // AND explain tells tenant-a where each part came from, and who wrote
    // its own part; a shared layer shows only what reaches tenant-a (here
    // nothing: its own value replaced one member and removed the other)
    // and never the platform administrator who wrote it
    let explained = stack
        .get(&format!("/v1/explain/{SERVICE}/{KEY}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(explained.status, 200, "{}", explained.text);
    assert_eq!(
        explained.body["leaves"],
        json!({"/per_second": format!("tenant:tenant-a")})
    );
    let layers = explained.body["layers"].as_array().unwrap();
    assert_eq!(layers[0]["layer"], "global");
    assert_eq!(layers[0]["value"], Value::Null, "{}", explained.text);
    assert!(
        layers[0].get("updated_by").is_none() && layers[0]["updated_at_ms"].as_i64().is_some(),
        "{}",
        explained.text
    );
    assert!(
        layers[1]["updated_by"]
            .as_str()
            .is_some_and(|by| !by.is_empty()),
        "{}",
        explained.text
    );
    let for_bob = stack
        .get(&format!("/v1/explain/{SERVICE}/{KEY}"), Some(&bob))
        .await
        .unwrap();
    assert_eq!(
        for_bob.body["leaves"],
        json!({"/per_second": "tier:gold", "/burst": "global"})
    );

    // AND the agent explains the same
    let from_agent = agent.explain(&bob, SERVICE, KEY).await.unwrap();
    let leaves: Vec<(String, String)> = from_agent
        .leaves
        .iter()
        .map(|l| (l.pointer.clone(), l.layer.clone()))
        .collect();
    assert_eq!(
        leaves,
        vec![
            ("/burst".to_owned(), "global".to_owned()),
            ("/per_second".to_owned(), "tier:gold".to_owned())
        ]
    );
    assert_eq!(from_agent.layers.len(), 2);
    assert_eq!(from_agent.layers[1].version, Some(1));

    // AND the shared change was one journal entry, naming the layer
    let journal = JournalTable::new(aws_sdk_dynamodb::Client::new(&stack.aws), JOURNAL_TABLE);
    let deadline = Instant::now() + Duration::from_secs(5);
    let subjects = loop {
        let subjects: Vec<String> = journal
            .since(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.change.subject.to_string())
            .filter(|s| s.contains(KEY) || s.starts_with("registration:"))
            .collect();
        if subjects.len() >= 4 || Instant::now() > deadline {
            break subjects;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = |s: &str| subjects.iter().filter(|x| x.as_str() == s).count();
    assert_eq!(count(&format!("global:{SERVICE}:{KEY}")), 1, "{subjects:?}");
    assert_eq!(
        count(&format!("tier:gold:{SERVICE}:{KEY}")),
        1,
        "{subjects:?}"
    );
    assert_eq!(count("registration:tenant-b"), 1, "{subjects:?}");
    assert_eq!(
        count(&format!("tenant-a:{SERVICE}:{KEY}")),
        1,
        "{subjects:?}"
    );
    eprintln!(
        "a global default reached the agent {} ms after the write answered",
        agent_took.as_millis()
    );
}

#[tokio::test]
async fn guardrails_and_blast_radius_hold_a_shared_change_to_every_tenant() {
    let stack = LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("local stack starts");
    let (pat, dana) = (
        stack.token(PAT).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    let key = "tenant_config_quotas";
    let global = format!("/v1/layers/global/{SERVICE}/{key}");
    let own = format!("/v1/config/{SERVICE}/{key}");
    let send = |method: Method,
                path: String,
                token: String,
                headers: Vec<(&'static str, String)>,
                body: Option<Value>| {
        let stack = &stack;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            stack
                .send(method, &path, Some(&token), &headers, body.as_ref())
                .await
                .unwrap()
        }
    };
    // GIVEN a global default and tenant-a's own exception
    let created = put(&stack, &pat, &global, json!({"value": {"per_second": 10}})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let exception = put(&stack, &dana, &own, json!({"value": {"per_second": 5}})).await;
    assert_eq!(exception.status, 201, "{}", exception.text);
    // WHEN the platform administrator weighs raising the default
    // THEN the dry run names tenant-a as keeping its own value once
    // config-refresh has marked it in the override index (from the stream)
    let dry_run = format!("{global}?dry_run=true");
    let raise = json!({"value": {"per_second": 500}});
    let started = Instant::now();
    let report = loop {
        let answer = send(
            Method::PUT,
            dry_run.clone(),
            pat.clone(),
            vec![("if-match", "1".to_owned())],
            Some(raise.clone()),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        if answer.body["report"]["keeping_own_value_tenants"] == json!(["tenant-a"]) {
            break answer.body["report"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the override index never named tenant-a: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["unregistered"]["changes"], true, "{report}");
    assert!(report["store_reads"].as_u64().unwrap() >= 3, "{report}");

    // WHEN a guardrail caps per_second at 100 (nobody breaks: it lands)
    let guardrail = format!("{global}/guardrail");
    let capped = send(
        Method::PUT,
        guardrail.clone(),
        pat.clone(),
        vec![("if-none-match", "*".to_owned())],
        Some(json!({"schema": {"properties": {"per_second": {"maximum": 100}}}})),
    )
    .await;
    assert_eq!(capped.status, 201, "{}", capped.text);
    // THEN raising the default past it is refused, naming what breaks
    let refused = send(
        Method::PUT,
        global.clone(),
        pat.clone(),
        vec![("if-match", "1".to_owned())],
        Some(raise.clone()),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.body["error"], "breaks_tenants");
    assert!(
        refused.body["report"]["unregistered"]["fails"]["rule"]
            .as_str()
            .unwrap()
            .contains("global guardrail"),
        "{}",
        refused.text
    );
    // AND a tenant's write past the cap is refused too (422)
    let over = send(
        Method::PUT,
        own.clone(),
        dana.clone(),
        vec![("if-match", "1".to_owned())],
        Some(json!({"value": {"per_second": 101}})),
    )
    .await;
    assert_eq!(
        (over.status, over.body["error"].as_str()),
        (422, Some("schema_violation")),
        "{}",
        over.text
    );

    // WHEN the global layer locks the key over tenant-a's exception: refused,
    // then forced (the history records it)
    let lock = json!({"locked": true, "schema": {"properties": {"per_second": {"maximum": 100}}}});
    let refused = send(
        Method::PUT,
        guardrail.clone(),
        pat.clone(),
        vec![("if-match", "1".to_owned())],
        Some(lock.clone()),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(
        refused.body["report"]["locked_override_tenants"],
        json!(["tenant-a"])
    );
    let forced = send(
        Method::PUT,
        format!("{guardrail}?force=true"),
        pat.clone(),
        vec![("if-match", "1".to_owned())],
        Some(lock),
    )
    .await;
    assert_eq!(forced.status, 200, "{}", forced.text);
    // THEN tenant-a's administrator can no longer write the key
    let locked = send(
        Method::PUT,
        own.clone(),
        dana.clone(),
        vec![("if-match", "1".to_owned())],
        Some(json!({"value": {"per_second": 6}})),
    )
    .await;
    assert_eq!(
        (locked.status, locked.body["error"].as_str()),
        (422, Some("key_locked")),
        "{}",
        locked.text
    );
    // AND the guardrail reads back with who set it
    let read = stack.get(&guardrail, Some(&pat)).await.unwrap();
    assert_eq!(
        (read.status, read.body["locked"].clone()),
        (200, json!(true)),
        "{}",
        read.text
    );
    assert!(
        read.body["updated_by"]
            .as_str()
            .unwrap()
            .ends_with("(forced past broken tenants)"),
        "{}",
        read.text
    );
}
