//! The Lambda functions, served by `cargo lambda watch`'s Lambda emulator.
//!
//! The emulator runs with `--only-lambda-apis`: it serves the function URLs,
//! the Invoke API and the Runtime API, and the harness starts the functions'
//! built binaries against that Runtime API itself, as Lambda starts a
//! function's bootstrap. (Left to start them, `cargo lambda watch` runs
//! `cargo run` for each function of each stack: a cargo build check of the
//! workspace that costs more CPU than the stack's own work, and that waits
//! on the build directory's lock while another stack builds.) The binaries
//! are the ones `tests/build.sh` builds. A function that exits is started
//! again, as Lambda starts a new execution environment.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::process::{
    ProcessGroup, binary_of, clear_inherited_cargo_env, free_port, path_with_tools, tool,
    workspace_root,
};

/// The functions of the template, by binary name.
pub const FUNCTIONS: [&str; 3] = ["config-api", "config-refresh", "rollout-driver"];

/// How long a function that exited waits before it is started again (Lambda
/// retries a failed init at the next invoke; this keeps a function that
/// fails at start from being restarted in a tight loop).
const RESTART_AFTER: Duration = Duration::from_millis(500);

pub struct LambdaWatch {
    pub base_url: String,
    pub port: u16,
    emulator: ProcessGroup,
    functions: Vec<FunctionProcess>,
}

/// One function's binary, started against the emulator's Runtime API and
/// started again whenever it exits.
struct FunctionProcess {
    process: Arc<Mutex<ProcessGroup>>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl LambdaWatch {
    /// Starts the emulator on a free loopback port and every function with
    /// `env`, then waits until `probe_function` answers an HTTP request.
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
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ]);
        // The emulator's own log level: at the functions' `trace` it writes
        // gigabytes of its own.
        command
            .env("PATH", path_with_tools())
            .env("RUST_LOG", "info");
        clear_inherited_cargo_env(&mut command);
        let emulator =
            ProcessGroup::spawn("cargo-lambda-watch", command).map_err(|e| e.to_string())?;
        let base_url = format!("http://127.0.0.1:{port}");

        let profile = if release { "release" } else { "debug" };
        let mut functions = Vec::with_capacity(FUNCTIONS.len());
        for name in FUNCTIONS {
            let binary = binary_of(name, profile);
            if !binary.exists() {
                return Err(format!(
                    "{} is not built: run `bash tests/build.sh`{}",
                    binary.display(),
                    if release {
                        " (release: the benchmark builds it)"
                    } else {
                        ""
                    }
                ));
            }
            let runtime_api = format!("{base_url}/.rt/{name}");
            functions.push(FunctionProcess::start(name, binary, runtime_api, env)?);
        }

        let mut watch = Self {
            base_url,
            port,
            emulator,
            functions,
        };
        watch.wait_until_serving(probe_function).await?;
        Ok(watch)
    }

    /// Waits until the function answers on its URL: any JSON answer from the
    /// function itself means the emulator and the function are both up.
    async fn wait_until_serving(&mut self, function: &str) -> Result<(), String> {
        let probe = self.function_url(function, "/");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let (client, probe) = (&client, probe.as_str());
        self.emulator
            .wait_until(
                &format!("serve {function}"),
                Duration::from_secs(60),
                Duration::from_millis(50),
                move || async move {
                    client.get(probe).send().await.is_ok_and(|response| {
                        response
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
                    })
                },
            )
            .await
            .map_err(|e| format!("{e}\nfunctions:\n{}", self.functions_log_tail()))
    }

    /// Freezes or thaws the emulator and every function: an API that accepts
    /// connections and answers nothing (a fault for the tests).
    pub fn set_paused(&self, paused: bool) {
        self.emulator.set_paused(paused);
        for function in &self.functions {
            function.lock().set_paused(paused);
        }
    }

    /// URL of an HTTP function's path.
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

    /// The ends of the functions' logs, then the emulator's.
    pub fn log_tail(&self) -> String {
        format!(
            "{}\n{}",
            self.functions_log_tail(),
            self.emulator.log_tail()
        )
    }

    fn functions_log_tail(&self) -> String {
        self.functions
            .iter()
            .map(|function| function.lock().log_tail())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl FunctionProcess {
    fn start(
        name: &'static str,
        binary: PathBuf,
        runtime_api: String,
        env: &[(String, String)],
    ) -> Result<Self, String> {
        let env = env.to_vec();
        let spawn = move || {
            let mut command = Command::new(&binary);
            command
                .current_dir(workspace_root())
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                // What Lambda (and cargo lambda) give a function's process.
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
                .env("AWS_LAMBDA_RUNTIME_API", &runtime_api);
            ProcessGroup::spawn(name, command).map_err(|e| e.to_string())
        };
        let process = Arc::new(Mutex::new(spawn()?));
        let watched = Arc::clone(&process);
        let supervisor = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESTART_AFTER).await;
                let mut current = watched.lock().unwrap_or_else(|e| e.into_inner());
                if current.check_alive().is_err() {
                    match spawn() {
                        Ok(next) => *current = next,
                        Err(error) => eprintln!("{name} could not be started again: {error}"),
                    }
                }
            }
        });
        Ok(Self {
            process,
            supervisor,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProcessGroup> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        // The supervisor first, so that the function is not started again
        // after its process group is stopped (with the handle's drop).
        self.supervisor.abort();
        self.lock().stop();
    }
}
