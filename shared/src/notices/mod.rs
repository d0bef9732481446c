//! The change feed: how a fleet of any size learns what changed without
//! each reader querying the change journal.
//!
//! config-refresh journals each change with the stack's next sequence number
//! ([`crate::refresh::journal::ChangeJournal::append`]), then publishes one
//! signed [`ChangeNotice`] per invocation on an MQTT topic (AWS IoT Core in
//! AWS, a rumqttd broker in the local stack), retained, and every 5 minutes
//! a heartbeat naming the journal's head. Every reader subscribes to the
//! topic ([`mqtt`]): it drops the entries a notice names, and from the
//! sequence numbers knows whether it missed one ([`follower`]). Only then,
//! after a short grace for notices arriving out of order, or after its
//! connection broke, does it read the journal. So with the feed up each
//! reader queries the journal once per *gap* it sees or *reconnect*, not
//! once per second: with nothing lost, change detection's store cost does
//! not grow with the fleet.
//!
//! The design, the options set aside and the figures: docs/design.md
//! ("Past one fleet") and bench/RESULTS.md.

pub mod feed;
pub mod follower;
pub mod iot;
pub mod mqtt;

use std::time::Duration;

use prost::Message;
use thiserror::Error;

use crate::domain::Changed;
use crate::refresh::change::Subject;
use crate::refresh::journal::JournalEntry;
use crate::refresh::proto::{ChangeNotice, NoticedChange};
use crate::refresh::signing::{RefreshKey, SignatureError, TrustedKeys, canonical};

/// Notices older than this are dropped: a replayed old notice can only
/// drop entries again, but a reader need not take work from the past.
pub const NOTICE_MAX_AGE: Duration = Duration::from_secs(600);
/// How far ahead of the reader's clock a notice's timestamp may be.
pub const NOTICE_MAX_SKEW: Duration = Duration::from_secs(60);
/// The largest notice published or accepted: AWS IoT Core's largest message
/// is 128 KB.
pub const MAX_NOTICE_BYTES: usize = 128 * 1024;
/// Changes per notice: a change is at most about 500 bytes (identifiers are
/// bounded), so 100 of them stay far under [`MAX_NOTICE_BYTES`].
pub const MAX_CHANGES_PER_NOTICE: usize = 100;
/// The widest sequence range one notice may claim: a forged or broken one
/// cannot make a reader track millions of numbers.
pub const MAX_NOTICE_SPAN: u64 = 10_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NoticeError {
    #[error("notice is {0} bytes, more than {MAX_NOTICE_BYTES}")]
    TooLarge(usize),
    #[error("notice is not a ChangeNotice: {0}")]
    Malformed(String),
    #[error("notice signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("notice is {age_ms} ms old, older than {} s", NOTICE_MAX_AGE.as_secs())]
    Stale { age_ms: i64 },
    #[error("notice is {ahead_ms} ms ahead of this reader's clock")]
    FromTheFuture { ahead_ms: i64 },
    #[error("notice claims sequence numbers {first}..={last}")]
    BadRange { first: u64, last: u64 },
}

/// One change a notice names, checked and ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticedEntry {
    pub subject: Subject,
    pub changed: Changed,
    pub position: String,
    pub journaled_at_ms: i64,
    pub sequence: u64,
}

/// A notice whose signature, age and contents were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The sequence numbers it covers, `first..=last`; a heartbeat covers
    /// none (`first == last + 1`) and announces `last` as the head.
    pub first: u64,
    pub last: u64,
    pub entries: Vec<NoticedEntry>,
    pub timestamp_ms: i64,
}

impl Notice {
    pub fn is_heartbeat(&self) -> bool {
        self.first > self.last
    }
}

/// A random share of `of`, from none to all of it: what spreads a fleet's
/// gap reads and reconnections (spreading, not secrecy: an unavailable
/// source of randomness gives none).
pub(crate) fn random_share(of: Duration) -> Duration {
    let mut bytes = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    of.mul_f64(f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX))
}

/// The text a notice's signature covers (see `ChangeNotice` in the proto).
pub fn notice_canonical(notice: &ChangeNotice) -> String {
    let mut text = format!(
        "tenantconfig.v1.ChangeNotice\n{}\n{}\n{}",
        notice.timestamp_ms, notice.first_sequence, notice.last_sequence
    );
    for noticed in &notice.changes {
        let change = noticed.change.clone().unwrap_or_default();
        text.push_str(&format!(
            "\n--\n{}\n{}\n{}\n{}",
            noticed.sequence,
            noticed.position,
            noticed.journaled_at_ms,
            canonical(&change, notice.timestamp_ms)
        ));
    }
    text
}

