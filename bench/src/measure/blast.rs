//! (13) The blast radius of a global change: a dry run through config-api
//! over growing numbers of registered tenants (three tiers) and of tenants
//! holding their own value of the key, timed, with the store reads it
//! reports. Its cost should follow the overriding tenants, not all tenants.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use reqwest::Method;
use serde_json::json;
use tenant_config_admin::values::put_item;
use tenant_config_local_stack::stack::{LocalStack, PAT, SERVICE, TABLE};
use tenant_config_shared::layers::overrides::{DynamoDbOverrides, OverrideIndex};
use tenant_config_shared::layers::registry::{DynamoDbRegistry, TenantRecord};
use tenant_config_shared::layers::{EntryKey, Layer};
use tenant_config_shared::schema::DynamoDbSchemas;
use tenant_config_shared::write::{
    Actor, ConfigWriter, DynamoDbWriter, Expected, NewValue, ValueKind, now_ms,
};
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName, TenantId, TierName};

use crate::report::{Report, Row};
use crate::stats::human;

const TIERS: [&str; 3] = ["free", "gold", "enterprise"];
/// Seeding calls to moto at once.
const SEEDING: usize = 4;
/// The target for the largest size.
const TARGET: Duration = Duration::from_secs(5);

fn tenant(n: usize) -> String {
    format!("blast-{n:05}")
}

fn key_with(overrides: usize) -> String {
    format!("tenant_config_bench_blast_{overrides}")
}

impl Report {
    pub async fn blast_radius(&mut self, stack: &LocalStack) -> Result<(), String> {
        let tenant_sizes = self.sizes.blast_tenants;
        let override_sizes = self.sizes.blast_overrides;
        let pat = stack.token(PAT).await?;
        let service = ServiceName::parse(SERVICE).map_err(|e| e.to_string())?;
        // The seeding's thousands of changes are kept off the change feed:
        // moto answers a Query of a journal partition that size in seconds,
        // which would stall every other call (this figure has its stack to
        // itself; the dry run needs no feed: the index is marked here).
        stack.stream.disable();
        for &overrides in override_sizes {
            seed_key(stack, &service, overrides).await?;
        }
        let mut rows = Vec::new();
        let mut registered = 0;
        let mut reads_by_overrides: Vec<(usize, usize, u64)> = Vec::new();
        for &tenants in tenant_sizes {
            let seeding = Instant::now();
            register(stack, registered, tenants).await?;
            registered = tenants;
            eprintln!(
                "    registered {tenants} tenants in {:.1} s",
                seeding.elapsed().as_secs_f64()
            );
            for &overrides in override_sizes {
                let key = key_with(overrides);
                let path = format!("/v1/layers/global/{SERVICE}/{key}?dry_run=true");
                let started = Instant::now();
                let answer = stack
                    .send(
                        Method::PUT,
                        &path,
                        Some(&pat),
                        &[("if-match", "1")],
                        Some(&json!({"value": {"limit": 7, "burst": 3}})),
                    )
                    .await?;
                let took = started.elapsed();
                if answer.status != 200 {
                    return Err(format!("dry run: {} {}", answer.status, answer.text));
                }
                let report = &answer.body["report"];
                let reads = report["store_reads"].as_u64().unwrap_or_default();
                reads_by_overrides.push((tenants, overrides, reads));
                let is_largest = tenants == *tenant_sizes.last().unwrap_or(&0)
                    && overrides == *override_sizes.last().unwrap_or(&0);
                rows.push(Row {
                    figure: format!(
                        "dry run of a global change: {tenants} tenants, {overrides} with their own value"
                    ),
                    ours: format!(
                        "{} ({} store reads; {} changed, {} keep their own)",
                        human(took),
                        reads,
                        report["changed"],
                        report["keeping_own_value"]
                    ),
                    baseline: "—".into(),
                    target: if is_largest {
                        format!("≤ {}", human(TARGET))
                    } else {
                        String::new()
                    },
                    met: is_largest.then_some(took <= TARGET),
                });
            }
        }
        // Store reads follow the overrides: the same overrides over more
        // tenants cost (almost) the same reads.
        let grows_with_tenants = override_sizes.iter().any(|&o| {
            let reads: Vec<u64> = reads_by_overrides
                .iter()
                .filter(|(_, overrides, _)| *overrides == o)
                .map(|(_, _, r)| *r)
                .collect();
            reads.windows(2).any(|w| w[1] > w[0] + 2)
        });
        rows.push(Row {
            figure: "store reads of the same overrides over more tenants".into(),
            ours: if grows_with_tenants {
                "grow with tenants".into()
            } else {
                "do not grow with tenants".into()
            },
            baseline: "—".into(),
            target: "grow with overrides, not tenants".into(),
            met: Some(!grows_with_tenants),
        });
        self.section(
            "13. Blast radius of a global change",
            rows,
            vec![format!(
                "A platform administrator's PUT /v1/layers/global/billing/KEY?dry_run=true through config-api under cargo lambda watch (platform role from moto's STS), timed from request to answer; nothing lands. Tenants are registered (imported: records, tier members, per-tier counts) in three tiers ({}) in turns, each tier with its own value of the key; the first N tenants hold their own value (a JSON object), written as tenant items and marked in the override index as config-refresh marks them. The key has a JSON Schema, so every changed effective value is checked. It runs on a local stack of its own, whose stream mapping is disabled: moto answers a Query of a journal partition holding the seeding's thousands of changes in seconds, which would stall every other call (in DynamoDB such a Query reads one page). Store reads are the report's own count: the per-tier counts, override index pages, the overriding tenants' registrations and values (DynamoDB: 100 a call), the shared layers' listings and guardrails, and one page of each changed tier's first members for the names. Tenants registered: {:?}; overriding: {:?}.",
                TIERS.join(", "),
                tenant_sizes,
                override_sizes
            )],
        );
        Ok(())
    }
}

