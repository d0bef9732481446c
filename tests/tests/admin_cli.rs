//! The `tenant-config-admin` binary against the local stack: what an operator
//! types, checked through the API a caller uses.

use std::process::{Command, Output};

use tenant_config_local_stack::agent::agent_binary;
use tenant_config_local_stack::stack::{LocalStack, SERVICE, StackOptions};

fn admin(stack: &LocalStack, args: &[&str]) -> Output {
    let binary = agent_binary().with_file_name("tenant-config-admin");
    Command::new(binary)
        .args(args)
        .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TENANT_CONFIG_INVOKE_URL", &stack.watch.base_url)
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
    assert!(seats[0].contains("OPERATION_CREATE") && seats[1].contains("OPERATION_UPDATE"));
    assert!(
        lines.iter().any(|l| l
            .contains("tenant-a/billing/param_config_endpoint  parameter-store  OPERATION_UPDATE")),
        "{listed}"
    );
    assert!(!listed.contains("https://v2.example") && !listed.contains("seats\":12"));
}
