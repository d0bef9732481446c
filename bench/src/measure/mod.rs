//! The measurements, one module each. Each adds a section to the
//! [`Report`](crate::report::Report) with our figure beside its baseline.

use std::path::Path;
use std::time::{Duration, Instant};

use tenant_config_local_stack::stack::{LocalStack, StackOptions};

use crate::report::Report;
use crate::sizes::Sizes;

mod agents;
mod blast;
mod client;
mod contention;
mod convergence;
mod fairness;
mod fanout;
mod http;
mod layers;
mod lifecycle;
mod ofrep;
mod propagation;
mod resilience;
mod resources;
mod rollouts;
mod router;
mod scale;
mod vending;
mod warm_read;
mod warm_start;
mod watch;

/// Figures 1 to 10 measure one tenant's paths at full speed (300 cold keys
/// in a row, 200 writes), which the per-tenant limits would refuse by
/// design; they run without them, and figure 11 measures the limits.
pub(crate) const WITHOUT_TENANT_LIMITS: &[(&str, &str)] = &[
    ("TENANT_STORE_READS_PER_SEC", "0"),
    ("TENANT_WRITES_PER_MINUTE", "0"),
];

/// Takes every measurement and writes the report to `out` and its chart
/// beside it (same name, `.svg`). A full run takes them one after another,
/// so that no figure shares the machine with another; the smoke run (the
/// test command's, whose figures are not meaningful) checks that each runs,
/// so its three stacks run at once.
pub async fn run_all(sizes: Sizes, out: &Path) -> Result<(), String> {
    let started = Instant::now();
    let (mut report, resilience, lifecycle, blast, rollouts, scale) = if sizes.smoke {
        let (shared, resilience, lifecycle, blast, rollouts, scale) = tokio::join!(
            shared_stack_figures(sizes),
            resilience_figures(sizes),
            lifecycle_figures(sizes),
            blast_figures(sizes),
            rollout_figures(sizes),
            scale_figures(sizes)
        );
        (shared?, resilience?, lifecycle?, blast?, rollouts?, scale?)
    } else {
        let shared = shared_stack_figures(sizes).await?;
        let resilience = resilience_figures(sizes).await?;
        let lifecycle = lifecycle_figures(sizes).await?;
        let blast = blast_figures(sizes).await?;
        let rollouts = rollout_figures(sizes).await?;
        (
            shared,
            resilience,
            lifecycle,
            blast,
            rollouts,
            scale_figures(sizes).await?,
        )
    };
    report.merge(resilience);
    report.merge(lifecycle);
    report.merge(blast);
    report.merge(rollouts);
    report.merge(scale);
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

/// The stack figures 1 to 7, 10 and 11 share: no agents, no fault proxy.
fn shared_stack_options(sizes: Sizes) -> StackOptions {
    StackOptions {
        agents: 0,
        release: !sizes.smoke,
        settings: WITHOUT_TENANT_LIMITS,
        fault_proxy: false,
        dynamodb_through_proxy: false,
        // In-process agents (figures 2 and 3) take Refresh in plaintext.
        agent_tls: false,
        publish: false,
        containers: false,
    }
}

/// One figure measured on its own (`--only NAME`), for working on it; the
/// report goes elsewhere than RESULTS.md, which only a whole run writes.
pub async fn run_only(name: &str, sizes: Sizes, out: &Path) -> Result<(), String> {
    let started = Instant::now();
    let stack = LocalStack::start(shared_stack_options(sizes), &|_, _| {}).await?;
    let mut report = Report::new(sizes);
    match name {
        "scale" => report.scale(stack, shared_stack_options(sizes)).await?,
        "fairness" => report.fairness(&stack).await?,
        "warm-read" => report.warm_read(&stack).await?,
        "layers" => report.layers(&stack).await?,
        "blast" => report.blast_radius(&stack).await?,
        "rollouts" => report.rollouts(&stack).await?,
        "ofrep" => report.ofrep(&stack).await?,
        "watch" => report.watch(&stack).await?,
        "client" => report.client(&stack).await?,
        "warm-start" => report.warm_start(&stack).await?,
        other => {
            return Err(format!(
                "--only knows 'fairness', 'warm-read', 'layers', 'blast', 'rollouts', 'ofrep', 'watch', 'client', 'warm-start' and 'scale', not '{other}'"
            ));
        }
    }
    let text = report.render(started.elapsed(), "");
    std::fs::write(out, &text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("{text}");
    Ok(())
}

/// Figures 1 to 7, 10 to 12 and 15 to 18, on one local stack (stopped when they are taken).
async fn shared_stack_figures(sizes: Sizes) -> Result<Report, String> {
    let progress =
        |name: &str, took: Duration| eprintln!("  ✓ {name:<58} {:>6} ms", took.as_millis());
    let stack = LocalStack::start(shared_stack_options(sizes), &progress).await?;
    let mut report = Report::new(sizes);
    report.warm_read(&stack).await?;
    report.contention(&stack).await?;
    report.http(&stack).await?;
    report.fanout(&stack).await?;
    report.propagation(&stack).await?;
    report.resources(&stack).await?;
    report.convergence(&stack).await?;
    report.vending(&stack).await?;
    report.fairness(&stack).await?;
    report.layers(&stack).await?;
    report.ofrep(&stack).await?;
    report.watch(&stack).await?;
    report.client(&stack).await?;
    report.warm_start(&stack).await?;
    Ok(report)
}

/// Figure 8, on its own stack with a fault proxy.
async fn resilience_figures(sizes: Sizes) -> Result<Report, String> {
    let mut report = Report::new(sizes);
    report.resilience().await?;
    Ok(report)
}

/// Figure 13, on a stack of its own: its tens of thousands of items would
/// slow every later call to the shared stack's moto, and the figures
/// before would have slowed its seeding (moto copies a whole table per
/// transaction).
async fn blast_figures(sizes: Sizes) -> Result<Report, String> {
    let stack = LocalStack::start(shared_stack_options(sizes), &|_, _| {}).await?;
    let mut report = Report::new(sizes);
    report.blast_radius(&stack).await?;
    Ok(report)
}

/// Rollouts on a stack of their own: they need the stream (the blast
/// radius's stack runs without it) and register their own tenants.
async fn rollout_figures(sizes: Sizes) -> Result<Report, String> {
    let stack = LocalStack::start(shared_stack_options(sizes), &|_, _| {}).await?;
    let mut report = Report::new(sizes);
    report.rollouts(&stack).await?;
    Ok(report)
}

/// Figure 19, last and on stacks of its own (one per design and size in a
/// full run): thousands of readers and their connections, and journal
/// polling at a size moto cannot serve.
async fn scale_figures(sizes: Sizes) -> Result<Report, String> {
    let stack = LocalStack::start(shared_stack_options(sizes), &|_, _| {}).await?;
    let mut report = Report::new(sizes);
    report.scale(stack, shared_stack_options(sizes)).await?;
    Ok(report)
}

/// Figure 9, on its own stack with agents.
async fn lifecycle_figures(sizes: Sizes) -> Result<Report, String> {
    let mut report = Report::new(sizes);
    report.lifecycle().await?;
    Ok(report)
}
