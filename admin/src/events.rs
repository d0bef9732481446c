//! Change events as AWS delivers them, and the Lambda Invoke API call that
//! hands one to config-refresh (`cargo lambda watch` serves that API locally).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// A "Parameter Store Change" event as EventBridge delivers it, with a new id,
/// the parameter's description (where tenant-config's writer records who
/// wrote it and from which version) and its type (`String`, `StringList`,
/// `SecureString`; left out when unknown). Its region is `AWS_REGION`
/// (default `us-east-1`).
pub fn change_event(
    operation: &str,
    parameter_name: &str,
    description: &str,
    parameter_type: Option<&str>,
) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!(
        "local-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    json!({
        "version": "0",
        "id": id,
        "detail-type": "Parameter Store Change",
        "source": "aws.ssm",
        "account": "123456789012",
        "time": time_now_rfc3339(),
        "region": region,
        "resources": [format!("arn:aws:ssm:{region}:123456789012:parameter{parameter_name}")],
        "detail": match parameter_type {
            Some(kind) => json!({"operation": operation, "name": parameter_name, "type": kind, "description": description}),
            None => json!({"operation": operation, "name": parameter_name, "description": description}),
        }
    })
}

/// Now as RFC 3339 UTC with second precision (what EventBridge writes).
fn time_now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    aws_smithy_types::DateTime::from_secs(secs as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// Invokes `function` through a Lambda Invoke API at `base_url`. The outer
/// `Err` is a transport failure; the inner `Err` carries the function's
/// error payload.
pub async fn invoke(
    base_url: &str,
    function: &str,
    payload: &Value,
) -> Result<Result<Value, String>, String> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())?
        .post(format!(
            "{base_url}/2015-03-31/functions/{function}/invocations"
        ))
        .json(payload)
        .send()
        .await
        .map_err(|e| format!("invoke {function}: {e}"))?;
    let function_error =
        response.headers().contains_key("x-amz-function-error") || !response.status().is_success();
    let text = response
        .text()
        .await
        .map_err(|e| format!("invoke {function}: {e}"))?;
    if function_error {
        return Ok(Err(text));
    }
    Ok(Ok(
        serde_json::from_str(&text).map_err(|e| format!("invoke {function}: {e}: {text}"))?
    ))
}

/// The parameter's description as EventBridge would carry it ("" when the
/// parameter is gone or has none): DescribeParameters, name equals.
/// What EventBridge's event says about a parameter besides its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterFacts {
    pub description: String,
    /// `String`, `StringList` or `SecureString`; `None` for a parameter that
    /// does not exist (any more).
    pub parameter_type: Option<String>,
}

/// The parameter's description and type, as its change event carries them.
pub async fn parameter_facts(ssm: &aws_sdk_ssm::Client, parameter_name: &str) -> ParameterFacts {
    let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
        .key("Name")
        .option("Equals")
        .values(parameter_name)
        .build();
    let Ok(filter) = filter else {
        return ParameterFacts::default();
    };
    let Some(parameter) = ssm
        .describe_parameters()
        .parameter_filters(filter)
        .send()
        .await
        .ok()
        .and_then(|output| output.parameters?.into_iter().next())
    else {
        return ParameterFacts::default();
    };
    ParameterFacts {
        description: parameter.description.unwrap_or_default(),
        parameter_type: parameter.r#type.map(|t| t.as_str().to_owned()),
    }
}

/// `event`: prints the Parameter Store Change event for `name` (no AWS
/// config), or sends it, with the parameter's facts, to config-refresh's
/// Invoke API and prints its answer.
pub async fn send_event(
    aws: Option<&aws_config::SdkConfig>,
    operation: &str,
    name: &str,
    invoke_url: Option<&str>,
) -> Result<(), String> {
    let Some(aws) = aws else {
        let event = change_event(operation, name, "", None);
        println!(
            "{}",
            serde_json::to_string_pretty(&event).map_err(|e| e.to_string())?
        );
        return Ok(());
    };
    let url = invoke_url
        .ok_or("name config-refresh's invoke API with --invoke-url or TENANT_CONFIG_INVOKE_URL")?;
    let facts = parameter_facts(&aws_sdk_ssm::Client::new(aws), name).await;
    let event = change_event(
        operation,
        name,
        &facts.description,
        facts.parameter_type.as_deref(),
    );
    match invoke(url, "config-refresh", &event).await? {
        Ok(answer) => println!("{answer}"),
        Err(error) => return Err(format!("config-refresh failed: {error}")),
    }
    Ok(())
}
