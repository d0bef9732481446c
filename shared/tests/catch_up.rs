//! Readers catch up with the change journal: no push needed, bounded cost.
//! In-memory stores and journal; real caches and read use cases.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::catch_up::{
    Applied, CatchUp, CatchUpSettings, IN_FLIGHT_ALLOWANCE, MAX_PAGES,
};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::change::ChangeRecord;
use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::refresh::journal::{ChangeJournal, MemoryJournal};
use tenant_config_shared::refresh::proto::Operation;
use tenant_config_shared::refresh::signing::unix_ms_now;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::{ConfigError, ConfigKey, ServiceName, StoreKind, TenantId};
use tenant_config_testkit::agent::HOUR_LONG_CACHE;
use tenant_config_testkit::values::{item, plain};

const INTERVAL: Duration = Duration::from_millis(150);

struct Reader {
    reads: ConfigReads,
    store: Arc<MemoryStore>,
    journal: Arc<MemoryJournal>,
}

/// A reader with hour-long caches over one in-memory DynamoDB, catching up
/// every [`INTERVAL`] with `max_entries`.
fn reader(max_entries: usize) -> Reader {
    let store = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
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
            max_entries,
            ..CatchUpSettings::LAMBDA
        },
    ));
    Reader {
        reads,
        store,
        journal,
    }
}

fn change(key: &str, operation: Operation, id: &str) -> ChangeRecord {
    ChangeRecord {
        subject: Subject::Entry(item("tenant-a", "billing", key)),
        store: StoreKind::DynamoDb,
        operation,
        change_id: id.into(),
        time_unix_ms: unix_ms_now(),
        audit: Default::default(),
        value_type: None,
    }
}

/// `n` updates of keys no test reads, ids `c0`, `c1`, ...
fn updates_of_other_keys(n: usize) -> Vec<ChangeRecord> {
    (0..n)
        .map(|i| {
            change(
                &format!("tenant_config_other{i}"),
                Operation::Update,
                &format!("c{i}"),
            )
        })
        .collect()
}

impl Reader {
    fn put(&self, key: &str, value: &str) {
        self.store
            .put(&item("tenant-a", "billing", key), plain(json!(value)));
    }

    async fn read(&self, key: &str) -> Result<String, ConfigError> {
        let entry = self
            .reads
            .get(
                &TenantId::parse("tenant-a").unwrap(),
                &ServiceName::parse("billing").unwrap(),
                &ConfigKey::parse(key).unwrap(),
            )
            .await?;
        Ok(entry.value.value.as_str().unwrap_or_default().to_owned())
    }

    fn queries(&self) -> usize {
        self.reads.catch_up().unwrap().queries()
    }
}

#[tokio::test]
async fn a_journaled_change_is_served_after_one_interval_without_any_push() {
    // GIVEN a reader that cached a value for an hour
    let reader = reader(100);
    reader.put("tenant_config_limits", "v1");
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v1");
    // WHEN the value changes and the change is journaled (no push reaches it)
    reader.put("tenant_config_limits", "v2");
    reader
        .journal
        .append(&[change("tenant_config_limits", Operation::Update, "c1")])
        .await
        .unwrap();
    // THEN within the interval it still serves its cache, and after it the new value
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v1");
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v2");
}

#[tokio::test]
async fn an_unreadable_entry_drops_everything_once_instead_of_stalling_catch_up() {
    // GIVEN a reader that cached a value
    let reader = reader(100);
    reader.put("tenant_config_limits", "v1");
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v1");
    // WHEN the value changes and the journal holds an entry the reader
    // cannot read (written by another version, say)
    reader.put("tenant_config_limits", "v2");
    reader.journal.set_unreadable(Some("0000000000001#x"));
    tokio::time::sleep(INTERVAL).await;
    // THEN the next catch-up drops every cached entry and the new value is
    // served (not the old one for the day the entry is kept)
    assert!(matches!(
        reader
            .reads
            .catch_up()
            .unwrap()
            .maybe_catch_up(&reader.reads)
            .await,
        Applied::Everything
    ));
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v2");
    // AND once the entry is gone, catch-up goes on entry by entry
    reader.journal.set_unreadable(None);
    tokio::time::sleep(INTERVAL).await;
    assert!(matches!(
        reader
            .reads
            .catch_up()
            .unwrap()
            .maybe_catch_up(&reader.reads)
            .await,
        Applied::Entries(_)
    ));
}

#[tokio::test]
async fn a_key_created_after_a_cached_not_found_is_found_after_one_interval() {
    let reader = reader(100);
    assert!(matches!(
        reader.read("tenant_config_new").await,
        Err(ConfigError::NotFound { .. })
    ));
    reader.put("tenant_config_new", "created");
    reader
        .journal
        .append(&[change("tenant_config_new", Operation::Create, "c1")])
        .await
        .unwrap();
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(reader.read("tenant_config_new").await.unwrap(), "created");
}

