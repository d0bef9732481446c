//! The operations checks: nothing waits in a dead-letter queue, and every
//! alarm of the stack notifies someone.

use std::collections::BTreeSet;

use aws_sdk_sqs::types::QueueAttributeName;
use tenant_config_shared::aws::Aws;

use super::Outcome;
use crate::stack::{StackOutputs, output};

pub const DLQ_EMPTY: &str = "dlq-empty";
pub const ALARMS_NOTIFY: &str = "alarms-notify";

/// The template's alarms, each named `{stack}-{name}` (the template test
/// keeps this list equal to the template's `AlarmName`s). Looked up by exact
/// name: a prefix would also match another stack whose name starts with
/// this one's (`tenant-config-staging-...`).
pub const TEMPLATE_ALARMS: &[&str] = &[
    "RefreshDlqNotEmpty",
    "ConfigApiErrors",
    "ConfigStreamIteratorAge",
    "ConfigRefreshErrors",
    "ConfigApiStaleAnswers",
    "RefreshIgnoredAgents",
    "RefreshUnpushedChanges",
    "RefreshAgentCountJump",
    "ConfigApiStoreErrors",
    "RolloutRolledBack",
    "RolloutDriverErrors",
];

/// Every dead-letter queue the stack outputs holds no message.
pub async fn dlq_empty(aws: &Aws, stack: &StackOutputs) -> Outcome {
    let queues = stack.dead_letter_queues();
    if queues.is_empty() {
        return Outcome::fail(
            DLQ_EMPTY,
            format!("stack {} outputs no dead-letter queue", stack.name),
            "deploy the current template.yaml",
        );
    }
    let sqs = aws_sdk_sqs::Client::new(aws.sdk_config());
    let mut waiting = Vec::new();
    for (name, url) in &queues {
        let answer = sqs
            .get_queue_attributes()
            .queue_url(*url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await;
        let attributes = match answer {
            Ok(answer) => answer.attributes().cloned().unwrap_or_default(),
            Err(e) => {
                return Outcome::fail(
                    DLQ_EMPTY,
                    format!(
                        "GetQueueAttributes {name}: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    ),
                    "the credentials running verify need sqs:GetQueueAttributes on the stack's queues",
                );
            }
        };
        let count: u64 = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|a| attributes.get(a)?.parse::<u64>().ok())
        .sum();
        if count > 0 {
            waiting.push(format!("{name}: {count} message(s)"));
        }
    }
    if waiting.is_empty() {
        Outcome::ok(
            DLQ_EMPTY,
            format!("{} dead-letter queue(s) empty", queues.len()),
        )
    } else {
        Outcome::fail(
            DLQ_EMPTY,
            waiting.join("; "),
            "changes that never reached config-refresh: triage and redrive them (docs/operations.md, dead-letter queues)",
        )
    }
}

/// One alarm as the check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmTargets {
    pub name: String,
    pub actions_enabled: bool,
    pub actions: Vec<String>,
}

/// Judges the stack's alarms and their topics' subscriber counts: every
/// alarm of the template must exist and have an enabled action, and every
/// SNS topic it notifies must have a confirmed subscriber.
pub fn judge_alarms(
    expected: &[String],
    alarms: &[AlarmTargets],
    subscribers: &[(String, usize)],
) -> Outcome {
    let missing: Vec<&str> = expected
        .iter()
        .filter(|name| !alarms.iter().any(|a| &a.name == *name))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Outcome::fail(
            ALARMS_NOTIFY,
            format!("missing alarms: {}", missing.join(", ")),
            "deploy the current template.yaml (it creates every alarm, named {stack}-...)",
        );
    }
    let silent: Vec<&str> = alarms
        .iter()
        .filter(|a| !a.actions_enabled || a.actions.is_empty())
        .map(|a| a.name.as_str())
        .collect();
    let unsubscribed: Vec<&str> = subscribers
        .iter()
        .filter(|(_, count)| *count == 0)
        .map(|(topic, _)| topic.as_str())
        .collect();
    if !silent.is_empty() {
        return Outcome::fail(
            ALARMS_NOTIFY,
            format!(
                "{} alarm(s) notify nobody: {}",
                silent.len(),
                silent.join(", ")
            ),
            "update the stack (it wires every alarm to AlarmTopicArn or the topic it creates)",
        );
    }
    if !unsubscribed.is_empty() {
        return Outcome::fail(
            ALARMS_NOTIFY,
            format!("no confirmed subscriber on {}", unsubscribed.join(", ")),
            "set AlarmEmail (and confirm the e-mail) or subscribe your on-call tool to the topic",
        );
    }
    Outcome::ok(
        ALARMS_NOTIFY,
        format!(
            "{} alarms notify {} topic(s) with subscribers",
            alarms.len(),
            subscribers.len()
        ),
    )
}

