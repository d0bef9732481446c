//! `local-stack`: runs the whole read path on this machine against moto and
//! prints how to call it. Ctrl-C stops everything it started.

use std::time::{Duration, Instant};

use tenant_config_e2e::stack::{
    ALICE, BOB, CLOUD_MAP_NAMESPACE, CLOUD_MAP_SERVICE, LocalStack, SERVICE, StackOptions,
};

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let progress =
        |name: &str, took: Duration| eprintln!("  ✓ {name:<45} {:>6} ms", took.as_millis());
    eprintln!("Starting tenant-config locally…");
    let stack = match LocalStack::start(StackOptions { agents: 2 }, &progress).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("local stack failed: {e}");
            std::process::exit(1);
        }
    };
    let (alice, bob) = match (stack.token(ALICE).await, stack.token(BOB).await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot sign in demo users: {e}");
            std::process::exit(1);
        }
    };
    println!();
    println!("Ready in {:.1} s.", started.elapsed().as_secs_f64());
    println!();
    println!("  moto server        {}", stack.moto.endpoint);
    println!("  config-api         {}", stack.api_url(""));
    println!("  user pool          {}", stack.pool.pool_id);
    println!("  app client         {}", stack.pool.client_id);
    println!("  issuer             {}", stack.pool.issuer);
    println!("  JWKS               {}", stack.pool.jwks_url);
    println!(
        "  config-refresh     {} (Lambda Invoke API)",
        stack.watch.base_url
    );
    println!(
        "  Cloud Map          {CLOUD_MAP_NAMESPACE} / {CLOUD_MAP_SERVICE} ({})",
        stack.cloud_map.service_id
    );
    for agent in &stack.agents {
        println!(
            "  {:<18} 127.0.0.1:{} (gRPC, instance {})",
            agent.name, agent.port, agent.instance_id
        );
    }
    println!();
    println!("Tenant A (alice) reads its values:");
    println!("  export TOKEN_A='{alice}'");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" {}",
        stack.api_url(&format!("/v1/config/{SERVICE}/tenant_config_limits"))
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" '{}'",
        stack.api_url(&format!("/v1/config/{SERVICE}?keys=tenant_config_limits,param_config_endpoint,param_config_regions"))
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" {}",
        stack.api_url(&format!("/v1/secure/{SERVICE}/param_config_db_password"))
    );
    println!("Tenant B (bob) cannot see tenant A's theme (404):");
    println!("  export TOKEN_B='{bob}'");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_B\" {}",
        stack.api_url(&format!("/v1/config/{SERVICE}/tenant_config_theme"))
    );
    println!();
    println!("Tell config-refresh that tenant-a's endpoint changed (as EventBridge would):");
    println!(
        "  .venv/bin/cargo-lambda lambda invoke config-refresh -A 127.0.0.1 -P {} --data-file events/parameter-store-change-update.json",
        stack.watch.port
    );
    println!("Environment of the functions and agents (for running another agent by hand):");
    for (name, value) in &stack.env {
        println!("  export {name}='{value}'");
    }
    println!();
    println!("Tokens expire after an hour. Press Ctrl-C to stop everything.");
    wait_for_stop_signal().await;
    eprintln!("stopping…");
    drop(stack);
    eprintln!("stopped.");
}

/// Ctrl-C, SIGTERM or SIGHUP (terminal closed): all mean stop and clean up.
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hangup.recv() => {}
    }
}
