//! (8) config-api while a store misbehaves: latency and answers with the
//! store healthy, stalled (moto frozen) and throttled (Parameter Store
//! answering ThrottlingException through the fault proxy), with
//! stale-if-error on (the defaults) beside the same stack with it off
//! (`MAX_STALE_SECS=0`, `STORE_RETRY_INTERVAL_MS=1`: every request goes to the
//! store, bounded only by the SDK timeouts). Cache TTLs are one second in both,
//! so the keys read keep expiring and the failure is met on every path.

use std::time::{Duration, Instant};

use futures::future::join_all;

use tenant_config_local_stack::fault_proxy::{Fault, Route};
use tenant_config_local_stack::stack::{ALICE, LocalStack, PARAMETER_ROOT, SERVICE, StackOptions};

use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

const ON: &[(&str, &str)] = &[
    ("DYNAMODB_CACHE_TTL_SECS", "1"),
    ("PARAMETER_CACHE_TTL_SECS", "1"),
    ("TENANT_STORE_READS_PER_SEC", "0"),
];
const OFF: &[(&str, &str)] = &[
    ("TENANT_STORE_READS_PER_SEC", "0"),
    ("DYNAMODB_CACHE_TTL_SECS", "1"),
    ("PARAMETER_CACHE_TTL_SECS", "1"),
    ("MAX_STALE_SECS", "0"),
    ("STORE_RETRY_INTERVAL_MS", "1"),
];
/// Callers in each phase, each pausing `PACE` between requests. One: a Lambda
/// container serves one request at a time (and cargo lambda watch queues
/// concurrent ones), and every figure here is per container.
const CLIENTS: usize = 1;
const PACE: Duration = Duration::from_millis(50);

/// What one phase's requests got.
struct Phase {
    latency: Summary,
    requests: usize,
    ok: usize,
    stale: usize,
    /// Store attempts seen at the fault proxy for the key, per second.
    store_calls_per_second: Option<f64>,
}

impl Phase {
    fn describe(&self) -> String {
        format!(
            "p50 {} / p99 {}; {} % 200 ({} % stale-marked) of {}",
            human(self.latency.p50),
            human(self.latency.p99),
            self.ok * 100 / self.requests.max(1),
            self.stale * 100 / self.requests.max(1),
            self.requests
        )
    }
}

struct Run {
    healthy: Phase,
    stalled: Phase,
    throttled: Phase,
}

