//! The Lambda functions under `cargo lambda watch`.

use std::process::Command;
use std::time::Duration;

use crate::process::{
    ProcessGroup, clear_inherited_cargo_env, free_port, path_with_tools, tool, workspace_root,
};

pub struct LambdaWatch {
    pub base_url: String,
    pub port: u16,
    process: ProcessGroup,
}

impl LambdaWatch {
    /// Starts `cargo lambda watch` for the workspace on a free loopback port
    /// with `env` for the functions, then waits until `probe_function`
    /// answers an HTTP request (which boots it; compiling it if needed).
    /// With `release`, the functions run their release builds.
    pub async fn start(
        env: &[(String, String)],
        probe_function: &str,
        release: bool,
    ) -> Result<Self, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let mut command = Command::new(tool("cargo-lambda"));
        command.current_dir(workspace_root()).args([
            "lambda",
            "watch",
            "--ignore-changes",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ]);
        if release {
            command.arg("--release");
        }
        command
            .env("PATH", path_with_tools())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // The functions' log level goes to them alone: cargo lambda reads
        // RUST_LOG too, and at `trace` it writes gigabytes of its own.
        // (An env file, not --env-var: that one splits values on commas.)
        if let Some((_, level)) = env.iter().find(|(k, _)| k == "RUST_LOG") {
            let dir = workspace_root().join("target/local-stack-logs");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let file = dir.join(format!("functions-{}-{port}.env", std::process::id()));
            std::fs::write(&file, format!("RUST_LOG={level}\n")).map_err(|e| e.to_string())?;
            command.arg("--env-file").arg(file).env("RUST_LOG", "info");
        }
        clear_inherited_cargo_env(&mut command);
        let mut process =
            ProcessGroup::spawn("cargo-lambda-watch", command).map_err(|e| e.to_string())?;
        let base_url = format!("http://127.0.0.1:{port}");
        let probe = format!("{base_url}/lambda-url/{probe_function}/");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| e.to_string())?;
        let (client, probe) = (&client, probe.as_str());
        // Any answer from the function itself (JSON) means it is up; the
        // first request may wait for it to compile.
        process
            .wait_until(
                &format!("serve {probe_function}"),
                Duration::from_secs(600),
                Duration::from_millis(250),
                move || async move {
                    client.get(probe).send().await.is_ok_and(|response| {
                        response
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
                    })
                },
            )
            .await?;
        Ok(Self {
            base_url,
            port,
            process,
        })
    }

    /// URL of an HTTP function's path.
    /// Freezes or thaws both functions: an API that accepts connections
    /// and answers nothing (a fault for the tests).
    pub fn set_paused(&self, paused: bool) {
        self.process.set_paused(paused);
    }

    pub fn function_url(&self, function: &str, path: &str) -> String {
        format!("{}/lambda-url/{function}{path}", self.base_url)
    }

    /// Invokes a function through the Lambda Invoke API this server serves.
    pub async fn invoke(
        &self,
        function: &str,
        payload: &serde_json::Value,
    ) -> Result<Result<serde_json::Value, String>, String> {
        tenant_config_admin::events::invoke(&self.base_url, function, payload).await
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}
