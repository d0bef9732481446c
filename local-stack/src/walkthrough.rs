//! The story of the local stack, run and checked step by step: what a new
//! user would try by hand. `local-stack --walkthrough` runs it and exits
//! non-zero on the first failed step; the README test command runs that.

use std::future::Future;
use std::time::Instant;
use tenant_config_shared::ItemKey;

use crate::stack::{ALICE, BOB, LocalStack, PARAMETER_ROOT, SERVICE, TABLE};
use tenant_config_admin::values::{ParameterKind, Target};

fn check(condition: bool, what: impl Into<String>) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what.into()) }
}

async fn step<F: Future<Output = Result<(), String>>>(
    number: usize,
    name: &str,
    work: F,
) -> Result<(), String> {
    let started = Instant::now();
    match work.await {
        Ok(()) => {
            println!(
                "  ✓ {number}. {name} ({} ms)",
                started.elapsed().as_millis()
            );
            Ok(())
        }
        Err(reason) => {
            println!("  ✗ {number}. {name}: {reason}");
            Err(format!("step {number} ({name}) failed: {reason}"))
        }
    }
}

/// Runs the walk-through against a stack started with two agents and prints
/// a closing `walkthrough: N passed, N failed` line.
pub async fn run(stack: &mut LocalStack) -> Result<(), String> {
    let mut passed = 0;
    let result = steps(stack, &mut passed).await;
    println!(
        "walkthrough: {passed} passed, {} failed",
        usize::from(result.is_err())
    );
    result
}

