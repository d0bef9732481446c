//! The rollout driver's handler: what invokes it (the schedule's tick, or a
//! CloudWatch alarm changing state) and one tick of [`RolloutControl`].
//!
//! Both triggers do the same thing, a tick over every live rollout, which
//! reads the gates itself: the alarm event only makes a rollback come in
//! seconds instead of at the next scheduled tick. A tick is idempotent (each
//! change is conditional on the revision it read), so a retried or doubled
//! invocation moves nothing twice.

use std::sync::Arc;

use serde_json::{Value, json};
use thiserror::Error;

use super::control::{Gates, Moved, RolloutControl};
use crate::error::ConfigError;

/// The payload the template's schedule sends.
pub const SCHEDULED_TICK: &str = "rollout-tick";

/// What invoked the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule (`{"tick": "rollout-tick"}`).
    Schedule,
    /// EventBridge's "CloudWatch Alarm State Change", with the alarm and
    /// the state it entered.
    Alarm { name: String, state: String },
}

#[derive(Debug, Error)]
pub enum DriverError {
    #[error("not a rollout tick nor an alarm state change: {0}")]
    Malformed(String),
    #[error(transparent)]
    Control(#[from] ConfigError),
}

impl DriverError {
    /// Lambda's `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            DriverError::Malformed(_) => "MalformedEvent",
            DriverError::Control(_) => "StoreFailed",
        }
    }
}

/// Reads what invoked the driver; anything else is refused with the reason.
pub fn trigger_of(event: &Value) -> Result<Trigger, DriverError> {
    if event.get("tick").and_then(Value::as_str) == Some(SCHEDULED_TICK) {
        return Ok(Trigger::Schedule);
    }
    let alarm_change = event.get("source").and_then(Value::as_str) == Some("aws.cloudwatch")
        && event.get("detail-type").and_then(Value::as_str)
            == Some("CloudWatch Alarm State Change");
    if !alarm_change {
        return Err(DriverError::Malformed(
            "expected {\"tick\": \"rollout-tick\"} or an aws.cloudwatch \"CloudWatch Alarm State Change\" event".to_owned(),
        ));
    }
    let text = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| DriverError::Malformed(format!("alarm state change without {pointer}")))
    };
    Ok(Trigger::Alarm {
        name: text("/detail/alarmName")?,
        state: text("/detail/state/value")?,
    })
}

pub struct RolloutDriver {
    control: RolloutControl,
    gates: Arc<dyn Gates>,
}

impl RolloutDriver {
    pub fn new(control: RolloutControl, gates: Arc<dyn Gates>) -> Self {
        Self { control, gates }
    }

    /// One invocation: checks the event, then ticks at `now_ms`.
    pub async fn handle(&self, event: &Value, now_ms: i64) -> Result<Value, DriverError> {
        let trigger = trigger_of(event).inspect_err(|error| {
            tracing::error!(%error, "rollout driver refused an event");
        })?;
        if let Trigger::Alarm { name, state } = &trigger {
            tracing::info!(alarm = %name, state = %state, "an alarm changed state: ticking now");
        }
        let moved = self.control.tick(self.gates.as_ref(), now_ms).await?;
        Ok(json!({
            "trigger": match trigger {
                Trigger::Schedule => "schedule",
                Trigger::Alarm { .. } => "alarm",
            },
            "moved": moved.iter().map(moved_json).collect::<Vec<_>>(),
        }))
    }
}

fn moved_json(moved: &Moved) -> Value {
    json!({
        "id": moved.id,
        "from": moved.from.as_str(),
        "to": moved.to.as_str(),
        "step": moved.step,
        "reason": moved.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_and_an_alarm_change_are_triggers_and_anything_else_is_refused() {
        assert_eq!(
            trigger_of(&json!({"tick": "rollout-tick"})).unwrap(),
            Trigger::Schedule
        );
        let alarm: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm-state-change.json"
        ))
        .unwrap();
        assert_eq!(
            trigger_of(&alarm).unwrap(),
            Trigger::Alarm {
                name: "tenant-config-errors-high".to_owned(),
                state: "ALARM".to_owned()
            }
        );
        for refused in [
            json!({}),
            json!({"tick": "other"}),
            json!({"source": "aws.ssm", "detail-type": "Parameter Store Change"}),
            json!({"source": "aws.cloudwatch", "detail-type": "CloudWatch Alarm State Change", "detail": {}}),
        ] {
            let error = trigger_of(&refused).unwrap_err();
            assert_eq!(error.kind(), "MalformedEvent", "{refused}");
        }
    }
}
