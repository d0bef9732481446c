//! (17) A warm read through `tenant-config-client`: the value is in the
//! service's memory, kept current by the agent's Watch stream, so a read is
//! a map lookup. Beside figure 1 (config-api's warm read) and the agent's
//! gRPC GetConfig, in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tenant_config_client::{ConfigClient, StaticToken};
use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE};
use tenant_config_shared::refresh::proto::GetConfigRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;

use super::agents::StackAgents;
use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

/// Figure 1's key: a String parameter of tenant A's.
const KEY: &str = "param_config_endpoint";
/// Reads per sample: one read is far shorter than the clock's resolution
/// and cost, so each sample is the mean of a batch.
const BATCH: u32 = 100;
const TARGET: Duration = Duration::from_nanos(200);

impl Report {
    /// (17) The client crate's warm read.
    pub async fn client(&mut self, stack: &LocalStack) -> Result<(), String> {
        let samples = if self.sizes.smoke { 100 } else { 20_000 };
        let token = stack.token(ALICE).await?;
        let agent = StackAgents::new(stack).await?.start().await;
        // Named keys: by now the service holds more keys than one listing
        // returns (figure 15's flags), which a whole-service watch refuses.
        let config = ConfigClient::builder(agent.endpoint(), SERVICE)
            .keys([KEY, "tenant_config_limits"])
            .token(StaticToken(token.clone()))
            .connect()
            .await
            .map_err(|e| format!("client: {e}"))?;
        let expected = config.get_str(KEY).map_err(|e| e.to_string())?;
        let mut reads = Vec::with_capacity(samples);
        for _ in 0..samples {
            let started = Instant::now();
            for _ in 0..BATCH {
                let value = config.get_str(black_box(KEY)).map_err(|e| e.to_string())?;
                black_box(value);
            }
            reads.push(started.elapsed() / BATCH);
        }
        if config.get_str(KEY).map_err(|e| e.to_string())? != expected {
            return Err("the value changed while it was measured".into());
        }
        let read = Summary::of(reads);

        // The agent's own answer to the same read, over loopback gRPC.
        let mut grpc =
            ConfigReaderClient::new(super::agents::reader_channel(agent.endpoint()).await?);
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| "token header".to_owned())?;
        let mut calls = Vec::with_capacity(self.sizes.http_requests);
        for _ in 0..=self.sizes.http_requests {
            let mut request = tonic::Request::new(GetConfigRequest {
                service: SERVICE.into(),
                key: KEY.into(),
            });
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            let started = Instant::now();
            grpc.get_config(request)
                .await
                .map_err(|status| format!("GetConfig: {status}"))?;
            calls.push(started.elapsed());
        }
        calls.remove(0);
        let grpc = Summary::of(calls);

        let figure_1 = self
            .figure_1_p50
            .map_or_else(|| "— (not measured in this run)".to_owned(), human);
        self.compare(Comparison {
            title: "17. Client crate warm read, p50".into(),
            ours: read.p50.as_secs_f64(),
            ours_label: human(read.p50),
            baseline_name: "target".into(),
            baseline: TARGET.as_secs_f64(),
            baseline_label: human(TARGET),
        });
        self.section(
            "17. Client crate (`tenant-config-client`) warm read",
            vec![
                Row {
                    figure: format!("`get_str(\"{KEY}\")` from the client's memory, p50 / p99"),
                    ours: format!("{} / {}", human(read.p50), human(read.p99)),
                    baseline: format!("figure 1, config-api warm read p50: {figure_1}"),
                    target: format!("≤ {} p50", human(TARGET)),
                    met: Some(read.p50 <= TARGET),
                },
                Row {
                    figure: "the same key from the agent by gRPC GetConfig (loopback), p50 / p99".into(),
                    ours: format!("{} / {}", human(grpc.p50), human(grpc.p99)),
                    baseline: "—".into(),
                    target: "".into(),
                    met: None,
                },
            ],
            vec![format!(
                "A `ConfigClient` watching two keys of tenant A's `{SERVICE}` service on an in-process agent over moto; {samples} samples, each the mean of {BATCH} consecutive reads (one read is shorter than the clock's own cost), one thread, no change arriving. A read takes the map's read lock, finds the key and clones an `Arc<str>`. GetConfig: {} sequential calls with the caller's token on one connection, the agent's cache warm.",
                grpc.count
            )],
        );
        Ok(())
    }
}
