//! The change feed end to end: config-refresh under cargo lambda watch
//! announces each change on the local stack's MQTT broker (rumqttd, playing
//! IoT Core) and an agent process follows it. The agents here register
//! nowhere, so no push reaches them: what they learn, they learn from the
//! feed, or from the journal when the feed shows them a gap.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tenant_config_admin::values::{ParameterKind, put_item, put_parameter};
use tenant_config_local_stack::agent::AgentProcess;
use tenant_config_local_stack::broker::Broker;
use tenant_config_local_stack::stack::{
    ALICE, JOURNAL_TABLE, LocalStack, PARAMETER_ROOT, SERVICE, StackOptions, TABLE, demo_item,
};
use tenant_config_shared::StoreKind;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::notices::feed::{FeedSettings, NoticePublisher};
use tenant_config_shared::notices::mqtt::MqttPublisher;
use tenant_config_shared::notices::notices_of;
use tenant_config_shared::refresh::change::{ChangeRecord, Subject};
use tenant_config_shared::refresh::journal::{ChangeJournal, JournalEntry};
use tenant_config_shared::refresh::proto::Operation;
use tenant_config_shared::refresh::signing::{RefreshKey, unix_ms_now};
use tenant_config_testkit::values::update_of;

const FED_KEY: &str = "tenant_config_fed";
const GAP_KEY: &str = "param_config_gap";

