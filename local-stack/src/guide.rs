//! What the demo prints once the stack is up: every endpoint, a file of
//! settings to source, and commands to try; and the signals that stop it.

use crate::process::workspace_root;
use crate::stack::{
    ALICE, BOB, CLOUD_MAP_NAMESPACE, CLOUD_MAP_SERVICE, DANA, LocalStack, PAT, SERVICE,
};

/// Writes `target/local-stack.env` and prints how to use the running stack.
pub async fn print_guide(stack: &LocalStack) -> Result<(), String> {
    let alice = stack.token(ALICE).await?;
    let bob = stack.token(BOB).await?;
    let env_file = workspace_root().join("target/local-stack.env");
    let mut env: Vec<(String, String)> = stack.env.clone();
    env.push((
        "TENANT_CONFIG_INVOKE_URL".into(),
        stack.watch.base_url.clone(),
    ));
    env.push(("TOKEN_A".into(), alice.clone()));
    env.push(("TOKEN_B".into(), bob.clone()));
    env.push(("TOKEN_ADMIN_A".into(), stack.token(DANA).await?));
    env.push(("TOKEN_PLATFORM_ADMIN".into(), stack.token(PAT).await?));
    // OpenFeature's OFREP providers take a base URL: one service's.
    env.push((
        "OFREP_URL".into(),
        stack.api_url(&format!("/v1/services/{SERVICE}")),
    ));
    if let Some(agent) = stack.agents.first() {
        env.push(("AGENT_1".into(), agent.endpoint()));
        env.push((
            "AGENT_1_OFREP".into(),
            format!("{}/v1/services/{SERVICE}", agent.endpoint()),
        ));
    }
    let text: String = env.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    std::fs::write(&env_file, text)
        .map_err(|e| format!("cannot write {}: {e}", env_file.display()))?;

    println!();
    println!("  {:<18} {}", "moto server", stack.moto.endpoint);
    println!("  {:<18} {}", "config-api", stack.api_url(""));
    println!(
        "  {:<18} {} (Lambda Invoke API)",
        "config-refresh", stack.watch.base_url
    );
    println!(
        "  {:<18} {} (Lambda Invoke API; ticked every {} s, and when a moto alarm enters ALARM)",
        "rollout-driver",
        stack.watch.base_url,
        crate::scheduler::TICK.as_secs()
    );
    for agent in &stack.agents {
        println!(
            "  {:<18} {} (gRPC, and OFREP over HTTP; Cloud Map instance {})",
            agent.name,
            agent.endpoint(),
            agent.instance_id
        );
    }
    println!("  {:<18} {}", "user pool", stack.pool.pool_id);
    println!("  {:<18} {}", "app client", stack.pool.client_id);
    println!("  {:<18} {}", "issuer", stack.pool.issuer);
    println!("  {:<18} {}", "JWKS", stack.pool.jwks_url);
    println!(
        "  {:<18} {CLOUD_MAP_NAMESPACE} / {CLOUD_MAP_SERVICE} ({})",
        "Cloud Map", stack.cloud_map.service_id
    );
    println!();
    println!("In another shell, from the repository root:");
    println!(
        "  set -a; . target/local-stack.env; set +a; export PATH=$PWD/.venv/bin:$PWD/target/debug:$PATH"
    );
    println!();
    println!(
        "Tenant A reads (DynamoDB, Parameter Store, batch, secure route); tenant B gets 404 for A's theme:"
    );
    let url = |path: &str| stack.api_url(path);
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" {}",
        url(&format!("/v1/config/{SERVICE}/tenant_config_limits"))
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" '{}'",
        url(&format!(
            "/v1/config/{SERVICE}?keys=param_config_endpoint,param_config_regions,tenant_config_limits"
        ))
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" {}",
        url(&format!("/v1/secure/{SERVICE}/param_config_db_password"))
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_B\" {}",
        url(&format!("/v1/config/{SERVICE}/tenant_config_theme"))
    );
    println!();
    println!("Read through an agent over gRPC:");
    println!(
        "  tenant-config-admin agent-get --agent $AGENT_1 --token $TOKEN_A {SERVICE} param_config_endpoint"
    );
    println!();
    println!(
        "Evaluate flags as any OpenFeature SDK does through its OFREP provider (base URL $OFREP_URL, or $AGENT_1_OFREP):"
    );
    println!(
        "  curl -s -X POST -H \"Authorization: Bearer $TOKEN_A\" -d '{{\"context\": {{}}}}' $OFREP_URL/ofrep/v1/evaluate/flags/tenant_config_limits"
    );
    println!(
        "  curl -s -i -X POST -H \"Authorization: Bearer $TOKEN_A\" $AGENT_1_OFREP/ofrep/v1/evaluate/flags"
    );
    println!();
    println!("Change a parameter, then send the event EventBridge would send:");
    println!(
        "  tenant-config-admin put tenant-a {SERVICE} param_config_endpoint https://v2.example"
    );
    println!("  tenant-config-admin event tenant-a {SERVICE} param_config_endpoint");
    println!(
        "  # or: cargo lambda invoke config-refresh -A 127.0.0.1 -P {} --data-file events/parameter-store-change-update.json",
        stack.watch.port
    );
    println!(
        "  tenant-config-admin agent-get --agent $AGENT_1 --token $TOKEN_A {SERVICE} param_config_endpoint"
    );
    println!();
    println!(
        "Layers: tenant A's features merge global, its enterprise tier and its own; explain says which layer each leaf came from:"
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" {}",
        url(&format!("/v1/explain/{SERVICE}/tenant_config_features"))
    );
    println!(
        "Weigh a global change before it lands (nothing changes), as a platform administrator:"
    );
    println!(
        "  curl -s -X PUT -H \"Authorization: Bearer $TOKEN_PLATFORM_ADMIN\" -H 'If-Match: 1' -d '{{\"value\": {{\"max_projects\": 10}}}}' '{}'",
        url(&format!(
            "/v1/layers/global/{SERVICE}/tenant_config_features?dry_run=true"
        ))
    );
    println!(
        "  tenant-config-admin layer put global {SERVICE} tenant_config_features '{{\"max_projects\": 10}}' --dry-run"
    );
    print_sam_local(stack);
    println!();
    println!("A fresh token (they expire after an hour): tenant-config-admin token alice");
    println!(
        "Check the stack as after a deploy (by its name alone, as in the runbook):\n  tenant-config-admin --stack {0} stage-settings && tenant-config-admin --stack {0} verify",
        crate::published::STACK_NAME
    );
    println!("Press Ctrl-C to stop everything.");
    Ok(())
}

