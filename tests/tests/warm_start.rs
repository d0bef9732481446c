//! The agent's warm start end to end: a config-agent process seals what it
//! served into its snapshot file (a data key from moto's KMS, AES-256-GCM);
//! a new agent process started from that file while DynamoDB, Parameter
//! Store and STS refuse every connection answers those values marked stale,
//! and fresh ones once the stores are back.

use std::time::{Duration, Instant};

use tenant_config_local_stack::agent::AgentProcess;
use tenant_config_local_stack::fault_proxy::{Fault, Route};
use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE, StackOptions};

const LIMITS: &str = "tenant_config_limits";
const ENDPOINT: &str = "param_config_endpoint";
const NEVER_READ: &str = "tenant_config_theme";

#[tokio::test]
async fn an_agent_started_while_the_stores_are_unreachable_answers_from_its_snapshot() {
    let stack = LocalStack::start(
        StackOptions {
            fault_proxy: true,
            dynamodb_through_proxy: true,
            ..StackOptions::with_agents(0)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let faults = stack.faults.as_ref().unwrap();
    let directory = tenant_config_local_stack::process::workspace_root()
        .join(format!("target/warm-start-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let snapshot = directory.join("agent.snapshot");
    let mut env = stack.env.clone();
    env.extend([
        ("CLOUD_MAP_REGISTER".to_owned(), "false".to_owned()),
        (
            "AGENT_SNAPSHOT_FILE".to_owned(),
            snapshot.display().to_string(),
        ),
        ("AGENT_SNAPSHOT_INTERVAL_SECS".to_owned(), "1".to_owned()),
    ]);
    let alice = stack.token(ALICE).await.unwrap();

    // GIVEN an agent that served two values and stopped, its snapshot written
    let mut first = AgentProcess::start("warm-first", &env).await.unwrap();
    let limits = first.get_config(&alice, SERVICE, LIMITS).await.unwrap();
    let endpoint = first.get_config(&alice, SERVICE, ENDPOINT).await.unwrap();
    assert!(first.stop_gracefully().unwrap(), "{}", first.log_tail());
    let sealed = std::fs::read(&snapshot).expect("the stopping agent wrote its snapshot");
    // (sealed: none of what it holds is in the clear)
    for plain in ["max_users", "billing.tenant-a.example", "tenant-a"] {
        assert!(
            !sealed.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "the snapshot holds {plain} in the clear"
        );
    }

    // WHEN the stores become unreachable and a new agent starts from it
    for route in [Route::DynamoDb, Route::ParameterStore, Route::Sts] {
        faults.set_fault(route, Fault::Refuse);
    }
    let started = Instant::now();
    let second = AgentProcess::start("warm-second", &env).await.unwrap();
    let answer = second
        .get_config_value(&alice, SERVICE, LIMITS)
        .await
        .expect("answered from the snapshot")
        .unwrap();
    eprintln!(
        "process start to first answer (health polled every 100 ms): {:?}",
        started.elapsed()
    );
    // THEN it answers what the first one served, marked stale
    assert_eq!(answer.value_json, limits);
    assert!(answer.stale_age_ms.is_some(), "{answer:?}");
    assert_eq!(
        second.get_config(&alice, SERVICE, ENDPOINT).await.unwrap(),
        endpoint
    );
    // AND a key no agent served before is unavailable, as without a snapshot
    let never = second
        .get_config(&alice, SERVICE, NEVER_READ)
        .await
        .unwrap_err();
    assert_eq!(never.code(), tonic::Code::Unavailable, "{never:?}");

    // WHEN the stores are back THEN it catches up: fresh values again
    for route in [Route::DynamoDb, Route::ParameterStore, Route::Sts] {
        faults.set_fault(route, Fault::Pass);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = second.get_config_value(&alice, SERVICE, LIMITS).await;
        if let Ok(Some(value)) = &value
            && value.stale_age_ms.is_none()
        {
            assert_eq!(value.value_json, limits);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {value:?}: {}",
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_dir_all(&directory).unwrap();
}
