//! The agent protocol's client stubs and messages (`tenantconfig.v1`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("tenantconfig.v1");
