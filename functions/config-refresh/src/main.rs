//! config-refresh: EventBridge "Parameter Store Change" → every healthy config
//! agent in Cloud Map gets a signed Refresh naming the changed entry.
//!
//! Clients, the refresh key and the agent channel pool are built once per
//! container. An undelivered refresh is returned as an error so Lambda's
//! async retries and the DLQ take over; Refresh is idempotent.

use std::sync::Arc;

use lambda_runtime::{Diagnostic, Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};
use tenant_config_shared::refresh::discovery::{CloudMapInstances, cloud_map_client};
use tenant_config_shared::refresh::fanout::Fanout;
use tenant_config_shared::refresh::handler::{RefreshError, RefreshOutcome, Refresher};
use tenant_config_shared::refresh::load_refresh_key;
use tenant_config_shared::settings::RefreshSettings;
use tenant_config_shared::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = RefreshSettings::from_env()?;
    let aws = aws_config::load_from_env().await;
    let key = load_refresh_key(
        &aws_sdk_ssm::Client::new(&aws),
        &settings.refresh_key_parameter,
        &settings.parameter_root,
    )
    .await?;
    let instances = CloudMapInstances::new(
        cloud_map_client(&aws),
        &settings.cloud_map_namespace,
        &settings.cloud_map_service,
    );
    let refresher = Refresher::new(
        settings.parameter_root.clone(),
        settings.router.clone(),
        Arc::new(instances),
        Fanout::new(key, settings.fanout),
    );
    tracing::info!(namespace = %settings.cloud_map_namespace, service = %settings.cloud_map_service, "config-refresh ready");
    let refresher = &refresher;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let outcome = refresher.handle(event.payload).await.map_err(diagnostic)?;
        match outcome {
            RefreshOutcome::Ignored(reason) => {
                Ok::<_, Diagnostic>(json!({"status": "ignored", "reason": reason}))
            }
            RefreshOutcome::Delivered(report) => Ok(json!({
                "status": "delivered",
                "instances": report.instances,
                "elapsed_ms": report.elapsed.as_millis() as u64,
            })),
        }
    }))
    .await
}

/// Lambda reports `errorType` and `errorMessage`; the type names the failure
/// kind so alarms and DLQ triage can tell them apart.
fn diagnostic(error: RefreshError) -> Diagnostic {
    Diagnostic {
        error_type: error.kind().to_owned(),
        error_message: error.to_string(),
    }
}
