//! `tenant-config-admin verify` against the running local stack, published as
//! the CloudFormation stack `tenant-config-local`: it passes once the
//! post-deploy step is done, and each thing a deploy can get wrong, injected
//! once, fails its own check with a fix while the rest still pass.

use std::process::Output;

use tokio::process::Command;

use tenant_config_local_stack::agent::agent_binary;
use tenant_config_local_stack::published::STACK_NAME;
use tenant_config_local_stack::stack::{LocalStack, REFRESH_KEY_PARAMETER, StackOptions};

/// The CLI with `args`, pointed at moto and at the stack by name only: no
/// table, pool or URL is passed, everything comes from the stack's outputs.
/// Awaited, not blocking: the stand-ins it calls run on this test's runtime.
async fn admin(stack: &LocalStack, args: &[&str]) -> Output {
    let moto_only = stack
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") && k != "AWS_ENDPOINT_URL_SSM");
    Command::new(agent_binary().with_file_name("tenant-config-admin"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(moto_only.map(|(k, v)| (k.as_str(), v.as_str())))
        // The stand-in for API Gateway's control plane (moto has none).
        .envs(
            stack
                .env
                .iter()
                .filter(|(k, _)| k == "AWS_ENDPOINT_URL_API_GATEWAY")
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .arg("--stack")
        .arg(STACK_NAME)
        .args(args)
        .output()
        .await
        .expect("tenant-config-admin runs")
}

/// `token` as the runbook runs it: an operator's sign-in, by stack name.
async fn sign_in(stack: &LocalStack, username: &str, password: &str) -> String {
    let token = admin(stack, &["token", username, "--password", password]).await;
    assert!(token.status.success(), "{token:?}");
    String::from_utf8_lossy(&token.stdout).trim().to_owned()
}

/// Each check's printed line, by name: (status, the whole line and its fix).
fn checks(output: &Output) -> Vec<(String, String, String)> {
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let mut checks: Vec<(String, String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(last) = checks.last_mut()
            && line.starts_with("      fix: ")
        {
            last.2.push('\n');
            last.2.push_str(line);
            continue;
        }
        let mut words = line.split_whitespace();
        if let (Some(status), Some(check)) = (words.next(), words.next()) {
            checks.push((status.to_owned(), check.to_owned(), line.to_owned()));
        }
    }
    checks
}

const ALL_CHECKS: &[&str] = &[
    "stack-status",
    "signing-key",
    "agent-tls",
    "agents-registered",
    "agents-trust-key",
    "stage-settings",
    "read-through-api",
    "change-journaled",
    "dlq-empty",
    "alarms-notify",
];

/// Runs verify and asserts that exactly `failing` fails (none: it passes),
/// every other check being ok; returns the failing check's text.
async fn verify_fails_only(stack: &LocalStack, failing: Option<&str>) -> String {
    // A change normally reaches the journal in well under a second; the
    // bound leaves room for a loaded machine. Waiting for a change that
    // cannot come (the fault below) is bounded much tighter.
    let journal_timeout = if failing == Some("change-journaled") {
        "3"
    } else {
        "20"
    };
    let args = [
        "verify",
        "--journal-timeout-secs",
        journal_timeout,
        "--http-timeout-secs",
        "5",
    ];
    let output = admin(stack, &args).await;
    let checks = checks(&output);
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let names: Vec<&str> = checks.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, ALL_CHECKS, "{printed}");
    assert_eq!(output.status.success(), failing.is_none(), "{printed}");
    let mut failure = String::new();
    for (status, check, text) in &checks {
        if Some(check.as_str()) == failing {
            assert_eq!(status, "FAIL", "{printed}");
            assert!(
                text.contains("fix: "),
                "a failure says what to do: {printed}"
            );
            failure = text.clone();
        } else if check == "agents-trust-key"
            && (failing == Some("signing-key") || failing == Some("agent-tls"))
        {
            // Without a usable key there is nothing to sign a probe with,
            // without the agents' CA nothing to verify them with.
            assert_eq!(status, "skip", "{printed}");
        } else {
            assert_eq!(status, "ok", "{check} should pass: {printed}");
        }
    }
    eprintln!("{printed}");
    failure
}

#[tokio::test]
async fn verify_passes_on_a_complete_deploy_and_names_each_injected_fault_with_its_fix() {
    // GIVEN the local stack with one agent, published as a CloudFormation stack
    let stack = LocalStack::start(
        StackOptions {
            publish: true,
            agent_tls: true,
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let published = stack.published.as_ref().expect("published");

    // WHEN the post-deploy step is skipped THEN callers can bypass the cache
    let failure = verify_fails_only(&stack, Some("stage-settings")).await;
    assert!(failure.contains("stage-settings"), "{failure}");
    // AND after it, as the runbook says, every check passes
    let applied = admin(&stack, &["stage-settings"]).await;
    assert!(applied.status.success(), "{applied:?}");
    verify_fails_only(&stack, None).await;
    // AND verify left no user behind (its probe user is removed each run)
    let users = aws_sdk_cognitoidentityprovider::Client::new(&stack.aws)
        .list_users()
        .user_pool_id(&stack.pool.pool_id)
        .send()
        .await
        .unwrap();
    assert!(
        users
            .users()
            .iter()
            .all(|u| !u.username().unwrap_or_default().starts_with("verify-")),
        "{users:?}"
    );

    // The runbook's users, by stack name only: a reader of tenant-a with a
    // generated password, and an administrator
    let created = admin(
        &stack,
        &["user", "create", "erin@example.com", "--tenant", "tenant-a"],
    )
    .await;
    assert!(created.status.success(), "{created:?}");
    let password = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert_eq!(password.len(), 24, "the generated password is printed once");
    let reader = sign_in(&stack, "erin@example.com", &password).await;
    let limits = stack
        .get("/v1/config/billing/tenant_config_limits", Some(&reader))
        .await
        .unwrap();
    assert_eq!(limits.status, 200, "{}", limits.text);
    assert_eq!(limits.body["value"]["max_users"], 50, "tenant-a's value");
    let write = |token: String| {
        let stack = &stack;
        async move {
            let path = "/v1/config/billing/tenant_config_theme";
            let read = stack.get(path, Some(&token)).await.unwrap();
            let version = read.header("etag").unwrap_or_default().to_owned();
            let answer = stack
                .send(
                    reqwest::Method::PUT,
                    path,
                    Some(&token),
                    &[("if-match", &version)],
                    Some(&serde_json::json!({"value": "light"})),
                )
                .await
                .unwrap();
            (answer.status, answer.text)
        }
    };
    let (status, text) = write(reader.clone()).await;
    assert_eq!(status, 403, "a reader may not write: {text}");
    let created = admin(
        &stack,
        &[
            "user",
            "create",
            "frank@example.com",
            "--tenant",
            "tenant-a",
            "--admin",
            "--password",
            "Adm1n-Passw0rd!x",
        ],
    )
    .await;
    assert!(created.status.success(), "{created:?}");
    assert!(
        created.stdout.is_empty(),
        "a given password is never printed"
    );
    let administrator = sign_in(&stack, "frank@example.com", "Adm1n-Passw0rd!x").await;
    let (status, text) = write(administrator).await;
    assert_eq!(status, 200, "an administrator writes: {text}");
    // A deleted user can no longer sign in
    let deleted = admin(&stack, &["user", "delete", "erin@example.com"]).await;
    assert!(deleted.status.success(), "{deleted:?}");
    let refused = admin(
        &stack,
        &["token", "erin@example.com", "--password", &password],
    )
    .await;
    assert!(!refused.status.success(), "{refused:?}");

    let ssm = aws_sdk_ssm::Client::new(&stack.aws);
    let original_key = ssm
        .get_parameter()
        .name(REFRESH_KEY_PARAMETER)
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap()
        .value
        .unwrap();
    let restore_key = || async {
        ssm.put_parameter()
            .name(REFRESH_KEY_PARAMETER)
            .value(&original_key)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    };

    // Fault: the key created as the old template description said
    ssm.put_parameter()
        .name(REFRESH_KEY_PARAMETER)
        .value("5f0c6e1d2b3a49587766554433221100ffeeddccbbaa99887766554433221100")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let failure = verify_fails_only(&stack, Some("signing-key")).await;
    assert!(failure.contains("refresh-key --id k1"), "{failure}");
    // AND the fix it prints works: the unusable value is replaced by a key
    // (which the agents do not trust yet: the next check says so)
    let fixed = admin(&stack, &["refresh-key", "--id", "k1"]).await;
    assert!(fixed.status.success(), "{fixed:?}");
    let failure = verify_fails_only(&stack, Some("agents-trust-key")).await;
    assert!(failure.contains("k1:"), "{failure}");
    restore_key().await;

    // Fault: agent-tls never run (the agents' CA parameter is missing)
    let tls = tenant_config_admin::agent_tls::AgentTlsParameters::under(
        tenant_config_local_stack::stack::AGENT_TLS_PATH,
    );
    let read_ca = || async {
        ssm.get_parameter()
            .name(&tls.ca)
            .send()
            .await
            .unwrap()
            .parameter
            .unwrap()
            .value
            .unwrap()
    };
    let original_ca = read_ca().await;
    ssm.delete_parameter().name(&tls.ca).send().await.unwrap();
    let failure = verify_fails_only(&stack, Some("agent-tls")).await;
    assert!(failure.contains("agent-tls"), "{failure}");
    ssm.put_parameter()
        .name(&tls.ca)
        .value(&original_ca)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    // A rotation of the agents' TLS material: refused without --overwrite;
    // with it, agents still presenting the old certificate stay trusted (the
    // old CA stays in the bundle), so nothing fails while they roll
    let refused = admin(&stack, &["agent-tls"]).await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--overwrite"));
    // (a certificate for another name than config-refresh expects is refused too)
    let wrong_name = admin(
        &stack,
        &["agent-tls", "--overwrite", "--domain", "agents.example"],
    )
    .await;
    assert!(!wrong_name.status.success(), "{wrong_name:?}");
    assert!(String::from_utf8_lossy(&wrong_name.stderr).contains("AgentTlsDomain"));
    let rotated = admin(
        &stack,
        &["agent-tls", "--overwrite", "--trust-wait-secs", "0"],
    )
    .await;
    assert!(rotated.status.success(), "{rotated:?}");
    let bundle = read_ca().await;
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
    assert!(
        bundle.ends_with(&original_ca),
        "the old CA is kept: {bundle}"
    );
    verify_fails_only(&stack, None).await;

    // Fault: a re-generated key the agents do not trust
    // (the CLI refuses to replace a stored key unless told to)
    let refused = admin(&stack, &["refresh-key", "--id", "regenerated"]).await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--overwrite"));
    let regenerated = admin(
        &stack,
        &["refresh-key", "--id", "regenerated", "--overwrite"],
    )
    .await;
    assert!(regenerated.status.success(), "{regenerated:?}");
    let new_entry = String::from_utf8_lossy(&regenerated.stdout)
        .trim()
        .to_owned();
    let failure = verify_fails_only(&stack, Some("agents-trust-key")).await;
    assert!(failure.contains("refused"), "{failure}");
    assert!(
        failure.contains(&new_entry),
        "the fix names the entry to trust: {failure}"
    );
    restore_key().await;

    // Fault: an ECS service whose serviceRegistries names no port
    let cloud_map = aws_sdk_servicediscovery::Client::new(&stack.aws);
    cloud_map
        .register_instance()
        .service_id(&stack.cloud_map.service_id)
        .instance_id("task-without-port")
        .attributes("AWS_INSTANCE_IPV4", "127.0.0.9")
        .send()
        .await
        .unwrap();
    let failure = verify_fails_only(&stack, Some("agents-registered")).await;
    assert!(failure.contains("task-without-port"), "{failure}");
    assert!(failure.contains("serviceRegistries"), "{failure}");
    cloud_map
        .deregister_instance()
        .service_id(&stack.cloud_map.service_id)
        .instance_id("task-without-port")
        .send()
        .await
        .unwrap();
    let remaining = cloud_map
        .list_instances()
        .service_id(&stack.cloud_map.service_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        remaining.instances().len(),
        1,
        "only the real agent is left"
    );

    // Fault: an instance registered on a port no Refresh listener answers
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = nobody.local_addr().unwrap().port().to_string();
    drop(nobody);
    cloud_map
        .register_instance()
        .service_id(&stack.cloud_map.service_id)
        .instance_id("task-wrong-port")
        .attributes("AWS_INSTANCE_IPV4", "127.0.0.1")
        .attributes("AWS_INSTANCE_PORT", &closed_port)
        .send()
        .await
        .unwrap();
    let failure = verify_fails_only(&stack, Some("agents-trust-key")).await;
    assert!(failure.contains("task-wrong-port"), "{failure}");
    assert!(failure.contains("answer no Refresh"), "{failure}");
    cloud_map
        .deregister_instance()
        .service_id(&stack.cloud_map.service_id)
        .instance_id("task-wrong-port")
        .send()
        .await
        .unwrap();

    // Fault: a change that never reached config-refresh waits in the DLQ
    let sqs = aws_sdk_sqs::Client::new(&stack.aws);
    sqs.send_message()
        .queue_url(&published.dlq_url)
        .message_body(r#"{"detail-type":"Parameter Store Change"}"#)
        .send()
        .await
        .unwrap();
    let failure = verify_fails_only(&stack, Some("dlq-empty")).await;
    assert!(failure.contains("DlqUrl: 1 message"), "{failure}");
    sqs.purge_queue()
        .queue_url(&published.dlq_url)
        .send()
        .await
        .unwrap();

    // Fault: the alarm topic has nobody subscribed
    let sns = aws_sdk_sns::Client::new(&stack.aws);
    let subscriptions = sns
        .list_subscriptions_by_topic()
        .topic_arn(&published.alarm_topic_arn)
        .send()
        .await
        .unwrap();
    for subscription in subscriptions.subscriptions() {
        sns.unsubscribe()
            .subscription_arn(subscription.subscription_arn().unwrap())
            .send()
            .await
            .unwrap();
    }
    let failure = verify_fails_only(&stack, Some("alarms-notify")).await;
    assert!(failure.contains("AlarmEmail"), "{failure}");
    sns.subscribe()
        .topic_arn(&published.alarm_topic_arn)
        .protocol("email")
        .endpoint("on-call@tenant-config.invalid")
        .send()
        .await
        .unwrap();

    // Fault: the stream's event source mapping is disabled: nothing is journaled
    stack.stream.disable();
    let failure = verify_fails_only(&stack, Some("change-journaled")).await;
    assert!(failure.contains("event source mapping"), "{failure}");

    // Fault: the API does not answer (the functions hang)
    stack.watch.set_paused(true);
    let output = admin(
        &stack,
        &[
            "verify",
            "--journal-timeout-secs",
            "1",
            "--http-timeout-secs",
            "2",
        ],
    )
    .await;
    stack.watch.set_paused(false);
    let checks = checks(&output);
    let read = checks.iter().find(|c| c.1 == "read-through-api").unwrap();
    assert_eq!(read.0, "FAIL", "{output:?}");
    assert!(read.2.contains("fix: "), "{output:?}");
    assert!(!output.status.success());
}

#[test]
fn the_names_verify_and_the_local_stack_read_are_outputs_and_parameters_of_the_template() {
    // GIVEN the template as deployed
    let text = std::fs::read_to_string(
        tenant_config_local_stack::process::workspace_root().join("template.yaml"),
    )
    .unwrap();
    let template: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let outputs = template["Outputs"].as_mapping().unwrap();
    let parameters = template["Parameters"].as_mapping().unwrap();
    // THEN every output the CLI reads or the local stack publishes exists
    for key in tenant_config_local_stack::published::published_output_keys() {
        assert!(
            outputs.contains_key(key),
            "template.yaml has no output {key}"
        );
    }
    // AND so does every DLQ output the local stack plays
    assert!(outputs.contains_key("DlqUrl"));
    // AND verify looks up exactly the template's alarms, by name
    let named: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("AlarmName: !Sub \"${AWS::StackName}-")
        })
        .map(|rest| rest.trim_end_matches('"'))
        .collect();
    let looked_up: std::collections::BTreeSet<&str> = tenant_config_admin::verify::TEMPLATE_ALARMS
        .iter()
        .copied()
        .collect();
    assert_eq!(named, looked_up);
    for key in tenant_config_local_stack::published::PUBLISHED_PARAMETERS
        .iter()
        .chain([&tenant_config_admin::stack::parameter::AGENT_TLS_DOMAIN])
    {
        assert!(
            parameters.contains_key(*key),
            "template.yaml has no parameter {key}"
        );
    }
}
