//! config-refresh's use case: change records in (a Parameter Store event from
//! EventBridge, or a batch of DynamoDB stream records from the event source
//! mapping), one signed Refresh per change to every healthy agent out.
//!
//! An undelivered Parameter Store change is an error so that Lambda and
//! EventBridge retry it and the DLQ keeps what never succeeds. In a stream
//! batch, each undelivered or unreadable record is reported as a batch item
//! failure (ReportBatchItemFailures), so the mapping retries from there and
//! its on-failure destination keeps what never succeeds, without replaying the
//! records that were delivered.
//!
//! Without a usable signing key ([`super::key`]) a change is still journaled
//! and its stage cache flush asked for, and counts as handled (not retried):
//! readers catch up from the journal, and `UnpushedChanges` alarms.

use std::sync::Arc;

use thiserror::Error;

use super::change::{ChangeRecord, Classified, Subject};
use super::discovery::{DiscoveryError, InstanceHealth, InstanceSource};
use super::event::{EventError, ParameterChangeEvent, classify};
use super::fanout::{FanoutReport, FanoutSource};
use super::journal::{ChangeJournal, JournalEntry, JournalError};
use super::proto::Operation;
use super::signing::unix_ms_now;
use super::stage_cache::{FlushRequests, StageCache, StageCacheError};
use super::stale::{StaleSettings, StaleTracker};
use super::stream::{StreamBatch, classify_batch};
use crate::layers::overrides::OverrideIndex;
use crate::metrics::{Counter, metrics};
use crate::notices::feed::NoticePublisher;
use crate::notices::{heartbeat, notices_of};
use crate::routing::KeyRouter;

#[derive(Debug, Error)]
pub enum RefreshError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("rejected event: {0}")]
    Rejected(#[from] EventError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    StageCache(#[from] StageCacheError),
    #[error("override index update failed: {0}")]
    OverrideIndex(String),
    /// Only the heartbeat fails on it (a change's notice is best effort).
    #[error(transparent)]
    Feed(#[from] crate::notices::feed::PublishError),
    #[error("refresh reached {ok} of {instances} agents; failed: {failed}")]
    Undelivered {
        ok: usize,
        instances: usize,
        failed: String,
    },
}

impl RefreshError {
    /// Short name for Lambda's `errorType` (and alarms filtering on it).
    pub fn kind(&self) -> &'static str {
        match self {
            RefreshError::Malformed(_) => "MalformedEvent",
            RefreshError::Rejected(_) => "RejectedEvent",
            RefreshError::Discovery(_) => "DiscoveryFailed",
            RefreshError::Journal(_) => "JournalFailed",
            RefreshError::StageCache(_) => "StageCacheFailed",
            RefreshError::OverrideIndex(_) => "OverrideIndexFailed",
            RefreshError::Feed(_) => "FeedPublishFailed",
            RefreshError::Undelivered { .. } => "RefreshUndelivered",
        }
    }
}

#[derive(Debug)]
pub enum RefreshOutcome {
    Ignored(String),
    Delivered(FanoutReport),
    Batch(BatchReport),
    /// A batch of flush requests became one stage cache flush.
    StageCacheFlushed {
        requests: usize,
    },
    /// Journaled (and the stage cache flush asked for), pushed to no agent:
    /// the signing key is missing or unusable. Readers catch up from the
    /// journal; retrying would not help until the key is fixed.
    Unpushed {
        reason: String,
    },
    /// The schedule's heartbeat: the journal's head announced on the feed.
    Heartbeat {
        head: u64,
    },
}

/// What became of a batch of stream records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub records: usize,
    pub delivered: usize,
    pub ignored: usize,
    /// Journaled, pushed to no agent (no usable signing key).
    pub unpushed: usize,
    /// Sequence numbers of the records to retry, in batch order.
    pub failures: Vec<String>,
}

