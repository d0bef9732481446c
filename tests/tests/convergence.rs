//! End to end: every reader converges on every change through the change
//! journal, including readers no push reaches. moto, config-api and
//! config-refresh under `cargo lambda watch`, real agent processes, the local
//! stack's stream mapping; config-api and the agents run with their default
//! catch-up intervals (1 s and 2 s) and TTLs (60 s and more).

use std::time::{Duration, Instant};

use tenant_config_admin::values::{ParameterKind, Target};
use tenant_config_local_stack::agent::AgentProcess;
use tenant_config_local_stack::stack::{
    ALICE, LocalStack, PARAMETER_ROOT, SERVICE, StackOptions, TABLE, demo_item,
};

async fn stack(agents: usize) -> LocalStack {
    LocalStack::start(StackOptions::with_agents(agents), &|_, _| {})
        .await
        .expect("local stack starts")
}

fn target() -> Target {
    Target {
        secure_string_key: None,
        table: TABLE.to_owned(),
        parameter_root: PARAMETER_ROOT.to_owned(),
        router: Default::default(),
    }
}

/// Polls config-api for `key` until it answers `expected` (as JSON text of
/// the `value` field, or the status for a non-200), failing after `bound`.
async fn api_serves_within(
    stack: &LocalStack,
    token: &str,
    key: &str,
    expected: &str,
    since: Instant,
    bound: Duration,
) -> Duration {
    loop {
        let answer = stack
            .get(&format!("/v1/config/{SERVICE}/{key}"), Some(token))
            .await
            .unwrap();
        let seen = if answer.status == 200 {
            answer.body["value"].to_string()
        } else {
            answer.status.to_string()
        };
        if seen == expected {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < bound,
            "config-api still answers {seen} for {key} after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn config_api_serves_a_parameter_change_within_two_seconds_of_the_event() {
    // GIVEN config-api that has the endpoint in its 60 s cache
    let stack = stack(0).await;
    let alice = stack.token(ALICE).await.unwrap();
    let key = "param_config_endpoint";
    let started = Instant::now();
    api_serves_within(
        &stack,
        &alice,
        key,
        "\"https://billing.tenant-a.example\"",
        started,
        Duration::from_secs(5),
    )
    .await;
    // WHEN the parameter changes and EventBridge delivers the event
    stack
        .put_parameter("tenant-a", key, "https://converged.tenant-a.example")
        .await
        .unwrap();
    let parameter = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/{key}");
    let sent = Instant::now();
    stack
        .send_change_event("Update", &parameter)
        .await
        .unwrap()
        .expect("config-refresh journals the change");
    // THEN config-api, which nothing can push to, serves it within its
    // catch-up interval (1 s) plus a second
    let took = api_serves_within(
        &stack,
        &alice,
        key,
        "\"https://converged.tenant-a.example\"",
        sent,
        Duration::from_secs(2),
    )
    .await;
    eprintln!(
        "event → config-api serves the new parameter: {} ms",
        took.as_millis()
    );
}

#[tokio::test]
async fn config_api_serves_a_dynamodb_write_and_a_key_created_after_a_404() {
    let stack = stack(0).await;
    let alice = stack.token(ALICE).await.unwrap();
    let started = Instant::now();
    // GIVEN config-api cached tenant A's limits and a 404 for a key that does
    // not exist yet
    api_serves_within(
        &stack,
        &alice,
        "tenant_config_limits",
        r#"{"max_users":50,"tier":"gold"}"#,
        started,
        Duration::from_secs(5),
    )
    .await;
    api_serves_within(
        &stack,
        &alice,
        "tenant_config_flags",
        "404",
        started,
        Duration::from_secs(5),
    )
    .await;
    // WHEN an operator writes both (two PutItems), and nothing else
    let written = Instant::now();
    for (key, value) in [
        ("tenant_config_limits", r#"{"max_users":90,"tier":"gold"}"#),
        ("tenant_config_flags", r#"{"beta":true}"#),
    ] {
        target()
            .put(
                &stack.aws,
                &demo_item("tenant-a", key).unwrap(),
                value,
                ParameterKind::String,
            )
            .await
            .unwrap();
    }
    // THEN the stream, the journal and catch-up bring both to config-api
    // within about two seconds
    let limits = api_serves_within(
        &stack,
        &alice,
        "tenant_config_limits",
        r#"{"max_users":90,"tier":"gold"}"#,
        written,
        Duration::from_secs(3),
    )
    .await;
    let created = api_serves_within(
        &stack,
        &alice,
        "tenant_config_flags",
        r#"{"beta":true}"#,
        written,
        Duration::from_secs(3),
    )
    .await;
    eprintln!(
        "PutItem → config-api serves it: changed {} ms, created after a 404 {} ms",
        limits.as_millis(),
        created.as_millis()
    );
}

#[tokio::test]
async fn an_agent_no_push_reaches_serves_the_change_within_its_catch_up_interval() {
    // GIVEN one registered agent and one that config-refresh cannot reach
    // (not in Cloud Map: as if partitioned when the push went out)
    let stack = stack(1).await;
    let mut env = stack.env.clone();
    env.push(("CLOUD_MAP_REGISTER".into(), "false".into()));
    let unreachable = AgentProcess::start("agent-unreachable", &env)
        .await
        .unwrap();
    let alice = stack.token(ALICE).await.unwrap();
    let key = "param_config_endpoint";
    let old = "\"https://billing.tenant-a.example\"";
    assert_eq!(
        unreachable.get_config(&alice, SERVICE, key).await.unwrap(),
        old
    );
    // WHEN the parameter changes and the event is delivered
    stack
        .put_parameter("tenant-a", key, "https://catch-up.tenant-a.example")
        .await
        .unwrap();
    let parameter = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/{key}");
    let sent = Instant::now();
    let summary = stack
        .send_change_event("Update", &parameter)
        .await
        .unwrap()
        .expect("delivered to the registered agent");
    assert_eq!(summary["instances"], 1, "{summary}");
    // THEN the agent no push reached serves it within 2 s + 1 s
    let new = "\"https://catch-up.tenant-a.example\"";
    loop {
        let value = unreachable.get_config(&alice, SERVICE, key).await.unwrap();
        if value == new {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "the unreachable agent still serves {value} after {:?}",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "event → an agent no push reached serves it: {} ms",
        sent.elapsed().as_millis()
    );
}

#[tokio::test]
async fn a_burst_of_changes_costs_one_stage_cache_flush_after_config_api_serves_the_last() {
    // GIVEN config-api behind a stage cache (the local stand-in counts
    // flushes), config-refresh announcing each change on the feed
    let stack = stack(0).await;
    let alice = stack.token(ALICE).await.unwrap();
    let key = "param_config_endpoint";
    // WHEN five changes arrive back to back
    let started = Instant::now();
    let mut last_journaled = started;
    for i in 0..5 {
        stack
            .change_parameter(
                "tenant-a",
                key,
                &format!("https://burst-{i}.tenant-a.example"),
            )
            .await
            .unwrap()
            .expect("journaled and delivered");
        last_journaled = Instant::now();
    }
    let burst = started.elapsed();
    // THEN one flush comes, trailing: after the delay that lets config-api
    // catch up (2 s), within the delay plus the batching window (2 s)
    let deadline = last_journaled + Duration::from_secs(10);
    while stack.stage_cache.flushes().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flushes = stack.stage_cache.flushes();
    assert_eq!(
        flushes.len(),
        1,
        "one flush for the burst ({burst:?}): {flushes:?}"
    );
    let (api, stage, flushed_at) = flushes[0].clone();
    assert_eq!((api.as_str(), stage.as_str()), ("local-config-api", "prod"));
    assert!(
        flushed_at >= last_journaled + Duration::from_millis(1500),
        "not before config-api could catch up: {:?} after the last change",
        flushed_at.saturating_duration_since(last_journaled)
    );
    // AND by then config-api serves the last value, so nothing stale can be
    // cached again behind the flush
    let answer = stack
        .get(&format!("/v1/config/{SERVICE}/{key}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(answer.body["value"], "https://burst-4.tenant-a.example");
    // AND with no further changes, no further flush
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.stage_cache.flushes().len(), 1);
    eprintln!(
        "burst of 5 changes in {} ms → 1 stage cache flush, {} ms after the last change",
        burst.as_millis(),
        flushed_at.duration_since(last_journaled).as_millis()
    );
}
