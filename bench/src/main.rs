//! `tenant-config-bench`: measures the read and refresh paths side by side
//! with the baselines named in the benchmark issue, in one run, and writes a
//! Markdown report (default `bench/RESULTS.md`). `--smoke` runs every
//! measurement with tiny sizes (for the test command) and writes to
//! `target/bench-smoke.md`.

mod baseline;
mod chart;
mod measure;
mod probes;
mod report;
mod runtime_api;
mod sizes;
mod stats;

use std::time::{Duration, Instant};

use sizes::{FULL, SMOKE, Sizes};
use tenant_config_local_stack::process::workspace_root;
use tenant_config_local_stack::stack::{LocalStack, StackOptions};

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
    let mut report = report::Report::new(sizes);
    report.warm_read(&stack).await?;
    report.contention(&stack).await?;
    report.http(&stack).await?;
    report.fanout(&stack).await?;
    report.propagation(&stack).await?;
    report.resources(&stack).await?;
    drop(stack);
    let chart = out.with_extension("svg");
    let chart_file = chart
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let text = report.render(started.elapsed(), chart_file);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    for (path, content) in [
        (out, text.as_str()),
        (chart.as_path(), report.chart().as_str()),
    ] {
        std::fs::write(path, content)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("{text}");
    Ok(())
}
