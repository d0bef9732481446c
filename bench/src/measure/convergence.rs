//! (7) Convergence: from a write in either store until each kind of reader
//! serves the new value, and what catch-up costs a warm reader.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenant_config_admin::agent_client::get_config;
use tenant_config_admin::values::{ParameterKind, Target};
use tenant_config_local_stack::agent::AgentProcess;
use tenant_config_local_stack::process::workspace_root;
use tenant_config_local_stack::stack::{
    ALICE, LocalStack, PARAMETER_ROOT, SERVICE, TABLE, demo_item,
};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::catch_up::{CatchUp, CatchUpSettings};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::discovery::AgentRegistration;
use tenant_config_shared::refresh::journal::MemoryJournal;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::settings::LAMBDA_CACHE_DEFAULTS;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::{ConfigKey, ServiceName, StoreKind, TenantId};
use tenant_config_testkit::values::{item, plain};

use super::agents::StackAgents;
use crate::baseline::settings;
use crate::report::{Report, Row};
use crate::stats::human;

/// Longest any case is waited for before it counts as missed.
const GIVE_UP: Duration = Duration::from_secs(15);

/// Polls `serves` every 10 ms until it answers true; the time from `since`.
async fn converged<F, Fut>(since: Instant, mut serves: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    while since.elapsed() < GIVE_UP {
        if serves().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn row(figure: &str, took: Option<Duration>, bound: Duration) -> Row {
    Row {
        figure: figure.into(),
        ours: took.map(human).unwrap_or_else(|| format!("> {GIVE_UP:?}")),
        baseline: "—".into(),
        target: format!("≤ {}", human(bound)),
        met: Some(took.is_some_and(|t| t <= bound)),
    }
}

impl Report {
    pub async fn convergence(&mut self, stack: &LocalStack) -> Result<(), String> {
        let factory = StackAgents::new(stack).await?;
        let agent_settings = &factory.settings;
        let lambda_settings = settings(stack, LAMBDA_CACHE_DEFAULTS)?;
        let key_param = "param_config_endpoint";
        let key_item = "tenant_config_limits";
        let alice = stack.token(ALICE).await?;
        // One agent registered in Cloud Map (pushed to), one not (only the
        // journal reaches it), both with the agent's defaults.
        let pushed = factory.start().await;
        let registration = factory.register(&pushed, "bench-convergence").await?;
        let unreached = factory.start().await;
        let agent_serves = |agent: String, key: &'static str, expected: String| {
            let alice = alice.clone();
            move || {
                let (agent, alice, expected) = (agent.clone(), alice.clone(), expected.clone());
                async move {
                    get_config(&agent, &alice, SERVICE, key)
                        .await
                        .is_ok_and(|v| v == expected)
                }
            }
        };
        let api_serves = |key: &'static str, expected: String| {
            let alice = alice.clone();
            move || {
                let (alice, expected) = (alice.clone(), expected.clone());
                async move {
                    stack
                        .get(&format!("/v1/config/{SERVICE}/{key}"), Some(&alice))
                        .await
                        .is_ok_and(|a| {
                            let expected: Option<serde_json::Value> =
                                serde_json::from_str(&expected).ok();
                            if a.status == 200 {
                                expected.as_ref() == Some(&a.body["value"])
                            } else {
                                expected == Some(serde_json::Value::from(a.status))
                            }
                        })
                }
            }
        };
        // Warm every reader (and config-refresh) first.
        for agent in [pushed.endpoint(), unreached.endpoint()] {
            get_config(&agent, &alice, SERVICE, key_param)
                .await
                .map_err(|s| s.message().to_owned())?;
            get_config(&agent, &alice, SERVICE, key_item)
                .await
                .map_err(|s| s.message().to_owned())?;
        }
        for key in [key_param, key_item, "tenant_config_bench_new"] {
            stack
                .get(&format!("/v1/config/{SERVICE}/{key}"), Some(&alice))
                .await?;
        }
        stack
            .send_change_event(
                "Update",
                &format!("{PARAMETER_ROOT}/tenant-b/{SERVICE}/{key_param}"),
            )
            .await??;

        // Parameter Store: PutParameter, then the event EventBridge sends.
        let value = "\"https://converge.tenant-a.example\"".to_owned();
        let written = Instant::now();
        stack
            .change_parameter("tenant-a", key_param, "https://converge.tenant-a.example")
            .await??;
        let (param_pushed, param_unreached, param_api) = tokio::join!(
            converged(
                written,
                agent_serves(pushed.endpoint(), key_param, value.clone())
            ),
            converged(
                written,
                agent_serves(unreached.endpoint(), key_param, value.clone())
            ),
            converged(written, api_serves(key_param, value.clone())),
        );

        // DynamoDB: one PutItem; the stream does the rest.
        let target = Target {
            secure_string_key: None,
            table: TABLE.to_owned(),
            parameter_root: PARAMETER_ROOT.to_owned(),
            router: KeyRouter::default(),
        };
        let text = r#"{"max_users":64,"tier":"gold"}"#;
        let written = Instant::now();
        target
            .put(
                &stack.aws,
                &demo_item("tenant-a", key_item)?,
                text,
                ParameterKind::String,
            )
            .await?;
        let (item_pushed, item_unreached, item_api) = tokio::join!(
            converged(
                written,
                agent_serves(pushed.endpoint(), key_item, text.to_owned())
            ),
            converged(
                written,
                agent_serves(unreached.endpoint(), key_item, text.to_owned())
            ),
            converged(written, api_serves(key_item, text.to_owned())),
        );

        // A key created after config-api cached its 404.
        let written = Instant::now();
        target
            .put(
                &stack.aws,
                &demo_item("tenant-a", "tenant_config_bench_new")?,
                "created",
                ParameterKind::String,
            )
            .await?;
        let created = converged(
            written,
            api_serves("tenant_config_bench_new", "\"created\"".to_owned()),
        )
        .await;
        let _ = registration.deregister().await;

        // The stage cache in front of config-api: a burst of five parameter
        // changes, and the flush that follows them, once the flushes the
        // changes above asked for have happened.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let flushes_before = stack.stage_cache.flushes().len();
        let burst_started = Instant::now();
        let mut last_change = burst_started;
        for i in 0..5 {
            stack
                .change_parameter("tenant-a", key_param, &format!("https://burst-{i}.example"))
                .await??;
            last_change = Instant::now();
        }
        let burst = burst_started.elapsed();
        let flushed = converged(last_change, || async {
            stack.stage_cache.flushes().len() > flushes_before
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let burst_flushes = stack.stage_cache.flushes().len() - flushes_before;

        // A real agent process, registered, frozen (SIGSTOP) for longer than
        // the Refresh signature window while the push goes out: the buffered
        // Refresh is refused as stale once it thaws, so only the journal can
        // bring the change.
        let pause = if self.sizes.smoke {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(65)
        };
        let profile = if self.sizes.smoke { "debug" } else { "release" };
        let binary = workspace_root().join(format!("target/{profile}/config-agent"));
        let mut frozen = AgentProcess::start_binary("bench-frozen", &stack.env, &binary).await?;
        get_config(&frozen.endpoint(), &alice, SERVICE, key_param)
            .await
            .map_err(|s| s.message().to_owned())?;
        frozen.set_paused(true);
        let pushed_while_frozen = stack
            .change_parameter("tenant-a", key_param, "https://after-the-freeze.example")
            .await?;
        tokio::time::sleep(pause).await;
        frozen.set_paused(false);
        let thawed = Instant::now();
        let after_freeze = converged(
            thawed,
            agent_serves(
                frozen.endpoint(),
                key_param,
                "\"https://after-the-freeze.example\"".to_owned(),
            ),
        )
        .await;
        let _ = frozen.stop_gracefully();

        let lambda = lambda_settings.catch_up.interval;
        let agent = agent_settings.catch_up.interval;
        let second = Duration::from_secs(1);
        let queries = catch_up_cost(self.sizes.smoke).await?;
        self.section(
            "7. Convergence (write → the reader serves the new value)",
            vec![
                row("agent reached by the push, parameter changed (PutParameter + event)", param_pushed, second),
                row("agent no push reached, parameter changed", param_unreached, agent + second),
                row("config-api, parameter changed", param_api, lambda + second),
                row("agent reached by the push, DynamoDB PutItem (stream)", item_pushed, second),
                row("agent no push reached, DynamoDB PutItem", item_unreached, agent + second),
                row("config-api, DynamoDB PutItem", item_api, lambda + second),
                row("config-api, key created after it cached a 404", created, lambda + second),
                row(
                    &format!(
                        "agent process frozen {} while the push went out (push {}), from thawing",
                        human(pause),
                        if pushed_while_frozen.is_err() { "failed" } else { "delivered" }
                    ),
                    after_freeze,
                    agent + second,
                ),
                row(
                    &format!("stage cache flushed after a burst of 5 changes in {} (from the last change)", human(burst)),
                    flushed,
                    Duration::from_secs(5),
                ),
                Row {
                    figure: "stage cache flushes for that burst".into(),
                    ours: burst_flushes.to_string(),
                    baseline: "—".into(),
                    target: "1".into(),
                    met: Some(burst_flushes == 1),
                },
                Row {
                    figure: "journal queries per warm reader per minute, 50 reads/s, no changes".into(),
                    ours: format!("{:.0}", queries.busy_per_minute),
                    baseline: "—".into(),
                    target: format!("≤ {:.0}", 60.0 / lambda.as_secs_f64()),
                    met: Some(queries.busy_per_minute <= 60.0 / lambda.as_secs_f64() + 1.0),
                },
                Row {
                    figure: "journal queries per idle reader (no reads)".into(),
                    ours: queries.idle.to_string(),
                    baseline: "—".into(),
                    target: "0".into(),
                    met: Some(queries.idle == 0),
                },
            ],
            vec![
                format!(
                    "Readers with their defaults: config-api (catch-up every {lambda:?}, 60 s TTLs) over HTTP through cargo lambda watch; two in-process agents (catch-up every {agent:?}, hour-long TTLs) with the real adapters, one registered in moto's Cloud Map (pushed to), one not (only the journal reaches it). Each reader polled every 10 ms from the write."
                ),
                "Parameter rows include the event config-refresh gets (sent right after PutParameter, as EventBridge would). DynamoDB rows include the local stack's stream mapping (it polls the stream every 100 ms; AWS's event source mapping polls each shard about four times a second).".into(),
                "Stage cache: moto has no API Gateway stage cache, so the local stack answers FlushStageCache itself and records when config-refresh's real SDK call arrived; a flush comes after the flush requests' delivery delay (2 s, longer than config-api's catch-up) and the queue's batching window (2 s). The cached routes are therefore fresh this long after a change, instead of the stage cache TTL (300 s by default).".into(),
                "Catch-up cost: an in-process reader reading a cached key 50 times a second for the measured time, counting journal queries; then the same reader with no reads.".into(),
            ],
        );
        Ok(())
    }
}

struct CatchUpCost {
    busy_per_minute: f64,
    idle: usize,
}

/// Journal queries a warm reader makes while busy and while idle.
async fn catch_up_cost(smoke: bool) -> Result<CatchUpCost, String> {
    let store = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let cached = item("tenant-a", SERVICE, "tenant_config_limits");
    store.put(&cached, plain(serde_json::json!("v")));
    let settings = LAMBDA_CACHE_DEFAULTS;
    let cache = tenant_config_shared::cache::CacheSettings {
        ttl: Duration::from_secs(settings.dynamodb_ttl_secs),
        not_found_ttl: Duration::from_secs(settings.not_found_ttl_secs),
        max_entries: settings.max_entries,
        stale: tenant_config_shared::cache::StaleIfError::DEFAULT,
    };
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(store, cache),
        CachedStore::new(Arc::new(MemoryStore::new(StoreKind::ParameterStore)), cache),
    )
    .with_catch_up(CatchUp::new(
        Arc::new(MemoryJournal::new()),
        CatchUpSettings::LAMBDA,
    ));
    let (tenant, service, key) = (
        TenantId::parse("tenant-a").map_err(|e| e.to_string())?,
        ServiceName::parse(SERVICE).map_err(|e| e.to_string())?,
        ConfigKey::parse("tenant_config_limits").map_err(|e| e.to_string())?,
    );
    let busy_for = if smoke {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(20)
    };
    let started = Instant::now();
    while started.elapsed() < busy_for {
        reads
            .get(&tenant, &service, &key)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queries = reads.catch_up().map(CatchUp::queries).unwrap_or_default();
    let busy_per_minute = queries as f64 * 60.0 / started.elapsed().as_secs_f64();
    tokio::time::sleep(busy_for / 2).await;
    let idle = reads.catch_up().map(CatchUp::queries).unwrap_or_default() - queries;
    Ok(CatchUpCost {
        busy_per_minute,
        idle,
    })
}
