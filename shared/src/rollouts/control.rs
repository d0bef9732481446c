//! The rollout use cases: a platform administrator starts, pauses, resumes
//! or aborts one; the driver moves each live one on at every tick.
//!
//! Every change is one conditional write of the record over the revision
//! read ([`RolloutStore::update`]), so an administrator's pause and a
//! driver's tick cannot overwrite each other: the loser reads again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::plan::{Gate, Next, Progress, State};
use super::record::{Rollout, RolloutRequest, Version};
use super::store::{RolloutStore, Written};
use crate::auth::Identity;
use crate::error::{ConfigError, StoreError};
use crate::layers::Layer;
use crate::layers::platform::PlatformWrites;
use crate::layers::registry::TenantRegistry;
use crate::metrics::{Counter, metrics};
use crate::validate::TierName;

/// How long every reader takes at most to read a change (config-api's and
/// the agents' catch-up interval plus a query; the README's convergence
/// bound): a step starts baking only once its tenants read it everywhere.
pub const CONVERGENCE_BOUND: Duration = Duration::from_secs(2);

/// How many times a change is tried again after losing a race.
const RACE_RETRIES: usize = 3;

/// Reads the health gates of a rollout: CloudWatch alarms.
#[async_trait]
pub trait Gates: Send + Sync {
    /// Each alarm's reading, in the order named.
    async fn read(&self, alarms: &[String]) -> Result<Vec<Gate>, StoreError>;
}

/// What an administrator asks of a live rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Hold it at its step (gates are still watched).
    Pause,
    /// Go on from the step it was held at: its readers converge, then it
    /// bakes a whole bake again.
    Resume,
    /// Every tenant back to the previous value.
    Abort,
}

impl Action {
    pub fn parse(raw: &str) -> Option<Action> {
        match raw {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

/// What one driver tick did to one rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub id: String,
    pub from: State,
    pub to: State,
    pub step: usize,
    pub reason: Option<String>,
}

/// How many registered active tenants read each version of a rollout's
/// entry now (tenants never registered read as tier-less ones do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantsOnVersions {
    pub new: u64,
    pub previous: u64,
    /// Set when a tier held more members than one count lists.
    pub partial: bool,
}

/// Most members of one tier a count lists: a count stays well inside API
/// Gateway's 29 s (one listing page per thousand or so members).
const MAX_COUNTED_PER_TIER: usize = 10_000;

pub struct RolloutControl {
    store: Arc<dyn RolloutStore>,
    platform: Arc<PlatformWrites>,
    registry: Arc<dyn TenantRegistry>,
    /// How long readers take to converge on a change (the bound every
    /// reader keeps): a step bakes only once its readers read it.
    convergence: Duration,
    new_id: Box<dyn Fn() -> String + Send + Sync>,
}

/// A new rollout id: `r-` and 16 hex digits of the time and a counter,
/// unique in one process, sortable by start.
fn time_ordered_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "r-{:013x}{:03x}",
        micros,
        (n ^ u64::from(std::process::id())) & 0xfff
    )
}

impl RolloutControl {
    pub fn new(
        store: Arc<dyn RolloutStore>,
        platform: Arc<PlatformWrites>,
        registry: Arc<dyn TenantRegistry>,
        convergence: Duration,
    ) -> Self {
        Self {
            store,
            platform,
            registry,
            convergence,
            new_id: Box::new(time_ordered_id),
        }
    }

    /// Names new rollouts with `new_id` (tests: predictable ids).
    pub fn with_ids(mut self, new_id: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.new_id = Box::new(new_id);
        self
    }

    /// `POST /v1/rollouts`: platform administrators only.
    pub async fn start(
        &self,
        identity: &Identity,
        body: &Value,
        now_ms: i64,
    ) -> Result<Rollout, ConfigError> {
        self.platform.authorize(identity).await?;
        self.start_as(&identity.subject, RolloutRequest::parse(body)?, now_ms)
            .await
    }

    /// [`Self::start`] without the group check (the operator CLI). The
    /// staged value is checked as a write of it would be, the entry's
    /// version now recorded, and the first step reached at once.
    pub async fn start_as(
        &self,
        actor: &str,
        mut request: RolloutRequest,
        now_ms: i64,
    ) -> Result<Rollout, ConfigError> {
        let (base_version, served) = self
            .platform
            .check_staged(actor, &request.entry, &request.value)
            .await?;
        // Staged as its store will serve it once landed (a boolean stays
        // one in DynamoDB, is text in Parameter Store): no tenant sees the
        // type change when the rollout lands.
        request.value = served;
        let progress = Progress {
            state: State::Rolling,
            step: 0,
            since_ms: now_ms,
        };
        let mut rollout = Rollout::new((self.new_id)(), request, progress, actor, now_ms, 1);
        rollout.base_version = base_version;
        match self.store.create(&rollout).await? {
            Written::Stored => {
                tracing::info!(rollout = %rollout.id, entry = %rollout.entry, actor, "rollout started");
                Ok(rollout)
            }
            Written::Conflict => {
                let live = self.store.live().await?;
                let id = live
                    .into_iter()
                    .find(|r| r.entry == rollout.entry)
                    .map_or_else(|| "(just ended)".to_owned(), |r| r.id);
                Err(ConfigError::RolloutInProgress { id })
            }
        }
    }

