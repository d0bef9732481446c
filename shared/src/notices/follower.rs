//! What a reader does with the change feed: drops what each notice names and
//! keeps track of the sequence numbers, so that it reads the journal only when
//! it missed something.
//!
//! - Every notice's entries are dropped as they arrive, in whatever order
//!   (dropping is idempotent; a notice arriving twice costs a reload).
//! - The *mark* is the highest sequence number below which nothing is missing.
//!   Numbers seen above it wait for the ones between; a heartbeat's head
//!   above it is a gap too. A gap still open after [`FollowerSettings::gap_grace`]
//!   (notices of concurrent invocations arrive out of order) makes the reader
//!   read the journal once, through its [`CatchUp`], then the mark moves past it.
//! - On every (re)subscription the mark starts again from the first notice
//!   (the topic's retained one), and the journal is read once: what was
//!   published while the reader was not subscribed is found there.
//! - While subscribed, the catch-up's own interval is lengthened to
//!   [`FollowerSettings::connected_interval`] (a slow safety net); when the
//!   connection breaks it returns to the reader's usual one, so a reader
//!   without its feed converges as it did before the feed.
//! - While the mark is contiguous, the catch-up's cursor follows it, so the
//!   next journal read starts where the feed left off rather than re-reading
//!   (and re-dropping) what the feed already delivered.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::catch_up::{Applied, CatchUp, Invalidate};
use crate::refresh::signing::unix_ms_now;

use super::Notice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerSettings {
    /// How long a gap may stay open before the journal is read.
    pub gap_grace: Duration,
    /// The catch-up interval while the feed is subscribed.
    pub connected_interval: Duration,
    /// A subscribed feed that delivered nothing for this long (not even a
    /// heartbeat, due every minute) is treated as broken: the reader polls
    /// the journal until a notice arrives. It covers what a connection
    /// cannot show: the heartbeat rule or config-refresh's key gone.
    pub silence_limit: Duration,
}

impl Default for FollowerSettings {
    fn default() -> Self {
        Self {
            gap_grace: Duration::from_secs(1),
            connected_interval: Duration::from_secs(3600),
            silence_limit: Duration::from_secs(150),
        }
    }
}

/// How far above the mark a reader tracks numbers one by one; past it, the
/// gap is read from the journal at once.
const MAX_TRACKED_ABOVE: u64 = 100_000;

#[derive(Default)]
struct Sequence {
    subscribed: bool,
    /// When the feed last delivered something (or was subscribed).
    heard: Option<Instant>,
    /// The feed went silent past the limit: the reader polls meanwhile.
    silent: bool,
    mark: Option<u64>,
    above: BTreeSet<u64>,
    head: u64,
    /// When the open gap was first seen (monotonic, and Unix ms).
    gap_since: Option<(Instant, i64)>,
}

impl Sequence {
    fn gap(&self) -> bool {
        let mark = self.mark.unwrap_or(0);
        !self.above.is_empty() || self.head > mark
    }

    /// Records a notice's numbers; returns whether nothing is missing now.
    fn record(&mut self, notice: &Notice) -> bool {
        match self.mark {
            None => self.mark = Some(notice.last),
            Some(mark) if notice.is_heartbeat() => self.head = self.head.max(notice.last).max(mark),
            Some(mark) => {
                if notice.last.saturating_sub(mark) > MAX_TRACKED_ABOVE {
                    // Too far ahead to track: a gap, read at once.
                    self.head = self.head.max(notice.last);
                    let long_ago = Instant::now()
                        .checked_sub(Duration::from_secs(3600))
                        .unwrap_or_else(Instant::now);
                    self.gap_since = Some((long_ago, unix_ms_now()));
                } else {
                    self.above
                        .extend((notice.first.max(mark + 1))..=notice.last);
                }
            }
        }
        let mut mark = self.mark.unwrap_or(0);
        while self.above.remove(&(mark + 1)) {
            mark += 1;
        }
        self.mark = Some(mark);
        self.head = self.head.max(mark);
        if self.gap() {
            self.gap_since
                .get_or_insert((Instant::now(), unix_ms_now()));
            false
        } else {
            self.gap_since = None;
            true
        }
    }

    /// The journal was read after the gap was seen: whatever was missing then
    /// has been applied.
    fn filled(&mut self) {
        let highest = self.above.last().copied().unwrap_or(0);
        self.mark = Some(self.mark.unwrap_or(0).max(highest).max(self.head));
        self.above.clear();
        self.gap_since = None;
    }
}