impl RefreshOutcome {
    /// What the function answers: never a value, only what happened.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            RefreshOutcome::Ignored(reason) => {
                serde_json::json!({"status": "ignored", "reason": reason})
            }
            RefreshOutcome::Delivered(report) => serde_json::json!({
                "status": "delivered",
                "instances": report.instances,
                "elapsed_ms": report.elapsed.as_millis() as u64,
            }),
            RefreshOutcome::StageCacheFlushed { requests } => serde_json::json!({
                "status": "flushed",
                "requests": requests,
            }),
            RefreshOutcome::Unpushed { reason } => serde_json::json!({
                "status": "journaled_not_pushed",
                "reason": reason,
            }),
            RefreshOutcome::Heartbeat { head } => serde_json::json!({
                "status": "heartbeat",
                "head": head,
            }),
            // Exactly the partial-batch response shape the event source
            // mapping reads.
            RefreshOutcome::Batch(report) => serde_json::json!({
                "batchItemFailures": report
                    .failures
                    .iter()
                    .map(|sequence| serde_json::json!({"itemIdentifier": sequence}))
                    .collect::<Vec<_>>(),
            }),
        }
    }
}

pub struct Refresher {
    root: String,
    router: KeyRouter,
    instances: Arc<dyn InstanceSource>,
    fanout: Arc<dyn FanoutSource>,
    journal: Arc<dyn ChangeJournal>,
    stale: Option<(StaleTracker, Arc<dyn InstanceHealth>)>,
    stage_cache: Option<(Arc<dyn FlushRequests>, Arc<dyn StageCache>)>,
    overrides: Option<Arc<dyn OverrideIndex>>,
    feed: Option<Arc<dyn NoticePublisher>>,
}

impl Refresher {
    pub fn new(
        root: impl Into<String>,
        router: KeyRouter,
        instances: Arc<dyn InstanceSource>,
        fanout: Arc<dyn FanoutSource>,
        journal: Arc<dyn ChangeJournal>,
    ) -> Self {
        Self {
            root: root.into(),
            router,
            instances,
            fanout,
            journal,
            stale: None,
            stage_cache: None,
            overrides: None,
            feed: None,
        }
    }

