//! Plays the part of the Lambda event source mapping that moto cannot run:
//! reads the configuration table's DynamoDB stream and invokes config-refresh
//! with each batch, as AWS does: the same record shape (keys and images), the
//! same filter (configuration items and delete tombstones), and a record
//! reported as a batch item failure is
//! retried from there, a few times, before it is dropped with a log line (in
//! AWS: sent to the DLQ).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{Value, json};
use tenant_config_admin::events::invoke;
use tenant_config_shared::layers::registry::REGISTRY_PARTITION;
use tenant_config_shared::rollouts::store::LIVE_PARTITION;
use tenant_config_shared::store::dynamodb::{CONFIG_SORT_PREFIX, PARTITION_KEY, SORT_KEY};
use tenant_config_shared::write::dynamodb::{DELETED_ATTRIBUTE, HISTORY_SORT_PREFIX};
use tokio::task::JoinHandle;

/// How often an idle shard is polled (AWS polls each shard four times a second).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Records per invocation (the template's default `StreamBatchSize`).
const BATCH_SIZE: i32 = 100;
/// Attempts for a batch with failures before its failed records are dropped.
const MAX_ATTEMPTS: usize = 4;

/// The running mapping; stops when dropped.
pub struct StreamMapping {
    task: JoinHandle<()>,
    invocations: Arc<AtomicUsize>,
}

impl StreamMapping {
    /// Starts reading `table`'s stream from now on (LATEST) and delivering to
    /// `function` through the Lambda Invoke API at `invoke_url`.
    pub async fn start(
        aws: &SdkConfig,
        table: &str,
        invoke_url: String,
        function: &'static str,
    ) -> Result<Self, String> {
        let stream_arn = aws_sdk_dynamodb::Client::new(aws)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DescribeTable: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| format!("table {table} has no stream"))?;
        let streams = aws_sdk_dynamodbstreams::Client::new(aws);
        let shards = streams
            .describe_stream()
            .stream_arn(&stream_arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DescribeStream: {}",
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
                )
            })?
            .stream_description
            .map(|d| d.shards.unwrap_or_default())
            .unwrap_or_default();
        let mut positions = Vec::with_capacity(shards.len());
        for shard in shards {
            let shard_id = shard.shard_id.unwrap_or_default();
            let latest = last_position(&streams, &stream_arn, &shard_id).await?;
            positions.push((shard_id, latest));
        }
        let invocations = Arc::new(AtomicUsize::new(0));
        let poller = Poller {
            streams,
            stream_arn,
            invoke_url,
            function,
            region: aws
                .region()
                .map(ToString::to_string)
                .unwrap_or_else(|| "us-east-1".to_owned()),
            invocations: invocations.clone(),
        };
        let task = tokio::spawn(async move {
            let shards = positions
                .into_iter()
                .map(|(shard_id, latest)| poller.follow(shard_id, latest));
            futures::future::join_all(shards).await;
        });
        Ok(Self { task, invocations })
    }

    /// Stops delivering, as a disabled event source mapping does (a fault
    /// for the tests: changes then reach no journal and no agent).
    pub fn disable(&self) {
        self.task.abort();
    }

    /// Invocations of the function so far (retries included).
    pub fn invocations(&self) -> usize {
        self.invocations.load(Ordering::SeqCst)
    }
}

