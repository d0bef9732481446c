//! OpenFeature end to end: the official Rust SDK (`open-feature`) with its
//! OFREP provider (`open-feature-ofrep`) reads every flag type from a config
//! agent and from config-api under cargo lambda watch, on the local stack;
//! the bulk evaluation's ETag and 304, the capabilities and the refusals are
//! checked on the wire.
//!
//! The Rust provider evaluates each flag remotely on every call (it has no
//! bulk evaluation or polling of its own), so a change is seen by the next
//! evaluation once the reader has converged. The bulk route's ETag and 304
//! are what polling providers revalidate with: the official web SDK and its
//! OFREP provider (tests/ofrep-web/, run under Node) poll both readers here.

use std::time::{Duration, Instant};

use open_feature::provider::FeatureProvider;
use open_feature::{
    Client, EvaluationContext, EvaluationErrorCode, OpenFeature, StructValue, Value as FeatureValue,
};
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tenant_config_local_stack::layer_seeds::{FEATURES, LOG_LEVEL};
use tenant_config_local_stack::stack::{ALICE, BOB, DANA, LocalStack, SERVICE, StackOptions};

use crate::own_values::write;

const CHECKOUT: &str = "tenant_config_new_checkout";
const SEATS: &str = "tenant_config_max_seats";
const SAMPLE_RATE: &str = "tenant_config_sample_rate";
/// How long a change may take to reach every reader (the convergence bound).
const CONVERGED: Duration = Duration::from_secs(3);

