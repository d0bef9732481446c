//! Local AWS harness for tenant-config: moto server, `cargo lambda watch`,
//! seeding, and the local stack shared by the demo and the end-to-end tests.

pub mod admin;
pub mod agent;
pub mod moto;
pub mod process;
pub mod seed;
pub mod stack;
pub mod walkthrough;
pub mod watch;
