//! Verification of Cognito ID tokens and extraction of the tenant.
//!
//! Checks: RS256 only, `kid` present and in the user pool's JWKS, signature,
//! `iss` equal to the configured issuer, `aud` one of the configured app
//! clients, `token_use == "id"`, `exp`/`nbf` with a small leeway. The tenant is
//! the `custom:tenantId` claim and nothing else.
//!
//! The JWKS is fetched on first use and again only when a token names an
//! unknown `kid`, at most once per [`AuthSettings::jwks_refresh_interval`].
//! Verified tokens are remembered whole (until `exp`) so a warm request does
//! no RSA work.

use crate::metrics::{Counter, metrics};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind};
use moka::Expiry;
use moka::sync::Cache;
use serde::Deserialize;

pub use crate::error::JwksError;
use crate::error::{AuthError, ConfigError};
use crate::validate::TenantId;

/// The claim that names a caller's tenant.
pub const TENANT_CLAIM: &str = "custom:tenantId";

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Expected `iss`, e.g. `https://cognito-idp.us-east-1.amazonaws.com/us-east-1_abc`.
    pub issuer: String,
    /// Where the signing keys are served; separate from the issuer because a
    /// local Cognito serves them elsewhere.
    pub jwks_url: String,
    /// App client ids accepted as `aud`.
    pub client_ids: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Verified tokens remembered at most.
    pub token_cache_max_entries: u64,
    /// Minimum time between two JWKS fetches after a successful one.
    pub jwks_refresh_interval: Duration,
    /// Keys fetched longer ago than this are not trusted: the next token
    /// fetches the set again (and fails closed, 503, if it cannot), so a key
    /// the pool removed stops verifying within this bound even in a process
    /// that never meets an unknown `kid`. The background refresher
    /// ([`TokenVerifier::spawn_refresher`]) refetches at half of it, so
    /// requests normally never wait for the fetch.
    pub jwks_max_age: Duration,
}

/// Source of the user pool's signing keys.
#[async_trait]
pub trait JwksSource: Send + Sync {
    async fn fetch(&self) -> Result<JwkSet, JwksError>;
}

/// Fetches the JWKS over HTTP(S) with a short timeout.
pub struct HttpJwksSource {
    client: reqwest::Client,
    url: String,
}

impl HttpJwksSource {
    pub fn new(url: impl Into<String>) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        Ok(Self {
            client,
            url: url.into(),
        })
    }
}

#[async_trait]
impl JwksSource for HttpJwksSource {
    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| JwksError::Fetch {
                url: self.url.clone(),
                detail: e.to_string(),
            })?;
        response
            .json::<JwkSet>()
            .await
            .map_err(|e| JwksError::NotAKeySet {
                url: self.url.clone(),
                detail: e.to_string(),
            })
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// `None` when the token is valid but carries no (valid) tenant: a 403.
    pub tenant: Option<TenantId>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The user pool groups the user was in when the token was issued
    /// (`cognito:groups`).
    pub groups: Vec<String>,
    /// The user's name in the pool (`cognito:username`; the `sub` when the
    /// token has none), for asking the pool about the user now.
    pub username: String,
    /// The app client the token was issued to (`aud`, one of the accepted
    /// client ids): what service grants are given to.
    pub client_id: String,
}

impl Identity {
    /// The tenant, or 403 when the token has none.
    pub fn require_tenant(&self) -> Result<&TenantId, ConfigError> {
        self.tenant.as_ref().ok_or(ConfigError::NoTenant)
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

#[derive(Deserialize)]
struct IdTokenClaims {
    #[serde(default)]
    sub: String,
    exp: u64,
    #[serde(default)]
    token_use: Option<String>,
    #[serde(rename = "custom:tenantId", default)]
    tenant: Option<String>,
    #[serde(rename = "cognito:groups", default)]
    groups: Vec<String>,
    #[serde(rename = "cognito:username", default)]
    username: Option<String>,
    /// The app client the token was issued to (a string in Cognito's ID
    /// tokens; an array is allowed by JWT and checked the same way).
    #[serde(default)]
    aud: serde_json::Value,
}

struct KeyRing {
    keys: HashMap<String, Arc<DecodingKey>>,
    /// When the next fetch may happen.
    next_fetch_at: Option<Instant>,
    /// When `keys` were fetched.
    fetched_at: Option<Instant>,
    /// When the last fetch failed, if the last fetch failed.
    failed_at: Option<Instant>,
}

struct UntilExpiry;

impl Expiry<u64, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _slot: &u64,
        verified: &Arc<Verified>,
        _at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            verified.identity.expires_at.saturating_sub(unix_now()),
        ))
    }
}

