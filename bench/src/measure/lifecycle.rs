//! (9) Config lifecycle on the local stack (two agent processes, every AWS
//! call of config-api and the agents through the counting proxy in front of
//! moto): an administrator's write through the API beside a direct PutItem,
//! the time from that write until config-api and every agent serve it, and a
//! whole-service read beside one read per key for a service with 40 keys
//! (store calls counted at the proxy, time over HTTP).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use tenant_config_admin::values::{ParameterKind, Target};
use tenant_config_local_stack::fault_proxy::Route;
use tenant_config_local_stack::stack::{
    ALICE, DANA, LocalStack, PARAMETER_ROOT, SERVICE, StackOptions, TABLE,
};
use tenant_config_shared::ItemKey;

use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

const WRITTEN_KEY: &str = "tenant_config_bench_writes";
/// Keys of each store in the 40-key service.
const KEYS_PER_STORE: usize = 20;
/// How long every reader has to serve a write (the "within seconds").
const CONVERGENCE_TARGET: Duration = Duration::from_secs(2);

/// Store calls (DynamoDB on the configuration table, Parameter Store) the
/// proxy has seen so far.
fn store_calls(stack: &LocalStack) -> usize {
    stack.faults.as_ref().map_or(0, |proxy| {
        proxy
            .calls()
            .iter()
            .filter(|call| match call.route {
                Route::ParameterStore => true,
                Route::DynamoDb => call.name.as_deref() == Some(TABLE),
                _ => false,
            })
            .count()
    })
}

/// Polls config-api and both agents every 10 ms until all serve `expected`.
async fn until_served_everywhere(
    stack: &LocalStack,
    token: &str,
    expected: &Value,
) -> Result<(), String> {
    stack
        .until_served_everywhere(
            token,
            WRITTEN_KEY,
            expected,
            Duration::from_secs(10),
            Duration::from_millis(10),
        )
        .await
        .map(|_| ())
}

