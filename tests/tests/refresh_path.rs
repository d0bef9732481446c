//! End to end: moto (SSM, Cognito, Cloud Map), three real config-agent
//! processes registered in Cloud Map with hour-long caches, and config-refresh
//! under `cargo lambda watch`, invoked with Parameter Store Change events.

use std::time::{Duration, Instant};

use tenant_config_local_stack::seed;
use tenant_config_local_stack::stack::{
    ALICE, BOB, LocalStack, PARAMETER_ROOT, REFRESH_DEADLINE_MS, SERVICE, StackOptions,
};
use tonic::Code;

const KEY: &str = "param_config_endpoint";

async fn stack(agents: usize) -> LocalStack {
    LocalStack::start(StackOptions::with_agents(agents), &|_, _| {})
        .await
        .expect("local stack starts")
}

fn parameter_name(tenant: &str) -> String {
    format!("{PARAMETER_ROOT}/{tenant}/{SERVICE}/{KEY}")
}

#[tokio::test]
async fn a_parameter_change_reaches_every_agent_at_once() {
    // GIVEN three agents that cached tenant A's endpoint for an hour
    let stack = stack(3).await;
    let alice = stack.token(ALICE).await.unwrap();
    let old = "\"https://billing.tenant-a.example\"";
    for agent in &stack.agents {
        assert_eq!(agent.get_config(&alice, SERVICE, KEY).await.unwrap(), old);
    }
    // AND the parameter then changes in Parameter Store
    stack
        .put_parameter("tenant-a", KEY, "https://billing-v2.tenant-a.example")
        .await
        .unwrap();
    for agent in &stack.agents {
        assert_eq!(
            agent.get_config(&alice, SERVICE, KEY).await.unwrap(),
            old,
            "still cached"
        );
    }

    // WHEN EventBridge delivers the change event to config-refresh
    let started = Instant::now();
    let result = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap();
    let took = started.elapsed();

    // THEN the invocation succeeds and every agent serves the new value at once
    let summary = result.expect("refresh succeeds");
    assert_eq!(summary["status"], "delivered", "{summary}");
    assert_eq!(summary["instances"], 3, "{summary}");
    for agent in &stack.agents {
        let value = agent.get_config(&alice, SERVICE, KEY).await.unwrap();
        assert_eq!(
            value, "\"https://billing-v2.tenant-a.example\"",
            "{}",
            agent.name
        );
    }
    eprintln!(
        "cold invoke → all 3 agents refreshed: {} ms (fan-out {} ms)",
        took.as_millis(),
        summary["elapsed_ms"]
    );

    // AND a second change, with config-refresh warm, propagates the same way
    stack
        .put_parameter("tenant-a", KEY, "https://billing-v3.tenant-a.example")
        .await
        .unwrap();
    let started = Instant::now();
    let warm = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap()
        .expect("refresh succeeds");
    let took = started.elapsed();
    for agent in &stack.agents {
        let value = agent.get_config(&alice, SERVICE, KEY).await.unwrap();
        assert_eq!(
            value, "\"https://billing-v3.tenant-a.example\"",
            "{}",
            agent.name
        );
    }
    eprintln!(
        "warm invoke → all 3 agents refreshed: {} ms (fan-out {} ms)",
        took.as_millis(),
        warm["elapsed_ms"]
    );

    // AND tenant B, through the same agents, still reads only its own value
    let bob = stack.token(BOB).await.unwrap();
    for agent in &stack.agents {
        assert_eq!(
            agent.get_config(&bob, SERVICE, KEY).await.unwrap(),
            "\"https://billing.tenant-b.example\""
        );
        let denied = agent
            .get_config(&bob, SERVICE, "param_config_regions")
            .await
            .unwrap_err();
        assert_eq!(
            denied.code(),
            Code::NotFound,
            "tenant B cannot read tenant A's key"
        );
    }
    let forged = stack.agents[0]
        .get_config("not-a-token", SERVICE, KEY)
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_dead_agent_fails_the_invocation_while_the_live_ones_update() {
    // GIVEN three agents that cached tenant A's endpoint
    let mut stack = stack(3).await;
    let alice = stack.token(ALICE).await.unwrap();
    for agent in &stack.agents {
        agent.get_config(&alice, SERVICE, KEY).await.unwrap();
    }
    // AND config-refresh is warm (so the timing below is not a cold start)
    let warm_up = stack
        .send_change_event("Update", &parameter_name("tenant-b"))
        .await
        .unwrap();
    assert!(warm_up.is_ok(), "{warm_up:?}");
    // AND one agent crashes without deregistering
    stack.agents[1].kill();
    let registered = seed::discovered_instance_ids(&stack.aws, &stack.cloud_map)
        .await
        .unwrap();
    assert_eq!(registered.len(), 3, "the crashed agent is still registered");
    stack
        .put_parameter("tenant-a", KEY, "https://billing-v3.tenant-a.example")
        .await
        .unwrap();

    // WHEN the change event arrives
    let started = Instant::now();
    let result = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap();
    let took = started.elapsed();

    // THEN the invocation fails (so Lambda retries and the DLQ catches it),
    // naming the dead agent, after about one deadline at most
    let error = result.expect_err("an undelivered refresh is a function error");
    assert!(error.contains(&stack.agents[1].instance_id), "{error}");
    assert!(
        took < Duration::from_millis(REFRESH_DEADLINE_MS * 2),
        "one dead agent costs at most one deadline, not one per agent: {took:?}"
    );
    eprintln!("invoke with one dead agent of 3: {} ms", took.as_millis());
    // AND the live agents serve the new value
    for i in [0, 2] {
        let value = stack.agents[i]
            .get_config(&alice, SERVICE, KEY)
            .await
            .unwrap();
        assert_eq!(value, "\"https://billing-v3.tenant-a.example\"");
    }
}

#[tokio::test]
async fn an_agent_that_stops_cleanly_leaves_cloud_map_and_changes_outside_the_root_are_ignored() {
    // GIVEN two registered agents
    let mut stack = stack(2).await;
    let mut expected: Vec<String> = stack.agents.iter().map(|a| a.instance_id.clone()).collect();
    expected.sort();
    assert_eq!(
        seed::discovered_instance_ids(&stack.aws, &stack.cloud_map)
            .await
            .unwrap(),
        expected
    );

    // WHEN one is stopped as an orchestrator would (SIGTERM)
    let clean = stack.agents[0].stop_gracefully().unwrap();

    // THEN it exits cleanly and is gone from Cloud Map
    assert!(clean, "agent exits 0 on SIGTERM");
    assert_eq!(
        seed::discovered_instance_ids(&stack.aws, &stack.cloud_map)
            .await
            .unwrap(),
        vec![stack.agents[1].instance_id.clone()]
    );
    // AND a refresh now reaches the remaining agent only, successfully
    let summary = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap()
        .expect("refresh succeeds");
    assert_eq!(summary["instances"], 1, "{summary}");

    // AND a change outside the configured root is ignored, not an error
    let ignored = stack
        .send_change_event(
            "Update",
            "/some-other-app/tenant-a/billing/param_config_endpoint",
        )
        .await
        .unwrap()
        .expect("ignored events succeed");
    assert_eq!(ignored["status"], "ignored", "{ignored}");
    // AND a malformed event is rejected with a reason, not a panic
    let malformed = stack
        .watch
        .invoke("config-refresh", &serde_json::json!({"source": "aws.ssm"}))
        .await
        .unwrap()
        .expect_err("malformed events fail");
    assert!(malformed.contains("malformed event"), "{malformed}");
}