/// A verified token, kept whole: the cache finds it by a hash of the end
/// of its signature, and a hit counts only if the presented token is this
/// very token. A hash names a slot, never an identity, so it need not resist
/// collisions (and hashing a kilobyte of token with SHA-256 on every read
/// cost a fifth of a warm read).
struct Verified {
    token: Box<str>,
    identity: Arc<Identity>,
}

/// Bytes at the end of a token the cache slot is hashed from: the end of
/// an RS256 signature, random for every token the pool signs.
const SLOT_BYTES: usize = 32;

/// Whether two tokens are the same, in time that does not depend on where
/// they differ (a caller who knows a cached token's end must not learn its
/// beginning byte by byte from how long a refusal takes).
fn same_token(cached: &str, presented: &str) -> bool {
    cached.len() == presented.len()
        && std::hint::black_box(
            cached
                .as_bytes()
                .iter()
                .zip(presented.as_bytes())
                .fold(0u8, |differ, (a, b)| differ | (a ^ b)),
        ) == 0
}

/// A cached token's weight against `TOKEN_CACHE_MAX_ENTRIES`: one per
/// started KiB of token, so the bound holds memory (about a KiB an entry),
/// whatever the tokens' size.
fn token_weight(_slot: &u64, verified: &Arc<Verified>) -> u32 {
    u32::try_from(verified.token.len().div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Retry delay after a failed JWKS fetch: short, so one network blip at cold
/// start does not lock a container out for a whole refresh interval.
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(1);

pub struct TokenVerifier {
    source: Arc<dyn JwksSource>,
    validation: Validation,
    refresh_interval: Duration,
    max_age: Duration,
    keys: RwLock<KeyRing>,
    fetch_lock: tokio::sync::Mutex<()>,
    verified: Cache<u64, Arc<Verified>>,
    slots: std::hash::RandomState,
}

impl TokenVerifier {
    /// A verifier that fetches the pool's keys from `settings.jwks_url`.
    pub fn over_http(settings: &AuthSettings) -> Result<Self, JwksError> {
        let jwks = HttpJwksSource::new(settings.jwks_url.clone())?;
        Ok(Self::new(settings, Arc::new(jwks)))
    }

    pub fn new(settings: &AuthSettings, source: Arc<dyn JwksSource>) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&settings.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = settings.leeway.as_secs();
        Self {
            source,
            validation,
            refresh_interval: settings.jwks_refresh_interval,
            max_age: settings.jwks_max_age,
            keys: RwLock::new(KeyRing {
                keys: HashMap::new(),
                next_fetch_at: None,
                fetched_at: None,
                failed_at: None,
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
            verified: Cache::builder()
                .max_capacity(settings.token_cache_max_entries)
                .weigher(token_weight)
                .expire_after(UntilExpiry)
                .build(),
            slots: std::hash::RandomState::new(),
        }
    }

    /// Verifies the value of an `Authorization` header (`Bearer <token>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Arc<Identity>, ConfigError> {
        let token = header
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.verify(token).await
    }

    /// Verifies a bare token.
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, ConfigError> {
        let end = &token.as_bytes()[token.len().saturating_sub(SLOT_BYTES)..];
        let slot = std::hash::BuildHasher::hash_one(&self.slots, end);
        if let Some(hit) = self.verified.get(&slot)
            && same_token(&hit.token, token)
            // The entry expires at `exp`; this guards the gap before eviction.
            && hit.identity.expires_at + self.validation.leeway > unix_now()
        {
            metrics().count(Counter::TokenCacheHits);
            return Ok(hit.identity.clone());
        }
        metrics().count(Counter::TokenCacheMisses);
        let identity = Arc::new(self.verify_uncached(token).await?);
        self.verified.insert(
            slot,
            Arc::new(Verified {
                token: token.into(),
                identity: identity.clone(),
            }),
        );
        Ok(identity)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::DisallowedAlgorithm);
        }
        let kid = header.kid.ok_or(AuthError::MissingKid)?;
        let key = self.key_for(&kid).await?;
        let data =
            decode::<IdTokenClaims>(token, &key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidAlgorithm => AuthError::DisallowedAlgorithm,
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        if claims.token_use.as_deref() != Some("id") {
            return Err(AuthError::WrongTokenUse);
        }
        Ok(Identity {
            username: claims.username.unwrap_or_else(|| claims.sub.clone()),
            subject: claims.sub,
            tenant: claims
                .tenant
                .as_deref()
                .and_then(|t| TenantId::parse(t).ok()),
            expires_at: claims.exp,
            groups: claims.groups,
            // The accepted client the token names (grants are per client).
            client_id: match claims.aud {
                serde_json::Value::String(client) => client,
                serde_json::Value::Array(clients) => clients
                    .iter()
                    .filter_map(|c| c.as_str())
                    .find(|c| {
                        self.validation
                            .aud
                            .as_ref()
                            .is_some_and(|ok| ok.contains(*c))
                    })
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            },
        })
    }

    /// The key for `kid` if the ring holds it and is younger than the
    /// maximum age.
    fn cached_key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let ring = self.keys.read().ok()?;
        let fresh = ring
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.max_age);
        fresh.then(|| ring.keys.get(kid).cloned()).flatten()
    }

    fn ring_expired(&self) -> bool {
        self.keys.read().map_or(true, |ring| {
            ring.fetched_at
                .is_none_or(|at| at.elapsed() >= self.max_age)
        })
    }

    async fn key_for(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        // One fetch at a time; whoever waited re-checks before fetching again.
        let _guard = self.fetch_lock.lock().await;
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        // An expired ring is always refetched (after a failure, at most once
        // per retry delay); an unknown kid in a fresh ring at most once per
        // refresh interval.
        let expired = self.ring_expired();
        let may_fetch = self
            .keys
            .read()
            .map(|ring| {
                if expired {
                    ring.failed_at
                        .is_none_or(|at| at.elapsed() >= FAILED_FETCH_RETRY)
                } else {
                    ring.next_fetch_at.is_none_or(|at| Instant::now() >= at)
                }
            })
            .unwrap_or(true);
        if !may_fetch {
            return Err(if expired {
                AuthError::KeysUnavailable(JwksError::Expired(self.max_age))
            } else {
                AuthError::UnknownKid
            });
        }
        match self.fetch_keys().await {
            Ok(()) => self.cached_key(kid).ok_or(AuthError::UnknownKid),
            Err(reason) if expired => Err(AuthError::KeysUnavailable(reason)),
            Err(_) => Err(AuthError::UnknownKid),
        }
    }

    /// Fetches the key set and replaces the ring with it. A key that left
    /// the set stops verifying at once, and tokens already verified are
    /// forgotten so that none signed by it is still accepted from memory.
    async fn fetch_keys(&self) -> Result<(), JwksError> {
        match self.source.fetch().await {
            Ok(set) => {
                let keys = usable_keys(&set);
                let removed = self
                    .keys
                    .write()
                    .map(|mut ring| {
                        let removed = ring.keys.keys().any(|kid| !keys.contains_key(kid));
                        ring.keys = keys;
                        ring.fetched_at = Some(Instant::now());
                        ring.failed_at = None;
                        ring.next_fetch_at = Some(Instant::now() + self.refresh_interval);
                        removed
                    })
                    .unwrap_or(false);
                if removed {
                    self.verified.invalidate_all();
                    tracing::info!(
                        "a token signing key left the pool's set: it no longer verifies"
                    );
                }
                tracing::info!("fetched token signing keys");
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(%reason, "cannot fetch token signing keys");
                if let Ok(mut ring) = self.keys.write() {
                    ring.next_fetch_at = Some(Instant::now() + FAILED_FETCH_RETRY);
                    ring.failed_at = Some(Instant::now());
                }
                Err(reason)
            }
        }
    }

    /// Refreshes the keys now (the background refresher's step).
    pub async fn refresh_keys(&self) -> Result<(), JwksError> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_keys().await
    }

    /// Refreshes the keys every half maximum age for as long as the process
    /// runs, so requests do not wait for a fetch (a Lambda container
    /// refreshes while it is thawed; when it was frozen past the maximum age,
    /// the next token fetches inline). Failures are retried after the
    /// failure delay.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        let every = (self.max_age / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut wait = every;
            loop {
                tokio::time::sleep(wait).await;
                let Some(verifier) = verifier.upgrade() else {
                    return;
                };
                wait = match verifier.refresh_keys().await {
                    Ok(()) => every,
                    Err(_) => FAILED_FETCH_RETRY.max(Duration::from_secs(5)).min(every),
                };
            }
        })
    }
}

