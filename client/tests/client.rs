//! The client against a real agent server (in-process, over in-memory stores
//! and journal): typed reads from memory, changes as the agent learns them,
//! a resumed stream after the agent restarts, refusals, secrets, and the
//! OpenFeature provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use open_feature::{EvaluationErrorCode, EvaluationReason, OpenFeature};
use serde_json::{Value, json};
use tenant_config_client::{ClientError, ConfigClient, ConfigProvider, ReadError, StaticToken};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::catch_up::{CatchUp, CatchUpSettings};
use tenant_config_shared::domain::{Changed, Found, SecretValue};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::refresh::journal::MemoryJournal;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::watch::ChangeFeed;
use tenant_config_shared::{ItemKey, StoreKind};
use tenant_config_testkit::agent::{HOUR_LONG_CACHE, TestAgent, secrets_server, trusted_keys};
use tenant_config_testkit::identity::{token, verifier};
use tenant_config_testkit::values::{item, plain};

const BETA: &str = "tenant_config_beta";
const SEATS: &str = "tenant_config_max_seats";
const RATIO: &str = "tenant_config_sample_ratio";
const PLAN: &str = "tenant_config_plan";
const LIMITS: &str = "tenant_config_limits";
const SECRET: &str = "param_config_db_password";

struct Stores {
    dynamodb: Arc<MemoryStore>,
    parameters: Arc<MemoryStore>,
    journal: Arc<MemoryJournal>,
}

impl Stores {
    fn new() -> Self {
        let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
        for (key, value) in [
            (BETA, json!(true)),
            (SEATS, json!(25)),
            (RATIO, json!(0.25)),
            (PLAN, json!("gold")),
            (LIMITS, json!({"rps": 100, "burst": [1, 2]})),
        ] {
            dynamodb.put(&item("tenant-a", "billing", key), plain(value));
        }
        let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
        parameters.put(
            &item("tenant-a", "billing", SECRET),
            Found::Secret(Some(SecretValue::new(json!("pa55"), Some(2)))),
        );
        Self {
            dynamodb,
            parameters,
            journal: Arc::new(MemoryJournal::new()),
        }
    }

    /// An agent over these stores, with a 200 ms catch-up.
    async fn agent_on(&self, address: &str) -> (TestAgent, ConfigReads) {
        let reads = ConfigReads::new(
            KeyRouter::default(),
            CachedStore::new(self.dynamodb.clone(), HOUR_LONG_CACHE),
            CachedStore::new(self.parameters.clone(), HOUR_LONG_CACHE),
        )
        .with_catch_up(CatchUp::new(
            self.journal.clone(),
            CatchUpSettings {
                interval: Duration::from_millis(200),
                ..CatchUpSettings::AGENT
            },
        ))
        .with_change_feed(Arc::new(ChangeFeed::default()));
        let agent = TestAgent::serve_on(
            address,
            secrets_server(verifier(), reads.clone(), trusted_keys()).await,
        )
        .await;
        (agent, reads)
    }

    /// A change written to the store and journaled (no push).
    async fn journal_only(&self, item: &ItemKey, value: Value) {
        tenant_config_testkit::values::journal_only(
            &self.dynamodb,
            self.journal.as_ref(),
            item,
            value,
        )
        .await;
    }
}

async fn client(agent: &TestAgent) -> ConfigClient {
    ConfigClient::builder(agent.endpoint(), "billing")
        .token(StaticToken(token("tenant-a")))
        .connect()
        .await
        .expect("the client connects")
}

