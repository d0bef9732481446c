//! The one decrypting read, for every edge that serves it (config-api's
//! `/v1/secure/...`, an agent's `GetSecret`): the caller's grant for the
//! service's secrets, a read that bypasses every cache, and one audit line.
//!
//! The audit line is a JSON log line with `audit: "secret_read"`: who read
//! (tenant, app client, user), what (service, key, version), where (`via`,
//! and the caller's address at an agent) and the answer's status. It never
//! holds the value or the token. A refusal after the token was verified is
//! audited too: a burst of 403s is what a probe for secrets looks like.

use std::net::SocketAddr;

use crate::auth::Identity;
use crate::error::ConfigError;
use crate::grants::{Access, ServiceGrants};
use crate::reads::{ConfigReads, SecretEntry};
use crate::validate::{ConfigKey, ServiceName};

/// Where a secret was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// config-api's secure route.
    Api,
    /// An agent's `GetSecret`, from `peer`.
    Agent { peer: Option<SocketAddr> },
}

impl Via {
    fn name(&self) -> &'static str {
        match self {
            Via::Api => "config-api",
            Via::Agent { .. } => "agent",
        }
    }
}

/// Reads `key` of `service` for `identity`'s tenant, decrypted and uncached,
/// if its app client is granted the service's secrets; writes the audit line
/// whatever the answer.
pub async fn read_secret(
    reads: &ConfigReads,
    grants: Option<&ServiceGrants>,
    identity: &Identity,
    service: &ServiceName,
    key: &ConfigKey,
    via: Via,
) -> Result<SecretEntry, ConfigError> {
    let read = async {
        let tenant = identity.require_tenant()?;
        if let Some(grants) = grants {
            grants.check(identity, service, Access::Secure).await?;
        }
        reads.get_secure(tenant, service, key).await
    }
    .await;
    audit(identity, service, key, via, &read);
    read
}

fn audit(
    identity: &Identity,
    service: &ServiceName,
    key: &ConfigKey,
    via: Via,
    read: &Result<SecretEntry, ConfigError>,
) {
    let tenant = identity.tenant.as_ref().map(|t| t.as_str());
    let peer = match via {
        Via::Agent { peer: Some(peer) } => Some(peer.to_string()),
        _ => None,
    };
    match read {
        Ok(entry) => tracing::info!(
            target: "audit",
            audit = "secret_read",
            via = via.name(),
            peer,
            tenant,
            client = %identity.client_id,
            user = %identity.username,
            %service,
            %key,
            version = entry.value.version,
            status = 200,
            "secret read"
        ),
        Err(err) => tracing::info!(
            target: "audit",
            audit = "secret_read",
            via = via.name(),
            peer,
            tenant,
            client = %identity.client_id,
            user = %identity.username,
            %service,
            %key,
            status = err.status(),
            code = err.code(),
            "secret read refused"
        ),
    }
}

/// Headers a forwarding proxy adds: a request carrying one came from
/// elsewhere, whatever its peer address says.
const PROXY_HEADERS: &[&str] = &["forwarded", "x-forwarded-for", "x-real-ip", "via"];

/// Whether `headers` show a forwarding proxy (an Envoy sidecar adds
/// `x-envoy-*`, most others one of [`PROXY_HEADERS`]).
pub fn forwarded(headers: &http::HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| PROXY_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("x-envoy-"))
}

/// An agent answers secrets only to callers on its own host: a caller whose
/// address is not loopback (the readers' listener bound to a routable
/// address) or whose request shows a forwarding proxy is refused before its
/// token is read, and the refusal is logged with its address. A proxy on the
/// same host that adds no header looks local: that is why an agent serves
/// secrets only when `AGENT_SERVE_SECRETS` says so.
pub fn loopback_only(peer: Option<SocketAddr>, forwarded: bool) -> Result<(), ConfigError> {
    match peer {
        Some(peer) if peer.ip().to_canonical().is_loopback() && !forwarded => Ok(()),
        _ => {
            tracing::warn!(
                target: "audit",
                audit = "secret_read",
                via = "agent",
                peer = peer.map(|p| p.to_string()),
                forwarded,
                status = 403,
                "secret read refused: the caller is not on the agent's host"
            );
            Err(ConfigError::NotLoopback)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_callers_may_read_secrets_at_an_agent() {
        for allowed in [
            "127.0.0.1:5000",
            "127.8.9.10:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            let peer = Some(allowed.parse().unwrap());
            assert!(loopback_only(peer, false).is_ok(), "{allowed}");
            // a proxy on the host said where the call came from: refused
            assert!(loopback_only(peer, true).is_err(), "{allowed}");
        }
        for refused in [
            "10.0.0.5:5000",
            "192.0.2.2:5000",
            "[fd00::2]:5000",
            "[::ffff:10.0.0.5]:5000",
            "0.0.0.0:5000",
        ] {
            let err = loopback_only(Some(refused.parse().unwrap()), false).unwrap_err();
            assert_eq!(err.status(), 403, "{refused}");
        }
        // a transport that cannot say who called is refused too
        assert_eq!(loopback_only(None, false).unwrap_err().status(), 403);
    }

    #[test]
    fn a_forwarding_proxys_headers_are_recognised() {
        let with = |name: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(name, http::HeaderValue::from_static("x"));
            forwarded(&headers)
        };
        for proxied in [
            "forwarded",
            "x-forwarded-for",
            "x-real-ip",
            "via",
            "x-envoy-external-address",
        ] {
            assert!(with(proxied), "{proxied}");
        }
        assert!(!with("authorization"));
        assert!(!with("content-type"));
    }
}
