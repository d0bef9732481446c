//! A deployed stack as the CLI sees it: the outputs and parameters of the
//! CloudFormation stack `template.yaml` created, so that an operator names the
//! stack once (`--stack`) instead of copying table names, ids and URLs.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_cloudformation::error::DisplayErrorContext;

/// The outputs and parameters of one CloudFormation stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOutputs {
    pub name: String,
    /// CloudFormation's stack status, e.g. `UPDATE_COMPLETE`.
    pub status: String,
    pub outputs: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
}

/// Output keys the CLI reads (the template's `Outputs`; the template test
/// checks that each exists there, so a renamed output fails a test, not a
/// deploy).
pub mod output {
    pub const API_URL: &str = "ApiUrl";
    pub const API_ID: &str = "ApiId";
    pub const STAGE_NAME: &str = "StageName";
    pub const USER_POOL_ID: &str = "UserPoolId";
    pub const USER_POOL_CLIENT_ID: &str = "UserPoolClientId";
    pub const ADMIN_GROUP_NAME: &str = "AdminGroupName";
    pub const TABLE_NAME: &str = "TableName";
    pub const CHANGE_JOURNAL_TABLE_NAME: &str = "ChangeJournalTableName";
    pub const PARAMETER_ROOT: &str = "ParameterRoot";
    pub const REFRESH_KEY_PARAMETER_NAME: &str = "RefreshKeyParameterName";
    /// Where `agent-tls` writes the agents' Refresh TLS material.
    pub const AGENT_TLS_PARAMETER_PATH: &str = "AgentTlsParameterPath";
    pub const AGENT_NAMESPACE_NAME: &str = "AgentNamespaceName";
    pub const AGENT_SERVICE_NAME: &str = "AgentServiceName";
    pub const ALARM_TOPIC_ARN: &str = "AlarmTopicArn";
    /// Only when the stack encrypts SecureStrings with a key of its own.
    pub const SECURE_STRING_KMS_KEY_ARN: &str = "SecureStringKmsKeyArn";
    /// Every output whose key ends with this is a dead-letter queue's URL.
    pub const DLQ_URL_SUFFIX: &str = "DlqUrl";

    /// Every output key above (the DLQ suffix aside).
    pub const ALL: &[&str] = &[
        API_URL,
        API_ID,
        STAGE_NAME,
        USER_POOL_ID,
        USER_POOL_CLIENT_ID,
        ADMIN_GROUP_NAME,
        TABLE_NAME,
        CHANGE_JOURNAL_TABLE_NAME,
        PARAMETER_ROOT,
        REFRESH_KEY_PARAMETER_NAME,
        AGENT_TLS_PARAMETER_PATH,
        AGENT_NAMESPACE_NAME,
        AGENT_SERVICE_NAME,
        ALARM_TOPIC_ARN,
    ];
}

/// Template parameters the CLI reads.
pub mod parameter {
    pub const AGENT_NETWORKS: &str = "AgentNetworks";
    pub const AGENT_TLS_DOMAIN: &str = "AgentTlsDomain";
}

impl StackOutputs {
    /// Reads a stack's outputs and parameters (DescribeStacks).
    pub async fn describe(aws: &SdkConfig, name: &str) -> Result<Self, String> {
        let client = aws_sdk_cloudformation::Client::new(aws);
        let answer = client
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|e| format!("cannot read stack {name}: {}", DisplayErrorContext(e)))?;
        let stack = answer
            .stacks()
            .first()
            .ok_or_else(|| format!("stack {name} not found"))?;
        let outputs = stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
            .collect();
        let parameters = stack
            .parameters()
            .iter()
            .filter_map(|p| {
                Some((
                    p.parameter_key()?.to_owned(),
                    p.parameter_value()?.to_owned(),
                ))
            })
            .collect();
        Ok(Self {
            name: name.to_owned(),
            status: stack
                .stack_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            outputs,
            parameters,
        })
    }

    /// An output, or an error that names the stack and the output.
    pub fn output(&self, key: &str) -> Result<&str, String> {
        self.outputs
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("stack {} has no output {key}", self.name))
    }

    /// A template parameter's value, if set and not empty.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// (output key, URL) of every dead-letter queue the stack outputs.
    pub fn dead_letter_queues(&self) -> Vec<(&str, &str)> {
        self.outputs
            .iter()
            .filter(|(k, v)| k.ends_with(output::DLQ_URL_SUFFIX) && !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// A name the operator may give explicitly (flag or environment), else the
/// stack's output, else a default that only suits the local stack.
pub fn resolve(
    explicit: Option<&str>,
    stack: Option<&StackOutputs>,
    output_key: &str,
    fallback: Option<&str>,
) -> Result<String, String> {
    if let Some(value) = explicit.filter(|v| !v.is_empty()) {
        return Ok(value.to_owned());
    }
    match (stack, fallback) {
        (Some(stack), _) => stack.output(output_key).map(str::to_owned),
        (None, Some(fallback)) => Ok(fallback.to_owned()),
        (None, None) => Err(format!(
            "name the stack with --stack (or TENANT_CONFIG_STACK) to read its output {output_key}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> StackOutputs {
        StackOutputs {
            name: "tenant-config".into(),
            status: "UPDATE_COMPLETE".into(),
            outputs: [
                ("TableName", "tc-ConfigTable-1"),
                ("DlqUrl", "https://sqs/1/dlq"),
                ("FlushDlqUrl", "https://sqs/1/flush-dlq"),
                ("ApiId", ""),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            parameters: [("AgentNetworks", " ")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn an_explicit_name_wins_over_the_stack_and_the_stack_over_the_default() {
        let stack = stack();
        assert_eq!(
            resolve(
                Some("mine"),
                Some(&stack),
                "TableName",
                Some("tenant-config")
            )
            .unwrap(),
            "mine"
        );
        assert_eq!(
            resolve(None, Some(&stack), "TableName", Some("tenant-config")).unwrap(),
            "tc-ConfigTable-1"
        );
        assert_eq!(
            resolve(None, None, "TableName", Some("tenant-config")).unwrap(),
            "tenant-config"
        );
    }

    #[test]
    fn a_missing_or_empty_output_is_an_error_naming_it_never_a_default() {
        let stack = stack();
        let error = resolve(None, Some(&stack), "ApiId", Some("x")).unwrap_err();
        assert!(
            error.contains("ApiId") && error.contains("tenant-config"),
            "{error}"
        );
        let error = resolve(None, None, "ApiId", None).unwrap_err();
        assert!(error.contains("--stack"), "{error}");
    }

    #[test]
    fn every_dead_letter_queue_output_is_found_and_blank_parameters_are_unset() {
        let stack = stack();
        let queues: Vec<&str> = stack.dead_letter_queues().iter().map(|q| q.0).collect();
        assert_eq!(queues, ["DlqUrl", "FlushDlqUrl"]);
        assert_eq!(stack.parameter("AgentNetworks"), None);
    }
}