/// The base URLs an OpenFeature client is given: config-api's and the
/// agent's, for the service.
fn bases(stack: &LocalStack) -> [(&'static str, String); 2] {
    [
        (
            "config-api",
            stack.api_url(&format!("/v1/services/{SERVICE}")),
        ),
        (
            "agent",
            format!("{}/v1/services/{SERVICE}", stack.agents[0].endpoint()),
        ),
    ]
}

async fn provider(base: &str, token: Option<&str>) -> OfrepProvider {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    OfrepProvider::new(OfrepOptions {
        base_url: base.to_owned(),
        headers,
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .expect("the OFREP provider takes the base URL")
}

/// An OpenFeature client named `name` on its own OFREP provider.
async fn client(name: &str, base: &str, token: Option<&str>) -> Client {
    let provider = provider(base, token).await;
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider(name, provider).await;
    api.create_named_client(name)
}

fn field<'a>(value: &'a StructValue, name: &str) -> Option<&'a FeatureValue> {
    value.fields.get(name)
}

#[tokio::test]
async fn openfeature_clients_read_every_type_from_the_agent_and_config_api() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let (alice, bob, dana) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(BOB).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    // GIVEN tenant A's own flags of every JSON type, beside the seeded ones
    // (a string, an object merged from three layers, a global default)
    write(&stack, &dana, CHECKOUT, json!(true)).await;
    write(&stack, &dana, SEATS, json!(25)).await;
    write(&stack, &dana, SAMPLE_RATE, json!(0.25)).await;

    for (reader, base) in bases(&stack) {
        let alice_client = client(&format!("{reader}-alice"), &base, Some(&alice)).await;
        // A context naming another tenant as its targeting key changes nothing.
        let context = EvaluationContext::default()
            .with_targeting_key("tenant-b")
            .with_custom_field("plan", "free");

        // WHEN alice's service reads each type THEN it gets tenant A's values
        let checkout = until_converged(reader, || async {
            alice_client
                .get_bool_details(CHECKOUT, Some(&context), None)
                .await
                .ok()
        })
        .await;
        assert!(checkout.value, "{reader}");
        assert_eq!(checkout.variant.as_deref(), Some("tenant:v1"), "{reader}");
        let seats = alice_client
            .get_int_value(SEATS, Some(&context), None)
            .await;
        assert_eq!(seats.unwrap(), 25, "{reader}");
        let rate = alice_client
            .get_float_value(SAMPLE_RATE, Some(&context), None)
            .await;
        assert_eq!(rate.unwrap(), 0.25, "{reader}");
        let theme = alice_client
            .get_string_value("tenant_config_theme", Some(&context), None)
            .await;
        assert_eq!(theme.unwrap(), "dark", "{reader}");
        let endpoint = alice_client
            .get_string_value("param_config_endpoint", None, None)
            .await;
        assert_eq!(endpoint.unwrap(), "https://billing.tenant-a.example");
        // An object merged from global, tenant A's tier and its own layer.
        let features = alice_client
            .get_struct_value::<StructValue>(FEATURES, None, None)
            .await
            .unwrap_or_else(|e| panic!("{reader}: {e:?}"));
        assert_eq!(field(&features, "beta_ui"), Some(&FeatureValue::Bool(true)));
        assert_eq!(
            field(&features, "max_projects"),
            Some(&FeatureValue::Int(100))
        );
        assert_eq!(
            field(&features, "support"),
            Some(&FeatureValue::String("dedicated".into()))
        );
        // A global default is named by its layer, the same for every tenant.
        let log_level = alice_client
            .get_string_details(LOG_LEVEL, None, None)
            .await
            .unwrap();
        assert_eq!(log_level.value, "info");
        assert!(
            log_level
                .variant
                .as_deref()
                .is_some_and(|v| v.starts_with("global:v")),
            "{reader}: {:?}",
            log_level.variant
        );

        // WHEN a flag is missing, a secret, or read as another type
        let missing = alice_client
            .get_bool_value("tenant_config_nothing_here", None, None)
            .await
            .unwrap_err();
        assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound, "{reader}");
        let secret = alice_client
            .get_string_value("param_config_db_password", None, None)
            .await
            .unwrap_err();
        // THEN a secret is no flag, and its value is nowhere in the answer
        assert_eq!(secret.code, EvaluationErrorCode::FlagNotFound, "{reader}");
        assert!(!format!("{secret:?}").contains("tenant-a-db-secret"));
        // The Rust provider reports a value of another type as a parse error.
        let mismatch = alice_client
            .get_bool_value("tenant_config_theme", None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                mismatch.code,
                EvaluationErrorCode::ParseError | EvaluationErrorCode::TypeMismatch
            ),
            "{reader}: {mismatch:?}"
        );

        // WHEN tenant B's service asks for tenant A's flags THEN it reads its own
        let bob_client = client(&format!("{reader}-bob"), &base, Some(&bob)).await;
        let theirs = bob_client
            .get_string_value("tenant_config_theme", None, None)
            .await
            .unwrap_err();
        assert_eq!(theirs.code, EvaluationErrorCode::FlagNotFound, "{reader}");
        let own = bob_client
            .get_string_value("param_config_endpoint", None, None)
            .await;
        assert_eq!(own.unwrap(), "https://billing.tenant-b.example");

        // WHEN a client has no token THEN nothing is evaluated
        let anonymous = provider(&base, None).await;
        let refused = anonymous
            .resolve_bool_value(CHECKOUT, &EvaluationContext::default())
            .await
            .unwrap_err();
        assert!(
            matches!(refused.code, EvaluationErrorCode::General(_)),
            "{reader}: {refused:?}"
        );
    }

    // WHEN tenant A's administrator changes a flag
    write(&stack, &dana, SEATS, json!(30)).await;
    // THEN every client reads the new value within the convergence bound
    for (reader, base) in bases(&stack) {
        let alice_client = client(&format!("{reader}-after"), &base, Some(&alice)).await;
        let started = Instant::now();
        until_converged(reader, || async {
            let seats = alice_client.get_int_details(SEATS, None, None).await.ok()?;
            (seats.value == 30).then_some(seats)
        })
        .await;
        eprintln!(
            "{reader}: the change was read after {:?}",
            started.elapsed()
        );
    }
}

