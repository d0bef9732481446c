//! Stale registrations: an agent that crashed without deregistering stays
//! HEALTHY in Cloud Map (a custom health check is only what the agent itself
//! reports), so every later change would fail on it, cost a full deadline and
//! land in the DLQ. config-refresh counts consecutive failed deliveries per
//! instance; once an instance has failed `failures` times in a row over at
//! least `min_age`, it is marked UNHEALTHY (DiscoverInstances stops returning
//! it) and no longer counts as a delivery failure. A live agent re-reports
//! HEALTHY on its own (see the agent lifecycle), so one that was only paused or
//! partitioned comes back; meanwhile it converges through the change journal.
//!
//! Streaks live in the container's memory: a cold container starts counting
//! again, which only delays the marking.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fanout::FanoutReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleSettings {
    /// Consecutive failed deliveries before an instance is marked.
    pub failures: u32,
    /// And at least this long since the first of them.
    pub min_age: Duration,
}

impl Default for StaleSettings {
    fn default() -> Self {
        Self {
            failures: 3,
            min_age: Duration::from_secs(60),
        }
    }
}

struct Streak {
    failures: u32,
    since: Instant,
}

/// Consecutive delivery failures per instance id.
pub struct StaleTracker {
    settings: StaleSettings,
    streaks: Mutex<HashMap<String, Streak>>,
}

impl StaleTracker {
    pub fn new(settings: StaleSettings) -> Self {
        Self {
            settings,
            streaks: Mutex::new(HashMap::new()),
        }
    }

    /// Records one fan-out; returns the ids that have now failed long enough
    /// to be marked (their streaks are forgotten: a later failure starts anew).
    pub fn record(&self, report: &FanoutReport) -> Vec<String> {
        let Ok(mut streaks) = self.streaks.lock() else {
            return Vec::new();
        };
        for id in &report.acknowledged {
            streaks.remove(id);
        }
        let now = Instant::now();
        let mut stale = Vec::new();
        for (id, _) in &report.failed {
            let streak = streaks.entry(id.clone()).or_insert(Streak {
                failures: 0,
                since: now,
            });
            streak.failures += 1;
            if streak.failures >= self.settings.failures
                && now.duration_since(streak.since) >= self.settings.min_age
            {
                stale.push(id.clone());
            }
        }
        for id in &stale {
            streaks.remove(id);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ok: &[&str], failed: &[&str]) -> FanoutReport {
        FanoutReport {
            instances: ok.len() + failed.len(),
            ok: ok.len(),
            acknowledged: ok.iter().map(|s| s.to_string()).collect(),
            failed: failed
                .iter()
                .map(|s| (s.to_string(), "refused".to_owned()))
                .collect(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn an_instance_is_stale_after_n_consecutive_failures_and_the_minimum_time() {
        let tracker = StaleTracker::new(StaleSettings {
            failures: 3,
            min_age: Duration::from_millis(50),
        });
        assert!(tracker.record(&report(&["a"], &["dead"])).is_empty());
        assert!(tracker.record(&report(&["a"], &["dead"])).is_empty());
        // Three failures, but too soon.
        assert!(tracker.record(&report(&["a"], &["dead"])).is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tracker.record(&report(&["a"], &["dead"])), vec!["dead"]);
        // Marked once; a later failure starts a new streak.
        assert!(tracker.record(&report(&[], &["dead"])).is_empty());
    }

    #[test]
    fn one_acknowledged_delivery_resets_the_streak() {
        let tracker = StaleTracker::new(StaleSettings {
            failures: 2,
            min_age: Duration::ZERO,
        });
        assert!(tracker.record(&report(&[], &["flaky"])).is_empty());
        assert!(tracker.record(&report(&["flaky"], &[])).is_empty());
        assert!(tracker.record(&report(&[], &["flaky"])).is_empty());
        assert_eq!(tracker.record(&report(&[], &["flaky"])), vec!["flaky"]);
    }
}
