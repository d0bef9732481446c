//! The story of the local stack, run and checked step by step: what a new
//! user would try by hand. `local-stack --walkthrough` runs it and exits
//! non-zero on the first failed step; the README test command runs that.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::journal_table::JournalTable;
use tenant_config_shared::{ItemKey, ServiceName};

use crate::stack::{ALICE, BOB, DANA, JOURNAL_TABLE, LocalStack, PARAMETER_ROOT, SERVICE, TABLE};
use tenant_config_admin::values::{ParameterKind, Target};

pub(crate) fn check(condition: bool, what: impl Into<String>) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what.into()) }
}

pub(crate) async fn step<F: Future<Output = Result<(), String>>>(
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
        secure_string_key: None,
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

    // Safe changes: the administrator (dana, in the admin group) writes
    // through the API; a schema guards the key; versions guard against
    // overwriting what someone else wrote; a rollback restores a version.
    let dana = stack.token(DANA).await?;
    let limits_path = path("tenant_config_limits");
    let version_of = |answer: &crate::stack::Answer| -> Result<i64, String> {
        answer
            .header("etag")
            .and_then(|etag| etag.trim_matches('"').parse().ok())
            .ok_or_else(|| format!("no version in {:?}", answer.headers))
    };
    // What step 6 wrote, once config-api serves it too (it catches up from
    // the journal within a second; step 6 waited for the agent only).
    stack
        .until_served_everywhere(
            &alice,
            "tenant_config_limits",
            &json!({"max_users": 80, "tier": "gold"}),
            Duration::from_secs(5),
            Duration::from_millis(20),
        )
        .await?;
    let current = stack.get(&limits_path, Some(&alice)).await?;
    let read_version = version_of(&current)?;
    let put = |version: i64, value: serde_json::Value| {
        let dana = dana.clone();
        let limits_path = limits_path.clone();
        let stack = &*stack;
        async move {
            let if_match = version.to_string();
            stack
                .send(
                    reqwest::Method::PUT,
                    &limits_path,
                    Some(&dana),
                    &[("if-match", if_match.as_str())],
                    Some(&json!({ "value": value })),
                )
                .await
        }
    };

    step(
        7,
        "a write that breaks the service's schema is refused (422) and nothing changes",
        async {
            target
                .put_schema(
                    &stack.aws,
                    &ServiceName::parse(SERVICE).map_err(|e| e.to_string())?,
                    None,
                    &json!({"type": "object", "required": ["max_users"],
                            "properties": {"max_users": {"type": "integer", "minimum": 1}}}),
                )
                .await?;
            let refused = put(read_version, json!({"max_users": "many"})).await?;
            check(
                refused.status == 422 && refused.text.contains("/max_users"),
                format!("{} {}", refused.status, refused.text),
            )?;
            let after = stack.get(&limits_path, Some(&alice)).await?;
            check(
                after.body["value"] == current.body["value"],
                format!("the value changed: {}", after.text),
            )
        },
    )
    .await?;
    *passed += 1;

    let changed = json!({"max_users": 120, "tier": "gold"});
    step(
        8,
        "an administrator's change reaches config-api and the agent within seconds",
        async {
            let written = put(read_version, changed.clone()).await?;
            check(
                written.status == 200 && written.body["version"] == read_version + 1,
                format!("{} {}", written.status, written.text),
            )?;
            served_everywhere(stack, &alice, &changed).await
        },
    )
    .await?;
    *passed += 1;

    step(
        9,
        "a write from the version read before that change conflicts (409, current version named)",
        async {
            let stale = put(read_version, json!({"max_users": 1})).await?;
            check(
                stale.status == 409 && stale.body["current_version"] == read_version + 1,
                format!("{} {}", stale.status, stale.text),
            )
        },
    )
    .await?;
    *passed += 1;

    step(
        10,
        "a rollback restores the earlier value everywhere; the journal says who did each change",
        async {
            let if_match = (read_version + 1).to_string();
            let rolled = stack
                .send(
                    reqwest::Method::POST,
                    &format!("{limits_path}/rollback"),
                    Some(&dana),
                    &[("if-match", if_match.as_str())],
                    Some(&json!({ "version": read_version })),
                )
                .await?;
            check(
                rolled.status == 200 && rolled.body["rollback_of"] == read_version,
                format!("{} {}", rolled.status, rolled.text),
            )?;
            served_everywhere(stack, &alice, &current.body["value"]).await?;
            let history = stack
                .get(&format!("{limits_path}/history"), Some(&dana))
                .await?;
            let actor = history.body["versions"][0]["actor"]
                .as_str()
                .ok_or_else(|| format!("history names no actor: {}", history.text))?
                .to_owned();
            let journal =
                JournalTable::new(aws_sdk_dynamodb::Client::new(&stack.aws), JOURNAL_TABLE);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let audit: Vec<String> = journal
                    .since(0, 1000)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|e| {
                        e.change.subject.to_string() == "tenant-a:billing:tenant_config_limits"
                    })
                    .map(|e| e.change.audit.to_string())
                    .collect();
                let rollback = format!(
                    "v{} -> v{} by {}",
                    read_version + 1,
                    read_version + 2,
                    actor
                );
                if audit.iter().any(|a| {
                    a.starts_with(&rollback)
                        && a.ends_with(&format!("(rollback of v{read_version})"))
                }) {
                    for line in audit.iter().rev().take(3).rev() {
                        println!("      journal: {line}");
                    }
                    return Ok(());
                }
                check(
                    Instant::now() < deadline,
                    format!(
                        "no journal record '{rollback} (rollback of v{read_version})' in {audit:?}"
                    ),
                )?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await?;
    *passed += 1;
    crate::layers_walkthrough::steps(stack, passed, 11).await?;
    println!("Walk-through passed.");
    Ok(())
}

/// Waits (≤ 5 s) until config-api and every running agent serve `expected`
/// for tenant A's limits.
async fn served_everywhere(
    stack: &LocalStack,
    token: &str,
    expected: &serde_json::Value,
) -> Result<(), String> {
    let took = stack
        .until_served_everywhere(
            token,
            "tenant_config_limits",
            expected,
            Duration::from_secs(5),
            Duration::from_millis(20),
        )
        .await?;
    println!(
        "      served by config-api and every agent after {} ms",
        took.as_millis()
    );
    Ok(())
}
