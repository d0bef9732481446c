//! The end-to-end suites, one module each, built as one test binary.
//! `tests/run.sh` runs each module as a suite of its own, side by side;
//! `cargo test -p tenant-config-e2e --test e2e verify::` runs one by hand.

mod adapters;
mod admin_cli;
mod agent_service;
mod cfn;
mod change_feed;
mod client;
mod convergence;
mod docs;
mod fairness;
mod faults;
mod iam_matrix;
mod jwt_parts;
mod layers;
mod ofrep;
mod own_values;
mod read_path;
mod refresh_path;
mod rollouts;
mod sam_local;
mod secrets_in_logs;
mod service_grants;
mod soak;
mod template;
mod verify;
mod warm_start;
mod watch;
mod write_api;
mod writers;