/// DescribeAlarms of the template's alarms by name, then each SNS topic's
/// subscriptions.
pub async fn alarms_notify(aws: &Aws, stack: &StackOutputs) -> Outcome {
    let cloudwatch = aws_sdk_cloudwatch::Client::new(aws.sdk_config());
    let expected: Vec<String> = TEMPLATE_ALARMS
        .iter()
        .map(|name| format!("{}-{name}", stack.name))
        .collect();
    let mut alarms = Vec::new();
    let mut next = None;
    loop {
        let answer = cloudwatch
            .describe_alarms()
            .set_alarm_names(Some(expected.clone()))
            .set_next_token(next)
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                return Outcome::fail(
                    ALARMS_NOTIFY,
                    format!(
                        "DescribeAlarms: {}",
                        aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                    ),
                    "the credentials running verify need cloudwatch:DescribeAlarms",
                );
            }
        };
        alarms.extend(answer.metric_alarms().iter().map(|a| AlarmTargets {
            name: a.alarm_name().unwrap_or_default().to_owned(),
            actions_enabled: a.actions_enabled().unwrap_or(false),
            actions: a.alarm_actions().to_vec(),
        }));
        next = answer.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    let mut topics: BTreeSet<String> = alarms
        .iter()
        .flat_map(|a| a.actions.iter())
        .filter(|action| action.starts_with("arn:aws:sns:") || action.contains(":sns:"))
        .cloned()
        .collect();
    if let Ok(topic) = stack.output(output::ALARM_TOPIC_ARN) {
        topics.insert(topic.to_owned());
    }
    let sns = aws_sdk_sns::Client::new(aws.sdk_config());
    let mut subscribers = Vec::new();
    for topic in topics {
        let mut confirmed = 0;
        let mut next = None;
        loop {
            let answer = sns
                .list_subscriptions_by_topic()
                .topic_arn(&topic)
                .set_next_token(next)
                .send()
                .await;
            match answer {
                Ok(answer) => {
                    confirmed += answer
                        .subscriptions()
                        .iter()
                        .filter(|s| s.subscription_arn().is_some_and(is_confirmed))
                        .count();
                    next = answer.next_token().map(str::to_owned);
                }
                Err(e) => {
                    return Outcome::fail(
                        ALARMS_NOTIFY,
                        format!(
                            "ListSubscriptionsByTopic {topic}: {}",
                            aws_sdk_sns::error::DisplayErrorContext(e)
                        ),
                        "the credentials running verify need sns:ListSubscriptionsByTopic on the alarm topic",
                    );
                }
            }
            if next.is_none() {
                break;
            }
        }
        subscribers.push((topic, confirmed));
    }
    judge_alarms(&expected, &alarms, &subscribers)
}

/// A subscription notifies only once confirmed: until then SNS lists it with
/// `PendingConfirmation` (or `Deleted`) instead of its ARN.
fn is_confirmed(subscription_arn: &str) -> bool {
    subscription_arn.starts_with("arn:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Status;

    fn alarm(name: &str, actions: &[&str]) -> AlarmTargets {
        AlarmTargets {
            name: name.to_owned(),
            actions_enabled: true,
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:tenant-config-alarms";

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn alarms_wired_to_a_subscribed_topic_pass() {
        let outcome = judge_alarms(
            &names(&["s-DlqNotEmpty"]),
            &[alarm("s-DlqNotEmpty", &[TOPIC])],
            &[(TOPIC.into(), 1)],
        );
        assert_eq!(outcome.status, Status::Ok, "{outcome}");
    }

    #[test]
    fn an_alarm_without_an_action_or_a_topic_without_subscribers_fails() {
        let expected = names(&["s-A", "s-B"]);
        let silent = judge_alarms(
            &expected,
            &[alarm("s-A", &[TOPIC]), alarm("s-B", &[])],
            &[(TOPIC.into(), 1)],
        );
        assert_eq!(silent.status, Status::Fail);
        assert!(
            silent.detail.contains("s-B") && !silent.detail.contains("s-A"),
            "{silent}"
        );
        let unsubscribed = judge_alarms(
            &names(&["s-A"]),
            &[alarm("s-A", &[TOPIC])],
            &[(TOPIC.into(), 0)],
        );
        assert_eq!(unsubscribed.status, Status::Fail);
        assert!(unsubscribed.fix.unwrap().contains("AlarmEmail"));
        let missing = judge_alarms(&expected, &[alarm("s-A", &[TOPIC])], &[(TOPIC.into(), 1)]);
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.detail.contains("s-B"), "{missing}");
    }

    #[test]
    fn a_subscription_waiting_for_confirmation_notifies_nobody() {
        assert!(!is_confirmed("PendingConfirmation"));
        assert!(!is_confirmed("Deleted"));
        assert!(is_confirmed(
            "arn:aws:sns:us-east-1:123456789012:alarms:2caf6579-a111-4d0a-857b-959104336b67"
        ));
    }
}
