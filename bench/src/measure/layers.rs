//! (12) Layered configuration: the warm read of a key three layers hold
//! beside a key only the tenant holds, and how long a global change takes
//! to reach every reader of every tenant, journaled once.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tenant_config_admin::agent_client::get_config;
use tenant_config_local_stack::stack::{
    ALICE, BOB, JOURNAL_TABLE, LocalStack, PAT, SERVICE, TABLE,
};
use tenant_config_shared::api::ApiRequest;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::layers::registry::{DynamoDbRegistry, TenantRecord, TenantRegistry};
use tenant_config_shared::layers::{EntryKey, Layer};
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::journal_table::JournalTable;
use tenant_config_shared::settings::LAMBDA_CACHE_DEFAULTS;
use tenant_config_shared::write::{
    Actor, ConfigWriter, DynamoDbWriter, Expected, NewValue, ValueKind,
};
use tenant_config_shared::{ConfigKey, ServiceName, TenantId, TierName};

use std::sync::Arc;

use tenant_config_shared::StoreKind;
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::domain::{Changed, PlainValue};
use tenant_config_shared::layers::registry::MemoryRegistry;
use tenant_config_shared::layers::view::{SharedLayerSettings, SharedLayers};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;

use super::agents::StackAgents;
use crate::baseline::settings;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

/// A key global, gold and tenant-a each hold.
const LAYERED: &str = "tenant_config_bench_layered";
/// A key only tenant-a holds (seeded by the stack).
const SINGLE: &str = "tenant_config_limits";
/// The key the global change is measured on.
const CHANGED: &str = "tenant_config_bench_global_change";
const BOUND: Duration = Duration::from_secs(2);
const GIVE_UP: Duration = Duration::from_secs(15);

