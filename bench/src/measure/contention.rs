//! (2) Store calls for concurrent cold reads of one key, vs. Powertools from threads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::future::join_all;
use tenant_config_local_stack::stack::{LocalStack, PARAMETER_ROOT, SERVICE};
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::settings::LAMBDA_CACHE_DEFAULTS;
use tenant_config_shared::store::{MemoryStore, ParameterStore};
use tenant_config_shared::{ConfigKey, ServiceName, StoreKind, TenantId};

use crate::baseline::{ns, python_baseline, settings};
use crate::chart::Comparison;
use crate::probes::CallCounter;
use crate::report::{Report, Row};
use crate::stats::human;

impl Report {
    /// (2) Store calls for concurrent cold reads of one key.
    pub async fn contention(&mut self, stack: &LocalStack) -> Result<(), String> {
        let counter = CallCounter::default();
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(&stack.aws)
                .interceptor(counter.clone())
                .build(),
        );
        let settings = settings(stack, LAMBDA_CACHE_DEFAULTS)?;
        let reads = ConfigReads::new(
            KeyRouter::default(),
            CachedStore::new(
                Arc::new(MemoryStore::new(StoreKind::DynamoDb)),
                settings.dynamodb_cache,
            ),
            CachedStore::new(
                Arc::new(ParameterStore::new(ssm, PARAMETER_ROOT)),
                settings.parameter_cache,
            ),
        );
        stack
            .put_parameter("tenant-a", "param_config_contention", "cold")
            .await?;
        let tenant = TenantId::parse("tenant-a").map_err(|e| e.to_string())?;
        let service = ServiceName::parse(SERVICE).map_err(|e| e.to_string())?;
        let key = ConfigKey::parse("param_config_contention").map_err(|e| e.to_string())?;
        let readers = self.sizes.contention_readers;
        let started = Instant::now();
        let results = join_all((0..readers).map(|_| reads.get(&tenant, &service, &key))).await;
        let took = started.elapsed();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        if ok != readers {
            return Err(format!("contention: {ok} of {readers} reads succeeded"));
        }
        let ours = counter.0.load(Ordering::SeqCst);
        let baseline = python_baseline(
            stack,
            &[
                "contention".into(),
                "--key".into(),
                "param_config_contention".into(),
                "--threads".into(),
                readers.to_string(),
            ],
        )?;
        let theirs = baseline["store_calls"].as_u64().unwrap_or(0);
        self.compare(Comparison {
            title: format!("2. GetParameter calls, {readers} concurrent cold reads"),
            ours: ours as f64,
            ours_label: ours.to_string(),
            baseline_name: "Powertools, threads".into(),
            baseline: theirs as f64,
            baseline_label: theirs.to_string(),
        });
        self.section(
            "2. Backend calls under contention",
            vec![
                Row {
                    figure: format!("GetParameter calls for {readers} concurrent cold reads of one key"),
                    ours: ours.to_string(),
                    baseline: theirs.to_string(),
                    target: "exactly 1".into(),
                    met: Some(ours == 1),
                },
                Row {
                    figure: "time until all readers had the value".into(),
                    ours: human(took),
                    baseline: human(ns(&baseline, "elapsed_ns")),
                    target: "".into(),
                    met: None,
                },
            ],
            vec![
                "Ours: `ConfigReads::get` from 200 tasks at once; calls counted by an SDK interceptor on the SSM client (every request put on the wire, retries included).".into(),
                "Baseline: Powertools `SSMProvider.get(max_age=300)` from 200 threads released by a barrier; calls counted with botocore's `before-call.ssm.GetParameter` event.".into(),
            ],
        );
        Ok(())
    }
}
