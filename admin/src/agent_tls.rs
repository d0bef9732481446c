//! The agents' Refresh TLS material: a CA bundle that config-refresh trusts
//! and one identity (certificate and private key) for every agent: agents
//! are dialled by IP, so the certificate names [`DEFAULT_AGENT_TLS_DOMAIN`]
//! (or the stack's `AgentTlsDomain`) and config-refresh expects that name.
//! Written to Parameter Store under one path:
//!
//! - `{path}/ca`: String, the CA bundle config-refresh reads
//!   (`REFRESH_TLS_CA_PARAMETER`), at most [`MAX_BUNDLE`] certificates;
//! - `{path}/identity`: SecureString, the agents' certificate followed by its
//!   private key (`AGENT_TLS_PEM`, handed over by ECS). One value, so a
//!   certificate and a key from different runs can never be paired.
//!
//! The CA's own key is never stored: nothing else is signed with it, and a
//! rotation makes a new CA. A rotation keeps in the bundle the CAs that
//! signed the identity agents run with, writes the bundle first, and waits
//! until every warm config-refresh has read it again
//! ([`CA_REFRESH_INTERVAL`]) before it hands agents the new identity.
//!
//! [`DEFAULT_AGENT_TLS_DOMAIN`]: tenant_config_shared::settings::DEFAULT_AGENT_TLS_DOMAIN
//! [`CA_REFRESH_INTERVAL`]: tenant_config_shared::refresh::key::CA_REFRESH_INTERVAL

use std::time::Duration;

use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tenant_config_shared::refresh::agent_tls::{check_identity, parse_ca_bundle};
use tenant_config_shared::refresh::key::CA_REFRESH_INTERVAL;

/// How long a new certificate is valid unless `--valid-days` says otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 825;
/// The longest validity `--valid-days` accepts (ten years).
pub const MAX_VALID_DAYS: u32 = 3650;
/// The most CAs the bundle keeps (the new one and those still in use).
pub const MAX_BUNDLE: usize = 3;

/// The two parameters under one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTlsParameters {
    pub ca: String,
    pub identity: String,
}

impl AgentTlsParameters {
    /// The parameters under `path` (stack output `AgentTlsParameterPath`).
    pub fn under(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        Self {
            ca: format!("{path}/ca"),
            identity: format!("{path}/identity"),
        }
    }
}

/// A new CA and the agents' identity it signed (PEM).
pub struct AgentTlsMaterial {
    pub ca_pem: String,
    /// The certificate, then its private key.
    pub identity_pem: String,
}

