//! CloudWatch metrics as Embedded Metric Format (EMF) log lines.
//!
//! Counters and latency samples are recorded anywhere in the process (atomics,
//! no locks on the counting path) and written out by [`Metrics::flush`] as at
//! most three JSON lines: one per store (dimensions `Service`+`Store` and
//! `Service`) and one for the process (`Service`). CloudWatch Logs turns those
//! lines into metrics with no API call: in Lambda every stdout line reaches the
//! log group; the agent's lines need the CloudWatch agent or FireLens, which
//! the README says. config-api flushes after every request, config-refresh
//! after every invocation, the agent once a minute.
//!
//! The format: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::kinds::StoreKind;

/// The namespace every metric goes to unless `METRICS_NAMESPACE` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "TenantConfig";

/// EMF takes at most 100 values per metric in one line.
const MAX_SAMPLES: usize = 100;

/// A count kept per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCounter {
    CacheHits,
    CacheMisses,
    StoreCalls,
    StoreErrors,
    /// Answers given from the last good value because the store failed.
    StaleAnswers,
    /// Reads that failed fast because the key's store failed moments ago.
    FastFailures,
}

impl StoreCounter {
    const ALL: [StoreCounter; 6] = [
        StoreCounter::CacheHits,
        StoreCounter::CacheMisses,
        StoreCounter::StoreCalls,
        StoreCounter::StoreErrors,
        StoreCounter::StaleAnswers,
        StoreCounter::FastFailures,
    ];

    fn name(self) -> &'static str {
        match self {
            StoreCounter::CacheHits => "CacheHits",
            StoreCounter::CacheMisses => "CacheMisses",
            StoreCounter::StoreCalls => "StoreCalls",
            StoreCounter::StoreErrors => "StoreErrors",
            StoreCounter::StaleAnswers => "StaleAnswers",
            StoreCounter::FastFailures => "FastFailures",
        }
    }
}

/// A count kept for the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    TokenCacheHits,
    TokenCacheMisses,
    RefreshDeliveries,
    RefreshFailures,
    /// Degraded answers (stale or 5xx) that asked for a stage cache flush.
    StageFlushRequests,
    /// Agents Cloud Map returned to config-refresh (per invocation).
    DiscoveredInstances,
    /// Of those, agents outside `AGENT_NETWORKS`, not pushed to.
    IgnoredInstances,
    /// Refresh calls an agent refused (unsigned, foreign key, stale, forged).
    RefusedRefreshes,
    /// STS AssumeRole calls for tenant credentials (token vending).
    AssumeRoles,
    /// Changes config-refresh journaled (and flushed) but pushed to no agent,
    /// because its signing key is missing or unusable.
    UnpushedChanges,
    /// Store calls refused because their tenant had spent its share (429).
    TenantLimitedCalls,
    /// Writes refused by a tenant's write quota (429).
    WriteQuotaRefusals,
    /// Rollout steps taken by the driver (a step reached, a bake started,
    /// a rollout finished).
    RolloutSteps,
    /// Rollouts rolled back (a gate in alarm, an abort, a value that could
    /// not land).
    RolloutRollbacks,
}

impl Counter {
    const ALL: [Counter; 14] = [
        Counter::TokenCacheHits,
        Counter::TokenCacheMisses,
        Counter::RefreshDeliveries,
        Counter::RefreshFailures,
        Counter::StageFlushRequests,
        Counter::DiscoveredInstances,
        Counter::IgnoredInstances,
        Counter::RefusedRefreshes,
        Counter::AssumeRoles,
        Counter::UnpushedChanges,
        Counter::TenantLimitedCalls,
        Counter::WriteQuotaRefusals,
        Counter::RolloutSteps,
        Counter::RolloutRollbacks,
    ];

