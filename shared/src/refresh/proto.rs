//! Generated protocol types and gRPC stubs for `tenantconfig.v1`.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("tenantconfig.v1");
