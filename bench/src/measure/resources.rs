//! (6) config-api peak RSS, bootstrap sizes, init time to the first answered invoke.

use std::time::{Duration, Instant};

use serde_json::Value;
use tenant_config_local_stack::process::workspace_root;
use tenant_config_local_stack::stack::{ALICE, LocalStack};

use crate::report::{Report, Row};
use crate::stats::human;

impl Report {
    /// (6) Peak RSS under load, bootstrap sizes, cold start.
    pub async fn resources(&mut self, stack: &LocalStack) -> Result<(), String> {
        let profile = if self.sizes.smoke { "debug" } else { "release" };
        let rss = function_rss("config-api", profile);
        let sizes: Vec<(String, Option<u64>)> = ["config-api", "config-refresh"]
            .iter()
            .map(|f| {
                let path = workspace_root().join(format!("target/lambda/{f}/bootstrap"));
                (f.to_string(), std::fs::metadata(path).ok().map(|m| m.len()))
            })
            .collect();
        let init = cold_start(stack, profile).await?;
        let mut rows = vec![Row {
            figure: "config-api peak RSS after the load of figure 3".into(),
            ours: rss
                .map(|kb| format!("{:.1} MB", kb as f64 / 1024.0))
                .unwrap_or_else(|| "not found".into()),
            baseline: "—".into(),
            target: "≤ 30 MB".into(),
            met: rss.map(|kb| kb <= 30 * 1024),
        }];
        for (function, size) in sizes {
            rows.push(Row {
                figure: format!("{function} bootstrap (release, arm64)"),
                ours: size
                    .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                    .unwrap_or_else(|| "not built (run bench/run.sh)".into()),
                baseline: "—".into(),
                target: "≤ 15 MB".into(),
                met: size.map(|b| b <= 15_000_000),
            });
        }
        rows.push(Row {
            figure: "config-api init: process start → first answered invoke".into(),
            ours: human(init),
            baseline: "—".into(),
            target: "".into(),
            met: None,
        });
        self.section(
            "6. Resources",
            rows,
            vec![format!(
                "RSS is VmHWM of the {profile} config-api process cargo lambda watch ran for figure 3. Init is measured by starting the {profile} config-api binary against a one-shot Runtime API on loopback: it includes reading settings, building SDK clients, and the first request's JWKS fetch, token check and store read against moto."
            )],
        );
        Ok(())
    }
}

/// VmHWM (kB) of the running function process built with `profile`.
fn function_rss(function: &str, profile: &str) -> Option<u64> {
    let suffix = format!("/{profile}/{function}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let exe = std::fs::read_link(entry.path().join("exe")).ok();
        if exe.is_some_and(|e| e.to_string_lossy().ends_with(&suffix)) {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            return line.split_whitespace().nth(1)?.parse().ok();
        }
    }
    None
}

/// Starts the config-api binary against a one-shot Runtime API and times its
/// first answered invocation.
async fn cold_start(stack: &LocalStack, profile: &str) -> Result<Duration, String> {
    let token = stack.token(ALICE).await?;
    let event = std::fs::read_to_string(workspace_root().join("events/apigw-rest-get-config.json"))
        .map_err(|e| e.to_string())?
        .replace("${ID_TOKEN}", &token);
    let (port, mut answers) = crate::runtime_api::serve_once(event)
        .await
        .map_err(|e| e.to_string())?;
    let binary = workspace_root().join(format!("target/{profile}/config-api"));
    let started = Instant::now();
    let mut child = std::process::Command::new(&binary)
        .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "config-api")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let answer = tokio::time::timeout(Duration::from_secs(30), answers.recv()).await;
    let _ = child.kill();
    let _ = child.wait();
    match answer {
        Ok(Some((at, Ok(body)))) => {
            let response: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            if response["statusCode"] != 200 {
                return Err(format!("cold start answered {body}"));
            }
            Ok(at.duration_since(started))
        }
        Ok(Some((_, Err(e)))) => Err(format!("cold start failed: {e}")),
        _ => Err("config-api did not answer its first invocation within 30 s".into()),
    }
}