/// The key's global value, each tier's, its schema, and the first
/// `overrides` tenants' own values (marked in the override index).
async fn seed_key(
    stack: &LocalStack,
    service: &ServiceName,
    overrides: usize,
) -> Result<(), String> {
    let key = ConfigKey::parse(&key_with(overrides)).map_err(|e| e.to_string())?;
    let client = aws_sdk_dynamodb::Client::new(&stack.aws);
    let writer = DynamoDbWriter::new(client.clone(), TABLE);
    let actor = Actor("bench".to_owned());
    let mut layers = vec![(Layer::Global, json!({"limit": 5, "burst": 10}))];
    for (i, tier) in TIERS.iter().enumerate() {
        layers.push((
            Layer::Tier(TierName::parse(tier).map_err(|e| e.to_string())?),
            json!({"limit": 10 * (i + 1)}),
        ));
    }
    for (layer, value) in layers {
        writer
            .put(
                &EntryKey::new(layer, service.clone(), key.clone()),
                &NewValue::json(&value, ValueKind::Plain).map_err(|e| e.to_string())?,
                Expected::Absent,
                &actor,
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    DynamoDbSchemas::new(client.clone(), TABLE)
        .put(
            service,
            Some(&key),
            &json!({"type": "object", "properties": {"limit": {"type": "integer", "maximum": 1000}}}),
        )
        .await
        .map_err(|e| e.to_string())?;
    let index = DynamoDbOverrides::new(client, TABLE);
    let (aws, index, key) = (&stack.aws, &index, &key);
    stream::iter(0..overrides)
        .map(|n| async move {
            let item = ItemKey::new(
                TenantId::parse(&tenant(n)).map_err(|e| e.to_string())?,
                service.clone(),
                key.clone(),
            );
            put_item(aws, TABLE, &item, &format!(r#"{{"burst":{n}}}"#)).await?;
            index
                .mark(&item, true, now_ms())
                .await
                .map_err(|e| e.to_string())
        })
        .buffer_unordered(SEEDING)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Registers tenants `from..to` in the three tiers, in turns, as an
/// operator onboarding existing tenants would (`import`: batches, not a
/// transaction per tenant, which moto answers by copying the whole table).
async fn register(stack: &LocalStack, from: usize, to: usize) -> Result<(), String> {
    let registry = DynamoDbRegistry::new(aws_sdk_dynamodb::Client::new(&stack.aws), TABLE);
    let records = (from..to)
        .map(|n| {
            Ok((
                TenantId::parse(&tenant(n)).map_err(|e| e.to_string())?,
                TenantRecord {
                    tier: Some(TierName::parse(TIERS[n % TIERS.len()]).map_err(|e| e.to_string())?),
                    active: true,
                },
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    registry
        .import(&records, "bench", now_ms())
        .await
        .map_err(|e| e.to_string())
}