/// What a follower has done, for tests, the benchmark and logs.
#[derive(Debug, Default)]
pub struct FollowerCounters {
    pub notices: AtomicU64,
    pub entries_dropped: AtomicU64,
    /// Gaps that outlived the grace and sent the reader to the journal.
    pub gaps_read: AtomicU64,
    pub subscriptions: AtomicU64,
}

/// One reader's side of the change feed (see the module docs).
pub struct NoticeFollower<R> {
    reads: R,
    catch_up: Arc<CatchUp>,
    /// The catch-up interval when the feed is down: the reader's own.
    fallback_interval: Duration,
    settings: FollowerSettings,
    sequence: Mutex<Sequence>,
    pub counters: FollowerCounters,
}

impl<R: Invalidate> NoticeFollower<R> {
    pub fn new(reads: R, catch_up: Arc<CatchUp>, settings: FollowerSettings) -> Self {
        let fallback_interval = catch_up.interval();
        Self {
            reads,
            catch_up,
            fallback_interval,
            settings,
            sequence: Mutex::new(Sequence::default()),
            counters: FollowerCounters::default(),
        }
    }

    fn sequence(&self) -> std::sync::MutexGuard<'_, Sequence> {
        // A panic while holding it cannot leave the numbers half-updated in
        // a way that loses a change: at worst a gap is read again.
        self.sequence.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn catch_up(&self) -> &Arc<CatchUp> {
        &self.catch_up
    }

    /// Whether the feed is subscribed now.
    pub fn subscribed(&self) -> bool {
        self.sequence().subscribed
    }

    /// The highest sequence number below which nothing is missing.
    pub fn mark(&self) -> Option<u64> {
        self.sequence().mark
    }

    /// The topic subscription was acknowledged (again): numbers start over
    /// from the next notice, and the journal is read once for what was
    /// published meanwhile.
    pub async fn on_subscribed(&self) {
        *self.sequence() = Sequence {
            subscribed: true,
            heard: Some(Instant::now()),
            ..Sequence::default()
        };
        self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.catch_up.set_interval(self.settings.connected_interval);
        self.catch_up.request_now();
        self.catch_up.maybe_catch_up(&self.reads).await;
    }

    /// The connection broke: the reader polls the journal as it would
    /// without a feed until it is subscribed again.
    pub fn on_disconnected(&self) {
        let was = std::mem::replace(&mut self.sequence().subscribed, false);
        if was {
            self.catch_up.set_interval(self.fallback_interval);
        }
    }

    /// A verified notice arrived.
    pub async fn on_notice(&self, notice: &Notice) {
        self.counters.notices.fetch_add(1, Ordering::Relaxed);
        let was_silent = {
            let mut sequence = self.sequence();
            sequence.heard = Some(Instant::now());
            std::mem::replace(&mut sequence.silent, false)
        };
        if was_silent {
            tracing::info!("change feed: heard again; journal reads only for gaps");
            self.catch_up.set_interval(self.settings.connected_interval);
        }
        for entry in &notice.entries {
            match self.reads.invalidate(&entry.subject, entry.changed).await {
                Ok(()) => {
                    self.counters
                        .entries_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(entry = %entry.subject, %error, "change feed: could not drop an entry")
                }
            }
        }
        let contiguous = self.sequence().record(notice);
        if contiguous {
            let through = if notice.is_heartbeat() {
                notice.timestamp_ms
            } else {
                notice
                    .entries
                    .iter()
                    .map(|e| e.journaled_at_ms)
                    .max()
                    .unwrap_or(0)
            };
            self.catch_up.covered(
                notice
                    .entries
                    .iter()
                    .map(|e| (e.position.clone(), e.journaled_at_ms)),
                through,
            );
        }
    }

