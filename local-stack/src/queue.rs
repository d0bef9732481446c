//! Plays the SQS event source mapping of the flush queue, which moto does not
//! run: receives the flush requests once their delivery delay has passed,
//! gathers them for a batching window (as `MaximumBatchingWindowInSeconds`
//! does), invokes config-refresh with the batch in AWS's record shape, and
//! deletes the messages only when the invocation succeeded (otherwise they
//! come back after their visibility timeout, as in AWS).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message};
use serde_json::{Value, json};
use tenant_config_admin::events::invoke;
use tokio::task::JoinHandle;

/// The template's `MaximumBatchingWindowInSeconds` for the flush queue.
pub const BATCHING_WINDOW: Duration = Duration::from_secs(2);

pub struct QueueMapping {
    task: JoinHandle<()>,
    invocations: Arc<AtomicUsize>,
}

impl QueueMapping {
    pub fn start(
        aws: &SdkConfig,
        queue_url: String,
        queue_arn: String,
        invoke_url: String,
        function: &'static str,
    ) -> Self {
        let sqs = aws_sdk_sqs::Client::new(aws);
        let region = aws
            .region()
            .map(ToString::to_string)
            .unwrap_or_else(|| "us-east-1".to_owned());
        let invocations = Arc::new(AtomicUsize::new(0));
        let counter = invocations.clone();
        let task = tokio::spawn(async move {
            loop {
                let batch = gather(&sqs, &queue_url).await;
                if batch.is_empty() {
                    continue;
                }
                let records: Vec<Value> = batch
                    .iter()
                    .map(|m| lambda_record(m, &queue_arn, &region))
                    .collect();
                counter.fetch_add(1, Ordering::SeqCst);
                match invoke(&invoke_url, function, &json!({"Records": records})).await {
                    Ok(Ok(_)) => delete(&sqs, &queue_url, &batch).await,
                    Ok(Err(error)) => eprintln!("queue mapping: {function} failed: {error}"),
                    Err(error) => eprintln!("queue mapping: cannot invoke {function}: {error}"),
                }
            }
        });
        Self { task, invocations }
    }

    /// Invocations of the function so far.
    pub fn invocations(&self) -> usize {
        self.invocations.load(Ordering::SeqCst)
    }
}

impl Drop for QueueMapping {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (long polling) for a first message, then keeps receiving until the
/// batching window since it has passed.
async fn gather(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<Message> {
    let mut batch: Vec<Message> = Vec::new();
    let mut window_end: Option<Instant> = None;
    loop {
        let wait = match window_end {
            None => 1,
            Some(end) if Instant::now() >= end => return batch,
            Some(_) => 0,
        };
        match sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .send()
            .await
        {
            Ok(output) => {
                let received = output.messages.unwrap_or_default();
                if !received.is_empty() && window_end.is_none() {
                    window_end = Some(Instant::now() + BATCHING_WINDOW);
                }
                batch.extend(received);
            }
            Err(error) => {
                eprintln!(
                    "queue mapping: ReceiveMessage failed: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(error)
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if window_end.is_none() {
            // Nothing yet: the long poll above waited already.
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete(sqs: &aws_sdk_sqs::Client, queue_url: &str, batch: &[Message]) {
    for chunk in batch.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        if let Err(error) = sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            eprintln!(
                "queue mapping: DeleteMessageBatch failed: {}",
                aws_sdk_sqs::error::DisplayErrorContext(error)
            );
        }
    }
}

/// The record as Lambda receives it from an SQS event source mapping.
fn lambda_record(message: &Message, queue_arn: &str, region: &str) -> Value {
    json!({
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": message.md5_of_body,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    })
}
