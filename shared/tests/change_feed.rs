//! config-refresh's side of the change feed, in process: what it announces
//! for a change and for the schedule's heartbeat, signed so that agents
//! trusting its public key accept it, and what happens when the feed or the
//! agents' transport fails.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tenant_config_shared::notices::feed::{NoticePublisher, PublishError};
use tenant_config_shared::notices::verify;
use tenant_config_shared::refresh::fanout::{Fanout, FanoutSettings, FanoutSource};
use tenant_config_shared::refresh::handler::{RefreshOutcome, Refresher};
use tenant_config_shared::refresh::journal::{ChangeJournal, MemoryJournal};
use tenant_config_shared::refresh::signing::{RefreshKey, unix_ms_now};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_testkit::agent::{refresh_key, trusted_keys};
use tenant_config_testkit::discovery::StaticInstances;

/// Keeps what is published; fails every publish while `failing`.
#[derive(Default)]
struct RecordingFeed {
    published: Mutex<Vec<Vec<u8>>>,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl NoticePublisher for RecordingFeed {
    async fn publish(&self, payloads: &[Vec<u8>]) -> Result<(), PublishError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PublishError::Failed("injected: IoT Core throttled".into()));
        }
        self.published.lock().unwrap().extend_from_slice(payloads);
        Ok(())
    }
}

fn event(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(format!("../events/{name}")).unwrap()).unwrap()
}

fn refresher(
    fanout: Arc<dyn FanoutSource>,
    feed: Arc<RecordingFeed>,
) -> (Refresher, Arc<MemoryJournal>) {
    let journal = Arc::new(MemoryJournal::new());
    let refresher = Refresher::new(
        "/config-service",
        KeyRouter::default(),
        Arc::new(StaticInstances(Vec::new())),
        fanout,
        journal.clone(),
    )
    .with_change_feed(feed);
    (refresher, journal)
}

#[tokio::test]
async fn a_change_is_announced_with_its_sequence_number_and_the_heartbeat_names_the_head() {
    // GIVEN config-refresh with a change feed
    let feed = Arc::new(RecordingFeed::default());
    let (refresher, journal) = refresher(
        Arc::new(Fanout::new(refresh_key(), FanoutSettings::default())),
        feed.clone(),
    );
    // WHEN a parameter changes, then a stream batch of two arrives
    refresher
        .handle(event("parameter-store-change-update.json"))
        .await
        .unwrap();
    refresher
        .handle(event("dynamodb-stream-batch.json"))
        .await
        .unwrap();
    // THEN each invocation announced one notice, numbered in journal order,
    // that agents trusting config-refresh's key accept
    let published = feed.published.lock().unwrap().clone();
    assert_eq!(published.len(), 2);
    let first = verify(&published[0], &trusted_keys(), unix_ms_now()).unwrap();
    assert_eq!((first.first, first.last), (1, 1));
    assert_eq!(
        first.entries[0].subject.to_string(),
        "tenant-a:billing:param_config_endpoint"
    );
    let batch = verify(&published[1], &trusted_keys(), unix_ms_now()).unwrap();
    assert_eq!(batch.first, 2);
    assert_eq!(batch.last as usize, 1 + batch.entries.len());
    assert_eq!(journal.head().await.unwrap(), batch.last);
    // AND the schedule's heartbeat announces the journal's head
    let outcome = refresher
        .handle(event("feed-heartbeat.json"))
        .await
        .unwrap();
    assert_eq!(outcome.to_json()["status"], "heartbeat");
    let heartbeat = verify(
        feed.published.lock().unwrap().last().unwrap(),
        &trusted_keys(),
        unix_ms_now(),
    )
    .unwrap();
    assert!(heartbeat.is_heartbeat());
    assert_eq!(heartbeat.last, batch.last);
}

#[tokio::test]
async fn a_failed_announce_keeps_the_change_journaled_and_does_not_fail_it() {
    let feed = Arc::new(RecordingFeed::default());
    feed.failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (refresher, journal) = refresher(
        Arc::new(Fanout::new(refresh_key(), FanoutSettings::default())),
        feed.clone(),
    );
    let outcome = refresher
        .handle(event("parameter-store-change-update.json"))
        .await;
    // (no agents: delivered to none; the journal has the change, and the
    // next notice or heartbeat shows readers the hole)
    assert!(
        matches!(outcome, Ok(RefreshOutcome::Delivered(_))),
        "{outcome:?}"
    );
    assert_eq!(journal.head().await.unwrap(), 1);
    // The heartbeat itself fails on it, so the schedule retries it.
    assert!(
        refresher
            .handle(event("feed-heartbeat.json"))
            .await
            .is_err()
    );
}

/// The agents' CA is missing: no push, but the signing key is there.
struct KeyWithoutTransport(RefreshKey);

#[async_trait]
impl FanoutSource for KeyWithoutTransport {
    async fn fanout(&self) -> Result<&Fanout, String> {
        Err("the agents' CA bundle is missing".to_owned())
    }
    async fn signing_key(&self) -> Result<RefreshKey, String> {
        Ok(self.0.clone())
    }
}

#[tokio::test]
async fn without_the_agents_transport_pushes_stop_but_the_feed_announces() {
    let feed = Arc::new(RecordingFeed::default());
    let (refresher, _) = refresher(Arc::new(KeyWithoutTransport(refresh_key())), feed.clone());
    let outcome = refresher
        .handle(event("parameter-store-change-update.json"))
        .await
        .unwrap();
    assert_eq!(outcome.to_json()["status"], "journaled_not_pushed");
    assert_eq!(feed.published.lock().unwrap().len(), 1);
}
