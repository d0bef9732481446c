//! (4) Refresh fan-out to in-process agents, ours vs. one agent after another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tenant_config_admin::events::change_event;
use tenant_config_local_stack::stack::{LocalStack, PARAMETER_ROOT, SERVICE};
use tenant_config_shared::StoreKind;
use tenant_config_shared::refresh::discovery::Instance;
use tenant_config_shared::refresh::fanout::{Fanout, FanoutSettings};
use tenant_config_shared::refresh::handler::Refresher;
use tenant_config_shared::refresh::journal::MemoryJournal;
use tenant_config_shared::refresh::proto::config_refresh_client::ConfigRefreshClient;
use tenant_config_shared::refresh::proto::{Operation, RefreshRequest};
use tenant_config_shared::refresh::signing::{
    RefreshKey, SIGNATURE_HEADER, TIMESTAMP_HEADER, TrustedKeys, sign, unix_ms_now,
};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::agent::{TestAgent, hour_long_reads};
use tenant_config_testkit::discovery::{StaticInstances, instances};
use tenant_config_testkit::identity;
use tenant_config_testkit::net::SilentListener;
use tenant_config_testkit::values::{item, plain};

use crate::baseline::ratio;
use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

/// Slack allowed on "adds one deadline" for timer granularity.
const TIMER_RESOLUTION: Duration = Duration::from_millis(5);

impl Report {
    /// (4) Refresh fan-out to in-process agents, ours vs. one-after-another.
    pub async fn fanout(&mut self, stack: &LocalStack) -> Result<(), String> {
        let key = RefreshKey::from_seed("bench", &[0x42; 32]).map_err(|e| e.to_string())?;
        let largest = self.sizes.fanout_sizes.iter().copied().max().unwrap_or(10);
        let mut agents = Vec::with_capacity(largest);
        for _ in 0..largest {
            agents.push(memory_agent(key.trusted()).await);
        }
        let silent = SilentListener::start().await;
        let settings = FanoutSettings::default();
        let mut rows = Vec::new();
        let mut notes = vec![format!(
            "In-process tonic agents on loopback ports; ours = `Refresher::handle` (config-refresh's handler: parse, classify, fan out with concurrency {}, deadline {:?}, one retry for transient codes) with channels warm from a previous event and an in-memory journal (figure 5 includes the real one), median of {} runs. Dead = an address that accepts TCP but never answers, so only a deadline ends the call.",
            settings.concurrency, settings.deadline, self.sizes.fanout_repeats
        )];
        notes.push("Baseline: the original sample's strategy, one agent after another, each call on a new connection with a 10 s deadline.".into());
        let _ = stack;
        let cases: Vec<(usize, bool, FanoutSettings)> = self
            .sizes
            .fanout_sizes
            .iter()
            .flat_map(|&n| [(n, false, settings), (n, true, settings)])
            .chain(
                // The same comparison with a 1 s deadline (REFRESH_DEADLINE_MS=1000).
                self.sizes.fanout_sizes.contains(&100).then_some((
                    100,
                    true,
                    FanoutSettings {
                        deadline: Duration::from_secs(1),
                        ..settings
                    },
                )),
            )
            .collect();
        let mut none_dead: HashMap<usize, Duration> = HashMap::new();
        for (n, dead, settings) in cases {
            let mut addresses: Vec<SocketAddr> = agents[..n].iter().map(|a| a.address).collect();
            if dead {
                addresses[n / 2] = silent.address;
            }
            let instances: Vec<Instance> = instances(&addresses);
            let refresher = Refresher::new(
                PARAMETER_ROOT,
                KeyRouter::default(),
                Arc::new(StaticInstances(instances.clone())),
                Arc::new(Fanout::new(key.clone(), settings)),
                Arc::new(MemoryJournal::new()),
            );
            let event = || {
                change_event(
                    "Update",
                    "/config-service/tenant-a/billing/param_config_endpoint",
                    "",
                    Some("String"),
                )
            };
            let _ = refresher.handle(event()).await; // connect channels
            let mut runs = Vec::new();
            for _ in 0..self.sizes.fanout_repeats {
                let started = Instant::now();
                let result = refresher.handle(event()).await;
                runs.push(started.elapsed());
                if result.is_ok() == dead {
                    return Err(format!("fan-out N={n} dead={dead}: unexpected {result:?}"));
                }
            }
            let ours = Summary::of(runs).p50;
            if !dead {
                none_dead.insert(n, ours);
            }
            let serial = serial_refresh(&key, &instances).await;
            let label = if dead {
                format!("one dead, deadline {:?}", settings.deadline)
            } else {
                "none dead".to_owned()
            };
            if n >= 100 && settings.deadline == FanoutSettings::default().deadline {
                self.compare(Comparison {
                    title: format!("4. Refresh fan-out, N = {n}, {label}"),
                    ours: ours.as_secs_f64(),
                    ours_label: human(ours),
                    baseline_name: "serial, 10 s deadline".into(),
                    baseline: serial.as_secs_f64(),
                    baseline_label: format!("{} ({:.1}× ours)", human(serial), ratio(serial, ours)),
                });
            }
            let mut row = Row {
                figure: format!("N = {n}, {label}"),
                ours: human(ours),
                baseline: format!("{} ({:.1}× ours)", human(serial), ratio(serial, ours)),
                target: String::new(),
                met: None,
            };
            if n == 1000 && !dead {
                row.target = "≤ 300 ms".into();
                row.met = Some(ours <= Duration::from_millis(300));
            }
            if dead {
                let added = ours.saturating_sub(none_dead.get(&n).copied().unwrap_or_default());
                // tokio's timers fire on a 1 ms wheel, rounding up: a deadline
                // ends up to a few ms late, which is not a second deadline.
                let adds_one_deadline = added <= settings.deadline + TIMER_RESOLUTION;
                row.ours = format!("{} (adds {})", human(ours), human(added));
                row.target = format!(
                    "adds ≤ {:?} (+{:?} timer resolution)",
                    settings.deadline, TIMER_RESOLUTION
                );
                row.met = Some(adds_one_deadline);
                if n == 100 {
                    row.target.push_str("; ≥ 10× faster than serial");
                    row.met = Some(adds_one_deadline && ratio(serial, ours) >= 10.0);
                }
            }
            if n == 100 && dead && settings.deadline == FanoutSettings::default().deadline {
                let live_serial = serial.saturating_sub(Duration::from_secs(10));
                notes.push(format!(
                    "Why N = 100 with one dead at the default deadline is {:.1}× and not 10×: {} of our {} is the dead agent's deadline ({:?}); the serial run is its 10 s deadline plus {} for the 99 live agents. Both are dominated by their deadlines, so the ratio is bounded by 10 s / {:?} ≈ {:.0}×. The same code with a 1 s deadline (last row) meets it; the default stays 2 s as the refresh-path issue set it.",
                    ratio(serial, ours),
                    human(ours.saturating_sub(none_dead.get(&n).copied().unwrap_or_default())),
                    human(ours),
                    settings.deadline,
                    human(live_serial),
                    settings.deadline,
                    10.0 / settings.deadline.as_secs_f64(),
                ));
            }
            rows.push(row);
        }
        // "one dead adds ≤ the deadline": compare each one-dead row with its none-dead twin.
        self.section(
            "4. Refresh fan-out (handler start → all acknowledged)",
            rows,
            notes,
        );
        Ok(())
    }
}

