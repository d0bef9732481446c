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

use super::{Notice, random_share};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerSettings {
    /// How long a gap may stay open before the journal is read.
    pub gap_grace: Duration,
    /// Past the grace, a random delay up to this long before the gap's
    /// first read: a notice every reader missed must not send them all to
    /// the journal in the same second.
    pub gap_spread: Duration,
    /// The catch-up interval while the feed is subscribed.
    pub connected_interval: Duration,
    /// A subscribed feed that delivered nothing for this long (not even a
    /// heartbeat, due every 5 minutes) is treated as broken: the reader polls
    /// the journal until a notice arrives. It covers what a connection
    /// cannot show: the heartbeat rule or config-refresh's key gone.
    pub silence_limit: Duration,
}

impl Default for FollowerSettings {
    fn default() -> Self {
        Self {
            gap_grace: Duration::from_secs(1),
            gap_spread: Duration::from_secs(3),
            connected_interval: Duration::from_secs(3600),
            silence_limit: Duration::from_secs(660),
        }
    }
}

/// How far above the mark a reader tracks numbers one by one; past it, the
/// gap is read from the journal at once.
const MAX_TRACKED_ABOVE: u64 = 100_000;

/// Journal reads one gap gets before its remaining numbers count as never
/// written (an append that failed after taking its numbers); each after
/// twice the wait of the one before, from 1 s: all within the catch-up's
/// 10 s overlap of each other, so an entry that became visible late is found.
const MAX_GAP_READS: u32 = 4;

#[derive(Default)]
struct Sequence {
    subscribed: bool,
    /// When the feed last delivered something new (or was subscribed).
    heard: Option<Instant>,
    /// The newest notice timestamp heard: a replayed old notice does not
    /// count as hearing from the feed.
    heard_ms: i64,
    /// The feed went silent past the limit: the reader polls meanwhile.
    silent: bool,
    mark: Option<u64>,
    above: BTreeSet<u64>,
    head: u64,
    /// The open gap: when its next journal read is due, and when it was
    /// first seen (Unix ms).
    gap: Option<(Instant, i64)>,
    /// Journal reads made for the open gap.
    gap_reads: u32,
    /// The subscription's journal read is still to be made (since when,
    /// Unix ms); until it is, the catch-up's cursor is not moved.
    read_due_ms: Option<i64>,
}

impl Sequence {
    fn missing(&self) -> bool {
        let mark = self.mark.unwrap_or(0);
        !self.above.is_empty() || self.head > mark
    }

    /// Moves the mark over every number seen, and opens or closes the gap;
    /// returns whether nothing is missing.
    fn settle(&mut self, grace: Duration, spread_over: Duration) -> bool {
        // No notice yet: nothing is known to be missing.
        let Some(mut mark) = self.mark else {
            self.gap = None;
            return true;
        };
        while self.above.remove(&(mark + 1)) {
            mark += 1;
        }
        self.above.retain(|s| *s > mark);
        self.mark = Some(mark);
        self.head = self.head.max(mark);
        if self.missing() {
            if self.gap.is_none() {
                self.gap = Some((
                    Instant::now() + grace + random_share(spread_over),
                    unix_ms_now(),
                ));
                self.gap_reads = 0;
            }
            false
        } else {
            self.gap = None;
            self.gap_reads = 0;
            true
        }
    }

    /// Records a notice's numbers; returns whether nothing is missing now.
    fn record(&mut self, notice: &Notice, grace: Duration, spread_over: Duration) -> bool {
        match self.mark {
            None => self.mark = Some(notice.last),
            Some(_) if notice.is_heartbeat() => self.head = self.head.max(notice.last),
            Some(mark) if notice.last.saturating_sub(mark) > MAX_TRACKED_ABOVE => {
                // Too far ahead to track one by one: a gap, read at once.
                self.head = self.head.max(notice.last);
                self.gap = Some((Instant::now(), unix_ms_now()));
            }
            Some(mark) => self
                .above
                .extend((notice.first.max(mark + 1))..=notice.last),
        }
        self.settle(grace, spread_over)
    }

    /// Numbers a journal read returned: those entries are applied.
    fn absorb(&mut self, sequences: Vec<u64>) {
        let mark = self.mark.unwrap_or(0);
        if self.mark.is_some() {
            self.above
                .extend(sequences.into_iter().filter(|s| *s > mark));
        }
    }

    /// Everything up to the highest number known counts as applied: the
    /// journal dropped every cached entry, or the gap's reads are spent.
    fn fill(&mut self) {
        let highest = self.above.last().copied().unwrap_or(0);
        self.mark = Some(self.mark.unwrap_or(0).max(highest).max(self.head));
        self.above.clear();
        self.gap = None;
        self.gap_reads = 0;
    }
}

