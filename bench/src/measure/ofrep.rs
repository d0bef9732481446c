//! (15) OpenFeature's remote evaluation (OFREP) at an agent, beside its
//! gRPC GetConfig: the same reads, caches and token check, over HTTP/1.1.

use std::time::{Duration, Instant};

use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE};
use tenant_config_shared::refresh::proto::GetConfigRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;

use super::agents::StackAgents;
use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

/// A seeded key of tenant A's (an object, in DynamoDB).
const KEY: &str = "tenant_config_limits";

impl Report {
    /// (15) OFREP single and bulk evaluation at an agent beside gRPC GetConfig.
    pub async fn ofrep(&mut self, stack: &LocalStack) -> Result<(), String> {
        let n = self.sizes.http_requests.max(20);
        let token = stack.token(ALICE).await?;
        let agent = StackAgents::new(stack).await?.start().await;
        let mut grpc =
            ConfigReaderClient::new(super::agents::reader_channel(agent.endpoint()).await?);
        let bearer = format!("Bearer {token}");
        let mut get_config = async || {
            let mut request = tonic::Request::new(GetConfigRequest {
                service: SERVICE.into(),
                key: KEY.into(),
            });
            request.metadata_mut().insert(
                "authorization",
                bearer.parse().map_err(|_| "token header".to_owned())?,
            );
            let started = Instant::now();
            grpc.get_config(request)
                .await
                .map_err(|status| format!("GetConfig: {status}"))?;
            Ok::<_, String>(started.elapsed())
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let base = format!("{}/v1/services/{SERVICE}/ofrep/v1", agent.endpoint());
        let (one, all) = (
            format!("{base}/evaluate/flags/{KEY}"),
            format!("{base}/evaluate/flags"),
        );
        let evaluate = |url: String, tag: Option<String>, expected: u16| {
            let mut request = http
                .post(url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(r#"{"context":{"targetingKey":"user-1"}}"#);
            if let Some(tag) = tag {
                request = request.header("if-none-match", tag);
            }
            async move {
                let started = Instant::now();
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                response.bytes().await.map_err(|e| e.to_string())?;
                if status != expected {
                    return Err(format!("OFREP answered {status}, not {expected}"));
                }
                Ok::<_, String>((started.elapsed(), etag))
            }
        };
        // Warm every path first: the caches, the connections.
        get_config().await?;
        evaluate(one.clone(), None, 200).await?;
        let (_, etag) = evaluate(all.clone(), None, 200).await?;
        let etag = etag.ok_or("a bulk evaluation carries an ETag")?;
        let (mut grpc_samples, mut single, mut bulk, mut revalidated) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Interleaved, so that no path gets a quieter machine than another.
        for _ in 0..n {
            grpc_samples.push(get_config().await?);
            single.push(evaluate(one.clone(), None, 200).await?.0);
            bulk.push(evaluate(all.clone(), None, 200).await?.0);
            revalidated.push(evaluate(all.clone(), Some(etag.clone()), 304).await?.0);
        }
        let (baseline, single, bulk, revalidated) = (
            Summary::of(grpc_samples),
            Summary::of(single),
            Summary::of(bulk),
            Summary::of(revalidated),
        );
        let flags = http
            .post(&all)
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json::<serde_json::Value>()
            .await
            .map_err(|e| e.to_string())?["flags"]
            .as_array()
            .map_or(0, Vec::len);
        let latency = |s: Summary| format!("p50 {} / p99 {}", human(s.p50), human(s.p99));
        let ratio = |s: Summary| s.p50.as_secs_f64() / baseline.p50.as_secs_f64();
        self.compare(Comparison {
            title: "15. OFREP evaluation at an agent, p50".into(),
            ours: single.p50.as_secs_f64(),
            ours_label: human(single.p50),
            baseline_name: "gRPC GetConfig".into(),
            baseline: baseline.p50.as_secs_f64(),
            baseline_label: human(baseline.p50),
        });
        let row = |figure: String, s: Summary| Row {
            figure,
            ours: latency(s),
            baseline: latency(baseline),
            target: String::new(),
            met: None,
        };
        self.section(
            "15. OpenFeature (OFREP) at an agent",
            vec![
                row(
                    format!("one flag (`{KEY}`), {:.1}× gRPC's p50", ratio(single)),
                    single,
                ),
                row(
                    format!(
                        "every flag of the service ({flags}), {:.1}× gRPC's p50",
                        ratio(bulk)
                    ),
                    bulk,
                ),
                row(
                    format!(
                        "every flag, revalidated with its ETag (304), {:.1}× gRPC's p50",
                        ratio(revalidated)
                    ),
                    revalidated,
                ),
            ],
            vec![
                format!(
                    "{n} of each, interleaved, warm, to an in-process agent on loopback (the agent's own code, its caches and token check; stores: the stack's moto); the baseline is gRPC GetConfig of the same key on the same port, tonic over HTTP/2. OFREP is HTTP/1.1 with keep-alive (reqwest), a JSON body with an evaluation context, the answer's JSON parsed by nobody."
                ),
                "A bulk evaluation reads every key of the service (one listing per store, cached) and computes its ETag; a 304 does that work too and saves the body.".into(),
            ],
        );
        Ok(())
    }
}
