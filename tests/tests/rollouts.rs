//! Rollouts end to end: a platform administrator (pat) stages a global
//! change for one canary tenant through config-api under cargo lambda
//! watch; the live rollout's item reaches config-refresh through the
//! DynamoDB stream, which journals and pushes it; config-api and the agent
//! serve the canary the new value and every other tenant the previous one,
//! until an abort puts the canary back.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tenant_config_local_stack::stack::{
    ALICE, Answer, BOB, LocalStack, PAT, SERVICE, StackOptions,
};

const KEY: &str = "tenant_config_rollout_limits";
/// The convergence bound every reader keeps.
const BOUND: Duration = Duration::from_secs(2);

async fn send(
    stack: &LocalStack,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let headers: &[(&str, &str)] = if method == Method::PUT {
        &[("if-none-match", "*")]
    } else {
        &[]
    };
    stack
        .send(method, path, Some(token), headers, body.as_ref())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_canary_reads_the_staged_value_everywhere_and_an_abort_puts_it_back() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let pat = stack.token(PAT).await.unwrap();
    let (alice, bob) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(BOB).await.unwrap(),
    );
    let agent = &stack.agents[0];
    let path = format!("/v1/config/{SERVICE}/{KEY}");
    // What a tenant reads from config-api and from the agent, once both agree.
    let read = |token: String| {
        let (stack, path) = (&stack, path.clone());
        async move {
            let api = stack.get(&path, Some(&token)).await.ok()?;
            let via_agent = agent.get_config(&token, SERVICE, KEY).await.ok()?;
            let via_agent: Value = serde_json::from_str(&via_agent).ok()?;
            (api.status == 200 && api.body["value"] == via_agent).then_some(via_agent)
        }
    };
    let until = |token: String, expected: Value| {
        let read = &read;
        async move {
            let started = Instant::now();
            loop {
                let got = read(token.clone()).await;
                if got.as_ref() == Some(&expected) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < BOUND,
                    "not served within {BOUND:?}: last {got:?}, want {expected}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // GIVEN a global default both tenants read
    let global = format!("/v1/layers/global/{SERVICE}/{KEY}");
    let previous = json!({"per_second": 10});
    let created = send(
        &stack,
        Method::PUT,
        &pat,
        &global,
        Some(json!({"value": previous})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    until(alice.clone(), previous.clone()).await;
    until(bob.clone(), previous.clone()).await;

    // WHEN pat stages a new value for tenant-b first
    let staged = json!({"per_second": 99});
    let started = send(
        &stack,
        Method::POST,
        &pat,
        "/v1/rollouts",
        Some(json!({
            "layer": "global", "service": SERVICE, "key": KEY, "value": staged,
            "steps": [{"canary": ["tenant-b"]}, "everyone"],
            "bake_seconds": 600, "alarms": []
        })),
    )
    .await;
    assert_eq!(started.status, 201, "{}", started.text);
    let id = started.body["id"].as_str().unwrap().to_owned();
    // THEN tenant-b reads it from config-api and the agent within the bound
    let took = until(bob.clone(), staged.clone()).await;
    // AND tenant-a still reads the previous value, and explain says why
    assert_eq!(read(alice.clone()).await, Some(previous.clone()));
    let explained = stack
        .get(&format!("/v1/explain/{SERVICE}/{KEY}"), Some(&bob))
        .await
        .unwrap();
    assert_eq!(
        explained.body["rollout"]["id"],
        json!(id),
        "{}",
        explained.text
    );
    assert_eq!(explained.body["rollout"]["version"], "new");
    // AND the entry takes no other write while the rollout is live
    let write = stack
        .send(
            Method::PUT,
            &global,
            Some(&pat),
            &[("if-match", "1")],
            Some(&json!({"value": 1})),
        )
        .await
        .unwrap();
    assert_eq!(
        (write.status, write.body["error"].as_str()),
        (409, Some("rollout_in_progress")),
        "{}",
        write.text
    );

    // WHEN pat aborts it
    let aborted = send(
        &stack,
        Method::POST,
        &pat,
        &format!("/v1/rollouts/{id}/abort"),
        None,
    )
    .await;
    assert_eq!(aborted.status, 200, "{}", aborted.text);
    // THEN tenant-b reads the previous value everywhere again
    until(bob.clone(), previous.clone()).await;
    let got = stack
        .get(&format!("/v1/rollouts/{id}"), Some(&pat))
        .await
        .unwrap();
    assert_eq!(got.body["state"], "rolled_back", "{}", got.text);
    assert!(
        got.body["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by "),
        "{}",
        got.text
    );
    eprintln!("canary served the staged value everywhere after {took:?}");
}