/// What the next tick reads the journal for.
enum Due {
    /// The subscription's read (since when, Unix ms).
    Subscription(i64),
    /// An open gap's read (first seen, Unix ms).
    Gap(i64),
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
        catch_up.keep_read_sequences();
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
    /// published meanwhile; until that read succeeds (it is retried on every
    /// tick) the catch-up's cursor stays where it was.
    pub async fn on_subscribed(&self) {
        *self.sequence() = Sequence {
            subscribed: true,
            heard: Some(Instant::now()),
            read_due_ms: Some(unix_ms_now()),
            ..Sequence::default()
        };
        self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.catch_up.set_interval(self.settings.connected_interval);
        self.tick().await;
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
        let (covered, was_silent) = {
            let mut sequence = self.sequence();
            // Before the subscription is acknowledged (a retained notice may
            // come first), only the drops count.
            if !sequence.subscribed {
                return;
            }
            let mut was_silent = false;
            if notice.timestamp_ms > sequence.heard_ms {
                sequence.heard_ms = notice.timestamp_ms;
                sequence.heard = Some(Instant::now());
                was_silent = std::mem::replace(&mut sequence.silent, false);
            }
            let contiguous =
                sequence.record(notice, self.settings.gap_grace, self.settings.gap_spread);
            (contiguous && sequence.read_due_ms.is_none(), was_silent)
        };
        if was_silent {
            tracing::info!("change feed: heard again; journal reads only for gaps");
            self.catch_up.set_interval(self.settings.connected_interval);
        }
        if covered {
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

    /// Called every few hundred milliseconds (and on subscribing): makes
    /// the subscription's journal read, or an open gap's once its grace has
    /// passed, and notices a silent feed.
    pub async fn tick(&self) {
        let (due, fell_silent) = {
            let mut sequence = self.sequence();
            let fell_silent = sequence.subscribed
                && !sequence.silent
                && sequence
                    .heard
                    .is_some_and(|heard| heard.elapsed() > self.settings.silence_limit);
            if fell_silent {
                sequence.silent = true;
            }
            let due = match (sequence.read_due_ms, sequence.gap) {
                (Some(since), _) => Some(Due::Subscription(since)),
                (None, Some((at, seen_ms))) if Instant::now() >= at => Some(Due::Gap(seen_ms)),
                _ => None,
            };
            (due, fell_silent)
        };
        if fell_silent {
            tracing::warn!(
                silent_secs = self.settings.silence_limit.as_secs(),
                "change feed: nothing heard, not even a heartbeat; polling the journal meanwhile"
            );
            self.catch_up.set_interval(self.fallback_interval);
        }
        let Some(due) = due else {
            return;
        };
        let since = match due {
            Due::Subscription(since) | Due::Gap(since) => since,
        };
        self.catch_up.request_now();
        let applied = self.catch_up.maybe_catch_up(&self.reads).await;
        // Done when a journal read started after the need arose, by this
        // tick or by a read that got there first; otherwise (the journal
        // failing, or a read in flight from before) the next tick tries
        // again, within the catch-up's back-off.
        let read = matches!(applied, Applied::Entries(_) | Applied::Everything)
            || self.catch_up.read_ms() > since;
        if !read {
            return;
        }
        let sequences = self.catch_up.take_read_sequences();
        let mut sequence = self.sequence();
        sequence.absorb(sequences);
        match due {
            Due::Subscription(_) => sequence.read_due_ms = None,
            Due::Gap(seen_ms) if sequence.gap.is_some_and(|(_, s)| s == seen_ms) => {
                self.counters.gaps_read.fetch_add(1, Ordering::Relaxed);
                sequence.gap_reads += 1;
            }
            Due::Gap(_) => {}
        }
        if matches!(applied, Applied::Everything) {
            sequence.fill();
            return;
        }
        if sequence.settle(self.settings.gap_grace, self.settings.gap_spread) {
            return;
        }
        if sequence.gap_reads >= MAX_GAP_READS {
            tracing::info!(
                mark = sequence.mark.unwrap_or(0),
                head = sequence.head,
                "change feed: numbers the journal never showed; taken as appends that failed"
            );
            sequence.fill();
        } else if sequence.gap_reads > 0 {
            let next = Instant::now() + Duration::from_secs(1 << (sequence.gap_reads - 1));
            if let Some((at, _)) = sequence.gap.as_mut() {
                *at = next;
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
                gap_spread: Duration::ZERO,
                connected_interval: Duration::from_secs(3600),
                silence_limit: Duration::from_secs(660),
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

    /// Journals `keys` and returns the notice config-refresh would publish
    /// for them (the journal's own sequence numbers).
    async fn journaled(journal: &MemoryJournal, keys: &[&str]) -> Notice {
        let changes: Vec<ChangeRecord> = keys.iter().map(|k| change(k)).collect();
        let entries = journal.append(&changes).await.unwrap();
        Notice {
            first: entries[0].sequence,
            last: entries[entries.len() - 1].sequence,
            entries: entries
                .iter()
                .map(|e| NoticedEntry {
                    subject: e.change.subject.clone(),
                    changed: Changed::Updated(None),
                    position: e.position.clone(),
                    journaled_at_ms: e.journaled_at_ms,
                    sequence: e.sequence,
                })
                .collect(),
            timestamp_ms: unix_ms_now(),
        }
    }

    fn dropped_any(dropped: &Dropped, part: &str) -> bool {
        dropped.0.lock().unwrap().iter().any(|s| s.contains(part))
    }

    #[tokio::test]
    async fn given_a_lost_notice_when_the_grace_passes_then_the_journal_supplies_the_change() {
        let (follower, journal, dropped) = follower().await;
        follower
            .on_notice(&journaled(&journal, &["tenant_config_first"]).await)
            .await;
        // Two changes journaled; the first one's notice never arrives.
        let _lost = journaled(&journal, &["tenant_config_lost"]).await;
        let next = journaled(&journal, &["tenant_config_next"]).await;
        follower.on_notice(&next).await;
        follower.tick().await;
        assert!(!dropped_any(&dropped, "lost"), "not before the grace");
        tokio::time::sleep(GRACE * 2).await;
        follower.tick().await;
        assert!(
            dropped_any(&dropped, "lost"),
            "the missed change came from the journal: {:?}",
            dropped.0.lock().unwrap()
        );
        assert_eq!(follower.mark(), Some(3));
        assert_eq!(follower.counters.gaps_read.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn given_a_heartbeat_ahead_of_the_mark_then_the_last_notice_was_lost_and_is_read() {
        let (follower, journal, dropped) = follower().await;
        follower
            .on_notice(&journaled(&journal, &["tenant_config_seen"]).await)
            .await;
        let _silent = journaled(&journal, &["tenant_config_silent"]).await;
        follower.on_notice(&heartbeat(2)).await;
        tokio::time::sleep(GRACE * 2).await;
        follower.tick().await;
        assert!(dropped_any(&dropped, "silent"));
        assert_eq!(follower.mark(), Some(2));
    }

    #[tokio::test]
    async fn given_the_journal_failing_then_the_gap_stays_open_until_a_read_succeeds() {
        let (follower, journal, dropped) = follower().await;
        follower
            .on_notice(&journaled(&journal, &["tenant_config_a"]).await)
            .await;
        let _late = journaled(&journal, &["tenant_config_late"]).await;
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
        assert!(dropped_any(&dropped, "late"));
    }

    #[tokio::test]
    async fn a_number_the_journal_never_shows_is_read_again_then_taken_as_a_failed_append() {
        let (follower, journal, _) = follower().await;
        follower
            .on_notice(&journaled(&journal, &["tenant_config_a"]).await)
            .await;
        // Number 2 was taken by an append whose write then failed: its entry
        // never appears; number 3's notice arrives.
        // (journaled as 2, announced as 4: number 3 is the hole)
        let mut skipped = journaled(&journal, &["tenant_config_b"]).await;
        skipped.first = 4;
        skipped.last = 4;
        skipped.entries[0].sequence = 4;
        follower.on_notice(&skipped).await;
        let reads = journal.queries();
        // Read after the grace, then again 1, 2 and 4 s later (an entry that
        // became visible late would be found by one of them)...
        let started = Instant::now();
        while follower.mark() != Some(4) {
            assert!(
                started.elapsed() < Duration::from_secs(12),
                "never given up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            follower.tick().await;
        }
        // ...then taken as never written.
        assert_eq!(journal.queries() - reads, 4);
    }

    #[tokio::test]
    async fn a_subscription_read_that_fails_is_made_again_before_the_cursor_moves() {
        let journal = Arc::new(MemoryJournal::new());
        let catch_up = Arc::new(CatchUp::new(journal.clone(), CatchUpSettings::AGENT));
        let dropped = Arc::new(Dropped::default());
        let follower = NoticeFollower::new(
            dropped.clone(),
            catch_up.clone(),
            FollowerSettings {
                gap_spread: Duration::ZERO,
                ..FollowerSettings::default()
            },
        );
        // GIVEN a change journaled while the reader was not subscribed
        let _missed = journaled(&journal, &["tenant_config_missed"]).await;
        // WHEN it subscribes while the journal fails, and a newer notice
        // (the retained one) arrives
        let newer = journaled(&journal, &["tenant_config_newer"]).await;
        journal.set_failing(true);
        follower.on_subscribed().await;
        follower.on_notice(&newer).await;
        assert!(!dropped_any(&dropped, "missed"));
        // THEN once the journal answers, the subscription's read is made and
        // finds the change the notice did not name
        journal.set_failing(false);
        tokio::time::sleep(CatchUpSettings::AGENT.interval + GRACE).await;
        follower.tick().await;
        assert!(
            dropped_any(&dropped, "missed"),
            "{:?}",
            dropped.0.lock().unwrap()
        );
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
