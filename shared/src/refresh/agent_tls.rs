//! How config-refresh reaches the agents' Refresh listeners: over TLS,
//! verifying each agent's certificate against a CA bundle and the name the
//! certificates carry. Plaintext only when chosen explicitly for local use
//! (`REFRESH_PLAINTEXT=allow`), as the agents must choose it too.
//!
//! The CA bundle comes from a Parameter Store parameter
//! (`REFRESH_TLS_CA_PARAMETER`: what the template sets and
//! `tenant-config-admin agent-tls` writes) or from PEM in the environment
//! (`REFRESH_TLS_CA_PEM`). Without a usable bundle config-refresh pushes to no
//! agent, exactly as without a signing key: every change is still journaled
//! and flushed, counted in `UnpushedChanges`, and the parameter is read again
//! later (see [`super::key`]).

use aws_sdk_ssm::error::DisplayErrorContext;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use thiserror::Error;

use super::fanout::RefreshTls;

/// How config-refresh calls agents, as its settings chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTransport {
    /// TLS, trusting the CA bundle from `ca`, expecting certificates for `domain`.
    Tls { ca: TlsCaSource, domain: String },
    /// Plaintext (`REFRESH_PLAINTEXT=allow`): local stacks and tests only.
    Plaintext,
    /// Neither a CA nor plaintext was configured: nothing is pushed.
    Unconfigured,
}

/// Where the CA bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCaSource {
    /// PEM given in the environment (`REFRESH_TLS_CA_PEM`).
    Pem(String),
    /// A Parameter Store parameter holding the PEM (`REFRESH_TLS_CA_PARAMETER`).
    Parameter(String),
}

/// Why config-refresh cannot call agents over TLS. Carries no certificate.
#[derive(Debug, Error)]
pub enum AgentTlsError {
    #[error(
        "no CA for the agents' Refresh listeners: set REFRESH_TLS_CA_PARAMETER (the template does; \
         tenant-config-admin agent-tls writes it) or REFRESH_TLS_CA_PEM; REFRESH_PLAINTEXT=allow \
         is for local stacks only"
    )]
    Unconfigured,
    #[error("cannot read the agents' CA parameter '{name}': {detail}")]
    Unreadable { name: String, detail: String },
    #[error("the agents' CA from {origin} is not a PEM certificate bundle: {reason}")]
    Malformed { origin: String, reason: String },
}

impl AgentTlsError {
    /// A failure likely to pass soon (throttling, a network error), worth
    /// trying again sooner than a missing or malformed bundle.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreadable { .. })
    }
}

/// The certificates of a PEM bundle, refused when it holds none, when a
/// block is not PEM, or when a certificate cannot be a trust anchor (the
/// TLS client would skip it silently and trust nothing).
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certificates.is_empty() {
        return Err("no '-----BEGIN CERTIFICATE-----' block".to_owned());
    }
    for (n, certificate) in certificates.iter().enumerate() {
        webpki::anchor_from_trusted_cert(certificate)
            .map_err(|e| format!("certificate {} is not a usable CA: {e:?}", n + 1))?;
    }
    Ok(certificates)
}

/// Checks an agent identity (PEM: certificate chain, then its private key)
/// as config-refresh's TLS client will: the certificate chains to a CA of
/// `bundle`, names `domain`, and is valid at `at` (now, or a date ahead to
/// warn of expiry).
pub fn check_identity(
    bundle: &str,
    identity: &str,
    domain: &str,
    at: std::time::SystemTime,
) -> Result<(), String> {
    let anchors_der = parse_ca_bundle(bundle)?;
    let anchors: Vec<_> = anchors_der
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .collect();
    let chain = CertificateDer::pem_slice_iter(identity.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or("the identity holds no certificate")?;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(identity.as_bytes())
        .map_err(|e| format!("the identity holds no private key: {e}"))?;
    let leaf = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("{e:?}"))?;
    let since_epoch = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        rustls_pki_types::UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| format!("the certificate does not chain to the CA bundle: {e:?}"))?;
    let name =
        rustls_pki_types::ServerName::try_from(domain).map_err(|e| format!("'{domain}': {e}"))?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|e| format!("the certificate does not name {domain}: {e:?}"))
}

