//! moto server on a free loopback port, and SDK configuration pointing at it.

use std::process::Command;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

use crate::process::{ProcessGroup, tool, workspace_root};

pub const REGION: &str = "us-east-1";

/// Names the Unix socket of a running `moto_fork_server.py serve` (the test
/// command starts one): each moto is then forked from it instead of started
/// as a new `moto_server`, which saves the ~5 s of CPU moto spends importing
/// its backends, per stack.
pub const FORK_SERVER_SOCKET: &str = "MOTO_FORK_SERVER_SOCKET";

pub struct MotoServer {
    pub endpoint: String,
    pub port: u16,
    process: ProcessGroup,
}

impl MotoServer {
    /// Starts moto server and waits until `/moto-api/` answers.
    pub async fn start() -> Result<Self, String> {
        // moto picks its own free port and prints it: a port picked here and
        // handed over could be taken by another suite's stack before moto
        // binds it, and the health check would then reach that stack's moto.
        let (endpoint, process) = Self::spawn_on(0).await?;
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in {endpoint}"))?;
        Ok(Self {
            endpoint,
            port,
            process,
        })
    }

    /// Kills moto (SIGKILL: every connection reset, all state lost).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts a new, empty moto on the same port (after [`Self::kill`]).
    pub async fn restart(&mut self) -> Result<(), String> {
        self.process.stop();
        let (_, process) = Self::spawn_on(self.port).await?;
        self.process = process;
        Ok(())
    }

    /// Starts moto on `port`, or on a port of its choosing with 0.
    async fn spawn_on(port: u16) -> Result<(String, ProcessGroup), String> {
        // local-stack/moto_fork_server.py: forked from the test command's
        // fork server (every backend already imported) when one runs, else
        // moto's own server run directly; DynamoDB's calls atomic either way.
        let mut command = Command::new(tool("python"));
        command.arg(workspace_root().join("local-stack/moto_fork_server.py"));
        match std::env::var_os(FORK_SERVER_SOCKET).filter(|s| !s.is_empty()) {
            Some(socket) => command.arg("start").arg(socket),
            None => command.arg("run"),
        };
        command.arg(port.to_string());
        let mut process = ProcessGroup::spawn("moto", command).map_err(|e| e.to_string())?;
        let port = if port == 0 {
            let log = process.log.clone();
            let announced = move || {
                // Werkzeug prints " * Running on http://127.0.0.1:{port}".
                std::fs::read_to_string(&log).ok().and_then(|text| {
                    text.split("Running on http://127.0.0.1:")
                        .nth(1)?
                        .split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<u16>()
                        .ok()
                })
            };
            let probe = announced.clone();
            process
                .wait_until(
                    "print its port",
                    Duration::from_secs(60),
                    Duration::from_millis(50),
                    move || {
                        let found = probe().is_some();
                        async move { found }
                    },
                )
                .await?;
            announced().ok_or("moto printed no port")?
        } else {
            port
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let (client, health) = (&client, format!("{endpoint}/moto-api/"));
        let health = health.as_str();
        process
            .wait_until(
                "answer",
                Duration::from_secs(60),
                Duration::from_millis(100),
                move || async move {
                    client
                        .get(health)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                },
            )
            .await?;
        Ok((endpoint, process))
    }

    /// SDK configuration for moto: fixed region and dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }

    /// Environment for a process of ours that talks to this moto.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            // Keep the SDK from probing instance metadata for credentials.
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// Freezes (SIGSTOP) or thaws moto: its port keeps accepting connections
    /// and nothing answers, like a stalled store.
    pub fn set_paused(&self, paused: bool) {
        self.process.set_paused(paused);
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// SDK configuration for a moto endpoint.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}
