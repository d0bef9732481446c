//! The refresh path: change events, their signed delivery to every agent found
//! in Cloud Map, and the agents' side of it.

pub mod discovery;
pub mod event;
pub mod fanout;
pub mod handler;
pub mod key;
pub mod proto;
pub mod signing;