/// RSA signing keys of the set, by `kid`. Keys for other uses or algorithms are skipped.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<DecodingKey>> {
    set.keys
        .iter()
        .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature))
        .filter(|jwk| jwk.common.key_algorithm.is_none_or(|alg| alg == KeyAlgorithm::RS256))
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, Arc::new(key)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST";
    const CLIENT: &str = "client-one";
    const PRIVATE_PEM: &str = include_str!("../../testkit/fixtures/signing-key.pem");
    const PUBLIC_PEM: &str = include_str!("../../testkit/fixtures/signing-key.pub.pem");
    const OTHER_PRIVATE_PEM: &str = include_str!("../../testkit/fixtures/other-key.pem");
    const JWKS: &str = include_str!("../../testkit/fixtures/jwks.json");

    struct StaticJwks {
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl JwksSource for StaticJwks {
        async fn fetch(&self) -> Result<JwkSet, JwksError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Ok(serde_json::from_str(JWKS).expect("the JWKS fixture parses"))
        }
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            issuer: ISSUER.into(),
            jwks_url: "unused".into(),
            client_ids: vec![CLIENT.into(), "client-two".into()],
            leeway: Duration::from_secs(5),
            token_cache_max_entries: 100,
            jwks_refresh_interval: Duration::from_secs(60),
            jwks_max_age: Duration::from_secs(3600),
        }
    }

    /// A pool whose key set an operator changes: the fixture key until
    /// `remove_key`, failing while `fail` is set.
    #[derive(Default)]
    struct RotatingJwks {
        removed: std::sync::atomic::AtomicBool,
        failing: std::sync::atomic::AtomicBool,
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl JwksSource for RotatingJwks {
        async fn fetch(&self) -> Result<JwkSet, JwksError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(JwksError::Fetch {
                    url: "jwks".into(),
                    detail: "injected failure".into(),
                });
            }
            if self.removed.load(Ordering::SeqCst) {
                return Ok(JwkSet { keys: Vec::new() });
            }
            Ok(serde_json::from_str(JWKS).expect("the JWKS fixture parses"))
        }
    }

    fn rotating(max_age: Duration) -> (Arc<RotatingJwks>, Arc<TokenVerifier>) {
        let source = Arc::new(RotatingJwks::default());
        let settings = AuthSettings {
            jwks_max_age: max_age,
            ..settings()
        };
        (
            source.clone(),
            Arc::new(TokenVerifier::new(&settings, source)),
        )
    }

    #[tokio::test]
    async fn a_key_removed_from_the_pool_stops_verifying_within_the_maximum_age() {
        // GIVEN a token verified (and remembered) with the pool's key
        let (source, verifier) = rotating(Duration::from_millis(300));
        let token = sign(&claims());
        verifier.verify(&token).await.unwrap();
        // WHEN the pool removes the key and the maximum age passes
        source.removed.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(350)).await;
        // THEN a new token signed with it is refused (the set is fetched again)
        let fresh = sign(&with("sub", json!("user-2")));
        assert!(matches!(
            verifier.verify(&fresh).await,
            Err(ConfigError::Unauthenticated(AuthError::UnknownKid))
        ));
        // AND so is the token verified before, no longer accepted from memory
        assert!(verifier.verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn keys_past_their_maximum_age_that_cannot_be_fetched_fail_closed() {
        let (source, verifier) = rotating(Duration::from_millis(200));
        verifier.verify(&sign(&claims())).await.unwrap();
        source.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let refused = verifier
            .verify(&sign(&with("sub", json!("user-3"))))
            .await
            .unwrap_err();
        assert_eq!(refused.status(), 503, "{refused}");
        // and it recovers as soon as the keys can be fetched again
        source.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(FAILED_FETCH_RETRY).await;
        verifier
            .verify(&sign(&with("sub", json!("user-4"))))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_background_refresher_keeps_keys_fresh_and_drops_removed_ones() {
        // GIVEN a long-running process (an agent) with the refresher running
        let (source, verifier) = rotating(Duration::from_secs(2));
        let token = sign(&claims());
        verifier.verify(&token).await.unwrap();
        let refresher = verifier.spawn_refresher();
        // WHEN the pool removes the key, with no request arriving at all
        source.removed.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1300)).await;
        // THEN the refresher fetched the set (every max age / 2) and the
        // remembered token no longer verifies, well before the maximum age
        assert!(source.fetches.load(Ordering::SeqCst) >= 2);
        assert!(verifier.verify(&token).await.is_err());
        refresher.abort();
    }

    fn verifier() -> (Arc<StaticJwks>, TokenVerifier) {
        let source = Arc::new(StaticJwks {
            fetches: AtomicUsize::new(0),
        });
        (source.clone(), TokenVerifier::new(&settings(), source))
    }

    fn claims() -> Value {
        let now = unix_now();
        json!({
            "sub": "user-1",
            "iss": ISSUER,
            "aud": CLIENT,
            "token_use": "id",
            "iat": now,
            "exp": now + 3600,
            "custom:tenantId": "tenant-a",
        })
    }

    fn sign_with(pem: &str, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        encode(
            &header,
            claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn sign(claims: &Value) -> String {
        sign_with(PRIVATE_PEM, "test-key", claims)
    }

    fn with(field: &str, value: Value) -> Value {
        let mut c = claims();
        c[field] = value;
        c
    }

    async fn rejection(token: &str) -> AuthError {
        let (_, verifier) = verifier();
        match verifier.verify(token).await {
            Err(ConfigError::Unauthenticated(reason)) => reason,
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_app_client_is_the_accepted_audience_the_token_names() {
        // GIVEN tokens for the second accepted client, one naming it among others
        let (_, verifier) = verifier();
        let single = verifier
            .verify(&sign(&with("aud", json!("client-two"))))
            .await
            .unwrap();
        let listed = verifier
            .verify(&sign(&with("aud", json!(["not-accepted", "client-two"]))))
            .await
            .unwrap();
        // THEN grants are looked up for that client, never an unaccepted one
        assert_eq!(single.client_id, "client-two");
        assert_eq!(listed.client_id, "client-two");
    }

    #[tokio::test]
    async fn a_valid_id_token_yields_its_tenant() {
        let (_, verifier) = verifier();
        let identity = verifier.verify(&sign(&claims())).await.unwrap();
        assert_eq!(identity.tenant.as_ref().unwrap().as_str(), "tenant-a");
        assert_eq!(identity.subject, "user-1");
        let second_client = verifier
            .verify(&sign(&with("aud", json!("client-two"))))
            .await;
        assert!(
            second_client.is_ok(),
            "every configured client id is accepted"
        );
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"test-key","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        assert_eq!(
            rejection(&format!("{header}.{payload}.")).await,
            AuthError::Malformed
        );
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_rejected() {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("test-key".into());
        let token = encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(PUBLIC_PEM.as_bytes()),
        )
        .unwrap();
        assert_eq!(rejection(&token).await, AuthError::DisallowedAlgorithm);
    }

    #[tokio::test]
    async fn wrong_issuer_audience_and_token_use_are_rejected() {
        assert_eq!(
            rejection(&sign(&with("iss", json!("https://evil.example/pool")))).await,
            AuthError::WrongIssuer
        );
        assert_eq!(
            rejection(&sign(&with("aud", json!("other-client")))).await,
            AuthError::WrongAudience
        );
        assert_eq!(
            rejection(&sign(&with("token_use", json!("access")))).await,
            AuthError::WrongTokenUse
        );
        let mut no_use = claims();
        no_use.as_object_mut().unwrap().remove("token_use");
        assert_eq!(rejection(&sign(&no_use)).await, AuthError::WrongTokenUse);
    }

    #[tokio::test]
    async fn expired_and_not_yet_valid_tokens_are_rejected() {
        let now = unix_now();
        assert_eq!(
            rejection(&sign(&with("exp", json!(now - 60)))).await,
            AuthError::Expired
        );
        assert_eq!(
            rejection(&sign(&with("nbf", json!(now + 600)))).await,
            AuthError::NotYetValid
        );
    }

    #[tokio::test]
    async fn unknown_kid_and_foreign_key_are_rejected() {
        assert_eq!(
            rejection(&sign_with(PRIVATE_PEM, "rotated-away", &claims())).await,
            AuthError::UnknownKid
        );
        assert_eq!(
            rejection(&sign_with(OTHER_PRIVATE_PEM, "test-key", &claims())).await,
            AuthError::BadSignature
        );
        let mut header = Header::new(Algorithm::RS256);
        header.kid = None;
        let no_kid = encode(
            &header,
            &claims(),
            &EncodingKey::from_rsa_pem(PRIVATE_PEM.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(rejection(&no_kid).await, AuthError::MissingKid);
    }

    #[tokio::test]
    async fn a_tampered_payload_is_rejected() {
        let token = sign(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(with("custom:tenantId", json!("tenant-b")).to_string());
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(rejection(&tampered).await, AuthError::BadSignature);
    }

    #[tokio::test]
    async fn a_token_without_a_valid_tenant_is_forbidden_not_unauthorized() {
        let (_, verifier) = verifier();
        let mut no_tenant = claims();
        no_tenant.as_object_mut().unwrap().remove("custom:tenantId");
        let identity = verifier.verify(&sign(&no_tenant)).await.unwrap();
        assert_eq!(identity.require_tenant().unwrap_err().status(), 403);
        let hostile = verifier
            .verify(&sign(&with("custom:tenantId", json!("a/../b"))))
            .await
            .unwrap();
        assert_eq!(hostile.require_tenant().unwrap_err().status(), 403);
    }

    #[tokio::test]
    async fn header_parsing_requires_a_bearer_token() {
        let (_, verifier) = verifier();
        for header in [
            None,
            Some(""),
            Some("Basic abc"),
            Some("Bearer "),
            Some("Bearer"),
        ] {
            let err = verifier.verify_header(header).await.unwrap_err();
            assert!(
                matches!(err, ConfigError::Unauthenticated(AuthError::Missing)),
                "{header:?}"
            );
        }
        let ok = verifier
            .verify_header(Some(&format!("bearer {}", sign(&claims()))))
            .await;
        assert!(ok.is_ok());
    }

    #[tokio::test]
    async fn jwks_is_fetched_once_and_unknown_kids_refetch_at_most_once_per_interval() {
        let (source, verifier) = verifier();
        for _ in 0..5 {
            verifier
                .verify(&sign(&with("sub", json!(format!("{}", unix_now())))))
                .await
                .unwrap();
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        for i in 0..5 {
            let token = sign_with(PRIVATE_PEM, &format!("unknown-{i}"), &claims());
            assert!(verifier.verify(&token).await.is_err());
        }
        assert_eq!(
            source.fetches.load(Ordering::SeqCst),
            1,
            "inside the interval no refetch"
        );
    }

    #[tokio::test]
    async fn verified_tokens_are_remembered_until_they_expire() {
        let (_, verifier) = verifier();
        let token = sign(&claims());
        let first = verifier.verify(&token).await.unwrap();
        let second = verifier.verify(&token).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "second verification came from the cache"
        );
    }

    #[tokio::test]
    async fn a_forged_token_ending_like_a_verified_one_is_not_served_from_the_cache() {
        // GIVEN a verified token of tenant-a, remembered
        let (_, verifier) = verifier();
        let token = sign(&claims());
        let first = verifier.verify(&token).await.unwrap();
        // WHEN someone keeps its signature (so its cache slot) but claims
        // another tenant in the payload
        let (_, signature) = token.rsplit_once('.').unwrap();
        let forged_claims = with("custom:tenantId", json!("tenant-b"));
        let unsigned = sign(&forged_claims);
        let (signed_part, _) = unsigned.rsplit_once('.').unwrap();
        let forged = format!("{signed_part}.{signature}");
        // THEN it is verified on its own, and refused
        let err = verifier.verify(&forged).await.unwrap_err();
        assert!(matches!(err, ConfigError::Unauthenticated(_)), "{err:?}");
        // AND the real token is still served from the cache
        let again = verifier.verify(&token).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the forged token displaced nothing"
        );
        assert_eq!(again.tenant.as_ref().map(|t| t.as_str()), Some("tenant-a"));
    }
}
