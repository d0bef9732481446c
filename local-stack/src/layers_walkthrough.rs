//! The walk-through's layered part: the seeded global default, tiers and
//! tenant exception ([`crate::layer_seeds`]) as tenants read them, then a
//! default changed for everyone, a tier change, explain, a dry run, a
//! refused guardrail breach and a locked key.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::layer_seeds::{
    FEATURES, LOG_LEVEL, TENANT_A_TIER, features_global, features_of_tenant_a, features_of_tier,
};
use crate::stack::{ALICE, Answer, BOB, DANA, LocalStack, PAT, SERVICE};
use crate::walkthrough::{check, step};

fn merged(layers: &[Value]) -> Value {
    let refs: Vec<&Value> = layers.iter().collect();
    tenant_config_shared::layers::merge::merge_values(&refs).unwrap_or(Value::Null)
}

async fn send(
    stack: &LocalStack,
    method: Method,
    path: &str,
    token: &str,
    precondition: (&str, &str),
    body: Value,
) -> Result<Answer, String> {
    stack
        .send(method, path, Some(token), &[precondition], Some(&body))
        .await
}

/// Waits (≤ 5 s) until config-api and every agent serve `expected`.
async fn everywhere(
    stack: &LocalStack,
    token: &str,
    key: &str,
    expected: &Value,
) -> Result<(), String> {
    let took = stack
        .until_served_everywhere(
            token,
            key,
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

pub async fn steps(stack: &LocalStack, passed: &mut usize, first: usize) -> Result<(), String> {
    let (alice, bob) = (stack.token(ALICE).await?, stack.token(BOB).await?);
    let (dana, pat) = (stack.token(DANA).await?, stack.token(PAT).await?);
    let global_path = format!("/v1/layers/global/{SERVICE}/{FEATURES}");
    let own_features = format!("/v1/config/{SERVICE}/{FEATURES}");
    let tenant_a = merged(&[
        features_global(),
        features_of_tier(TENANT_A_TIER),
        features_of_tenant_a(),
    ]);

    step(
        first,
        "tenant A's features merge the global default, its enterprise tier and its own exception; explain names each leaf's layer",
        async {
            everywhere(stack, &alice, FEATURES, &tenant_a).await?;
            everywhere(stack, &bob, FEATURES, &features_global()).await?;
            let explained = stack
                .get(&format!("/v1/explain/{SERVICE}/{FEATURES}"), Some(&alice))
                .await?;
            check(
                explained.body["leaves"]
                    == json!({"/beta_ui": "tenant:tenant-a", "/max_projects": "tier:enterprise",
                              "/support": "tier:enterprise"}),
                format!("explain: {}", explained.text),
            )?;
            let level = stack
                .get(&format!("/v1/config/{SERVICE}/{LOG_LEVEL}"), Some(&bob))
                .await?;
            check(
                level.body["value"] == "info",
                format!("the Parameter Store default: {}", level.text),
            )
        },
    )
    .await?;
    *passed += 1;

    let raised = json!({"beta_ui": false, "max_projects": 10, "support": "community"});
    step(
        first + 1,
        "a default changed once reaches every tenant that does not override it, and no other",
        async {
            let written = send(
                stack,
                Method::PUT,
                &global_path,
                &pat,
                ("if-match", "1"),
                json!({ "value": raised }),
            )
            .await?;
            check(
                written.status == 200,
                format!("{} {}", written.status, written.text),
            )?;
            check(
                written.body["blast_radius"]["unregistered"]["changes"] == true,
                format!("no blast radius: {}", written.text),
            )?;
            everywhere(stack, &bob, FEATURES, &raised).await?;
            // tenant A's tier overrides max_projects: unchanged for it
            everywhere(stack, &alice, FEATURES, &tenant_a).await
        },
    )
    .await?;
    *passed += 1;

    step(
        first + 2,
        "a tier change moves tenant B onto the free tier's values everywhere",
        async {
            let registered = send(
                stack,
                Method::PUT,
                "/v1/tenants/tenant-b",
                &pat,
                ("if-none-match", "*"),
                json!({"tier": "free"}),
            )
            .await?;
            check(
                registered.status == 201,
                format!("{} {}", registered.status, registered.text),
            )?;
            everywhere(
                stack,
                &bob,
                FEATURES,
                &merged(&[raised.clone(), features_of_tier("free")]),
            )
            .await
        },
    )
    .await?;
    *passed += 1;

    let free_path = format!("/v1/layers/tiers/free/{SERVICE}/{FEATURES}");
    step(
        first + 3,
        "a guardrail caps max_projects; a dry run of a free-tier change names the tenant it would break, and the real write is refused (422)",
        async {
            let capped = send(
                stack,
                Method::PUT,
                &format!("{global_path}/guardrail"),
                &pat,
                ("if-none-match", "*"),
                json!({"schema": {"properties": {"max_projects": {"maximum": 200}}}}),
            )
            .await?;
            check(
                capped.status == 201,
                format!("guardrail: {} {}", capped.status, capped.text),
            )?;
            let too_many = json!({"value": {"max_projects": 500}});
            let dry = send(
                stack,
                Method::PUT,
                &format!("{free_path}?dry_run=true"),
                &pat,
                ("if-match", "1"),
                too_many.clone(),
            )
            .await?;
            let report = &dry.body["report"];
            check(
                dry.status == 200
                    && report["changed_tenants"] == json!(["tenant-b"])
                    && report["failing_tenants"][0]["tenant"] == "tenant-b",
                format!("dry run: {} {}", dry.status, dry.text),
            )?;
            println!(
                "      dry run: {} tenant(s) change, {} would fail ({}), {} store reads",
                report["changed"], report["failing"], report["failing_tenants"][0]["rule"],
                report["store_reads"]
            );
            let refused = send(
                stack,
                Method::PUT,
                &free_path,
                &pat,
                ("if-match", "1"),
                too_many,
            )
            .await?;
            check(
                refused.status == 422 && refused.body["error"] == "breaks_tenants",
                format!("{} {}", refused.status, refused.text),
            )
        },
    )
    .await?;
    *passed += 1;

    step(
        first + 4,
        "a tenant's exception past the guardrail is refused (422), and a locked key refuses any exception",
        async {
            let over = send(
                stack,
                Method::PUT,
                &own_features,
                &dana,
                ("if-match", "1"),
                json!({"value": {"max_projects": 1000}}),
            )
            .await?;
            check(
                over.status == 422 && over.body["error"] == "schema_violation",
                format!("{} {}", over.status, over.text),
            )?;
            let locked = send(
                stack,
                Method::PUT,
                &format!("/v1/layers/global/{SERVICE}/{LOG_LEVEL}/guardrail"),
                &pat,
                ("if-none-match", "*"),
                json!({"locked": true}),
            )
            .await?;
            check(
                locked.status == 201,
                format!("lock: {} {}", locked.status, locked.text),
            )?;
            let exception = send(
                stack,
                Method::PUT,
                &format!("/v1/config/{SERVICE}/{LOG_LEVEL}"),
                &dana,
                ("if-none-match", "*"),
                json!({"value": "debug"}),
            )
            .await?;
            check(
                exception.status == 422 && exception.body["error"] == "key_locked",
                format!("{} {}", exception.status, exception.text),
            )
        },
    )
    .await?;
    *passed += 1;
    rollout_steps(stack, passed, first + 5, &raised).await
}

/// Rollouts of a new global default: one whose gate goes into alarm puts
/// its canary back; one without a gate widens step by step and lands.
async fn rollout_steps(
    stack: &LocalStack,
    passed: &mut usize,
    first: usize,
    current: &Value,
) -> Result<(), String> {
    let (alice, bob, pat) = (
        stack.token(ALICE).await?,
        stack.token(BOB).await?,
        stack.token(PAT).await?,
    );
    let staged = json!({"beta_ui": true, "max_projects": 10, "support": "community"});
    let tenant_a_before = merged(&[
        current.clone(),
        features_of_tier(TENANT_A_TIER),
        features_of_tenant_a(),
    ]);
    let tenant_a_after = merged(&[
        staged.clone(),
        features_of_tier(TENANT_A_TIER),
        features_of_tenant_a(),
    ]);
    let tenant_b = |global: &Value| merged(&[global.clone(), features_of_tier("free")]);
    let start = |steps: Value, bake: u64, alarms: Value| {
        let (pat, staged) = (pat.clone(), staged.clone());
        async move {
            let started = stack
                .send(
                    Method::POST,
                    "/v1/rollouts",
                    Some(&pat),
                    &[],
                    Some(&json!({
                        "layer": "global", "service": SERVICE, "key": FEATURES, "value": staged,
                        "steps": steps, "bake_seconds": bake, "alarms": alarms
                    })),
                )
                .await?;
            check(
                started.status == 201,
                format!("{} {}", started.status, started.text),
            )?;
            Ok::<String, String>(started.body["id"].as_str().unwrap_or_default().to_owned())
        }
    };
    let gate_name = "walkthrough-billing-errors";
    step(
        first,
        "a rollout stages a new default for tenant B first (every reader of B serves it, A keeps its own); its gate going into ALARM rolls B back",
        async {
            stack.create_gate(gate_name).await?;
            let id = start(json!([{"canary": ["tenant-b"]}, "everyone"]), 600, json!([gate_name])).await?;
            everywhere(stack, &bob, FEATURES, &tenant_b(&staged)).await?;
            everywhere(stack, &alice, FEATURES, &tenant_a_before).await?;
            let alarmed = std::time::Instant::now();
            stack.set_gate(gate_name, aws_sdk_cloudwatch::types::StateValue::Alarm).await?;
            stack
                .until_served_everywhere(
                    &bob,
                    FEATURES,
                    &tenant_b(current),
                    Duration::from_secs(30),
                    Duration::from_millis(20),
                )
                .await?;
            println!(
                "      tenant B back on the previous value everywhere {} ms after the alarm",
                alarmed.elapsed().as_millis()
            );
            let got = stack.get(&format!("/v1/rollouts/{id}"), Some(&pat)).await?;
            check(
                got.body["state"] == "rolled_back"
                    && got.body["reason"] == format!("gate in alarm: {gate_name}"),
                format!("rollout: {}", got.text),
            )?;
            stack.set_gate(gate_name, aws_sdk_cloudwatch::types::StateValue::Ok).await
        },
    )
    .await?;
    *passed += 1;

    step(
        first + 1,
        "a rollout to the canary, then half the tenants, then everyone, baking 1 s a step, lands the value in the global layer",
        async {
            let started = std::time::Instant::now();
            let id = start(json!([{"canary": ["tenant-b"]}, {"percent": 50}, "everyone"]), 1, json!([gate_name])).await?;
            loop {
                let got = stack.get(&format!("/v1/rollouts/{id}"), Some(&pat)).await?;
                if got.body["state"] == "done" {
                    break;
                }
                check(
                    started.elapsed() < Duration::from_secs(60),
                    format!("not done after 60 s: {}", got.text),
                )?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!(
                "      three steps done in {} ms",
                started.elapsed().as_millis()
            );
            everywhere(stack, &alice, FEATURES, &tenant_a_after).await?;
            everywhere(stack, &bob, FEATURES, &tenant_b(&staged)).await?;
            let history = stack
                .get(&format!("/v1/layers/global/{SERVICE}/{FEATURES}/history"), Some(&pat))
                .await?;
            check(
                history.body["versions"][0]["actor"] == format!("rollout:{id}"),
                format!("history: {}", history.text),
            )
        },
    )
    .await?;
    *passed += 1;
    Ok(())
}
