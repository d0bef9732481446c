//! The local stack: the whole system on one machine, against moto server.
//! The demo (`local-stack`), the end-to-end tests and the benchmark all start
//! it through [`stack::LocalStack`].
//!
//! - [`moto`]: moto server on a free loopback port (local AWS)
//! - [`seed`]: what the SAM template creates in AWS: table, user pool and
//!   users, refresh key, Cloud Map namespace and service
//! - [`watch`]: config-api and config-refresh under `cargo lambda watch`
//! - [`agent`]: `config-agent` processes registered in Cloud Map
//! - [`broker`]: the change feed's MQTT broker (rumqttd), playing AWS IoT Core
//! - [`stream`]: the table's DynamoDB stream delivered to config-refresh, as
//!   the Lambda event source mapping does in AWS (moto runs none)
//! - [`process`]: child process groups that stop with their handle
//! - [`fault_proxy`]: throttles, refuses or stalls one AWS service or the JWKS in front of moto
//! - [`stage_cache`]: a stand-in for API Gateway's FlushStageCache, counting flushes
//! - [`queue`]: the flush queue delivered to config-refresh in batches, as the
//!   SQS event source mapping does in AWS
//! - [`published`]: the stack as an operator sees it: a CloudFormation stack
//!   with the template's outputs, its alarms, alarm topic and DLQ
//! - [`stack`]: all of the above, seeded with the demo's tenants and values
//! - [`layer_seeds`]: the shared layers, tiers and registrations it starts with
//! - [`walkthrough`]: the demo's story, checked step by step
//!   ([`layers_walkthrough`]: its layered part)
//! - [`guide`]: what the demo prints for a person to try
//! - [`bridge`], [`sam`]: `sam local`'s containers reaching the stack through
//!   the docker bridge, and the inputs SAM runs them with

pub mod agent;
pub mod bridge;
pub mod broker;
pub mod fault_proxy;
pub mod guide;
pub mod layer_seeds;
pub mod layers_walkthrough;
pub mod moto;
pub mod process;
pub mod published;
pub mod queue;
pub mod sam;
pub mod scheduler;
pub mod seed;
pub mod stack;
pub mod stage_cache;
pub mod stream;
pub mod walkthrough;
pub mod watch;