    /// `GET /v1/rollouts/{id}`: platform administrators only.
    pub async fn get(&self, identity: &Identity, id: &str) -> Result<Rollout, ConfigError> {
        self.platform.authorize(identity).await?;
        self.get_as(id).await
    }

    pub async fn get_as(&self, id: &str) -> Result<Rollout, ConfigError> {
        check_id(id)?;
        self.store
            .get(id)
            .await?
            .ok_or_else(|| ConfigError::NoSuchRollout(id.to_owned()))
    }

    /// Counts the registered active tenants the rollout's layer reaches by
    /// the version each reads now: the registry's members of every tier it
    /// reaches, each decided as readers decide.
    pub async fn tenants(&self, rollout: &Rollout) -> Result<TenantsOnVersions, ConfigError> {
        let tiers: Vec<Option<TierName>> = match &rollout.entry.layer {
            Layer::Tier(tier) => vec![Some(tier.clone())],
            _ => self.registry.counts().await?.active.into_keys().collect(),
        };
        let mut counted = TenantsOnVersions::default();
        for tier in tiers {
            let members = self
                .registry
                .members(tier.as_ref(), MAX_COUNTED_PER_TIER)
                .await?;
            counted.partial |= members.items.len() >= MAX_COUNTED_PER_TIER;
            for tenant in &members.items {
                // Done: the layer itself holds the new value now.
                let version = match rollout.progress.state {
                    State::Done => Version::New,
                    _ => rollout.version_for(tenant, tier.as_ref()),
                };
                match version {
                    Version::New => counted.new += 1,
                    Version::Previous => counted.previous += 1,
                }
            }
        }
        Ok(counted)
    }

