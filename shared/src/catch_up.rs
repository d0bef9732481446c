//! Catch-up: how a reader converges on every change, including the ones no
//! push reached (config-api containers cannot be pushed to; an agent may have
//! been paused, partitioned or restarting when the Refresh went out).
//!
//! On a read, at most once per interval, one caller asks the change journal
//! what was journaled since the last query (minus an overlap that absorbs
//! write latency and clock skew between writers) and drops exactly those
//! entries, "not found" answers included. Reads arriving while that query is
//! in flight are answered from the cache when the reader caught up within
//! [`IN_FLIGHT_ALLOWANCE`] past the interval (the freshness bound allows it),
//! and wait for the query otherwise (a reader back from idle). Entries
//! seen in the overlap are not dropped twice. A reader that has not caught up
//! for longer than the journal keeps entries drops its whole cache, and so does
//! one that finds more entries than it is willing to apply one by one. With no
//! reads there are no queries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use crate::domain::Changed;
use crate::error::ConfigError;
use crate::refresh::change::Subject;
use crate::refresh::journal::{ChangeJournal, JournalEntry, JournalError, RETENTION};
use crate::refresh::signing::unix_ms_now;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpSettings {
    /// At most one journal query per interval.
    pub interval: Duration,
    /// How far before the previous query each query starts again.
    pub overlap: Duration,
    /// The longest a read waits for a journal query before it goes on without.
    pub timeout: Duration,
    /// Entries per journal query. A burst of more is read in further pages
    /// (up to [`MAX_PAGES`] per catch-up) and applied entry by entry; only a
    /// reader further behind than that drops everything.
    pub max_entries: usize,
}

impl CatchUpSettings {
    /// config-api: a change is served everywhere within about a second.
    pub const LAMBDA: CatchUpSettings = CatchUpSettings {
        interval: Duration::from_secs(1),
        overlap: Duration::from_secs(10),
        timeout: Duration::from_millis(500),
        max_entries: 1000,
    };
    /// Agents: pushes are the fast path; the journal makes them certain.
    pub const AGENT: CatchUpSettings = CatchUpSettings {
        interval: Duration::from_secs(2),
        ..Self::LAMBDA
    };
}

/// What catch-up drops entries from: a reader's caches ([`crate::reads::ConfigReads`]).
pub trait Invalidate: Sync {
    /// Drops what a change makes stale: one cached entry (its last good
    /// value survives unless the change was a delete or of type), a shared
    /// layer's snapshot, or a tenant's registration.
    fn invalidate(
        &self,
        subject: &Subject,
        change: Changed,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;

    /// Drops every cached entry.
    fn invalidate_all(&self);
}

/// What one catch-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Not due yet, or another read just did it.
    NotDue,
    /// Another read's query is in flight; this read did not wait for it.
    InFlight,
    /// The journal could not be read; retried after the interval, doubling
    /// with each further failure up to [`MAX_FAILURE_BACKOFF`].
    Failed,
    /// This many entries were dropped.
    Entries(usize),
    /// The gap was too long (or too many changes): every entry was dropped.
    Everything,
}

struct Cursor {
    /// Where the next query starts (before the overlap), Unix ms.
    from_ms: i64,
    /// Positions applied inside the overlap window, with their journal time.
    seen: HashMap<String, i64>,
}

pub struct CatchUp {
    journal: Arc<dyn ChangeJournal>,
    settings: CatchUpSettings,
    /// The interval in force, ms: `settings.interval`, or what a change feed
    /// set ([`CatchUp::set_interval`]).
    interval_ms: AtomicI64,
    /// When the next query is due, Unix ms; read without the lock.
    due_ms: AtomicI64,
    cursor: tokio::sync::Mutex<Cursor>,
    queries: AtomicUsize,
    /// Consecutive failed queries: each doubles the wait before the next, so
    /// a stalled journal costs one read the query timeout every few seconds,
    /// not every interval.
    failures: AtomicU32,
    /// When the last catch-up that applied the journal started, Unix ms: the
    /// cache reflects every change journaled before it.
    caught_up_ms: AtomicI64,
    /// When the last journal read that was applied started, Unix ms (a
    /// change feed moves `caught_up_ms`, never this).
    read_ms: AtomicI64,
    /// The sequence numbers of the entries the journal reads returned since
    /// a change feed last took them ([`CatchUp::take_read_sequences`]);
    /// kept only once one asks ([`CatchUp::keep_read_sequences`]): a reader
    /// without a feed (config-api) collects nothing on its reads.
    read_sequences: std::sync::Mutex<Vec<u64>>,
    sequences_wanted: std::sync::atomic::AtomicBool,
}

