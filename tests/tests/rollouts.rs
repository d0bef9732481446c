//! Rollouts end to end: a platform administrator (pat) stages a global
//! change for one canary tenant through config-api under cargo lambda
//! watch; the live rollout's item reaches config-refresh through the
//! DynamoDB stream, which journals and pushes it; config-api and the agent
//! serve the canary the new value and every other tenant the previous one,
//! until an abort puts the canary back. rollout-driver, ticked as the
//! schedule and the alarm rule would, takes a rollout to everyone, and one
//! whose gate goes into alarm back.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tenant_config_local_stack::stack::{
    ALICE, Answer, BOB, LocalStack, PAT, SERVICE, StackOptions,
};

const KEY: &str = "tenant_config_rollout_limits";
/// The convergence bound every reader keeps.
const BOUND: Duration = Duration::from_secs(2);

/// What a tenant reads from config-api and from the agent, once both agree.
async fn read(stack: &LocalStack, token: &str) -> Option<Value> {
    let api = stack
        .get(&format!("/v1/config/{SERVICE}/{KEY}"), Some(token))
        .await
        .ok()?;
    let via_agent = stack.agents[0].get_config(token, SERVICE, KEY).await.ok()?;
    let via_agent: Value = serde_json::from_str(&via_agent).ok()?;
    (api.status == 200 && api.body["value"] == via_agent).then_some(via_agent)
}

