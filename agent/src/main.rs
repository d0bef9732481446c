//! config-agent: a long-running gRPC server that services run beside them.
//!
//! Start: settings → stop-signal handlers → the warm-start snapshot (if
//! set) → refresh key, stores and caches → listen → register in Cloud Map.
//! Stop (SIGTERM/SIGINT): NOT_SERVING → deregister → drain (see
//! `tenant_config_shared::agent::lifecycle`) → the last snapshot.

use std::sync::Arc;
use std::time::Duration;
use tenant_config_shared::agent::lifecycle::{self, AgentError, ShutdownSignal};

use tenant_config_shared::aws::Aws;
use tenant_config_shared::metrics::MetricsSettings;
use tenant_config_shared::refresh::discovery::AgentRegistration;
use tenant_config_shared::settings::{AGENT_CACHE_DEFAULTS, AgentSettings, Settings};
use tenant_config_shared::telemetry;

#[tokio::main]
async fn main() {
    telemetry::init();
    if let Err(error) = run().await {
        tracing::error!(%error, "config-agent stopped on an error");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), AgentError> {
    let settings = Settings::from_env(AGENT_CACHE_DEFAULTS)?;
    let agent = AgentSettings::from_env()?;
    let stop = ShutdownSignal::listen()?;
    let aws = Aws::from_env().await?;
    let warm_start = aws.warm_start(&settings, &agent).await;
    let server = aws
        .agent_server(&settings, &agent, warm_start.as_deref())
        .await?;
    if let Some(warm_start) = &warm_start {
        tokio::spawn(Arc::clone(warm_start).keep_written(std::future::pending()));
    }
    // Callers on the loopback address, config-refresh on the Refresh one.
    let listeners = lifecycle::Listeners::Split {
        readers: lifecycle::bind(agent.listen).await?,
        refresh: lifecycle::bind(agent.refresh_listen).await?,
    };
    // CloudWatch's finest standard resolution: one EMF flush a minute.
    MetricsSettings::from_env("config-agent").flush_every(Duration::from_secs(60));
    let registration = match &agent.registration {
        Some(registration) => Some(aws.register_agent(registration).await?),
        None => None,
    };
    lifecycle::serve_until_stopped(
        server,
        listeners,
        registration.as_ref().map(|r| r as &dyn AgentRegistration),
        stop.recv(),
        agent.shutdown_grace,
        agent.health_report_interval,
    )
    .await?;
    if let Some(warm_start) = warm_start {
        warm_start.write_last().await;
    }
    Ok(())
}
