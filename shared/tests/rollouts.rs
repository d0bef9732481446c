//! Rollouts through the API and the driver: a platform administrator stages
//! a shared change, the driver's ticks move it step by step (or back on a
//! gate's alarm), and tenants read one version each all along. In-memory
//! stores, registry, gates and rollout store; real API, caches, readers and
//! control. The journal's part (telling readers a rollout changed) is
//! played by `invalidate_rollouts`; the end-to-end test plays it for real.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tenant_config_shared::api::{ApiRequest, ConfigApi};
use tenant_config_shared::cache::{CachedStore, StaleIfError};
use tenant_config_shared::domain::Changed;
use tenant_config_shared::error::StoreError;
use tenant_config_shared::layers::platform::PlatformWrites;
use tenant_config_shared::layers::registry::{MemoryRegistry, TenantRecord, TenantRegistry};
use tenant_config_shared::layers::view::{SharedLayerSettings, SharedLayers};
use tenant_config_shared::layers::{EntryKey, Layer};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::rollouts::control::{Gates, RolloutControl};
use tenant_config_shared::rollouts::plan::{Gate, State};
use tenant_config_shared::rollouts::store::MemoryRolloutStore;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_shared::write::{ConfigWriter, Expected, NewValue, ValueKind};
use tenant_config_shared::{ConfigKey, ServiceName, StoreKind, TenantId, TierName};
use tenant_config_testkit::agent::HOUR_LONG_CACHE;
use tenant_config_testkit::identity::{token, token_in_groups, verifier};

const PLATFORM_GROUP: &str = "config-platform-admins";
const CONVERGENCE: Duration = Duration::from_secs(2);
const LIMITS: &str = "/v1/config/billing/tenant_config_limits";

/// Alarms whose state a test sets.
#[derive(Default)]
struct FakeGates {
    alarms: Mutex<HashMap<String, Gate>>,
    unreadable: Mutex<bool>,
}

#[async_trait]
impl Gates for FakeGates {
    async fn read(&self, alarms: &[String]) -> Result<Vec<Gate>, StoreError> {
        if *self.unreadable.lock().unwrap() {
            return Err(StoreError::Unavailable {
                store: StoreKind::DynamoDb,
                detail: "cloudwatch down".to_owned(),
            });
        }
        let states = self.alarms.lock().unwrap();
        Ok(alarms
            .iter()
            .map(|a| states.get(a).cloned().unwrap_or(Gate::Ok))
            .collect())
    }
}

struct World {
    api: ConfigApi,
    control: Arc<RolloutControl>,
    reads: ConfigReads,
    store: Arc<MemoryRolloutStore>,
    dynamodb: Arc<MemoryStore>,
    gates: FakeGates,
    tenants: Vec<TenantId>,
}

fn entry() -> EntryKey {
    EntryKey::new(
        Layer::Global,
        ServiceName::parse("billing").unwrap(),
        ConfigKey::parse("tenant_config_limits").unwrap(),
    )
}

/// 40 tenants (t00–t39, the first ten in gold), a global default
/// `{"max": 1}` at version 1, and rollouts on.
async fn world() -> World {
    world_with(Duration::from_secs(3600)).await
}

