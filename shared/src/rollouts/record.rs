//! One rollout as it is stored and answered: the change it stages, its plan
//! and where it stands. Stored whole as one JSON document, so that every
//! reader reads the plan and the step it is at in one piece.

use std::time::Duration;

use serde_json::{Value, json};

use super::plan::{Progress, State, Step, Steps};
use crate::error::ConfigError;
use crate::layers::{EntryKey, Layer};
use crate::validate::{ConfigKey, ServiceName, TenantId, TierName};

/// Most alarms one rollout may watch.
pub const MAX_GATES: usize = 10;
/// Longest CloudWatch alarm name.
const MAX_ALARM_NAME: usize = 255;

/// Which value a tenant reads while a rollout runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The layer's value from before the rollout.
    Previous,
    /// The value the rollout stages.
    New,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Previous => "previous",
            Version::New => "new",
        }
    }
}

/// A rollout of one shared-layer entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub id: String,
    /// The global or tier entry it changes.
    pub entry: EntryKey,
    /// The value it stages.
    pub value: Value,
    /// The layer entry's version when the rollout started (none: the layer
    /// held no value). The staged value is served as the version after it,
    /// which is the version it gets when the rollout finishes (the entry
    /// takes no other write meanwhile).
    pub base_version: Option<i64>,
    pub steps: Steps,
    pub bake: Duration,
    /// CloudWatch alarms watched during every bake.
    pub alarms: Vec<String>,
    pub progress: Progress,
    /// Who started it (the token's subject) and when, Unix ms.
    pub created_by: String,
    pub created_ms: i64,
    /// Why it was rolled back (a gate's alarm, or an abort and by whom).
    pub reason: Option<String>,
    /// Bumped by every stored change: conditional writes race on it.
    pub revision: u64,
}

impl Rollout {
    /// The version readers give the staged value.
    pub fn staged_version(&self) -> i64 {
        self.base_version.map_or(1, |v| v.saturating_add(1))
    }
}

impl Rollout {
    /// A rollout of `request` at `progress`, not rolled back.
    pub fn new(
        id: impl Into<String>,
        request: RolloutRequest,
        progress: Progress,
        created_by: impl Into<String>,
        created_ms: i64,
        revision: u64,
    ) -> Rollout {
        Rollout {
            id: id.into(),
            entry: request.entry,
            value: request.value,
            base_version: None,
            steps: request.steps,
            bake: request.bake,
            alarms: request.alarms,
            progress,
            created_by: created_by.into(),
            created_ms,
            reason: None,
            revision,
        }
    }

    /// The version `tenant` (registered in `tier`) reads now. Decided only
    /// from this record, the same way in every reader; a final rollout
    /// decides nothing (done: the layer holds the new value itself; rolled
    /// back: the previous one).
    pub fn version_for(&self, tenant: &TenantId, tier: Option<&TierName>) -> Version {
        match self.progress.state {
            State::Done | State::RolledBack => Version::Previous,
            _ if self
                .steps
                .on_new_version(&self.id, tenant, tier, self.progress.step) =>
            {
                Version::New
            }
            _ => Version::Previous,
        }
    }

    /// The record as stored and as `GET /v1/rollouts/{id}` answers it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "layer": self.entry.layer.to_string(),
            "service": self.entry.service.as_str(),
            "key": self.entry.key.as_str(),
            "value": self.value,
            "base_version": self.base_version,
            "steps": self.steps.as_slice().iter().map(Step::to_json).collect::<Vec<_>>(),
            "bake_seconds": self.bake.as_secs(),
            "alarms": self.alarms,
            "state": self.progress.state.as_str(),
            "step": self.progress.step,
            "since_ms": self.progress.since_ms,
            "created_by": self.created_by,
            "created_ms": self.created_ms,
            "reason": self.reason,
            "revision": self.revision,
        })
    }

    /// Reads a stored record back; anything missing or out of shape is an
    /// error naming the field, never a default.
    pub fn from_json(raw: &Value) -> Result<Rollout, ConfigError> {
        let bad = |field: &str| ConfigError::BadRequest(format!("rollout record: bad '{field}'"));
        let text = |field: &str| raw[field].as_str().ok_or_else(|| bad(field));
        let number = |field: &str| raw[field].as_i64().ok_or_else(|| bad(field));
        let layer = parse_layer(text("layer")?)?;
        let request = RolloutRequest::parse_parts(
            layer,
            text("service")?,
            text("key")?,
            raw.get("value").cloned().ok_or_else(|| bad("value"))?,
            raw.get("steps").ok_or_else(|| bad("steps"))?,
            raw["bake_seconds"]
                .as_u64()
                .ok_or_else(|| bad("bake_seconds"))?,
            raw.get("alarms").ok_or_else(|| bad("alarms"))?,
        )?;
        let state = State::parse(text("state")?).ok_or_else(|| bad("state"))?;
        let step = usize::try_from(number("step")?)
            .ok()
            .filter(|step| *step < request.steps.len())
            .ok_or_else(|| bad("step"))?;
        let progress = Progress {
            state,
            step,
            since_ms: number("since_ms")?,
        };
        let mut rollout = Rollout::new(
            text("id")?,
            request,
            progress,
            text("created_by")?,
            number("created_ms")?,
            raw["revision"].as_u64().ok_or_else(|| bad("revision"))?,
        );
        rollout.reason = raw["reason"].as_str().map(str::to_owned);
        rollout.base_version = match raw.get("base_version") {
            Some(Value::Null) => None,
            Some(version) => Some(version.as_i64().ok_or_else(|| bad("base_version"))?),
            None => return Err(bad("base_version")),
        };
        Ok(rollout)
    }
}

