//! Watch end to end: a service streams its configuration from a config-agent
//! process on the local stack; a tenant administrator's write through
//! config-api reaches it through the DynamoDB stream, config-refresh's signed
//! push and the agent, and a client that reconnects from its last position
//! gets the change it missed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tenant_config_local_stack::stack::{ALICE, DANA, LocalStack, SERVICE, StackOptions};
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::proto::{WatchEvent, WatchRequest, watch_event};
use tonic::Streaming;

const KEY: &str = "tenant_config_max_seats";

async fn write(stack: &LocalStack, admin: &str, value: Value) {
    crate::own_values::write(stack, admin, KEY, value).await;
}

async fn watch(
    endpoint: String,
    token: &str,
    resume_from: Option<String>,
) -> Streaming<WatchEvent> {
    let mut client = ConfigReaderClient::connect(endpoint).await.unwrap();
    let mut request = tonic::Request::new(WatchRequest {
        service: SERVICE.into(),
        keys: vec![KEY.into()],
        resume_from,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.watch(request).await.unwrap().into_inner()
}

async fn next(stream: &mut Streaming<WatchEvent>, within: Duration) -> WatchEvent {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .unwrap()
        .expect("the stream is open")
}

fn changed_to(event: &WatchEvent) -> Option<Value> {
    match &event.event {
        Some(watch_event::Event::Change(change)) if change.key == KEY => change
            .value
            .as_ref()
            .map(|v| serde_json::from_str(&v.value_json).unwrap()),
        other => panic!("expected a change of {KEY}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_reaches_a_watching_service_and_a_reconnect_misses_nothing() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let (alice, dana) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    write(&stack, &dana, json!(25)).await;
    let endpoint = stack.agents[0].endpoint();
    // GIVEN alice's service watches one key on its agent
    let mut stream = watch(endpoint.clone(), &alice, None).await;
    let first = next(&mut stream, Duration::from_secs(5)).await;
    let Some(watch_event::Event::Snapshot(snapshot)) = &first.event else {
        panic!("a snapshot first, got {first:?}");
    };
    // (the write may still be on its way to the agent)
    let mut seats = snapshot.values.first().map(|v| v.value_json.clone());
    while seats.as_deref() != Some("25") {
        let event = next(&mut stream, Duration::from_secs(3)).await;
        seats = changed_to(&event).map(|v| v.to_string());
    }

    // WHEN the tenant's administrator writes a new value through config-api
    let started = Instant::now();
    write(&stack, &dana, json!(30)).await;
    // THEN the stream delivers it (stream → config-refresh → signed push → agent)
    let pushed = next(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(changed_to(&pushed), Some(json!(30)));
    eprintln!("write to watcher: {:?}", started.elapsed());

    // WHEN the client goes away, a change is made, and it resumes from the
    // last position it saw
    drop(stream);
    write(&stack, &dana, json!(35)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut resumed = watch(endpoint, &alice, Some(pushed.position.clone())).await;
    // THEN what it missed arrives (perhaps after a repeat of what it had)
    let mut latest = None;
    while latest != Some(json!(35)) {
        latest = changed_to(&next(&mut resumed, Duration::from_secs(3)).await);
    }
}
