//! The measurements, one module each. Each adds a section to the
//! [`Report`](crate::report::Report) with our figure beside its baseline.

use std::path::Path;
use std::time::{Duration, Instant};

use tenant_config_local_stack::stack::{LocalStack, StackOptions};

use crate::report::Report;
use crate::sizes::Sizes;

mod agents;
mod contention;
mod convergence;
mod fanout;
mod http;
mod lifecycle;
mod propagation;
mod resilience;
mod resources;
mod vending;
mod warm_read;

/// Starts the local stack, takes every measurement in order, and writes the
/// report to `out` and its chart beside it (same name, `.svg`).
pub async fn run_all(sizes: Sizes, out: &Path) -> Result<(), String> {
    let started = Instant::now();
    let progress =
        |name: &str, took: Duration| eprintln!("  ✓ {name:<58} {:>6} ms", took.as_millis());
    let stack = LocalStack::start(
        StackOptions {
            agents: 0,
            release: !sizes.smoke,
            settings: &[],
            fault_proxy: false,
            dynamodb_through_proxy: false,
        },
        &progress,
    )
    .await?;
    let mut report = Report::new(sizes);
    report.warm_read(&stack).await?;
    report.contention(&stack).await?;
    report.http(&stack).await?;
    report.fanout(&stack).await?;
    report.propagation(&stack).await?;
    report.resources(&stack).await?;
    report.convergence(&stack).await?;
    report.vending(&stack).await?;
    drop(stack);
    report.resilience().await?;
    report.lifecycle().await?;
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