#[tokio::test]
async fn reads_are_typed_from_memory_and_each_change_arrives_as_the_agent_learns_it() {
    // GIVEN a client of tenant-a's billing service
    let stores = Stores::new();
    let (agent, reads) = stores.agent_on("127.0.0.1:0").await;
    let config = client(&agent).await;

    // THEN every value is there, typed
    assert!(config.get_bool(BETA).unwrap());
    assert_eq!(config.get_i64(SEATS).unwrap(), 25);
    assert_eq!(config.get_f64(RATIO).unwrap(), 0.25);
    assert_eq!(config.get_f64(SEATS).unwrap(), 25.0, "an integer widens");
    assert_eq!(&*config.get_str(PLAN).unwrap(), "gold");
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Limits {
        rps: u32,
        burst: Vec<u8>,
    }
    assert_eq!(
        config.get_as::<Limits>(LIMITS).unwrap(),
        Limits {
            rps: 100,
            burst: vec![1, 2]
        }
    );
    // AND wrong types, missing keys and secrets say so
    assert!(matches!(
        config.get_i64(PLAN),
        Err(ReadError::TypeMismatch {
            expected: "integer",
            found: "string",
            ..
        })
    ));
    assert!(matches!(
        config.get_bool("tenant_config_nope"),
        Err(ReadError::NotFound(_))
    ));
    assert!(matches!(
        config.get_str(SECRET),
        Err(ReadError::Sensitive(_))
    ));
    assert!(config.status().connected);

    // WHEN a change is pushed to the agent
    let mut changes = config.changes();
    let pushed_at = Instant::now();
    stores
        .dynamodb
        .put(&item("tenant-a", "billing", SEATS), plain(json!(30)));
    reads
        .invalidate_subject(
            &Subject::Entry(item("tenant-a", "billing", SEATS)),
            Changed::Updated(None),
        )
        .await
        .unwrap();
    // THEN the client's subscribers hear it within 100 ms, and reads serve it
    let change = tokio::time::timeout(Duration::from_millis(100), changes.recv())
        .await
        .expect("the change arrives within 100 ms")
        .unwrap();
    assert_eq!(change.key, SEATS);
    assert_eq!(config.get_i64(SEATS).unwrap(), 30);
    eprintln!("pushed change applied in {:?}", pushed_at.elapsed());

    // WHEN a change is only journaled (its push lost)
    stores
        .journal_only(&item("tenant-a", "billing", PLAN), json!("platinum"))
        .await;
    // THEN the agent's catch-up finds it and the client gets it
    let change = tokio::time::timeout(Duration::from_secs(2), changes.recv())
        .await
        .expect("the journaled change arrives")
        .unwrap();
    assert_eq!(change.key, PLAN);
    assert_eq!(&*config.get_str(PLAN).unwrap(), "platinum");
}