/// Most journal pages one catch-up reads before it gives up entry-by-entry
/// and drops every cached entry instead (10,000 entries with the defaults:
/// far more than one interval's changes, even with the overlap re-read).
pub const MAX_PAGES: usize = 10;

/// Why the journal could not be paged through.
#[derive(Debug)]
pub enum PagingError {
    Journal(JournalError),
    /// The deadline passed first.
    TimedOut,
}

/// The journal's entries since `from_ms`, in pages of `page_size` (each
/// after the previous page's last entry), at most [`MAX_PAGES`] of them, all
/// before `deadline`; and whether that was all (a page came back short).
/// `on_query` is told of each query. What catch-up and a Watch resume both
/// read.
pub async fn read_pages(
    journal: &dyn ChangeJournal,
    from_ms: i64,
    page_size: usize,
    deadline: tokio::time::Instant,
    mut on_query: impl FnMut(),
) -> Result<(Vec<JournalEntry>, bool), PagingError> {
    let mut entries: Vec<JournalEntry> = Vec::new();
    for _ in 0..MAX_PAGES {
        on_query();
        let query = match entries.last() {
            None => journal.since(from_ms, page_size),
            Some(last) => journal.after(&last.position, page_size),
        };
        let page = match tokio::time::timeout_at(deadline, query).await {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => return Err(PagingError::Journal(error)),
            Err(_) => return Err(PagingError::TimedOut),
        };
        let full = page.len() >= page_size;
        entries.extend(page);
        if !full {
            return Ok((entries, true));
        }
    }
    Ok((entries, false))
}

/// How far past the interval a reader's last catch-up may be for a read to
/// be answered from the cache while another read's query is in flight: the
/// "+ 1 s" of the freshness bound (catch-up interval + 1 s, docs/design.md).
/// Older than that (a reader back from idle), the read waits for the query.
pub const IN_FLIGHT_ALLOWANCE: Duration = Duration::from_secs(1);

/// The longest wait between queries while the journal keeps failing. The
/// cursor does not move on failure, so nothing journaled meanwhile is missed.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(8);

