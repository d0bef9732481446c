//! The parts of a JWT, for the suites that forge or edit tokens: no tests
//! of its own.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// A token's header or payload, decoded.
pub fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A header or payload, encoded as a token carries it.
pub fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A real token whose payload was edited to claim `tenant`, its signature
/// left as it was.
pub fn claiming_tenant(token: &str, tenant: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = decode_part(parts[1]);
    claims["custom:tenantId"] = json!(tenant);
    format!("{}.{}.{}", parts[0], encode_part(&claims), parts[2])
}
