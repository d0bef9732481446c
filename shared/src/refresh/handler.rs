//! config-refresh's use case: one change event in, one signed Refresh to every
//! healthy agent out; any undelivered Refresh is an error so that Lambda and
//! EventBridge retry it and the DLQ keeps what never succeeds.

use std::sync::Arc;

use thiserror::Error;

use super::discovery::{DiscoveryError, InstanceSource};
use super::event::{Classified, EventError, ParameterChangeEvent, classify};
use super::fanout::{Fanout, FanoutReport};
use crate::routing::KeyRouter;

#[derive(Debug, Error)]
pub enum RefreshError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("rejected event: {0}")]
    Rejected(#[from] EventError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
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
            RefreshError::Undelivered { .. } => "RefreshUndelivered",
        }
    }
}

#[derive(Debug)]
pub enum RefreshOutcome {
    Ignored(String),
    Delivered(FanoutReport),
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
        }
    }
}

pub struct Refresher {
    root: String,
    router: KeyRouter,
    instances: Arc<dyn InstanceSource>,
    fanout: Fanout,
}

impl Refresher {
    pub fn new(
        root: impl Into<String>,
        router: KeyRouter,
        instances: Arc<dyn InstanceSource>,
        fanout: Fanout,
    ) -> Self {
        Self {
            root: root.into(),
            router,
            instances,
            fanout,
        }
    }

    /// Handles one raw event. Parsing happens here (not in the runtime) so a
    /// malformed event is logged with its reason.
    pub async fn handle(&self, raw: serde_json::Value) -> Result<RefreshOutcome, RefreshError> {
        let result = self.handle_inner(raw).await;
        match &result {
            Ok(RefreshOutcome::Ignored(reason)) => tracing::info!(%reason, "ignored event"),
            Ok(RefreshOutcome::Delivered(_)) => {}
            Err(err) => tracing::error!(error = %err, "refresh failed"),
        }
        result
    }

    async fn handle_inner(&self, raw: serde_json::Value) -> Result<RefreshOutcome, RefreshError> {
        let event: ParameterChangeEvent =
            serde_json::from_value(raw).map_err(|e| RefreshError::Malformed(e.to_string()))?;
        let target = match classify(&event, &self.root, &self.router)? {
            Classified::Ignore(reason) => return Ok(RefreshOutcome::Ignored(reason)),
            Classified::Refresh(target) => target,
        };
        let instances = self.instances.healthy_instances().await?;
        let report = self.fanout.send(&instances, &target).await;
        tracing::info!(
            entry = %target.item.cache_key(),
            operation = target.operation.as_str_name(),
            event_id = %target.event_id,
            instances = report.instances,
            ok = report.ok,
            failed = report.failed.len(),
            elapsed_ms = report.elapsed.as_millis() as u64,
            "refresh fan-out"
        );
        if report.failed.is_empty() {
            return Ok(RefreshOutcome::Delivered(report));
        }
        for (instance, reason) in &report.failed {
            tracing::warn!(%instance, %reason, "agent did not acknowledge refresh");
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
}
