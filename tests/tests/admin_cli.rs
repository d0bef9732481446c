//! The `tenant-config-admin` binary against the local stack: what an operator
//! types, checked through the API a caller uses.

use std::process::{Command, Output};

use tenant_config_admin::values::{ParameterKind, put_item, put_parameter};
use tenant_config_local_stack::agent::agent_binary;
use tenant_config_local_stack::stack::{
    LocalStack, PARAMETER_ROOT, SERVICE, StackOptions, TABLE, demo_item,
};

/// The admin binary with `args` and the stack's environment.
fn admin_command(stack: &LocalStack, args: &[&str]) -> Command {
    let mut command = Command::new(agent_binary().with_file_name("tenant-config-admin"));
    command
        .args(args)
        .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TENANT_CONFIG_INVOKE_URL", &stack.watch.base_url);
    command
}

fn admin(stack: &LocalStack, args: &[&str]) -> Output {
    admin_command(stack, args)
        .output()
        .expect("tenant-config-admin runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[tokio::test]
async fn an_operator_manages_values_tokens_and_events_from_the_cli() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("stack starts");

    // A token minted by the CLI is accepted by the API.
    let token = admin(&stack, &["token", "alice"]);
    assert!(token.status.success(), "{}", stderr(&token));
    let token = stdout(&token);

    // Values put in either store are served to the tenant by the API.
    for (key, value, stored_in) in [
        ("tenant_config_max_seats", r#"{"seats":12}"#, "dynamodb"),
        (
            "param_config_webhook",
            "https://hooks.tenant-a.example",
            "parameter-store",
        ),
    ] {
        let put = admin(&stack, &["put", "tenant-a", SERVICE, key, value]);
        assert!(put.status.success(), "{}", stderr(&put));
        assert!(stderr(&put).contains(stored_in), "{}", stderr(&put));
        let answer = stack
            .get(&format!("/v1/config/{SERVICE}/{key}"), Some(&token))
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["source"], stored_in);
        let get = admin(&stack, &["get", "tenant-a", SERVICE, key]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stdout(&get)).unwrap(),
            answer.body["value"]
        );
    }
    // A DynamoDB value's version goes up with each put.
    admin(
        &stack,
        &["put", "tenant-a", SERVICE, "tenant_config_max_seats", "13"],
    );
    let answer = stack
        .get(
            &format!("/v1/secure/{SERVICE}/tenant_config_max_seats"),
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(
        (answer.body["value"].clone(), answer.body["version"].clone()),
        ("13".into(), 2.into())
    );

    // SecureStrings are hidden unless asked for.
    let put = admin(
        &stack,
        &[
            "put",
            "tenant-a",
            SERVICE,
            "param_config_api_key",
            "k-123",
            "--type",
            "secure-string",
        ],
    );
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(
        !stdout(&admin(
            &stack,
            &["get", "tenant-a", SERVICE, "param_config_api_key"]
        ))
        .contains("k-123")
    );
    assert_eq!(
        stdout(&admin(
            &stack,
            &[
                "get",
                "tenant-a",
                SERVICE,
                "param_config_api_key",
                "--decrypt"
            ]
        )),
        "\"k-123\""
    );

    // Hostile input is refused before it reaches a store, as the API refuses it.
    for bad in [
        ["tenant-a", SERVICE, "tenant_config_a#b"],
        ["tenant/a", SERVICE, "tenant_config_x"],
        ["tenant-a", SERVICE, "other_x"],
    ] {
        let put = admin(&stack, &["put", bad[0], bad[1], bad[2], "v"]);
        assert!(!put.status.success(), "{bad:?} was accepted");
        assert!(
            stderr(&put).starts_with("error: invalid"),
            "{}",
            stderr(&put)
        );
    }

    // Delete removes the value (read uncached: the cached route may serve it
    // until its TTL); a second delete says it is gone.
    assert!(
        admin(
            &stack,
            &["delete", "tenant-a", SERVICE, "param_config_webhook"]
        )
        .status
        .success()
    );
    let gone = stack
        .get(
            &format!("/v1/secure/{SERVICE}/param_config_webhook"),
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 404);
    assert!(
        !admin(
            &stack,
            &["delete", "tenant-a", SERVICE, "param_config_webhook"]
        )
        .status
        .success()
    );

    // The change event reaches the agent, which then serves the new value.
    let agent = &stack.agents[0];
    assert_eq!(
        agent
            .get_config(&token, SERVICE, "param_config_endpoint")
            .await
            .unwrap(),
        "\"https://billing.tenant-a.example\""
    );
    admin(
        &stack,
        &[
            "put",
            "tenant-a",
            SERVICE,
            "param_config_endpoint",
            "https://v2.example",
        ],
    );
    let event = admin(
        &stack,
        &["event", "tenant-a", SERVICE, "param_config_endpoint"],
    );
    assert!(event.status.success(), "{}", stderr(&event));
    let read = admin(
        &stack,
        &[
            "agent-get",
            "--agent",
            &agent.endpoint(),
            "--token",
            &token,
            SERVICE,
            "param_config_endpoint",
        ],
    );
    assert_eq!(stdout(&read), "\"https://v2.example\"", "{}", stderr(&read));
    let printed = admin(
        &stack,
        &[
            "event",
            "tenant-a",
            SERVICE,
            "param_config_endpoint",
            "--print",
            "--operation",
            "Delete",
        ],
    );
    let printed: serde_json::Value = serde_json::from_str(&stdout(&printed)).unwrap();
    assert_eq!(
        printed["detail"]["name"],
        "/config-service/tenant-a/billing/param_config_endpoint"
    );
    assert_eq!(printed["detail"]["operation"], "Delete");

    // The journal lists what changed, in order, with the store and operation,
    // and never a value: the DynamoDB puts (through the stream) and the
    // parameter update (through its event).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let listed = loop {
        let changes = admin(&stack, &["changes", "--since", "5m"]);
        assert!(changes.status.success(), "{}", stderr(&changes));
        let listed = stdout(&changes);
        if listed.matches("tenant_config_max_seats").count() >= 2
            || std::time::Instant::now() > deadline
        {
            break listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = listed.lines().collect();
    let seats: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("tenant-a/billing/tenant_config_max_seats  dynamodb"))
        .collect();
    assert_eq!(seats.len(), 2, "{listed}");
    // Each journal record is also the audit: who, from which version to which
    // (the CLI's actor is cli:$USER).
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
    );
    assert!(
        seats[0].contains(&format!("OPERATION_CREATE  new -> v1 by {actor}"))
            && seats[1].contains(&format!("OPERATION_UPDATE  v1 -> v2 by {actor}")),
        "{listed}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "tenant-a/billing/param_config_endpoint  parameter-store  OPERATION_UPDATE  v1 -> v2 by {actor}"
        ))),
        "{listed}"
    );
    assert!(!listed.contains("https://v2.example") && !listed.contains("seats\":12"));

    // The stage settings CloudFormation cannot set reach the whole stage and
    // each cached method (a patch on /*/* alone would miss them).
    // (awaited, not blocking: the API Gateway stand-in runs on this test's runtime)
    let applied = tokio::process::Command::from(admin_command(&stack, &["stage-settings"]))
        .output()
        .await
        .expect("tenant-config-admin runs");
    assert!(applied.status.success(), "{}", stderr(&applied));
    let patches = stack.stage_cache.stage_patches();
    let stage = stack.setting("STAGE_CACHE_STAGE").unwrap();
    let methods = std::iter::once("/*/*".to_owned()).chain(
        tenant_config_shared::stage_settings::CACHED_METHODS
            .iter()
            .map(|(r, m)| tenant_config_shared::stage_settings::method_settings_path(r, m)),
    );
    for methods in methods {
        for (setting, value) in [
            ("requireAuthorizationForCacheControl", "true"),
            ("unauthorizedCacheControlHeaderStrategy", "FAIL_WITH_403"),
        ] {
            let expected = (
                stage.clone(),
                "replace".to_owned(),
                format!("{methods}/caching/{setting}"),
                value.to_owned(),
            );
            assert!(
                patches.contains(&expected),
                "{expected:?} not in {patches:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_operator_sees_conflicts_history_and_rolls_back_from_the_cli() {
    let stack = LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("stack starts");
    let token = stdout(&admin(&stack, &["token", "alice"]));
    let key = "tenant_config_limits";
    let read = || async {
        stack
            .get(&format!("/v1/secure/{SERVICE}/{key}"), Some(&token))
            .await
            .unwrap()
    };
    // GIVEN the seeded value (version 1), changed by two operators
    let first = read().await;
    assert_eq!(first.body["version"], 1, "{}", first.text);
    let put = admin(
        &stack,
        &[
            "put",
            "tenant-a",
            SERVICE,
            key,
            r#"{"max_users":60}"#,
            "--expect-version",
            "1",
            "--actor",
            "ops-ann",
        ],
    );
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(stderr(&put).contains("version 2"), "{}", stderr(&put));

    // WHEN a second operator writes from the version they read before
    let stale = admin(
        &stack,
        &[
            "put",
            "tenant-a",
            SERVICE,
            key,
            r#"{"max_users":1}"#,
            "--expect-version",
            "1",
        ],
    );
    // THEN it is refused, naming the current version, and nothing changed
    assert!(!stale.status.success());
    assert!(
        stderr(&stale).contains("version conflict"),
        "{}",
        stderr(&stale)
    );
    assert!(
        stderr(&stale).contains("at version 2"),
        "{}",
        stderr(&stale)
    );
    assert_eq!(
        read().await.body["value"],
        serde_json::json!({"max_users": 60})
    );
    let create = admin(&stack, &["put", "tenant-a", SERVICE, key, "x", "--create"]);
    assert!(!create.status.success(), "create-only over an existing key");

    // WHEN version 1 is rolled back to
    let rollback = admin(
        &stack,
        &[
            "rollback",
            "tenant-a",
            SERVICE,
            key,
            "--to",
            "1",
            "--expect-version",
            "2",
            "--actor",
            "ops-bo",
        ],
    );
    assert!(rollback.status.success(), "{}", stderr(&rollback));
    // THEN the API serves version 1's value as version 3
    let restored = read().await;
    assert_eq!(restored.body["version"], 3);
    assert_eq!(
        restored.body["value"],
        serde_json::json!({"max_users": 50, "tier": "gold"})
    );
    // AND the history says who did what
    let history = stdout(&admin(&stack, &["history", "tenant-a", SERVICE, key]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(
        lines[0].starts_with("v3 ")
            && lines[0].contains("by ops-bo")
            && lines[0].contains("rollback of v1"),
        "{history}"
    );
    assert!(
        lines[1].starts_with("v2 ") && lines[1].contains("by ops-ann"),
        "{history}"
    );
    assert!(
        lines[2].starts_with("v1 ") && lines[2].contains("tenant-config-local-stack"),
        "{history}"
    );

    // AND with a schema stored for the key, an invalid value is refused
    // before it reaches the store, naming where it fails
    let schema = admin(
        &stack,
        &[
            "schema",
            SERVICE,
            "--key",
            key,
            r#"{"type":"object","required":["max_users"]}"#,
        ],
    );
    assert!(schema.status.success(), "{}", stderr(&schema));
    let invalid = admin(&stack, &["put", "tenant-a", SERVICE, key, r#"{"seats":3}"#]);
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("does not satisfy the schema"),
        "{}",
        stderr(&invalid)
    );
    assert_eq!(read().await.body["version"], 3, "nothing was stored");
    let broken = admin(&stack, &["schema", SERVICE, r#"{"type":"no-such-type"}"#]);
    assert!(
        !broken.status.success(),
        "a schema that does not compile is refused"
    );

    // AND a SecureString's history never shows its value
    let secret = "param_config_db_password";
    let changed = admin(
        &stack,
        &[
            "put",
            "tenant-a",
            SERVICE,
            secret,
            "rotated-secret",
            "--type",
            "secure-string",
        ],
    );
    assert!(changed.status.success(), "{}", stderr(&changed));
    let history = stdout(&admin(&stack, &["history", "tenant-a", SERVICE, secret]));
    assert!(history.contains("(SecureString)"), "{history}");
    assert!(!history.contains("rotated-secret") && !history.contains("tenant-a-db-secret"));
}

#[tokio::test]
async fn an_operator_sets_shared_layers_and_tiers_from_the_cli() {
    let stack = LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("stack starts");
    let bob = stdout(&admin(&stack, &["token", "bob"]));
    let key = "param_config_region_defaults";
    let read = || async {
        let answer = stack
            .get(&format!("/v1/config/{SERVICE}/{key}"), Some(&bob))
            .await
            .unwrap();
        (answer.status, answer.body["value"].clone())
    };

    // A global default and a gold override, in Parameter Store.
    for (layer, value) in [
        ("global", r#"{"region":"eu-west-1","replicas":2}"#),
        ("tier:gold", r#"{"replicas":5}"#),
    ] {
        let put = admin(
            &stack,
            &["layer", "put", layer, SERVICE, key, value, "--create"],
        );
        assert!(put.status.success(), "{}", stderr(&put));
    }
    let until = |want: serde_json::Value| {
        let read = &read;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let (status, value) = read().await;
                if status == 200 && value == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{status} {value}, want {want}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    until(serde_json::json!({"region": "eu-west-1", "replicas": 2})).await;

    // tenant-b moves to gold: it reads the merge.
    let set = admin(
        &stack,
        &["tenant", "set", "tenant-b", "--tier", "gold", "--create"],
    );
    assert!(set.status.success(), "{}", stderr(&set));
    until(serde_json::json!({"region": "eu-west-1", "replicas": 5})).await;
    let get = admin(&stack, &["tenant", "get", "tenant-b"]);
    assert!(
        stdout(&get).contains(r#""tier":"gold""#),
        "{}",
        stdout(&get)
    );

    // Refused: a secret in a shared layer, a layer that is not one, a stale version.
    for refused in [
        vec![
            "layer",
            "put",
            "global",
            SERVICE,
            "param_config_x",
            "s",
            "--type",
            "secure-string",
        ],
        vec!["layer", "put", "tier:_x", SERVICE, key, "1"],
        vec!["layer", "put", "tenant-a", SERVICE, key, "1"],
        vec!["tenant", "set", "tenant-b", "--expect-version", "7"],
    ] {
        let output = admin(&stack, &refused);
        assert!(!output.status.success(), "{refused:?} succeeded");
    }
    let history = admin(&stack, &["layer", "history", "tier:gold", SERVICE, key]);
    assert!(
        stdout(&history).lines().count() == 1,
        "{}",
        stdout(&history)
    );

    // A guardrail caps replicas; a dry run of a gold change past it names
    // tenant-b (nothing lands), the real change is refused, and --force
    // lands it, recorded as forced (the CLI sends no Parameter Store event:
    // readers learn it as from any write made outside the API).
    let capped = admin(
        &stack,
        &[
            "layer",
            "guardrail-set",
            "global",
            SERVICE,
            key,
            "--schema",
            r#"{"properties": {"replicas": {"maximum": 8}}}"#,
            "--create",
        ],
    );
    assert!(capped.status.success(), "{}", stderr(&capped));
    let dry = admin(
        &stack,
        &[
            "layer",
            "put",
            "tier:gold",
            SERVICE,
            key,
            r#"{"replicas":9}"#,
            "--dry-run",
        ],
    );
    assert!(dry.status.success(), "{}", stderr(&dry));
    let report: serde_json::Value = serde_json::from_str(&stdout(&dry)).unwrap();
    assert_eq!(
        report["failing_tenants"][0]["tenant"], "tenant-b",
        "{report}"
    );
    until(serde_json::json!({"region": "eu-west-1", "replicas": 5})).await;
    let refused = admin(
        &stack,
        &[
            "layer",
            "put",
            "tier:gold",
            SERVICE,
            key,
            r#"{"replicas":9}"#,
        ],
    );
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    let forced = admin(
        &stack,
        &[
            "layer",
            "put",
            "tier:gold",
            SERVICE,
            key,
            r#"{"replicas":9}"#,
            "--force",
        ],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    let history = admin(&stack, &["layer", "history", "tier:gold", SERVICE, key]);
    assert!(
        stdout(&history)
            .lines()
            .next()
            .unwrap()
            .contains("(forced past broken tenants)"),
        "{}",
        stdout(&history)
    );
}

#[tokio::test]
async fn an_operator_rebuilds_the_override_index_so_dry_runs_see_older_tenant_values() {
    // GIVEN a stack whose change feed is off, as before the override index
    // existed: tenant-a holds its own value of a DynamoDB key and tenant-b of
    // a Parameter Store key, under global defaults, and nothing marked them
    let stack = LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("stack starts");
    stack.stream.disable();
    let dynamodb_key = "tenant_config_reindexed_limits";
    let parameter_key = "param_config_reindexed_limits";
    for key in [dynamodb_key, parameter_key] {
        let put = admin(
            &stack,
            &[
                "layer",
                "put",
                "global",
                SERVICE,
                key,
                r#"{"limit":5}"#,
                "--create",
            ],
        );
        assert!(put.status.success(), "{}", stderr(&put));
    }
    put_item(
        &stack.aws,
        TABLE,
        &demo_item("tenant-a", dynamodb_key).unwrap(),
        r#"{"limit":50}"#,
    )
    .await
    .unwrap();
    put_parameter(
        &stack.aws,
        PARAMETER_ROOT,
        &demo_item("tenant-b", parameter_key).unwrap(),
        r#"{"limit":70}"#,
        ParameterKind::String,
    )
    .await
    .unwrap();
    let keeping_own = |key: &str| {
        let dry = admin(
            &stack,
            &[
                "layer",
                "put",
                "global",
                SERVICE,
                key,
                r#"{"limit":6}"#,
                "--dry-run",
            ],
        );
        assert!(dry.status.success(), "{}", stderr(&dry));
        let report: serde_json::Value = serde_json::from_str(&stdout(&dry)).unwrap();
        report["keeping_own_value_tenants"].clone()
    };
    // (a dry run cannot see them: it would count them as changed)
    assert_eq!(keeping_own(dynamodb_key), serde_json::json!([]));
    assert_eq!(keeping_own(parameter_key), serde_json::json!([]));

    // WHEN the operator rebuilds the index
    let reindex = admin(&stack, &["layer", "reindex-overrides"]);
    assert!(reindex.status.success(), "{}", stderr(&reindex));
    assert!(
        stdout(&reindex).starts_with("marked "),
        "{}",
        stdout(&reindex)
    );

    // THEN a dry run of either global change names the tenant keeping its own
    assert_eq!(keeping_own(dynamodb_key), serde_json::json!(["tenant-a"]));
    assert_eq!(keeping_own(parameter_key), serde_json::json!(["tenant-b"]));
}