#[tokio::test]
async fn concurrent_reads_share_one_journal_query_and_idle_readers_make_none() {
    let reader = reader(100);
    reader.put("tenant_config_limits", "v1");
    reader.read("tenant_config_limits").await.unwrap();
    // No reads for three intervals: no queries.
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(reader.queries(), 0);
    // Fifty reads at once after the interval: one query.
    let reads = (0..50).map(|_| reader.read("tenant_config_limits"));
    for result in futures::future::join_all(reads).await {
        assert_eq!(result.unwrap(), "v1");
    }
    assert_eq!(reader.queries(), 1);
    // Reads within the next interval: still one.
    reader.read("tenant_config_limits").await.unwrap();
    assert_eq!(reader.queries(), 1);
}

/// A reader that cached `tenant_config_limits` = v1, which then changed to
/// v2 (journaled), over a journal that answers each query after `delay`.
async fn changed_behind_a_slow_journal(delay: Duration) -> Arc<Reader> {
    let reader = Arc::new(reader(100));
    reader.put("tenant_config_limits", "v1");
    reader.read("tenant_config_limits").await.unwrap();
    reader.put("tenant_config_limits", "v2");
    reader
        .journal
        .append(&[change("tenant_config_limits", Operation::Update, "c1")])
        .await
        .unwrap();
    reader.journal.set_delay(delay);
    reader
}

