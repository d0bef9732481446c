//! `tenant-config-bench`: measures the read and refresh paths side by side
//! with the baselines named in the benchmark issue, in one run, and writes a
//! Markdown report (default `bench/RESULTS.md`). `--smoke` runs every
//! measurement with tiny sizes (for the test command) and writes to
//! `target/bench-smoke.md`. `--only NAME` (`fairness`, `warm-read`, `layers`, `blast`, `rollouts`, `ofrep`, `watch`, `client`, `warm-start`, `scale`) takes one
//! figure alone (into `target/bench-only-NAME.md`), for working on it.

mod baseline;
mod chart;
mod measure;
mod probes;
mod report;
mod runtime_api;
mod sizes;
mod stats;

use sizes::{FULL, SMOKE};
use tenant_config_local_stack::process::workspace_root;

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
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let out = match only {
        Some(name) => workspace_root().join(format!("target/bench-only-{name}.md")),
        None => out,
    };
    let result = match only {
        Some(name) => measure::run_only(name, sizes, &out).await,
        None => measure::run_all(sizes, &out).await,
    };
    if let Err(e) = result {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
    println!("report written to {}", out.display());
}