/// [`world`] with readers that keep what they load for `ttl`.
async fn world_with(ttl: Duration) -> World {
    let dynamodb = Arc::new(MemoryStore::new(StoreKind::DynamoDb));
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    let registry = Arc::new(MemoryRegistry::default());
    let rollouts = Arc::new(MemoryRolloutStore::new());
    let gold = TierName::parse("gold").unwrap();
    let mut tenants = Vec::new();
    for n in 0..40 {
        let tenant = TenantId::parse(&format!("t{n:02}")).unwrap();
        let record = TenantRecord {
            tier: (n < 10).then(|| gold.clone()),
            active: true,
        };
        registry
            .put(&tenant, &record, None, "ops", 1)
            .await
            .unwrap();
        tenants.push(tenant);
    }
    ConfigWriter::put(
        dynamodb.as_ref(),
        &entry(),
        &NewValue::json(&json!({"max": 1}), ValueKind::Plain).unwrap(),
        Expected::Absent,
        &tenant_config_shared::write::Actor("ops".to_owned()),
    )
    .await
    .unwrap();
    let platform = || {
        PlatformWrites::new(
            KeyRouter::default(),
            dynamodb.clone(),
            parameters.clone(),
            registry.clone(),
            PLATFORM_GROUP,
        )
        .with_rollouts(rollouts.clone())
    };
    let layers = Arc::new(
        SharedLayers::new(
            dynamodb.clone(),
            parameters.clone(),
            registry.clone(),
            SharedLayerSettings {
                ttl,
                stale: StaleIfError::DEFAULT,
                max_tenants: 100,
            },
        )
        .with_rollouts(rollouts.clone()),
    );
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(dynamodb.clone(), HOUR_LONG_CACHE),
        CachedStore::new(parameters.clone(), HOUR_LONG_CACHE),
    )
    .with_layers(layers.clone());
    let control = Arc::new(
        RolloutControl::new(
            rollouts.clone(),
            Arc::new(platform()),
            registry.clone(),
            CONVERGENCE,
        )
        .with_ids(|| "r-test".to_owned()),
    );
    World {
        api: ConfigApi::new(verifier(), reads.clone())
            .with_platform_writes(platform())
            .with_rollouts(control.clone()),
        control,
        reads,
        store: rollouts,
        dynamodb,
        gates: FakeGates::default(),
        tenants,
    }
}

fn platform_admin() -> String {
    format!(
        "Bearer {}",
        token_in_groups("ops", "platform-admin-1", &[PLATFORM_GROUP])
    )
}

async fn call(
    w: &World,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let response = w
        .api
        .handle(&ApiRequest {
            method,
            path,
            authorization: Some(bearer),
            body,
            ..Default::default()
        })
        .await;
    (
        response.status,
        serde_json::from_str(&response.body).unwrap_or(Value::Null),
    )
}

/// What `tenant` reads of the key now.
async fn read(w: &World, tenant: &TenantId) -> Value {
    let bearer = format!("Bearer {}", token(tenant.as_str()));
    let (status, body) = call(w, "GET", LIMITS, &bearer, None).await;
    assert_eq!(status, 200, "{body}");
    body["value"].clone()
}

/// Every tenant's reading, in tenant order.
async fn readings(w: &World) -> Vec<Value> {
    let mut all = Vec::new();
    for tenant in &w.tenants {
        all.push(read(w, tenant).await);
    }
    all
}

/// What a reader does when the journal says the rollout changed.
async fn heard(w: &World) {
    w.reads
        .invalidate_subject(&Subject::Rollout(entry()), Changed::Updated(None))
        .await
        .unwrap();
}

/// One driver tick at `at_ms`, then what readers hear from the journal.
async fn tick(w: &World, at_ms: i64) -> Vec<State> {
    let moved = w.control.tick(&w.gates, at_ms).await.unwrap();
    heard(w).await;
    moved.into_iter().map(|m| m.to).collect()
}

/// A platform administrator's write of the global value over `if_match`.
async fn put_global(w: &World, value: &str, if_match: &str) -> (u16, Value) {
    let response = w
        .api
        .handle(&ApiRequest {
            method: "PUT",
            path: "/v1/layers/global/billing/tenant_config_limits",
            authorization: Some(&platform_admin()),
            body: Some(value),
            if_match: Some(if_match),
            ..Default::default()
        })
        .await;
    (
        response.status,
        serde_json::from_str(&response.body).unwrap_or(Value::Null),
    )
}

async fn start(w: &World, body: Value) -> (u16, Value) {
    call(
        w,
        "POST",
        "/v1/rollouts",
        &platform_admin(),
        Some(&body.to_string()),
    )
    .await
}

