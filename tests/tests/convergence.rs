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
