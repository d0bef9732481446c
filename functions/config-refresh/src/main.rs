//! config-refresh: EventBridge "Parameter Store Change" → every healthy config
//! agent in Cloud Map gets a signed Refresh naming the changed entry.
//!
//! Clients, the refresh key and the agent channel pool are built once per
//! container. An undelivered refresh is returned as an error so Lambda's
//! async retries and the DLQ take over; Refresh is idempotent.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::metrics::MetricsSettings;
use tenant_config_shared::refresh::handler::RefreshError;
use tenant_config_shared::settings::RefreshSettings;
use tenant_config_shared::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = RefreshSettings::from_env()?;
    let refresher = Aws::from_env().await?.refresher(&settings).await?;
    tracing::info!(namespace = %settings.cloud_map_namespace, service = %settings.cloud_map_service, "config-refresh ready");
    let metrics = MetricsSettings::from_env("config-refresh");
    let (refresher, metrics) = (&refresher, &metrics);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let outcome = refresher.handle(event.payload).await;
        metrics.flush();
        Ok::<_, Diagnostic>(outcome.map_err(diagnostic)?.to_json())
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
