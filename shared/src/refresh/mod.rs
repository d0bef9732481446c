//! The change path: change sources (Parameter Store events, DynamoDB Streams)
//! become [`change::ChangeRecord`]s, delivered as signed Refresh calls to every
//! agent found in Cloud Map.

pub mod agent_tls;
pub mod change;
pub mod discovery;
pub mod event;
pub mod fanout;
pub mod handler;
pub mod journal;
pub mod journal_table;
pub mod key;
pub mod networks;
pub mod proto;
pub mod signing;
pub mod stage_cache;
pub mod stale;
pub mod stream;
