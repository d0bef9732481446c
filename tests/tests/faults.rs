//! The fault suite, end to end: the real binaries on the local stack while a
//! store, the JWKS endpoint, Cloud Map or an agent misbehaves. moto is frozen
//! (SIGSTOP: its port accepts connections and nothing answers) or killed; the
//! fault proxy (`local_stack::fault_proxy`) throttles, refuses or stalls one
//! service in front of moto, which cannot do that itself.
//!
//! Every stack here uses one-second cache TTLs, so "a value config-api read
//! before and that has since expired" takes a second to arrange.

use std::time::{Duration, Instant};

use serde_json::json;
use tenant_config_local_stack::fault_proxy::{Fault, Route};
use tenant_config_local_stack::stack::{
    ALICE, Answer, LocalStack, PARAMETER_ROOT, SERVICE, StackOptions, seed_tables,
};
use tenant_config_shared::api::STALE_HEADER;

const SHORT_TTLS: &[(&str, &str)] = &[
    ("DYNAMODB_CACHE_TTL_SECS", "1"),
    ("PARAMETER_CACHE_TTL_SECS", "1"),
];

/// SHORT_TTLS, and a store that failed counts as failing for 3 s instead of
/// 1 s: the frozen-store test makes three requests in that window, which on
/// a loaded machine (the suites run side by side) can take longer than 1 s.
const SHORT_TTLS_LONGER_FAILING: &[(&str, &str)] = &[
    ("DYNAMODB_CACHE_TTL_SECS", "1"),
    ("PARAMETER_CACHE_TTL_SECS", "1"),
    ("STORE_RETRY_INTERVAL_MS", "3000"),
];

async fn stack(fault_proxy: bool, agents: usize) -> LocalStack {
    stack_with(SHORT_TTLS, fault_proxy, agents).await
}

async fn stack_with(
    settings: &'static [(&'static str, &'static str)],
    fault_proxy: bool,
    agents: usize,
) -> LocalStack {
    LocalStack::start(
        StackOptions {
            settings,
            fault_proxy,
            ..StackOptions::with_agents(agents)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts")
}

fn path(key: &str) -> String {
    format!("/v1/config/{SERVICE}/{key}")
}

async fn timed_get(stack: &LocalStack, path: &str, token: &str) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = stack.get(path, Some(token)).await.unwrap();
    (answer, started.elapsed())
}

fn assert_stale(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer.body["stale"]["age_ms"].as_u64().is_some(),
        "{}",
        answer.text
    );
    assert!(
        answer.header(STALE_HEADER).is_some(),
        "{:?}",
        answer.headers
    );
}