/// The TLS settings to call agents with (`None`: plaintext, chosen
/// explicitly), reading the CA parameter when that is where it lives.
pub async fn resolve(
    transport: &AgentTransport,
    ssm: &aws_sdk_ssm::Client,
) -> Result<Option<RefreshTls>, AgentTlsError> {
    let (ca, domain) = match transport {
        AgentTransport::Plaintext => return Ok(None),
        AgentTransport::Unconfigured => return Err(AgentTlsError::Unconfigured),
        AgentTransport::Tls { ca, domain } => (ca, domain),
    };
    let (pem, origin) = match ca {
        TlsCaSource::Pem(pem) => (pem.clone(), "REFRESH_TLS_CA_PEM".to_owned()),
        TlsCaSource::Parameter(name) => (read_parameter(ssm, name).await?, name.clone()),
    };
    parse_ca_bundle(&pem).map_err(|reason| AgentTlsError::Malformed { origin, reason })?;
    Ok(Some(RefreshTls {
        ca_pem: pem,
        domain: domain.clone(),
    }))
}

async fn read_parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<String, AgentTlsError> {
    let output =
        ssm.get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| AgentTlsError::Unreadable {
                name: name.to_owned(),
                detail: DisplayErrorContext(e).to_string(),
            })?;
    Ok(output.parameter.and_then(|p| p.value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../../../testkit/fixtures/tls/ca.pem");
    const OTHER_CA: &str = include_str!("../../../testkit/fixtures/tls/other-ca.pem");

    #[test]
    fn a_bundle_of_certificates_parses_and_anything_else_is_refused() {
        assert_eq!(parse_ca_bundle(CA).unwrap().len(), 1);
        // a rotation's bundle: the new CA beside the old one
        assert_eq!(
            parse_ca_bundle(&format!("{CA}{OTHER_CA}")).unwrap().len(),
            2
        );
        for bad in [
            "",
            "not a pem",
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        ] {
            assert!(parse_ca_bundle(bad).is_err(), "{bad:?}");
        }
        // a private key is not a CA, nor is a PEM block of bytes that decode
        // but are no certificate (the TLS client would skip it and trust nothing)
        let key = include_str!("../../../testkit/fixtures/tls/agent.key");
        assert!(parse_ca_bundle(key).is_err());
        let not_a_certificate =
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
        assert!(parse_ca_bundle(not_a_certificate).is_err());
    }

    #[test]
    fn an_identity_is_checked_as_the_tls_client_will_check_it() {
        let identity = format!(
            "{}{}",
            include_str!("../../../testkit/fixtures/tls/agent.pem"),
            include_str!("../../../testkit/fixtures/tls/agent.key")
        );
        let domain = "config-agent.tenant-config.internal";
        let now = std::time::SystemTime::now();
        check_identity(CA, &identity, domain, now).unwrap();
        // signed by another CA, for another name, or past its end: refused
        assert!(check_identity(OTHER_CA, &identity, domain, now).is_err());
        assert!(check_identity(CA, &identity, "other.example", now).is_err());
        let in_2080 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(3_471_292_800);
        assert!(check_identity(CA, &identity, domain, in_2080).is_err());
        // a certificate without its key is no identity
        let certificate_only = include_str!("../../../testkit/fixtures/tls/agent.pem");
        assert!(check_identity(CA, certificate_only, domain, now).is_err());
    }

    #[tokio::test]
    async fn without_a_ca_or_an_explicit_plaintext_choice_nothing_is_pushed() {
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::Config::builder()
                .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
                .build(),
        );
        assert!(matches!(
            resolve(&AgentTransport::Unconfigured, &ssm).await,
            Err(AgentTlsError::Unconfigured)
        ));
        assert_eq!(
            resolve(&AgentTransport::Plaintext, &ssm).await.unwrap(),
            None
        );
        let bad = AgentTransport::Tls {
            ca: TlsCaSource::Pem("-----BEGIN PRIVATE KEY-----".to_owned()),
            domain: "d".to_owned(),
        };
        assert!(matches!(
            resolve(&bad, &ssm).await,
            Err(AgentTlsError::Malformed { .. })
        ));
        let good = AgentTransport::Tls {
            ca: TlsCaSource::Pem(CA.to_owned()),
            domain: "d".to_owned(),
        };
        assert_eq!(resolve(&good, &ssm).await.unwrap().unwrap().domain, "d");
    }
}