fn signed(key: &RefreshKey, mut notice: ChangeNotice) -> Vec<u8> {
    notice.signature = key.sign_text(&notice_canonical(&notice));
    notice.encode_to_vec()
}

/// The notices announcing `entries` (one journal append: consecutive
/// sequence numbers), at most [`MAX_CHANGES_PER_NOTICE`] changes each,
/// encoded and signed.
pub fn notices_of(entries: &[JournalEntry], key: &RefreshKey, now_ms: i64) -> Vec<Vec<u8>> {
    entries
        .chunks(MAX_CHANGES_PER_NOTICE)
        .filter_map(|chunk| {
            let first = chunk.first()?.sequence;
            let last = chunk.last()?.sequence;
            let changes = chunk
                .iter()
                .map(|entry| NoticedChange {
                    change: Some(entry.change.refresh_request()),
                    position: entry.position.clone(),
                    journaled_at_ms: entry.journaled_at_ms,
                    sequence: entry.sequence,
                })
                .collect();
            Some(signed(
                key,
                ChangeNotice {
                    first_sequence: first,
                    last_sequence: last,
                    changes,
                    timestamp_ms: now_ms,
                    signature: String::new(),
                },
            ))
        })
        .collect()
}

/// A heartbeat announcing `head`, encoded and signed.
pub fn heartbeat(head: u64, key: &RefreshKey, now_ms: i64) -> Vec<u8> {
    signed(
        key,
        ChangeNotice {
            first_sequence: head + 1,
            last_sequence: head,
            changes: Vec::new(),
            timestamp_ms: now_ms,
            signature: String::new(),
        },
    )
}