/// `global` or `tier:{name}`: the shared layers a rollout may change.
pub fn parse_layer(raw: &str) -> Result<Layer, ConfigError> {
    if raw == "global" {
        return Ok(Layer::Global);
    }
    match raw.strip_prefix("tier:") {
        Some(tier) => Ok(Layer::Tier(TierName::parse(tier)?)),
        None => Err(ConfigError::BadRequest(format!(
            "layer '{raw}': a rollout changes the global layer (\"global\") or a tier's (\"tier:NAME\")"
        ))),
    }
}

/// A checked `POST /v1/rollouts` body.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRequest {
    pub entry: EntryKey,
    pub value: Value,
    pub steps: Steps,
    pub bake: Duration,
    pub alarms: Vec<String>,
}

impl RolloutRequest {
    /// `{"layer", "service", "key", "value", "steps", "bake_seconds", "alarms"}`.
    pub fn parse(body: &Value) -> Result<RolloutRequest, ConfigError> {
        let Some(object) = body.as_object() else {
            return Err(ConfigError::BadRequest(
                "the body is a JSON object".to_owned(),
            ));
        };
        const FIELDS: [&str; 7] = [
            "layer",
            "service",
            "key",
            "value",
            "steps",
            "bake_seconds",
            "alarms",
        ];
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ConfigError::BadRequest(format!(
                "unknown field '{unknown}'"
            )));
        }
        let missing = |field: &str| ConfigError::BadRequest(format!("'{field}' is required"));
        let layer = body["layer"].as_str().ok_or_else(|| missing("layer"))?;
        Self::parse_parts(
            parse_layer(layer)?,
            body["service"].as_str().ok_or_else(|| missing("service"))?,
            body["key"].as_str().ok_or_else(|| missing("key"))?,
            body.get("value").cloned().ok_or_else(|| missing("value"))?,
            body.get("steps").ok_or_else(|| missing("steps"))?,
            body["bake_seconds"]
                .as_u64()
                .ok_or_else(|| missing("bake_seconds (a whole number of seconds)"))?,
            body.get("alarms").unwrap_or(&Value::Array(Vec::new())),
        )
    }

    fn parse_parts(
        layer: Layer,
        service: &str,
        key: &str,
        value: Value,
        steps: &Value,
        bake_seconds: u64,
        alarms: &Value,
    ) -> Result<RolloutRequest, ConfigError> {
        let bad = |why: String| ConfigError::BadRequest(why);
        let layer_tier = match &layer {
            Layer::Tier(tier) => Some(tier.clone()),
            _ => None,
        };
        let entry = EntryKey::new(layer, ServiceName::parse(service)?, ConfigKey::parse(key)?);
        if value.is_null() {
            return Err(bad(
                "'value' is the new value (a rollout never deletes: null would remove the key)"
                    .to_owned(),
            ));
        }
        let steps = steps
            .as_array()
            .ok_or_else(|| bad("'steps' is a list".to_owned()))?
            .iter()
            .map(Step::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let steps = Steps::new(steps, layer_tier.as_ref())?;
        let bake = Duration::from_secs(bake_seconds);
        if bake > super::plan::MAX_BAKE {
            return Err(bad(format!(
                "'bake_seconds' is at most {}",
                super::plan::MAX_BAKE.as_secs()
            )));
        }
        let alarms = alarms
            .as_array()
            .ok_or_else(|| bad("'alarms' is a list of CloudWatch alarm names".to_owned()))?;
        if alarms.len() > MAX_GATES {
            return Err(bad(format!("at most {MAX_GATES} alarms")));
        }
        let mut names = Vec::with_capacity(alarms.len());
        for alarm in alarms {
            let name = alarm
                .as_str()
                .filter(|n| !n.is_empty() && n.len() <= MAX_ALARM_NAME)
                .filter(|n| n.chars().all(|c| !c.is_control()))
                .ok_or_else(|| {
                    bad(format!(
                        "alarm {alarm}: a CloudWatch alarm name, 1 to {MAX_ALARM_NAME} characters"
                    ))
                })?;
            if !names.iter().any(|n: &String| n == name) {
                names.push(name.to_owned());
            }
        }
        Ok(RolloutRequest {
            entry,
            value,
            steps,
            bake,
            alarms: names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Value {
        json!({
            "layer": "tier:gold", "service": "billing", "key": "tenant_config_limits",
            "value": {"max": 10}, "steps": [{"canary": ["t1"]}, {"percent": 25}, "everyone"],
            "bake_seconds": 60, "alarms": ["errors-high"]
        })
    }

    fn rollout(state: State, step: usize) -> Rollout {
        let request = RolloutRequest::parse(&request()).unwrap();
        let progress = Progress {
            state,
            step,
            since_ms: 1_000,
        };
        Rollout::new("r1", request, progress, "admin-sub", 500, 3)
    }

    #[test]
    fn a_stored_rollout_reads_back_as_it_was_written() {
        let mut written = rollout(State::Baking, 1);
        written.reason = Some("why".to_owned());
        assert_eq!(Rollout::from_json(&written.to_json()).unwrap(), written);
        // the layer's version it started from, absent or not, reads back too
        written.base_version = Some(4);
        let read = Rollout::from_json(&written.to_json()).unwrap();
        assert_eq!((read.base_version, read.staged_version()), (Some(4), 5));
    }

    #[test]
    fn a_damaged_record_names_the_field_instead_of_defaulting() {
        let mut raw = rollout(State::Baking, 1).to_json();
        raw["step"] = json!(7);
        let err = Rollout::from_json(&raw).unwrap_err().to_string();
        assert!(err.contains("'step'"), "{err}");
        let mut raw = rollout(State::Baking, 1).to_json();
        raw["state"] = json!("running");
        assert!(
            Rollout::from_json(&raw)
                .unwrap_err()
                .to_string()
                .contains("'state'")
        );
        let mut raw = rollout(State::Baking, 1).to_json();
        raw.as_object_mut().unwrap().remove("base_version");
        let err = Rollout::from_json(&raw).unwrap_err().to_string();
        assert!(err.contains("'base_version'"), "{err}");
    }

    #[test]
    fn canaries_read_the_new_value_from_the_first_step_until_the_rollout_ends() {
        let t1 = TenantId::parse("t1").unwrap();
        for state in [State::Rolling, State::Baking, State::Paused] {
            assert_eq!(rollout(state, 0).version_for(&t1, None), Version::New);
        }
        // Done: the layer holds the new value itself; rolled back: nobody has it.
        for state in [State::Done, State::RolledBack] {
            assert_eq!(rollout(state, 2).version_for(&t1, None), Version::Previous);
        }
        let other = TenantId::parse("not-a-canary").unwrap();
        assert_eq!(
            rollout(State::Baking, 2).version_for(&other, None),
            Version::New
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (change, says) in [
            (json!({"layer": "tenant:t1"}), "global layer"),
            (json!({"layer": "tier:_x"}), "tier"),
            (json!({"service": "a/b"}), "service"),
            (json!({"value": null}), "never deletes"),
            (json!({"bake_seconds": -1}), "bake_seconds"),
            (json!({"bake_seconds": 700_000_000}), "at most"),
            (json!({"alarms": "one"}), "list of CloudWatch alarm names"),
            (json!({"alarms": [""]}), "1 to 255"),
            (
                json!({"steps": [{"tier": "free"}, "everyone"]}),
                "reaches only that tier",
            ),
            (json!({"colour": "red"}), "unknown field 'colour'"),
        ] {
            let mut body = request();
            for (field, value) in change.as_object().unwrap() {
                body[field] = value.clone();
            }
            let err = RolloutRequest::parse(&body).unwrap_err().to_string();
            assert!(err.contains(says), "{change}: {err}");
        }
        let mut body = request();
        body.as_object_mut().unwrap().remove("key");
        assert!(
            RolloutRequest::parse(&body)
                .unwrap_err()
                .to_string()
                .contains("'key'")
        );
    }
}
