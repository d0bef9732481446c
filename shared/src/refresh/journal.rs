//! The change journal: every change record, in the order config-refresh
//! journaled it, kept for a day. config-refresh appends before it pushes; every
//! reader (config-api containers, which nothing can push to; agents that missed
//! a push) asks it what came after the last change it applied. It is also the
//! history an operator lists (`tenant-config-admin changes`).
//!
//! Entries are ordered by their *position*: the journal time (Unix ms, zero
//! padded) and the change id, so positions sort as text and never collide.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use super::change::ChangeRecord;
use super::signing::unix_ms_now;

/// How long entries are kept (the table's TTL attribute is set from it).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One journaled change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `{journaled_at_ms:013}#{change_id}`: sorts in journal order.
    pub position: String,
    /// When config-refresh journaled it (its clock), Unix ms.
    pub journaled_at_ms: i64,
    /// The stack's sequence number of this change (see
    /// [`ChangeJournal::append`]); 0 for entries journaled before sequences.
    pub sequence: u64,
    pub change: ChangeRecord,
}

impl JournalEntry {
    pub fn new(change: ChangeRecord, journaled_at_ms: i64) -> Self {
        Self {
            position: position(journaled_at_ms, &change.change_id),
            journaled_at_ms,
            sequence: 0,
            change,
        }
    }

    pub fn with_sequence(mut self, sequence: u64) -> Self {
        self.sequence = sequence;
        self
    }
}

/// The position of a change journaled at `at_ms`.
pub fn position(at_ms: i64, change_id: &str) -> String {
    format!("{at_ms:013}#{change_id}")
}

/// The first position at or after `at_ms`.
pub fn position_at(at_ms: i64) -> String {
    format!("{at_ms:013}")
}

#[derive(Debug, Clone, Error)]
pub enum JournalError {
    #[error("change journal {operation} failed: {detail}")]
    Unavailable {
        operation: &'static str,
        detail: String,
    },
    #[error("change journal entry {position} is unreadable: {reason}")]
    Unreadable { position: String, reason: String },
}

/// Where change records are kept in order.
#[async_trait]
pub trait ChangeJournal: Send + Sync {
    /// Journals `changes` at the current time, in order, before anyone is
    /// told about them, each with the next of the stack's sequence numbers
    /// (allocated as one block, so a batch's are consecutive). A block whose
    /// entries then fail to be written is never filled: readers that see
    /// the hole read the journal, which is the gap-free rule anyway.
    async fn append(&self, changes: &[ChangeRecord]) -> Result<Vec<JournalEntry>, JournalError>;

    /// The last sequence number allocated (0 before the first change): what
    /// a heartbeat on the change feed announces.
    async fn head(&self) -> Result<u64, JournalError>;

    /// Entries journaled at or after `from_ms`, oldest first, at most `limit`.
    async fn since(&self, from_ms: i64, limit: usize) -> Result<Vec<JournalEntry>, JournalError>;

    /// Entries after `position` (the next page of a query), oldest first,
    /// at most `limit`.
    async fn after(&self, position: &str, limit: usize) -> Result<Vec<JournalEntry>, JournalError>;
}

/// A journal in memory, for tests and benchmarks: the same ordering rules,
/// with a query counter and an optional failure.
#[derive(Default)]
pub struct MemoryJournal {
    entries: Mutex<Vec<JournalEntry>>,
    queries: std::sync::atomic::AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
    /// Queries answer that this entry cannot be read, while set.
    unreadable: Mutex<Option<String>>,
    /// How long each query takes to answer (a journal under load).
    delay_ms: std::sync::atomic::AtomicU64,
    /// The last sequence number allocated.
    head: std::sync::atomic::AtomicU64,
}