impl Report {
    pub async fn layers(&mut self, stack: &LocalStack) -> Result<(), String> {
        seed_three_layers(stack).await?;
        let alice = stack.token(ALICE).await?;
        let (layered, single) = self.layered_warm_reads(stack, &alice).await?;

        // The global change: config-api (HTTP) and two agents (one pushed
        // to, one reached by the journal only), for two tenants each.
        let bob = stack.token(BOB).await?;
        let pat = stack.token(PAT).await?;
        let factory = StackAgents::new(stack).await?;
        let pushed = factory.start().await;
        let _registration = factory.register(&pushed, "bench-layers").await?;
        let unreached = factory.start().await;
        let path = format!("/v1/config/{SERVICE}/{CHANGED}");
        let global = format!("/v1/layers/global/{SERVICE}/{CHANGED}");
        let first = stack
            .send(
                Method::PUT,
                &global,
                Some(&pat),
                &[("if-none-match", "*")],
                Some(&json!({"value": {"limit": 1}})),
            )
            .await?;
        if first.status != 201 {
            return Err(format!("global write: {} {}", first.status, first.text));
        }
        // Every reader serves version 1 first (warm).
        let want_1 = json!({"limit": 1});
        for token in [&alice, &bob] {
            wait_api(stack, &path, token, &want_1).await?;
            for agent in [pushed.endpoint(), unreached.endpoint()] {
                wait_agent(&agent, token, &want_1).await?;
            }
        }
        let journal = JournalTable::new(aws_sdk_dynamodb::Client::new(&stack.aws), JOURNAL_TABLE);
        let before = journaled(&journal).await?;
        let want_2 = json!({"limit": 2});
        let written = Instant::now();
        let second = stack
            .send(
                Method::PUT,
                &global,
                Some(&pat),
                &[("if-match", "\"1\"")],
                Some(&json!({"value": want_2})),
            )
            .await?;
        if second.status != 200 {
            return Err(format!("global change: {} {}", second.status, second.text));
        }
        // Every reader polled at once, each timed from the write's answer.
        let (pushed_at, unreached_at) = (pushed.endpoint(), unreached.endpoint());
        let mut polls = Vec::new();
        for (tenant, token) in [("tenant-a", &alice), ("tenant-b", &bob)] {
            polls.push(timed(
                format!("config-api, {tenant}"),
                Duration::from_secs(2),
                written,
                Box::pin(wait_api(stack, &path, token, &want_2)),
            ));
            polls.push(timed(
                format!("agent reached by the push, {tenant}"),
                Duration::from_secs(1),
                written,
                Box::pin(wait_agent(&pushed_at, token, &want_2)),
            ));
            polls.push(timed(
                format!("agent no push reached (journal only), {tenant}"),
                Duration::from_secs(3),
                written,
                Box::pin(wait_agent(&unreached_at, token, &want_2)),
            ));
        }
        let readers = futures::future::join_all(polls).await;
        let slowest = readers
            .iter()
            .filter(|(reader, _, _)| !reader.starts_with("agent no push"))
            .map(|(_, took, _)| *took)
            .collect::<Option<Vec<_>>>()
            .and_then(|t| t.into_iter().max());
        let entries = {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let n = journaled(&journal).await? - before;
                if n >= 1 || Instant::now() > deadline {
                    // Anything else journaled meanwhile would show here too.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break journaled(&journal).await? - before;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (readers_tenants, reader_calls) = store_reads_per_reader(stack).await?;
        let three_over_one = layered.p50.as_secs_f64() / single.p50.as_secs_f64().max(1e-12);
        let mut rows = vec![
            Row {
                figure: "warm read in-process of a key global, gold and the tenant hold, p50 (p99)".into(),
                ours: format!("{} ({})", human(layered.p50), human(layered.p99)),
                baseline: "—".into(),
                target: "p50 ≤ 2 µs".into(),
                met: Some(layered.p50 <= Duration::from_micros(2)),
            },
            Row {
                figure: "the same for a key only the tenant holds, p50 (p99)".into(),
                ours: format!("{} ({}); three layers {:+.0} %", human(single.p50), human(single.p99), (three_over_one - 1.0) * 100.0),
                baseline: "—".into(),
                target: "".into(),
                met: None,
            },
            Row {
                figure: "a global change: slowest of config-api and the agent reached by the push, for two tenants".into(),
                ours: slowest.map(human).unwrap_or_else(|| format!("> {GIVE_UP:?}")),
                baseline: "—".into(),
                target: format!("≤ {}", human(BOUND)),
                met: Some(slowest.is_some_and(|t| t <= BOUND)),
            },
            Row {
                figure: format!("store reads one reader makes for a global change, {readers_tenants} tenants reading the key"),
                ours: reader_calls.to_string(),
                baseline: format!("{readers_tenants} (a copy per tenant)"),
                target: "independent of tenants".into(),
                met: Some(reader_calls <= 2),
            },
            Row {
                figure: "journal entries for that change".into(),
                ours: entries.to_string(),
                baseline: "—".into(),
                target: "1".into(),
                met: Some(entries == 1),
            },
        ];
        for (reader, took, bound) in readers {
            rows.push(Row {
                figure: format!("  {reader}"),
                ours: took.map(human).unwrap_or_else(|| format!("> {GIVE_UP:?}")),
                baseline: "—".into(),
                target: format!("≤ {}", human(bound)),
                met: Some(took.is_some_and(|t| t <= bound)),
            });
        }
        self.section(
            "12. Layered configuration",
            rows,
            vec![
                format!("Warm reads: `ConfigApi::handle` over moto with the shared layers on, {} sequential requests per key, tenant-a registered in gold; the layered key's value is an object patched by each layer (JSON Merge Patch).", layered.count),
                "Global change: a platform administrator's PUT /v1/layers/global/... through config-api under cargo lambda watch (If-Match, version 1 → 2), timed from its answer until each reader serves version 2 (all polled at once every 10 ms); every reader had served version 1. Per-reader bounds as figure 7's: the push 1 s, config-api its 1 s catch-up + 1 s, an agent no push reached its 2 s catch-up + 1 s. The DynamoDB stream reaches config-refresh (the local stack polls it), which journals and pushes once; the unregistered agent and config-api catch up from the journal. Store reads per reader: one in-process reader (`ConfigReads` with the shared layers, the Lambda's cache settings) over counting in-memory stores; every tenant (a third in each of three tiers, each tier with its own value) reads the key warm, the global entry changes and the reader is told (as by a push or the journal), then every tenant reads again until each serves the new value; the row counts the store calls of that second round.".to_owned(),
            ],
        );
        Ok(())
    }

    async fn layered_warm_reads(
        &self,
        stack: &LocalStack,
        token: &str,
    ) -> Result<(Summary, Summary), String> {
        let api = Aws::from_config(stack.aws.clone())
            .config_api(&settings(stack, LAMBDA_CACHE_DEFAULTS)?)
            .map_err(|e| e.to_string())?;
        let bearer = format!("Bearer {token}");
        let mut summaries = Vec::new();
        for key in [LAYERED, SINGLE] {
            let path = format!("/v1/config/{SERVICE}/{key}");
            let request = ApiRequest {
                method: "GET",
                path: &path,
                authorization: Some(&bearer),
                ..Default::default()
            };
            let first = api.handle(&request).await;
            if first.status != 200 {
                return Err(format!(
                    "warm read of {key}: {} {}",
                    first.status, first.body
                ));
            }
            let mut samples = Vec::with_capacity(self.sizes.warm_iterations);
            for _ in 0..self.sizes.warm_iterations {
                let started = Instant::now();
                let response = api.handle(&request).await;
                samples.push(started.elapsed());
                if response.status != 200 {
                    return Err(format!("warm read of {key}: {}", response.status));
                }
            }
            summaries.push(Summary::of(samples));
        }
        let single = summaries.pop().ok_or("no samples")?;
        let layered = summaries.pop().ok_or("no samples")?;
        Ok((layered, single))
    }
}

/// How many store calls one reader makes to serve a global change to every
/// tenant reading the key: `(tenants, calls)`.
async fn store_reads_per_reader(stack: &LocalStack) -> Result<(usize, usize), String> {
    const TENANTS: usize = 1_000;
    let settings = settings(stack, LAMBDA_CACHE_DEFAULTS)?;
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    let registry = Arc::new(MemoryRegistry::default());
    let service = ServiceName::parse(SERVICE).map_err(|e| e.to_string())?;
    let key = ConfigKey::parse(CHANGED).map_err(|e| e.to_string())?;
    let plain = |value: serde_json::Value| {
        Arc::new(PlainValue {
            value,
            version: Some(1),
            kind: tenant_config_shared::domain::ValueKind::Plain,
            written: Default::default(),
        })
    };
    let tiers = ["free", "gold", "enterprise"];
    dynamodb.put_in_layer(
        &Layer::Global,
        &service,
        &key,
        plain(json!({"limit": 1, "burst": 1})),
    );
    for tier in tiers {
        let tier = TierName::parse(tier).map_err(|e| e.to_string())?;
        dynamodb.put_in_layer(
            &Layer::Tier(tier),
            &service,
            &key,
            plain(json!({"burst": 2})),
        );
    }
    let mut tenants = Vec::with_capacity(TENANTS);
    for n in 0..TENANTS {
        let tenant = TenantId::parse(&format!("reader-{n:04}")).map_err(|e| e.to_string())?;
        registry
            .put(
                &tenant,
                &TenantRecord {
                    tier: Some(TierName::parse(tiers[n % 3]).map_err(|e| e.to_string())?),
                    active: true,
                },
                None,
                "bench",
                0,
            )
            .await
            .map_err(|e| e.to_string())?;
        tenants.push(tenant);
    }
    let layers = Arc::new(SharedLayers::new(
        dynamodb.clone(),
        parameters.clone(),
        registry,
        SharedLayerSettings {
            ttl: settings.dynamodb_cache.ttl,
            stale: settings.dynamodb_cache.stale,
            max_tenants: settings.dynamodb_cache.max_entries,
        },
    ));
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), settings.dynamodb_cache),
        CachedStore::new(parameters.clone(), settings.parameter_cache),
    )
    .with_layers(layers);
    let read_all = |want: serde_json::Value| {
        let (reads, tenants, service, key) = (&reads, &tenants, &service, &key);
        async move {
            for tenant in tenants {
                let entry = reads
                    .get(tenant, service, key)
                    .await
                    .map_err(|e| e.to_string())?;
                if entry.value.value != want {
                    return Err(format!("{tenant} read {}, want {want}", entry.value.value));
                }
            }
            Ok::<(), String>(())
        }
    };
    read_all(json!({"limit": 1, "burst": 2})).await?;
    let calls = || dynamodb.gets() + dynamodb.batches() + dynamodb.listings();
    let before = calls();
    dynamodb.put_in_layer(
        &Layer::Global,
        &service,
        &key,
        plain(json!({"limit": 9, "burst": 1})),
    );
    reads
        .invalidate_subject(
            &Subject::in_layer(Layer::Global, service.clone(), key.clone()),
            Changed::Updated(None),
        )
        .await
        .map_err(|e| e.to_string())?;
    read_all(json!({"limit": 9, "burst": 2})).await?;
    Ok((TENANTS, calls() - before))
}

