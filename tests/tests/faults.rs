//! Store faults, end to end: moto frozen (SIGSTOP: its port accepts
//! connections and nothing answers), config-api under cargo lambda watch with
//! its default bounds on every AWS call.

use std::time::{Duration, Instant};

use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE, StackOptions};

#[tokio::test]
async fn a_frozen_store_gets_bounded_answers_and_recovery_needs_no_restart() {
    // GIVEN config-api that has tenant A's limits in its cache
    let stack = LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("local stack starts");
    let alice = stack.token(ALICE).await.unwrap();
    let cached = format!("/v1/config/{SERVICE}/tenant_config_limits");
    let uncached = format!("/v1/config/{SERVICE}/tenant_config_theme");
    assert_eq!(stack.get(&cached, Some(&alice)).await.unwrap().status, 200);

    // WHEN the store freezes
    stack.moto.set_paused(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // THEN the cached key is still answered: the journal query behind it
    // gives up after its 500 ms timeout
    let started = Instant::now();
    let answer = stack.get(&cached, Some(&alice)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(took < Duration::from_secs(2), "cached key took {took:?}");

    // AND a key it never read gets a clear 502 within the operation timeout
    // (5 s), not a hang
    let started = Instant::now();
    let answer = stack.get(&uncached, Some(&alice)).await.unwrap();
    let failed_in = started.elapsed();
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_eq!(answer.body["error"], "store_unavailable");
    assert!(failed_in < Duration::from_secs(7), "took {failed_in:?}");

    // WHEN the store thaws THEN the same key is served, with no restart
    stack.moto.set_paused(false);
    let answer = stack.get(&uncached, Some(&alice)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["value"], "dark");
    eprintln!(
        "frozen store: cached key {} ms, uncached key 502 after {} ms",
        took.as_millis(),
        failed_in.as_millis()
    );
}