    fn name(self) -> &'static str {
        match self {
            Counter::TokenCacheHits => "TokenCacheHits",
            Counter::TokenCacheMisses => "TokenCacheMisses",
            Counter::RefreshDeliveries => "RefreshDeliveries",
            Counter::RefreshFailures => "RefreshFailures",
            Counter::StageFlushRequests => "StageFlushRequests",
            Counter::DiscoveredInstances => "DiscoveredInstances",
            Counter::IgnoredInstances => "IgnoredInstances",
            Counter::RefusedRefreshes => "RefusedRefreshes",
            Counter::AssumeRoles => "AssumeRoles",
            Counter::UnpushedChanges => "UnpushedChanges",
            Counter::TenantLimitedCalls => "TenantLimitedCalls",
            Counter::WriteQuotaRefusals => "WriteQuotaRefusals",
            Counter::RolloutSteps => "RolloutSteps",
            Counter::RolloutRollbacks => "RolloutRollbacks",
        }
    }
}

const STORES: [StoreKind; 2] = [StoreKind::DynamoDb, StoreKind::ParameterStore];

fn store_index(store: StoreKind) -> usize {
    match store {
        StoreKind::DynamoDb => 0,
        StoreKind::ParameterStore => 1,
    }
}

/// The process's metrics. One per process ([`metrics()`]); tests build their own.
#[derive(Default)]
pub struct Metrics {
    store_counts: [[AtomicU64; StoreCounter::ALL.len()]; 2],
    counts: [AtomicU64; Counter::ALL.len()],
    /// Store call latencies in milliseconds since the last flush (first 100).
    latencies: [Mutex<Vec<f64>>; 2],
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process-wide metrics every module records into.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    pub fn store(&self, store: StoreKind, counter: StoreCounter) {
        self.add_store(store, counter, 1);
    }

    pub fn add_store(&self, store: StoreKind, counter: StoreCounter, n: u64) {
        let index = StoreCounter::ALL
            .iter()
            .position(|c| *c == counter)
            .unwrap_or_default();
        self.store_counts[store_index(store)][index].fetch_add(n, Ordering::Relaxed);
    }

    pub fn count(&self, counter: Counter) {
        self.add(counter, 1);
    }

    pub fn add(&self, counter: Counter, n: u64) {
        let index = Counter::ALL
            .iter()
            .position(|c| *c == counter)
            .unwrap_or_default();
        self.counts[index].fetch_add(n, Ordering::Relaxed);
    }

    /// What `counter` has counted since the last [`Self::take_lines`].
    pub fn pending(&self, counter: Counter) -> u64 {
        let index = Counter::ALL
            .iter()
            .position(|c| *c == counter)
            .unwrap_or_default();
        self.counts[index].load(Ordering::Relaxed)
    }

    /// One store call took `elapsed` (successful or not).
    pub fn store_latency(&self, store: StoreKind, elapsed: Duration) {
        if let Ok(mut samples) = self.latencies[store_index(store)].lock()
            && samples.len() < MAX_SAMPLES
        {
            samples.push(elapsed.as_secs_f64() * 1000.0);
        }
    }

    /// Takes everything recorded since the last call and renders it as EMF
    /// lines for `service` (nothing when nothing was recorded).
    pub fn take_lines(&self, namespace: &str, service: &str) -> Vec<String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let mut lines = Vec::new();
        for store in STORES {
            let i = store_index(store);
            let mut values = Map::new();
            let mut names = Vec::new();
            for (counter, slot) in StoreCounter::ALL.iter().zip(&self.store_counts[i]) {
                let n = slot.swap(0, Ordering::Relaxed);
                if n > 0 {
                    names.push((counter.name(), "Count"));
                    values.insert(counter.name().to_owned(), n.into());
                }
            }
            let samples = self.latencies[i]
                .lock()
                .map(|mut s| std::mem::take(&mut *s))
                .unwrap_or_default();
            if !samples.is_empty() {
                names.push(("StoreLatency", "Milliseconds"));
                values.insert("StoreLatency".to_owned(), json!(samples));
            }
            if names.is_empty() {
                continue;
            }
            values.insert("Store".to_owned(), store.as_str().into());
            lines.push(emf_line(
                namespace,
                service,
                timestamp,
                &[&["Service", "Store"], &["Service"]],
                &names,
                values,
            ));
        }
        let mut values = Map::new();
        let mut names = Vec::new();
        for (counter, slot) in Counter::ALL.iter().zip(&self.counts) {
            let n = slot.swap(0, Ordering::Relaxed);
            if n > 0 {
                names.push((counter.name(), "Count"));
                values.insert(counter.name().to_owned(), n.into());
            }
        }
        if !names.is_empty() {
            lines.push(emf_line(
                namespace,
                service,
                timestamp,
                &[&["Service"]],
                &names,
                values,
            ));
        }
        lines
    }

    /// Writes what was recorded since the last flush to stdout, one EMF
    /// document per line.
    pub fn flush(&self, namespace: &str, service: &str) {
        use std::io::Write;
        let lines = self.take_lines(namespace, service);
        if lines.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        for line in lines {
            // A metrics line that cannot be written is not worth failing a request.
            let _ = writeln!(out, "{line}");
        }
    }
}

