//! The agent's stop sequence, in process: a real SIGTERM, a real gRPC server
//! with a call in flight, and a registration that records what the agent did
//! and what its health check said at that moment.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tenant_config_shared::StoreKind;
use tenant_config_shared::agent::lifecycle::{
    Listeners, ShutdownSignal, Stopped, serve_until_stopped,
};
use tenant_config_shared::refresh::discovery::{AgentRegistration, DiscoveryError};
use tenant_config_shared::refresh::proto::GetConfigRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::agent::{hour_long_reads, server, trusted_keys};
use tenant_config_testkit::identity::{token, verifier};
use tenant_config_testkit::values::{item, plain};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How long the store takes to answer: the in-flight call the stop must drain.
const STORE_LATENCY: Duration = Duration::from_millis(400);

/// Records deregistration and the agent's health status as seen from outside
/// at that moment.
struct RecordingRegistration {
    address: SocketAddr,
    events: Mutex<Vec<String>>,
}

#[async_trait]
impl AgentRegistration for RecordingRegistration {
    fn instance_id(&self) -> &str {
        "agent-under-test"
    }

    async fn report_healthy(&self) {
        self.events.lock().unwrap().push("reported healthy".into());
    }

    async fn deregister(&self) -> Result<(), DiscoveryError> {
        let health = health_status(self.address).await;
        self.events
            .lock()
            .unwrap()
            .push(format!("deregistered while health = {health}"));
        Ok(())
    }
}

async fn health_status(address: SocketAddr) -> String {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return "unreachable".into();
    };
    let mut client = HealthClient::new(channel);
    match client
        .check(HealthCheckRequest {
            service: "tenantconfig.v1.ConfigReader".into(),
        })
        .await
    {
        Ok(answer) => format!("{:?}", answer.into_inner().status()),
        Err(status) => format!("error {:?}", status.code()),
    }
}

/// A slow store behind a listener; returns the listener, its address and the
/// server to run on it.
async fn slow_agent() -> (
    TcpListener,
    SocketAddr,
    tenant_config_shared::agent::server::AgentServer,
) {
    let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    store.put(
        &item("tenant-a", "billing", "param_config_endpoint"),
        plain(json!("https://a/v1")),
    );
    store.set_latency(STORE_LATENCY);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = server(verifier(), hour_long_reads(store), trusted_keys()).await;
    (listener, address, server)
}

/// Starts a GetConfig that takes [`STORE_LATENCY`] to answer.
fn call_in_flight(address: SocketAddr) -> tokio::task::JoinHandle<Result<String, tonic::Status>> {
    tokio::spawn(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = ConfigReaderClient::new(channel);
        let mut request = tonic::Request::new(GetConfigRequest {
            service: "billing".into(),
            key: "param_config_endpoint".into(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token("tenant-a")).parse().unwrap(),
        );
        let answer = client.get_config(request).await?.into_inner();
        Ok(answer.value.unwrap().value_json)
    })
}

#[tokio::test]
async fn sigterm_reports_not_serving_then_deregisters_then_drains_and_returns_ok() {
    // GIVEN a registered agent with a call in flight
    let (listener, address, server) = slow_agent().await;
    let registration = Arc::new(RecordingRegistration {
        address,
        events: Mutex::new(Vec::new()),
    });
    let stop = ShutdownSignal::listen().unwrap();
    let running = {
        let registration = registration.clone();
        tokio::spawn(async move {
            serve_until_stopped(
                server,
                Listeners::One(listener),
                Some(registration.as_ref() as &dyn AgentRegistration),
                stop.recv(),
                Duration::from_secs(5),
                Duration::from_secs(3600),
            )
            .await
        })
    };
    assert_eq!(health_status(address).await, "Serving");
    let in_flight = call_in_flight(address);
    tokio::time::sleep(STORE_LATENCY / 4).await;

    // WHEN the orchestrator sends SIGTERM
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own pid; the handler is installed by ShutdownSignal.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    let stopped = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the agent stops within its grace period")
        .unwrap();

    // THEN it said NOT_SERVING before it deregistered, finished the call in
    // flight, and returned Ok (the process exits 0)
    assert_eq!(
        *registration.events.lock().unwrap(),
        vec!["deregistered while health = NotServing".to_owned()]
    );
    assert_eq!(in_flight.await.unwrap().unwrap(), "\"https://a/v1\"");
    assert!(matches!(stopped, Ok(Stopped::Drained)), "{stopped:?}");
    assert!(signalled.elapsed() < Duration::from_secs(2));
    // AND it no longer accepts connections
    assert_eq!(health_status(address).await, "unreachable");
}

#[tokio::test]
async fn a_call_longer_than_the_grace_period_does_not_hold_the_stop() {
    let (listener, address, server) = slow_agent().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grace = STORE_LATENCY / 4;
    let running = tokio::spawn(serve_until_stopped(
        server,
        Listeners::One(listener),
        None,
        async move {
            let _ = stopped.await;
            "test"
        },
        grace,
        Duration::from_secs(3600),
    ));
    let _in_flight = call_in_flight(address);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    stop.send(()).unwrap();
    let outcome = running.await.unwrap();

    assert!(matches!(outcome, Ok(Stopped::GraceExpired)), "{outcome:?}");
    assert!(
        started.elapsed() < STORE_LATENCY,
        "stopped after the grace period, not after the call: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_serving_agent_re_reports_healthy_on_its_heartbeat() {
    // GIVEN a registered agent with a 50 ms heartbeat
    let (listener, address, server) = slow_agent().await;
    let registration = Arc::new(RecordingRegistration {
        address,
        events: Mutex::new(Vec::new()),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let registration = registration.clone();
        tokio::spawn(async move {
            serve_until_stopped(
                server,
                Listeners::One(listener),
                Some(registration.as_ref() as &dyn AgentRegistration),
                async move {
                    let _ = stopped.await;
                    "test"
                },
                Duration::from_secs(1),
                Duration::from_millis(50),
            )
            .await
        })
    };
    // WHEN it serves for a quarter of a second
    tokio::time::sleep(Duration::from_millis(260)).await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    // THEN it said HEALTHY several times (as one marked UNHEALTHY while
    // paused would, once back), and deregistered last
    let events = registration.events.lock().unwrap().clone();
    let reports = events.iter().filter(|e| *e == "reported healthy").count();
    assert!(reports >= 3, "{events:?}");
    assert!(
        events.last().unwrap().starts_with("deregistered"),
        "{events:?}"
    );
}
