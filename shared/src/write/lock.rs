//! Version locks: what makes `If-Match` on a Parameter Store key a real
//! compare-and-swap. Parameter Store has no conditional write, so a writer
//! first claims the key's lock (a compare-and-swap in a store that has one:
//! DynamoDB, [`super::lock_table`]), checks the expected version while no
//! other writer can change it, writes, and releases the lock with the new
//! version. Two writers from version 5: one claims, the other is refused
//! before it writes (409), so exactly one lands; a DELETE holds the same
//! claim, so it never removes a version written after its check.
//!
//! A writer that dies holding a claim leaves it behind: after
//! [`CLAIM_TIMEOUT`] the next writer takes it over, with Parameter Store's
//! current version as the truth. Writes that bypass the lock (the console,
//! the AWS CLI) are not serialised with these; the next locked write starts
//! from the version they left.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::WriteError;
use crate::layers::EntryKey;

/// How long a claim holds before another writer may take it over: longer
/// than any write takes (config-api's Lambda timeout is 10 s and every AWS
/// call is bounded), so a live write is never overtaken.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// One key's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    /// The version the last locked write left (0: absent).
    pub version: i64,
    /// The writer holding the key now, if any.
    pub claim: Option<Claim>,
    /// Counts every change of the lock, so that a lock claimed and freed
    /// again never looks like the state another writer saw before.
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Unique per write.
    pub token: String,
    /// When it was taken (milliseconds since the epoch).
    pub since_ms: i64,
}

impl Claim {
    pub fn new(now_ms: i64) -> Self {
        let mut random = [0u8; 16];
        // A failing system random source leaves zeros; the time still tells
        // this claim apart from the ones before it.
        let _ = aws_lc_rs::rand::fill(&mut random);
        let token = random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Self {
            token: format!("{token}-{now_ms}"),
            since_ms: now_ms,
        }
    }

    pub fn abandoned(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.since_ms) >= CLAIM_TIMEOUT.as_millis() as i64
    }
}

/// The port: one lock per key, changed only by compare-and-swap.
#[async_trait]
pub trait VersionLocks: Send + Sync {
    /// The key's lock, read consistently (`None`: never written).
    async fn read(&self, item: &EntryKey) -> Result<Option<LockState>, WriteError>;

    /// Replaces the lock with `next` if it is still `observed`; `false` when
    /// another writer changed it first.
    async fn swap(
        &self,
        item: &EntryKey,
        observed: Option<&LockState>,
        next: &LockState,
    ) -> Result<bool, WriteError>;
}

/// Locks in memory, for tests of the protocol.
#[derive(Debug, Default)]
pub struct MemoryVersionLocks {
    locks: Mutex<HashMap<EntryKey, LockState>>,
}

#[async_trait]
impl VersionLocks for MemoryVersionLocks {
    async fn read(&self, item: &EntryKey) -> Result<Option<LockState>, WriteError> {
        Ok(self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(item)
            .cloned())
    }

    async fn swap(
        &self,
        item: &EntryKey,
        observed: Option<&LockState>,
        next: &LockState,
    ) -> Result<bool, WriteError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.get(item) != observed {
            return Ok(false);
        }
        locks.insert(item.clone(), next.clone());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> EntryKey {
        EntryKey::from(
            &crate::domain::ItemKey::parse("tenant-a", "billing", "param_config_endpoint").unwrap(),
        )
    }

    #[tokio::test]
    async fn a_swap_lands_only_on_the_state_it_observed() {
        let locks = MemoryVersionLocks::default();
        let free = LockState {
            version: 5,
            claim: None,
            generation: 1,
        };
        // GIVEN a key never locked THEN only a swap from "absent" lands
        assert!(!locks.swap(&item(), Some(&free), &free).await.unwrap());
        assert!(locks.swap(&item(), None, &free).await.unwrap());
        // WHEN two writers claim from the same state THEN one wins
        let claimed = |n| LockState {
            version: 5,
            claim: Some(Claim {
                token: format!("writer-{n}"),
                since_ms: 0,
            }),
            generation: 2,
        };
        assert!(locks.swap(&item(), Some(&free), &claimed(1)).await.unwrap());
        assert!(!locks.swap(&item(), Some(&free), &claimed(2)).await.unwrap());
        assert_eq!(locks.read(&item()).await.unwrap(), Some(claimed(1)));
    }

    #[test]
    fn a_claim_is_abandoned_only_after_the_timeout() {
        let claim = Claim::new(1_000);
        let timeout = CLAIM_TIMEOUT.as_millis() as i64;
        assert!(!claim.abandoned(1_000 + timeout - 1));
        assert!(claim.abandoned(1_000 + timeout));
    }
}