impl Drop for StreamMapping {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Poller {
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    invoke_url: String,
    function: &'static str,
    region: String,
    invocations: Arc<AtomicUsize>,
}

impl Poller {
    /// Follows one shard from after `after` (the start when `None`), with a
    /// fresh iterator for each poll: moto replaces a table's stream shard
    /// when it rolls back a cancelled transaction, so an iterator kept from
    /// before a conflict reads a shard nothing is written to any more (and
    /// that holds the cancelled transaction's records). A poll that lands
    /// inside such a transaction can even see one of its records, whose
    /// sequence number the restored shard then gives to the next real
    /// record: so each poll starts *at* the last record seen and drops it
    /// only if it is still the same record (same event id). AWS iterators do
    /// not go stale like that; the records and their order are the same.
    async fn follow(&self, shard_id: String, mut after: Option<Position>) {
        loop {
            let output = match self.records_from(&shard_id, after.as_ref()).await {
                Ok(output) => output,
                Err(e) => {
                    eprintln!("stream mapping: {e}");
                    tokio::time::sleep(POLL_INTERVAL * 10).await;
                    continue;
                }
            };
            let mut all = output.records.unwrap_or_default();
            if let (Some(seen), Some(first)) = (&after, all.first())
                && first.event_id.as_deref() == Some(seen.event_id.as_str())
            {
                all.remove(0);
            }
            if let Some(last) = all.last().and_then(Position::of) {
                after = Some(last);
            }
            let records: Vec<Value> = all
                .iter()
                .filter(|r| is_delivered(r))
                .map(|r| self.lambda_record(r))
                .collect();
            if !records.is_empty() {
                self.deliver(records).await;
            }
            if output.next_shard_iterator.is_none() && all.is_empty() {
                return; // the shard is closed
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn records_from(
        &self,
        shard_id: &str,
        at: Option<&Position>,
    ) -> Result<aws_sdk_dynamodbstreams::operation::get_records::GetRecordsOutput, String> {
        let iterator = shard_iterator(
            &self.streams,
            &self.stream_arn,
            shard_id,
            at.map(|p| p.sequence_number.as_str()),
            ShardIteratorType::AtSequenceNumber,
        )
        .await?;
        self.streams
            .get_records()
            .shard_iterator(iterator)
            .limit(BATCH_SIZE)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GetRecords failed: {}",
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
                )
            })
    }

    /// Invokes the function; on batch item failures, retries from the first
    /// failed record (what AWS checkpoints), up to [`MAX_ATTEMPTS`].
    async fn deliver(&self, mut records: Vec<Value>) {
        for attempt in 1..=MAX_ATTEMPTS {
            self.invocations.fetch_add(1, Ordering::SeqCst);
            let answer = invoke(
                &self.invoke_url,
                self.function,
                &json!({"Records": records}),
            )
            .await;
            let first_failed = match answer {
                Ok(Ok(response)) => response["batchItemFailures"]
                    .as_array()
                    .and_then(|failures| {
                        failures
                            .iter()
                            .filter_map(|f| f["itemIdentifier"].as_str())
                            .filter_map(|id| {
                                records.iter().position(|r| {
                                    r["dynamodb"]["SequenceNumber"].as_str() == Some(id)
                                })
                            })
                            .min()
                    }),
                // A function error fails the whole batch.
                Ok(Err(_)) | Err(_) => Some(0),
            };
            let Some(first_failed) = first_failed else {
                return;
            };
            records.drain(..first_failed);
            tokio::time::sleep(POLL_INTERVAL * attempt as u32).await;
        }
        eprintln!(
            "stream mapping: {} record(s) still failing after {MAX_ATTEMPTS} attempts; dropped (AWS: on-failure destination)",
            records.len()
        );
    }

