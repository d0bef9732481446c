//! (14) Progressive rollouts: a global change rolled out over many tenants in
//! three steps by the local stack's driver, read by config-api (HTTP) and two
//! agents all along: how often each tenant's version flips on each reader,
//! how long a step takes to reach every reader of a tenant it moves, and how
//! long a gate's ALARM takes to put a canary back everywhere.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tenant_config_admin::tokens::id_token;
use tenant_config_local_stack::seed;
use tenant_config_local_stack::stack::{LocalStack, PASSWORD, PAT, SERVICE, TABLE};
use tenant_config_shared::TenantId;
use tenant_config_shared::refresh::proto::GetConfigRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::rollouts::plan::{State, bucket};
use tenant_config_shared::rollouts::store::{DynamoDbRolloutStore, RolloutStore};
use tenant_config_shared::write::now_ms;
use tonic::transport::Channel;

use super::agents::StackAgents;
use crate::report::{Report, Row};
use crate::stats::human;

const KEY: &str = "tenant_config_bench_rollout";
const GATE: &str = "bench-rollout-errors";
/// Tenants watched closely per step (polled on every reader each round).
const WATCHED_PER_STEP: usize = 3;
/// Tenants of the full sweep read per reader per round: the agents answer in
/// microseconds, config-api (one Lambda process, HTTP) in a millisecond or two.
const SWEEP_AGENT: usize = 25;
const SWEEP_API: usize = 4;
/// The round the watched tenants are polled at.
const ROUND: Duration = Duration::from_millis(10);
const STEP_BOUND: Duration = Duration::from_secs(2);
const ROLLBACK_BOUND: Duration = Duration::from_secs(30);
const BAKE_SECONDS: u64 = 3;

struct Tenant {
    id: TenantId,
    token: String,
}

/// What one reader served one tenant, as it changed: (when, value).
type Seen = Vec<(Instant, Value)>;

/// A reader polled as a client would: over one connection kept open.
enum Reader {
    Api {
        client: reqwest::Client,
        url: String,
    },
    Agent(ConfigReaderClient<Channel>),
}

