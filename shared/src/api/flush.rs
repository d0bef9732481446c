//! Flushing the API Gateway stage cache after a degraded answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{Counter, metrics};
use crate::refresh::stage_cache::FlushRequests;

/// Asks for the API Gateway stage cache to be flushed when a cacheable route
/// answered degraded (stale or 5xx): the stage cache ignores the integration's
/// `Cache-Control` and would replay that answer for its whole TTL. At most one
/// request per `min_interval` per container; the queue's batching window
/// turns all containers' requests into one flush.
pub struct DegradedAnswerFlush {
    requests: Arc<dyn FlushRequests>,
    min_interval: Duration,
    last_sent: Mutex<Option<Instant>>,
}

/// Longest a flush request may hold up the answer that caused it.
const FLUSH_REQUEST_DEADLINE: Duration = Duration::from_millis(300);

impl DegradedAnswerFlush {
    pub fn new(requests: Arc<dyn FlushRequests>, min_interval: Duration) -> Self {
        Self {
            requests,
            min_interval,
            last_sent: Mutex::new(None),
        }
    }

    pub(super) async fn degraded(&self, reason: &str) {
        {
            let Ok(mut last_sent) = self.last_sent.lock() else {
                return;
            };
            if last_sent.is_some_and(|at| at.elapsed() < self.min_interval) {
                return;
            }
            *last_sent = Some(Instant::now());
        }
        metrics().count(Counter::StageFlushRequests);
        let reason = [format!("degraded:{reason}")];
        match tokio::time::timeout(FLUSH_REQUEST_DEADLINE, self.requests.request(&reason)).await {
            Ok(Ok(())) => tracing::info!(reason = %reason[0], "asked for a stage cache flush"),
            Ok(Err(err)) => tracing::warn!(error = %err, "could not ask for a stage cache flush"),
            Err(_) => tracing::warn!("stage cache flush request timed out"),
        }
    }
}