/// Makes a CA and a server certificate for `domain`, valid from an hour ago
/// (clock skew) for `valid_days`.
pub fn generate(domain: &str, valid_days: u32) -> Result<AgentTlsMaterial, String> {
    if !(1..=MAX_VALID_DAYS).contains(&valid_days) {
        return Err(format!("--valid-days must be 1 to {MAX_VALID_DAYS}"));
    }
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = (
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(valid_days)),
    );
    let error = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    ca.distinguished_name = name(&format!(
        "tenant-config agents' Refresh CA {}",
        now.unix_timestamp()
    ));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let ca = ca.self_signed(&ca_key).map_err(error)?;

    let key = KeyPair::generate().map_err(error)?;
    let mut agent = CertificateParams::new(vec![domain.to_owned()]).map_err(error)?;
    // The name is checked in the certificate's SAN; the common name is a label.
    agent.distinguished_name = name("tenant-config agent");
    agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (agent.not_before, agent.not_after) = (not_before, not_after);
    let agent = agent.signed_by(&key, &ca, &ca_key).map_err(error)?;
    Ok(AgentTlsMaterial {
        ca_pem: ca.pem(),
        identity_pem: format!("{}{}", agent.pem(), key.serialize_pem()),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Generates the material and writes it under `path`. Material already
/// there (either parameter) is replaced only with `overwrite` (a rotation):
/// the bundle then keeps the CAs that signed the identity agents run with,
/// and is written `trust_wait` before the identity, so that every warm
/// config-refresh trusts the new CA before any agent presents it.
pub async fn put(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
    domain: &str,
    valid_days: u32,
    overwrite: bool,
    trust_wait: Duration,
) -> Result<AgentTlsParameters, String> {
    let parameters = AgentTlsParameters::under(path);
    let bundle = read(ssm, &parameters.ca, false).await?;
    let identity = read(ssm, &parameters.identity, true).await?;
    if (bundle.is_some() || identity.is_some()) && !overwrite {
        return Err(format!(
            "{path} already holds the agents' TLS material: agents present a certificate its CA \
             signed. Pass --overwrite to rotate (the CAs in use stay trusted beside the new one; \
             docs/operations.md)"
        ));
    }
    let material = generate(domain, valid_days)?;
    let kept = cas_in_use(bundle.as_deref(), identity.as_deref(), domain);
    let mut new_bundle = material.ca_pem.clone();
    for ca in kept.iter().take(MAX_BUNDLE - 1) {
        new_bundle.push_str(ca);
    }
    write(ssm, &parameters.ca, &new_bundle, ParameterType::String).await?;
    if identity.is_some() && !trust_wait.is_zero() {
        eprintln!(
            "waiting {} s: every warm config-refresh reads {} again within {} s, before agents \
             can get a certificate of the new CA",
            trust_wait.as_secs(),
            parameters.ca,
            CA_REFRESH_INTERVAL.as_secs()
        );
        tokio::time::sleep(trust_wait).await;
    }
    write(
        ssm,
        &parameters.identity,
        &material.identity_pem,
        ParameterType::SecureString,
    )
    .await?;
    Ok(parameters)
}

/// The CAs (PEM, one each) of `bundle` that the stored identity chains to:
/// agents run with it, so config-refresh must keep trusting them. When the
/// identity is missing or chains to none (a run cut short), every CA of the
/// bundle is kept, newest first.
fn cas_in_use(bundle: Option<&str>, identity: Option<&str>, domain: &str) -> Vec<String> {
    let Some(bundle) = bundle else {
        return Vec::new();
    };
    let cas = split_bundle(bundle);
    let now = std::time::SystemTime::now();
    let signing: Vec<String> = match identity {
        Some(identity) => cas
            .iter()
            .filter(|ca| check_identity(ca, identity, domain, now).is_ok())
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    if signing.is_empty() { cas } else { signing }
}

/// Each certificate of a bundle as its own PEM block.
fn split_bundle(bundle: &str) -> Vec<String> {
    if parse_ca_bundle(bundle).is_err() {
        return Vec::new();
    }
    let end = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(end)
        .filter_map(|part| {
            let start = part.find("-----BEGIN CERTIFICATE-----")?;
            part.ends_with(end).then(|| format!("{}\n", &part[start..]))
        })
        .collect()
}

async fn read(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
    decrypt: bool,
) -> Result<Option<String>, String> {
    match ssm
        .get_parameter()
        .name(name)
        .with_decryption(decrypt)
        .send()
        .await
    {
        Ok(found) => Ok(found.parameter.and_then(|p| p.value)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("{name}: {}", DisplayErrorContext(e))),
    }
}

async fn write(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
    value: &str,
    kind: ParameterType,
) -> Result<(), String> {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("{name}: {}", DisplayErrorContext(e)))
}

/// `tenant-config-admin agent-tls`: generate the agents' Refresh TLS
/// material (a CA config-refresh trusts, the agents' certificate and key)
/// into Parameter Store, once per stack (`--overwrite` rotates).
#[derive(Debug, clap::Args)]
pub struct AgentTlsArgs {
    /// The parameter path (stack output `AgentTlsParameterPath`).
    #[arg(long)]
    path: Option<String>,
    /// The name on the certificate (the stack's `AgentTlsDomain`).
    #[arg(long)]
    domain: Option<String>,
    /// Days the CA and certificate are valid.
    #[arg(long, default_value_t = DEFAULT_VALID_DAYS)]
    valid_days: u32,
    /// Replace material already there (a rotation; the CAs in use stay trusted).
    #[arg(long)]
    overwrite: bool,
    /// On a rotation, seconds between writing the new CA bundle and the new
    /// identity: every warm config-refresh reads the bundle again within a
    /// minute, so agents get a certificate it trusts.
    #[arg(long, default_value_t = CA_REFRESH_INTERVAL.as_secs() + 10)]
    trust_wait_secs: u64,
}

impl AgentTlsArgs {
    pub async fn run(
        &self,
        stack: Option<&crate::stack::StackOutputs>,
        aws: &aws_config::SdkConfig,
    ) -> Result<(), String> {
        let path = crate::stack::resolve(
            self.path.as_deref(),
            stack,
            crate::stack::output::AGENT_TLS_PARAMETER_PATH,
            None,
        )?;
        // config-refresh expects the stack's name: another would fail every push.
        let expected = stack
            .and_then(|s| s.parameter(crate::stack::parameter::AGENT_TLS_DOMAIN))
            .unwrap_or(tenant_config_shared::settings::DEFAULT_AGENT_TLS_DOMAIN);
        let domain = self.domain.as_deref().unwrap_or(expected);
        if stack.is_some() && domain != expected {
            return Err(format!(
                "--domain {domain}: the stack's config-refresh expects {expected} (AgentTlsDomain)"
            ));
        }
        let parameters = put(
            &aws_sdk_ssm::Client::new(aws),
            &path,
            domain,
            self.valid_days,
            self.overwrite,
            Duration::from_secs(self.trust_wait_secs),
        )
        .await?;
        println!("{}", parameters.ca);
        println!("{}", parameters.identity);
        eprintln!(
            "agents' Refresh TLS for {domain}, valid {} days: config-refresh reads the CA bundle \
             within a minute; agents read the identity when they start",
            self.valid_days
        );
        Ok(())
    }
}

/// The agents' identity (PEM: certificate, then private key) as ECS hands it
/// to the agent (`AGENT_TLS_PEM`): the local stack reads it the same way.
pub async fn read_agent_identity(
    ssm: &aws_sdk_ssm::Client,
    parameters: &AgentTlsParameters,
) -> Result<String, String> {
    read(ssm, &parameters.identity, true)
        .await?
        .ok_or_else(|| format!("{} does not exist", parameters.identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "config-agent.tenant-config.internal";

    #[test]
    fn the_material_is_a_ca_and_an_identity_it_signed_for_the_domain() {
        let material = generate(DOMAIN, 30).unwrap();
        assert_eq!(parse_ca_bundle(&material.ca_pem).unwrap().len(), 1);
        let now = std::time::SystemTime::now();
        check_identity(&material.ca_pem, &material.identity_pem, DOMAIN, now).unwrap();
        // valid for the days asked, not longer
        let in_31_days = now + Duration::from_secs(31 * 86_400);
        assert!(
            check_identity(&material.ca_pem, &material.identity_pem, DOMAIN, in_31_days).is_err()
        );
        for days in [0, MAX_VALID_DAYS + 1, u32::MAX] {
            assert!(generate(DOMAIN, days).is_err(), "{days}");
        }
    }

    #[test]
    fn a_rotation_keeps_the_cas_agents_run_with_and_everything_after_a_cut_short_run() {
        let running = generate(DOMAIN, 1).unwrap();
        let unused = generate(DOMAIN, 1).unwrap();
        let bundle = format!("{}{}", unused.ca_pem, running.ca_pem);
        // GIVEN agents running with the identity `running` signed
        assert_eq!(
            cas_in_use(Some(&bundle), Some(&running.identity_pem), DOMAIN),
            vec![running.ca_pem.clone()]
        );
        // a run cut short (no identity, or one no CA of the bundle signed): all kept
        assert_eq!(cas_in_use(Some(&bundle), None, DOMAIN).len(), 2);
        let stray = generate(DOMAIN, 1).unwrap();
        assert_eq!(
            cas_in_use(Some(&bundle), Some(&stray.identity_pem), DOMAIN).len(),
            2
        );
        assert!(cas_in_use(None, None, DOMAIN).is_empty());
        assert_eq!(
            AgentTlsParameters::under("/tenant-config/s/agents/tls/").identity,
            "/tenant-config/s/agents/tls/identity"
        );
    }
}