/// One read that starts the due catch-up, and twenty more 20 ms later, while
/// its query is in flight: the first's task, the twenty's answers and how
/// long they took.
async fn burst_behind_a_catch_up(
    reader: &Arc<Reader>,
) -> (
    tokio::task::JoinHandle<Result<String, ConfigError>>,
    Vec<Result<String, ConfigError>>,
    Duration,
) {
    let first = tokio::spawn({
        let reader = reader.clone();
        async move { reader.read("tenant_config_limits").await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    let others = (0..20).map(|_| reader.read("tenant_config_limits"));
    let others = futures::future::join_all(others).await;
    (first, others, started.elapsed())
}

#[tokio::test]
async fn while_a_slow_journal_query_is_in_flight_other_reads_do_not_wait_for_it() {
    // GIVEN a reader with a cached value and a journal that takes 400 ms to
    // answer (a table busy with another tenant's writes)
    let reader = changed_behind_a_slow_journal(Duration::from_millis(400)).await;
    tokio::time::sleep(INTERVAL).await;
    // WHEN one read starts the due catch-up and twenty more arrive while its
    // query is in flight
    let (first, others, waited) = burst_behind_a_catch_up(&reader).await;
    // THEN the twenty are answered from the cache at once, not after the query
    assert!(
        waited < Duration::from_millis(200),
        "reads waited {waited:?} for another read's journal query"
    );
    for result in others {
        assert_eq!(result.unwrap(), "v1");
    }
    assert_eq!(
        reader.queries(),
        1,
        "the twenty started no query of their own"
    );
    // AND the read that started it waits for it and serves the change, as
    // does every read after it
    assert_eq!(first.await.unwrap().unwrap(), "v2");
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v2");
}

#[tokio::test]
async fn a_reader_back_from_idle_waits_for_the_query_in_flight_and_serves_no_old_change() {
    // GIVEN a reader with a cached value, idle for longer than the freshness
    // bound (interval + 1 s) while the value changed, and a slow journal
    let reader = changed_behind_a_slow_journal(Duration::from_millis(300)).await;
    tokio::time::sleep(INTERVAL + IN_FLIGHT_ALLOWANCE + INTERVAL).await;
    // WHEN a burst of reads arrives, one of them starting the catch-up
    let (first, others, _) = burst_behind_a_catch_up(&reader).await;
    // THEN none of them serves the change older than the bound: they waited
    // for the one query
    assert_eq!(first.await.unwrap().unwrap(), "v2");
    for result in others {
        assert_eq!(result.unwrap(), "v2");
    }
    assert_eq!(reader.queries(), 1);
}

#[tokio::test]
async fn a_late_entry_inside_the_overlap_is_applied_once() {
    // GIVEN a reader that cached two values and has caught up once
    let reader = reader(100);
    reader.put("tenant_config_a", "a1");
    reader.put("tenant_config_b", "b1");
    reader.read("tenant_config_a").await.unwrap();
    reader.read("tenant_config_b").await.unwrap();
    tokio::time::sleep(INTERVAL).await;
    reader.read("tenant_config_a").await.unwrap();
    let queries = reader.queries();
    assert_eq!(queries, 1);
    // WHEN a change becomes visible with a journal time two seconds in the
    // past (a slow or skewed writer), i.e. before that last query
    reader.put("tenant_config_b", "b2");
    reader.journal.insert_at(
        change("tenant_config_b", Operation::Update, "late"),
        unix_ms_now() - 2_000,
    );
    tokio::time::sleep(INTERVAL).await;
    // THEN the next catch-up still applies it
    assert_eq!(reader.read("tenant_config_b").await.unwrap(), "b2");
    // AND later catch-ups inside the overlap do not drop it again
    let gets = reader.store.gets();
    tokio::time::sleep(INTERVAL).await;
    reader.read("tenant_config_b").await.unwrap();
    tokio::time::sleep(INTERVAL).await;
    reader.read("tenant_config_b").await.unwrap();
    assert_eq!(reader.queries(), queries + 3);
    assert_eq!(
        reader.store.gets(),
        gets,
        "no refetch for an entry already applied"
    );
}

#[tokio::test]
async fn a_burst_larger_than_a_page_is_read_page_by_page_and_applied_entry_by_entry() {
    // GIVEN a reader reading the journal in pages of 3, with a value cached
    // that no change names, and one that changes
    let reader = reader(3);
    reader.put("tenant_config_kept", "k1");
    reader.read("tenant_config_kept").await.unwrap();
    reader.put("tenant_config_a", "a1");
    reader.read("tenant_config_a").await.unwrap();
    reader.put("tenant_config_kept", "k2"); // no change journaled for it
    reader.put("tenant_config_a", "a2");
    // WHEN eight changes are journaled in one batch (one millisecond)
    let mut changes = updates_of_other_keys(7);
    changes.push(change("tenant_config_a", Operation::Update, "c7"));
    reader.journal.append(&changes).await.unwrap();
    tokio::time::sleep(INTERVAL).await;
    let catch_up = reader.reads.catch_up().unwrap();
    // THEN all eight are applied one by one (three pages), not by dropping
    // the whole cache: the changed key is refetched, the other stays cached
    assert_eq!(
        catch_up.maybe_catch_up(&reader.reads).await,
        Applied::Entries(8)
    );
    assert_eq!(reader.read("tenant_config_a").await.unwrap(), "a2");
    assert_eq!(reader.read("tenant_config_kept").await.unwrap(), "k1");
}

#[tokio::test]
async fn a_reader_more_pages_behind_than_it_reads_drops_the_whole_cache() {
    let reader = reader(3);
    reader.put("tenant_config_a", "a1");
    reader.read("tenant_config_a").await.unwrap();
    reader.put("tenant_config_a", "a2");
    // more changes than MAX_PAGES pages of 3 hold
    let changes = updates_of_other_keys(3 * MAX_PAGES + 1);
    reader.journal.append(&changes).await.unwrap();
    tokio::time::sleep(INTERVAL).await;
    let catch_up = reader.reads.catch_up().unwrap();
    assert_eq!(
        catch_up.maybe_catch_up(&reader.reads).await,
        Applied::Everything
    );
    // tenant_config_a was never named, but the cache was dropped whole.
    assert_eq!(reader.read("tenant_config_a").await.unwrap(), "a2");
}

#[tokio::test]
async fn a_failing_journal_never_fails_a_read_and_is_retried_after_the_interval() {
    let reader = reader(100);
    reader.put("tenant_config_limits", "v1");
    reader.read("tenant_config_limits").await.unwrap();
    reader.put("tenant_config_limits", "v2");
    reader
        .journal
        .append(&[change("tenant_config_limits", Operation::Update, "c1")])
        .await
        .unwrap();
    reader.journal.set_failing(true);
    tokio::time::sleep(INTERVAL).await;
    // The journal is down: the read is answered from the cache.
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v1");
    assert_eq!(reader.queries(), 1);
    // Still down: retried after one interval, then only after two
    tokio::time::sleep(INTERVAL).await;
    reader.read("tenant_config_limits").await.unwrap();
    assert_eq!(reader.queries(), 2, "retried after the interval");
    tokio::time::sleep(INTERVAL + INTERVAL / 3).await;
    reader.read("tenant_config_limits").await.unwrap();
    assert_eq!(reader.queries(), 2, "a second failure doubles the wait");
    // It comes back: the next catch-up applies what was missed.
    reader.journal.set_failing(false);
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v2");
    assert_eq!(reader.queries(), 3);
    // And the interval is back to one after a success.
    reader.put("tenant_config_limits", "v3");
    reader
        .journal
        .append(&[change("tenant_config_limits", Operation::Update, "c2")])
        .await
        .unwrap();
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(reader.read("tenant_config_limits").await.unwrap(), "v3");
}
