//! Config agent processes (the real `config-agent` binary) for the local stack.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::process::{ProcessGroup, two_free_ports};

/// The built `config-agent` binary (debug profile, workspace target dir).
pub fn agent_binary() -> std::path::PathBuf {
    agent_binary_of("debug")
}

/// The `config-agent` binary of a build profile (`debug`, `release`).
pub fn agent_binary_of(profile: &str) -> std::path::PathBuf {
    crate::process::binary_of("config-agent", profile)
}

pub struct AgentProcess {
    pub name: String,
    /// ConfigReader's port (loopback).
    pub port: u16,
    /// ConfigRefresh's port, the one registered in Cloud Map.
    pub refresh_port: u16,
    /// ConfigRefresh's address: loopback, or the docker bridge's gateway.
    pub refresh_ip: Ipv4Addr,
    pub instance_id: String,
    process: Option<ProcessGroup>,
}

impl AgentProcess {
    /// Starts an agent on a free loopback port and waits until its gRPC
    /// health check answers SERVING.
    pub async fn start(name: &str, env: &[(String, String)]) -> Result<Self, String> {
        Self::start_binary(name, env, &agent_binary()).await
    }

    /// [`AgentProcess::start`] with another build of `config-agent` (the
    /// benchmark runs the release one).
    pub async fn start_binary(
        name: &str,
        env: &[(String, String)],
        binary: &std::path::Path,
    ) -> Result<Self, String> {
        Self::start_on(name, env, binary, Ipv4Addr::LOCALHOST).await
    }

    /// [`AgentProcess::start_binary`] taking Refresh on `refresh_ip` (and
    /// registering it in Cloud Map), e.g. the docker bridge's gateway, which
    /// containers reach as well as the host. Reads stay on loopback.
    pub async fn start_on(
        name: &str,
        env: &[(String, String)],
        binary: &std::path::Path,
        refresh_ip: Ipv4Addr,
    ) -> Result<Self, String> {
        // A port found free can be taken by another process before the agent
        // binds it (tests start many stacks at once): try fresh ports then.
        let mut attempt = 1;
        loop {
            match Self::start_once(name, env, binary, refresh_ip).await {
                Err(e) if e.contains("Address already in use") && attempt < 3 => {
                    eprintln!(
                        "agent {name}: a listen port was taken meanwhile (attempt {attempt}); new ports"
                    );
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn start_once(
        name: &str,
        env: &[(String, String)],
        binary: &std::path::Path,
        refresh_ip: Ipv4Addr,
    ) -> Result<Self, String> {
        let (port, refresh_port) = two_free_ports().map_err(|e| e.to_string())?;
        let instance_id = format!("{name}-{port}");
        let mut command = Command::new(binary);
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AGENT_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "AGENT_REFRESH_LISTEN_ADDR",
                format!("{refresh_ip}:{refresh_port}"),
            )
            .env("AGENT_INSTANCE_ID", &instance_id)
            // The tests and the demo read secrets through the agents.
            .env("AGENT_SERVE_SECRETS", "true");
        let mut process = ProcessGroup::spawn(name, command).map_err(|e| e.to_string())?;
        process
            .wait_until(
                "report SERVING",
                Duration::from_secs(30),
                Duration::from_millis(100),
                || serving(port),
            )
            .await?;
        Ok(Self {
            name: name.to_owned(),
            port,
            refresh_port,
            refresh_ip,
            instance_id,
            process: Some(process),
        })
    }

    /// Whether this agent has not been stopped or killed.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Where callers reach ConfigReader.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where config-refresh reaches ConfigRefresh (the registered address).
    pub fn refresh_endpoint(&self) -> String {
        format!("http://{}:{}", self.refresh_ip, self.refresh_port)
    }

    /// Stops the agent as an orchestrator would (SIGTERM) and waits for it;
    /// returns whether it exited cleanly.
    pub fn stop_gracefully(&mut self) -> Result<bool, String> {
        let mut process = self.process.take().ok_or("already stopped")?;
        let status = process.terminate_and_wait(Duration::from_secs(15))?;
        Ok(status.success())
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) the agent.
    pub fn set_paused(&self, paused: bool) {
        if let Some(process) = &self.process {
            process.set_paused(paused);
        }
    }

    /// Kills the agent without letting it deregister (a crash).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(ProcessGroup::log_tail)
            .unwrap_or_default()
    }

    /// The lines of its log at warning level or above (a test's evidence
    /// when a reader misbehaved).
    pub fn warnings(&self) -> Vec<String> {
        let text = self
            .process
            .as_ref()
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default();
        text.lines()
            .filter(|line| {
                line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#)
            })
            .map(str::to_owned)
            .collect()
    }
}

async fn serving(port: u16) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map(|e| e.connect_timeout(Duration::from_secs(1)))
    else {
        return false;
    };
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: "tenantconfig.v1.ConfigReader".into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

impl AgentProcess {
    /// GetConfig through this agent as a caller with `token`; returns the
    /// value's JSON text.
    pub async fn get_config(
        &self,
        token: &str,
        service: &str,
        key: &str,
    ) -> Result<String, tonic::Status> {
        tenant_config_admin::agent_client::get_config(&self.endpoint(), token, service, key).await
    }

    /// [`Self::get_config`] with the version, source and, for a last good
    /// value served while the store fails, its age.
    pub async fn get_config_value(
        &self,
        token: &str,
        service: &str,
        key: &str,
    ) -> Result<Option<tenant_config_shared::refresh::proto::ConfigValue>, tonic::Status> {
        tenant_config_admin::agent_client::get_config_value(&self.endpoint(), token, service, key)
            .await
    }

    /// GetSecret through this agent (on loopback) as a caller with `token`.
    pub async fn get_secret(
        &self,
        token: &str,
        service: &str,
        key: &str,
    ) -> Result<tenant_config_shared::refresh::proto::GetSecretResponse, tonic::Status> {
        tenant_config_admin::agent_client::get_secret(&self.endpoint(), token, service, key).await
    }

    /// Explain through this agent as a caller with `token`.
    pub async fn explain(
        &self,
        token: &str,
        service: &str,
        key: &str,
    ) -> Result<tenant_config_shared::refresh::proto::ExplainResponse, tonic::Status> {
        tenant_config_admin::agent_client::explain(&self.endpoint(), token, service, key).await
    }
}

impl AgentProcess {
    /// The environment this agent process runs with, as the kernel holds it
    /// (`/proc/{pid}/environ`): the stack's settings, the per-process ones
    /// [`AgentProcess::start`] adds, and whatever the harness inherited. The
    /// ECS example's test compares its settings with what local agents get.
    pub fn environment(&self) -> Result<Vec<(String, String)>, String> {
        let process = self.process.as_ref().ok_or("the agent is not running")?;
        let path = format!("/proc/{}/environ", process.pid());
        let raw = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        Ok(raw
            .split(|byte| *byte == 0)
            .filter_map(|entry| {
                let entry = String::from_utf8_lossy(entry);
                entry
                    .split_once('=')
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
            })
            .collect())
    }
}
