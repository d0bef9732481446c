//! The local stack as a deployed stack looks to an operator: a CloudFormation
//! stack in moto whose outputs and parameters carry the template's names
//! (`template.yaml`'s `Outputs`), the template's alarms (by name, wired to an
//! alarm topic with a subscriber) and its dead-letter queue. With it,
//! `tenant-config-admin --stack tenant-config-local ...` and `verify` run
//! against the local stack exactly as against AWS.
//!
//! What is played, not real: moto deploys nothing from the marker template
//! (the resources are created here, through the same APIs), and evaluates no
//! alarm; the alarms exist so that their targets can be checked.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use tenant_config_admin::stack::{output, parameter};
use tenant_config_admin::verify::TEMPLATE_ALARMS;

/// The name the local stack is published under.
pub const STACK_NAME: &str = "tenant-config-local";
/// Where undeliverable changes would go (the template's `RefreshDlq`).
pub const DLQ_NAME: &str = "tenant-config-local-refresh-dlq";
/// The alarm topic (the template creates one when `AlarmTopicArn` is empty).
pub const ALARM_TOPIC: &str = "tenant-config-local-alarms";
/// The alarm topic's subscriber (`AlarmEmail`).
pub const ALARM_EMAIL: &str = "on-call@tenant-config.invalid";

/// What the publisher created besides the stack itself.
#[derive(Debug, Clone)]
pub struct Published {
    pub dlq_url: String,
    pub alarm_topic_arn: String,
    pub alarm_names: Vec<String>,
}

/// Creates the dead-letter queue, the alarm topic and its subscriber, and
/// the template's alarms wired to that topic.
pub async fn create_operations(aws: &SdkConfig) -> Result<Published, String> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let dlq_url = sqs
        .create_queue()
        .queue_name(DLQ_NAME)
        .send()
        .await
        .map_err(|e| {
            format!(
                "CreateQueue: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url()
        .ok_or("CreateQueue returned no URL")?
        .to_owned();
    let sns = aws_sdk_sns::Client::new(aws);
    let alarm_topic_arn = sns
        .create_topic()
        .name(ALARM_TOPIC)
        .send()
        .await
        .map_err(|e| {
            format!(
                "CreateTopic: {}",
                aws_sdk_sns::error::DisplayErrorContext(e)
            )
        })?
        .topic_arn()
        .ok_or("CreateTopic returned no ARN")?
        .to_owned();
    sns.subscribe()
        .topic_arn(&alarm_topic_arn)
        .protocol("email")
        .endpoint(ALARM_EMAIL)
        .send()
        .await
        .map_err(|e| format!("Subscribe: {}", aws_sdk_sns::error::DisplayErrorContext(e)))?;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(aws);
    let mut alarm_names = Vec::new();
    // The template's alarms by name (`verify` looks them up by these names;
    // its test keeps the list equal to the template's AlarmNames).
    for id in TEMPLATE_ALARMS {
        let name = format!("{STACK_NAME}-{id}");
        cloudwatch
            .put_metric_alarm()
            .alarm_name(&name)
            .namespace(STACK_NAME)
            .metric_name(*id)
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(0.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold,
            )
            .alarm_actions(&alarm_topic_arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "PutMetricAlarm {name}: {}",
                    aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                )
            })?;
        alarm_names.push(name);
    }
    Ok(Published {
        dlq_url,
        alarm_topic_arn,
        alarm_names,
    })
}

/// Creates the CloudFormation stack that carries `outputs` and `parameters`
/// (a marker template: one resource moto does not deploy, and the values).
pub async fn publish(
    aws: &SdkConfig,
    outputs: &BTreeMap<&str, String>,
    parameters: &BTreeMap<&str, String>,
) -> Result<(), String> {
    let template = serde_json::json!({
        "Description": "The local stack's outputs and parameters, named as template.yaml's",
        "Parameters": parameters
            .keys()
            .map(|k| (k.to_string(), serde_json::json!({"Type": "String"})))
            .collect::<serde_json::Map<_, _>>(),
        "Resources": {"Marker": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": outputs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!({"Value": v})))
            .collect::<serde_json::Map<_, _>>(),
    });
    let client = aws_sdk_cloudformation::Client::new(aws);
    let mut create = client
        .create_stack()
        .stack_name(STACK_NAME)
        .template_body(template.to_string());
    for (key, value) in parameters {
        create = create.parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key(*key)
                .parameter_value(value)
                .build(),
        );
    }
    create.send().await.map_err(|e| {
        format!(
            "CreateStack: {}",
            aws_sdk_cloudformation::error::DisplayErrorContext(e)
        )
    })?;
    Ok(())
}

/// The output keys the local stack publishes, for the test that keeps them
/// equal to names the template outputs.
pub fn published_output_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = output::ALL.to_vec();
    keys.extend([
        "Issuer",
        "DlqUrl",
        "AgentServiceId",
        "TenantReadRoleArn",
        output::SECURE_STRING_KMS_KEY_ARN,
    ]);
    keys
}

/// The template parameters the local stack publishes.
pub const PUBLISHED_PARAMETERS: &[&str] = &[parameter::AGENT_NETWORKS];
