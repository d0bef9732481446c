//! (3) End to end over HTTP through cargo lambda watch against moto.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::future::join_all;
use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE};

use crate::report::{Report, Row};
use crate::stats::{Summary, human};

impl Report {
    /// (3) End to end over HTTP through cargo lambda watch against moto.
    pub async fn http(&mut self, stack: &LocalStack) -> Result<(), String> {
        let n = self.sizes.http_requests;
        let token = stack.token(ALICE).await?;
        for i in 0..n.max(20) {
            stack
                .put_parameter(
                    "tenant-a",
                    &format!("param_config_cold_{i}"),
                    &format!("v{i}"),
                )
                .await?;
        }
        let client = reqwest::Client::new();
        let get = |path: String| {
            let request = client.get(stack.api_url(&path)).bearer_auth(&token);
            async move {
                let started = Instant::now();
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                response.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{path}: {status}"));
                }
                Ok::<_, String>(started.elapsed())
            }
        };
        let mut cold = Vec::new();
        for i in 0..n {
            cold.push(get(format!("/v1/config/{SERVICE}/param_config_cold_{i}")).await?);
        }
        let warm_path = format!("/v1/config/{SERVICE}/param_config_endpoint");
        get(warm_path.clone()).await?;
        let mut warm = Vec::new();
        for _ in 0..n {
            warm.push(get(warm_path.clone()).await?);
        }
        // In their canonical spelling (sorted), which the API serves directly.
        let mut keys: Vec<String> = (0..20).map(|i| format!("param_config_cold_{i}")).collect();
        keys.sort();
        let batch_path = format!("/v1/config/{SERVICE}?keys={}", keys.join(","));
        get(batch_path.clone()).await?;
        let mut batch = Vec::new();
        for _ in 0..n {
            batch.push(get(batch_path.clone()).await?);
        }
        let deadline = Instant::now() + self.sizes.http_load;
        let completed = Arc::new(AtomicUsize::new(0));
        let load_started = Instant::now();
        let workers = (0..16).map(|_| {
            let completed = completed.clone();
            let get = &get;
            let warm_path = warm_path.clone();
            async move {
                while Instant::now() < deadline {
                    get(warm_path.clone()).await?;
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            }
        });
        for result in join_all(workers).await {
            result?;
        }
        let rps = completed.load(Ordering::Relaxed) as f64 / load_started.elapsed().as_secs_f64();
        let (cold, warm, batch) = (Summary::of(cold), Summary::of(warm), Summary::of(batch));
        let row = |figure: &str, s: Summary| Row {
            figure: figure.into(),
            ours: format!("p50 {} / p99 {}", human(s.p50), human(s.p99)),
            baseline: "—".into(),
            target: "".into(),
            met: None,
        };
        self.section(
            "3. End to end over HTTP (cargo lambda watch → config-api → moto)",
            vec![
                row("cold key (store read per request)", cold),
                row("warm key (cache hit)", warm),
                row("batch of 20 keys (warm)", batch),
                Row {
                    figure: "requests/s, 16 concurrent clients, warm key".into(),
                    ours: format!("{rps:.0}"),
                    baseline: "—".into(),
                    target: "".into(),
                    met: None,
                },
            ],
            vec![
                format!("{n} sequential requests per row over HTTP/1.1 keep-alive with a real moto ID token; load for {:?}.", self.sizes.http_load),
                "cargo lambda watch emulates the Lambda service: each request goes through its HTTP → Runtime API bridge, which dominates these figures; the function's own time is figure 1.".into(),
            ],
        );
        Ok(())
    }
}