impl CatchUp {
    /// Starts from now: a new reader's cache is empty, so nothing before it
    /// matters.
    pub fn new(journal: Arc<dyn ChangeJournal>, settings: CatchUpSettings) -> Self {
        let now = unix_ms_now();
        Self {
            journal,
            settings,
            interval_ms: AtomicI64::new(settings.interval.as_millis() as i64),
            due_ms: AtomicI64::new(now + settings.interval.as_millis() as i64),
            cursor: tokio::sync::Mutex::new(Cursor {
                from_ms: now,
                seen: HashMap::new(),
            }),
            queries: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            caught_up_ms: AtomicI64::new(now),
            read_ms: AtomicI64::new(0),
            read_sequences: std::sync::Mutex::new(Vec::new()),
            sequences_wanted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Schedules the next query after a failure; returns the wait in ms.
    fn back_off(&self, started: i64) -> u64 {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel).min(16);
        // From the reader's own interval, not a feed's long one: a journal
        // that failed a gap's read is tried again within seconds.
        let interval = self.settings.interval;
        let wait = interval
            .saturating_mul(1 << failures)
            .min(MAX_FAILURE_BACKOFF.max(interval));
        let wait_ms = wait.as_millis() as u64;
        self.due_ms
            .store(started + wait_ms as i64, Ordering::Release);
        wait_ms
    }

    /// Whether a read must wait for the query in flight: the cache is older
    /// than the freshness bound allows, and the journal is not known to be
    /// failing (waiting on a failing query would only add its timeout).
    fn must_wait(&self) -> bool {
        let allowed = (self.interval() + IN_FLIGHT_ALLOWANCE).as_millis() as i64;
        unix_ms_now() - self.caught_up_ms.load(Ordering::Acquire) > allowed
            && self.failures.load(Ordering::Acquire) == 0
    }

    /// When the last catch-up that applied the journal started, Unix ms:
    /// the cache reflects every change journaled before it (less the
    /// overlap's lateness).
    pub fn caught_up_ms(&self) -> i64 {
        self.caught_up_ms.load(Ordering::Acquire)
    }

    pub fn settings(&self) -> CatchUpSettings {
        self.settings
    }

    /// When the last journal read that was applied started, Unix ms (0
    /// before the first).
    pub fn read_ms(&self) -> i64 {
        self.read_ms.load(Ordering::Acquire)
    }

    /// The sequence numbers of the entries journal reads returned since the
    /// last call (a change feed fills its holes with them); bounded.
    pub fn take_read_sequences(&self) -> Vec<u64> {
        self.read_sequences
            .lock()
            .map(|mut seen| std::mem::take(&mut *seen))
            .unwrap_or_default()
    }

    /// From now on, keeps the sequence numbers of the entries each read
    /// returns, for [`CatchUp::take_read_sequences`] (a change feed's
    /// follower asks, as it is made).
    pub fn keep_read_sequences(&self) {
        self.sequences_wanted.store(true, Ordering::Release);
    }

    fn note_read_sequences(&self, entries: &[JournalEntry]) {
        if !self.sequences_wanted.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut seen) = self.read_sequences.lock() {
            // Bounded: a reader nobody takes them from keeps the latest.
            if seen.len() > 100_000 {
                seen.clear();
            }
            seen.extend(entries.iter().map(|e| e.sequence).filter(|s| *s > 0));
        }
    }

