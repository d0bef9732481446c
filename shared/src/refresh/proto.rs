//! Generated protocol types and gRPC stubs for `tenantconfig.v1`.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("tenantconfig.v1");

/// Prints everything but the value: a secret never reaches a log line
/// through `{:?}`.
impl std::fmt::Debug for GetSecretResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetSecretResponse")
            .field("service", &self.service)
            .field("key", &self.key)
            .field("value_json", &"<redacted>")
            .field("source", &self.source)
            .field("version", &self.version)
            .finish()
    }
}
