//! The agent's Watch streams: values first, then each change as the agent
//! learns it (pushed, or caught up from the journal while nobody reads),
//! resumed from a position without missing one. In-memory stores and
//! journal; the real caches, catch-up, gRPC server and client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::catch_up::{CatchUp, CatchUpSettings};
use tenant_config_shared::domain::Changed;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::refresh::journal::MemoryJournal;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::proto::{WatchEvent, WatchRequest, watch_event};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::watch::ChangeFeed;
use tenant_config_shared::{ItemKey, StoreKind};
use tenant_config_testkit::agent::{HOUR_LONG_CACHE, TestAgent};
use tenant_config_testkit::identity::token;
use tenant_config_testkit::values::{item, plain};
use tonic::Streaming;

/// The catch-up interval of the agent under test.
const INTERVAL: Duration = Duration::from_millis(200);
const CHECKOUT: &str = "tenant_config_new_checkout";
const SEATS: &str = "tenant_config_max_seats";

struct Agent {
    agent: TestAgent,
    /// The agent's reads (the same caches and change feed): what a Refresh
    /// does to them, a test does directly.
    reads: ConfigReads,
    store: Arc<MemoryStore>,
    journal: Arc<MemoryJournal>,
}

async fn agent() -> Agent {
    let store = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    store.put(&item("tenant-a", "billing", CHECKOUT), plain(json!(false)));
    store.put(&item("tenant-a", "billing", SEATS), plain(json!(25)));
    store.put(&item("tenant-b", "billing", SEATS), plain(json!(5)));
    let journal = Arc::new(MemoryJournal::new());
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(store.clone(), HOUR_LONG_CACHE),
        CachedStore::new(
            Arc::new(MemoryStore::new(StoreKind::ParameterStore)),
            HOUR_LONG_CACHE,
        ),
    )
    .with_catch_up(CatchUp::new(
        journal.clone(),
        CatchUpSettings {
            interval: INTERVAL,
            ..CatchUpSettings::AGENT
        },
    ))
    .with_change_feed(Arc::new(ChangeFeed::default()));
    Agent {
        agent: TestAgent::start(reads.clone()).await,
        reads,
        store,
        journal,
    }
}