/// An agent over an in-memory store (for fan-out timing: no store I/O).
async fn memory_agent(keys: TrustedKeys) -> TestAgent {
    let store = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    store.put(
        &item("tenant-a", SERVICE, "param_config_endpoint"),
        plain(json!("v")),
    );
    TestAgent::start_with(identity::verifier(), hour_long_reads(store), keys).await
}

/// The original sample's strategy: one agent after another, a new connection
/// each, 10 s deadline each.
async fn serial_refresh(key: &RefreshKey, instances: &[Instance]) -> Duration {
    let deadline = Duration::from_secs(10);
    let started = Instant::now();
    for (i, instance) in instances.iter().enumerate() {
        let request = RefreshRequest {
            tenant_id: "tenant-a".into(),
            service: SERVICE.into(),
            key: "param_config_endpoint".into(),
            operation: Operation::Update as i32,
            event_id: format!("serial-{}-{i}", unix_ms_now()),
            event_time_unix_ms: unix_ms_now(),
            value_type: String::new(),
            target: String::new(),
        };
        let call = async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", instance.address))
                    .map_err(|e| e.to_string())?
                    .connect_timeout(deadline)
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
            let (timestamp, signature) = sign(key, &request, unix_ms_now());
            let mut call = tonic::Request::new(request.clone());
            call.metadata_mut()
                .insert(TIMESTAMP_HEADER, timestamp.parse().map_err(|_| "ts")?);
            call.metadata_mut()
                .insert(SIGNATURE_HEADER, signature.parse().map_err(|_| "sig")?);
            ConfigRefreshClient::new(channel)
                .refresh(call)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let _ = tokio::time::timeout(deadline, call).await;
    }
    started.elapsed()
}
