//! The change record: what every change source (Parameter Store events from
//! EventBridge, DynamoDB Streams records) becomes, and what the rest of the
//! change path handles without knowing where it came from. It names an entry,
//! never its value.

use super::proto::Operation;
use crate::domain::{ItemKey, StoreKind};

/// One change to one entry of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub item: ItemKey,
    pub store: StoreKind,
    pub operation: Operation,
    /// Unique per change and stable across retries of it: the EventBridge
    /// event id, or the DynamoDB stream record's event id.
    pub change_id: String,
    /// When the store recorded the change, Unix milliseconds.
    pub time_unix_ms: i64,
}

/// Longest change id accepted (EventBridge ids are 36, stream ids 32).
pub const MAX_CHANGE_ID_LEN: usize = 128;

/// Whether `id` can travel in a Refresh and a log line unchanged.
pub fn valid_change_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHANGE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What a change source record means for the readers' caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Refresh(ChangeRecord),
    /// Not a change any reader caches (outside the root, another kind of
    /// item, a key routed to the other store), with the reason.
    Ignore(String),
}
