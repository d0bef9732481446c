//! (11) Fairness between tenants: tenant B's reads while tenant A hammers
//! random keys and writes at its quota, against B alone, in one run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use tenant_config_admin::values::{ParameterKind, put_parameter};
use tenant_config_local_stack::moto::{FORK_SERVER_SOCKET, MotoServer};
use tenant_config_local_stack::stack::{
    ADMIN_GROUP, ALICE, BOB, DANA, LocalStack, PARAMETER_ROOT, SERVICE, TABLE, demo_item,
};
use tenant_config_shared::api::{ApiRequest, ConfigApi};
use tenant_config_shared::auth::{HttpJwksSource, TokenVerifier};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::catch_up::CatchUp;
use tenant_config_shared::domain::{Found, ItemKey, ReadMode};
use tenant_config_shared::layers::Layer;
use tenant_config_shared::quota::{DynamoDbWriteQuotas, QuotaLimits, TenantLoadLimiter};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::journal_table::JournalTable;
use tenant_config_shared::settings::LAMBDA_CACHE_DEFAULTS;
use tenant_config_shared::store::{ConfigStore, DynamoDbStore, Listing, ParameterStore};
use tenant_config_shared::write::lock_table::DynamoDbVersionLocks;
use tenant_config_shared::write::{DynamoDbWriter, ParameterWriter};
use tenant_config_shared::writes::ConfigWrites;
use tenant_config_shared::{ConfigKey, ServiceName, StoreError, StoreKind, TenantId};

use crate::baseline::settings;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

/// Rounds of B alone and B beside A (limits on), alternating, pooled.
const ROUNDS: usize = 3;
/// Tenant B's keys, read round-robin.
const B_KEYS: usize = 20;
/// Tenant B's pace: one read per this interval.
const B_INTERVAL: Duration = Duration::from_millis(5);
/// How long B's cache entries live, so that B keeps going to the store.
const B_TTL: Duration = Duration::from_secs(1);
/// Tenant A's concurrent readers, each sending a batch of 50 keys nobody
/// has, with this pause between batches.
const A_READERS: usize = 8;
const A_PAUSE: Duration = Duration::from_millis(2);
/// The limits of the run with limits (the deployed defaults).
const STORE_READS_PER_SEC: u32 = 20;
const STORE_READS_BURST: u32 = 100;
const WRITES_PER_MINUTE: u32 = 120;

/// Keys requested from the stores, per tenant.
#[derive(Default)]
struct KeysLoaded(Mutex<HashMap<TenantId, usize>>);