fn emf_line(
    namespace: &str,
    service: &str,
    timestamp: u64,
    dimensions: &[&[&str]],
    names: &[(&str, &str)],
    mut values: Map<String, Value>,
) -> String {
    let metrics: Vec<Value> = names
        .iter()
        .map(|(name, unit)| json!({"Name": name, "Unit": unit}))
        .collect();
    values.insert("Service".to_owned(), service.into());
    values.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": dimensions,
                "Metrics": metrics,
            }],
        }),
    );
    Value::Object(values).to_string()
}

/// Where and as what a process publishes its metrics.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub namespace: String,
    pub service: &'static str,
}

impl MetricsSettings {
    /// `METRICS_NAMESPACE` or [`DEFAULT_NAMESPACE`].
    pub fn from_env(service: &'static str) -> Self {
        Self {
            namespace: std::env::var("METRICS_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            service,
        }
    }

    /// Flushes the process metrics under these settings.
    pub fn flush(&self) {
        metrics().flush(&self.namespace, self.service);
    }

    /// Flushes every `interval` until the process ends (for long-running processes).
    pub fn flush_every(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                self.flush();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_counts_become_emf_documents_and_reset() {
        // GIVEN a few reads, one failure and one stale answer on Parameter Store
        let metrics = Metrics::default();
        metrics.add_store(StoreKind::ParameterStore, StoreCounter::CacheHits, 3);
        metrics.store(StoreKind::ParameterStore, StoreCounter::StoreErrors);
        metrics.store(StoreKind::ParameterStore, StoreCounter::StaleAnswers);
        metrics.store_latency(StoreKind::ParameterStore, Duration::from_millis(12));
        metrics.count(Counter::TokenCacheHits);
        // WHEN they are taken
        let lines = metrics.take_lines("TenantConfig", "config-api");
        // THEN one line for the store, one for the process, both valid EMF
        assert_eq!(lines.len(), 2, "{lines:?}");
        let store: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(store["Store"], "parameter-store");
        assert_eq!(store["Service"], "config-api");
        assert_eq!(store["CacheHits"], 3);
        assert_eq!(store["StaleAnswers"], 1);
        assert_eq!(store["StoreLatency"], json!([12.0]));
        let directive = &store["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "TenantConfig");
        assert_eq!(
            directive["Dimensions"],
            json!([["Service", "Store"], ["Service"]])
        );
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        // every metric named in the directive is a member of the document
        for name in &names {
            assert!(store.get(name).is_some(), "{name}");
        }
        assert!(!names.contains(&"CacheMisses"), "zero counts are left out");
        assert!(store["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        let process: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(process["TokenCacheHits"], 1);
        // AND the next flush has nothing to say
        assert!(metrics.take_lines("TenantConfig", "config-api").is_empty());
    }

    #[test]
    fn latency_samples_are_capped_at_what_one_line_may_carry() {
        let metrics = Metrics::default();
        for _ in 0..150 {
            metrics.store_latency(StoreKind::DynamoDb, Duration::from_millis(1));
        }
        let lines = metrics.take_lines("N", "s");
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["StoreLatency"].as_array().unwrap().len(), MAX_SAMPLES);
    }
}
