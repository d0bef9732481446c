//! `sam local` against the local stack: the built functions in containers
//! (arm64 under qemu, on the stand-in base image) answer what the same
//! functions answer under cargo lambda watch. They need docker, the stand-in
//! image and `sam build`: `bash tests/sam-local.sh` sets those up and runs
//! these tests (CI runs it after the test command, which skips them).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tenant_config_local_stack::process::{ProcessGroup, free_port, tool, workspace_root};
use tenant_config_local_stack::sam::SamLocal;
use tenant_config_local_stack::stack::{
    ALICE, Answer, JOURNAL_TABLE, LocalStack, SERVICE, StackOptions,
};
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::journal_table::JournalTable;

use crate::jwt_parts::claiming_tenant;

const NEEDS: &str = "needs docker, the stand-in image and sam build: bash tests/sam-local.sh";
/// What SAM says when its request reached no emulator in the container.
const NO_RESPONSE: &str = "No response from invoke container";
/// One `sam local invoke`: a container started under emulation, the
/// function's init, one event. Seconds, not minutes; a hang fails the test.
const INVOKE_LIMIT: Duration = Duration::from_secs(180);

async fn stack() -> (LocalStack, SamLocal) {
    let stack = LocalStack::start(
        StackOptions {
            containers: true,
            ..StackOptions::with_agents(2)
        },
        &|_, _| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let sam = stack
        .sam
        .clone()
        .expect("a stack for containers writes sam local's inputs");
    assert!(
        sam.template.is_some(),
        "no .aws-sam/build/template.yaml: {NEEDS}"
    );
    assert!(sam.image.is_some(), "no stand-in image recorded: {NEEDS}");
    (stack, sam)
}

/// What `sam` printed: stdout (the function's answer), stderr (SAM's and the
/// function's logs).
struct Printed {
    stdout: String,
    stderr: String,
}

/// Runs `sam` with `args` from the repository.
async fn sam(args: &[String]) -> Result<Printed, String> {
    let mut command = tokio::process::Command::new(tool("sam"));
    command
        .args(args)
        .current_dir(workspace_root())
        .env("SAM_CLI_TELEMETRY", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(INVOKE_LIMIT, command.output())
        .await
        .map_err(|_| format!("sam {} took over {INVOKE_LIMIT:?}", args.join(" ")))?
        .map_err(|e| format!("sam: {e}"))?;
    let printed = Printed {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !out.status.success() {
        return Err(format!(
            "sam {} failed: {}\n{}",
            args.join(" "),
            printed.stderr,
            printed.stdout
        ));
    }
    Ok(printed)
}

/// The function's answer `sam local invoke` printed (its last line of stdout).
async fn sam_invoke(sam_local: &SamLocal, function: &str, event: &Path) -> Value {
    let args = sam_local.invoke_args(function, event);
    let started = Instant::now();
    let mut printed = sam(&args).await.unwrap_or_else(|e| panic!("{e}"));
    // SAM's request can reach a published port before the emulator in the
    // container listens when docker runs its userland proxy (the daemon
    // tests/sam-local.sh starts does not): SAM then gives up on that
    // invocation, which never reached the function. Asked once more.
    if printed.stderr.contains(NO_RESPONSE) {
        eprintln!("sam local invoke {function}: {NO_RESPONSE}; asked again");
        printed = sam(&args).await.unwrap_or_else(|e| panic!("{e}"));
    }
    // How long one emulated invocation takes, for docs/development.md.
    eprintln!(
        "sam local invoke {function} {}: {:.1} s",
        event.file_name().unwrap_or_default().to_string_lossy(),
        started.elapsed().as_secs_f64()
    );
    let answer = printed
        .stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(answer).unwrap_or_else(|e| {
        panic!(
            "{function} answered no JSON ({e}): {}\n{}",
            printed.stdout, printed.stderr
        )
    })
}

/// What a user sees of an API Gateway proxy answer: status, body, the
/// headers that say how to read and cache it.
fn seen(answer: &Value) -> (u64, Value, Vec<(String, Value)>) {
    let status = answer["statusCode"].as_u64().unwrap_or_default();
    let body = answer["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    let headers = ["content-type", "cache-control", "etag"]
        .iter()
        .map(|name| {
            let value = answer["headers"]
                .as_object()
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null);
            ((*name).to_owned(), value)
        })
        .collect();
    (status, body, headers)
}

#[tokio::test]
#[ignore = "needs docker, the stand-in image and sam build: bash tests/sam-local.sh"]
async fn sam_local_invoke_answers_every_api_event_as_cargo_lambda_watch_does() {
    let (stack, sam_local) = stack().await;
    let events = [
        "apigw-rest-get-config.json",
        "apigw-rest-get-configs.json",
        "apigw-rest-get-secure.json",
        "apigw-rest-get-service.json",
    ];
    for name in events {
        // GIVEN a sample event carrying alice's real ID token
        let path = sam_local.events.join(name);
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // WHEN the built function answers it in a container, and the same
        // function under cargo lambda watch answers it too
        let in_container = sam_invoke(&sam_local, "ConfigApiFunction", &path).await;
        let under_watch = stack
            .watch
            .invoke("config-api", &event)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{name} under cargo lambda watch: {e}"));
        // THEN both answer the same, and it is an answer, not a refusal
        let (status, body, headers) = seen(&in_container);
        assert_eq!(status, 200, "{name}: {in_container}");
        assert_eq!(
            (status, body, headers),
            seen(&under_watch),
            "{name}: in a container {in_container} / under watch {under_watch}"
        );
    }

    // GIVEN a key nobody has written
    let banner = format!("/v1/config/{SERVICE}/tenant_config_banner");
    let alice = stack.token(ALICE).await.unwrap();
    assert_eq!(stack.get(&banner, Some(&alice)).await.unwrap().status, 404);
    // WHEN dana creates it through the function in a container
    let put = sam_invoke(
        &sam_local,
        "ConfigApiFunction",
        &sam_local.events.join("apigw-rest-put-config.json"),
    )
    .await;
    // THEN it is created at version 1, and the host's config-api, which had
    // its 404 cached, serves it once the change reaches it (stream, journal)
    let (status, body, _) = seen(&put);
    assert_eq!((status, &body["version"]), (201, &json!(1)), "{put}");
    let served = served_within(&stack, &banner, &alice, |a| a.status == 200).await;
    assert_eq!(
        served.body["value"]["text"],
        "Maintenance window on Sunday 02:00 UTC"
    );
    // WHEN dana deletes it from that version, in a container again
    let delete = sam_invoke(
        &sam_local,
        "ConfigApiFunction",
        &sam_local.events.join("apigw-rest-delete-config.json"),
    )
    .await;
    // THEN version 1 is deleted, and the host's config-api, which had it
    // cached, answers 404 once the change reaches it (stream, journal)
    let (status, body, _) = seen(&delete);
    assert_eq!(
        (status, &body["deleted_version"]),
        (200, &json!(1)),
        "{delete}"
    );
    served_within(&stack, &banner, &alice, |a| a.status == 404).await;
}

/// The host's config-api answer for `path` once `wanted` holds, within the
/// stack's convergence bound (seconds); the last answer in the panic if not.
async fn served_within(
    stack: &LocalStack,
    path: &str,
    token: &str,
    wanted: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = stack.get(path, Some(token)).await.unwrap();
        if wanted(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {} {}",
            answer.status,
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs docker, the stand-in image and sam build: bash tests/sam-local.sh"]
async fn sam_local_invoke_of_config_refresh_refreshes_the_running_agents() {
    let (stack, sam_local) = stack().await;
    // GIVEN both agents serve a parameter's value
    let key = "param_config_endpoint";
    for agent in &stack.agents {
        let token = stack.token(ALICE).await.unwrap();
        agent.get_config(&token, SERVICE, key).await.unwrap();
    }
    // WHEN its value changes in Parameter Store (no event: moto sends
    // none) and sam local invokes config-refresh with the sample Update event
    stack
        .put_parameter("tenant-a", key, "https://billing.example.com/v3")
        .await
        .unwrap();
    let path = sam_local.events.join("parameter-store-change-update.json");
    let outcome = sam_invoke(&sam_local, "ConfigRefreshFunction", &path).await;
    // THEN the function in the container pushed the change to every agent
    // ("delivered": every instance found acknowledged it)
    assert_eq!(outcome["status"], "delivered", "{outcome}");
    assert_eq!(
        outcome["instances"].as_u64(),
        Some(stack.agents.len() as u64),
        "{outcome}"
    );
    // AND each agent serves the new value
    for agent in &stack.agents {
        let token = stack.token(ALICE).await.unwrap();
        let value = agent.get_config(&token, SERVICE, key).await.unwrap();
        assert_eq!(
            value,
            json!("https://billing.example.com/v3").to_string(),
            "{}",
            agent.name
        );
    }

    // GIVEN the sample DynamoDB stream batch (two records)
    let path = sam_local.events.join("dynamodb-stream-batch.json");
    // WHEN sam local invokes config-refresh with it
    let outcome = sam_invoke(&sam_local, "ConfigRefreshFunction", &path).await;
    // THEN no record is handed back for a retry, and each configuration
    // record's change is in the journal under its stream event id (the
    // history item the batch also carries changes nobody's value)
    assert_eq!(outcome, json!({"batchItemFailures": []}), "{outcome}");
    let batch: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let journal = JournalTable::new(aws_sdk_dynamodb::Client::new(&stack.aws), JOURNAL_TABLE);
    let journaled: Vec<String> = journal
        .since(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.change.change_id)
        .collect();
    for record in batch["Records"].as_array().unwrap() {
        let id = record["eventID"].as_str().unwrap();
        let sort_key = record["dynamodb"]["Keys"]["sk"]["S"].as_str().unwrap();
        assert_eq!(
            journaled.iter().any(|j| j == id),
            sort_key.starts_with("CONFIG#"),
            "{id} ({sort_key}) in {journaled:?}"
        );
    }

    // GIVEN the sample batch of two stage cache flush requests
    let flushes_before = stack.stage_cache.flushes().len();
    let path = sam_local.events.join("sqs-stage-cache-flush-batch.json");
    // WHEN sam local invokes config-refresh with it
    let outcome = sam_invoke(&sam_local, "ConfigRefreshFunction", &path).await;
    // THEN the stage is flushed once for both, through the API Gateway
    // stand-in the container reaches on the bridge (a failed flush is an
    // error answer; the host's functions may flush meanwhile too)
    assert_eq!(
        outcome,
        json!({"status": "flushed", "requests": 2}),
        "{outcome}"
    );
    assert!(stack.stage_cache.flushes().len() > flushes_before);
}

#[tokio::test]
#[ignore = "needs docker, the stand-in image and sam build: bash tests/sam-local.sh"]
async fn sam_local_start_api_serves_a_real_token_and_refuses_a_forged_one() {
    let (stack, sam_local) = stack().await;
    let port = free_port().unwrap();
    let mut command = std::process::Command::new(tool("sam"));
    command
        .args(sam_local.start_api_args(port))
        .current_dir(workspace_root())
        .env("SAM_CLI_TELEMETRY", "0");
    let api = ProcessGroup::spawn("sam-start-api", command).unwrap();
    let path = format!("/v1/config/{SERVICE}/tenant_config_limits");
    let url = format!("http://127.0.0.1:{port}{path}");
    let token = stack.token(ALICE).await.unwrap();
    let client = reqwest::Client::builder()
        .timeout(INVOKE_LIMIT)
        .build()
        .unwrap();
    // GIVEN sam local start-api serving the template's API (SAM does not
    // play the Cognito authorizer: the function's own check is what stands)
    let deadline = Instant::now() + INVOKE_LIMIT;
    let answer = loop {
        match client.get(&url).bearer_auth(&token).send().await {
            Ok(answer) => break answer,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("start-api never answered: {e}\n{}", api.log_tail()),
        }
    };
    // WHEN alice reads a key with her real token
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    // THEN she gets what config-api under cargo lambda watch gives her
    let under_watch = stack.get(&path, Some(&token)).await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", api.log_tail());
    assert_eq!(body, under_watch.body);
    // AND a token edited to claim tenant B is refused by the function itself
    let refused = client
        .get(&url)
        .bearer_auth(claiming_tenant(&token, "tenant-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let refusal: Value = refused.json().await.unwrap();
    assert_eq!(refusal["error"], "unauthorized", "{refusal}");
    drop(api);
}
