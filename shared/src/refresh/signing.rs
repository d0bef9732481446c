//! Ed25519 signatures on Refresh calls.
//!
//! config-refresh alone holds a private signing key (a SecureString only its
//! role may read); agents hold public keys, several at once so that a key can
//! be rotated without restarting every agent together. A host that runs an
//! agent can therefore verify Refresh calls but never forge one.
//!
//! The signature covers a canonical string built from the request's fields
//! (see `proto/tenantconfig/v1/config.proto`), not its protobuf bytes, so any
//! language can produce it. Identifiers are validated before signing and
//! verifying, so no field can smuggle a separator.
//!
//! Text forms (hex, so they travel in gRPC metadata and environment
//! variables unchanged):
//! - signing key: `ed25519:{key id}:{32-byte seed}`;
//! - trusted keys: `{key id}:{32-byte public key}[,{key id}:{public key}…]`;
//! - signature metadata: `{key id}:{64-byte signature}`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use moka::sync::Cache;
use thiserror::Error;

use super::proto::RefreshRequest;

pub const TIMESTAMP_HEADER: &str = "x-refresh-timestamp";
pub const SIGNATURE_HEADER: &str = "x-refresh-signature";
/// Signatures older (or newer) than this are refused; event ids are
/// remembered this long to refuse replays.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(60);
/// Ed25519 seed and public key length, in bytes.
pub const KEY_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;
/// Key ids: `[A-Za-z0-9_-]`, at most this long.
pub const MAX_KEY_ID_LEN: usize = 64;
const SIGNING_KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("a signing key is 'ed25519:{{key id}}:{{64 hex digits}}' (a 32-byte seed): {0}")]
    BadSigningKey(&'static str),
    #[error("trusted keys are '{{key id}}:{{64 hex digits}}', comma-separated: {0}")]
    BadTrustedKeys(String),
    #[error("missing {0} metadata")]
    Missing(&'static str),
    #[error("malformed {0} metadata")]
    Malformed(&'static str),
    #[error("signed with key '{0}', which this agent does not trust")]
    UnknownKey(String),
    #[error("signature timestamp is outside the {}s window", REPLAY_WINDOW.as_secs())]
    Stale,
    #[error("signature does not match")]
    Mismatch,
    #[error("signed for '{0}', not for this agent")]
    OtherTarget(String),
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// config-refresh's private signing key. Its `Debug` shows only the key id.
#[derive(Clone)]
pub struct RefreshKey {
    id: String,
    pair: std::sync::Arc<Ed25519KeyPair>,
}

impl RefreshKey {
    /// From a 32-byte seed (exactly: the length of the *decoded* bytes).
    pub fn from_seed(id: &str, seed: &[u8]) -> Result<Self, SignatureError> {
        if !valid_key_id(id) {
            return Err(SignatureError::BadSigningKey("key id"));
        }
        if seed.len() != KEY_BYTES {
            return Err(SignatureError::BadSigningKey("the seed is not 32 bytes"));
        }
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| SignatureError::BadSigningKey("not an Ed25519 seed"))?;
        Ok(Self {
            id: id.to_owned(),
            pair: std::sync::Arc::new(pair),
        })
    }

    /// Parses the text form `ed25519:{key id}:{hex seed}`.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let rest = text
            .trim()
            .strip_prefix(SIGNING_KEY_PREFIX)
            .ok_or(SignatureError::BadSigningKey("no 'ed25519:' prefix"))?;
        let (id, seed) = rest
            .split_once(':')
            .ok_or(SignatureError::BadSigningKey("no key id"))?;
        let seed = from_hex(seed).ok_or(SignatureError::BadSigningKey("the seed is not hex"))?;
        Self::from_seed(id, &seed)
    }

    /// A new random key (the text form holds the seed: store it as a secret).
    pub fn generate(id: &str) -> Result<(Self, String), SignatureError> {
        let mut seed = [0u8; KEY_BYTES];
        aws_lc_rs::rand::fill(&mut seed)
            .map_err(|_| SignatureError::BadSigningKey("no randomness"))?;
        let key = Self::from_seed(id, &seed)?;
        let text = format!("{SIGNING_KEY_PREFIX}{id}:{}", to_hex(&seed));
        Ok((key, text))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `{key id}:{hex public key}` entry agents trust it by.
    pub fn public_entry(&self) -> String {
        format!("{}:{}", self.id, to_hex(self.pair.public_key().as_ref()))
    }

    /// Signs a canonical text other than a Refresh call's (a change
    /// notice's): `{key id}:{hex signature}`.
    pub fn sign_text(&self, text: &str) -> String {
        let signature = self.pair.sign(text.as_bytes());
        format!("{}:{}", self.id, to_hex(signature.as_ref()))
    }

    /// Trusted keys holding only this key's public half.
    pub fn trusted(&self) -> TrustedKeys {
        TrustedKeys(BTreeMap::from([(
            self.id.clone(),
            self.pair.public_key().as_ref().to_vec(),
        )]))
    }
}

impl std::fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshKey({}, <private>)", self.id)
    }
}

