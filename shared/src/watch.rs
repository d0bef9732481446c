//! What a reader learned changed, told to whoever watches it: the agent's
//! `Watch` streams. A reader publishes here after it drops a cached entry
//! (pushed by config-refresh or caught up from the journal), so a watcher
//! hears of a change exactly when a read would first see it.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::refresh::change::Subject;

/// One thing learned.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// What this change makes stale.
    Changed(Subject),
    /// Everything cached was dropped (a reader far behind the journal).
    Everything,
}

/// A broadcast of [`Notice`]s. A watcher that falls behind by more than the
/// capacity is told it lagged and re-reads everything it watches, so none
/// is missed.
pub struct ChangeFeed {
    sender: broadcast::Sender<Arc<Notice>>,
}

/// Notices kept for a slow watcher before it is told it lagged.
pub const FEED_CAPACITY: usize = 1024;

impl Default for ChangeFeed {
    fn default() -> Self {
        Self::new(FEED_CAPACITY)
    }
}

impl ChangeFeed {
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Tells every watcher (nobody, cheaply, when none watches).
    pub fn publish(&self, notice: Notice) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(notice));
        }
    }

    /// Every notice from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.sender.subscribe()
    }

    /// Watchers listening now.
    pub fn watchers(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;

    #[tokio::test]
    async fn every_watcher_hears_each_notice_and_a_slow_one_learns_it_lagged() {
        let feed = ChangeFeed::new(2);
        // Nobody listens: publishing costs nothing and keeps nothing.
        feed.publish(Notice::Everything);
        let (mut fast, mut slow) = (feed.subscribe(), feed.subscribe());
        assert_eq!(feed.watchers(), 2);
        let tenant = Notice::Changed(Subject::Registration(TenantId::parse("t1").unwrap()));
        feed.publish(tenant.clone());
        assert_eq!(*fast.recv().await.unwrap(), tenant);
        for _ in 0..3 {
            feed.publish(Notice::Everything);
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
