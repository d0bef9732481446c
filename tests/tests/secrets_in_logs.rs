//! With `RUST_LOG=trace` everywhere, the secure route and the refresh path
//! write no SecureString value, no refresh key and no full ID token to any
//! output of config-api, config-refresh or the agent. Its own test binary, so
//! the log files under `target/local-stack-logs/` that end in this process's
//! id are exactly this stack's.

use tenant_config_local_stack::stack::{
    ALICE, LocalStack, PARAMETER_ROOT, REFRESH_KEY_PARAMETER, SERVICE, StackOptions,
};

const SECRET_KEY: &str = "param_config_db_password";
const SECRET_VALUE: &str = "tenant-a-db-secret";

#[tokio::test]
async fn trace_logs_carry_no_secret_value_refresh_key_or_token() {
    // GIVEN the whole stack logging at trace level, with one agent
    let stack = LocalStack::start(
        StackOptions {
            settings: &[("RUST_LOG", "trace")],
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    let alice = stack.token(ALICE).await.unwrap();
    let refresh_key = aws_sdk_ssm::Client::new(&stack.aws)
        .get_parameter()
        .name(REFRESH_KEY_PARAMETER)
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter
        .and_then(|p| p.value)
        .unwrap();
    // `ed25519:{key id}:{seed}`: the seed is the secret.
    let refresh_key = refresh_key.rsplit(':').next().unwrap().to_owned();
    assert_eq!(refresh_key.len(), 64);

    // WHEN the secret is read on the secure route, refused on the cached
    // one, read through the agent, and changed (pushed to the agent)
    let secure = stack
        .get(&format!("/v1/secure/{SERVICE}/{SECRET_KEY}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(secure.status, 200, "{}", secure.text);
    assert_eq!(
        secure.body["value"], SECRET_VALUE,
        "the secret was really served"
    );
    let cached = stack
        .get(&format!("/v1/config/{SERVICE}/{SECRET_KEY}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(cached.status, 409);
    let agent = &stack.agents[0];
    assert!(agent.get_config(&alice, SERVICE, SECRET_KEY).await.is_err());
    let at_agent = agent.get_secret(&alice, SERVICE, SECRET_KEY).await.unwrap();
    assert_eq!(
        at_agent.value_json,
        format!("\"{SECRET_VALUE}\""),
        "the agent served the secret to a caller on its host"
    );
    let name = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/{SECRET_KEY}");
    let pushed = stack.send_change_event("Update", &name).await.unwrap();
    assert!(pushed.is_ok(), "{pushed:?}");

    // THEN no output of ours holds any of them
    let suffix = format!("-{}.log", std::process::id());
    let logs: Vec<(String, String)> = std::fs::read_dir("../target/local-stack-logs")
        .or_else(|_| std::fs::read_dir("target/local-stack-logs"))
        .expect("the stack's log directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            name.ends_with(&suffix) && !name.starts_with("moto")
        })
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // cargo lambda watch (the local Lambda emulator, not ours) traces
            // whole invocations in plain text into the same file; our
            // processes write JSON lines only.
            let ours: Vec<&str> = text.lines().filter(|line| line.starts_with('{')).collect();
            (path.display().to_string(), ours.join("\n"))
        })
        .collect();
    assert!(
        logs.len() >= 2,
        "config functions' and agent's logs: {logs:?}"
    );
    let traced: usize = logs.iter().map(|(_, text)| text.lines().count()).sum();
    assert!(traced > 200, "trace level really was on: {traced} lines");
    for (path, text) in &logs {
        for (what, needle) in [
            ("SecureString value", SECRET_VALUE),
            ("refresh key", refresh_key.as_str()),
            ("ID token", alice.as_str()),
        ] {
            assert!(!text.contains(needle), "{path} holds the {what}");
        }
    }
    // AND both secret reads are audited, by the process that served them
    for (via, log) in [("config-api", "config-api"), ("agent", "agent")] {
        let audited: Vec<&str> = logs
            .iter()
            .filter(|(path, _)| path.contains(log))
            .flat_map(|(_, text)| text.lines())
            .filter(|line| line.contains(r#""audit":"secret_read""#))
            .collect();
        // (one here; more only if another suite shares this process)
        assert!(!audited.is_empty(), "{via}: no audit line");
        for line in audited {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["via"], via);
            assert_eq!(line["tenant"], "tenant-a");
            assert_eq!(line["key"], SECRET_KEY);
            assert_eq!(line["status"], 200);
        }
    }
    eprintln!("{traced} trace lines checked in {} files", logs.len());
}