impl Agent {
    async fn watch(
        &self,
        tenant: &str,
        keys: &[&str],
        resume_from: Option<String>,
    ) -> Result<Streaming<WatchEvent>, tonic::Status> {
        let mut client = ConfigReaderClient::connect(self.agent.endpoint())
            .await
            .unwrap();
        let mut request = tonic::Request::new(WatchRequest {
            service: "billing".into(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            resume_from,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token(tenant)).parse().unwrap(),
        );
        client.watch(request).await.map(tonic::Response::into_inner)
    }

    /// A change written to the store and pushed (what Refresh does).
    async fn push(&self, item: &ItemKey, value: Value) {
        self.store.put(item, plain(value));
        self.reads
            .invalidate_subject(&Subject::Entry(item.clone()), Changed::Updated(None))
            .await
            .unwrap();
    }

    /// A change written to the store and journaled, with no push.
    async fn journal_only(&self, item: &ItemKey, value: Value) {
        tenant_config_testkit::values::journal_only(
            &self.store,
            self.journal.as_ref(),
            item,
            value,
        )
        .await;
    }
}

async fn next(stream: &mut Streaming<WatchEvent>, within: Duration) -> WatchEvent {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// A change event's key and value (`None`: deleted).
fn change(event: &WatchEvent) -> (String, Option<Value>) {
    match &event.event {
        Some(watch_event::Event::Change(change)) => (
            change.key.clone(),
            change
                .value
                .as_ref()
                .map(|v| serde_json::from_str(&v.value_json).unwrap()),
        ),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_sends_the_values_then_each_change_as_the_agent_learns_it() {
    let agent = agent().await;
    // WHEN tenant A watches the whole service
    let mut stream = agent.watch("tenant-a", &[], None).await.unwrap();
    // THEN its values first, none of tenant B's
    let first = next(&mut stream, Duration::from_secs(2)).await;
    let Some(watch_event::Event::Snapshot(snapshot)) = &first.event else {
        panic!("a snapshot first, got {first:?}");
    };
    let keys: Vec<&str> = snapshot.values.iter().map(|v| v.key.as_str()).collect();
    // In key order.
    assert_eq!(keys, [SEATS, CHECKOUT]);
    assert_eq!(snapshot.values[0].value_json, "25");
    assert!(first.position.len() >= 13);

    // WHEN a change is pushed THEN it arrives within 100 ms
    let started = Instant::now();
    agent
        .push(&item("tenant-a", "billing", CHECKOUT), json!(true))
        .await;
    let pushed = next(&mut stream, Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert_eq!(change(&pushed), (CHECKOUT.to_owned(), Some(json!(true))));
    assert!(took < Duration::from_millis(100), "took {took:?}");

    // WHEN another tenant's value changes THEN nothing is sent; WHEN a
    // change is only journaled (its push lost) THEN the watcher's catch-up
    // brings it, though nobody reads
    agent
        .push(&item("tenant-b", "billing", SEATS), json!(6))
        .await;
    agent
        .journal_only(&item("tenant-a", "billing", SEATS), json!(30))
        .await;
    let caught_up = next(&mut stream, INTERVAL * 5).await;
    assert_eq!(change(&caught_up), (SEATS.to_owned(), Some(json!(30))));

    // WHEN a key is deleted THEN the change says so
    agent.store.remove(&item("tenant-a", "billing", CHECKOUT));
    agent
        .reads
        .invalidate_subject(
            &Subject::Entry(item("tenant-a", "billing", CHECKOUT)),
            Changed::Deleted,
        )
        .await
        .unwrap();
    let deleted = next(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(change(&deleted), (CHECKOUT.to_owned(), None));
}

#[tokio::test]
async fn a_watch_resumed_from_its_position_misses_no_change_and_an_old_one_resets() {
    let agent = agent().await;
    let mut stream = agent.watch("tenant-a", &[SEATS], None).await.unwrap();
    let first = next(&mut stream, Duration::from_secs(2)).await;
    let Some(watch_event::Event::Snapshot(snapshot)) = &first.event else {
        panic!("a snapshot first, got {first:?}");
    };
    // Only the key watched.
    assert_eq!(snapshot.values.len(), 1);
    // GIVEN the client goes away, and a change is made (journaled; the push
    // is lost) while it is away
    drop(stream);
    agent
        .journal_only(&item("tenant-a", "billing", SEATS), json!(40))
        .await;
    // WHEN it resumes from the last position it saw
    let mut resumed = agent
        .watch("tenant-a", &[SEATS], Some(first.position.clone()))
        .await
        .unwrap();
    // THEN the change it missed comes first, with no snapshot, still at the
    // position resumed from (a cut here resumes from there again)
    let missed = next(&mut resumed, Duration::from_secs(2)).await;
    assert_eq!(change(&missed), (SEATS.to_owned(), Some(json!(40))));
    assert_eq!(missed.position, first.position);
    // AND then a progress: everything missed is sent, resume from here
    let caught_up = next(&mut resumed, Duration::from_secs(2)).await;
    assert!(
        matches!(caught_up.event, Some(watch_event::Event::Progress(_))),
        "{caught_up:?}"
    );
    assert!(caught_up.position >= first.position, "{caught_up:?}");
    // AND a key it does not watch never arrives, a pushed one it does does
    agent
        .push(&item("tenant-a", "billing", CHECKOUT), json!(true))
        .await;
    agent
        .push(&item("tenant-a", "billing", SEATS), json!(41))
        .await;
    let pushed = next(&mut resumed, Duration::from_secs(1)).await;
    assert_eq!(change(&pushed), (SEATS.to_owned(), Some(json!(41))));

    // WHEN a client resumes from a position older than the journal keeps
    let mut old = agent
        .watch("tenant-a", &[], Some("0000000000001".to_owned()))
        .await
        .unwrap();
    // THEN it is told to drop what it holds, and gets everything again
    let reset = next(&mut old, Duration::from_secs(2)).await;
    assert!(
        matches!(&reset.event, Some(watch_event::Event::Reset(r)) if r.reason.contains("older")),
        "{reset:?}"
    );
    // (at the position it resumed from: cut before the snapshot, it resets again)
    assert_eq!(reset.position, "0000000000001");
    let again = next(&mut old, Duration::from_secs(2)).await;
    assert!(matches!(again.event, Some(watch_event::Event::Snapshot(_))));
}

#[tokio::test]
async fn a_watch_is_refused_without_a_token_or_with_a_bad_request() {
    let agent = agent().await;
    let mut client = ConfigReaderClient::connect(agent.agent.endpoint())
        .await
        .unwrap();
    let anonymous = client
        .watch(WatchRequest {
            service: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let too_many: Vec<String> = (0..51).map(|i| format!("tenant_config_k{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let refused = agent.watch("tenant-a", &too_many, None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let bad_position = agent
        .watch("tenant-a", &[], Some("yesterday".into()))
        .await
        .unwrap_err();
    assert_eq!(bad_position.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_change_read_while_its_store_fails_is_sent_once_the_store_answers() {
    let agent = agent().await;
    let mut stream = agent.watch("tenant-a", &[SEATS], None).await.unwrap();
    next(&mut stream, Duration::from_secs(2)).await;
    // GIVEN the store fails as a change is pushed: the agent can only
    // serve the last good value
    agent
        .store
        .set_failure(Some(tenant_config_shared::StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail: "injected".into(),
        }));
    agent
        .push(&item("tenant-a", "billing", SEATS), json!(50))
        .await;
    // THEN nothing is sent: the old value is no change, and no position
    // moves past the change
    let quiet = tokio::time::timeout(Duration::from_millis(600), stream.message()).await;
    assert!(quiet.is_err(), "sent while the store failed: {quiet:?}");
    // WHEN the store answers again THEN the change arrives, unasked
    agent.store.set_failure(None);
    let change_event = next(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(change(&change_event), (SEATS.to_owned(), Some(json!(50))));
}

#[tokio::test]
async fn a_value_sent_stale_in_a_snapshot_is_sent_again_once_it_reads_fresh() {
    let agent = agent().await;
    // GIVEN a value read once, then its store failing and the value pushed
    // out of the cache: the agent holds only its last good value
    agent
        .reads
        .get(
            &tenant_config_shared::TenantId::parse("tenant-a").unwrap(),
            &tenant_config_shared::ServiceName::parse("billing").unwrap(),
            &tenant_config_shared::ConfigKey::parse(SEATS).unwrap(),
        )
        .await
        .unwrap();
    agent
        .store
        .set_failure(Some(tenant_config_shared::StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail: "injected".into(),
        }));
    agent
        .reads
        .invalidate_subject(
            &Subject::Entry(item("tenant-a", "billing", SEATS)),
            Changed::Updated(None),
        )
        .await
        .unwrap();
    // WHEN a client watches THEN its snapshot holds the value, marked stale
    let mut stream = agent.watch("tenant-a", &[SEATS], None).await.unwrap();
    let first = next(&mut stream, Duration::from_secs(2)).await;
    let Some(watch_event::Event::Snapshot(snapshot)) = &first.event else {
        panic!("a snapshot first, got {first:?}");
    };
    assert!(snapshot.values[0].stale_age_ms.is_some(), "{snapshot:?}");
    // WHEN the store answers again THEN the same value is sent, fresh, unasked
    agent.store.set_failure(None);
    let fresh = next(&mut stream, Duration::from_secs(4)).await;
    let Some(watch_event::Event::Change(change)) = &fresh.event else {
        panic!("a change, got {fresh:?}");
    };
    let value = change.value.as_ref().unwrap();
    assert_eq!(
        (value.value_json.as_str(), value.stale_age_ms),
        ("25", None)
    );
}

#[tokio::test]
async fn every_stream_ends_when_the_agent_stops_so_the_drain_does_not_wait_for_it() {
    let agent = agent().await;
    let mut stream = agent.watch("tenant-a", &[], None).await.unwrap();
    next(&mut stream, Duration::from_secs(2)).await;
    // WHEN the agent stops
    let started = Instant::now();
    drop(agent.agent);
    // THEN the stream ends at once with UNAVAILABLE, telling it to resume
    let ended = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("the stream ends at once");
    let status = ended.expect_err("an error status ends it");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}
