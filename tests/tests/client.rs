//! The Rust client end to end: a service on the local stack reads its
//! configuration through `tenant-config-client` from a config-agent process,
//! with a real Cognito ID token. A tenant administrator's write through
//! config-api reaches the client's memory (DynamoDB stream, config-refresh's
//! signed push, the agent's Watch stream); a secret is read through the agent
//! and never held; OpenFeature resolves through the client's provider.

use std::time::{Duration, Instant};

use open_feature::{EvaluationReason, OpenFeature};
use serde_json::json;
use tenant_config_client::{ConfigClient, ConfigProvider, ReadError, StaticToken};
use tenant_config_local_stack::stack::{ALICE, DANA, LocalStack, SERVICE, StackOptions};

const SEATS: &str = "tenant_config_max_seats";
const SECRET: &str = "param_config_db_password";

#[tokio::test]
async fn a_service_reads_from_memory_and_hears_a_write_through_config_api() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let (alice, dana) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    crate::own_values::write(&stack, &dana, SEATS, json!(25)).await;

    // GIVEN alice's service's client of its agent, holding the whole service
    let config = ConfigClient::builder(stack.agents[0].endpoint(), SERVICE)
        .token(StaticToken(alice))
        .connect()
        .await
        .expect("the client connects to the agent process");
    let mut changes = config.changes();
    // (the write may still be on its way to the agent)
    let deadline = Instant::now() + Duration::from_secs(5);
    while config.get_i64(SEATS) != Ok(25) {
        assert!(Instant::now() < deadline, "{:?}", config.get_i64(SEATS));
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
    }
    // THEN a SecureString of the service is named, never held
    assert!(matches!(
        config.get_str(SECRET),
        Err(ReadError::Sensitive(_))
    ));

    // WHEN the tenant's administrator writes a new value through config-api
    let started = Instant::now();
    crate::own_values::write(&stack, &dana, SEATS, json!(30)).await;
    // THEN the client's memory has it within the convergence bound, told to subscribers
    loop {
        let change = tokio::time::timeout(Duration::from_secs(3), changes.recv())
            .await
            .expect("the change reaches the client")
            .unwrap();
        if change.key == SEATS {
            break;
        }
    }
    assert_eq!(config.get_i64(SEATS), Ok(30));
    eprintln!("write to the client's memory: {:?}", started.elapsed());

    // AND the secret is read through the agent on demand
    let secret = config
        .secret(SECRET)
        .await
        .expect("the agent serves a loopback caller");
    assert_eq!(secret.expose_str(), Some("tenant-a-db-secret"));

    // AND an OpenFeature client resolves from the same memory
    let flags = {
        let mut api = OpenFeature::singleton_mut().await;
        api.set_named_provider("client-e2e", ConfigProvider::new(config.clone()))
            .await;
        api.create_named_client("client-e2e")
    };
    let seats = flags.get_int_details(SEATS, None, None).await.unwrap();
    assert_eq!(seats.value, 30);
    assert_eq!(seats.reason, Some(EvaluationReason::Cached));
}
