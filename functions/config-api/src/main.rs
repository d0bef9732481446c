//! config-api: API Gateway → Lambda entry point for tenant configuration reads.
//!
//! Everything is built once per container at init; each request only borrows
//! it. The logic lives in `tenant_config_shared::api`; `lambda` maps the
//! runtime's request and response types.

mod lambda;

use lambda_http::{Error, Request, run, service_fn};
use tenant_config_shared::aws::Aws;
use tenant_config_shared::metrics::MetricsSettings;
use tenant_config_shared::settings::{LAMBDA_CACHE_DEFAULTS, Settings};
use tenant_config_shared::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = Settings::from_env(LAMBDA_CACHE_DEFAULTS)?;
    settings.check_write_credentials()?;
    let api = Aws::from_env().await?.config_api(&settings)?;
    tracing::info!(table = %settings.table_name, parameter_root = %settings.parameter_root, "config-api ready");
    let metrics = MetricsSettings::from_env("config-api");
    let (api, metrics) = (&api, &metrics);
    run(service_fn(move |request: Request| async move {
        let response = api.handle(&lambda::to_api_request(&request)).await;
        metrics.flush();
        lambda::to_lambda_response(response)
    }))
    .await
}