#[tokio::test]
async fn after_the_agent_restarts_the_client_resumes_and_misses_no_change() {
    // GIVEN a client of an agent on a fixed port
    let stores = Stores::new();
    let (agent, _) = stores.agent_on("127.0.0.1:0").await;
    let address = agent.address;
    let config = client(&agent).await;
    let mut changes = config.changes();

    // WHEN the agent stops, a change is made while it is down, and it comes back
    drop(agent);
    let down = config.wait_for(|status| !status.connected).await;
    assert!(down.last_error.is_some(), "{down:?}");
    stores
        .journal_only(&item("tenant-a", "billing", SEATS), json!(99))
        .await;
    assert_eq!(
        config.get_i64(SEATS).unwrap(),
        25,
        "while the agent is down, reads answer the values last received"
    );
    let agent = loop {
        // The old listener may take a moment to close.
        if std::net::TcpListener::bind(address).is_ok() {
            break stores.agent_on(&address.to_string()).await.0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // THEN the client reconnects, resumes from its position and gets the change
    let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("the change made while the agent was down arrives")
        .unwrap();
    assert_eq!(change.key, SEATS);
    assert_eq!(config.get_i64(SEATS).unwrap(), 99);
    let status = config.status();
    assert!(status.connected && status.reconnects >= 1, "{status:?}");
    // AND it resumed: what it missed was replayed, no snapshot sent again
    assert_eq!(status.snapshots, 1, "{status:?}");
    drop(agent);
}

#[tokio::test]
async fn a_reconnect_with_nothing_missed_is_connected_and_caught_up() {
    // GIVEN a client whose agent restarts while nothing changes
    let stores = Stores::new();
    let (agent, _) = stores.agent_on("127.0.0.1:0").await;
    let address = agent.address;
    let config = client(&agent).await;
    let before = config.status().position.clone().expect("a position");
    drop(agent);
    config.wait_for(|status| !status.connected).await;
    let _agent = loop {
        if std::net::TcpListener::bind(address).is_ok() {
            break stores.agent_on(&address.to_string()).await.0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // THEN it is connected again, told it is caught up (a progress), with
    // no snapshot and every value as it was
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        config.wait_for(|status| status.connected && status.position.as_ref() != Some(&before)),
    )
    .await
    .expect("connected again, at a position the agent sent after the resume");
    assert_eq!(status.snapshots, 1, "{status:?}");
    assert!(config.connected());
    assert_eq!(config.get_i64(SEATS).unwrap(), 25);
}

#[tokio::test]
async fn refusals_that_a_retry_cannot_mend_are_returned_at_once() {
    let stores = Stores::new();
    let (agent, _) = stores.agent_on("127.0.0.1:0").await;
    let connect = |service: &'static str, token: String| {
        ConfigClient::builder(agent.endpoint(), service)
            .token(StaticToken(token))
            .ready_timeout(Duration::from_secs(5))
            .connect()
    };
    // WHEN the token is forged, or the service name is not one
    let started = Instant::now();
    let forged = connect("billing", format!("{}x", token("tenant-a"))).await;
    let bad_service = connect("Billing!", token("tenant-a")).await;
    // THEN each is refused with its reason, well before the ready timeout
    assert!(
        matches!(
            &forged,
            Err(ClientError::Refused {
                code: tonic::Code::Unauthenticated,
                ..
            })
        ),
        "{:?}",
        forged.err()
    );
    assert!(
        matches!(
            &bad_service,
            Err(ClientError::Refused {
                code: tonic::Code::InvalidArgument,
                ..
            })
        ),
        "{:?}",
        bad_service.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // WHEN no agent listens THEN connect gives up at its ready timeout
    let dead = tenant_config_testkit::net::dead_address().await;
    let nobody = ConfigClient::builder(format!("http://{dead}"), "billing")
        .token(StaticToken(token("tenant-a")))
        .ready_timeout(Duration::from_millis(500))
        .connect()
        .await;
    assert!(
        matches!(nobody, Err(ClientError::NotReady { .. })),
        "{:?}",
        nobody.err()
    );
}

#[tokio::test]
async fn a_secret_is_read_through_the_agent_every_time_and_never_held() {
    let stores = Stores::new();
    let (agent, _) = stores.agent_on("127.0.0.1:0").await;
    let config = client(&agent).await;
    let before = stores.parameters.gets();
    for _ in 0..2 {
        let secret = config.secret(SECRET).await.unwrap();
        assert_eq!(secret.expose_str(), Some("pa55"));
        assert_eq!(secret.version, Some(2));
        assert!(!format!("{secret:?}").contains("pa55"));
    }
    assert_eq!(
        stores.parameters.gets() - before,
        2,
        "read from the store each time"
    );
    assert!(matches!(
        config.get_str(SECRET),
        Err(ReadError::Sensitive(_))
    ));
    assert!(config.values().values().all(|e| e.key != SECRET));
}

#[tokio::test]
async fn an_openfeature_client_reads_every_type_through_the_provider() {
    // GIVEN an OpenFeature client on the provider
    let stores = Stores::new();
    let (agent, _) = stores.agent_on("127.0.0.1:0").await;
    let config = client(&agent).await;
    let flags = {
        let mut api = OpenFeature::singleton_mut().await;
        api.set_named_provider("tenant-config-client", ConfigProvider::new(config))
            .await;
        api.create_named_client("tenant-config-client")
    };
    // THEN each type resolves from memory, CACHED
    let beta = flags.get_bool_details(BETA, None, None).await.unwrap();
    assert!(beta.value);
    assert_eq!(beta.reason, Some(EvaluationReason::Cached));
    assert_eq!(flags.get_int_value(SEATS, None, None).await.unwrap(), 25);
    assert_eq!(
        flags.get_float_value(RATIO, None, None).await.unwrap(),
        0.25
    );
    assert_eq!(
        flags.get_string_value(PLAN, None, None).await.unwrap(),
        "gold"
    );
    let limits = flags
        .get_struct_value::<open_feature::StructValue>(LIMITS, None, None)
        .await
        .unwrap();
    assert_eq!(limits.fields["rps"], open_feature::Value::Int(100));
    // AND errors carry OpenFeature's codes
    let wrong = flags.get_int_value(PLAN, None, None).await.unwrap_err();
    assert_eq!(wrong.code, EvaluationErrorCode::TypeMismatch);
    let secret = flags
        .get_string_value(SECRET, None, None)
        .await
        .unwrap_err();
    assert_eq!(secret.code, EvaluationErrorCode::FlagNotFound);
    let missing = flags
        .get_bool_value("tenant_config_nope", None, None)
        .await
        .unwrap_err();
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
}
