//! rollout-driver: the EventBridge schedule's tick, or a CloudWatch alarm
//! changing state, moves every live rollout on by its plan: converged,
//! baked, next step, finished, or rolled back on a gate in alarm.
//!
//! Clients are built once per container. A failed tick is returned as an
//! error (logged with its kind); the next tick does its work, since every
//! rollout's state is in DynamoDB and each change is conditional.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::metrics::MetricsSettings;
use tenant_config_shared::settings::DriverSettings;
use tenant_config_shared::telemetry;
use tenant_config_shared::write::now_ms;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = DriverSettings::from_env()?;
    let driver = Aws::from_env().await?.rollout_driver(&settings);
    tracing::info!(table = %settings.table_name, "rollout-driver ready");
    let metrics = MetricsSettings::from_env("rollout-driver");
    let (driver, metrics) = (&driver, &metrics);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let outcome = driver.handle(&event.payload, now_ms()).await;
        metrics.flush();
        outcome.map_err(|error| Diagnostic {
            error_type: error.kind().to_owned(),
            error_message: error.to_string(),
        })
    }))
    .await
}
