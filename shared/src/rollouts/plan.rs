//! What a rollout is and how it moves: its steps, which tenants each step
//! puts on the new version, and the state machine a driver ticks.
//!
//! Pure: no clock, no store. The same record gives the same answer in
//! config-api and in every agent, which is what keeps every reader of a
//! tenant on one version.

use std::time::Duration;

use serde_json::Value;

use crate::error::ConfigError;
use crate::fnv::fnv1a_64;
use crate::validate::{TenantId, TierName};

/// Most steps one rollout may have.
pub const MAX_STEPS: usize = 20;
/// Most canary tenants one step may name.
pub const MAX_CANARIES: usize = 100;
/// Longest bake a step may have (a rollout is not a place to park a change).
pub const MAX_BAKE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Buckets a percentage step cuts: 0.01 % each.
const BUCKETS: u64 = 10_000;

/// One step of a rollout. Steps are cumulative: a tenant on the new version
/// at one step stays on it at every later one, so it moves exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These tenants, by name.
    Canary(Vec<TenantId>),
    /// This share of all tenants, in hundredths of a percent (1 to 10,000),
    /// picked by a stable hash of the rollout id and the tenant id.
    Percent(u16),
    /// Every tenant registered in this tier.
    Tier(TierName),
    /// Every tenant.
    Everyone,
}

impl Step {
    /// Whether this step alone puts `tenant` (in `tier`) on the new version.
    fn includes(&self, rollout_id: &str, tenant: &TenantId, tier: Option<&TierName>) -> bool {
        match self {
            Step::Canary(tenants) => tenants.contains(tenant),
            Step::Percent(share) => bucket(rollout_id, tenant) < u64::from(*share),
            Step::Tier(step_tier) => tier == Some(step_tier),
            Step::Everyone => true,
        }
    }

    /// The step as the API shows it: `{"canary": [...]}`, `{"percent": 12.5}`,
    /// `{"tier": "gold"}` or `"everyone"`.
    pub fn to_json(&self) -> Value {
        match self {
            Step::Canary(tenants) => serde_json::json!({
                "canary": tenants.iter().map(TenantId::as_str).collect::<Vec<_>>()
            }),
            Step::Percent(share) => serde_json::json!({ "percent": f64::from(*share) / 100.0 }),
            Step::Tier(tier) => serde_json::json!({ "tier": tier.as_str() }),
            Step::Everyone => Value::String("everyone".to_owned()),
        }
    }

    /// Parses one step of a request body (the shapes of [`Self::to_json`]).
    pub fn from_json(raw: &Value) -> Result<Step, ConfigError> {
        let bad = |why: &str| ConfigError::BadRequest(format!("step {raw}: {why}"));
        if raw.as_str() == Some("everyone") {
            return Ok(Step::Everyone);
        }
        let Some(object) = raw.as_object().filter(|o| o.len() == 1) else {
            return Err(bad(
                "expected \"everyone\", {\"canary\": [tenants]}, {\"percent\": N} or {\"tier\": NAME}",
            ));
        };
        let (kind, value) = object.iter().next().ok_or_else(|| bad("empty step"))?;
        match kind.as_str() {
            "canary" => {
                let names = value
                    .as_array()
                    .filter(|names| !names.is_empty())
                    .ok_or_else(|| bad("canary names a non-empty list of tenant ids"))?;
                if names.len() > MAX_CANARIES {
                    return Err(bad(&format!("at most {MAX_CANARIES} canary tenants")));
                }
                let mut tenants = Vec::with_capacity(names.len());
                for name in names {
                    let name = name.as_str().ok_or_else(|| bad("tenant ids are strings"))?;
                    let tenant = TenantId::parse(name)?;
                    if !tenants.contains(&tenant) {
                        tenants.push(tenant);
                    }
                }
                Ok(Step::Canary(tenants))
            }
            "percent" => {
                let percent = value
                    .as_f64()
                    .filter(|p| *p > 0.0 && *p <= 100.0)
                    .ok_or_else(|| bad("percent is a number above 0 and at most 100"))?;
                let hundredths = (percent * 100.0).round();
                if (percent * 100.0 - hundredths).abs() > 1e-6 || hundredths < 1.0 {
                    return Err(bad("percent has at most two decimals"));
                }
                Ok(Step::Percent(hundredths as u16))
            }
            "tier" => {
                let name = value.as_str().ok_or_else(|| bad("tier names a tier"))?;
                Ok(Step::Tier(TierName::parse(name)?))
            }
            other => Err(bad(&format!("unknown step kind '{other}'"))),
        }
    }
}

