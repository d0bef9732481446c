//! How much of everything to do: the full run, or the smoke run of the test command.

use std::time::Duration;

/// How much of everything to do.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub warm_iterations: usize,
    pub baseline_iterations: usize,
    pub contention_readers: usize,
    pub http_requests: usize,
    pub http_load: Duration,
    pub fanout_sizes: &'static [usize],
    pub fanout_repeats: usize,
    pub propagation_agents: usize,
    /// API writes timed (figure 9), of which the first `lifecycle_converge`
    /// wait for every reader; rounds of the 40-key service read.
    pub lifecycle_writes: usize,
    pub lifecycle_converge: usize,
    pub lifecycle_service_rounds: usize,
    /// Tenants read cold and warm with vended credentials (figure 10).
    pub vending_tenants: usize,
    /// Registered tenants a blast radius is weighed over, in turns, and
    /// the keys' overriding tenants (figure 13).
    pub blast_tenants: &'static [usize],
    pub blast_overrides: &'static [usize],
    pub smoke: bool,
}

pub const FULL: Sizes = Sizes {
    warm_iterations: 200_000,
    baseline_iterations: 20_000,
    contention_readers: 200,
    http_requests: 300,
    http_load: Duration::from_secs(10),
    fanout_sizes: &[10, 100, 1000],
    fanout_repeats: 5,
    propagation_agents: 100,
    lifecycle_writes: 200,
    lifecycle_converge: 30,
    lifecycle_service_rounds: 3,
    vending_tenants: 200,
    blast_tenants: &[1_000, 10_000],
    blast_overrides: &[100, 1_000],
    smoke: false,
};

/// The test command's: enough of each to run every measurement and its
/// baseline once (figures not meaningful), as little as that; it shares two
/// cores with the other suites.
pub const SMOKE: Sizes = Sizes {
    warm_iterations: 2_000,
    baseline_iterations: 200,
    contention_readers: 50,
    http_requests: 10,
    http_load: Duration::from_secs(1),
    fanout_sizes: &[4],
    fanout_repeats: 1,
    propagation_agents: 3,
    lifecycle_writes: 5,
    lifecycle_converge: 2,
    lifecycle_service_rounds: 1,
    vending_tenants: 3,
    blast_tenants: &[20, 40],
    blast_overrides: &[5],
    smoke: true,
};