/// The public keys an agent accepts Refresh signatures from, by key id
/// (ordered, so the agent's settings print the same way every time).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(BTreeMap<String, Vec<u8>>);

/// Each key id with its public key in hex, as `REFRESH_PUBLIC_KEYS` gives it.
impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrustedKeys")?;
        f.debug_map()
            .entries(self.0.iter().map(|(id, key)| (id, to_hex(key))))
            .finish()
    }
}

impl TrustedKeys {
    /// Parses `{key id}:{hex public key}[,…]` (at least one key).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let mut keys = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| SignatureError::BadTrustedKeys(format!("'{entry}': {why}"));
            let (id, key) = entry.split_once(':').ok_or_else(|| bad("no key id"))?;
            if !valid_key_id(id) {
                return Err(bad("the key id is not [A-Za-z0-9_-]{1,64}"));
            }
            let key = from_hex(key)
                .filter(|k| k.len() == KEY_BYTES)
                .ok_or_else(|| bad("the key is not 32 bytes of hex"))?;
            if keys.insert(id.to_owned(), key).is_some() {
                return Err(bad("the key id is listed twice"));
            }
        }
        if keys.is_empty() {
            return Err(SignatureError::BadTrustedKeys("no key".to_owned()));
        }
        Ok(Self(keys))
    }

    /// Checks a `{key id}:{hex signature}` over `text` (see
    /// [`RefreshKey::sign_text`]).
    pub fn verify_text(&self, text: &str, signature: &str) -> Result<(), SignatureError> {
        let (key_id, signature) = signature
            .split_once(':')
            .filter(|(id, _)| valid_key_id(id))
            .ok_or(SignatureError::Malformed("signature"))?;
        let signature = from_hex(signature)
            .filter(|s| s.len() == SIGNATURE_BYTES)
            .ok_or(SignatureError::Malformed("signature"))?;
        let public_key = self
            .0
            .get(key_id)
            .ok_or_else(|| SignatureError::UnknownKey(key_id.to_owned()))?;
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(text.as_bytes(), &signature)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Key ids, sorted (for logs: ids are not secrets, neither are keys).
    pub fn ids(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The bytes that are signed: every field. (`value_type` and `target`, added
/// later, only when set and labelled, so a request without them signs as
/// before and neither can pass for the other.)
pub fn canonical(request: &RefreshRequest, timestamp_ms: i64) -> String {
    let mut text = format!(
        "tenantconfig.v1.Refresh\n{timestamp_ms}\n{}\n{}\n{}\n{}\n{}\n{}",
        request.event_id,
        request.event_time_unix_ms,
        request.operation,
        request.tenant_id,
        request.service,
        request.key
    );
    if !request.value_type.is_empty() {
        text.push_str(&format!("\nvalue_type={}", request.value_type));
    }
    if !request.target.is_empty() {
        text.push_str(&format!("\ntarget={}", request.target));
    }
    text
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
    let signature = key.pair.sign(canonical(request, timestamp_ms).as_bytes());
    (
        timestamp_ms.to_string(),
        format!("{}:{}", key.id, to_hex(signature.as_ref())),
    )
}

/// Checks a request's signature and freshness, and remembers event ids.
pub struct RefreshAuthenticator {
    keys: TrustedKeys,
    seen_events: Cache<String, ()>,
    /// The agent's own address: calls signed for another are refused.
    me: Option<AgentAddress>,
}

/// An agent's Refresh address, to tell a call signed for it from one signed
/// for another agent (see `RefreshRequest.target`).
#[derive(Debug)]
pub struct AgentAddress {
    port: u16,
    /// The address it registers (`AGENT_ADVERTISE_IP`), if it knows one.
    advertised: Option<std::net::IpAddr>,
    /// Its listener's address; unspecified (0.0.0.0) when on every interface.
    listen_ip: std::net::IpAddr,
    /// Addresses found to be this host's, or not.
    local: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, bool>>,
}

impl AgentAddress {
    pub fn new(refresh_listen: std::net::SocketAddr, advertised: Option<std::net::IpAddr>) -> Self {
        Self {
            port: refresh_listen.port(),
            advertised,
            listen_ip: refresh_listen.ip(),
            local: Default::default(),
        }
    }

    /// Whether `target` ("ip:port") is this agent: its port, and its
    /// advertised or listening address or, listening on every interface, an
    /// address of this host (one a socket can bind). Never an unspecified,
    /// multicast or (then) loopback address: config-refresh dials none.
    pub fn is(&self, target: &str) -> bool {
        let Ok(address) = target.parse::<std::net::SocketAddr>() else {
            return false;
        };
        let ip = address.ip();
        if address.port() != self.port || ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if Some(ip) == self.advertised {
            return true;
        }
        if !self.listen_ip.is_unspecified() {
            return ip == self.listen_ip;
        }
        !ip.is_loopback() && self.is_local(ip)
    }

    fn is_local(&self, ip: std::net::IpAddr) -> bool {
        let Ok(mut known) = self.local.lock() else {
            return false;
        };
        if known.len() > 64 {
            known.clear(); // bounded: targets come from callers
        }
        *known
            .entry(ip)
            .or_insert_with(|| std::net::UdpSocket::bind((ip, 0)).is_ok())
    }
}

/// Outcome of a verified Refresh.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    Fresh,
    /// The event id was already handled inside the window.
    Replay,
}

impl RefreshAuthenticator {
    pub fn new(keys: TrustedKeys) -> Self {
        Self {
            keys,
            seen_events: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REPLAY_WINDOW * 2)
                .build(),
            me: None,
        }
    }

    /// Refuses calls signed for another agent than the one at `me`.
    pub fn for_agent_at(mut self, me: AgentAddress) -> Self {
        self.me = Some(me);
        self
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
        let (key_id, signature) = signature
            .split_once(':')
            .filter(|(id, _)| valid_key_id(id))
            .ok_or(SignatureError::Malformed(SIGNATURE_HEADER))?;
        let signature = from_hex(signature)
            .filter(|s| s.len() == SIGNATURE_BYTES)
            .ok_or(SignatureError::Malformed(SIGNATURE_HEADER))?;
        let public_key = self
            .keys
            .0
            .get(key_id)
            .ok_or_else(|| SignatureError::UnknownKey(key_id.to_owned()))?;
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(canonical(request, timestamp_ms).as_bytes(), &signature)
            .map_err(|_| SignatureError::Mismatch)?;
        if now_ms.abs_diff(timestamp_ms) > REPLAY_WINDOW.as_millis() as u64 {
            return Err(SignatureError::Stale);
        }
        // A call naming no target comes from a config-refresh older than
        // this agent (agents are updated first): accepted, as before targets.
        if let Some(me) = &self.me
            && !request.target.is_empty()
            && !me.is(&request.target)
        {
            return Err(SignatureError::OtherTarget(request.target.clone()));
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

    const SEED: [u8; 32] = [42u8; 32];

    fn key() -> RefreshKey {
        RefreshKey::from_seed("k1", &SEED).unwrap()
    }

    fn request() -> RefreshRequest {
        RefreshRequest {
            tenant_id: "tenant-a".into(),
            service: "billing".into(),
            key: "param_config_endpoint".into(),
            operation: 2,
            event_id: "0b7e2f3c-1111-2222-3333-444455556666".into(),
            event_time_unix_ms: 1_700_000_000_000,
            value_type: String::new(),
            target: String::new(),
        }
    }

    #[test]
    fn a_signed_request_verifies_once_then_is_a_replay() {
        let auth = RefreshAuthenticator::new(key().trusted());
        let now = unix_ms_now();
        let (ts, sig) = sign(&key(), &request(), now);
        assert!(sig.starts_with("k1:"));
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
    fn an_agent_accepts_only_calls_signed_for_its_own_address() {
        let for_target = |target: &str| RefreshRequest {
            target: target.into(),
            ..request()
        };
        let now = unix_ms_now();
        // GIVEN an agent listening on 10.0.1.5:50052
        let auth = RefreshAuthenticator::new(key().trusted())
            .for_agent_at(AgentAddress::new("10.0.1.5:50052".parse().unwrap(), None));
        // THEN a call signed for it passes, and one signed for any other
        // address (another agent, another port, none) is refused
        let mine = for_target("10.0.1.5:50052");
        let (ts, sig) = sign(&key(), &mine, now);
        assert_eq!(
            auth.verify(&mine, Some(&ts), Some(&sig), now),
            Ok(Verified::Fresh)
        );
        for other in [
            "10.0.1.6:50052",
            "10.0.1.5:50053",
            "0.0.0.0:50052",
            "agent-1",
        ] {
            let call = for_target(other);
            let (ts, sig) = sign(&key(), &call, now);
            assert_eq!(
                auth.verify(&call, Some(&ts), Some(&sig), now),
                Err(SignatureError::OtherTarget(other.to_owned())),
                "{other}"
            );
        }
        // AND a call naming no target (an older config-refresh) passes
        let legacy = RefreshRequest {
            event_id: "legacy".into(),
            ..for_target("")
        };
        let (ts, sig) = sign(&key(), &legacy, now);
        assert_eq!(
            auth.verify(&legacy, Some(&ts), Some(&sig), now),
            Ok(Verified::Fresh)
        );
        // AND the target is signed: rewriting it breaks the signature
        let (ts, sig) = sign(&key(), &for_target("10.0.1.6:50052"), now);
        assert_eq!(
            auth.verify(&mine, Some(&ts), Some(&sig), now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_agent_on_every_interface_knows_its_own_addresses_and_never_loopback() {
        let me = AgentAddress::new("0.0.0.0:50052".parse().unwrap(), None);
        // 192.0.2.1 (TEST-NET-1) is no address of this machine
        assert!(!me.is("192.0.2.1:50052"));
        assert!(
            !me.is("127.0.0.1:50052"),
            "loopback is nobody's address to config-refresh"
        );
        // an advertised address is its own, even if not bindable here
        let advertised = AgentAddress::new(
            "0.0.0.0:50052".parse().unwrap(),
            Some("192.0.2.1".parse().unwrap()),
        );
        assert!(advertised.is("192.0.2.1:50052"));
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let auth = RefreshAuthenticator::new(key().trusted());
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
    fn foreign_keys_missing_or_malformed_metadata_and_stale_timestamps_are_refused() {
        let auth = RefreshAuthenticator::new(key().trusted());
        let now = unix_ms_now();
        // A key the agent does not list, and another key claiming a trusted id.
        let (ts, foreign) = sign(
            &RefreshKey::from_seed("k9", &[7u8; 32]).unwrap(),
            &request(),
            now,
        );
        assert_eq!(
            auth.verify(&request(), Some(&ts), Some(&foreign), now),
            Err(SignatureError::UnknownKey("k9".into()))
        );
        let (ts, forged) = sign(
            &RefreshKey::from_seed("k1", &[7u8; 32]).unwrap(),
            &request(),
            now,
        );
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
        for malformed in [
            "zz",
            "k1:zz",
            "k1:abcd",
            "bad id:00",
            &forged.replace("k1:", ""),
        ] {
            assert_eq!(
                auth.verify(&request(), Some(&ts), Some(malformed), now),
                Err(SignatureError::Malformed(SIGNATURE_HEADER)),
                "{malformed}"
            );
        }
        let old = now - 61_000;
        let (ts_old, sig_old) = sign(&key(), &request(), old);
        assert_eq!(
            auth.verify(&request(), Some(&ts_old), Some(&sig_old), now),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn agents_trust_several_keys_so_a_key_rotates_without_a_flag_day() {
        // GIVEN agents trusting the old and the new key
        let old = key();
        let (new, _) = RefreshKey::generate("k2").unwrap();
        let both = format!("{},{}", old.public_entry(), new.public_entry());
        let auth = RefreshAuthenticator::new(TrustedKeys::parse(&both).unwrap());
        let now = unix_ms_now();
        // THEN a Refresh signed with either verifies
        for (i, signer) in [&old, &new].into_iter().enumerate() {
            let mut r = request();
            r.event_id = format!("event-{i}");
            let (ts, sig) = sign(signer, &r, now);
            assert_eq!(
                auth.verify(&r, Some(&ts), Some(&sig), now),
                Ok(Verified::Fresh)
            );
        }
        // AND once the old key is dropped from the list, it no longer does
        let only_new = RefreshAuthenticator::new(new.trusted());
        let (ts, sig) = sign(&old, &request(), now);
        assert_eq!(
            only_new.verify(&request(), Some(&ts), Some(&sig), now),
            Err(SignatureError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn key_texts_are_checked_by_their_decoded_bytes_and_never_printed() {
        let (key, text) = RefreshKey::generate("rotation-2026-11").unwrap();
        assert_eq!(
            RefreshKey::parse(&text).unwrap().public_entry(),
            key.public_entry()
        );
        let seed_hex = text.rsplit(':').next().unwrap().to_owned();
        assert!(!format!("{key:?}").contains(&seed_hex));
        // 64 characters that decode to fewer than 32 bytes, or not at all
        for bad in [
            "ed25519:k1:".to_owned() + &"g".repeat(64),
            "ed25519:k1:".to_owned() + &"ab".repeat(31),
            "k1:".to_owned() + &"ab".repeat(32),
            "ed25519:bad id:".to_owned() + &"ab".repeat(32),
        ] {
            assert!(RefreshKey::parse(&bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "k1",
            "k1:abcd",
            &format!("k1:{0},k1:{0}", "ab".repeat(32)),
        ] {
            assert!(TrustedKeys::parse(bad).is_err(), "{bad}");
        }
    }
}
