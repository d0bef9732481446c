//! HMAC-SHA256 authentication of Refresh calls.
//!
//! The signature covers a canonical string built from the request's fields
//! (see `proto/tenantconfig/v1/config.proto`), not its protobuf bytes, so any
//! language can produce it. Identifiers are validated before signing and
//! verifying, so no field can smuggle a separator.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use moka::sync::Cache;
use sha2::Sha256;
use thiserror::Error;

use super::proto::RefreshRequest;

pub const TIMESTAMP_HEADER: &str = "x-refresh-timestamp";
pub const SIGNATURE_HEADER: &str = "x-refresh-signature";
/// Signatures older (or newer) than this are refused; event ids are
/// remembered this long to refuse replays.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(60);
/// Shortest accepted key: 256 bits, the HMAC-SHA256 block-strength guidance.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("refresh key must be at least {MIN_KEY_BYTES} bytes")]
    WeakKey,
    #[error("missing {0} metadata")]
    Missing(&'static str),
    #[error("malformed {0} metadata")]
    Malformed(&'static str),
    #[error("signature timestamp is outside the {}s window", REPLAY_WINDOW.as_secs())]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// The shared refresh key. Its `Debug` does not show the key.
#[derive(Clone)]
pub struct RefreshKey(Vec<u8>);

impl RefreshKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SignatureError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(SignatureError::WeakKey);
        }
        Ok(Self(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

impl std::fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshKey(<redacted>)")
    }
}

/// The bytes that are signed.
pub fn canonical(request: &RefreshRequest, timestamp_ms: i64) -> String {
    format!(
        "tenantconfig.v1.Refresh\n{timestamp_ms}\n{}\n{}\n{}\n{}\n{}\n{}",
        request.event_id,
        request.event_time_unix_ms,
        request.operation,
        request.tenant_id,
        request.service,
        request.key
    )
}

pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Signs a request at `timestamp_ms`; returns the two metadata values.
pub fn sign(key: &RefreshKey, request: &RefreshRequest, timestamp_ms: i64) -> (String, String) {
    let mut mac = key.mac();
    mac.update(canonical(request, timestamp_ms).as_bytes());
    (
        timestamp_ms.to_string(),
        to_hex(&mac.finalize().into_bytes()),
    )
}

/// Checks a request's signature and freshness, and remembers event ids.
pub struct RefreshAuthenticator {
    key: RefreshKey,
    seen_events: Cache<String, ()>,
}

/// Outcome of a verified Refresh.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    Fresh,
    /// The event id was already handled inside the window.
    Replay,
}

impl RefreshAuthenticator {
    pub fn new(key: RefreshKey) -> Self {
        Self {
            key,
            seen_events: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REPLAY_WINDOW * 2)
                .build(),
        }
    }

    /// Verifies the metadata values against the request at `now_ms`.
    pub fn verify(
        &self,
        request: &RefreshRequest,
        timestamp: Option<&str>,
        signature: Option<&str>,
        now_ms: i64,
    ) -> Result<Verified, SignatureError> {
        let timestamp = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
        let signature = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
        let timestamp_ms: i64 = timestamp
            .parse()
            .map_err(|_| SignatureError::Malformed(TIMESTAMP_HEADER))?;
        let signature = from_hex(signature).ok_or(SignatureError::Malformed(SIGNATURE_HEADER))?;
        let mut mac = self.key.mac();
        mac.update(canonical(request, timestamp_ms).as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| SignatureError::Mismatch)?;
        if now_ms.abs_diff(timestamp_ms) > REPLAY_WINDOW.as_millis() as u64 {
            return Err(SignatureError::Stale);
        }
        // Only authentic requests may occupy the replay set.
        let entry = self
            .seen_events
            .entry(request.event_id.clone())
            .or_insert(());
        Ok(if entry.is_fresh() {
            Verified::Fresh
        } else {
            Verified::Replay
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RefreshKey {
        RefreshKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn request() -> RefreshRequest {
        RefreshRequest {
            tenant_id: "tenant-a".into(),
            service: "billing".into(),
            key: "param_config_endpoint".into(),
            operation: 2,
            event_id: "0b7e2f3c-1111-2222-3333-444455556666".into(),
            event_time_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_signed_request_verifies_once_then_is_a_replay() {
        let auth = RefreshAuthenticator::new(key());
        let now = unix_ms_now();
        let (ts, sig) = sign(&key(), &request(), now);
        assert_eq!(
            auth.verify(&request(), Some(&ts), Some(&sig), now),
            Ok(Verified::Fresh)
        );
        let (ts2, sig2) = sign(&key(), &request(), now + 5);
        assert_eq!(
            auth.verify(&request(), Some(&ts2), Some(&sig2), now + 5),
            Ok(Verified::Replay)
        );
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let auth = RefreshAuthenticator::new(key());
        let now = unix_ms_now();
        let (ts, sig) = sign(&key(), &request(), now);
        let mut changed = request();
        changed.key = "param_config_other".into();
        assert_eq!(
            auth.verify(&changed, Some(&ts), Some(&sig), now),
            Err(SignatureError::Mismatch)
        );
        let mut changed = request();
        changed.tenant_id = "tenant-b".into();
        assert_eq!(
            auth.verify(&changed, Some(&ts), Some(&sig), now),
            Err(SignatureError::Mismatch)
        );
        let later = (now + 1).to_string();
        assert_eq!(
            auth.verify(&request(), Some(&later), Some(&sig), now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wrong_key_missing_or_malformed_metadata_and_stale_timestamps_are_refused() {
        let auth = RefreshAuthenticator::new(key());
        let now = unix_ms_now();
        let other = RefreshKey::new(vec![7u8; 32]).unwrap();
        let (ts, forged) = sign(&other, &request(), now);
        assert_eq!(
            auth.verify(&request(), Some(&ts), Some(&forged), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            auth.verify(&request(), None, Some(&forged), now),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            auth.verify(&request(), Some(&ts), None, now),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            auth.verify(&request(), Some("yesterday"), Some(&forged), now),
            Err(SignatureError::Malformed(TIMESTAMP_HEADER))
        );
        assert_eq!(
            auth.verify(&request(), Some(&ts), Some("zz"), now),
            Err(SignatureError::Malformed(SIGNATURE_HEADER))
        );
        let old = now - 61_000;
        let (ts_old, sig_old) = sign(&key(), &request(), old);
        assert_eq!(
            auth.verify(&request(), Some(&ts_old), Some(&sig_old), now),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn short_keys_are_refused_and_keys_are_not_printed() {
        assert_eq!(
            RefreshKey::new(b"short".to_vec()).unwrap_err(),
            SignatureError::WeakKey
        );
        assert!(!format!("{:?}", key()).contains("0123"));
    }
}
