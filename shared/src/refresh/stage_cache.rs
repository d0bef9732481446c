//! The API Gateway stage cache in front of config-api. Its cache key includes
//! the caller's `Authorization` header, so the service cannot invalidate one
//! entry; the only mechanism is FlushStageCache, for the whole stage. Without
//! it a change would sit in the stage cache for its whole TTL.
//!
//! When to flush: after config-api serves the change, never before, or a
//! request between the flush and config-api's catch-up puts the old value back
//! for a whole TTL. And not once per change: a burst must cost one flush. So
//! config-refresh, for every journaled change, sends a *flush request* to a
//! queue with a delivery delay (longer than config-api's catch-up interval);
//! the queue's event source mapping collects requests for a batching window
//! and hands them to config-refresh as one batch, which flushes once. A burst
//! costs one trailing flush per window, and every change is followed by a
//! flush at least the delay after it was journaled.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum StageCacheError {
    #[error("FlushStageCache failed: {0}")]
    Flush(String),
    #[error("cannot request a stage cache flush: {0}")]
    Request(String),
}

/// Where cached API answers are dropped: the whole stage.
#[async_trait]
pub trait StageCache: Send + Sync {
    async fn flush(&self) -> Result<(), StageCacheError>;
}

/// Where flush requests wait for their delay and batching window.
#[async_trait]
pub trait FlushRequests: Send + Sync {
    /// Asks for a flush after the delay; `change_ids` name what changed (for
    /// the logs; never a value).
    async fn request(&self, change_ids: &[String]) -> Result<(), StageCacheError>;
}

/// One REST API stage's cache, through the API Gateway control plane.
pub struct ApiGatewayStageCache {
    client: aws_sdk_apigateway::Client,
    rest_api_id: String,
    stage: String,
}

impl ApiGatewayStageCache {
    pub fn new(
        client: aws_sdk_apigateway::Client,
        rest_api_id: impl Into<String>,
        stage: impl Into<String>,
    ) -> Self {
        Self {
            client,
            rest_api_id: rest_api_id.into(),
            stage: stage.into(),
        }
    }
}

#[async_trait]
impl StageCache for ApiGatewayStageCache {
    async fn flush(&self) -> Result<(), StageCacheError> {
        self.client
            .flush_stage_cache()
            .rest_api_id(&self.rest_api_id)
            .stage_name(&self.stage)
            .send()
            .await
            .map_err(|e| {
                StageCacheError::Flush(
                    aws_sdk_apigateway::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        Ok(())
    }
}

/// Flush requests on an SQS queue, delivered after `delay`.
pub struct SqsFlushRequests {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    delay: Duration,
}

impl SqsFlushRequests {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, delay: Duration) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            delay,
        }
    }
}

#[async_trait]
impl FlushRequests for SqsFlushRequests {
    async fn request(&self, change_ids: &[String]) -> Result<(), StageCacheError> {
        let body = serde_json::json!({"flush": "stage-cache", "change_ids": change_ids});
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .delay_seconds(i32::try_from(self.delay.as_secs()).unwrap_or(900).min(900))
            .message_body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                StageCacheError::Request(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }
}