/// Polls until `path` answers 200 without the stale marker.
async fn until_fresh(stack: &LocalStack, path: &str, token: &str, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    loop {
        let answer = stack.get(path, Some(token)).await.unwrap();
        if answer.status == 200 && answer.body.get("stale").is_none() {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "not fresh within {within:?}: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_frozen_store_gets_stale_or_fast_answers_and_recovery_needs_no_restart() {
    // GIVEN config-api read tenant A's limits, and its cache entry expired since
    let stack = stack_with(SHORT_TTLS_LONGER_FAILING, false, 0).await;
    let alice = stack.token(ALICE).await.unwrap();
    let read_before = path("tenant_config_limits");
    let never_read = path("tenant_config_theme");
    assert_eq!(
        stack.get(&read_before, Some(&alice)).await.unwrap().status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // WHEN the store freezes
    stack.moto.set_paused(true);

    // THEN the expired key is answered with its last good value, marked
    // stale, within the catch-up (0.5 s) and probe (1 s) deadlines
    let (stale, stale_in) = timed_get(&stack, &read_before, &alice).await;
    assert_stale(&stale);
    assert_eq!(stale.body["value"]["tier"], "gold");
    assert!(
        stale_in < Duration::from_millis(2500),
        "stale answer took {stale_in:?}"
    );
    // AND again, now without even probing (one probe per key per retry interval)
    let (again, again_in) = timed_get(&stack, &read_before, &alice).await;
    assert_stale(&again);

    // AND a key it never read gets a clear 502 within the probe timeout
    // (1 s): the store is known to be failing, so it is not given the SDK's
    // whole operation timeout (5 s)
    let (failed, failed_in) = timed_get(&stack, &never_read, &alice).await;
    assert_eq!(failed.status, 502, "{}", failed.text);
    assert_eq!(failed.body["error"], "store_unavailable");
    assert!(failed_in < Duration::from_secs(3), "took {failed_in:?}");
    // AND asked again at once, it fails fast instead of waiting again
    let (fast, fast_in) = timed_get(&stack, &never_read, &alice).await;
    assert_eq!(fast.status, 502, "{}", fast.text);
    assert!(
        fast_in < Duration::from_millis(1500),
        "repeat failure took {fast_in:?}"
    );

    // WHEN the store thaws THEN both keys are served fresh, with no restart
    stack.moto.set_paused(false);
    let theme = until_fresh(&stack, &never_read, &alice, Duration::from_secs(10)).await;
    assert_eq!(theme.body["value"], "dark");
    until_fresh(&stack, &read_before, &alice, Duration::from_secs(10)).await;
    eprintln!(
        "frozen store: stale answer {} ms (then {} ms), never-read key 502 after {} ms (then {} ms)",
        stale_in.as_millis(),
        again_in.as_millis(),
        failed_in.as_millis(),
        fast_in.as_millis()
    );
}

#[tokio::test]
async fn a_killed_and_restarted_store_is_ridden_out_and_picked_up_again() {
    // GIVEN config-api read tenant A's limits, since expired
    let mut stack = stack(false, 0).await;
    let alice = stack.token(ALICE).await.unwrap();
    let read_before = path("tenant_config_limits");
    assert_eq!(
        stack.get(&read_before, Some(&alice)).await.unwrap().status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // WHEN moto is killed (connections refused, every table gone)
    stack.moto.kill();

    // THEN the key is answered stale and a never-read key fails fast
    let (stale, stale_in) = timed_get(&stack, &read_before, &alice).await;
    assert_stale(&stale);
    let (failed, failed_in) = timed_get(&stack, &path("tenant_config_theme"), &alice).await;
    assert_eq!(failed.status, 502, "{}", failed.text);
    assert!(failed_in < Duration::from_secs(7), "took {failed_in:?}");

    // WHEN a new moto comes up on the same port, with the table restored
    stack.moto.restart().await.unwrap();
    seed_tables(&stack.aws).await.unwrap();

    // THEN config-api serves fresh values again without a restart
    let theme = until_fresh(
        &stack,
        &path("tenant_config_theme"),
        &alice,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(theme.body["value"], "dark");
    eprintln!(
        "killed store: stale answer {} ms, never-read key 502 after {} ms",
        stale_in.as_millis(),
        failed_in.as_millis()
    );
}

#[tokio::test]
async fn a_throttling_parameter_store_sees_bounded_calls_and_the_stage_cache_is_flushed() {
    // GIVEN config-api read tenant A's endpoint parameter, since expired
    let stack = stack(true, 0).await;
    let faults = stack.faults.as_ref().unwrap();
    let alice = stack.token(ALICE).await.unwrap();
    let endpoint = path("param_config_endpoint");
    assert_eq!(
        stack.get(&endpoint, Some(&alice)).await.unwrap().status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // config-refresh reads its refresh key from Parameter Store when it
    // starts: start it now (a change outside the root is only ignored).
    let warm = stack
        .send_change_event("Update", "/elsewhere/warm-up")
        .await
        .unwrap();
    assert!(warm.is_ok(), "{warm:?}");
    let flushes_before = stack.stage_cache.flushes().len();

    // WHEN Parameter Store throttles every call while callers keep reading
    // it, 10 requests a second for 3 seconds
    faults.set_fault(Route::ParameterStore, Fault::Throttle);
    let parameter = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/param_config_endpoint");
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let answer = stack.get(&endpoint, Some(&alice)).await.unwrap();
        // THEN every one is answered with the last good value, marked stale
        assert_stale(&answer);
        assert_eq!(answer.body["value"], "https://billing.tenant-a.example");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = started.elapsed();
    // AND Parameter Store saw at most one probe per second for that key
    // (each probe up to the SDK's 3 attempts), not one per request
    let calls = faults
        .calls()
        .iter()
        .filter(|c| c.fault == Fault::Throttle && c.name.as_deref() == Some(parameter.as_str()))
        .count();
    let probes_allowed = window.as_secs() as usize + 1;
    assert!(
        calls <= probes_allowed * 3,
        "{calls} calls for {answered} requests in {window:?}"
    );
    // AND a key nothing was cached for gets a clear 503 (throttled) — or a
    // 502 when the last call before it failed otherwise (a connection the
    // proxy closed, under load) — fast either way
    let (regions, regions_in) = timed_get(&stack, &path("param_config_regions"), &alice).await;
    assert!(
        (regions.status, regions.body["error"].as_str()) == (503, Some("store_throttled"))
            || (regions.status, regions.body["error"].as_str()) == (502, Some("store_unavailable")),
        "{} {}",
        regions.status,
        regions.text
    );
    assert!(regions_in < Duration::from_secs(3), "took {regions_in:?}");
    // AND the stage cache, which may hold a degraded answer, is flushed soon
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.stage_cache.flushes().len() == flushes_before {
        assert!(
            Instant::now() < deadline,
            "no stage cache flush after degraded answers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // WHEN the throttling stops THEN fresh answers resume
    faults.set_fault(Route::ParameterStore, Fault::Pass);
    until_fresh(&stack, &endpoint, &alice, Duration::from_secs(5)).await;
    eprintln!(
        "throttled Parameter Store: {answered} requests in {} ms, {calls} store calls for the key",
        window.as_millis()
    );
}

#[tokio::test]
async fn a_jwks_endpoint_down_at_cold_start_is_a_clear_503_that_recovers_in_a_second() {
    // GIVEN the pool's JWKS endpoint refuses connections before config-api
    // has verified a single token
    let stack = stack(true, 0).await;
    let faults = stack.faults.as_ref().unwrap();
    let alice = stack.token(ALICE).await.unwrap();
    faults.set_fault(Route::Jwks, Fault::Refuse);

    // WHEN the first request arrives (config-api's cold start)
    let (answer, took) = timed_get(&stack, &path("tenant_config_limits"), &alice).await;

    // THEN it is a 503 that says the signing keys are unavailable, not a 401
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.body["error"], "auth_unavailable");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // WHEN the endpoint is back THEN the next fetch (a second later) succeeds
    faults.set_fault(Route::Jwks, Fault::Pass);
    let back = Instant::now();
    until_fresh(
        &stack,
        &path("tenant_config_limits"),
        &alice,
        Duration::from_secs(5),
    )
    .await;
    eprintln!(
        "JWKS down at cold start: 503 after {} ms; recovered {} ms after it came back",
        took.as_millis(),
        back.elapsed().as_millis()
    );
}

#[tokio::test]
async fn cloud_map_unreachable_fails_the_refresh_invocation_so_lambda_retries_it() {
    // GIVEN one registered agent and a warm config-refresh
    let stack = stack(true, 1).await;
    let faults = stack.faults.as_ref().unwrap();
    let parameter = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/param_config_endpoint");
    let warm = stack.send_change_event("Update", &parameter).await.unwrap();
    assert!(warm.is_ok(), "{warm:?}");

    // WHEN Cloud Map refuses connections during a change
    faults.set_fault(Route::CloudMap, Fault::Refuse);
    let started = Instant::now();
    let result = stack.send_change_event("Update", &parameter).await.unwrap();
    let took = started.elapsed();

    // THEN the invocation fails (Lambda's retries and the DLQ take over),
    // within the SDK's operation timeout
    let error = result.expect_err("discovery failure is a function error");
    assert!(error.to_lowercase().contains("discover"), "{error}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // AND the retry succeeds once Cloud Map answers again
    faults.set_fault(Route::CloudMap, Fault::Pass);
    let retried = stack.send_change_event("Update", &parameter).await.unwrap();
    assert!(retried.is_ok(), "{retried:?}");
    eprintln!(
        "Cloud Map refused: invocation failed after {} ms",
        took.as_millis()
    );
}

#[tokio::test]
async fn an_agent_that_accepts_and_never_answers_costs_one_deadline_and_the_others_update() {
    // GIVEN three agents that cached tenant A's endpoint, one of them frozen
    let stack = LocalStack::start(
        StackOptions {
            settings: &[("REFRESH_DEADLINE_MS", "500")],
            ..StackOptions::with_agents(3)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let alice = stack.token(ALICE).await.unwrap();
    for agent in &stack.agents {
        agent
            .get_config(&alice, SERVICE, "param_config_endpoint")
            .await
            .unwrap();
    }
    let parameter = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/param_config_endpoint");
    let warm = stack.send_change_event("Update", &parameter).await.unwrap();
    assert!(warm.is_ok(), "{warm:?}");
    stack.agents[2].set_paused(true);
    stack
        .put_parameter(
            "tenant-a",
            "param_config_endpoint",
            "https://v2.tenant-a.example",
        )
        .await
        .unwrap();

    // WHEN the change is pushed
    let started = Instant::now();
    let result = stack.send_change_event("Update", &parameter).await.unwrap();
    let took = started.elapsed();

    // THEN the frozen agent fails the invocation after about one deadline
    let error = result.expect_err("an unacknowledged refresh is a function error");
    assert!(error.contains(&stack.agents[2].instance_id), "{error}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // AND the other two serve the new value
    for agent in &stack.agents[..2] {
        let value = agent
            .get_config(&alice, SERVICE, "param_config_endpoint")
            .await
            .unwrap();
        assert_eq!(value, "\"https://v2.tenant-a.example\"");
    }
    stack.agents[2].set_paused(false);
    eprintln!(
        "one silent agent of 3: invocation failed after {} ms",
        took.as_millis()
    );
}

#[tokio::test]
async fn malformed_records_and_events_are_refused_alone_and_the_rest_are_processed() {
    // GIVEN an agent that cached tenant A's limits and theme
    let stack = stack(false, 1).await;
    let alice = stack.token(ALICE).await.unwrap();
    let agent = &stack.agents[0];
    for key in ["tenant_config_limits", "tenant_config_theme"] {
        agent.get_config(&alice, SERVICE, key).await.unwrap();
    }
    let good = |key: &str, id: &str| {
        json!({
            "eventID": id,
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "Keys": {"pk": {"S": "TENANT#tenant-a"}, "sk": {"S": format!("CONFIG#{SERVICE}#{key}")}},
                "SequenceNumber": id,
                "SizeBytes": 60,
                "StreamViewType": "KEYS_ONLY"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/tenant-config/stream/2026-11-23T00:00:00.000"
        })
    };
    // A record with no keys, between two good ones.
    let mut malformed = good("tenant_config_theme", "200");
    malformed["dynamodb"]
        .as_object_mut()
        .unwrap()
        .remove("Keys");

    // WHEN a stream batch with the malformed record in the middle arrives
    let batch = json!({"Records": [
        good("tenant_config_limits", "100"),
        malformed,
        good("tenant_config_theme", "300"),
    ]});
    let answer = stack
        .watch
        .invoke("config-refresh", &batch)
        .await
        .unwrap()
        .expect("a partly bad batch is not a function error");

    // THEN only the malformed record is reported for retry (a good record
    // an agent did not acknowledge would be reported too)
    assert_eq!(
        answer["batchItemFailures"],
        json!([{"itemIdentifier": "200"}]),
        "{answer}"
    );
    // WHEN an EventBridge event that is not a parameter change arrives
    let nonsense = json!({"detail-type": "Parameter Store Change", "source": "aws.ssm", "detail": {"operation": 7}});
    let refused = stack
        .watch
        .invoke("config-refresh", &nonsense)
        .await
        .unwrap();
    // THEN it is refused with a reason, and the function keeps serving
    let reason = refused.expect_err("a malformed event is a function error");
    assert!(!reason.is_empty());
    let parameter = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/param_config_endpoint");
    let next = stack.send_change_event("Update", &parameter).await.unwrap();
    assert!(next.is_ok(), "{next:?}");
}

#[tokio::test]
async fn a_string_that_becomes_a_secure_string_is_never_served_stale_while_parameter_store_fails() {
    // GIVEN an agent and config-api (hour-long caches: the default agent
    // TTL, and config-api's own) that read tenant A's endpoint, a String
    let stack = stack_with(&[], true, 1).await;
    let faults = stack.faults.as_ref().unwrap();
    let alice = stack.token(ALICE).await.unwrap();
    let agent = &stack.agents[0];
    let key = "param_config_endpoint";
    let plaintext = "https://billing.tenant-a.example";
    assert_eq!(
        agent.get_config(&alice, SERVICE, key).await.unwrap(),
        format!("\"{plaintext}\"")
    );
    let api_path = path(key);
    assert_eq!(
        stack.get(&api_path, Some(&alice)).await.unwrap().body["value"],
        plaintext
    );

    // WHEN an operator makes it a SecureString, the change event (type
    // SecureString) reaches every reader, and Parameter Store then fails
    let item = tenant_config_shared::ItemKey::parse("tenant-a", SERVICE, key).unwrap();
    tenant_config_admin::values::put_parameter(
        &stack.aws,
        PARAMETER_ROOT,
        &item,
        "now-a-secret",
        tenant_config_admin::values::ParameterKind::SecureString,
    )
    .await
    .unwrap();
    let name = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/{key}");
    let pushed = stack.send_change_event("Update", &name).await.unwrap();
    assert!(pushed.is_ok(), "{pushed:?}");
    faults.set_fault(Route::ParameterStore, Fault::Throttle);

    // THEN neither reader serves the old plaintext as a stale value: the
    // agent answers an error, config-api no value (and never the secret)
    let from_agent = agent.get_config(&alice, SERVICE, key).await;
    assert!(
        from_agent.as_deref().is_err(),
        "the agent served {from_agent:?} after the key became a SecureString"
    );
    // (config-api learns the change from the journal within its 1 s catch-up)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = stack.get(&api_path, Some(&alice)).await.unwrap();
        assert_ne!(answer.body["value"], "now-a-secret", "{}", answer.text);
        if answer.body["value"] != plaintext {
            assert!(answer.status >= 400, "{} {}", answer.status, answer.text);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "config-api still serves the old plaintext: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