impl Reader {
    fn api(stack: &LocalStack) -> Result<Self, String> {
        Ok(Reader::Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?,
            url: stack.api_url(&format!("/v1/config/{SERVICE}/{KEY}")),
        })
    }

    async fn agent(endpoint: String) -> Result<Self, String> {
        let channel = super::agents::reader_channel(endpoint).await?;
        Ok(Reader::Agent(ConfigReaderClient::new(channel)))
    }

    async fn read(&self, token: &str) -> Option<Value> {
        match self {
            Reader::Api { client, url } => {
                let answer = client.get(url).bearer_auth(token).send().await.ok()?;
                if !answer.status().is_success() {
                    return None;
                }
                let body: Value = answer.json().await.ok()?;
                Some(body["value"].clone())
            }
            Reader::Agent(client) => {
                let mut request = tonic::Request::new(GetConfigRequest {
                    service: SERVICE.into(),
                    key: KEY.into(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().ok()?);
                let value = client
                    .clone()
                    .get_config(request)
                    .await
                    .ok()?
                    .into_inner()
                    .value?;
                serde_json::from_str(&value.value_json).ok()
            }
        }
    }
}

/// Creates `count` users (one tenant each) in the stack's pool and signs
/// them in.
async fn tenants(stack: &LocalStack, count: usize) -> Result<Vec<Tenant>, String> {
    let made: Vec<Result<Tenant, String>> = stream::iter(0..count)
        .map(|n| async move {
            let tenant = format!("roll-{n:04}");
            let username = format!("{tenant}@bench.example");
            seed::create_user(&stack.aws, &stack.pool, &username, PASSWORD, Some(&tenant)).await?;
            let token = id_token(&stack.aws, &stack.pool.client_id, &username, PASSWORD).await?;
            Ok(Tenant {
                id: TenantId::parse(&tenant).map_err(|e| e.to_string())?,
                token,
            })
        })
        .buffer_unordered(8)
        .collect()
        .await;
    // Not registered: a tenant never registered reads as one without a
    // tier, and a thousand registrations at once would be a thousand
    // journaled changes each reader catches up on just before the rollout.
    made.into_iter().collect()
}

async fn start(stack: &LocalStack, pat: &str, body: Value) -> Result<String, String> {
    let started = stack
        .send(Method::POST, "/v1/rollouts", Some(pat), &[], Some(&body))
        .await?;
    if started.status != 201 {
        return Err(format!("rollout: {} {}", started.status, started.text));
    }
    Ok(started.body["id"].as_str().unwrap_or_default().to_owned())
}

async fn rollout(stack: &LocalStack, pat: &str, id: &str) -> Result<Value, String> {
    Ok(stack
        .get(&format!("/v1/rollouts/{id}"), Some(pat))
        .await?
        .body)
}

struct Observed {
    /// Per reader, per tenant index: what it served, as it changed.
    seen: Vec<HashMap<usize, Seen>>,
    /// Rounds made, and how long they took on average.
    rounds: usize,
    mean_round: Duration,
    /// Per reader: how long one sweep of every tenant took.
    sweep: Vec<Duration>,
}

fn note(seen: &mut HashMap<usize, Seen>, tenant: usize, value: Option<Value>) {
    let Some(value) = value else { return };
    let history = seen.entry(tenant).or_default();
    if history.last().map(|(_, v)| v) != Some(&value) {
        history.push((Instant::now(), value));
    }
}

/// Polls `watched` on every reader each round (every [`ROUND`] at best) and
/// sweeps every tenant a few per round, until `done` says so (asked every
/// 200 ms) and every reader has served every tenant `target` since.
async fn observe(
    readers: &[Reader],
    all: &[Tenant],
    watched: &[usize],
    before: &Value,
    target: &Value,
    mut done: impl AsyncFnMut() -> Result<bool, String>,
    give_up: Duration,
) -> Result<Observed, String> {
    let mut asked = Instant::now();
    let mut finished = false;
    // Every reader served every tenant `before` when this starts.
    let mut seen: Vec<HashMap<usize, Seen>> = readers
        .iter()
        .map(|_| {
            (0..all.len())
                .map(|t| (t, vec![(Instant::now(), before.clone())]))
                .collect()
        })
        .collect();
    let mut cursor = vec![0usize; readers.len()];
    let mut swept_at: Vec<Instant> = vec![Instant::now(); readers.len()];
    let mut sweep = vec![Duration::ZERO; readers.len()];
    let began = Instant::now();
    let mut rounds = 0;
    loop {
        let round = Instant::now();
        for (r, reader) in readers.iter().enumerate() {
            for &t in watched {
                let value = reader.read(&all[t].token).await;
                note(&mut seen[r], t, value);
            }
            let per_round = match reader {
                Reader::Api { .. } => SWEEP_API,
                Reader::Agent(_) => SWEEP_AGENT,
            };
            for _ in 0..per_round {
                let t = cursor[r];
                let value = reader.read(&all[t].token).await;
                note(&mut seen[r], t, value);
                cursor[r] = (t + 1) % all.len();
                if cursor[r] == 0 {
                    sweep[r] = sweep[r].max(swept_at[r].elapsed());
                    swept_at[r] = Instant::now();
                }
            }
        }
        rounds += 1;
        if !finished && asked.elapsed() >= Duration::from_millis(200) {
            asked = Instant::now();
            finished = done().await?;
        }
        let everywhere = || {
            seen.iter().all(|per_tenant| {
                (0..all.len()).all(|t| {
                    per_tenant
                        .get(&t)
                        .and_then(|h| h.last())
                        .is_some_and(|(_, v)| v == target)
                })
            })
        };
        if finished && everywhere() {
            break;
        }
        if began.elapsed() > give_up {
            let behind: Vec<String> = seen
                .iter()
                .enumerate()
                .flat_map(|(r, per_tenant)| {
                    per_tenant
                        .iter()
                        .filter(|(_, h)| h.last().is_none_or(|(_, v)| v != target))
                        .map(move |(t, h)| {
                            format!("reader {r} tenant {t}: {:?}", h.last().map(|(_, v)| v))
                        })
                })
                .take(5)
                .collect();
            return Err(format!(
                "not done within {give_up:?} (rollout done: {finished}; behind: {behind:?})"
            ));
        }
        if let Some(rest) = ROUND.checked_sub(round.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    Ok(Observed {
        seen,
        rounds,
        mean_round: began.elapsed() / rounds.max(1) as u32,
        sweep,
    })
}

impl Report {
    pub async fn rollouts(&mut self, stack: &LocalStack) -> Result<(), String> {
        let count = if self.sizes.smoke { 20 } else { 1_000 };
        let made = Instant::now();
        let all = tenants(stack, count).await?;
        eprintln!(
            "  rollouts: {count} tenants signed in in {:?}",
            made.elapsed()
        );
        let pat = stack.token(PAT).await?;
        let factory = StackAgents::new(stack).await?;
        let pushed = factory.start().await;
        let _registration = factory.register(&pushed, "bench-rollouts").await?;
        let unreached = factory.start().await;
        let readers = [
            Reader::api(stack)?,
            Reader::agent(pushed.endpoint()).await?,
            Reader::agent(unreached.endpoint()).await?,
        ];
        stack.create_gate(GATE).await?;
        let previous = json!({"v": 1});
        let global = format!("/v1/layers/global/{SERVICE}/{KEY}");
        let written = stack
            .send(
                Method::PUT,
                &global,
                Some(&pat),
                &[("if-none-match", "*")],
                Some(&json!({"value": previous})),
            )
            .await?;
        if written.status != 201 {
            return Err(format!("global write: {} {}", written.status, written.text));
        }
        // Every reader serves every tenant the previous value first (warm).
        for reader in &readers {
            for tenant in &all {
                let deadline = Instant::now() + Duration::from_secs(10);
                while reader.read(&tenant.token).await.as_ref() != Some(&previous) {
                    if Instant::now() > deadline {
                        return Err(format!("{} never served the previous value", tenant.id));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }

        // The rollout: canaries, half the tenants, everyone.
        let canaries: Vec<usize> = (0..WATCHED_PER_STEP).collect();
        let new = json!({"v": 2});
        let id = start(
            stack,
            &pat,
            json!({
                "layer": "global", "service": SERVICE, "key": KEY, "value": new,
                "steps": [
                    {"canary": canaries.iter().map(|&t| all[t].id.as_str()).collect::<Vec<_>>()},
                    {"percent": 50}, "everyone"
                ],
                "bake_seconds": BAKE_SECONDS, "alarms": [GATE]
            }),
        )
        .await?;
        let in_half = |t: usize| bucket(&id, &all[t].id) < 5_000;
        let second: Vec<usize> = (0..count)
            .filter(|&t| !canaries.contains(&t) && in_half(t))
            .take(WATCHED_PER_STEP)
            .collect();
        let third: Vec<usize> = (0..count)
            .filter(|&t| !canaries.contains(&t) && !in_half(t))
            .take(WATCHED_PER_STEP)
            .collect();
        let watched: Vec<usize> = canaries
            .iter()
            .chain(&second)
            .chain(&third)
            .copied()
            .collect();
        // Wall-clock ms when the driver reached each step (from the record).
        let (clock_ms, clock) = (now_ms(), Instant::now());
        let at = |ms: i64| clock + Duration::from_millis(ms.saturating_sub(clock_ms).max(0) as u64);
        // The record read every 100 ms beside the readers' polling (however
        // slow a round is), for when each step was reached and the end.
        let reached: RefCell<HashMap<u64, i64>> = RefCell::new(HashMap::new());
        let (done, stop) = (Cell::new(false), Cell::new(false));
        // Straight from the table: config-api is busy being measured.
        let records = DynamoDbRolloutStore::new(aws_sdk_dynamodb::Client::new(&stack.aws), TABLE);
        let watch_record = async {
            while !stop.get() {
                let record = records
                    .get(&id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the rollout's record is gone")?;
                if record.progress.state == State::Rolling {
                    reached
                        .borrow_mut()
                        .entry(record.progress.step as u64)
                        .or_insert(record.progress.since_ms);
                }
                done.set(record.progress.state == State::Done);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<(), String>(())
        };
        let readers_polled = async {
            let observed = observe(
                &readers,
                &all,
                &watched,
                &previous,
                &new,
                async || Ok(done.get()),
                Duration::from_secs(120),
            )
            .await;
            stop.set(true);
            observed
        };
        let (observed, watched_record) = tokio::join!(readers_polled, watch_record);
        let (observed, ()) = (observed?, watched_record?);
        let mut reached = reached.into_inner();
        // The first step was reached at the start.
        let created = rollout(stack, &pat, &id).await?["created_ms"]
            .as_i64()
            .unwrap_or_default();
        reached.entry(0).or_insert(created);
        let flips: Vec<(usize, usize, usize)> = observed
            .seen
            .iter()
            .map(|per_tenant| {
                let mut once = 0;
                let mut more = 0;
                for t in 0..count {
                    match per_tenant.get(&t).map_or(0, |h| h.len().saturating_sub(1)) {
                        1 => once += 1,
                        0 => {}
                        _ => more += 1,
                    }
                }
                (once, more, count - once - more)
            })
            .collect();
        // Per step: from the driver's step change to the last of its watched
        // tenants served the new value on every reader.
        let mut step_times = Vec::new();
        for (step, group) in [(0u64, &canaries), (1, &second), (2, &third)] {
            let Some(since) = reached.get(&step) else {
                step_times.push(None);
                continue;
            };
            let from = at(*since);
            // Per reader, the slowest of the step's watched tenants.
            let per_reader: Option<Vec<Duration>> = observed
                .seen
                .iter()
                .map(|per_tenant| {
                    group
                        .iter()
                        .map(|t| {
                            per_tenant
                                .get(t)
                                .and_then(|h| h.iter().find(|(_, v)| *v == new))
                                .map(|(when, _)| when.saturating_duration_since(from))
                        })
                        .collect::<Option<Vec<Duration>>>()
                        .and_then(|times| times.into_iter().max())
                })
                .collect();
            step_times.push(per_reader);
        }

        // A second rollout whose gate goes into ALARM while its canaries
        // read the new value everywhere.
        let canaries_2: Vec<usize> = (WATCHED_PER_STEP..2 * WATCHED_PER_STEP).collect();
        let newer = json!({"v": 3});
        let _second_id = start(
            stack,
            &pat,
            json!({
                "layer": "global", "service": SERVICE, "key": KEY, "value": newer,
                "steps": [
                    {"canary": canaries_2.iter().map(|&t| all[t].id.as_str()).collect::<Vec<_>>()},
                    "everyone"
                ],
                "bake_seconds": 600, "alarms": [GATE]
            }),
        )
        .await?;
        let served_everywhere = |want: Value| {
            let (readers, all, canaries_2) = (&readers, &all, &canaries_2);
            async move {
                for reader in readers {
                    for &t in canaries_2 {
                        if reader.read(&all[t].token).await.as_ref() != Some(&want) {
                            return false;
                        }
                    }
                }
                true
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !served_everywhere(newer.clone()).await {
            if Instant::now() > deadline {
                return Err("the second rollout's canaries never served it".into());
            }
            tokio::time::sleep(ROUND).await;
        }
        let alarmed = Instant::now();
        stack
            .set_gate(GATE, aws_sdk_cloudwatch::types::StateValue::Alarm)
            .await?;
        let mut rolled_back = None;
        while alarmed.elapsed() < Duration::from_secs(60) {
            if served_everywhere(new.clone()).await {
                rolled_back = Some(alarmed.elapsed());
                break;
            }
            tokio::time::sleep(ROUND).await;
        }

        let readers_n = readers.len();
        let exactly_once = flips.iter().all(|(once, _, _)| *once == count);
        let mut rows = vec![Row {
            figure: format!(
                "tenants whose version flipped exactly once, on each of {readers_n} readers ({count} tenants)"
            ),
            ours: flips
                .iter()
                .map(|(once, _, _)| once.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            baseline: "—".into(),
            target: format!("{count} on each (exactly 1 flip per tenant per reader)"),
            met: Some(exactly_once),
        }];
        rows.push(Row {
            figure: "  of those, tenants seen flipping more than once / never".into(),
            ours: flips
                .iter()
                .map(|(_, more, never)| format!("{more}/{never}"))
                .collect::<Vec<_>>()
                .join(" · "),
            baseline: "—".into(),
            target: "0/0".into(),
            met: Some(
                flips
                    .iter()
                    .all(|(_, more, never)| *more == 0 && *never == 0),
            ),
        });
        // Figure 12's bounds: config-api its 1 s catch-up + 1 s; the pushed
        // agent the same convergence bound; an agent no push reached its 2 s
        // catch-up + 1 s.
        let bounds = [STEP_BOUND, STEP_BOUND, STEP_BOUND + Duration::from_secs(1)];
        for (step, took) in step_times.iter().enumerate() {
            rows.push(Row {
                figure: format!(
                    "step {} reached → its watched tenants served it: config-api / pushed agent / agent reached by the journal only",
                    step + 1
                ),
                ours: match took {
                    Some(times) => times.iter().map(|t| human(*t)).collect::<Vec<_>>().join(" / "),
                    None => "not seen".into(),
                },
                baseline: "—".into(),
                target: bounds.iter().map(|b| format!("≤ {}", human(*b))).collect::<Vec<_>>().join(" / "),
                met: Some(took.as_ref().is_some_and(|times| {
                    times.iter().zip(bounds).all(|(t, bound)| *t <= bound)
                })),
            });
        }
        rows.push(Row {
            figure: "gate in ALARM → the canaries served the previous value by every reader".into(),
            ours: rolled_back.map(human).unwrap_or_else(|| "> 60 s".into()),
            baseline: "—".into(),
            target: format!("≤ {}", human(ROLLBACK_BOUND)),
            met: Some(rolled_back.is_some_and(|t| t <= ROLLBACK_BOUND)),
        });
        self.section(
            "14. Progressive rollouts",
            rows,
            vec![
                format!("{count} tenants (each a user of moto's pool with its own ID token, never registered: no tier) read a global key through config-api (HTTP, cargo lambda watch), an agent registered in Cloud Map (pushed to) and one that is not (journal only), in-process agents wired as `config-agent`. A platform administrator starts a rollout of a new value through config-api: {WATCHED_PER_STEP} canaries, then 50 % of the tenants by hash, then everyone, {BAKE_SECONDS} s of bake a step, one CloudWatch alarm (moto) as its gate; the local stack's schedule ticks rollout-driver every second (the template's, every minute)."),
                format!("Flips: every reader's answer for every tenant, as it changed; each round ({} rounds, {} on average, target {}) reads the {} watched tenants on every reader and sweeps the others, {SWEEP_AGENT} per agent and {SWEEP_API} for config-api (one Lambda process); a sweep of all tenants took at most {} (config-api), {} and {} (agents), so a flip and a flip back within one sweep would go unseen there, and the watched tenants are seen every round. A tenant counted 'never' was not seen on the new value by that reader.", observed.rounds, human(observed.mean_round), human(ROUND), watched.len(), human(observed.sweep[0]), human(observed.sweep[1]), human(observed.sweep[2])),
                format!("Step times: from the moment the driver recorded the step (`since_ms` of the record) to the last first sighting of the new value, over the {WATCHED_PER_STEP} watched tenants the step moves, per reader, against figure 12's bounds (config-api its 1 s catch-up + 1 s; the pushed agent the 2 s convergence bound; an agent no push reached its 2 s catch-up + 1 s); each includes up to one round of polling. Rollback: a second rollout with {WATCHED_PER_STEP} other canaries, a 600 s bake and the same gate; once its canaries read it everywhere the gate is set to ALARM in moto, and the row is the time until all of them read the previous value on every reader (polled every {}): the local stack turns the alarm's state change into the rule's event within its 1 s poll, the driver rolls back, the stream and config-refresh carry it.", human(ROUND)),
            ],
        );
        Ok(())
    }
}
