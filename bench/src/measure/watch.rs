//! (16) Watch: from the moment an agent learns of a change to the moment each
//! of 100 watching clients (`tenant-config-client`) has it in its callback.

use std::time::{Duration, Instant};

use futures::future::join_all;
use tenant_config_admin::values::put_item;
use tenant_config_client::{ConfigClient, StaticToken, Typed};
use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE, TABLE};
use tenant_config_shared::ItemKey;
use tenant_config_shared::domain::Changed;
use tenant_config_shared::refresh::change::Subject;

use super::agents::StackAgents;
use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

const KEY: &str = "tenant_config_watched";
/// The bound: a change reaches a watcher this soon after its agent
/// learned it.
const TARGET: Duration = Duration::from_millis(100);

impl Report {
    /// (16) Watch delivery to 100 watchers of one agent.
    pub async fn watch(&mut self, stack: &LocalStack) -> Result<(), String> {
        let (watchers, changes) = if self.sizes.smoke { (5, 3) } else { (100, 20) };
        let token = stack.token(ALICE).await?;
        let item = ItemKey::parse("tenant-a", SERVICE, KEY).map_err(|e| e.to_string())?;
        put_item(&stack.aws, TABLE, &item, "0").await?;
        let (agent, reads) = StackAgents::new(stack).await?.start_with_reads().await;
        // Every watcher a client of its own (its own connection), as
        // separate services' would be; the clock stops in its callback.
        let mut tasks = Vec::with_capacity(watchers);
        for _ in 0..watchers {
            let client = ConfigClient::builder(agent.endpoint(), SERVICE)
                .keys([KEY])
                .token(StaticToken(token.clone()))
                .connect()
                .await
                .map_err(|e| format!("client: {e}"))?;
            let mut heard = client.changes();
            // Each watcher notes when it had each change (by its value).
            tasks.push(tokio::spawn(async move {
                let _client = client;
                let mut received = vec![None; changes];
                while received.iter().any(Option::is_none) {
                    let change = tokio::time::timeout(Duration::from_secs(30), heard.recv())
                        .await
                        .map_err(|_| "a change was not delivered within 30 s".to_owned())?
                        .map_err(|e| e.to_string())?;
                    let now = Instant::now();
                    // put_item stores text: each value is a string.
                    let Some(n) = change.value.as_ref().and_then(|entry| match &entry.value {
                        Typed::Str(text) => text.parse::<usize>().ok(),
                        _ => None,
                    }) else {
                        continue;
                    };
                    if (1..=changes).contains(&n) {
                        received[n - 1].get_or_insert(now);
                    }
                }
                Ok::<_, String>(received.into_iter().flatten().collect::<Vec<_>>())
            }));
        }
        let mut learned = Vec::with_capacity(changes);
        for change in 1..=changes {
            // The value is in the store before the agent hears of it, as
            // after config-refresh's push.
            put_item(&stack.aws, TABLE, &item, &change.to_string()).await?;
            learned.push(Instant::now());
            reads
                .invalidate_subject(&Subject::Entry(item.clone()), Changed::Updated(None))
                .await
                .map_err(|e| e.to_string())?;
            // Let every watcher have it before the next change.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut delays = Vec::with_capacity(watchers * changes);
        for result in join_all(tasks).await {
            let received = result.map_err(|e| e.to_string())??;
            if received.len() != learned.len() {
                return Err(format!(
                    "a watcher had {} of {} changes",
                    received.len(),
                    learned.len()
                ));
            }
            for (at, when) in learned.iter().zip(received) {
                delays.push(when.saturating_duration_since(*at));
            }
        }
        let delivered = Summary::of(delays);
        self.compare(Comparison {
            title: format!("16. Watch: agent learns → {watchers} clients' callbacks, p99"),
            ours: delivered.p99.as_secs_f64(),
            ours_label: human(delivered.p99),
            baseline_name: "target".into(),
            baseline: TARGET.as_secs_f64(),
            baseline_label: human(TARGET),
        });
        self.section(
            "16. Watch streams",
            vec![Row {
                figure: format!(
                    "a change, from its agent learning it to each of {watchers} watchers having it ({} deliveries)",
                    delivered.count
                ),
                ours: format!("p50 {} / p99 {}", human(delivered.p50), human(delivered.p99)),
                baseline: "—".into(),
                target: format!("≤ {} p99", human(TARGET)),
                met: Some(delivered.p99 <= TARGET),
            }],
            vec![
                format!(
                    "{watchers} `tenant-config-client` clients watching one key, each with its own Watch stream on its own HTTP/2 connection, to an in-process agent on loopback; {changes} changes, each written to moto's DynamoDB first, then dropped from the agent's cache as a signed Refresh does (the clock starts there). Each stream then reads the key again (one store read shared by all: the cache coalesces loads of a key, and a stream answered stale while that load is in flight waits for it), sends it, and the client applies it and tells its subscriber (the clock stops there)."
                ),
                "From a write to a watcher through the whole change path (DynamoDB stream, config-refresh, signed push) is the propagation figure (5) plus this.".into(),
            ],
        );
        Ok(())
    }
}
