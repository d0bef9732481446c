//! `tenant-config-bench`: measures the read and refresh paths side by side
//! with the baselines named in the benchmark issue, in one run, and writes a
//! Markdown report (default `bench/RESULTS.md`). `--smoke` runs every
//! measurement with tiny sizes (for the test command) and writes to
//! `target/bench-smoke.md`.

mod measure;
mod runtime_api;
mod stats;

use std::time::{Duration, Instant};

use tenant_config_e2e::process::workspace_root;
use tenant_config_e2e::stack::{LocalStack, StackOptions};

/// How much of everything to do.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub warm_iterations: usize,
    pub baseline_iterations: usize,
    pub contention_readers: usize,
    pub http_requests: usize,
    pub http_load: Duration,
    pub fanout_sizes: &'static [usize],
    pub fanout_repeats: usize,
    pub propagation_agents: usize,
    pub smoke: bool,
}

const FULL: Sizes = Sizes {
    warm_iterations: 200_000,
    baseline_iterations: 20_000,
    contention_readers: 200,
    http_requests: 300,
    http_load: Duration::from_secs(10),
    fanout_sizes: &[10, 100, 1000],
    fanout_repeats: 5,
    propagation_agents: 100,
    smoke: false,
};

const SMOKE: Sizes = Sizes {
    warm_iterations: 2_000,
    baseline_iterations: 200,
    contention_readers: 200,
    http_requests: 20,
    http_load: Duration::from_secs(1),
    fanout_sizes: &[10],
    fanout_repeats: 1,
    propagation_agents: 10,
    smoke: true,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let sizes = if smoke { SMOKE } else { FULL };
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join(if smoke {
                "target/bench-smoke.md"
            } else {
                "bench/RESULTS.md"
            })
        });
    if let Err(e) = run(sizes, &out).await {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
    println!("report written to {}", out.display());
}

async fn run(sizes: Sizes, out: &std::path::Path) -> Result<(), String> {
    let started = Instant::now();
    let progress =
        |name: &str, took: Duration| eprintln!("  ✓ {name:<58} {:>6} ms", took.as_millis());
    let stack = LocalStack::start(
        StackOptions {
            agents: 0,
            release: !sizes.smoke,
        },
        &progress,
    )
    .await?;
    let mut report = measure::Report::new(sizes);
    report.warm_read(&stack).await?;
    report.contention(&stack).await?;
    report.http(&stack).await?;
    report.fanout(&stack).await?;
    report.propagation(&stack).await?;
    report.resources(&stack).await?;
    drop(stack);
    let text = report.render(started.elapsed());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(out, &text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("{text}");
    Ok(())
}