/// Starts `{"max": 2}` for everyone in one step with no bake, watching
/// `alarms`; the start must be accepted.
async fn start_at_once(w: &World, alarms: &[&str]) {
    let (status, body) = start(
        w,
        json!({
            "layer": "global", "service": "billing", "key": "tenant_config_limits",
            "value": {"max": 2}, "steps": ["everyone"], "bake_seconds": 0, "alarms": alarms
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

fn staged() -> Value {
    json!({
        "layer": "global", "service": "billing", "key": "tenant_config_limits",
        "value": {"max": 2},
        "steps": [{"canary": ["t03", "t17"]}, {"percent": 50}, "everyone"],
        "bake_seconds": 60, "alarms": ["errors-high"]
    })
}

fn now() -> i64 {
    tenant_config_shared::write::now_ms()
}

#[tokio::test]
async fn a_rollout_widens_step_by_step_and_every_tenant_moves_once() {
    let w = world().await;
    let new = json!({"max": 2});
    // GIVEN a tenant administrator cannot start a rollout
    let tenant_admin = format!(
        "Bearer {}",
        token_in_groups("t03", "admin-3", &["config-admins"])
    );
    let (status, _) = call(
        &w,
        "POST",
        "/v1/rollouts",
        &tenant_admin,
        Some(&staged().to_string()),
    )
    .await;
    assert_eq!(status, 403);
    // WHEN a platform administrator starts one
    let (status, body) = start(&w, staged()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (
            body["id"].as_str(),
            body["state"].as_str(),
            body["step"].as_i64()
        ),
        (Some("r-test"), Some("rolling"), Some(0))
    );
    assert_eq!(body["base_version"], json!(1));
    heard(&w).await;
    // THEN a second rollout of the key and a direct write of it are refused
    let (status, second) = start(&w, staged()).await;
    assert_eq!(
        (status, second["error"].as_str()),
        (409, Some("rollout_in_progress")),
        "{second}"
    );
    let (status, write) = put_global(&w, r#"{"value": {"max": 9}}"#, "1").await;
    assert_eq!(
        (status, write["error"].as_str()),
        (409, Some("rollout_in_progress")),
        "{write}"
    );
    // AND only the canaries read the new value
    let at_start = readings(&w).await;
    let on_new: Vec<usize> = (0..40).filter(|i| at_start[*i] == new).collect();
    assert_eq!(on_new, [3, 17]);
    // WHEN the driver ticks: converged, baked, next step
    let t0 = now();
    assert!(tick(&w, t0 + 1_000).await.is_empty(), "still converging");
    assert_eq!(tick(&w, t0 + 2_000).await, [State::Baking]);
    assert!(tick(&w, t0 + 30_000).await.is_empty(), "still baking");
    assert_eq!(tick(&w, t0 + 62_000).await, [State::Rolling]);
    // THEN about half the tenants read the new value, the canaries still among them
    let half = readings(&w).await;
    let count = half.iter().filter(|v| **v == new).count();
    assert!((12..=28).contains(&count), "{count} of 40 at 50 %");
    for i in on_new {
        assert_eq!(half[i], new, "a tenant that moved never moves back");
    }
    // AND the rollout counts the tenants on each version as readers read them
    let (status, got) = call(&w, "GET", "/v1/rollouts/r-test", &platform_admin(), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["tenants"]["new"].as_u64(), Some(count as u64), "{got}");
    assert_eq!(got["tenants"]["previous"].as_u64(), Some(40 - count as u64));
    // WHEN the last step bakes and the rollout finishes
    assert_eq!(tick(&w, t0 + 64_000).await, [State::Baking]);
    assert_eq!(tick(&w, t0 + 124_000).await, [State::Rolling]);
    assert!(readings(&w).await.iter().all(|v| *v == new));
    assert_eq!(tick(&w, t0 + 126_000).await, [State::Baking]);
    assert_eq!(tick(&w, t0 + 186_000).await, [State::Done]);
    // THEN the layer holds the new value as version 2, written by the rollout
    let history = ConfigWriter::history(w.dynamodb.as_ref(), &entry(), 1)
        .await
        .unwrap();
    assert_eq!(
        (history[0].version, history[0].value.clone()),
        (2, Some(new.clone()))
    );
    assert_eq!(history[0].actor.as_deref(), Some("rollout:r-test"));
    assert!(readings(&w).await.iter().all(|v| *v == new));
    // AND the key takes writes again
    let (status, body) = put_global(&w, r#"{"value": {"max": 3}}"#, "2").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_gate_in_alarm_rolls_every_tenant_back_even_while_paused() {
    let w = world().await;
    let before = readings(&w).await;
    let (status, _) = start(&w, staged()).await;
    assert_eq!(status, 201);
    heard(&w).await;
    let t0 = now();
    tick(&w, t0 + 2_000).await;
    tick(&w, t0 + 62_000).await;
    assert_ne!(readings(&w).await, before, "half the tenants moved");
    // GIVEN an administrator pauses it: the steps hold however long it waits
    let (status, paused) = call(
        &w,
        "POST",
        "/v1/rollouts/r-test/pause",
        &platform_admin(),
        None,
    )
    .await;
    assert_eq!(
        (status, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    assert!(tick(&w, t0 + 10_000_000).await.is_empty());
    // AND gates that cannot be read move nothing, neither on nor back
    *w.gates.unreadable.lock().unwrap() = true;
    w.gates.alarms.lock().unwrap().insert(
        "errors-high".to_owned(),
        Gate::Alarm("errors-high".to_owned()),
    );
    // (and the tick fails, so the driver's errors alarm fires)
    let unread = w.control.tick(&w.gates, t0 + 10_001_000).await;
    assert!(unread.is_err(), "{unread:?}");
    let (_, still) = call(&w, "GET", "/v1/rollouts/r-test", &platform_admin(), None).await;
    assert_eq!(still["state"], "paused");
    // WHEN the gate is read in alarm
    *w.gates.unreadable.lock().unwrap() = false;
    assert_eq!(tick(&w, t0 + 10_002_000).await, [State::RolledBack]);
    // THEN every tenant reads what it read before the rollout, and the reason is kept
    assert_eq!(readings(&w).await, before);
    let (_, got) = call(&w, "GET", "/v1/rollouts/r-test", &platform_admin(), None).await;
    assert_eq!(got["state"], "rolled_back");
    assert_eq!(got["reason"], "gate in alarm: errors-high");
    assert_eq!(
        (
            got["tenants"]["new"].as_u64(),
            got["tenants"]["previous"].as_u64()
        ),
        (Some(0), Some(40))
    );
    // AND a rolled back rollout cannot be resumed; the entry takes a new one
    let (status, body) = call(
        &w,
        "POST",
        "/v1/rollouts/r-test/resume",
        &platform_admin(),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("rollout_state")),
        "{body}"
    );
}

#[tokio::test]
async fn an_abort_is_a_rollback_by_hand_and_bad_ids_are_refused() {
    let w = world().await;
    let before = readings(&w).await;
    start(&w, staged()).await;
    heard(&w).await;
    assert_ne!(readings(&w).await, before, "the canaries moved");
    // WHEN an administrator aborts it
    let (status, body) = call(
        &w,
        "POST",
        "/v1/rollouts/r-test/abort",
        &platform_admin(),
        None,
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("rolled_back")),
        "{body}"
    );
    assert_eq!(body["reason"], "aborted by platform-admin-1");
    heard(&w).await;
    // THEN the canaries read the previous value again
    assert_eq!(readings(&w).await, before);
    // AND ids are checked before any store is asked
    for (path, expected) in [
        ("/v1/rollouts/r-none", 404),
        ("/v1/rollouts/r%2F..", 400),
        ("/v1/rollouts/r-test/undo", 404),
    ] {
        let (status, body) = call(&w, "GET", path, &platform_admin(), None).await;
        assert_eq!(status, expected, "{path}: {body}");
    }
    let (status, _) = call(
        &w,
        "GET",
        "/v1/rollouts/r-test",
        &format!("Bearer {}", token("t03")),
        None,
    )
    .await;
    assert_eq!(status, 403, "tenants do not see rollouts");
}

#[tokio::test]
async fn a_rollout_whose_layer_changed_under_it_rolls_back_instead_of_landing() {
    let w = world().await;
    start_at_once(&w, &[]).await;
    // GIVEN the layer is written around the API (not through the refusing writer)
    ConfigWriter::put(
        w.dynamodb.as_ref(),
        &entry(),
        &NewValue::json(&json!({"max": 7}), ValueKind::Plain).unwrap(),
        Expected::Version(1),
        &tenant_config_shared::write::Actor("elsewhere".to_owned()),
    )
    .await
    .unwrap();
    // WHEN the rollout would finish
    let t0 = now();
    assert_eq!(tick(&w, t0 + 2_000).await, [State::Baking]);
    assert_eq!(tick(&w, t0 + 2_001).await, [State::RolledBack]);
    // THEN it did not overwrite that write, and says why
    let (_, got) = call(&w, "GET", "/v1/rollouts/r-test", &platform_admin(), None).await;
    assert!(
        got["reason"].as_str().unwrap().contains("could not land"),
        "{got}"
    );
    let history = ConfigWriter::history(w.dynamodb.as_ref(), &entry(), 1)
        .await
        .unwrap();
    assert_eq!(history[0].value, Some(json!({"max": 7})));
}

#[tokio::test]
async fn a_finish_that_landed_but_was_not_recorded_is_done_on_the_next_tick() {
    let w = world().await;
    start_at_once(&w, &[]).await;
    let t0 = now();
    assert_eq!(tick(&w, t0 + 2_000).await, [State::Baking]);
    // GIVEN a tick landed the value and stopped before recording it
    ConfigWriter::put(
        w.dynamodb.as_ref(),
        &entry(),
        &NewValue::json(&json!({"max": 2}), ValueKind::Plain).unwrap(),
        Expected::Version(1),
        &tenant_config_shared::write::Actor("rollout:r-test".to_owned()),
    )
    .await
    .unwrap();
    // WHEN the next tick finishes it THEN it is done, not rolled back
    assert_eq!(tick(&w, t0 + 2_001).await, [State::Done]);
    assert!(readings(&w).await.iter().all(|v| *v == json!({"max": 2})));
}

#[tokio::test]
async fn once_finishing_a_rollout_lands_whatever_an_abort_or_a_gate_says() {
    let w = world().await;
    start_at_once(&w, &["errors-high"]).await;
    let t0 = now();
    assert_eq!(tick(&w, t0 + 2_000).await, [State::Baking]);
    // GIVEN a tick recorded 'finishing' and died before landing the value
    let mut record = w.control.get_as("r-test").await.unwrap();
    record.progress.state = State::Finishing;
    record.revision += 1;
    assert_eq!(
        tenant_config_shared::rollouts::store::RolloutStore::update(w.store.as_ref(), &record)
            .await
            .unwrap(),
        tenant_config_shared::rollouts::store::Written::Stored
    );
    // WHEN an administrator aborts it THEN it is refused: the value may be landing
    let (status, body) = call(
        &w,
        "POST",
        "/v1/rollouts/r-test/abort",
        &platform_admin(),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("rollout_state")),
        "{body}"
    );
    // AND a gate in alarm does not roll it back either: the next tick lands it
    w.gates.alarms.lock().unwrap().insert(
        "errors-high".to_owned(),
        Gate::Alarm("errors-high".to_owned()),
    );
    assert_eq!(tick(&w, t0 + 3_000).await, [State::Done]);
    assert!(readings(&w).await.iter().all(|v| *v == json!({"max": 2})));
}

#[tokio::test]
async fn a_rollout_of_a_deleted_entry_lands_as_the_version_its_readers_were_shown() {
    let w = world().await;
    // GIVEN the global entry was deleted (its deletion is a version of its own)
    ConfigWriter::delete(
        w.dynamodb.as_ref(),
        &entry(),
        Expected::Version(1),
        &tenant_config_shared::write::Actor("ops".to_owned()),
    )
    .await
    .unwrap();
    start_at_once(&w, &[]).await;
    heard(&w).await;
    // WHEN readers read it while it rolls, then it lands
    let bearer = format!("Bearer {}", token("t01"));
    let (_, during) = call(&w, "GET", LIMITS, &bearer, None).await;
    let t0 = now();
    tick(&w, t0 + 2_000).await;
    assert_eq!(tick(&w, t0 + 2_001).await, [State::Done]);
    // THEN the version they were shown is the version it landed as
    let (_, after) = call(&w, "GET", LIMITS, &bearer, None).await;
    assert_eq!(during["value"], json!({"max": 2}));
    assert_eq!(during["version"], after["version"], "{during} then {after}");
    let newest = ConfigWriter::history(w.dynamodb.as_ref(), &entry(), 1)
        .await
        .unwrap();
    assert_eq!(Some(newest[0].version), after["version"].as_i64());
}

#[tokio::test]
async fn a_reader_that_missed_a_rollouts_end_reads_the_landed_value_not_the_old_one() {
    // GIVEN readers keeping what they load for one second
    let w = world_with(Duration::from_secs(1)).await;
    start_at_once(&w, &[]).await;
    let t03 = &w.tenants[3];
    assert_eq!(read(&w, t03).await, json!({"max": 2}));
    // AND its layer snapshot loaded again later than the live rollouts
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.reads
        .invalidate_subject(
            &Subject::in_layer(
                Layer::Global,
                ServiceName::parse("billing").unwrap(),
                ConfigKey::parse("tenant_config_limits").unwrap(),
            ),
            Changed::Updated(None),
        )
        .await
        .unwrap();
    assert_eq!(read(&w, t03).await, json!({"max": 2}));
    // WHEN the rollout lands and ends, and this reader hears of neither
    let t0 = now();
    w.control.tick(&w.gates, t0 + 2_000).await.unwrap();
    w.control.tick(&w.gates, t0 + 2_001).await.unwrap();
    // THEN once its live rollouts expire (the snapshot not yet), the tenant
    // reads the landed value, never the old one
    let until = std::time::Instant::now() + Duration::from_millis(900);
    while std::time::Instant::now() < until {
        assert_eq!(read(&w, t03).await, json!({"max": 2}), "flipped back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A writer that lets a rollout of the entry start while its write is in
/// flight (after the write's check for one), as a concurrent start would.
struct RolloutStartsMidWrite {
    inner: Arc<MemoryStore>,
    store: Arc<MemoryRolloutStore>,
}

#[async_trait]
impl ConfigWriter for RolloutStartsMidWrite {
    fn kind(&self) -> StoreKind {
        self.inner.kind()
    }
    async fn put(
        &self,
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &tenant_config_shared::write::Actor,
    ) -> Result<tenant_config_shared::write::Written, tenant_config_shared::write::WriteError> {
        let request = tenant_config_shared::rollouts::record::RolloutRequest::parse(&json!({
            "layer": "global", "service": "billing", "key": "tenant_config_limits",
            "value": {"max": 2}, "steps": ["everyone"], "bake_seconds": 60, "alarms": []
        }))
        .unwrap();
        let progress = tenant_config_shared::rollouts::plan::Progress {
            state: State::Rolling,
            step: 0,
            since_ms: now(),
        };
        let mut started = tenant_config_shared::rollouts::record::Rollout::new(
            "r-mid",
            request,
            progress,
            "other-admin",
            now(),
            1,
        );
        started.base_version = Some(1);
        tenant_config_shared::rollouts::store::RolloutStore::create(self.store.as_ref(), &started)
            .await
            .unwrap();
        ConfigWriter::put(self.inner.as_ref(), item, value, expected, actor).await
    }
    async fn delete(
        &self,
        item: &EntryKey,
        expected: Expected,
        actor: &tenant_config_shared::write::Actor,
    ) -> Result<i64, tenant_config_shared::write::WriteError> {
        ConfigWriter::delete(self.inner.as_ref(), item, expected, actor).await
    }
    async fn history(
        &self,
        item: &EntryKey,
        limit: usize,
    ) -> Result<
        Vec<tenant_config_shared::write::VersionRecord>,
        tenant_config_shared::write::WriteError,
    > {
        ConfigWriter::history(self.inner.as_ref(), item, limit).await
    }
    async fn rollback(
        &self,
        item: &EntryKey,
        to: i64,
        expected: Expected,
        actor: &tenant_config_shared::write::Actor,
    ) -> Result<tenant_config_shared::write::Written, tenant_config_shared::write::WriteError> {
        ConfigWriter::rollback(self.inner.as_ref(), item, to, expected, actor).await
    }
}

#[tokio::test]
async fn a_rollout_started_under_a_landing_write_is_rolled_back_by_it() {
    let w = world().await;
    let platform = PlatformWrites::new(
        KeyRouter::default(),
        Arc::new(RolloutStartsMidWrite {
            inner: w.dynamodb.clone(),
            store: w.store.clone(),
        }),
        Arc::new(MemoryStore::new(StoreKind::ParameterStore)),
        Arc::new(MemoryRegistry::default()),
        PLATFORM_GROUP,
    )
    .with_rollouts(w.store.clone());
    // WHEN a platform write passes its check, then a rollout starts, then it lands
    let e = entry();
    platform
        .put_as(
            "admin",
            &e.layer,
            &e.service,
            &e.key,
            &NewValue::json(&json!({"max": 9}), ValueKind::Plain).unwrap(),
            Expected::Version(1),
            tenant_config_shared::layers::platform::Landing::Land,
        )
        .await
        .unwrap();
    // THEN the rollout, staged over the version the write replaced, is rolled back
    let overtaken = w.control.get_as("r-mid").await.unwrap();
    assert_eq!(overtaken.progress.state, State::RolledBack);
    assert!(overtaken.reason.unwrap().contains("written under it"));
}