/// The `sam local` commands, when the stack serves containers; how to get
/// there when it does not.
fn print_sam_local(stack: &LocalStack) {
    println!();
    let Some(sam) = &stack.sam else {
        println!(
            "The functions in containers, as sam local runs them: `bash tests/sam-local.sh setup` (as root), then start the demo again."
        );
        return;
    };
    if sam.template.is_none() || sam.image.is_none() {
        println!(
            "Docker answers, but sam local is not set up: `bash tests/sam-local.sh setup`, then start the demo again."
        );
        return;
    }
    let line = |args: Vec<String>| format!("  sam {}", args.join(" "));
    println!(
        "The built functions in containers (sam local), against this stack (settings in {}, events with tokens in {}/):",
        crate::sam::ENV_FILE,
        crate::sam::EVENTS_DIR
    );
    println!(
        "{}",
        line(sam.invoke_args(
            "ConfigApiFunction",
            &sam.events.join("apigw-rest-get-config.json")
        ))
    );
    println!(
        "{}",
        line(sam.invoke_args(
            "ConfigRefreshFunction",
            &sam.events.join("parameter-store-change-update.json")
        ))
    );
    println!("{}", line(sam.start_api_args(3000)));
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN_A\" http://127.0.0.1:3000/v1/config/{SERVICE}/tenant_config_limits"
    );
}

/// Ctrl-C, SIGTERM or SIGHUP (terminal closed): all mean stop and clean up.
pub async fn wait_for_stop_signal() {
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