/// Decodes and checks a notice as it came off the topic.
pub fn verify(payload: &[u8], keys: &TrustedKeys, now_ms: i64) -> Result<Notice, NoticeError> {
    if payload.len() > MAX_NOTICE_BYTES {
        return Err(NoticeError::TooLarge(payload.len()));
    }
    let notice =
        ChangeNotice::decode(payload).map_err(|e| NoticeError::Malformed(e.to_string()))?;
    keys.verify_text(&notice_canonical(&notice), &notice.signature)?;
    let age_ms = now_ms - notice.timestamp_ms;
    if age_ms > NOTICE_MAX_AGE.as_millis() as i64 {
        return Err(NoticeError::Stale { age_ms });
    }
    if -age_ms > NOTICE_MAX_SKEW.as_millis() as i64 {
        return Err(NoticeError::FromTheFuture { ahead_ms: -age_ms });
    }
    let (first, last) = (notice.first_sequence, notice.last_sequence);
    let heartbeat = first == last.saturating_add(1) && notice.changes.is_empty();
    let span_ok = first <= last && last - first < MAX_NOTICE_SPAN;
    if !heartbeat && (!span_ok || first == 0 || notice.changes.is_empty()) {
        return Err(NoticeError::BadRange { first, last });
    }
    let mut entries = Vec::with_capacity(notice.changes.len());
    for noticed in notice.changes {
        let change = noticed
            .change
            .ok_or_else(|| NoticeError::Malformed("a change without its names".to_owned()))?;
        // The signed text is line-separated: a field holding a line break
        // could make two different notices sign alike.
        if [&noticed.position, &change.event_id, &change.value_type]
            .iter()
            .any(|field| field.contains(['\n', '\r']) || field.len() > 256)
        {
            return Err(NoticeError::Malformed(
                "a field with a line break or over 256 bytes".to_owned(),
            ));
        }
        if !(first..=last).contains(&noticed.sequence) {
            return Err(NoticeError::BadRange { first, last });
        }
        let subject = change
            .subject()
            .map_err(|e| NoticeError::Malformed(e.to_string()))?;
        entries.push(NoticedEntry {
            subject,
            changed: change.changed(),
            position: noticed.position,
            journaled_at_ms: noticed.journaled_at_ms,
            sequence: noticed.sequence,
        });
    }
    Ok(Notice {
        first,
        last,
        entries,
        timestamp_ms: notice.timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ItemKey, StoreKind};
    use crate::refresh::change::ChangeRecord;
    use crate::refresh::proto::Operation;

    const NOW: i64 = 1_800_000_000_000;

    fn key(id: &str) -> RefreshKey {
        RefreshKey::from_seed(id, &[7u8; 32]).unwrap()
    }

    fn entries(first: u64, count: usize) -> Vec<JournalEntry> {
        (0..count)
            .map(|i| {
                JournalEntry::new(
                    ChangeRecord {
                        subject: Subject::Entry(
                            ItemKey::parse("tenant-a", "billing", &format!("tenant_config_k{i}"))
                                .unwrap(),
                        ),
                        store: StoreKind::DynamoDb,
                        operation: if i % 2 == 0 {
                            Operation::Update
                        } else {
                            Operation::Delete
                        },
                        change_id: format!("change-{i}"),
                        time_unix_ms: NOW - 5,
                        audit: Default::default(),
                        value_type: None,
                    },
                    NOW - 2,
                )
                .with_sequence(first + i as u64)
            })
            .collect()
    }

    #[test]
    fn given_a_journal_append_when_announced_then_a_reader_gets_every_change_and_its_sequence() {
        let published = notices_of(&entries(41, 3), &key("k1"), NOW);
        assert_eq!(published.len(), 1);
        let notice = verify(&published[0], &key("k1").trusted(), NOW + 10).unwrap();
        assert_eq!((notice.first, notice.last), (41, 43));
        assert!(!notice.is_heartbeat());
        let names: Vec<(String, Changed, u64)> = notice
            .entries
            .iter()
            .map(|e| (e.subject.to_string(), e.changed, e.sequence))
            .collect();
        assert_eq!(names.len(), 3);
        assert_eq!(names[1].1, Changed::Deleted);
        assert_eq!(names[2].2, 43);
        assert!(notice.entries[0].position.ends_with("#change-0"));
    }

    #[test]
    fn given_a_large_batch_when_announced_then_it_is_split_into_bounded_consecutive_notices() {
        let published = notices_of(&entries(1, 250), &key("k1"), NOW);
        let ranges: Vec<(u64, u64)> = published
            .iter()
            .map(|p| {
                assert!(p.len() < MAX_NOTICE_BYTES);
                let n = verify(p, &key("k1").trusted(), NOW).unwrap();
                (n.first, n.last)
            })
            .collect();
        assert_eq!(ranges, vec![(1, 100), (101, 200), (201, 250)]);
    }

    #[test]
    fn a_heartbeat_names_the_head_and_no_change() {
        let notice = verify(&heartbeat(17, &key("k1"), NOW), &key("k1").trusted(), NOW).unwrap();
        assert!(notice.is_heartbeat());
        assert_eq!(notice.last, 17);
        assert!(notice.entries.is_empty());
    }

    #[test]
    fn forged_altered_old_or_future_notices_are_refused() {
        let trusted = key("k1").trusted();
        let other = RefreshKey::from_seed("k1", &[8u8; 32]).unwrap();
        let forged = notices_of(&entries(1, 1), &other, NOW);
        assert_eq!(
            verify(&forged[0], &trusted, NOW),
            Err(NoticeError::Signature(SignatureError::Mismatch))
        );
        // The head moved by someone without the key: a reader would read the
        // journal for nothing.
        let mut altered = ChangeNotice::decode(heartbeat(5, &key("k1"), NOW).as_slice()).unwrap();
        altered.last_sequence = 5_000_000;
        altered.first_sequence = 5_000_001;
        assert_eq!(
            verify(&altered.encode_to_vec(), &trusted, NOW),
            Err(NoticeError::Signature(SignatureError::Mismatch))
        );
        let old = heartbeat(5, &key("k1"), NOW - NOTICE_MAX_AGE.as_millis() as i64 - 1);
        assert!(matches!(
            verify(&old, &trusted, NOW),
            Err(NoticeError::Stale { .. })
        ));
        let ahead = heartbeat(5, &key("k1"), NOW + 120_000);
        assert!(matches!(
            verify(&ahead, &trusted, NOW),
            Err(NoticeError::FromTheFuture { .. })
        ));
        assert!(matches!(
            verify(b"\xff\xff\xff", &trusted, NOW),
            Err(NoticeError::Malformed(_))
        ));
        assert!(matches!(
            verify(&vec![0u8; MAX_NOTICE_BYTES + 1], &trusted, NOW),
            Err(NoticeError::TooLarge(_))
        ));
    }

    #[test]
    fn a_signed_notice_claiming_a_sequence_outside_its_range_is_refused() {
        let mut notice =
            ChangeNotice::decode(notices_of(&entries(3, 2), &key("k1"), NOW)[0].as_slice())
                .unwrap();
        notice.changes[1].sequence = 9;
        let bytes = signed(&key("k1"), notice);
        assert_eq!(
            verify(&bytes, &key("k1").trusted(), NOW),
            Err(NoticeError::BadRange { first: 3, last: 4 })
        );
    }
}
