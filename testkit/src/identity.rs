//! A test user pool: a fixed RSA key published in a JWKS under kid `test-key`,
//! and ID tokens signed with it. `other-key` signs forged tokens.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tenant_config_shared::auth::{AuthSettings, JwksError, JwksSource, TokenVerifier};

pub const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST";
pub const CLIENT: &str = "agent-test-client";
pub const KID: &str = "test-key";
/// PEM of the key the fixture JWKS publishes.
pub const SIGNING_KEY_PEM: &str = include_str!("../fixtures/signing-key.pem");
/// PEM of a key no JWKS publishes: tokens it signs are forgeries.
pub const OTHER_KEY_PEM: &str = include_str!("../fixtures/other-key.pem");
const JWKS: &str = include_str!("../fixtures/jwks.json");

/// Serves the fixture JWKS without any I/O.
pub struct FixtureJwks;

#[async_trait]
impl JwksSource for FixtureJwks {
    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        Ok(serde_json::from_str(JWKS).expect("the JWKS fixture parses"))
    }
}

/// Settings that accept tokens from [`token`].
pub fn auth_settings() -> AuthSettings {
    AuthSettings {
        issuer: ISSUER.into(),
        jwks_url: String::new(),
        client_ids: vec![CLIENT.into()],
        leeway: Duration::from_secs(5),
        token_cache_max_entries: 100,
        jwks_refresh_interval: Duration::from_secs(60),
        jwks_max_age: Duration::from_secs(3600),
    }
}

/// A verifier that trusts the fixture pool.
pub fn verifier() -> Arc<TokenVerifier> {
    Arc::new(TokenVerifier::new(&auth_settings(), Arc::new(FixtureJwks)))
}

/// A valid ID token of a user of `tenant`, good for ten minutes.
pub fn token(tenant: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    sign(
        SIGNING_KEY_PEM,
        &json!({"sub": "u", "iss": ISSUER, "aud": CLIENT, "token_use": "id", "exp": now + 600, "custom:tenantId": tenant}),
    )
}

/// A valid ID token of user `sub` of `tenant` in the user pool `groups`.
pub fn token_in_groups(tenant: &str, sub: &str, groups: &[&str]) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    sign(
        SIGNING_KEY_PEM,
        &json!({"sub": sub, "iss": ISSUER, "aud": CLIENT, "token_use": "id", "exp": now + 600, "custom:tenantId": tenant, "cognito:groups": groups}),
    )
}

/// `claims` signed RS256 with `pem` under kid `test-key`.
pub fn sign(pem: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("fixture keys are RSA PEM");
    encode(&header, claims, &key).expect("claims serialize")
}