async fn phase(
    stack: &LocalStack,
    token: &str,
    path: &str,
    duration: Duration,
    counted: Option<&str>,
) -> Result<Phase, String> {
    let calls_before = counted.map(|name| store_calls(stack, name));
    let started = Instant::now();
    let client = || async {
        let (mut latencies, mut ok, mut stale) = (Vec::new(), 0, 0);
        while started.elapsed() < duration {
            let sent = Instant::now();
            let answer = stack.get(path, Some(token)).await?;
            latencies.push(sent.elapsed());
            if answer.status == 200 {
                ok += 1;
                if answer.body.get("stale").is_some() {
                    stale += 1;
                }
            }
            tokio::time::sleep(PACE).await;
        }
        Ok::<_, String>((latencies, ok, stale))
    };
    let (mut latencies, mut ok, mut stale) = (Vec::new(), 0, 0);
    for result in join_all((0..CLIENTS).map(|_| client())).await {
        let (l, o, s) = result?;
        latencies.extend(l);
        ok += o;
        stale += s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let store_calls_per_second = counted
        .zip(calls_before)
        .map(|(name, before)| (store_calls(stack, name) - before) as f64 / elapsed);
    Ok(Phase {
        requests: latencies.len(),
        latency: Summary::of(latencies),
        ok,
        stale,
        store_calls_per_second,
    })
}

fn store_calls(stack: &LocalStack, parameter: &str) -> usize {
    stack.faults.as_ref().map_or(0, |faults| {
        faults
            .calls()
            .iter()
            .filter(|c| c.name.as_deref() == Some(parameter))
            .count()
    })
}

async fn until_fresh(stack: &LocalStack, token: &str, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = stack.get(path, Some(token)).await?;
        if answer.status == 200 && answer.body.get("stale").is_none() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{path} not fresh again: {}", answer.text));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(
    settings: &'static [(&'static str, &'static str)],
    release: bool,
    duration: Duration,
) -> Result<Run, String> {
    let stack = LocalStack::start(
        StackOptions {
            agents: 0,
            release,
            settings,
            fault_proxy: true,
            dynamodb_through_proxy: false,
            agent_tls: false,
            publish: false,
            containers: false,
        },
        &|_, _| {},
    )
    .await?;
    let faults = stack
        .faults
        .as_ref()
        .ok_or("the stack has no fault proxy")?;
    let token = stack.token(ALICE).await?;
    let item = format!("/v1/config/{SERVICE}/tenant_config_limits");
    let parameter_path = format!("/v1/config/{SERVICE}/param_config_endpoint");
    let parameter = format!("{PARAMETER_ROOT}/tenant-a/{SERVICE}/param_config_endpoint");
    for path in [&item, &parameter_path] {
        until_fresh(&stack, &token, path).await?;
    }
    let healthy = phase(&stack, &token, &parameter_path, duration, Some(&parameter)).await?;

    stack.moto.set_paused(true);
    let stalled = phase(&stack, &token, &item, duration, None).await;
    stack.moto.set_paused(false);
    let stalled = stalled?;
    until_fresh(&stack, &token, &item).await?;

    faults.set_fault(Route::ParameterStore, Fault::Throttle);
    let throttled = phase(&stack, &token, &parameter_path, duration, Some(&parameter)).await;
    faults.set_fault(Route::ParameterStore, Fault::Pass);
    Ok(Run {
        healthy,
        stalled,
        throttled: throttled?,
    })
}

impl Report {
    /// (8) config-api while a store misbehaves, stale-if-error on and off.
    pub async fn resilience(&mut self) -> Result<(), String> {
        let duration = if self.sizes.smoke {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(15)
        };
        let release = !self.sizes.smoke;
        let on = run(ON, release, duration).await?;
        let off = run(OFF, release, duration).await?;
        let rate = |phase: &Phase| {
            phase.store_calls_per_second.map_or("—".to_owned(), |r| {
                format!(
                    "{r:.1} /s at {:.1} requests/s",
                    phase.requests as f64 / duration.as_secs_f64()
                )
            })
        };
        let operation_timeout = Duration::from_secs(5);
        let rows = vec![
            Row {
                figure: "Parameter Store healthy".into(),
                ours: on.healthy.describe(),
                baseline: off.healthy.describe(),
                target: "".into(),
                met: None,
            },
            Row {
                figure: "store stalled (moto frozen)".into(),
                ours: on.stalled.describe(),
                baseline: off.stalled.describe(),
                target: "p99 ≤ 5 s, 100 % 200 stale-marked".into(),
                met: Some(
                    on.stalled.latency.p99 <= operation_timeout
                        && on.stalled.stale == on.stalled.requests,
                ),
            },
            Row {
                figure: "Parameter Store throttled".into(),
                ours: on.throttled.describe(),
                baseline: off.throttled.describe(),
                target: "p99 ≤ 5 s, 100 % 200 stale-marked".into(),
                met: Some(
                    on.throttled.latency.p99 <= operation_timeout
                        && on.throttled.stale == on.throttled.requests,
                ),
            },
            Row {
                figure: "Parameter Store calls for the key while throttled (SDK attempts)".into(),
                ours: rate(&on.throttled),
                baseline: rate(&off.throttled),
                target: "≤ 1 probe /s (≤ 3 attempts /s)".into(),
                met: on.throttled.store_calls_per_second.map(|r| r <= 3.0),
            },
            Row {
                figure: "Parameter Store calls for the key, healthy (SDK attempts)".into(),
                ours: rate(&on.healthy),
                baseline: rate(&off.healthy),
                target: "".into(),
                met: None,
            },
        ];
        self.compare(Comparison {
            title: "p99 with the store stalled".into(),
            ours: on.stalled.latency.p99.as_secs_f64() * 1000.0,
            ours_label: human(on.stalled.latency.p99),
            baseline_name: "stale-if-error off".into(),
            baseline: off.stalled.latency.p99.as_secs_f64() * 1000.0,
            baseline_label: human(off.stalled.latency.p99),
        });
        self.section(
            "8. config-api while a store fails (stale-if-error on, beside off)",
            rows,
            vec![
                format!("Each phase: {CLIENTS} caller for {duration:?}, pausing {PACE:?} between requests (one container's view), for a key config-api read before; cache TTLs 1 s, so most requests meet the failure. Baseline: the same stack with MAX_STALE_SECS=0 and STORE_RETRY_INTERVAL_MS=1 (every request calls the store, bounded by the SDK timeouts: 1 s connect, 2 s attempt, 5 s operation, 3 attempts)."),
                "Stalled: moto frozen with SIGSTOP (connections accepted, nothing answered), which also stalls the change journal query (500 ms timeout) before each read. Throttled: the fault proxy answers Parameter Store calls with 400 ThrottlingException; the attempts are counted there.".into(),
            ],
        );
        Ok(())
    }
}
