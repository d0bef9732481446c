//! The agent protocol's client stubs and messages (`tenantconfig.v1`).
// The change feed's messages (ChangeNotice) share the file; the client
// does not follow the feed (its agent does), so they go unused here.
#![allow(clippy::all, missing_docs, dead_code)]

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