async fn steps(stack: &mut LocalStack, passed: &mut usize) -> Result<(), String> {
    if stack.agents.len() < 2 {
        return Err("the walk-through needs two agents".to_owned());
    }
    let alice = stack.token(ALICE).await?;
    let bob = stack.token(BOB).await?;
    let target = Target {
        table: TABLE.to_owned(),
        parameter_root: PARAMETER_ROOT.to_owned(),
        router: Default::default(),
    };
    let path = |key: &str| format!("/v1/config/{SERVICE}/{key}");
    println!("Walk-through:");

    step(
        1,
        "tenant A reads its values from DynamoDB and Parameter Store",
        async {
            let limits = stack
                .get(&path("tenant_config_limits"), Some(&alice))
                .await?;
            check(
                limits.status == 200,
                format!("limits: {} {}", limits.status, limits.text),
            )?;
            check(
                limits.body["value"]["tier"] == "gold",
                format!("limits: {}", limits.text),
            )?;
            let endpoint = stack
                .get(&path("param_config_endpoint"), Some(&alice))
                .await?;
            check(
                endpoint.body["value"] == "https://billing.tenant-a.example",
                format!("endpoint: {}", endpoint.text),
            )
        },
    )
    .await?;
    *passed += 1;

    step(
        2,
        "tenant B cannot see tenant A's values and reads its own",
        async {
            let theme = stack.get(&path("tenant_config_theme"), Some(&bob)).await?;
            check(
                theme.status == 404,
                format!("A's theme for B: {} {}", theme.status, theme.text),
            )?;
            check(!theme.text.contains("dark"), "A's value leaked")?;
            let limits = stack.get(&path("tenant_config_limits"), Some(&bob)).await?;
            check(
                limits.body["value"]["tier"] == "free",
                format!("B's limits: {}", limits.text),
            )
        },
    )
    .await?;
    *passed += 1;

    step(
        3,
        "a SecureString is refused on the cached route and served on the secure one",
        async {
            let cached = stack
                .get(&path("param_config_db_password"), Some(&alice))
                .await?;
            check(
                cached.status == 409,
                format!("cached route: {} {}", cached.status, cached.text),
            )?;
            check(
                !cached.text.contains("tenant-a-db-secret"),
                "secret leaked on the cached route",
            )?;
            let secure = stack
                .get(
                    &format!("/v1/secure/{SERVICE}/param_config_db_password"),
                    Some(&alice),
                )
                .await?;
            check(
                secure.status == 200 && secure.body["value"] == "tenant-a-db-secret",
                format!("secure route: {} {}", secure.status, secure.text),
            )
        },
    )
    .await?;
    *passed += 1;

    let item =
        ItemKey::parse("tenant-a", SERVICE, "param_config_endpoint").map_err(|e| e.to_string())?;
    let parameter = target.parameter_name(&item);
    let running = |stack: &LocalStack| -> Vec<String> {
        stack
            .agents
            .iter()
            .filter(|a| a.is_running())
            .map(|a| a.endpoint())
            .collect()
    };
    let agents_serve = |agents: Vec<String>, expected: &'static str| {
        let alice = alice.clone();
        async move {
            for agent in agents {
                let value = tenant_config_admin::agent_client::get_config(
                    &agent,
                    &alice,
                    SERVICE,
                    "param_config_endpoint",
                )
                .await
                .map_err(|s| format!("{agent}: {:?} {}", s.code(), s.message()))?;
                check(
                    value == format!("\"{expected}\""),
                    format!("{agent} serves {value}, not {expected}"),
                )?;
            }
            Ok::<_, String>(())
        }
    };

    step(
        4,
        "a parameter changes, the event is sent, both agents serve the new value",
        async {
            agents_serve(running(stack), "https://billing.tenant-a.example").await?;
            target
                .put(
                    &stack.aws,
                    &item,
                    "https://billing-v2.tenant-a.example",
                    ParameterKind::String,
                )
                .await?;
            agents_serve(running(stack), "https://billing.tenant-a.example")
                .await
                .map_err(|e| {
                    format!("before the event the agents should still serve their cache: {e}")
                })?;
            let answer = stack.send_change_event("Update", &parameter).await??;
            check(
                answer["instances"] == 2,
                format!("config-refresh answered {answer}"),
            )?;
            agents_serve(running(stack), "https://billing-v2.tenant-a.example").await
        },
    )
    .await?;
    *passed += 1;

    step(
        5,
        "one agent stops; the next change still reaches the other",
        async {
            let clean = stack.agents[0].stop_gracefully()?;
            check(clean, "agent-1 did not exit cleanly on SIGTERM")?;
            target
                .put(
                    &stack.aws,
                    &item,
                    "https://billing-v3.tenant-a.example",
                    ParameterKind::String,
                )
                .await?;
            let answer = stack.send_change_event("Update", &parameter).await??;
            check(
                answer["instances"] == 1,
                format!("config-refresh answered {answer}"),
            )?;
            agents_serve(running(stack), "https://billing-v3.tenant-a.example").await
        },
    )
    .await?;
    *passed += 1;

    step(
        6,
        "a DynamoDB value changes; with no event sent, the running agent serves it",
        async {
            let limits = ItemKey::parse("tenant-a", SERVICE, "tenant_config_limits")
                .map_err(|e| e.to_string())?;
            let read = |agent: String| {
                let alice = alice.clone();
                async move {
                    tenant_config_admin::agent_client::get_config(
                        &agent,
                        &alice,
                        SERVICE,
                        "tenant_config_limits",
                    )
                    .await
                    .map_err(|s| format!("{agent}: {:?} {}", s.code(), s.message()))
                }
            };
            let agent = running(stack).pop().ok_or("no agent is running")?;
            read(agent.clone()).await?;
            let new = r#"{"max_users":80,"tier":"gold"}"#;
            target
                .put(&stack.aws, &limits, new, ParameterKind::String)
                .await?;
            // The stream delivers the change; the agent's own cache would
            // keep the old value for a minute.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let value = read(agent.clone()).await?;
                if value == new {
                    return Ok(());
                }
                check(
                    Instant::now() < deadline,
                    format!("{agent} still serves {value} 5 s after the write"),
                )?;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        },
    )
    .await?;
    *passed += 1;
    println!("Walk-through passed.");
    Ok(())
}