/// The tenant's bucket for a rollout, 0 to 9,999: FNV-1a (64 bit) of
/// `{rollout id}/{tenant id}` ([`fnv1a_64`]: every reader, of every version,
/// must put a tenant in the same bucket). The rollout id is
/// part of it so that each rollout starts with a different sample of tenants.
pub fn bucket(rollout_id: &str, tenant: &TenantId) -> u64 {
    let text = rollout_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(tenant.as_str().bytes());
    fnv1a_64(text) % BUCKETS
}

/// A rollout's steps, checked: at least one, the last one `everyone` (a
/// rollout that finishes has every tenant on the new value), percentages
/// growing, no step after `everyone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps(Vec<Step>);

impl Steps {
    /// Checks `steps` for a rollout of a layer whose tenants are `tier`'s
    /// (a tier layer) or everyone's (`None`, the global layer).
    pub fn new(steps: Vec<Step>, layer_tier: Option<&TierName>) -> Result<Steps, ConfigError> {
        let bad = |why: String| ConfigError::BadRequest(format!("steps: {why}"));
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(bad(format!("between 1 and {MAX_STEPS} steps")));
        }
        if steps.last() != Some(&Step::Everyone) {
            return Err(bad(
                "the last step is \"everyone\" (a rollout ends with every tenant on the new value)"
                    .to_owned(),
            ));
        }
        let mut largest_share = 0;
        for (index, step) in steps.iter().enumerate() {
            match step {
                Step::Everyone if index + 1 < steps.len() => {
                    return Err(bad(format!(
                        "step {index} is \"everyone\": nothing can follow it"
                    )));
                }
                Step::Percent(share) => {
                    if *share <= largest_share {
                        return Err(bad(format!(
                            "step {index}: each percentage is larger than the one before"
                        )));
                    }
                    largest_share = *share;
                }
                // A tier layer reaches only its own tier's tenants: a step of
                // another tier would put nobody on the new value.
                Step::Tier(tier) if layer_tier.is_some_and(|own| own != tier) => {
                    return Err(bad(format!(
                        "step {index}: a rollout of tier {}'s layer reaches only that tier",
                        layer_tier.map(TierName::as_str).unwrap_or_default()
                    )));
                }
                _ => {}
            }
        }
        Ok(Steps(steps))
    }

    pub fn as_slice(&self) -> &[Step] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `tenant` (registered in `tier`) reads the new value once the
    /// rollout has reached step `reached` (0-based; every step up to it
    /// counts).
    pub fn on_new_version(
        &self,
        rollout_id: &str,
        tenant: &TenantId,
        tier: Option<&TierName>,
        reached: usize,
    ) -> bool {
        self.0
            .iter()
            .take(reached.saturating_add(1))
            .any(|step| step.includes(rollout_id, tenant, tier))
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A step was just reached: readers are converging on it (the
    /// convergence bound) before its bake starts.
    Rolling,
    /// The step's tenants read the new value; gates are watched until the
    /// bake ends.
    Baking,
    /// Held by an administrator: no step is taken, gates are still watched.
    Paused,
    /// The last step baked with every gate healthy: the value is landing in
    /// the layer. Recorded before the landing, so that nothing (an abort, a
    /// gate, a second tick) can roll back a value that may already be the
    /// layer's own; a tick that finds it here lands it (again, harmlessly).
    Finishing,
    /// Every tenant reads the new value, which is now the layer's own.
    Done,
    /// Every tenant reads the previous value again.
    RolledBack,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Rolling => "rolling",
            State::Baking => "baking",
            State::Paused => "paused",
            State::Finishing => "finishing",
            State::Done => "done",
            State::RolledBack => "rolled_back",
        }
    }

    pub fn parse(raw: &str) -> Option<State> {
        [
            State::Rolling,
            State::Baking,
            State::Paused,
            State::Finishing,
            State::Done,
            State::RolledBack,
        ]
        .into_iter()
        .find(|state| state.as_str() == raw)
    }

    /// Whether nothing will move this rollout again.
    pub fn is_final(self) -> bool {
        matches!(self, State::Done | State::RolledBack)
    }
}

/// What the driver must do for a rollout at one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet; look again at the next tick.
    Wait,
    /// The step's readers have converged: start its bake.
    Bake,
    /// The bake passed with every gate healthy: reach this step.
    Advance(usize),
    /// The last step baked: make the new value the layer's own, end.
    Finish,
    /// A gate is in alarm: every tenant back to the previous value.
    RollBack(String),
}

/// A gate's reading at one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Ok,
    /// In alarm, with its name.
    Alarm(String),
}

/// The moving part of a rollout record: what the driver reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub state: State,
    /// The step reached (0-based).
    pub step: usize,
    /// When that step was reached, or its bake started, Unix ms.
    pub since_ms: i64,
}

