//! (1) Warm read in-process through the handler config-api runs, vs. Powertools + PyJWT.

use std::time::{Duration, Instant};

use tenant_config_local_stack::stack::{ALICE, LocalStack};
use tenant_config_shared::api::ApiRequest;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::settings::{LAMBDA_CACHE_DEFAULTS, Settings};

use crate::baseline::{ns, python_baseline, ratio, settings};
use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

impl Report {
    /// (1) Warm read in-process through the handler config-api runs.
    pub async fn warm_read(&mut self, stack: &LocalStack) -> Result<(), String> {
        let with_catch_up = settings(stack, LAMBDA_CACHE_DEFAULTS)?;
        let without_catch_up = Settings {
            journal_table: None,
            ..with_catch_up.clone()
        };
        let token = stack.token(ALICE).await?;
        let without = self.warm_samples(stack, &without_catch_up, &token).await?;
        let ours = self.warm_samples(stack, &with_catch_up, &token).await?;
        let catch_up_cost = ours.p50.as_secs_f64() / without.p50.as_secs_f64().max(1e-12);
        let (by_us, by_axum) = super::router::compare(
            Aws::from_config(stack.aws.clone())
                .config_api(&with_catch_up)
                .map_err(|e| e.to_string())?,
            &format!("Bearer {token}"),
            self.sizes.warm_iterations,
        )
        .await?;
        let baseline = python_baseline(
            stack,
            &[
                "warm-read".into(),
                "--token".into(),
                token,
                "--jwks-url".into(),
                stack.pool.jwks_url.clone(),
                "--issuer".into(),
                stack.pool.issuer.clone(),
                "--client-id".into(),
                stack.pool.client_id.clone(),
                "--iterations".into(),
                self.sizes.baseline_iterations.to_string(),
            ],
        )?;
        let (b50, b99) = (ns(&baseline, "p50_ns"), ns(&baseline, "p99_ns"));
        let speedup = ratio(b50, ours.p50);
        self.figure_1_p50 = Some(ours.p50);
        self.compare(Comparison {
            title: "1. Warm read in-process, p50".into(),
            ours: ours.p50.as_secs_f64(),
            ours_label: human(ours.p50),
            baseline_name: "Powertools + PyJWT".into(),
            baseline: b50.as_secs_f64(),
            baseline_label: format!("{} ({speedup:.0}× ours)", human(b50)),
        });
        self.section(
            "1. Warm read in-process (token verified + cache hit)",
            vec![
                Row {
                    figure: "p50 per request".into(),
                    ours: human(ours.p50),
                    baseline: human(b50),
                    target: "≤ 20 µs".into(),
                    met: Some(ours.p50 <= Duration::from_micros(20)),
                },
                Row {
                    figure: "p99 per request".into(),
                    ours: human(ours.p99),
                    baseline: human(b99),
                    target: "".into(),
                    met: None,
                },
                Row {
                    figure: "p50 with catch-up on, against catch-up off (same run)".into(),
                    ours: format!("{} vs {} ({:+.0} %)", human(ours.p50), human(without.p50), (catch_up_cost - 1.0) * 100.0),
                    baseline: "—".into(),
                    target: "within 10 %".into(),
                    met: Some(catch_up_cost <= 1.10),
                },
                Row {
                    figure: "from an http::Request: our route table vs an axum Router, p50 (p99)".into(),
                    ours: format!(
                        "{} ({}) vs {} ({}), {:+.0} %",
                        human(by_us.p50),
                        human(by_us.p99),
                        human(by_axum.p50),
                        human(by_axum.p99),
                        (by_axum.p50.as_secs_f64() / by_us.p50.as_secs_f64().max(1e-12) - 1.0) * 100.0
                    ),
                    baseline: "—".into(),
                    target: "".into(),
                    met: None,
                },
                Row {
                    figure: "speed-up at p50".into(),
                    ours: format!("{speedup:.0}×"),
                    baseline: "1×".into(),
                    target: "≥ 20×".into(),
                    met: Some(speedup >= 20.0),
                },
            ],
            vec![
                format!(
                    "Ours: `ConfigApi::handle` (the code config-api runs per request: routing, token check from the verified-token cache, catch-up check against the change journal (a query at most once a second, against moto), key validation, cache hit, JSON response), {} sequential requests.",
                    ours.count
                ),
                format!(
                    "Router (issue 21's decision): the same warm read from an `http::Request`, mapped and answered as config-api's main does, beside an axum `Router` (what lambda_http can run directly) whose handler extracts the path parameters and headers and calls the same `ConfigApi::handle`; {} requests each, interleaved.",
                    by_us.count
                ),
                format!(
                    "Baseline: Powertools `SSMProvider.get(max_age=300)` + PyJWT `PyJWKClient` (cached JWKS) + `jwt.decode` (RS256, iss, aud) per request, {} requests, same token and parameter.",
                    baseline["count"]
                ),
            ],
        );
        Ok(())
    }

    /// Latencies of `ConfigApi::handle` for one warm key with `settings`.
    async fn warm_samples(
        &self,
        stack: &LocalStack,
        settings: &Settings,
        token: &str,
    ) -> Result<Summary, String> {
        let api = Aws::from_config(stack.aws.clone())
            .config_api(settings)
            .map_err(|e| e.to_string())?;
        let bearer = format!("Bearer {token}");
        let request = ApiRequest {
            method: "GET",
            path: "/v1/config/billing/param_config_endpoint",
            authorization: Some(&bearer),
            keys: None,
            ..Default::default()
        };
        let first = api.handle(&request).await;
        if first.status != 200 {
            return Err(format!("warm read: {} {}", first.status, first.body));
        }
        let mut samples = Vec::with_capacity(self.sizes.warm_iterations);
        for _ in 0..self.sizes.warm_iterations {
            let started = Instant::now();
            let response = api.handle(&request).await;
            samples.push(started.elapsed());
            if response.status != 200 {
                return Err(format!("warm read: {}", response.status));
            }
        }
        Ok(Summary::of(samples))
    }
}
