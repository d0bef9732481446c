//! Health gates read from CloudWatch: one DescribeAlarms call per tick for a
//! rollout's alarms (at most ten, one page).

use async_trait::async_trait;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::StateValue;

use super::control::Gates;
use super::plan::Gate;
use crate::error::StoreError;
use crate::kinds::StoreKind;

pub struct CloudWatchGates {
    client: Client,
}

impl CloudWatchGates {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// A gate's reading from an alarm's state: only ALARM holds a rollout back;
/// OK and INSUFFICIENT_DATA (no traffic yet) let it go on. An alarm that
/// does not exist is an error: a gate nobody can read is no gate.
fn reading(name: &str, state: Option<&StateValue>) -> Gate {
    match state {
        Some(StateValue::Alarm) => Gate::Alarm(name.to_owned()),
        _ => Gate::Ok,
    }
}

#[async_trait]
impl Gates for CloudWatchGates {
    async fn read(&self, alarms: &[String]) -> Result<Vec<Gate>, StoreError> {
        let unavailable = |detail: String| StoreError::Unavailable {
            store: StoreKind::DynamoDb,
            detail,
        };
        let output = self
            .client
            .describe_alarms()
            .set_alarm_names(Some(alarms.to_vec()))
            .send()
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cloudwatch DescribeAlarms: {}",
                    aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                ))
            })?;
        let metric_alarms = output.metric_alarms();
        let composite = output.composite_alarms();
        alarms
            .iter()
            .map(|name| {
                let state = metric_alarms
                    .iter()
                    .find(|a| a.alarm_name() == Some(name))
                    .map(|a| a.state_value())
                    .or_else(|| {
                        composite
                            .iter()
                            .find(|a| a.alarm_name() == Some(name))
                            .map(|a| a.state_value())
                    })
                    .ok_or_else(|| unavailable(format!("no CloudWatch alarm named '{name}'")))?;
                Ok(reading(name, state))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_alarm_in_alarm_holds_a_rollout_back() {
        assert_eq!(
            reading("errors", Some(&StateValue::Alarm)),
            Gate::Alarm("errors".to_owned())
        );
        assert_eq!(reading("errors", Some(&StateValue::Ok)), Gate::Ok);
        assert_eq!(
            reading("errors", Some(&StateValue::InsufficientData)),
            Gate::Ok
        );
    }
}