impl Progress {
    /// What to do at `now_ms`, given the gates' readings, for a rollout of
    /// `steps` baking `bake` per step, whose readers converge within
    /// `convergence`. A gate in alarm rolls back from any state but a final
    /// one, paused included: a pause holds the steps, not the safety.
    pub fn next(
        &self,
        steps: &Steps,
        bake: Duration,
        convergence: Duration,
        gates: &[Gate],
        now_ms: i64,
    ) -> Next {
        match self.state {
            State::Done | State::RolledBack => return Next::Wait,
            // Past its gates: only landing is left.
            State::Finishing => return Next::Finish,
            _ => {}
        }
        let alarms: Vec<&str> = gates
            .iter()
            .filter_map(|gate| match gate {
                Gate::Alarm(name) => Some(name.as_str()),
                Gate::Ok => None,
            })
            .collect();
        if !alarms.is_empty() {
            return Next::RollBack(format!("gate in alarm: {}", alarms.join(", ")));
        }
        let elapsed = now_ms.saturating_sub(self.since_ms);
        let passed =
            |wait: Duration| elapsed >= i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        match self.state {
            State::Rolling if passed(convergence) => Next::Bake,
            State::Baking if passed(bake) => {
                if self.step + 1 >= steps.len() {
                    Next::Finish
                } else {
                    Next::Advance(self.step + 1)
                }
            }
            _ => Next::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn tier(name: &str) -> TierName {
        TierName::parse(name).unwrap()
    }

    fn steps(raw: Value) -> Result<Steps, ConfigError> {
        let parsed = raw
            .as_array()
            .unwrap()
            .iter()
            .map(Step::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        Steps::new(parsed, None)
    }

    #[test]
    fn the_bucket_of_a_tenant_is_fixed_for_all_time() {
        // Every reader of every version must agree: these values are the
        // FNV-1a of the text, and must never change.
        assert_eq!(
            bucket("r1", &tenant("tenant-a")),
            bucket("r1", &tenant("tenant-a"))
        );
        // (computed apart: Python's FNV-1a of "r1/tenant-a" and "r2/tenant-a")
        assert_eq!(bucket("r1", &tenant("tenant-a")), 1_983);
        assert_eq!(bucket("r2", &tenant("tenant-a")), 5_336);
        assert_ne!(
            bucket("r1", &tenant("tenant-a")),
            bucket("r1", &tenant("tenant-b"))
        );
    }

    #[test]
    fn a_percentage_step_takes_about_that_share_of_tenants() {
        // GIVEN 10,000 tenants and a step of 10 %
        let steps = steps(json!([{"percent": 10}, "everyone"])).unwrap();
        let on = (0..10_000)
            .filter(|i| steps.on_new_version("r1", &tenant(&format!("t{i}")), None, 0))
            .count();
        // THEN about a thousand of them read the new value
        assert!((900..=1_100).contains(&on), "{on}");
    }

    #[test]
    fn a_tenant_on_the_new_version_stays_on_it_at_every_later_step() {
        // GIVEN canaries, then 5 %, then 50 %, then tier gold, then everyone
        let steps = steps(json!([
            {"canary": ["c1", "c2"]}, {"percent": 5}, {"percent": 50}, {"tier": "gold"}, "everyone"
        ]))
        .unwrap();
        let gold = tier("gold");
        for i in 0..2_000 {
            let t = tenant(&format!("t{i}"));
            let in_tier = (i % 3 == 0).then_some(&gold);
            // THEN each tenant moves to the new value at one step and never back
            let at: Vec<bool> = (0..steps.len())
                .map(|step| steps.on_new_version("r9", &t, in_tier, step))
                .collect();
            let moves = at.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(moves <= 1 && at.last() == Some(&true), "{t}: {at:?}");
            assert!(
                at.windows(2).all(|w| !w[0] || w[1]),
                "{t} moved back: {at:?}"
            );
        }
        // AND a canary is on from the first step; c3 (bucket 3,919 of
        // rollout r9, 39.19 %) only from the 50 % step
        assert!(steps.on_new_version("r9", &tenant("c1"), None, 0));
        assert_eq!(bucket("r9", &tenant("c3")), 3_919);
        let c3: Vec<bool> = (0..steps.len())
            .map(|step| steps.on_new_version("r9", &tenant("c3"), None, step))
            .collect();
        assert_eq!(c3, [false, false, true, true, true]);
    }

    #[test]
    fn a_tier_step_reaches_that_tiers_tenants_only() {
        let steps = steps(json!([{"tier": "gold"}, "everyone"])).unwrap();
        assert!(steps.on_new_version("r1", &tenant("t1"), Some(&tier("gold")), 0));
        assert!(!steps.on_new_version("r1", &tenant("t1"), Some(&tier("free")), 0));
        assert!(!steps.on_new_version("r1", &tenant("t1"), None, 0));
        assert!(steps.on_new_version("r1", &tenant("t1"), None, 1));
    }

    #[test]
    fn steps_that_would_not_end_with_everyone_or_shrink_are_refused() {
        for (raw, says) in [
            (json!([]), "between 1 and"),
            (json!([{"percent": 10}]), "last step is \"everyone\""),
            (json!(["everyone", "everyone"]), "nothing can follow"),
            (
                json!([{"percent": 20}, {"percent": 10}, "everyone"]),
                "larger than the one before",
            ),
            (json!([{"percent": 0}, "everyone"]), "above 0"),
            (json!([{"percent": 100.5}, "everyone"]), "at most 100"),
            (json!([{"percent": 1.234}, "everyone"]), "two decimals"),
            (json!([{"canary": []}, "everyone"]), "non-empty list"),
            (json!([{"canary": ["../x"]}, "everyone"]), "tenant"),
            (json!([{"tier": "_global"}, "everyone"]), "tier"),
            (json!([{"everyone": true}]), "unknown step kind"),
            (
                json!([{"percent": 10, "tier": "gold"}, "everyone"]),
                "expected",
            ),
        ] {
            let err = steps(raw.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{raw}: {err}");
        }
        let own = tier("gold");
        let other = Steps::new(vec![Step::Tier(tier("free")), Step::Everyone], Some(&own));
        assert!(
            other
                .unwrap_err()
                .to_string()
                .contains("reaches only that tier")
        );
    }

    #[test]
    fn steps_read_back_as_they_were_written() {
        let raw = json!([{"canary": ["c1"]}, {"percent": 12.5}, {"tier": "gold"}, "everyone"]);
        let parsed = steps(raw.clone()).unwrap();
        let written: Vec<Value> = parsed.as_slice().iter().map(Step::to_json).collect();
        assert_eq!(Value::Array(written), raw);
    }

    fn progress(state: State, step: usize, since_ms: i64) -> Progress {
        Progress {
            state,
            step,
            since_ms,
        }
    }

    #[test]
    fn a_step_converges_then_bakes_then_the_next_is_taken_and_the_last_finishes() {
        let steps = steps(json!([{"percent": 10}, "everyone"])).unwrap();
        let (bake, bound) = (Duration::from_secs(60), Duration::from_secs(2));
        let ok = [Gate::Ok];
        let rolling = progress(State::Rolling, 0, 1_000);
        assert_eq!(rolling.next(&steps, bake, bound, &ok, 2_000), Next::Wait);
        assert_eq!(rolling.next(&steps, bake, bound, &ok, 3_000), Next::Bake);
        let baking = progress(State::Baking, 0, 3_000);
        assert_eq!(baking.next(&steps, bake, bound, &ok, 62_999), Next::Wait);
        assert_eq!(
            baking.next(&steps, bake, bound, &ok, 63_000),
            Next::Advance(1)
        );
        let last = progress(State::Baking, 1, 70_000);
        assert_eq!(last.next(&steps, bake, bound, &ok, 130_000), Next::Finish);
    }

    #[test]
    fn a_gate_in_alarm_rolls_back_from_any_live_state_even_paused() {
        let steps = steps(json!([{"percent": 10}, "everyone"])).unwrap();
        let gates = [Gate::Ok, Gate::Alarm("errors-high".to_owned())];
        for state in [State::Rolling, State::Baking, State::Paused] {
            let next =
                progress(state, 0, 0).next(&steps, Duration::ZERO, Duration::ZERO, &gates, 1);
            assert_eq!(
                next,
                Next::RollBack("gate in alarm: errors-high".to_owned()),
                "{state:?}"
            );
        }
        for state in [State::Done, State::RolledBack] {
            let next =
                progress(state, 1, 0).next(&steps, Duration::ZERO, Duration::ZERO, &gates, 1);
            assert_eq!(next, Next::Wait, "{state:?}");
        }
        // once landing, it lands: a value that may be the layer's already is
        // not rolled back
        let finishing = progress(State::Finishing, 1, 0);
        assert_eq!(
            finishing.next(&steps, Duration::ZERO, Duration::ZERO, &gates, 1),
            Next::Finish
        );
    }

    #[test]
    fn a_paused_rollout_takes_no_step() {
        let steps = steps(json!([{"percent": 10}, "everyone"])).unwrap();
        let paused = progress(State::Paused, 0, 0);
        let next = paused.next(
            &steps,
            Duration::ZERO,
            Duration::ZERO,
            &[Gate::Ok],
            i64::MAX,
        );
        assert_eq!(next, Next::Wait);
    }

    #[test]
    fn states_read_back_as_they_were_written() {
        for state in [
            State::Rolling,
            State::Baking,
            State::Paused,
            State::Finishing,
            State::Done,
            State::RolledBack,
        ] {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::parse("running"), None);
    }
}
