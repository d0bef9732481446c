//! The Python baselines (bench/baseline.py) run with the stack's settings,
//! and helpers to compare against them.

use std::time::Duration;

use serde_json::Value;
use tenant_config_local_stack::process::workspace_root;
use tenant_config_local_stack::stack::LocalStack;
use tenant_config_shared::settings::{CacheDefaults, Settings};

pub fn settings(stack: &LocalStack, defaults: CacheDefaults) -> Result<Settings, String> {
    Settings::from_lookup(&|name| stack.setting(name), defaults).map_err(|e| e.to_string())
}

pub fn ratio(baseline: Duration, ours: Duration) -> f64 {
    baseline.as_secs_f64() / ours.as_secs_f64().max(1e-12)
}

/// Runs bench/baseline.py with the stack's AWS settings; returns its JSON.
pub fn python_baseline(stack: &LocalStack, args: &[String]) -> Result<Value, String> {
    let python = workspace_root().join(".venv/bin/python");
    let output = std::process::Command::new(python)
        .arg(workspace_root().join("bench/baseline.py"))
        .args(args)
        .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .map_err(|e| format!("cannot run the Python baseline: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "Python baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("baseline output: {e}"))
}

pub fn ns(value: &Value, field: &str) -> Duration {
    Duration::from_nanos(value[field].as_u64().unwrap_or(0))
}