/// Global, gold and tenant-a's own value of [`LAYERED`], tenant-a in gold.
async fn seed_three_layers(stack: &LocalStack) -> Result<(), String> {
    let writer = DynamoDbWriter::new(aws_sdk_dynamodb::Client::new(&stack.aws), TABLE);
    let service = ServiceName::parse(SERVICE).map_err(|e| e.to_string())?;
    let key = ConfigKey::parse(LAYERED).map_err(|e| e.to_string())?;
    let gold = TierName::parse("gold").map_err(|e| e.to_string())?;
    let tenant = TenantId::parse("tenant-a").map_err(|e| e.to_string())?;
    let actor = Actor("bench".to_owned());
    for (layer, value) in [
        (
            Layer::Global,
            r#"{"requests":10,"burst":20,"theme":{"color":"blue","font":"serif"}}"#,
        ),
        (Layer::Tier(gold.clone()), r#"{"requests":50}"#),
        (
            Layer::Tenant(tenant.clone()),
            r#"{"theme":{"font":null},"burst":5}"#,
        ),
    ] {
        writer
            .put(
                &EntryKey::new(layer, service.clone(), key.clone()),
                &NewValue::text(value, ValueKind::Plain),
                Expected::Any,
                &actor,
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    let registry = DynamoDbRegistry::new(aws_sdk_dynamodb::Client::new(&stack.aws), TABLE);
    let current = registry
        .get(&tenant)
        .await
        .map_err(|e| e.to_string())?
        .map(|r| r.version);
    registry
        .put(
            &tenant,
            &TenantRecord {
                tier: Some(gold),
                active: true,
            },
            current,
            "bench",
            0,
        )
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the registration changed meanwhile")?;
    Ok(())
}

/// How long after `since` the reader served the new value (`None`: never).
async fn timed(
    reader: String,
    bound: Duration,
    since: Instant,
    wait: std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>,
) -> (String, Option<Duration>, Duration) {
    let took = wait.await.ok().map(|()| since.elapsed());
    (reader, took, bound)
}

async fn journaled(journal: &JournalTable) -> Result<usize, String> {
    Ok(journal
        .since(0, 10_000)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| e.change.subject.to_string().ends_with(CHANGED))
        .count())
}

async fn wait_api(
    stack: &LocalStack,
    path: &str,
    token: &str,
    want: &serde_json::Value,
) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < GIVE_UP {
        let answer = stack.get(path, Some(token)).await?;
        if answer.status == 200 && &answer.body["value"] == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!(
        "config-api did not serve {want} within {GIVE_UP:?}"
    ))
}

async fn wait_agent(agent: &str, token: &str, want: &serde_json::Value) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < GIVE_UP {
        if let Ok(text) = get_config(agent, token, SERVICE, CHANGED).await
            && serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .as_ref()
                == Some(want)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!(
        "agent {agent} did not serve {want} within {GIVE_UP:?}"
    ))
}