/// Calls `read` until it answers, within the convergence bound.
async fn until_converged<T, F, Fut>(reader: &str, read: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(answer) = read().await {
            return answer;
        }
        assert!(
            started.elapsed() < CONVERGED,
            "{reader}: no answer within {CONVERGED:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One OFREP request on the wire.
async fn ofrep(
    method: Method,
    url: &str,
    token: Option<&str>,
    if_none_match: Option<&str>,
    body: Option<&str>,
) -> (u16, HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.expect("the reader answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_bulk_evaluation_is_revalidated_with_its_etag_until_a_flag_changes() {
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let (alice, dana) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    write(&stack, &dana, CHECKOUT, json!(false)).await;
    let mut tags = Vec::new();
    for (reader, base) in bases(&stack) {
        let flags = format!("{base}/ofrep/v1/evaluate/flags");
        let bulk = || {
            ofrep(
                Method::POST,
                &flags,
                Some(&alice),
                None,
                Some("{\"context\":{}}"),
            )
        };
        // WHEN alice's service evaluates every flag of the service
        let (status, headers, body) = until_converged(reader, || async {
            let answer = bulk().await;
            let flags: Value = serde_json::from_str(&answer.2).ok()?;
            let has_checkout = flags["flags"]
                .as_array()?
                .iter()
                .any(|flag| flag["key"] == CHECKOUT);
            has_checkout.then_some(answer)
        })
        .await;
        assert_eq!(status, 200, "{reader}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        let keys: Vec<&str> = answer["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|flag| flag["key"].as_str().unwrap())
            .collect();
        // THEN every plain flag of tenant A and its layers, no secret, no
        // other tenant's value
        for key in [CHECKOUT, "tenant_config_theme", FEATURES, LOG_LEVEL] {
            assert!(keys.contains(&key), "{reader}: {key} in {keys:?}");
        }
        assert!(!keys.contains(&"param_config_db_password"), "{reader}");
        assert!(!body.contains("tenant-a-db-secret") && !body.contains("tenant-b"));
        let features = answer["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|flag| flag["key"] == FEATURES)
            .unwrap();
        assert_eq!(features["reason"], "TARGETING_MATCH", "{reader}");
        assert_eq!(answer["metadata"]["service"], SERVICE);
        let etag = headers["etag"].to_str().unwrap().to_owned();
        // WHEN it asks again with the tag THEN 304, nothing sent again
        let (status, headers, body) = ofrep(
            Method::POST,
            &flags,
            Some(&alice),
            Some(&etag),
            Some("{\"context\":{}}"),
        )
        .await;
        assert_eq!(status, 304, "{reader}: {body}");
        assert!(body.is_empty());
        assert_eq!(headers["etag"].to_str().unwrap(), etag);
        tags.push(etag);
    }
    // The same flags give the same tag on every reader.
    assert_eq!(tags[0], tags[1], "config-api and the agent tag alike");

    // WHEN a flag changes THEN the tag no longer matches, on every reader
    write(&stack, &dana, CHECKOUT, json!(true)).await;
    for (reader, base) in bases(&stack) {
        let flags = format!("{base}/ofrep/v1/evaluate/flags");
        let (_, headers, body) = until_converged(reader, || async {
            let answer = ofrep(Method::POST, &flags, Some(&alice), Some(&tags[0]), None).await;
            (answer.0 == 200).then_some(answer)
        })
        .await;
        assert_ne!(headers["etag"].to_str().unwrap(), tags[0]);
        let answer: Value = serde_json::from_str(&body).unwrap();
        let checkout = answer["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|flag| flag["key"] == CHECKOUT)
            .unwrap()
            .clone();
        assert_eq!(checkout["value"], true, "{reader}");
        assert_eq!(checkout["variant"], "tenant:v2", "{reader}");
    }

    for (reader, base) in bases(&stack) {
        // The capabilities a provider reads before it polls.
        let (status, _, body) = ofrep(
            Method::GET,
            &format!("{base}/ofrep/v1/configuration"),
            Some(&alice),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{reader}: {body}");
        let configuration: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            configuration["capabilities"]["cacheInvalidation"]["polling"]["enabled"],
            true
        );
        // Refusals, each with OFREP's code.
        let one = format!("{base}/ofrep/v1/evaluate/flags/{CHECKOUT}");
        let cases = [
            (
                Some(alice.as_str()),
                "{\"context\": 5}",
                400,
                "INVALID_CONTEXT",
            ),
            (
                Some(alice.as_str()),
                "{\"context\": {\"targetingKey\": 7}}",
                400,
                "INVALID_CONTEXT",
            ),
            (Some(alice.as_str()), "{not json", 400, "PARSE_ERROR"),
            (None, "{}", 401, "GENERAL"),
            (Some("forged.token.value"), "{}", 401, "GENERAL"),
        ];
        for (token, body, status, code) in cases {
            let (got, headers, text) = ofrep(Method::POST, &one, token, None, Some(body)).await;
            assert_eq!(got, status, "{reader} {body}: {text}");
            let error: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(error["errorCode"], code, "{reader} {body}");
            if status == 401 {
                assert!(headers.contains_key("www-authenticate"), "{reader}");
            }
        }
        let bad_key = format!("{base}/ofrep/v1/evaluate/flags/tenant_config_bad$key");
        let (got, _, text) = ofrep(Method::POST, &bad_key, Some(&alice), None, None).await;
        assert_eq!(got, 400, "{reader}: {text}");
        let (got, headers, _) = ofrep(Method::GET, &one, Some(&alice), None, None).await;
        assert_eq!(got, 405, "{reader}");
        assert_eq!(headers["allow"].to_str().unwrap(), "POST");
    }
}

/// One JSON line the web client printed.
async fn client_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the web client prints within 30 s")
        .expect("its stdout is readable")
        .expect("it printed a line before it ended");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn the_official_web_provider_polls_the_bulk_evaluation_and_sees_a_change() {
    use tokio::io::AsyncBufReadExt;
    let stack = LocalStack::start(StackOptions::with_agents(1), &|_, _| {})
        .await
        .expect("local stack starts");
    let (alice, dana) = (
        stack.token(ALICE).await.unwrap(),
        stack.token(DANA).await.unwrap(),
    );
    write(&stack, &dana, CHECKOUT, json!(false)).await;
    let script = tenant_config_local_stack::process::workspace_root().join("tests/ofrep-web");
    for (reader, base) in bases(&stack) {
        // GIVEN a service's web client polling once a second (the minimum
        // the configuration route advertises) through the official provider
        let mut client = tokio::process::Command::new("node")
            .arg("poll.mjs")
            .current_dir(&script)
            .env("OFREP_BASE_URL", &base)
            .env("TOKEN", &alice)
            .env("FLAG", CHECKOUT)
            .env("POLL_MS", "1000")
            .env("TIMEOUT_MS", "20000")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (tests/setup.sh installs the client)");
        let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
        let ready = client_line(&mut lines).await;
        assert_eq!(ready["event"], "ready", "{reader}: {ready}");
        assert_eq!(ready["value"], false, "{reader}: {ready}");
        // WHEN it has polled unchanged flags for a while, then a flag changes
        tokio::time::sleep(Duration::from_millis(2500)).await;
        write(
            &stack,
            &dana,
            CHECKOUT,
            json!(ready["value"].as_bool().map(|v| !v).unwrap()),
        )
        .await;
        // THEN its polls were answered 304 until the change, which it sees
        let changed = client_line(&mut lines).await;
        assert_eq!(changed["event"], "changed", "{reader}: {changed}");
        assert_eq!(changed["value"], true, "{reader}: {changed}");
        // This provider passes the server's reason on.
        assert_eq!(changed["reason"], "TARGETING_MATCH", "{reader}: {changed}");
        let statuses: Vec<u64> = changed["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        assert_eq!(statuses.first(), Some(&200), "{reader}: {statuses:?}");
        assert!(statuses.contains(&304), "{reader}: no 304 in {statuses:?}");
        assert_eq!(statuses.last(), Some(&200), "{reader}: {statuses:?}");
        // Back to false for the next reader.
        write(&stack, &dana, CHECKOUT, json!(false)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
