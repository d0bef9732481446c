//! config-agent: a long-running gRPC server that services run beside them.
//!
//! Start: settings → refresh key → stores and caches → listen → register in
//! Cloud Map. Stop (SIGTERM/SIGINT): report NOT_SERVING → deregister → drain
//! in-flight calls for up to AGENT_SHUTDOWN_GRACE_SECS.

use std::sync::Arc;

use tenant_config_shared::auth::{HttpJwksSource, TokenVerifier};
use tenant_config_shared::grpc::{AgentServer, ReaderService, RefreshService};
use tenant_config_shared::refresh::discovery::{Registration, cloud_map_client};
use tenant_config_shared::refresh::load_refresh_key;
use tenant_config_shared::refresh::signing::RefreshAuthenticator;
use tenant_config_shared::service::ConfigService;
use tenant_config_shared::settings::{AGENT_CACHE_DEFAULTS, AgentSettings, Settings};
use tenant_config_shared::telemetry;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() {
    telemetry::init();
    if let Err(error) = run().await {
        tracing::error!(%error, "config-agent stopped on an error");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let settings =
        Settings::from_env(AGENT_CACHE_DEFAULTS).map_err(|e| format!("settings: {e}"))?;
    let agent = AgentSettings::from_env().map_err(|e| format!("settings: {e}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let aws = aws_config::load_from_env().await;

    let key = load_refresh_key(
        &aws_sdk_ssm::Client::new(&aws),
        &agent.refresh_key_parameter,
        &settings.parameter_root,
    )
    .await?;
    let service = ConfigService::from_aws(&aws, &settings);
    let jwks = HttpJwksSource::new(settings.auth.jwks_url.clone())?;
    let verifier = Arc::new(TokenVerifier::new(&settings.auth, Arc::new(jwks)));
    let server = AgentServer::new(
        ReaderService::new(verifier, service.clone()),
        RefreshService::new(RefreshAuthenticator::new(key), service),
    )
    .await;
    let health = server.health.clone();

    let listener = TcpListener::bind(agent.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", agent.listen))?;
    tracing::info!(address = %agent.listen, "config-agent listening");
    let registration = match &agent.registration {
        Some(r) => {
            let registration = Registration::register(
                cloud_map_client(&aws),
                &r.service_id,
                &r.instance_id,
                r.address,
            )
            .await
            .map_err(|e| e.to_string())?;
            tracing::info!(instance = %r.instance_id, address = %r.address, "registered in Cloud Map");
            Some(registration)
        }
        None => None,
    };

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let signal_name = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
        result = &mut serving => {
            // The server ended by itself: still leave Cloud Map before failing.
            if let Some(registration) = &registration {
                let _ = registration.deregister().await;
            }
            return match result {
                Ok(Ok(())) => Err("server stopped unexpectedly".to_owned()),
                Ok(Err(e)) => Err(format!("server failed: {e}")),
                Err(e) => Err(format!("server task failed: {e}")),
            };
        }
    };

    tracing::info!(
        signal = signal_name,
        "stopping: NOT_SERVING, deregistering, draining"
    );
    AgentServer::set_not_serving(&health).await;
    if let Some(registration) = &registration {
        match registration.deregister().await {
            Ok(()) => tracing::info!(
                instance = registration.instance_id(),
                "deregistered from Cloud Map"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not deregister; Cloud Map health checks will age it out")
            }
        }
    }
    let _ = stop.send(());
    match tokio::time::timeout(agent.shutdown_grace, serving).await {
        Ok(_) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!(
            grace_secs = agent.shutdown_grace.as_secs(),
            "grace period over; stopping with calls in flight"
        ),
    }
    Ok(())
}