    /// `POST /v1/rollouts/{id}/pause|resume|abort`: platform administrators only.
    pub async fn act(
        &self,
        identity: &Identity,
        id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<Rollout, ConfigError> {
        self.platform.authorize(identity).await?;
        self.act_as(&identity.subject, id, action, now_ms).await
    }

    pub async fn act_as(
        &self,
        actor: &str,
        id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<Rollout, ConfigError> {
        for _ in 0..=RACE_RETRIES {
            let rollout = self.get_as(id).await?;
            let state = rollout.progress.state;
            let refused = ConfigError::RolloutState {
                id: id.to_owned(),
                state: state.as_str(),
                action: action.as_str(),
            };
            let mut next = rollout.clone();
            match (action, state) {
                // Finishing: the value may be landing already.
                (_, State::Done | State::RolledBack | State::Finishing) => return Err(refused),
                (Action::Pause, State::Paused)
                | (Action::Resume, State::Rolling | State::Baking) => {
                    return Ok(rollout);
                }
                (Action::Pause, _) => next.progress.state = State::Paused,
                (Action::Resume, _) => {
                    next.progress.state = State::Rolling;
                    next.progress.since_ms = now_ms;
                }
                (Action::Abort, _) => {
                    next.progress.state = State::RolledBack;
                    next.progress.since_ms = now_ms;
                    next.reason = Some(format!("aborted by {actor}"));
                }
            }
            next.revision += 1;
            if self.store.update(&next).await? == Written::Stored {
                if action == Action::Abort {
                    metrics().count(Counter::RolloutRollbacks);
                }
                tracing::info!(
                    rollout = id,
                    action = action.as_str(),
                    actor,
                    "rollout changed by an administrator"
                );
                return Ok(next);
            }
        }
        Err(ConfigError::Store(StoreError::Unavailable {
            store: crate::kinds::StoreKind::DynamoDb,
            detail: format!("rollout {id} kept changing under {}", action.as_str()),
        }))
    }

    /// One driver tick over every live rollout: each one's gates are read
    /// and its plan decides; what moved is answered. A rollout whose gates
    /// cannot be read does not move (and is logged): no step is taken
    /// blind, and no rollback is made on a guess.
    ///
    /// Every live rollout is ticked even when one fails; then the first
    /// failure is answered, so that a driver whose rollouts cannot move (a
    /// gate that does not exist, a store refusing) fails its invocations
    /// and its errors alarm fires.
    pub async fn tick(&self, gates: &dyn Gates, now_ms: i64) -> Result<Vec<Moved>, ConfigError> {
        let mut moved = Vec::new();
        let mut failed = None;
        for rollout in self.store.live().await? {
            let id = rollout.id.clone();
            match self.tick_one(rollout, gates, now_ms).await {
                Ok(Some(m)) => moved.push(m),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(rollout = %id, %error, "a rollout could not be moved on this tick");
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(moved),
        }
    }

    /// Whether the entry's newest version is this rollout's own landing.
    async fn landed_by(&self, rollout: &Rollout, actor: &str) -> Result<bool, ConfigError> {
        let newest = self.platform.newest(&rollout.entry).await?;
        Ok(newest.is_some_and(|v| {
            v.version == rollout.staged_version() && v.actor.as_deref() == Some(actor)
        }))
    }

    async fn tick_one(
        &self,
        rollout: Rollout,
        gates: &dyn Gates,
        now_ms: i64,
    ) -> Result<Option<Moved>, ConfigError> {
        // Gates unread for a finishing rollout: nothing rolls it back.
        let readings = if rollout.alarms.is_empty() || rollout.progress.state == State::Finishing {
            Vec::new()
        } else {
            // A gate nobody can read holds the rollout where it is (no step
            // taken blind, no rollback on a guess) and fails the tick.
            gates.read(&rollout.alarms).await.map_err(|error| {
                tracing::error!(rollout = %rollout.id, %error, "cannot read the rollout's gates: it holds");
                ConfigError::Store(error)
            })?
        };
        let next = rollout.progress.next(
            &rollout.steps,
            rollout.bake,
            self.convergence,
            &readings,
            now_ms,
        );
        let mut moved = rollout.clone();
        match &next {
            Next::Wait => return Ok(None),
            Next::Bake => moved.progress.state = State::Baking,
            Next::Advance(step) => {
                moved.progress.state = State::Rolling;
                moved.progress.step = *step;
            }
            Next::Finish => {
                // Recorded first: once the value may be landing, no abort,
                // gate or other tick can roll the rollout back (the record
                // would say rolled back while tenants read the new value).
                if rollout.progress.state != State::Finishing {
                    let mut finishing = rollout.clone();
                    finishing.progress.state = State::Finishing;
                    finishing.progress.since_ms = now_ms;
                    finishing.revision += 1;
                    if self.store.update(&finishing).await? == Written::Conflict {
                        return Ok(None);
                    }
                    moved = finishing;
                }
                let actor = format!("rollout:{}", rollout.id);
                match self
                    .platform
                    .land_staged(&actor, &rollout.entry, &rollout.value, rollout.base_version)
                    .await
                {
                    Ok(_) => moved.progress.state = State::Done,
                    // Landed already, by a tick that lost the race to
                    // record it (or died before): done, not a conflict.
                    Err(ConfigError::VersionConflict { .. })
                        if self.landed_by(&rollout, &actor).await? =>
                    {
                        moved.progress.state = State::Done;
                    }
                    // The layer changed under it, or the value no longer
                    // passes: the previous value stays, for everyone.
                    Err(
                        error @ (ConfigError::VersionConflict { .. }
                        | ConfigError::SchemaViolation { .. }
                        | ConfigError::KeyLocked { .. }
                        | ConfigError::BreaksTenants { .. }
                        | ConfigError::InvalidInput { .. }),
                    ) => {
                        moved.progress.state = State::RolledBack;
                        moved.reason = Some(format!("the value could not land: {error}"));
                    }
                    Err(other) => return Err(other),
                }
            }
            Next::RollBack(reason) => {
                moved.progress.state = State::RolledBack;
                moved.reason = Some(reason.clone());
            }
        }
        moved.progress.since_ms = now_ms;
        moved.revision += 1;
        if self.store.update(&moved).await? == Written::Conflict {
            // An administrator got there first: the next tick reads it again.
            return Ok(None);
        }
        let change = Moved {
            id: moved.id.clone(),
            from: rollout.progress.state,
            to: moved.progress.state,
            step: moved.progress.step,
            reason: moved.reason.clone(),
        };
        match change.to {
            State::RolledBack => {
                metrics().count(Counter::RolloutRollbacks);
                tracing::warn!(rollout = %change.id, step = change.step, reason = ?change.reason, "rollout rolled back");
            }
            _ => {
                metrics().count(Counter::RolloutSteps);
                tracing::info!(rollout = %change.id, from = change.from.as_str(), to = change.to.as_str(), step = change.step, "rollout moved");
            }
        }
        Ok(Some(change))
    }
}

/// An id as [`time_ordered_id`] makes them (or a test's): a short token of
/// letters, digits and '-', checked before it names a store item.
fn check_id(id: &str) -> Result<(), ConfigError> {
    let ok =
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadRequest(
            "a rollout id is 1 to 64 letters, digits and '-'".to_owned(),
        ))
    }
}
