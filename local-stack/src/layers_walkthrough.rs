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
    Ok(())
}
