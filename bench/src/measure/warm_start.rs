//! (18) An agent's warm start: from spawning a `config-agent` process whose
//! stores are unreachable to its first answer, from its encrypted snapshot;
//! beside the same start without a snapshot and the stores reachable (its
//! first answer from DynamoDB). Release builds when measuring; moto's KMS
//! opens the snapshot.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tenant_config_local_stack::agent::{AgentProcess, agent_binary_of};
use tenant_config_local_stack::process::{two_free_ports, workspace_root};
use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE};
use tenant_config_shared::refresh::proto::GetConfigRequest;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;

use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

/// A seeded key of tenant A's (an object, in DynamoDB).
const KEY: &str = "tenant_config_limits";
const TARGET: Duration = Duration::from_millis(100);
/// How long one start may take to answer before the run counts as failed.
const GIVE_UP: Duration = Duration::from_secs(20);

/// An agent process started for one measurement; killed when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Report {
    /// (18) Agent start to first answer from its snapshot, stores down.
    pub async fn warm_start(&mut self, stack: &LocalStack) -> Result<(), String> {
        let starts = if self.sizes.smoke { 2 } else { 20 };
        let profile = if self.sizes.smoke { "debug" } else { "release" };
        let binary = agent_binary_of(profile);
        let token = stack.token(ALICE).await?;
        let directory =
            workspace_root().join(format!("target/bench-warm-start-{}", std::process::id()));
        std::fs::create_dir_all(&directory).map_err(|e| e.to_string())?;
        let snapshot = directory.join("agent.snapshot");
        let mut env = stack.env.clone();
        env.extend([
            ("CLOUD_MAP_REGISTER".to_owned(), "false".to_owned()),
            (
                "AGENT_SNAPSHOT_FILE".to_owned(),
                snapshot.display().to_string(),
            ),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ]);

        // The snapshot: what an agent served before it stopped.
        let mut first = AgentProcess::start_binary("bench-warm-first", &env, &binary).await?;
        first
            .get_config(&token, SERVICE, KEY)
            .await
            .map_err(|e| format!("GetConfig: {e}"))?;
        first.stop_gracefully()?;
        let sealed = std::fs::metadata(&snapshot)
            .map_err(|e| format!("no snapshot written: {e}"))?
            .len();

        // Stores unreachable: DynamoDB, Parameter Store and STS at an
        // address nothing listens on (KMS and the JWKS stay reachable).
        let dead = format!(
            "http://{}",
            tenant_config_testkit::net::dead_address().await
        );
        let mut down = env.clone();
        for service in ["DYNAMODB", "SSM", "STS"] {
            let name = format!("AWS_ENDPOINT_URL_{service}");
            down.retain(|(existing, _)| *existing != name);
            down.push((name, dead.clone()));
        }
        // The baseline: the same start without a snapshot, stores reachable.
        let cold: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| name != "AGENT_SNAPSHOT_FILE")
            .cloned()
            .collect();
        let mut from_snapshot = Vec::with_capacity(starts);
        let mut from_stores = Vec::with_capacity(starts);
        for _ in 0..starts {
            let (elapsed, stale) = first_answer(&binary, &down, &token, &directory).await?;
            if !stale {
                return Err("with the stores down, the answer was not marked stale".into());
            }
            from_snapshot.push(elapsed);
            let (elapsed, stale) = first_answer(&binary, &cold, &token, &directory).await?;
            if stale {
                return Err("with the stores up, the answer was marked stale".into());
            }
            from_stores.push(elapsed);
        }
        let _ = std::fs::remove_dir_all(&directory);
        let (snapshot_start, stores_start) = (Summary::of(from_snapshot), Summary::of(from_stores));
        self.compare(Comparison {
            title: "18. Agent start → first answer, stores down (snapshot), p50".into(),
            ours: snapshot_start.p50.as_secs_f64(),
            ours_label: human(snapshot_start.p50),
            baseline_name: "target".into(),
            baseline: TARGET.as_secs_f64(),
            baseline_label: human(TARGET),
        });
        self.section(
            "18. Agent warm start (encrypted snapshot)",
            vec![
                Row {
                    figure: "process spawn → first GetConfig answer, stores unreachable, from the snapshot (stale), p50 / max".into(),
                    ours: format!("{} / {}", human(snapshot_start.p50), human(snapshot_start.p99)),
                    baseline: format!("no snapshot, stores reachable (from DynamoDB): {} / {}", human(stores_start.p50), human(stores_start.p99)),
                    target: format!("≤ {}", human(TARGET)),
                    met: Some(snapshot_start.p99 <= TARGET),
                },
                Row {
                    figure: "the sealed snapshot file".into(),
                    ours: format!("{sealed} bytes"),
                    baseline: "—".into(),
                    target: "".into(),
                    met: None,
                },
            ],
            vec![format!(
                "{starts} starts of each kind, alternating, of the {profile} `config-agent` binary on this machine: the clock starts before the process is spawned and stops at the first successful GetConfig (retried every 2 ms on a fresh connection), so it holds process start, settings, opening the snapshot (moto's KMS Decrypt of its data key, AES-256-GCM), the token check (the JWKS fetched from moto) and the read. Stores down: DynamoDB, Parameter Store and STS endpoints at a loopback port nothing listens on, so every store call is refused at once. p99 of {starts} is their maximum.",
            )],
        );
        Ok(())
    }
}

/// Spawns an agent with `env` and times it to its first answer; whether
/// that answer was marked stale.
async fn first_answer(
    binary: &Path,
    env: &[(String, String)],
    token: &str,
    logs: &Path,
) -> Result<(Duration, bool), String> {
    let (port, refresh_port) = two_free_ports().map_err(|e| e.to_string())?;
    let log =
        std::fs::File::create(logs.join(format!("agent-{port}.log"))).map_err(|e| e.to_string())?;
    let mut command = Command::new(binary);
    command
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AGENT_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "AGENT_REFRESH_LISTEN_ADDR",
            format!("127.0.0.1:{refresh_port}"),
        )
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log));
    let started = Instant::now();
    let _agent = Started(
        command
            .spawn()
            .map_err(|e| format!("spawn config-agent: {e}"))?,
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| "token header".to_owned())?;
    loop {
        if started.elapsed() > GIVE_UP {
            return Err(format!(
                "no answer within {GIVE_UP:?} (logs in {})",
                logs.display()
            ));
        }
        let answer = async {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_millis(50))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut request = tonic::Request::new(GetConfigRequest {
                service: SERVICE.into(),
                key: KEY.into(),
            });
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            ConfigReaderClient::new(channel)
                .get_config(request)
                .await
                .map_err(|e| e.to_string())
        };
        if let Ok(answer) = answer.await {
            let stale = answer
                .into_inner()
                .value
                .is_some_and(|v| v.stale_age_ms.is_some());
            return Ok((started.elapsed(), stale));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