/// Waits until config-api and the agent both serve `expected` to the
/// token's tenant, within [`BOUND`]; how long that took.
async fn until(stack: &LocalStack, token: &str, expected: &Value) -> Duration {
    let started = Instant::now();
    loop {
        let got = read(stack, token).await;
        if got.as_ref() == Some(expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BOUND,
            "not served within {BOUND:?}: last {got:?}, want {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pat starts a rollout of `body` through config-api; its id.
async fn start_rollout(stack: &LocalStack, pat: &str, body: Value) -> String {
    let started = send(stack, Method::POST, pat, "/v1/rollouts", Some(body)).await;
    assert_eq!(started.status, 201, "{}", started.text);
    started.body["id"].as_str().unwrap().to_owned()
}

/// The admin CLI with the stack's environment.
fn admin(stack: &LocalStack, args: &[&str]) -> std::process::Output {
    std::process::Command::new(
        tenant_config_local_stack::agent::agent_binary().with_file_name("tenant-config-admin"),
    )
    .args(args)
    .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    .output()
    .expect("tenant-config-admin runs")
}

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
    until(&stack, &alice, &previous).await;
    until(&stack, &bob, &previous).await;

    // WHEN pat stages a new value for tenant-b first
    let staged = json!({"per_second": 99});
    let id = start_rollout(
        &stack,
        &pat,
        json!({
            "layer": "global", "service": SERVICE, "key": KEY, "value": staged,
            "steps": [{"canary": ["tenant-b"]}, "everyone"], "bake_seconds": 600, "alarms": []
        }),
    )
    .await;
    // THEN tenant-b reads it from config-api and the agent within the bound
    let took = until(&stack, &bob, &staged).await;
    // AND tenant-a still reads the previous value, and explain says why
    assert_eq!(read(&stack, &alice).await, Some(previous.clone()));
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
    until(&stack, &bob, &previous).await;
    let got = stack
        .get(&format!("/v1/rollouts/{id}"), Some(&pat))
        .await
        .unwrap();
    assert_eq!(got.body["state"], "rolled_back", "{}", got.text);

    // WHEN an operator starts one from the CLI
    let started = admin(
        &stack,
        &[
            "rollout",
            "start",
            "global",
            SERVICE,
            KEY,
            r#"{"per_second": 77}"#,
            "--steps",
            r#"[{"canary": ["tenant-b"]}, "everyone"]"#,
            "--bake-seconds",
            "600",
        ],
    );
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let cli_id = serde_json::from_slice::<Value>(&started.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // THEN the canary reads it, and the CLI's own layer write is refused too
    until(&stack, &bob, &json!({"per_second": 77})).await;
    let refused = admin(&stack, &["layer", "put", "global", SERVICE, KEY, "5"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in progress"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // AND `get` counts the tenants on each version, `abort` puts the canary back
    // (it counts registered tenants: tenant-b is registered, without a tier)
    let registered = admin(&stack, &["tenant", "set", "tenant-b"]);
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let cli_got = admin(&stack, &["rollout", "get", &cli_id]);
    let cli_got: Value = serde_json::from_slice(&cli_got.stdout).unwrap();
    assert_eq!(
        (
            cli_got["state"].as_str(),
            cli_got["tenants"]["new"].as_u64()
        ),
        (Some("rolling"), Some(1)),
        "{cli_got}"
    );
    let aborted = admin(&stack, &["rollout", "abort", &cli_id]);
    assert!(
        aborted.status.success(),
        "{}",
        String::from_utf8_lossy(&aborted.stderr)
    );
    until(&stack, &bob, &previous).await;
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

/// The rollout as pat reads it.
async fn rollout(stack: &LocalStack, pat: &str, id: &str) -> Value {
    let got = stack
        .get(&format!("/v1/rollouts/{id}"), Some(pat))
        .await
        .unwrap();
    assert_eq!(got.status, 200, "{}", got.text);
    got.body
}

#[tokio::test]
async fn the_driver_takes_a_rollout_to_everyone_and_a_gate_in_alarm_takes_the_next_one_back() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let pat = stack.token(PAT).await.unwrap();
    let (alice, bob) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(BOB).await.unwrap(),
    );
    let path = format!("/v1/config/{SERVICE}/{KEY}");
    let global = format!("/v1/layers/global/{SERVICE}/{KEY}");
    let first = json!({"per_second": 10});
    let created = send(
        &stack,
        Method::PUT,
        &pat,
        &global,
        Some(json!({"value": first})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    stack.create_gate("orders-errors").await.unwrap();
    until(&stack, &alice, &first).await;
    until(&stack, &bob, &first).await;

    // GIVEN a rollout of three steps, one second of bake each, one gate
    let second = json!({"per_second": 20});
    let id = start_rollout(
        &stack,
        &pat,
        json!({
            "layer": "global", "service": SERVICE, "key": KEY, "value": second,
            "steps": [{"canary": ["tenant-b"]}, {"percent": 50}, "everyone"], "bake_seconds": 1, "alarms": ["orders-errors"]
        }),
    )
    .await;
    // WHEN the driver ticks it through, while both tenants read every 50 ms
    let mut seen: Vec<(Value, Value)> = vec![(first.clone(), first.clone())];
    let began = Instant::now();
    loop {
        let a = stack.get(&path, Some(&alice)).await.unwrap().body["value"].clone();
        let b = stack.get(&path, Some(&bob)).await.unwrap().body["value"].clone();
        if seen.last() != Some(&(a.clone(), b.clone())) {
            seen.push((a, b));
        }
        if rollout(&stack, &pat, &id).await["state"] == "done" {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "not done in 60 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // THEN each tenant moved once, the canary first, and both read the new value
    let moves = |pick: fn(&(Value, Value)) -> &Value| {
        seen.windows(2)
            .filter(|w| pick(&w[0]) != pick(&w[1]))
            .count()
    };
    assert_eq!((moves(|s| &s.0), moves(|s| &s.1)), (1, 1), "{seen:?}");
    assert_eq!(
        seen[1],
        (first.clone(), second.clone()),
        "the canary first: {seen:?}"
    );
    until(&stack, &bob, &second).await;
    until(&stack, &alice, &second).await;
    // AND the layer holds it now, written by the rollout
    let history = stack
        .get(&format!("{global}/history"), Some(&pat))
        .await
        .unwrap();
    assert_eq!(
        history.body["versions"][0]["actor"],
        json!(format!("rollout:{id}")),
        "{}",
        history.text
    );

    // GIVEN a second rollout, baking long, its canary on the new value
    let third = json!({"per_second": 30});
    let id = start_rollout(
        &stack,
        &pat,
        json!({
            "layer": "global", "service": SERVICE, "key": KEY, "value": third,
            "steps": [{"canary": ["tenant-b"]}, "everyone"], "bake_seconds": 600, "alarms": ["orders-errors"]
        }),
    )
    .await;
    until(&stack, &bob, &third).await;
    // WHEN its gate goes into alarm
    let alarmed = Instant::now();
    stack
        .set_gate(
            "orders-errors",
            aws_sdk_cloudwatch::types::StateValue::Alarm,
        )
        .await
        .unwrap();
    // THEN the canary reads the previous value again within 30 s, and the reason is kept
    loop {
        if read(&stack, &bob).await == Some(second.clone()) {
            break;
        }
        assert!(
            alarmed.elapsed() < Duration::from_secs(30),
            "no rollback within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = alarmed.elapsed();
    let got = rollout(&stack, &pat, &id).await;
    assert_eq!(
        (got["state"].as_str(), got["reason"].as_str()),
        (Some("rolled_back"), Some("gate in alarm: orders-errors")),
        "{got}"
    );
    eprintln!("rolled back everywhere {took:?} after the alarm");
}
