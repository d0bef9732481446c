//! `local-stack`: runs the whole system on this machine against moto and
//! prints how to use it; `--walkthrough` runs the checked story instead and
//! exits. Ctrl-C (or SIGTERM) stops everything it started.

use std::time::{Duration, Instant};

use tenant_config_local_stack::bridge::DockerBridge;
use tenant_config_local_stack::guide::{print_guide, wait_for_stop_signal};
use tenant_config_local_stack::sam::sam_cli_installed;
use tenant_config_local_stack::stack::{LocalStack, StackOptions};

#[tokio::main]
async fn main() {
    let walkthrough = std::env::args().any(|a| a == "--walkthrough");
    let started = Instant::now();
    let progress =
        |name: &str, took: Duration| eprintln!("  ✓ {name:<58} {:>6} ms", took.as_millis());
    eprintln!("Starting tenant-config locally…");
    // The demo is published as a deployed stack (`--stack tenant-config-local`);
    // the walk-through does not use it.
    // Refresh runs over TLS, as deployed.
    let options = StackOptions {
        publish: !walkthrough,
        agent_tls: true,
        // With a docker daemon up and the SAM CLI installed, sam local's
        // containers can reach the demo.
        containers: !walkthrough && sam_cli_installed() && DockerBridge::detect().is_some(),
        ..StackOptions::with_agents(2)
    };
    let mut stack = match LocalStack::start(options, &progress).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("local stack failed: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("Ready in {:.1} s.", started.elapsed().as_secs_f64());
    if walkthrough {
        let result = tenant_config_local_stack::walkthrough::run(&mut stack).await;
        drop(stack);
        if let Err(e) = result {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = print_guide(&stack).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
    wait_for_stop_signal().await;
    eprintln!("stopping…");
    drop(stack);
    eprintln!("stopped.");
}
