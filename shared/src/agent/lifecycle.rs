//! How a config agent runs: serve until a stop signal, then leave cleanly.
//!
//! The stop order is what lets an orchestrator replace an agent without a
//! failed call: report NOT_SERVING (gRPC health checks stop routing callers
//! here) → deregister from Cloud Map (config-refresh stops pushing here) → stop
//! accepting and drain in-flight calls for up to the grace period → return, so
//! the process exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::server::AgentServer;
use crate::aws::AgentWiringError;
use crate::refresh::discovery::{AgentRegistration, DiscoveryError};
use crate::settings::SettingsError;

/// Why the agent could not start or stopped on its own.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("settings: {0}")]
    Settings(#[from] SettingsError),
    #[error("cannot handle stop signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Wiring(#[from] AgentWiringError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registration(#[from] DiscoveryError),
    #[error("server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("server stopped without a stop signal")]
    ServerStopped,
    #[error("server task failed: {0}")]
    ServerTask(#[from] tokio::task::JoinError),
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight call finished within the grace period.
    Drained,
    /// The grace period ran out with calls still in flight.
    GraceExpired,
}

/// SIGTERM (what ECS and Kubernetes send) and SIGINT (Ctrl-C). The handlers
/// are installed when this is created, so a signal that arrives while the
/// agent is still starting is not lost and does not kill it half-registered.
pub struct ShutdownSignal {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignal {
    pub fn listen() -> Result<Self, AgentError> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).map_err(AgentError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(AgentError::Signals)?,
        })
    }

    /// Waits for the first stop signal and names it.
    pub async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Where the agent serves: everything on one listener, or the readers and
/// Refresh on their own.
pub enum Listeners {
    One(TcpListener),
    Split {
        readers: TcpListener,
        refresh: TcpListener,
    },
}

/// Binds the agent's listener, naming the address on failure.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, AgentError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| AgentError::Listen { address, source })?;
    tracing::info!(%address, "config-agent listening");
    Ok(listener)
}

/// Serves `server` on `listener` until `stop` resolves, then leaves in the
/// order above. While serving, the agent re-reports HEALTHY every `heartbeat`,
/// so one that config-refresh marked UNHEALTHY while it was paused or cut off
/// is pushed to again once it is back. If the server ends by itself, the agent
/// still deregisters before reporting the failure, so config-refresh does not
/// keep pushing to a dead address.
pub async fn serve_until_stopped(
    server: AgentServer,
    listeners: Listeners,
    registration: Option<&dyn AgentRegistration>,
    stop: impl Future<Output = &'static str>,
    grace: Duration,
    heartbeat: Duration,
) -> Result<Stopped, AgentError> {
    let health = server.health.clone();
    let (stop_accepting, stopped_accepting) = tokio::sync::oneshot::channel::<()>();
    let until_stopped = async {
        let _ = stopped_accepting.await;
    };
    let mut serving = match listeners {
        Listeners::One(listener) => tokio::spawn(server.serve(listener, until_stopped)),
        Listeners::Split { readers, refresh } => {
            tokio::spawn(server.serve_split(readers, refresh, until_stopped))
        }
    };

    let reporting = async {
        match registration {
            Some(registration) => loop {
                tokio::time::sleep(heartbeat).await;
                registration.report_healthy().await;
            },
            None => std::future::pending().await,
        }
    };
    let signal_name = tokio::select! {
        name = stop => name,
        never = reporting => never,
        ended = &mut serving => {
            leave(registration).await;
            return Err(match ended {
                Ok(Ok(())) => AgentError::ServerStopped,
                Ok(Err(e)) => AgentError::Server(e),
                Err(e) => AgentError::ServerTask(e),
            });
        }
    };

    tracing::info!(
        signal = signal_name,
        "stopping: NOT_SERVING, deregistering, draining"
    );
    AgentServer::set_not_serving(&health).await;
    leave(registration).await;
    let _ = stop_accepting.send(());
    match tokio::time::timeout(grace, serving).await {
        Ok(Ok(Err(e))) => Err(AgentError::Server(e)),
        Ok(Err(e)) => Err(AgentError::ServerTask(e)),
        Ok(Ok(Ok(()))) => {
            tracing::info!("drained; bye");
            Ok(Stopped::Drained)
        }
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "grace period over; stopping with calls in flight"
            );
            Ok(Stopped::GraceExpired)
        }
    }
}

/// Deregisters, logging the outcome. A failure is not fatal: the entry is
/// then aged out by config-refresh's failed deliveries and health checks.
async fn leave(registration: Option<&dyn AgentRegistration>) {
    let Some(registration) = registration else {
        return;
    };
    match registration.deregister().await {
        Ok(()) => tracing::info!(
            instance = registration.instance_id(),
            "deregistered from Cloud Map"
        ),
        Err(error) => {
            tracing::warn!(%error, "could not deregister; the entry stays until it is aged out")
        }
    }
}