    /// Called every few hundred milliseconds: reads the journal for a gap
    /// that outlived the grace.
    pub async fn tick(&self) {
        let (seen_ms, fell_silent) = {
            let mut sequence = self.sequence();
            let fell_silent = sequence.subscribed
                && !sequence.silent
                && sequence
                    .heard
                    .is_some_and(|heard| heard.elapsed() > self.settings.silence_limit);
            if fell_silent {
                sequence.silent = true;
            }
            (sequence.gap_since, fell_silent)
        };
        if fell_silent {
            tracing::warn!(
                silent_secs = self.settings.silence_limit.as_secs(),
                "change feed: nothing heard, not even a heartbeat; polling the journal meanwhile"
            );
            self.catch_up.set_interval(self.fallback_interval);
        }
        let seen_ms = match seen_ms {
            Some((since, seen_ms)) if since.elapsed() >= self.settings.gap_grace => seen_ms,
            _ => return,
        };
        self.catch_up.request_now();
        let applied = matches!(
            self.catch_up.maybe_catch_up(&self.reads).await,
            Applied::Entries(_) | Applied::Everything
        );
        // Filled when a journal read started after the gap was seen, by this
        // tick or by a read that got there first; otherwise (the journal
        // failing) the next tick tries again, within the catch-up's back-off.
        if applied || self.catch_up.read_ms() > seen_ms {
            self.counters.gaps_read.fetch_add(1, Ordering::Relaxed);
            let mut sequence = self.sequence();
            if sequence
                .gap_since
                .is_some_and(|(_, current)| current == seen_ms)
            {
                sequence.filled();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catch_up::CatchUpSettings;
    use crate::domain::{Changed, ItemKey, StoreKind};
    use crate::error::ConfigError;
    use crate::notices::NoticedEntry;
    use crate::refresh::change::{ChangeRecord, Subject};
    use crate::refresh::journal::{ChangeJournal, MemoryJournal};
    use crate::refresh::proto::Operation;

    /// Records what was dropped.
    #[derive(Default)]
    struct Dropped(Mutex<Vec<String>>);

    impl Invalidate for Arc<Dropped> {
        async fn invalidate(&self, subject: &Subject, _: Changed) -> Result<(), ConfigError> {
            self.0.lock().unwrap().push(subject.to_string());
            Ok(())
        }
        fn invalidate_all(&self) {
            self.0.lock().unwrap().push("*".into());
        }
    }

    fn subject(key: &str) -> Subject {
        Subject::Entry(ItemKey::parse("tenant-a", "billing", key).unwrap())
    }

    fn notice(first: u64, last: u64) -> Notice {
        Notice {
            first,
            last,
            entries: (first..=last)
                .map(|sequence| NoticedEntry {
                    subject: subject(&format!("tenant_config_k{sequence}")),
                    changed: Changed::Updated(None),
                    position: format!("{:013}#c{sequence}", unix_ms_now()),
                    journaled_at_ms: unix_ms_now(),
                    sequence,
                })
                .collect(),
            timestamp_ms: unix_ms_now(),
        }
    }

    fn heartbeat(head: u64) -> Notice {
        Notice {
            first: head + 1,
            last: head,
            entries: Vec::new(),
            timestamp_ms: unix_ms_now(),
        }
    }

    const GRACE: Duration = Duration::from_millis(50);

    async fn follower() -> (
        NoticeFollower<Arc<Dropped>>,
        Arc<MemoryJournal>,
        Arc<Dropped>,
    ) {
        let journal = Arc::new(MemoryJournal::new());
        let catch_up = Arc::new(CatchUp::new(journal.clone(), CatchUpSettings::AGENT));
        let dropped = Arc::new(Dropped::default());
        let follower = NoticeFollower::new(
            dropped.clone(),
            catch_up,
            FollowerSettings {
                gap_grace: GRACE,
                connected_interval: Duration::from_secs(3600),
                silence_limit: Duration::from_secs(150),
            },
        );
        follower.on_subscribed().await;
        (follower, journal, dropped)
    }

    fn change(key: &str) -> ChangeRecord {
        ChangeRecord {
            subject: subject(key),
            store: StoreKind::DynamoDb,
            operation: Operation::Update,
            change_id: format!("id-{key}"),
            time_unix_ms: unix_ms_now(),
            audit: Default::default(),
            value_type: None,
        }
    }

    #[tokio::test]
    async fn given_notices_in_order_when_they_arrive_then_each_entry_is_dropped_and_the_journal_is_not_read()
     {
        let (follower, journal, dropped) = follower().await;
        let after_subscribing = journal.queries();
        follower.on_notice(&notice(5, 5)).await;
        follower.on_notice(&notice(6, 8)).await;
        follower.on_notice(&heartbeat(8)).await;
        tokio::time::sleep(GRACE * 2).await;
        follower.tick().await;
        assert_eq!(follower.mark(), Some(8));
        assert_eq!(dropped.0.lock().unwrap().len(), 4);
        assert_eq!(journal.queries(), after_subscribing, "no gap, no query");
    }

    #[tokio::test]
    async fn given_notices_out_of_order_within_the_grace_then_the_journal_is_not_read() {
        let (follower, journal, _) = follower().await;
        let after_subscribing = journal.queries();
        follower.on_notice(&notice(10, 10)).await;
        follower.on_notice(&notice(12, 12)).await;
        follower.tick().await;
        follower.on_notice(&notice(11, 11)).await;
        tokio::time::sleep(GRACE * 2).await;
        follower.tick().await;
        assert_eq!(follower.mark(), Some(12));
        assert_eq!(journal.queries(), after_subscribing);
    }

    #[tokio::test]
    async fn given_a_lost_notice_when_the_grace_passes_then_the_journal_supplies_the_change() {
        let (follower, journal, dropped) = follower().await;
        follower.on_notice(&notice(1, 1)).await;
        // Change 2 is journaled but its notice never arrives; 3's does.
        let appended = journal
            .append(&[change("tenant_config_lost"), change("tenant_config_next")])
            .await
            .unwrap();
        assert_eq!(appended[0].sequence, 1, "the memory journal numbers from 1");
        follower.on_notice(&notice(3, 3)).await;
        follower.tick().await;
        assert!(!dropped.0.lock().unwrap().iter().any(|s| s.contains("lost")));
        tokio::time::sleep(GRACE * 2).await;
        follower.tick().await;
        assert!(
            dropped.0.lock().unwrap().iter().any(|s| s.contains("lost")),
            "the missed change came from the journal: {:?}",
            dropped.0.lock().unwrap()
        );
        assert_eq!(follower.mark(), Some(3));
        assert_eq!(follower.counters.gaps_read.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn given_a_heartbeat_ahead_of_the_mark_then_the_last_notice_was_lost_and_is_read() {
        let (follower, journal, dropped) = follower().await;
        follower.on_notice(&notice(4, 4)).await;
        journal
            .append(&[change("tenant_config_silent")])
            .await
            .unwrap();
        follower.on_notice(&heartbeat(5)).await;
        tokio::time::sleep(GRACE * 2).await;
        follower.tick().await;
        assert!(
            dropped
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.contains("silent"))
        );
        assert_eq!(follower.mark(), Some(5));
    }

    #[tokio::test]
    async fn given_the_journal_failing_then_the_gap_stays_open_until_a_read_succeeds() {
        let (follower, journal, dropped) = follower().await;
        follower.on_notice(&notice(1, 1)).await;
        journal
            .append(&[change("tenant_config_late")])
            .await
            .unwrap();
        journal.set_failing(true);
        follower.on_notice(&heartbeat(2)).await;
        tokio::time::sleep(GRACE * 2).await;
        follower.tick().await;
        assert_eq!(follower.mark(), Some(1), "not filled by a failed read");
        journal.set_failing(false);
        // The catch-up's back-off after one failure is its interval (2 s).
        tokio::time::sleep(CatchUpSettings::AGENT.interval + GRACE).await;
        follower.tick().await;
        assert_eq!(follower.mark(), Some(2));
        assert!(dropped.0.lock().unwrap().iter().any(|s| s.contains("late")));
    }

    #[tokio::test]
    async fn subscribing_reads_the_journal_once_and_a_broken_feed_restores_polling() {
        let journal = Arc::new(MemoryJournal::new());
        let catch_up = Arc::new(CatchUp::new(journal.clone(), CatchUpSettings::AGENT));
        let follower = NoticeFollower::new(
            Arc::new(Dropped::default()),
            catch_up.clone(),
            FollowerSettings::default(),
        );
        follower.on_subscribed().await;
        assert_eq!(journal.queries(), 1);
        assert_eq!(catch_up.interval(), Duration::from_secs(3600));
        follower.on_disconnected();
        assert_eq!(catch_up.interval(), CatchUpSettings::AGENT.interval);
        assert!(!follower.subscribed());
    }

    #[tokio::test]
    async fn a_feed_silent_past_its_limit_restores_polling_until_it_is_heard_again() {
        let journal = Arc::new(MemoryJournal::new());
        let catch_up = Arc::new(CatchUp::new(journal.clone(), CatchUpSettings::AGENT));
        let follower = NoticeFollower::new(
            Arc::new(Dropped::default()),
            catch_up.clone(),
            FollowerSettings {
                silence_limit: Duration::from_millis(100),
                ..FollowerSettings::default()
            },
        );
        follower.on_subscribed().await;
        follower.tick().await;
        assert_eq!(catch_up.interval(), Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(150)).await;
        follower.tick().await;
        assert_eq!(
            catch_up.interval(),
            CatchUpSettings::AGENT.interval,
            "silent: polling"
        );
        follower.on_notice(&heartbeat(0)).await;
        assert_eq!(
            catch_up.interval(),
            Duration::from_secs(3600),
            "heard: gaps only"
        );
    }
}
