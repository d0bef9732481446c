//! End to end: moto (SSM, DynamoDB and its stream, Cognito, Cloud Map), real
//! config-agent processes registered in Cloud Map, and config-refresh under
//! `cargo lambda watch`, invoked with Parameter Store Change events and, through
//! the local stack's stream mapping, with DynamoDB stream batches.

use std::time::{Duration, Instant};

use tenant_config_admin::values::{ParameterKind, Target};
use tenant_config_local_stack::seed;
use tenant_config_local_stack::stack::{
    ALICE, BOB, LocalStack, PARAMETER_ROOT, REFRESH_DEADLINE_MS, SERVICE, StackOptions, TABLE,
    demo_item,
};
use tonic::Code;

const KEY: &str = "param_config_endpoint";

async fn stack(agents: usize) -> LocalStack {
    LocalStack::start(StackOptions::with_agents(agents), &|_, _| {})
        .await
        .expect("local stack starts")
}

/// One agent serving Refresh over TLS as deployed (`agent-tls` material).
async fn tls_stack() -> LocalStack {
    LocalStack::start(
        StackOptions {
            agent_tls: true,
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
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

#[tokio::test]
async fn a_dynamodb_write_reaches_every_agent_through_the_stream_with_no_event_sent() {
    // GIVEN three agents that cached tenant A's limits, kept in DynamoDB
    // (their DynamoDB entries live 60 s)
    let stack = stack(3).await;
    let alice = stack.token(ALICE).await.unwrap();
    let key = "tenant_config_limits";
    let old = r#"{"max_users":50,"tier":"gold"}"#;
    for agent in &stack.agents {
        assert_eq!(agent.get_config(&alice, SERVICE, key).await.unwrap(), old);
    }

    // WHEN an operator writes a new value the way tenant-config-admin does
    // (one PutItem), and nothing else
    let target = Target {
        secure_string_key: None,
        table: TABLE.to_owned(),
        parameter_root: PARAMETER_ROOT.to_owned(),
        router: Default::default(),
    };
    let started = Instant::now();
    target
        .put(
            &stack.aws,
            &demo_item("tenant-a", key).unwrap(),
            r#"{"max_users":75,"tier":"gold"}"#,
            ParameterKind::String,
        )
        .await
        .unwrap();

    // THEN the stream delivers the change to config-refresh, and every agent
    // serves the new value within seconds, far inside its cache TTL
    let new = r#"{"max_users":75,"tier":"gold"}"#;
    for agent in &stack.agents {
        loop {
            let value = agent.get_config(&alice, SERVICE, key).await.unwrap();
            if value == new {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{} still serves {value} after {:?}",
                agent.name,
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let took = started.elapsed();
    assert!(
        stack.stream.invocations() >= 1,
        "the change came through the stream"
    );
    eprintln!(
        "PutItem → all 3 agents serve the new value: {} ms",
        took.as_millis()
    );
    // AND tenant B's entry of the same key was not touched
    let bob = stack.token(BOB).await.unwrap();
    assert_eq!(
        stack.agents[0]
            .get_config(&bob, SERVICE, key)
            .await
            .unwrap(),
        r#"{"max_users":5,"tier":"free"}"#
    );
}

#[tokio::test]
async fn a_crashed_agent_that_stays_registered_is_marked_unhealthy_and_stops_costing_a_deadline() {
    // GIVEN two agents, and config-refresh marking an agent after two
    // consecutive failed deliveries (defaults: three over a minute)
    let mut stack = LocalStack::start(
        StackOptions {
            settings: &[("STALE_AFTER_FAILURES", "2"), ("STALE_MIN_AGE_SECS", "0")],
            ..StackOptions::with_agents(2)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let crashed = stack.agents[0].instance_id.clone();
    // WHEN one crashes without deregistering
    stack.agents[0].kill();
    assert!(
        seed::discovered_instance_ids(&stack.aws, &stack.cloud_map)
            .await
            .unwrap()
            .contains(&crashed)
    );
    // THEN the first change fails on it (Lambda retries, the DLQ keeps it)
    let first = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap();
    assert!(first.is_err(), "{first:?}");
    // AND the second marks it UNHEALTHY and succeeds
    let second = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap();
    assert!(second.is_ok(), "{second:?}");
    assert!(
        !seed::discovered_instance_ids(&stack.aws, &stack.cloud_map)
            .await
            .unwrap()
            .contains(&crashed),
        "no longer discovered as healthy"
    );
    // AND later changes reach the live agent without waiting on the dead one
    let started = Instant::now();
    let third = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap()
        .expect("delivered");
    assert_eq!(third["instances"], 1, "{third}");
    assert!(
        started.elapsed() < Duration::from_millis(REFRESH_DEADLINE_MS),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_address_registered_outside_the_agents_networks_gets_no_refresh() {
    // GIVEN two agents, and an instance registered at a public address (what
    // a host holding an agent's role could do), healthy in Cloud Map
    let stack = stack(2).await;
    seed::register_instance(
        &stack.aws,
        &stack.cloud_map,
        "planted",
        "203.0.113.9:50051".parse().unwrap(),
    )
    .await
    .unwrap();
    assert!(
        seed::discovered_instance_ids(&stack.aws, &stack.cloud_map)
            .await
            .unwrap()
            .contains(&"planted".to_owned())
    );
    // WHEN a change is pushed
    let result = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap();
    // THEN only the two agents in AGENT_NETWORKS (loopback here) are sent
    // the Refresh, and the invocation succeeds without waiting on the stranger
    let summary = result.expect("refresh succeeds");
    assert_eq!(summary["instances"], 2, "{summary}");
    assert_eq!(summary["status"], "delivered", "{summary}");
}

/// A Refresh for tenant A's endpoint, signed with `key` (or unsigned) for the
/// agent at `endpoint` (an agent process's Refresh port), sent straight there.
async fn signed_refresh(
    endpoint: &str,
    key: Option<&tenant_config_shared::refresh::signing::RefreshKey>,
    event_id: &str,
) -> Result<(), tonic::Status> {
    let target = endpoint.trim_start_matches("http://").to_owned();
    signed_refresh_for(endpoint, &target, key, event_id).await
}

/// The same, signed for the agent at `target` ("ip:port") whatever agent
/// `endpoint` is.
async fn signed_refresh_for(
    endpoint: &str,
    target: &str,
    key: Option<&tenant_config_shared::refresh::signing::RefreshKey>,
    event_id: &str,
) -> Result<(), tonic::Status> {
    use tenant_config_shared::refresh::proto::config_refresh_client::ConfigRefreshClient;
    use tenant_config_shared::refresh::proto::{Operation, RefreshRequest};
    use tenant_config_shared::refresh::signing::{
        SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, unix_ms_now,
    };
    let request = RefreshRequest {
        tenant_id: "tenant-a".into(),
        service: SERVICE.into(),
        key: KEY.into(),
        operation: Operation::Update as i32,
        event_id: event_id.into(),
        event_time_unix_ms: unix_ms_now(),
        value_type: String::new(),
        target: target.to_owned(),
    };
    let mut call = tonic::Request::new(request.clone());
    if let Some(key) = key {
        let (timestamp, signature) = sign(key, &request, unix_ms_now());
        call.metadata_mut()
            .insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
        call.metadata_mut()
            .insert(SIGNATURE_HEADER, signature.parse().unwrap());
    }
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ConfigRefreshClient::new(channel)
        .refresh(call)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn agents_verify_refreshes_with_public_keys_and_a_signing_key_rotates_without_a_flag_day() {
    use tenant_config_shared::refresh::signing::RefreshKey;
    // GIVEN the stack (config-refresh signs with local-1) and an agent process
    // that trusts local-1 and the next key, k2 (step 1 of a rotation)
    let stack = stack(0).await;
    let alice = stack.token(ALICE).await.unwrap();
    let current = stack.setting("REFRESH_PUBLIC_KEYS").unwrap();
    let (next, _) = RefreshKey::generate("k2").unwrap();
    let mut env = stack.env.clone();
    env.retain(|(name, _)| name != "REFRESH_PUBLIC_KEYS");
    env.push((
        "REFRESH_PUBLIC_KEYS".into(),
        format!("{current},{}", next.public_entry()),
    ));
    let mut agent = tenant_config_local_stack::agent::AgentProcess::start("rotating", &env)
        .await
        .unwrap();
    let target = Target {
        secure_string_key: None,
        table: TABLE.to_owned(),
        parameter_root: PARAMETER_ROOT.to_owned(),
        router: Default::default(),
    };
    let item = tenant_config_shared::ItemKey::parse("tenant-a", SERVICE, KEY).unwrap();
    let serves = |expected: &'static str| {
        let (agent, alice) = (&agent, &alice);
        async move {
            assert_eq!(
                agent.get_config(alice, SERVICE, KEY).await.unwrap(),
                format!("\"{expected}\"")
            );
        }
    };
    serves("https://billing.tenant-a.example").await;

    // WHEN a Refresh arrives signed by a key the agent was never given, or
    // unsigned, THEN it is UNAUTHENTICATED and the cache stays
    target
        .put(
            &stack.aws,
            &item,
            "https://v2.example",
            ParameterKind::String,
        )
        .await
        .unwrap();
    let (stranger, _) = RefreshKey::generate("k9").unwrap();
    for key in [Some(&stranger), None] {
        let refused = signed_refresh(&agent.refresh_endpoint(), key, "evt-foreign")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    serves("https://billing.tenant-a.example").await;

    // WHEN config-refresh pushes with the current key THEN the agent applies it
    let pushed = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap();
    assert!(pushed.is_ok(), "{pushed:?}");
    serves("https://v2.example").await;

    // AND a Refresh signed with the next key is accepted too (step 2: the
    // signer can switch to k2 while agents still trust both)
    target
        .put(
            &stack.aws,
            &item,
            "https://v3.example",
            ParameterKind::String,
        )
        .await
        .unwrap();
    signed_refresh(&agent.refresh_endpoint(), Some(&next), "evt-next")
        .await
        .unwrap();
    serves("https://v3.example").await;

    // WHEN the old key is dropped from the agent (step 3), a push still
    // signed with it is refused: config-refresh's invocation fails naming it
    assert!(agent.stop_gracefully().unwrap(), "left Cloud Map cleanly");
    let mut env = stack.env.clone();
    env.retain(|(name, _)| name != "REFRESH_PUBLIC_KEYS");
    env.push(("REFRESH_PUBLIC_KEYS".into(), next.public_entry()));
    let only_next = tenant_config_local_stack::agent::AgentProcess::start("rotated", &env)
        .await
        .unwrap();
    let refused = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap();
    let error = refused.expect_err("the agent no longer trusts local-1");
    assert!(error.contains(&only_next.instance_id), "{error}");
    signed_refresh(&only_next.refresh_endpoint(), Some(&next), "evt-after")
        .await
        .unwrap();
}

#[tokio::test]
async fn callers_and_config_refresh_reach_the_agent_on_separate_listeners_with_bounded_requests() {
    use tenant_config_shared::refresh::proto::GetConfigsRequest;
    use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
    let stack = stack(1).await;
    let agent = &stack.agents[0];
    let alice = stack.token(ALICE).await.unwrap();
    let connect = |endpoint: String| async move {
        tonic::transport::Endpoint::from_shared(endpoint)
            .unwrap()
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap()
    };
    // GIVEN an agent process: readers on one loopback port, Refresh on another
    assert_ne!(agent.port, agent.refresh_port);
    // WHEN a Refresh is sent to the readers' port, or a read to the Refresh
    // port, THEN neither service is there
    let (key, _) = tenant_config_shared::refresh::signing::RefreshKey::generate("k").unwrap();
    let on_reader_port = signed_refresh(&agent.endpoint(), Some(&key), "evt-misplaced").await;
    assert_eq!(on_reader_port.unwrap_err().code(), Code::Unimplemented);
    let mut reader_on_refresh_port =
        ConfigReaderClient::new(connect(agent.refresh_endpoint()).await);
    let mut call = tonic::Request::new(GetConfigsRequest {
        service: SERVICE.into(),
        keys: vec![KEY.into()],
    });
    call.metadata_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let misplaced = reader_on_refresh_port.get_configs(call).await.unwrap_err();
    assert_eq!(misplaced.code(), Code::Unimplemented, "{misplaced:?}");
    // AND a request larger than any real one (64 KiB) is refused unread
    let mut reader = ConfigReaderClient::new(connect(agent.endpoint()).await);
    let mut huge = tonic::Request::new(GetConfigsRequest {
        service: SERVICE.into(),
        keys: vec!["k".repeat(100 * 1024)],
    });
    huge.metadata_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let refused = reader.get_configs(huge).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
}

#[tokio::test]
async fn refresh_calls_travel_over_tls_and_plaintext_or_untrusted_clients_get_nothing() {
    // GIVEN a stack as deployed: agent-tls wrote a CA, the agents'
    // certificate and key to Parameter Store; the agent got the certificate
    // and key as ECS hands them over, config-refresh reads the CA parameter
    let stack = tls_stack().await;
    let alice = stack.token(ALICE).await.unwrap();
    let agent = &stack.agents[0];
    assert_eq!(
        agent.get_config(&alice, SERVICE, KEY).await.unwrap(),
        "\"https://billing.tenant-a.example\""
    );
    // WHEN a parameter changes and the event is sent
    stack
        .put_parameter("tenant-a", KEY, "https://tls.example")
        .await
        .unwrap();
    let pushed = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap()
        .expect("the push over TLS succeeds");
    // THEN it was delivered over TLS and the agent serves the new value
    assert_eq!(pushed["instances"], 1, "{pushed}");
    assert_eq!(pushed["status"], "delivered", "{pushed}");
    assert_eq!(
        agent.get_config(&alice, SERVICE, KEY).await.unwrap(),
        "\"https://tls.example\""
    );
    // AND a plaintext client gets no answer from the Refresh port
    let (key, _) = tenant_config_shared::refresh::signing::RefreshKey::generate("k").unwrap();
    assert!(
        signed_refresh(&agent.refresh_endpoint(), Some(&key), "evt-plain")
            .await
            .is_err()
    );
    // AND a client that trusts another CA cannot connect at all
    let untrusted = tonic::transport::Endpoint::from_shared(
        agent.refresh_endpoint().replace("http://", "https://"),
    )
    .unwrap()
    .tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(include_str!(
                "../../testkit/fixtures/tls/other-ca.pem"
            )))
            .domain_name("config-agent.tenant-config.internal"),
    )
    .unwrap()
    .connect_timeout(Duration::from_secs(2))
    .connect()
    .await;
    assert!(untrusted.is_err(), "a client trusting another CA connected");
}

#[tokio::test]
async fn a_warm_config_refresh_trusts_a_rotated_ca_once_it_reads_the_bundle_again() {
    use tenant_config_admin::agent_tls::{self, AgentTlsParameters};
    use tenant_config_local_stack::stack::AGENT_TLS_PATH;
    use tenant_config_shared::refresh::agent_tls::{AgentTransport, TlsCaSource};
    use tenant_config_shared::refresh::discovery::Instance;
    use tenant_config_shared::refresh::fanout::{FanoutSettings, FanoutSource};
    use tenant_config_shared::refresh::key::{CA_REFRESH_INTERVAL, KeyLoadingFanout};
    use tenant_config_shared::settings::DEFAULT_AGENT_TLS_DOMAIN;
    // GIVEN an agent on TLS as deployed, and two warm fan-outs built as
    // config-refresh builds its own: one that reads the CA bundle again at
    // once, one that waits its minute
    let stack = tls_stack().await;
    let ssm = aws_sdk_ssm::Client::new(&stack.aws);
    let parameters = AgentTlsParameters::under(AGENT_TLS_PATH);
    let fanout = |interval: Duration| {
        KeyLoadingFanout::new(
            ssm.clone(),
            tenant_config_local_stack::stack::REFRESH_KEY_PARAMETER,
            PARAMETER_ROOT,
            FanoutSettings::default(),
            AgentTransport::Tls {
                ca: TlsCaSource::Parameter(parameters.ca.clone()),
                domain: DEFAULT_AGENT_TLS_DOMAIN.to_owned(),
            },
        )
        .with_ca_refresh_interval(interval)
    };
    let (eager, warm) = (fanout(Duration::ZERO), fanout(CA_REFRESH_INTERVAL));
    eager.load().await.unwrap();
    warm.load().await.unwrap();

    // WHEN the material is rotated (no wait) and an agent starts with the new identity
    agent_tls::put(
        &ssm,
        AGENT_TLS_PATH,
        DEFAULT_AGENT_TLS_DOMAIN,
        1,
        true,
        Duration::ZERO,
    )
    .await
    .unwrap();
    let mut env = stack.agents[0].environment().unwrap();
    env.retain(|(name, _)| name != "AGENT_TLS_PEM");
    env.push((
        "AGENT_TLS_PEM".to_owned(),
        agent_tls::read_agent_identity(&ssm, &parameters)
            .await
            .unwrap(),
    ));
    let rolled = tenant_config_local_stack::agent::AgentProcess::start("rolled", &env)
        .await
        .expect("an agent starts with the rotated identity");
    let instances = [
        Instance {
            id: "old".to_owned(),
            address: ([127, 0, 0, 1], stack.agents[0].refresh_port).into(),
        },
        Instance {
            id: "rolled".to_owned(),
            address: ([127, 0, 0, 1], rolled.refresh_port).into(),
        },
    ];
    let change = tenant_config_admin::verify::probe_change("rotation").unwrap();

    // THEN the fan-out that read the bundle again reaches both agents: the
    // new CA is trusted and the old one kept
    let report = eager
        .fanout()
        .await
        .unwrap()
        .send(&instances, &change)
        .await;
    assert_eq!(report.ok, 2, "{report:?}");
    // AND one still inside its interval refuses the new certificate, which
    // is why agent-tls waits longer than the interval before writing it
    let report = warm.fanout().await.unwrap().send(&instances, &change).await;
    assert_eq!(report.acknowledged, vec!["old".to_owned()], "{report:?}");
}

#[tokio::test]
async fn without_the_agents_ca_config_refresh_pushes_nothing_in_plaintext_and_readers_catch_up() {
    // GIVEN agents serving Refresh over TLS, and config-refresh whose CA
    // parameter does not exist (agent-tls not run yet)
    let stack = LocalStack::start(
        StackOptions {
            agent_tls: true,
            settings: &[("REFRESH_TLS_CA_PARAMETER", "/tenant-config/no-such-ca")],
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
    .await
    .expect("config-refresh starts without the agents' CA");
    let alice = stack.token(ALICE).await.unwrap();
    let agent = &stack.agents[0];
    assert_eq!(
        agent.get_config(&alice, SERVICE, KEY).await.unwrap(),
        "\"https://billing.tenant-a.example\""
    );
    // WHEN a parameter changes
    stack
        .put_parameter("tenant-a", KEY, "https://no-ca.tenant-a.example")
        .await
        .unwrap();
    let changed = Instant::now();
    let answer = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap()
        .expect("a change without a push is not a failure to retry");
    // THEN it is journaled, not pushed (never in plaintext), and the answer says why
    assert_eq!(answer["status"], "journaled_not_pushed", "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("no-such-ca"),
        "{answer}"
    );
    // AND the agent catches up from the journal all the same
    let new = "\"https://no-ca.tenant-a.example\"";
    while agent.get_config(&alice, SERVICE, KEY).await.unwrap() != new {
        assert!(changed.elapsed() < Duration::from_secs(8), "no catch-up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stack.watch.log_tail().contains("\"UnpushedChanges\":1"));
}

#[test]
fn an_agent_without_a_refresh_certificate_refuses_to_start_unless_plaintext_is_chosen() {
    // GIVEN every setting an agent needs but a certificate for Refresh
    let key = tenant_config_shared::refresh::signing::RefreshKey::generate("k1")
        .unwrap()
        .0
        .public_entry();
    let run = |extra: &[(&str, &str)]| {
        let mut command =
            std::process::Command::new(tenant_config_local_stack::agent::agent_binary());
        command
            .env_clear()
            .env(
                "COGNITO_ISSUER",
                "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_X",
            )
            .env("COGNITO_CLIENT_IDS", "client")
            .env("CONFIG_TABLE_NAME", "t")
            .env("REFRESH_PUBLIC_KEYS", &key)
            .env("CLOUD_MAP_REGISTER", "false")
            .env("AGENT_LISTEN_ADDR", "127.0.0.1:0")
            .env("AGENT_REFRESH_LISTEN_ADDR", "127.0.0.1:1")
            .env("AWS_REGION", "us-east-1")
            .envs(extra.iter().copied());
        command.output().expect("config-agent runs")
    };
    // WHEN the agent starts THEN it stops at once, naming what is missing
    let refused = run(&[]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.contains("AGENT_TLS_CERT_FILE") && said.contains("REFRESH_PLAINTEXT=allow"),
        "{said}"
    );
    // AND a misspelt opt-out is refused, not taken for plaintext
    let misspelt = run(&[("REFRESH_PLAINTEXT", "true")]);
    assert!(!misspelt.status.success());
    assert!(String::from_utf8_lossy(&misspelt.stdout).contains("REFRESH_PLAINTEXT"));
}

#[tokio::test]
async fn without_its_signing_key_config_refresh_still_journals_and_every_reader_catches_up() {
    // GIVEN config-refresh whose signing key parameter does not exist (the
    // runbook's first step skipped), and an agent and config-api that cached
    // tenant A's endpoint (no change feed: without the key it could not sign
    // either, and a fed agent waits out the feed's silence limit; see
    // docs/design.md, freshness bounds)
    let stack = LocalStack::start(
        StackOptions {
            settings: &[
                ("REFRESH_KEY_PARAMETER", "/tenant-config/no-such-key"),
                ("CHANGE_FEED_URL", ""),
            ],
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
    .await
    .expect("config-refresh starts without its key");
    let alice = stack.token(ALICE).await.unwrap();
    let agent = &stack.agents[0];
    let old = "\"https://billing.tenant-a.example\"";
    assert_eq!(agent.get_config(&alice, SERVICE, KEY).await.unwrap(), old);
    let api_path = format!("/v1/config/{SERVICE}/{KEY}");
    let cached = stack.get(&api_path, Some(&alice)).await.unwrap();
    assert_eq!(cached.body["value"], "https://billing.tenant-a.example");

    // WHEN the parameter changes and EventBridge delivers the change
    stack
        .put_parameter("tenant-a", KEY, "https://keyless.tenant-a.example")
        .await
        .unwrap();
    let changed = Instant::now();
    let answer = stack
        .send_change_event("Update", &parameter_name("tenant-a"))
        .await
        .unwrap()
        .expect("a change without a push is not a failure to retry");

    // THEN config-refresh says it journaled the change and pushed nothing, and why
    assert_eq!(answer["status"], "journaled_not_pushed", "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("no-such-key"),
        "{answer}"
    );
    // AND the agent (no push reached it) and config-api catch up from the
    // journal within their catch-up intervals (2 s and 1 s, plus slack)
    let new = "\"https://keyless.tenant-a.example\"";
    loop {
        let agent_value = agent.get_config(&alice, SERVICE, KEY).await.unwrap();
        let api_value = stack.get(&api_path, Some(&alice)).await.unwrap().body["value"].clone();
        if agent_value == new && api_value == "https://keyless.tenant-a.example" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(8),
            "agent {agent_value}, config-api {api_value} after {:?}",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // AND config-refresh counted the unpushed change for its alarm
    let logs = stack.watch.log_tail();
    assert!(
        logs.contains("\"UnpushedChanges\":1"),
        "no UnpushedChanges metric in config-refresh's output:\n{logs}"
    );
}

#[tokio::test]
async fn a_refresh_signed_for_one_agent_is_refused_by_every_other() {
    // GIVEN two agents, and a Refresh config-refresh signed for the first
    // (as captured on the wire)
    let stack = stack(2).await;
    let (first, second) = (&stack.agents[0], &stack.agents[1]);
    let key = tenant_config_shared::refresh::key::load_refresh_key(
        &aws_sdk_ssm::Client::new(&stack.aws),
        tenant_config_local_stack::stack::REFRESH_KEY_PARAMETER,
        PARAMETER_ROOT,
    )
    .await
    .expect("config-refresh's key");
    let for_first = first
        .refresh_endpoint()
        .trim_start_matches("http://")
        .to_owned();
    // WHEN it is replayed to the second agent, inside the replay window
    let replayed =
        signed_refresh_for(&second.refresh_endpoint(), &for_first, Some(&key), "evt-x").await;
    // THEN the second refuses it, naming the agent it was signed for
    let refused = replayed.expect_err("a call signed for another agent is refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains(&for_first), "{refused:?}");
    // AND the first accepts it
    signed_refresh_for(&first.refresh_endpoint(), &for_first, Some(&key), "evt-x")
        .await
        .expect("the agent it was signed for accepts it");
}