    /// The interval in force.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Acquire).max(0) as u64)
    }

    /// Changes the interval: a change feed lengthens it while it delivers
    /// (it tells the reader what changed) and restores the settings' when
    /// its connection breaks. A shorter interval applies at once, counted
    /// from the last catch-up: a reader whose feed broke long after its last
    /// query reads the journal on its next read.
    pub fn set_interval(&self, interval: Duration) {
        let interval_ms = interval.as_millis() as i64;
        self.interval_ms.store(interval_ms, Ordering::Release);
        if self.failures.load(Ordering::Acquire) == 0 {
            self.due_ms
                .fetch_min(self.caught_up_ms() + interval_ms, Ordering::AcqRel);
        }
    }

    /// Makes the next [`CatchUp::maybe_catch_up`] query the journal (a change
    /// feed saw a gap, or reconnected), unless the journal is failing: then
    /// its back-off stands.
    pub fn request_now(&self) {
        if self.failures.load(Ordering::Acquire) == 0 {
            self.due_ms.fetch_min(unix_ms_now(), Ordering::AcqRel);
        }
    }

    /// A change feed applied every change journaled up to `through_ms`
    /// (config-refresh's clock) and, among them, `applied` (positions and
    /// journal times): the next query starts there, less the overlap, and
    /// does not apply those again. Skipped while a query is in flight (it
    /// moves the cursor itself).
    pub fn covered(&self, applied: impl IntoIterator<Item = (String, i64)>, through_ms: i64) {
        let Ok(mut cursor) = self.cursor.try_lock() else {
            return;
        };
        let overlap = self.settings.overlap.as_millis() as i64;
        // Never past this reader's own clock: the cursor is read against it.
        let through_ms = through_ms.min(unix_ms_now());
        if through_ms > cursor.from_ms {
            cursor.from_ms = through_ms;
            self.caught_up_ms.fetch_max(through_ms, Ordering::AcqRel);
        }
        let oldest_kept = cursor.from_ms - overlap;
        for (position, at) in applied {
            if at >= oldest_kept {
                cursor.seen.insert(position, at);
            }
        }
        cursor.seen.retain(|_, at| *at >= oldest_kept);
    }

    /// The journal it reads (a watcher resuming reads it too).
    pub fn journal(&self) -> &Arc<dyn ChangeJournal> {
        &self.journal
    }

    /// Journal queries made so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Called before every cached read: catches up if the interval has passed.
    pub async fn maybe_catch_up(&self, reads: &impl Invalidate) -> Applied {
        let due = self.due_ms.load(Ordering::Acquire);
        if unix_ms_now() < due {
            return Applied::NotDue;
        }
        // One query at a time. Reads arriving while it is in flight are
        // answered from the cache as it stands when the last catch-up is
        // recent enough for the freshness bound: queued behind a journal
        // slowed by another tenant's writes, every read of every tenant would
        // wait out the query, and before, each then ran one more in turn. A
        // reader back from idle is not recent: its reads wait, bounded by the
        // query's timeout.
        let mut cursor = match self.cursor.try_lock() {
            Ok(cursor) => cursor,
            Err(_) if !self.must_wait() => return Applied::InFlight,
            Err(_) => self.cursor.lock().await,
        };
        let started = unix_ms_now();
        // Whoever waited finds it done, even when the query outlasted the
        // interval (each waiter would otherwise run one more in turn).
        let due_now = self.due_ms.load(Ordering::Acquire);
        if started < due_now || due_now != due {
            return Applied::NotDue;
        }
        let interval = self.interval_ms.load(Ordering::Acquire);
        let overlap = self.settings.overlap.as_millis() as i64;
        let page_size = self.settings.max_entries.max(1);
        // Pages of the journal since the cursor (less the overlap, for late
        // writers). One timeout for all the pages: the read that made this
        // query (and any read back from idle waiting behind it) is held no
        // longer than for a single query.
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let paged = read_pages(
            self.journal.as_ref(),
            cursor.from_ms - overlap,
            page_size,
            deadline,
            || {
                self.queries.fetch_add(1, Ordering::SeqCst);
            },
        )
        .await;
        let (entries, complete) = match paged {
            Ok(paged) => paged,
            // An entry this reader cannot read (another version's, or
            // damaged) names a change it cannot apply: everything is
            // dropped and the reader moves past it, rather than failing
            // every catch-up while the entry is kept (a day).
            Err(PagingError::Journal(JournalError::Unreadable { position, reason })) => {
                tracing::warn!(%position, %reason, "catch-up: unreadable journal entry; dropping every cached entry");
                self.failures.store(0, Ordering::Release);
                reads.invalidate_all();
                cursor.seen.clear();
                cursor.from_ms = started;
                self.caught_up_ms.store(started, Ordering::Release);
                self.read_ms.store(started, Ordering::Release);
                self.due_ms.store(started + interval, Ordering::Release);
                return Applied::Everything;
            }
            Err(PagingError::Journal(error)) => {
                let retry_in = self.back_off(started);
                tracing::warn!(%error, retry_in_ms = retry_in, "catch-up: journal query failed");
                return Applied::Failed;
            }
            Err(PagingError::TimedOut) => {
                let retry_in = self.back_off(started);
                tracing::warn!(
                    timeout_ms = self.settings.timeout.as_millis() as u64,
                    retry_in_ms = retry_in,
                    "catch-up: journal query timed out"
                );
                return Applied::Failed;
            }
        };
        self.failures.store(0, Ordering::Release);
        self.note_read_sequences(&entries);
        let gap_ms = started - cursor.from_ms;
        let applied = if gap_ms >= RETENTION.as_millis() as i64 - overlap || !complete {
            tracing::info!(
                gap_ms,
                entries = entries.len(),
                "catch-up: too far behind the journal; dropping every cached entry"
            );
            reads.invalidate_all();
            cursor.seen.clear();
            Applied::Everything
        } else {
            let mut dropped = 0;
            for entry in entries {
                if cursor.seen.contains_key(&entry.position) {
                    continue;
                }
                if reads
                    .invalidate(&entry.change.subject, entry.change.changed())
                    .await
                    .is_ok()
                {
                    dropped += 1;
                }
                cursor.seen.insert(entry.position, entry.journaled_at_ms);
            }
            Applied::Entries(dropped)
        };
        cursor.from_ms = started;
        self.caught_up_ms.fetch_max(started, Ordering::AcqRel);
        self.read_ms.store(started, Ordering::Release);
        let oldest_kept = started - overlap;
        cursor.seen.retain(|_, at| *at >= oldest_kept);
        self.due_ms.store(started + interval, Ordering::Release);
        applied
    }
}