impl MemoryJournal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Journals `change` as if at `at_ms` (a late or skewed writer).
    pub fn insert_at(&self, change: ChangeRecord, at_ms: i64) {
        let sequence = self.head.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if let Ok(mut entries) = self.entries.lock() {
            entries.push(JournalEntry::new(change, at_ms).with_sequence(sequence));
            entries.sort_by(|a, b| a.position.cmp(&b.position));
        }
    }

    fn query(
        &self,
        selects: impl Fn(&str) -> bool,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        self.queries
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.check("query")?;
        Ok(self
            .entries
            .lock()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| selects(&e.position))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `since` and `after` calls so far.
    pub fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every call fails while set.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every query answers after `delay` (a journal table under load).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    async fn answer_late(&self) {
        let delay = self.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
    }

    /// Queries find an entry at `position` they cannot read, while set (an
    /// entry another version wrote, or a damaged one).
    pub fn set_unreadable(&self, position: Option<&str>) {
        if let Ok(mut unreadable) = self.unreadable.lock() {
            *unreadable = position.map(str::to_owned);
        }
    }

    fn check(&self, operation: &'static str) -> Result<(), JournalError> {
        if operation != "append"
            && let Some(position) = self.unreadable.lock().ok().and_then(|u| u.clone())
        {
            return Err(JournalError::Unreadable {
                position,
                reason: "injected: a subject this reader does not know".into(),
            });
        }
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(JournalError::Unavailable {
                operation,
                detail: "injected failure".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ChangeJournal for MemoryJournal {
    async fn append(&self, changes: &[ChangeRecord]) -> Result<Vec<JournalEntry>, JournalError> {
        self.check("append")?;
        let now = unix_ms_now();
        let first = self
            .head
            .fetch_add(changes.len() as u64, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let appended: Vec<JournalEntry> = changes
            .iter()
            .zip(first..)
            .map(|(change, sequence)| {
                JournalEntry::new(change.clone(), now).with_sequence(sequence)
            })
            .collect();
        if let Ok(mut entries) = self.entries.lock() {
            entries.extend(appended.iter().cloned());
            entries.sort_by(|a, b| a.position.cmp(&b.position));
        }
        Ok(appended)
    }

    async fn since(&self, from_ms: i64, limit: usize) -> Result<Vec<JournalEntry>, JournalError> {
        self.answer_late().await;
        let from = position_at(from_ms);
        self.query(|position| position >= from.as_str(), limit)
    }

    async fn after(&self, position: &str, limit: usize) -> Result<Vec<JournalEntry>, JournalError> {
        self.answer_late().await;
        self.query(|p| p > position, limit)
    }

    async fn head(&self) -> Result<u64, JournalError> {
        self.check("head")?;
        Ok(self.head.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StoreKind;
    use crate::refresh::change::Subject;
    use crate::refresh::proto::Operation;

    fn change(id: &str) -> ChangeRecord {
        ChangeRecord {
            subject: Subject::Entry(
                crate::domain::ItemKey::parse("t1", "svc", "tenant_config_x").unwrap(),
            ),
            store: StoreKind::DynamoDb,
            operation: Operation::Update,
            change_id: id.into(),
            time_unix_ms: 0,
            audit: Default::default(),
            value_type: None,
        }
    }

    #[test]
    fn positions_sort_in_time_order_as_text() {
        assert!(position(999, "z") < position(1000, "a"));
        assert!(position_at(1000) <= position(1000, "a"));
        assert!(position(999, "z") < position_at(1000));
    }

    #[tokio::test]
    async fn since_returns_entries_from_a_time_in_order_up_to_a_limit() {
        let journal = MemoryJournal::new();
        journal.insert_at(change("c"), 3_000);
        journal.insert_at(change("a"), 1_000);
        journal.insert_at(change("b"), 2_000);
        let ids = |entries: Vec<JournalEntry>| -> Vec<String> {
            entries.into_iter().map(|e| e.change.change_id).collect()
        };
        assert_eq!(ids(journal.since(2_000, 10).await.unwrap()), vec!["b", "c"]);
        assert_eq!(ids(journal.since(0, 2).await.unwrap()), vec!["a", "b"]);
        assert_eq!(journal.queries(), 2);
    }
}