    /// The record as Lambda receives it from an event source mapping.
    fn lambda_record(&self, record: &Record) -> Value {
        let data = record.dynamodb.as_ref();
        let image = |attributes: Option<&std::collections::HashMap<String, AttributeValue>>| {
            attributes.map(|attributes| {
                attributes
                    .iter()
                    .map(|(name, value)| (name.clone(), attribute_json(value)))
                    .collect::<serde_json::Map<String, Value>>()
            })
        };
        let keys = image(data.and_then(|d| d.keys.as_ref())).unwrap_or_default();
        let mut dynamodb = json!({
            "ApproximateCreationDateTime": data
                .and_then(|d| d.approximate_creation_date_time)
                .map(|t| t.secs()),
            "Keys": keys,
            "SequenceNumber": data.and_then(|d| d.sequence_number.clone()),
            "SizeBytes": data.and_then(|d| d.size_bytes),
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if let Some(new) = image(data.and_then(|d| d.new_image.as_ref())) {
            dynamodb["NewImage"] = Value::Object(new);
        }
        if let Some(old) = image(data.and_then(|d| d.old_image.as_ref())) {
            dynamodb["OldImage"] = Value::Object(old);
        }
        json!({
            "eventID": record.event_id,
            "eventName": record.event_name.as_ref().map(|n| n.as_str()),
            "eventVersion": record.event_version,
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": dynamodb,
            "eventSourceARN": self.stream_arn,
        })
    }
}

/// The last record a poller saw.
#[derive(Debug, Clone)]
struct Position {
    sequence_number: String,
    event_id: String,
}

impl Position {
    fn of(record: &Record) -> Option<Self> {
        Some(Self {
            sequence_number: record.dynamodb.as_ref()?.sequence_number.clone()?,
            event_id: record.event_id.clone()?,
        })
    }
}

/// An iterator `kind` (at or after) `sequence`, or from the start.
async fn shard_iterator(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard_id: &str,
    sequence: Option<&str>,
    kind: ShardIteratorType,
) -> Result<String, String> {
    let request = streams
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(shard_id);
    let request = match sequence {
        Some(sequence) => request.shard_iterator_type(kind).sequence_number(sequence),
        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    request
        .send()
        .await
        .map_err(|e| {
            format!(
                "GetShardIterator: {}",
                aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
            )
        })?
        .shard_iterator
        .ok_or_else(|| "GetShardIterator returned no iterator".to_owned())
}

/// Where LATEST is now: the last record (`None` for an empty shard), so
/// that only what is written after the start is delivered.
async fn last_position(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard_id: &str,
) -> Result<Option<Position>, String> {
    let mut last: Option<Position> = None;
    loop {
        let iterator = shard_iterator(
            streams,
            stream_arn,
            shard_id,
            last.as_ref().map(|p| p.sequence_number.as_str()),
            ShardIteratorType::AfterSequenceNumber,
        )
        .await?;
        let records = streams
            .get_records()
            .shard_iterator(iterator)
            .limit(1000)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GetRecords: {}",
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
                )
            })?
            .records
            .unwrap_or_default();
        match records.last().and_then(Position::of) {
            Some(position) => last = Some(position),
            None => return Ok(last),
        }
    }
}

/// The template's four filters: configuration items (sk prefix `CONFIG#`),
/// inserted history items whose new image is a delete's tombstone, the
/// tenant registry's items (pk `REGISTRY`) and the live rollouts' copies (pk
/// `ROLLOUTS`).
fn is_delivered(record: &Record) -> bool {
    let data = record.dynamodb.as_ref();
    let whole_partition = data
        .and_then(|d| d.keys.as_ref())
        .and_then(|keys| keys.get(PARTITION_KEY))
        .and_then(|pk| pk.as_s().ok())
        .is_some_and(|pk| pk == REGISTRY_PARTITION || pk == LIVE_PARTITION);
    if whole_partition {
        return true;
    }
    let Some(sk) = data
        .and_then(|d| d.keys.as_ref())
        .and_then(|keys| keys.get(SORT_KEY))
        .and_then(|sk| sk.as_s().ok())
    else {
        return false;
    };
    let tombstone = || {
        record.event_name.as_ref().map(|n| n.as_str()) == Some("INSERT")
            && data
                .and_then(|d| d.new_image.as_ref())
                .and_then(|image| image.get(DELETED_ATTRIBUTE))
                .is_some_and(|deleted| matches!(deleted, AttributeValue::Bool(true)))
    };
    sk.starts_with(CONFIG_SORT_PREFIX) || (sk.starts_with(HISTORY_SORT_PREFIX) && tombstone())
}

/// A key attribute in DynamoDB JSON (key attributes are S, N or B).
fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": aws_smithy_types::base64::encode(b.as_ref())}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        _ => Value::Null,
    }
}