impl KeysLoaded {
    fn add(&self, tenant: &TenantId, keys: usize) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(tenant.clone()).or_default() += keys;
        }
    }

    fn of(&self, tenant: &TenantId) -> usize {
        self.0
            .lock()
            .map(|c| c.get(tenant).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A store that counts the keys each tenant asks of it.
struct Counted {
    inner: Arc<dyn ConfigStore>,
    loaded: Arc<KeysLoaded>,
}

#[async_trait]
impl ConfigStore for Counted {
    fn kind(&self) -> StoreKind {
        self.inner.kind()
    }

    async fn get(&self, item: &ItemKey, mode: ReadMode) -> Result<Option<Found>, StoreError> {
        self.loaded.add(&item.tenant, 1);
        self.inner.get(item, mode).await
    }

    async fn get_many(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        keys: &[ConfigKey],
        mode: ReadMode,
    ) -> Result<HashMap<ConfigKey, Found>, StoreError> {
        self.loaded.add(tenant, keys.len());
        self.inner.get_many(tenant, service, keys, mode).await
    }

    async fn list_layer(
        &self,
        layer: &Layer,
        service: &ServiceName,
    ) -> Result<Listing, StoreError> {
        if let Layer::Tenant(tenant) = layer {
            self.loaded.add(tenant, 1);
        }
        self.inner.list_layer(layer, service).await
    }
}

/// What tenant B saw in one phase, and what tenant A got.
struct Phase {
    b_samples: Vec<Duration>,
    b_reads: usize,
    b_loaded: usize,
    b_failures: usize,
    a_batches: usize,
    a_limited: usize,
    a_writes: usize,
    a_writes_refused: usize,
    a_keys_loaded: usize,
}

impl Phase {
    fn b_latency(&self) -> Summary {
        Summary::of(self.b_samples.clone())
    }

    fn b_hit_rate(&self) -> f64 {
        1.0 - self.b_loaded as f64 / self.b_reads.max(1) as f64
    }

    /// Rounds of one phase as one: counts and B's samples pooled.
    fn pooled(mut self, other: Phase) -> Phase {
        self.b_samples.extend(other.b_samples);
        self.b_reads += other.b_reads;
        self.b_loaded += other.b_loaded;
        self.b_failures += other.b_failures;
        self.a_batches += other.a_batches;
        self.a_limited += other.a_limited;
        self.a_writes += other.a_writes;
        self.a_writes_refused += other.a_writes_refused;
        self.a_keys_loaded += other.a_keys_loaded;
        self
    }
}

#[derive(Clone, Copy, Debug)]
enum Noise {
    Quiet,
    /// Tenant A's readers, and its administrator when `writes`.
    Noisy {
        limits: bool,
        writes: bool,
    },
}

impl Report {
    /// (11) Tenant B's p99 and hit rate alone, beside tenant A hammering.
    pub async fn fairness(&mut self, stack: &LocalStack) -> Result<(), String> {
        let b_keys: Vec<String> = (0..B_KEYS)
            .map(|i| format!("param_config_fair_{i:02}"))
            .collect();
        // Parameter Store in a moto server of its own, as in AWS it is a
        // service apart from DynamoDB: in one moto process every call of
        // every service waits for one Python interpreter (the last two rows).
        let parameter_moto = MotoServer::start().await?;
        let own = parameter_moto.sdk_config().await;
        for aws in [&own, &stack.aws] {
            for key in &b_keys {
                let item = demo_item("tenant-b", key)?;
                put_parameter(aws, PARAMETER_ROOT, &item, "steady", ParameterKind::String).await?;
            }
        }
        // What tenant B waits on when it misses is its Parameter Store; what
        // tenant A loads is CPU here (thousands of refused requests a second)
        // and the other moto (its writes, their journal and quotas). In AWS
        // neither shares a CPU with Parameter Store: B's moto gets a core of
        // its own, everything else the other, for every phase alike.
        let pinned = CorePin::split(parameter_moto.pid());
        let phase_length = if self.sizes.smoke {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(15)
        };
        // Unmeasured: a fresh moto loads each service's code on its first
        // calls, which would land in the first measured phase.
        self.phase(stack, &own, &b_keys, Noise::Quiet, phase_length / 5)
            .await?;
        // Rounds of B alone and B hammered (limits on), alternating and
        // pooled: the machine's drift over the run falls on both alike.
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let quiet = self
                .phase(stack, &own, &b_keys, Noise::Quiet, phase_length)
                .await?;
            let limited = self
                .phase(
                    stack,
                    &own,
                    &b_keys,
                    Noise::Noisy {
                        limits: true,
                        writes: true,
                    },
                    phase_length,
                )
                .await?;
            rounds.push((quiet, limited));
        }
        let (quiet, limited) = rounds
            .into_iter()
            .reduce(|(q, l), (q2, l2)| (q.pooled(q2), l.pooled(l2)))
            .ok_or("no round")?;
        // Where the rest of the gap comes from: A's reads alone, no writes
        // (before the phase without limits, whose flood of store calls moto
        // is still answering for a while after it ends).
        let reads_only = self
            .phase(
                stack,
                &own,
                &b_keys,
                Noise::Noisy {
                    limits: true,
                    writes: false,
                },
                phase_length,
            )
            .await?;
        let unlimited = self
            .phase(
                stack,
                &own,
                &b_keys,
                Noise::Noisy {
                    limits: false,
                    writes: true,
                },
                phase_length,
            )
            .await?;
        // The last two rows put B's Parameter Store in the moto that takes
        // A's writes: no split of cores can keep them apart, so none is made.
        let pinned_note = match pinned.release() {
            Ok(()) => "cores split for every row but the last two (`taskset`): tenant B's Parameter Store moto alone on core 1; on core 0 this process (both tenants' requests) and, as `SCHED_IDLE` so that they give it the core the moment it wakes, the stack's other processes (the moto taking tenant A's writes, the journal and the quotas; the functions), which stand in for AWS services that never take a function's CPU; the last two rows unpinned"
                .to_owned(),
            Err(why) => format!(
                "not pinned to cores ({why}): tenant A's writes in one moto compete for CPU with tenant B's Parameter Store in the other"
            ),
        };
        let one_moto = &stack.aws;
        let quiet_one_moto = self
            .phase(stack, one_moto, &b_keys, Noise::Quiet, phase_length)
            .await?;
        let limited_one_moto = self
            .phase(
                stack,
                one_moto,
                &b_keys,
                Noise::Noisy {
                    limits: true,
                    writes: true,
                },
                phase_length,
            )
            .await?;
        let within = |noisy: &Phase| {
            let p99 =
                noisy.b_latency().p99.as_secs_f64() <= quiet.b_latency().p99.as_secs_f64() * 1.10;
            let hits = noisy.b_hit_rate() >= quiet.b_hit_rate() * 0.90;
            p99 && hits && noisy.b_failures == 0
        };
        let b_row = |name: &str, phase: &Phase, target: &str, met: Option<bool>| Row {
            figure: format!("tenant B, {name}: p50 / p99, hit rate"),
            ours: format!(
                "{} / {}, {:.1} % ({} failed)",
                human(phase.b_latency().p50),
                human(phase.b_latency().p99),
                phase.b_hit_rate() * 100.0,
                phase.b_failures
            ),
            baseline: "—".into(),
            target: target.into(),
            met,
        };
        let a_row = |name: &str, phase: &Phase| Row {
            figure: format!(
                "tenant A, {name}: batches answered / refused (429); writes / refused; keys it loaded"
            ),
            ours: format!(
                "{} / {}; {} / {}; {}",
                phase.a_batches - phase.a_limited,
                phase.a_limited,
                phase.a_writes - phase.a_writes_refused,
                phase.a_writes_refused,
                phase.a_keys_loaded
            ),
            baseline: "—".into(),
            target: "".into(),
            met: None,
        };
        self.section(
            "11. Fairness: tenant B reads while tenant A hammers (in-process, against moto)",
            vec![
                b_row("alone", &quiet, "", None),
                b_row(
                    "A hammering, per-tenant limits on",
                    &limited,
                    "p99 within +10 %, hit rate within 10 % of alone, nothing failed",
                    Some(within(&limited)),
                ),
                b_row(
                    "A hammering with reads only (no writes), limits on (for comparison)",
                    &reads_only,
                    "",
                    None,
                ),
                b_row("A hammering, limits off (for comparison)", &unlimited, "", None),
                b_row("alone, Parameter Store in the one moto process", &quiet_one_moto, "", None),
                b_row(
                    "A hammering, limits on, Parameter Store in the one moto process",
                    &limited_one_moto,
                    "",
                    None,
                ),
                a_row("limits on", &limited),
                a_row("limits off", &unlimited),
            ],
            vec![
                format!(
                    "Each phase {phase_length:?}, one after another in this run (B alone and B beside A with limits on alternate, {ROUNDS} rounds each, pooled), on one `ConfigApi` (config-api's handler) over moto with the change journal and the write quotas in moto's DynamoDB, Parameter Store in a second moto server (in AWS they are separate services); the last two B rows put Parameter Store back in the stack's one moto process, where B's reads wait behind A's writes and their stream in one Python interpreter, which AWS does not share between services or partitions: tenant B reads {B_KEYS} Parameter Store keys round-robin, one request every {B_INTERVAL:?}, its entries living {B_TTL:?} (so about one read in ten goes to the store); hit rate = B's reads answered without asking a store; the first read after each catch-up interval (1 s) waits for the journal query: alone that is always one of B's (0.5 % of them), beside A mostly one of A's; {pinned_note}."
                ),
                "Figures 1 to 10 run with these limits off (`TENANT_STORE_READS_PER_SEC=0`, `TENANT_WRITES_PER_MINUTE=0`): they measure one tenant's paths at full speed (hundreds of cold keys in a row, 200 writes), which the limits would refuse by design. This figure's `ConfigApi` sets its own limits.".to_owned(),
                format!(
                    "Tenant A: {A_READERS} clients each sending `?keys=` batches of 50 random `param_config_*` names ({A_PAUSE:?} apart), and an administrator writing as fast as the quota lets ({WRITES_PER_MINUTE} writes per minute); limits on = `TENANT_STORE_READS_PER_SEC` {STORE_READS_PER_SEC}, burst {STORE_READS_BURST}, the deployed defaults. The write quota is on in both noisy phases."
                ),
            ],
        );
        Ok(())
    }

    async fn phase(
        &self,
        stack: &LocalStack,
        parameter_store: &SdkConfig,
        b_keys: &[String],
        noise: Noise,
        length: Duration,
    ) -> Result<Phase, String> {
        let loaded = Arc::new(KeysLoaded::default());
        let limits = matches!(noise, Noise::Noisy { limits: true, .. });
        let api = Arc::new(api(stack, parameter_store, &loaded, limits)?);
        let tokens = (
            format!("Bearer {}", stack.token(BOB).await?),
            format!("Bearer {}", stack.token(ALICE).await?),
            format!("Bearer {}", stack.token(DANA).await?),
        );
        let (bob, alice, dana) = &tokens;
        // Warm B's keys first: the phase measures a warm tenant.
        for key in b_keys {
            read(&api, bob, &format!("/v1/config/{SERVICE}/{key}")).await;
        }
        let b_before = loaded.of(&tenant("tenant-b"));
        let stop = Arc::new(AtomicBool::new(false));
        let a_batches = Arc::new(AtomicUsize::new(0));
        let a_limited = Arc::new(AtomicUsize::new(0));
        let a_writes = Arc::new(AtomicUsize::new(0));
        let a_refused = Arc::new(AtomicUsize::new(0));
        let mut noise_tasks = Vec::new();
        if let Noise::Noisy {
            writes: a_writes_too,
            ..
        } = noise
        {
            for reader in 0..A_READERS {
                let (api, stop, batches, limited) = (
                    api.clone(),
                    stop.clone(),
                    a_batches.clone(),
                    a_limited.clone(),
                );
                let alice = alice.clone();
                noise_tasks.push(tokio::spawn(async move {
                    let mut round = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        let keys: Vec<String> = (0..50)
                            .map(|i| format!("param_config_noise_{reader}_{round}_{i:02}"))
                            .collect();
                        let mut keys = keys;
                        keys.sort();
                        let path = format!("/v1/config/{SERVICE}");
                        let joined = keys.join(",");
                        let status = api
                            .handle(&ApiRequest {
                                method: "GET",
                                path: &path,
                                authorization: Some(&alice),
                                keys: Some(Ok(&joined)),
                                ..Default::default()
                            })
                            .await
                            .status;
                        batches.fetch_add(1, Ordering::Relaxed);
                        if status == 429 {
                            limited.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(A_PAUSE).await;
                    }
                }));
            }
            if a_writes_too {
                let (api, stop, writes, refused) = (
                    api.clone(),
                    stop.clone(),
                    a_writes.clone(),
                    a_refused.clone(),
                );
                let dana = dana.clone();
                noise_tasks.push(tokio::spawn(async move {
                    let path = format!("/v1/config/{SERVICE}/tenant_config_noise");
                    let mut version: Option<i64> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let tag = version.map(|v| v.to_string());
                        let body = format!("{{\"value\": {}}}", writes.load(Ordering::Relaxed));
                        let answer = api
                            .handle(&ApiRequest {
                                method: "PUT",
                                path: &path,
                                authorization: Some(&dana),
                                body: Some(&body),
                                if_match: tag.as_deref(),
                                if_none_match: version.is_none().then_some("*"),
                                ..Default::default()
                            })
                            .await;
                        writes.fetch_add(1, Ordering::Relaxed);
                        match answer.status {
                            200 | 201 => {
                                version = answer
                                    .headers
                                    .iter()
                                    .find(|(n, _)| *n == "etag")
                                    .and_then(|(_, v)| v.trim_matches('"').parse().ok());
                            }
                            429 => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                // At the quota: keep asking, as a busy client would.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            // Exists from an earlier phase: learn its version.
                            409 => version = current_version(&answer.body),
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }));
            }
        }
        // Tenant B, paced, round-robin.
        let mut samples = Vec::new();
        let mut failures = 0;
        let started = Instant::now();
        let mut next = Instant::now();
        let mut i = 0;
        while started.elapsed() < length {
            let path = format!("/v1/config/{SERVICE}/{}", b_keys[i % b_keys.len()]);
            let took = Instant::now();
            if !read(&api, bob, &path).await {
                failures += 1;
            }
            samples.push(took.elapsed());
            i += 1;
            next += B_INTERVAL;
            tokio::time::sleep_until(next.into()).await;
        }
        stop.store(true, Ordering::Relaxed);
        for task in noise_tasks {
            let _ = task.await;
        }
        let b_reads = samples.len();
        let b_loaded = loaded.of(&tenant("tenant-b")) - b_before;
        Ok(Phase {
            b_samples: samples,
            b_reads,
            b_loaded,
            b_failures: failures,
            a_batches: a_batches.load(Ordering::Relaxed),
            a_limited: a_limited.load(Ordering::Relaxed),
            a_writes: a_writes.load(Ordering::Relaxed),
            a_writes_refused: a_refused.load(Ordering::Relaxed),
            a_keys_loaded: loaded.of(&tenant("tenant-a")),
        })
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).expect("a valid tenant id")
}

fn current_version(body: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?["current_version"].as_i64()
}

/// One read; `true` for a fresh 200.
async fn read(api: &ConfigApi, bearer: &str, path: &str) -> bool {
    let answer = api
        .handle(&ApiRequest {
            method: "GET",
            path,
            authorization: Some(bearer),
            ..Default::default()
        })
        .await;
    answer.status == 200
        && !answer
            .headers
            .iter()
            .any(|(n, _)| *n == "x-config-stale-age-ms")
}

/// config-api's handler as `Aws::config_api` assembles it, over stores that
/// count each tenant's keys, with B's short TTL, and the read limit on or off.
fn api(
    stack: &LocalStack,
    parameter_store: &SdkConfig,
    loaded: &Arc<KeysLoaded>,
    limits: bool,
) -> Result<ConfigApi, String> {
    let settings = settings(stack, LAMBDA_CACHE_DEFAULTS)?;
    let dynamodb_client = aws_sdk_dynamodb::Client::new(&stack.aws);
    let ssm_client = aws_sdk_ssm::Client::new(parameter_store);
    let counted = |inner: Arc<dyn ConfigStore>| -> Arc<dyn ConfigStore> {
        Arc::new(Counted {
            inner,
            loaded: loaded.clone(),
        })
    };
    let mut cache = settings.parameter_cache;
    cache.ttl = B_TTL;
    let mut dynamodb = CachedStore::new(
        counted(Arc::new(DynamoDbStore::new(dynamodb_client.clone(), TABLE))),
        cache,
    );
    let mut parameters = CachedStore::new(
        counted(Arc::new(ParameterStore::new(
            ssm_client.clone(),
            PARAMETER_ROOT,
        ))),
        cache,
    );
    if limits {
        let limiter = Arc::new(TenantLoadLimiter::new(
            STORE_READS_PER_SEC,
            STORE_READS_BURST,
        ));
        dynamodb = dynamodb.with_load_limiter(limiter.clone());
        parameters = parameters.with_load_limiter(limiter);
    }
    let journal = settings
        .journal_table
        .clone()
        .ok_or("the stack has no journal table")?;
    let reads = ConfigReads::new(settings.router.clone(), dynamodb, parameters).with_catch_up(
        CatchUp::new(
            Arc::new(JournalTable::new(dynamodb_client.clone(), journal)),
            settings.catch_up,
        ),
    );
    let writes = ConfigWrites::new(
        settings.router.clone(),
        Arc::new(DynamoDbWriter::new(dynamodb_client.clone(), TABLE)),
        Arc::new(
            ParameterWriter::new(ssm_client, PARAMETER_ROOT).with_version_locks(Arc::new(
                DynamoDbVersionLocks::new(dynamodb_client.clone(), TABLE),
            )),
        ),
        ADMIN_GROUP,
    )
    .with_quotas(Arc::new(DynamoDbWriteQuotas::new(
        dynamodb_client,
        TABLE,
        QuotaLimits {
            writes_per_minute: WRITES_PER_MINUTE,
            max_keys: 10_000,
        },
    )));
    let jwks = HttpJwksSource::new(settings.auth.jwks_url.clone()).map_err(|e| e.to_string())?;
    let verifier = Arc::new(TokenVerifier::new(&settings.auth, Arc::new(jwks)));
    Ok(ConfigApi::new(verifier, reads).with_writes(writes))
}

/// The figure's processes on two cores, until [`CorePin::release`] (or a
/// drop, when the figure fails half way) gives every core back: tenant B's
/// Parameter Store (its own moto) alone on the second, as in AWS where it is
/// a service apart; this process (config-api's handler, both tenants'
/// requests) with the rest of the stack (the moto that takes tenant A's
/// writes, journal and quotas, and the functions) on the first.
struct CorePin {
    pinned: Result<(), String>,
    /// Every process touched, to give back its cores (and `SCHED_OTHER`).
    pids: Vec<u32>,
    cores: usize,
    released: bool,
}

impl CorePin {
    fn split(parameter_store: u32) -> Self {
        // Counted before pinning: afterwards this process sees one core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut pin = Self {
            pinned: Ok(()),
            pids: Vec::new(),
            cores,
            released: false,
        };
        if std::env::var_os(FORK_SERVER_SOCKET).is_some_and(|s| !s.is_empty()) {
            // The motos are the fork server's children then, not this
            // process's: nothing here would find them.
            pin.pinned = Err("moto runs under the test command's fork server".to_owned());
            return pin;
        }
        if cores < 2 {
            pin.pinned = Err(format!("{cores} core: nothing to split"));
            return pin;
        }
        let mut others = descendants(std::process::id());
        others.retain(|pid| *pid != parameter_store);
        pin.pids.push(std::process::id());
        pin.pids.extend(&others);
        pin.pids.push(parameter_store);
        pin.pinned = taskset(std::process::id(), "0")
            .and(taskset(parameter_store, "1"))
            .and(others.iter().try_for_each(|pid| {
                taskset(*pid, "0")?;
                set_policy(*pid, Policy::Background)
            }));
        pin
    }

    fn release(mut self) -> Result<(), String> {
        self.released = true;
        let restored = self.give_back();
        std::mem::replace(&mut self.pinned, Ok(())).and(restored)
    }

    fn give_back(&self) -> Result<(), String> {
        let all = format!("0-{}", self.cores.saturating_sub(1));
        self.pids
            .iter()
            // A process of the stack may have ended meanwhile.
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            .try_for_each(|pid| taskset(*pid, &all).and(set_policy(*pid, Policy::Normal)))
    }
}

impl Drop for CorePin {
    fn drop(&mut self) {
        if !self.released
            && let Err(why) = self.give_back()
        {
            eprintln!("fairness: cores not given back: {why}");
        }
    }
}

/// How the stack's other processes share the first core with this one:
/// they stand in for AWS services (DynamoDB taking tenant A's writes, the
/// refresh function) whose load never takes a function's CPU in AWS.
/// `SCHED_IDLE` gives up the core the moment this process wakes (measured:
/// at nice 19 tenant A's writes kept the core 56 to 83 % busy with them, this
/// process at 20 %, and every wakeup of tenant B's read waited out the
/// running slice, which put B's p99 +15 to +40 % over alone).
#[derive(Clone, Copy)]
enum Policy {
    /// `SCHED_IDLE`, for the stand-ins while pinned.
    Background,
    /// `SCHED_OTHER`, what every process had before.
    Normal,
}

/// `chrt -a -p` on every thread `pid` has now (threads created later take
/// their creator's policy); a process that ended meanwhile is no failure.
fn set_policy(pid: u32, policy: Policy) -> Result<(), String> {
    let flag = match policy {
        Policy::Background => "--idle",
        Policy::Normal => "--other",
    };
    on_every_thread("chrt", &["-a", flag, "-p", "0"], pid).or_else(|why| {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err(why)
        } else {
            Ok(())
        }
    })
}

/// Every live process under `root` (its children, theirs, ...).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // `pid (comm) state ppid ...`: the name may hold spaces, so
            // count fields after its closing parenthesis.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
            found.push(*pid);
            frontier.push(*pid);
        }
    }
    found
}

/// `taskset -a -p -c CORES PID`: every thread the process has now (new
/// threads and children inherit their creator's cores).
fn taskset(pid: u32, cores: &str) -> Result<(), String> {
    on_every_thread("taskset", &["-a", "-p", "-c", cores], pid)
}

/// `program ARGS... PID`, a command that walks every thread of `pid`. Tried
/// a few times: a thread ending during the walk (moto starts one per
/// request) fails it.
fn on_every_thread(program: &str, args: &[&str], pid: u32) -> Result<(), String> {
    let pid_text = pid.to_string();
    let mut last = String::new();
    for _ in 0..3 {
        let out = std::process::Command::new(program)
            .args(args)
            .arg(&pid_text)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    }
    Err(format!("{program} {pid}: {last}"))
}