impl Report {
    /// (9) Writes, write → every reader, whole-service read vs single reads.
    pub async fn lifecycle(&mut self) -> Result<(), String> {
        let stack = LocalStack::start(
            StackOptions {
                agents: 2,
                release: !self.sizes.smoke,
                settings: super::WITHOUT_TENANT_LIMITS,
                fault_proxy: true,
                dynamodb_through_proxy: true,
                // Pushes to the agent processes over TLS, as deployed.
                agent_tls: true,
                publish: false,
                containers: false,
            },
            &|_, _| {},
        )
        .await?;
        let alice = stack.token(ALICE).await?;
        let dana = stack.token(DANA).await?;
        let writes = self.sizes.lifecycle_writes;
        let path = format!("/v1/config/{SERVICE}/{WRITTEN_KEY}");

        // Writes through the API, each from the version the last one made;
        // the first few wait until config-api and both agents serve them.
        let created = stack
            .send(
                Method::PUT,
                &path,
                Some(&dana),
                &[("if-none-match", "*")],
                Some(&json!({"value": {"round": -1}})),
            )
            .await?;
        let mut version = created.body["version"]
            .as_i64()
            .ok_or_else(|| format!("create: {} {}", created.status, created.text))?;
        until_served_everywhere(&stack, &alice, &json!({"round": -1})).await?;
        let (mut write_times, mut converged) = (Vec::new(), Vec::new());
        for round in 0..writes {
            let value = json!({"round": round});
            let if_match = version.to_string();
            let started = Instant::now();
            let written = stack
                .send(
                    Method::PUT,
                    &path,
                    Some(&dana),
                    &[("if-match", if_match.as_str())],
                    Some(&json!({ "value": value })),
                )
                .await?;
            write_times.push(started.elapsed());
            version = written.body["version"]
                .as_i64()
                .ok_or_else(|| format!("write: {} {}", written.status, written.text))?;
            if converged.len() < self.sizes.lifecycle_converge {
                until_served_everywhere(&stack, &alice, &value).await?;
                converged.push(started.elapsed());
            }
        }
        // Baseline: the same values written around the service, straight
        // into the table (no validation, version check, history or audit).
        let dynamodb = aws_sdk_dynamodb::Client::new(&stack.aws);
        let mut direct_times = Vec::new();
        for round in 0..writes {
            let started = Instant::now();
            dynamodb
                .put_item()
                .table_name(TABLE)
                .item(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S("TENANT#tenant-a".into()),
                )
                .item(
                    "sk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!(
                        "CONFIG#{SERVICE}#tenant_config_bench_direct"
                    )),
                )
                .item(
                    "value",
                    aws_sdk_dynamodb::types::AttributeValue::S(json!({"round": round}).to_string()),
                )
                .send()
                .await
                .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
            direct_times.push(started.elapsed());
        }

        // A service of 40 keys (20 per store), twice: one copy read whole,
        // the other key by key, both cold.
        let target = Target {
            secure_string_key: None,
            table: TABLE.to_owned(),
            parameter_root: PARAMETER_ROOT.to_owned(),
            router: Default::default(),
        };
        let keys: Vec<String> = (0..KEYS_PER_STORE)
            .flat_map(|i| {
                [
                    format!("tenant_config_item_{i}"),
                    format!("param_config_item_{i}"),
                ]
            })
            .collect();
        let (mut whole_times, mut single_times) = (Vec::new(), Vec::new());
        let (mut whole_calls, mut single_calls) = (0, 0);
        for round in 0..self.sizes.lifecycle_service_rounds {
            let whole_service = format!("inventory-{round}");
            let single_service = format!("catalog-{round}");
            for service in [&whole_service, &single_service] {
                for key in &keys {
                    let item =
                        ItemKey::parse("tenant-a", service, key).map_err(|e| e.to_string())?;
                    target
                        .put(
                            &stack.aws,
                            &item,
                            &format!("\"{key}\""),
                            ParameterKind::String,
                        )
                        .await?;
                }
            }
            let calls_before = store_calls(&stack);
            let started = Instant::now();
            let whole = stack
                .get(&format!("/v1/config/{whole_service}"), Some(&alice))
                .await?;
            whole_times.push(started.elapsed());
            whole_calls = store_calls(&stack) - calls_before;
            let listed = whole.body["values"].as_object().map_or(0, |v| v.len());
            if whole.status != 200 || listed != keys.len() {
                return Err(format!(
                    "whole-service read listed {listed} of {}: {} {}",
                    keys.len(),
                    whole.status,
                    whole.text
                ));
            }
            let calls_before = store_calls(&stack);
            let started = Instant::now();
            for key in &keys {
                let answer = stack
                    .get(&format!("/v1/config/{single_service}/{key}"), Some(&alice))
                    .await?;
                if answer.status != 200 {
                    return Err(format!("{key}: {} {}", answer.status, answer.text));
                }
            }
            single_times.push(started.elapsed());
            single_calls = store_calls(&stack) - calls_before;
        }

        let (writes_summary, direct) = (Summary::of(write_times), Summary::of(direct_times));
        let converged = Summary::of(converged);
        let (whole, single) = (Summary::of(whole_times), Summary::of(single_times));
        self.compare(Comparison {
            title: "read a 40-key service (cold, over HTTP)".into(),
            ours: whole.p50.as_secs_f64() * 1000.0,
            ours_label: format!("{} ({whole_calls} store calls)", human(whole.p50)),
            baseline_name: "40 single-key reads".into(),
            baseline: single.p50.as_secs_f64() * 1000.0,
            baseline_label: format!("{} ({single_calls} store calls)", human(single.p50)),
        });
        self.section(
            "9. Config lifecycle: writes, write → every reader, whole-service read",
            vec![
                Row {
                    figure: "administrator's write through the API (PUT, If-Match; schema, conditional transaction with history)".into(),
                    ours: format!("p50 {} / p99 {}", human(writes_summary.p50), human(writes_summary.p99)),
                    baseline: format!("direct PutItem: p50 {} / p99 {}", human(direct.p50), human(direct.p99)),
                    target: "".into(),
                    met: None,
                },
                Row {
                    figure: "API write → config-api and both agents serve it (DynamoDB key, stream push)".into(),
                    ours: format!("p50 {} / p99 {}", human(converged.p50), human(converged.p99)),
                    baseline: "—".into(),
                    target: format!("≤ {}", human(CONVERGENCE_TARGET)),
                    met: Some(converged.p99 <= CONVERGENCE_TARGET),
                },
                Row {
                    figure: format!("read a service of {} keys, cold: time (store calls)", keys.len()),
                    ours: format!("whole service: {} ({whole_calls} calls)", human(whole.p50)),
                    baseline: format!("{} single reads: {} ({single_calls} calls)", keys.len(), human(single.p50)),
                    target: "fewer calls".into(),
                    met: Some(whole_calls < single_calls),
                },
            ],
            vec![
                format!("{writes} sequential writes by dana (config-admins) with real moto ID tokens through cargo lambda watch; the first {} each timed from the PUT until config-api (HTTP) and both agent processes (gRPC) served the value, polled every 10 ms.", converged.count),
                "config-api serves its own write at once (it drops the key from its cache); the agents get the stream's push (the local stack polls the DynamoDB stream every 100 ms, as the event source mapping does about every 250 ms). Parameter Store writes reach readers through EventBridge in AWS, which moto does not emit, so they are not timed here.".into(),
                format!("Store calls are every DynamoDB call on the configuration table and every Parameter Store call that config-api made, counted at the proxy in front of moto (SDK retries included; the journal's catch-up queries excluded). Median of {} rounds, each on a fresh copy of the service.", whole.count),
            ],
        );
        Ok(())
    }
}