    /// Announces every journaled change on the change feed (see
    /// [`crate::notices`]) before the push, and answers the schedule's
    /// heartbeat events with the journal's head.
    pub fn with_change_feed(mut self, feed: Arc<dyn NoticePublisher>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Publishes the notices of `entries`, before the push. A failure is
    /// logged and does not fail the change (the change is journaled, and
    /// pushed where it can be): readers see the hole at the next notice or
    /// heartbeat and read it from the journal, while failing here would
    /// hold the push and stall the stream's shard behind IoT Core.
    async fn announce(&self, entries: &[JournalEntry]) {
        let Some(feed) = &self.feed else {
            return;
        };
        let key = match self.fanout.signing_key().await {
            Ok(key) => key,
            Err(reason) => {
                tracing::error!(%reason, "change feed: no signing key; nothing announced");
                return;
            }
        };
        let notices = notices_of(entries, &key, unix_ms_now());
        let first = entries.first().map_or(0, |e| e.sequence);
        let last = entries.last().map_or(0, |e| e.sequence);
        match feed.publish(&notices).await {
            Ok(()) => tracing::info!(
                notices = notices.len(),
                first,
                last,
                "announced on the change feed"
            ),
            Err(error) => tracing::error!(
                %error,
                first,
                last,
                "change feed: not announced; readers will find the hole"
            ),
        }
    }

    /// The schedule's tick: the journal's head, signed, retained on the
    /// feed, so that a reader whose last notice was lost learns it.
    async fn heartbeat(&self) -> Result<RefreshOutcome, RefreshError> {
        let Some(feed) = &self.feed else {
            return Ok(RefreshOutcome::Ignored(
                "a heartbeat, but no change feed is configured".to_owned(),
            ));
        };
        let key = match self.fanout.signing_key().await {
            Ok(key) => key,
            Err(reason) => return Ok(RefreshOutcome::Unpushed { reason }),
        };
        let head = self.journal.head().await?;
        feed.publish(&[heartbeat(head, &key, unix_ms_now())])
            .await?;
        Ok(RefreshOutcome::Heartbeat { head })
    }

    /// Keeps the override index (see [`crate::layers::overrides`]) from
    /// every change of a tenant's own entry, before it is journaled: a
    /// failure fails the change, which is retried like any other.
    pub fn with_override_index(mut self, overrides: Arc<dyn OverrideIndex>) -> Self {
        self.overrides = Some(overrides);
        self
    }

    /// After every journaled change, requests a flush of the API Gateway
    /// stage cache (see [`super::stage_cache`]); flushes once per batch of
    /// requests.
    pub fn with_stage_cache(
        mut self,
        requests: Arc<dyn FlushRequests>,
        cache: Arc<dyn StageCache>,
    ) -> Self {
        self.stage_cache = Some((requests, cache));
        self
    }

    /// Journals `changes`, then (if a stage cache is configured) asks for the
    /// flush that follows them.
    async fn journal(&self, changes: &[ChangeRecord]) -> Result<Vec<JournalEntry>, RefreshError> {
        if let Some(overrides) = &self.overrides {
            for change in changes {
                if let Subject::Entry(item) = &change.subject {
                    let present = change.operation != Operation::Delete;
                    overrides
                        .mark(item, present, change.time_unix_ms)
                        .await
                        .map_err(|e| RefreshError::OverrideIndex(e.to_string()))?;
                }
            }
        }
        let entries = self.journal.append(changes).await?;
        if let Some((requests, _)) = &self.stage_cache {
            let ids: Vec<String> = changes.iter().map(|c| c.change_id.clone()).collect();
            requests.request(&ids).await?;
        }
        Ok(entries)
    }

    /// A batch of flush requests from the queue: one flush for all of them.
    async fn flush_stage_cache(&self, requests: usize) -> Result<RefreshOutcome, RefreshError> {
        let Some((_, cache)) = &self.stage_cache else {
            return Err(RefreshError::Malformed(
                "a queue batch arrived but no stage cache is configured".to_owned(),
            ));
        };
        cache.flush().await?;
        tracing::info!(requests, "flushed the API Gateway stage cache");
        Ok(RefreshOutcome::StageCacheFlushed { requests })
    }

    /// Marks instances that keep failing UNHEALTHY through `health` (see
    /// [`super::stale`]); their failures then no longer fail the invocation.
    pub fn with_stale_marking(
        mut self,
        settings: StaleSettings,
        health: Arc<dyn InstanceHealth>,
    ) -> Self {
        self.stale = Some((StaleTracker::new(settings), health));
        self
    }

    /// Takes the instances that just became stale out of rotation and out of
    /// the report's failures.
    async fn retire_stale(&self, mut report: FanoutReport) -> FanoutReport {
        let Some((tracker, health)) = &self.stale else {
            return report;
        };
        for id in tracker.record(&report) {
            match health.mark_unhealthy(&id).await {
                Ok(()) => {
                    tracing::warn!(instance = %id, "agent kept failing: marked UNHEALTHY in Cloud Map");
                    report.failed.retain(|(failed, _)| failed != &id);
                }
                Err(error) => {
                    tracing::warn!(instance = %id, %error, "agent kept failing but could not be marked UNHEALTHY")
                }
            }
        }
        report
    }

    /// Handles one raw event. Parsing happens here (not in the runtime) so a
    /// malformed event is logged with its reason.
    pub async fn handle(&self, raw: serde_json::Value) -> Result<RefreshOutcome, RefreshError> {
        let result = self.handle_inner(raw).await;
        match &result {
            Ok(RefreshOutcome::Ignored(reason)) => tracing::info!(%reason, "ignored event"),
            Ok(RefreshOutcome::Unpushed { reason }) => {
                tracing::error!(%reason, "change journaled, pushed to no agent")
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "refresh failed"),
        }
        result
    }

    async fn handle_inner(&self, raw: serde_json::Value) -> Result<RefreshOutcome, RefreshError> {
        if let Some(records) = raw.get("Records").and_then(|r| r.as_array()) {
            let from_queue = records
                .first()
                .and_then(|r| r.get("eventSource"))
                .is_some_and(|source| source == "aws:sqs");
            if from_queue {
                return self.flush_stage_cache(records.len()).await;
            }
            return self.handle_stream_batch(raw).await;
        }
        if raw.get("detail-type").and_then(|t| t.as_str()) == Some(SCHEDULED_EVENT) {
            return self.heartbeat().await;
        }
        let event: ParameterChangeEvent =
            serde_json::from_value(raw).map_err(|e| RefreshError::Malformed(e.to_string()))?;
        let change = match classify(&event, &self.root, &self.router)? {
            Classified::Ignore(reason) => return Ok(RefreshOutcome::Ignored(reason)),
            Classified::Refresh(change) => change,
        };
        // Journaled before anyone is told: a reader the push misses still
        // finds it there.
        let entries = self.journal(std::slice::from_ref(&change)).await?;
        self.announce(&entries).await;
        let fanout = match self.fanout.fanout().await {
            Ok(fanout) => fanout,
            Err(reason) => {
                unpushed(1);
                return Ok(RefreshOutcome::Unpushed { reason });
            }
        };
        let instances = self.instances.healthy_instances().await?;
        let report = fanout.send(&instances, &change).await;
        log_fanout(&change, &report);
        let report = self.retire_stale(report).await;
        if report.failed.is_empty() {
            return Ok(RefreshOutcome::Delivered(report));
        }
        Err(RefreshError::Undelivered {
            ok: report.ok,
            instances: report.instances,
            failed: report
                .failed
                .iter()
                .map(|(id, reason)| format!("{id} ({reason})"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// A batch from the DynamoDB stream: every change fanned out at once (a
    /// dead agent costs one deadline per batch, not per record); unreadable or
    /// undelivered records come back as batch item failures. A failure that
    /// concerns the whole batch (no agents can be discovered, a record without
    /// a sequence number to report) is an error, so the batch is retried and
    /// bisected.
    async fn handle_stream_batch(
        &self,
        raw: serde_json::Value,
    ) -> Result<RefreshOutcome, RefreshError> {
        let batch: StreamBatch =
            serde_json::from_value(raw).map_err(|e| RefreshError::Malformed(e.to_string()))?;
        let mut report = BatchReport {
            records: batch.records.len(),
            ..BatchReport::default()
        };
        // The records to deliver, and their sequence numbers in step.
        let mut changes: Vec<ChangeRecord> = Vec::new();
        let mut sequences: Vec<String> = Vec::new();
        for parsed in classify_batch(&batch, &self.router) {
            match (parsed.outcome, parsed.sequence_number) {
                (Ok(Classified::Refresh(change)), Some(sequence)) => {
                    changes.push(change);
                    sequences.push(sequence);
                }
                (Ok(Classified::Ignore(reason)), _) => {
                    tracing::info!(%reason, "ignored stream record");
                    report.ignored += 1;
                }
                (Err(reason), Some(sequence)) => {
                    tracing::warn!(%reason, %sequence, "rejected stream record");
                    report.failures.push(sequence);
                }
                (Ok(Classified::Refresh(_)), None) => {
                    return Err(RefreshError::Malformed(
                        "stream record without a sequence number".to_owned(),
                    ));
                }
                (Err(reason), None) => return Err(RefreshError::Malformed(reason)),
            }
        }
        if !changes.is_empty() {
            let entries = self.journal(&changes).await?;
            // One notice for the batch (split at 100 changes): a reader
            // receives one message, not one per record.
            self.announce(&entries).await;
            let fanout = match self.fanout.fanout().await {
                Ok(fanout) => fanout,
                Err(reason) => {
                    unpushed(changes.len());
                    report.unpushed = changes.len();
                    tracing::error!(%reason, records = report.records, unpushed = report.unpushed, "stream batch journaled, pushed to no agent");
                    return Ok(RefreshOutcome::Batch(report));
                }
            };
            let instances = self.instances.healthy_instances().await?;
            let fanouts = changes.iter().map(|change| fanout.send(&instances, change));
            let reports = futures::future::join_all(fanouts).await;
            for ((sequence, change), fanout) in sequences.into_iter().zip(&changes).zip(reports) {
                log_fanout(change, &fanout);
                let fanout = self.retire_stale(fanout).await;
                if fanout.failed.is_empty() {
                    report.delivered += 1;
                } else {
                    report.failures.push(sequence);
                }
            }
        }
        tracing::info!(
            records = report.records,
            delivered = report.delivered,
            ignored = report.ignored,
            failed = report.failures.len(),
            "stream batch"
        );
        Ok(RefreshOutcome::Batch(report))
    }
}

/// The `detail-type` of the EventBridge schedule's events (the heartbeat).
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// Counts changes journaled without a push (the `UnpushedChanges` alarm).
fn unpushed(changes: usize) {
    metrics().add(Counter::UnpushedChanges, changes as u64);
}

/// One summary line per change, and one per agent that did not acknowledge.
fn log_fanout(change: &ChangeRecord, report: &FanoutReport) {
    tracing::info!(
        entry = %change.subject,
        store = %change.store,
        operation = change.operation.as_str_name(),
        change_id = %change.change_id,
        instances = report.instances,
        ok = report.ok,
        failed = report.failed.len(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "refresh fan-out"
    );
    for (instance, reason) in &report.failed {
        tracing::warn!(%instance, %reason, "agent did not acknowledge refresh");
    }
}