async fn stack_and_agent(name: &str) -> (LocalStack, AgentProcess, String) {
    let stack = LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("local stack starts");
    let mut env = stack.env.clone();
    // Registered nowhere: config-refresh pushes nothing to it.
    env.push(("CLOUD_MAP_REGISTER".to_owned(), "false".to_owned()));
    let agent = AgentProcess::start(name, &env).await.expect("agent starts");
    let alice = stack.token(ALICE).await.expect("a token");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log_tail().contains("change feed: subscribed") {
        assert!(
            Instant::now() < deadline,
            "the agent did not subscribe to the feed:\n{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (stack, agent, alice)
}

/// Polls the agent until `key` reads `expected`; returns how long it took.
async fn served_within(
    agent: &AgentProcess,
    token: &str,
    key: &str,
    expected: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let value = agent
            .get_config(token, SERVICE, key)
            .await
            .unwrap_or_default();
        if value.contains(expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{key} still read {value} after {limit:?}:\n{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_agent_no_push_reaches_learns_a_write_from_the_feed_and_a_lost_notice_from_the_journal()
{
    let (stack, agent, alice) = stack_and_agent("fed").await;
    let item = demo_item("tenant-a", FED_KEY).unwrap();

    // GIVEN the agent holds a value (cached for an hour)
    put_item(&stack.aws, TABLE, &item, "v1").await.unwrap();
    served_within(&agent, &alice, FED_KEY, "v1", Duration::from_secs(10)).await;

    // WHEN it changes in DynamoDB (stream → config-refresh → notice)
    put_item(&stack.aws, TABLE, &item, "v2").await.unwrap();
    // THEN the agent serves it within about a second: the notice, since its
    // journal reads are an hour apart while it follows the feed
    let took = served_within(&agent, &alice, FED_KEY, "v2", Duration::from_secs(3)).await;
    eprintln!("write → agent serves it, through the feed: {took:?}");

    // GIVEN a parameter the agent holds
    let gap = demo_item("tenant-a", GAP_KEY).unwrap();
    put_parameter(
        &stack.aws,
        PARAMETER_ROOT,
        &gap,
        "before",
        ParameterKind::String,
    )
    .await
    .unwrap();
    served_within(&agent, &alice, GAP_KEY, "before", Duration::from_secs(10)).await;
    // WHEN it changes and its change is journaled but never announced (the
    // notice lost: the parameter's EventBridge event is not sent, the
    // journal written directly, taking the next sequence number)
    put_parameter(
        &stack.aws,
        PARAMETER_ROOT,
        &gap,
        "after",
        ParameterKind::String,
    )
    .await
    .unwrap();
    let journal = Aws::from_config(stack.aws.clone()).change_journal(JOURNAL_TABLE);
    journal
        .append(&[update_of(&gap, StoreKind::ParameterStore)])
        .await
        .unwrap();
    // THEN the next heartbeat (every 5 s here) shows the agent a head past
    // its mark, and it reads the change from the journal
    let took = served_within(&agent, &alice, GAP_KEY, "after", Duration::from_secs(12)).await;
    eprintln!("lost notice → agent serves it, through heartbeat and journal: {took:?}");
    assert!(
        agent.log_tail().contains("change feed: subscribed"),
        "{}",
        agent.log_tail()
    );
}

#[tokio::test]
async fn a_notice_not_signed_by_config_refresh_changes_nothing() {
    let (stack, agent, alice) = stack_and_agent("forged").await;
    let item = demo_item("tenant-a", FED_KEY).unwrap();
    put_item(&stack.aws, TABLE, &item, "kept").await.unwrap();
    served_within(&agent, &alice, FED_KEY, "kept", Duration::from_secs(10)).await;

    // WHEN someone who can publish on the topic, but holds no signing key
    // config-refresh's agents trust, announces a change with a sequence
    // number far ahead (which would send every agent to the journal)
    let forger = RefreshKey::from_seed("local-1", &[9u8; 32]).unwrap();
    let entry = JournalEntry::new(
        ChangeRecord {
            subject: Subject::Entry(item.clone()),
            store: StoreKind::DynamoDb,
            operation: Operation::Delete,
            change_id: "forged".to_owned(),
            time_unix_ms: unix_ms_now(),
            audit: Default::default(),
            value_type: None,
        },
        unix_ms_now(),
    )
    .with_sequence(1_000_000);
    let forged = notices_of(&[entry], &forger, unix_ms_now()).remove(0);
    let url = stack.setting("CHANGE_FEED_URL").unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let (client, mut events) = AsyncClient::new(MqttOptions::new("forger", "127.0.0.1", port), 8);
    client
        .publish(
            stack.setting("CHANGE_FEED_TOPIC").unwrap(),
            QoS::AtLeastOnce,
            false,
            forged,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
                break;
            }
        }
    })
    .await
    .expect("the broker took the forged notice");

    // THEN the agent drops it, says so, and still serves its value
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.log_tail().contains("change feed: dropped a notice") {
        assert!(Instant::now() < deadline, "{}", agent.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent.log_tail().contains("signature does not match"),
        "{}",
        agent.log_tail()
    );
    let value = agent.get_config(&alice, SERVICE, FED_KEY).await.unwrap();
    assert!(value.contains("kept"), "{value}");
}

/// The next message on `topic` a new subscriber receives (a retained one
/// first), within 10 s.
async fn next_message(port: u16, topic: &str) -> Vec<u8> {
    let mut options = MqttOptions::new(format!("observer-{}", unix_ms_now()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 8);
    client
        .subscribe(topic, QoS::AtMostOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(publish))) = events.poll().await {
                return publish.payload.to_vec();
            }
        }
    })
    .await
    .expect("a message within 10 s")
}

#[tokio::test]
async fn config_refresh_keeps_its_broker_connection_and_replaces_it_when_the_broker_restarts() {
    // GIVEN a broker and config-refresh's publisher, in a process that
    // stays up between invocations (as under cargo lambda watch)
    let broker = Broker::start(16, "debug").await.expect("broker starts");
    let settings = FeedSettings::parse(&broker.url(), None, None).expect("feed settings");
    let publisher = MqttPublisher::new(&settings, "127.0.0.1", broker.port);
    // WHEN it announces twice within the keep-alive
    for notice in [b"first".to_vec(), b"second".to_vec()] {
        publisher.publish(&[notice]).await.expect("published");
    }
    // THEN one connection carried both, and the last is retained
    assert_eq!(publisher.connections_made(), 1);
    assert_eq!(next_message(broker.port, &settings.topic).await, b"second");
    // WHEN the broker restarts where it was (the kept connection is dead)
    let port = broker.port;
    drop(broker);
    let _broker = Broker::start_on(port, 16, "debug")
        .await
        .expect("broker restarts");
    publisher
        .publish(&[b"third".to_vec()])
        .await
        .expect("published on a new connection");
    // THEN the announcement still arrives, on a second connection
    assert_eq!(publisher.connections_made(), 2);
    assert_eq!(next_message(port, &settings.topic).await, b"third");
}
