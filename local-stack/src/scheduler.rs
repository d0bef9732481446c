//! Plays the EventBridge schedules, which moto keeps but never fires.
//!
//! [`FeedHeartbeat`]: the change feed's heartbeat rule, invoking
//! config-refresh with a "Scheduled Event" every [`HEARTBEAT_TICK`] (the
//! template's rule: every 5 minutes).
//!
//! [`RolloutSchedule`]: what invokes rollout-driver in AWS: the
//! EventBridge schedule (a tick every [`TICK`] here; the template's schedule
//! ticks once a minute) and the EventBridge rule on "CloudWatch Alarm State
//! Change" (moto keeps alarms but emits no events: this polls their states
//! and sends the rule's event when one enters ALARM).

use std::collections::HashMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_cloudwatch::types::StateValue;
use serde_json::{Value, json};
use tenant_config_admin::events::invoke;
use tenant_config_shared::rollouts::driver::SCHEDULED_TICK;
use tokio::task::JoinHandle;

/// How often the local schedule ticks (and alarm states are polled): a
/// rollout's steps and bakes are seconds long in tests and the demo.
pub const TICK: Duration = Duration::from_secs(1);

pub struct RolloutSchedule {
    task: JoinHandle<()>,
}

impl RolloutSchedule {
    pub fn start(aws: &SdkConfig, invoke_url: String, function: &'static str) -> Self {
        let cloudwatch = aws_sdk_cloudwatch::Client::new(aws);
        let region = aws
            .region()
            .map(ToString::to_string)
            .unwrap_or_else(|| "us-east-1".to_owned());
        let task = tokio::spawn(async move {
            let mut states: HashMap<String, StateValue> = HashMap::new();
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                for name in entered_alarm(&cloudwatch, &mut states).await {
                    report(
                        function,
                        invoke(&invoke_url, function, &alarm_event(&name, &region)).await,
                    );
                }
                report(
                    function,
                    invoke(&invoke_url, function, &json!({"tick": SCHEDULED_TICK})).await,
                );
            }
        });
        Self { task }
    }
}

/// How often the local heartbeat rule fires.
pub const HEARTBEAT_TICK: Duration = Duration::from_secs(5);

/// The change feed's heartbeat rule (see `tenant_config_shared::notices`).
pub struct FeedHeartbeat {
    task: JoinHandle<()>,
}

impl FeedHeartbeat {
    pub fn start(invoke_url: String, function: &'static str) -> Self {
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                report(
                    function,
                    invoke(&invoke_url, function, &scheduled_event()).await,
                );
            }
        });
        Self { task }
    }
}

impl Drop for FeedHeartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The event an EventBridge schedule rule delivers.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": tenant_config_shared::refresh::handler::SCHEDULED_EVENT,
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-12-01T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/tenant-config-local-feed-heartbeat"],
        "detail": {}
    })
}

impl Drop for RolloutSchedule {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn report(function: &str, outcome: Result<Result<Value, String>, String>) {
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => eprintln!("schedule: {function} failed: {error}"),
        Err(error) => eprintln!("schedule: cannot invoke {function}: {error}"),
    }
}

/// The alarms that entered ALARM since the last poll (none on a failed poll).
async fn entered_alarm(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    states: &mut HashMap<String, StateValue>,
) -> Vec<String> {
    let Ok(output) = cloudwatch.describe_alarms().send().await else {
        return Vec::new();
    };
    let mut entered = Vec::new();
    for alarm in output.metric_alarms() {
        let (Some(name), Some(state)) = (alarm.alarm_name(), alarm.state_value()) else {
            continue;
        };
        let before = states.insert(name.to_owned(), state.clone());
        if *state == StateValue::Alarm && before.as_ref() != Some(&StateValue::Alarm) {
            entered.push(name.to_owned());
        }
    }
    entered
}

/// The event EventBridge delivers for an alarm entering ALARM (the shape
/// of `events/cloudwatch-alarm-state-change.json`).
fn alarm_event(name: &str, region: &str) -> Value {
    json!({
        "version": "0",
        "id": format!("local-{name}-{}", tenant_config_shared::write::now_ms()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": "123456789012",
        "time": "1970-01-01T00:00:00Z",
        "region": region,
        "resources": [format!("arn:aws:cloudwatch:{region}:123456789012:alarm:{name}")],
        "detail": {"alarmName": name, "state": {"value": "ALARM"}}
    })
}
