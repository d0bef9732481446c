//! The agents' Refresh TLS material: a CA that config-refresh trusts and one
//! certificate for every agent (agents are dialled by IP, so the certificate
//! names [`DEFAULT_AGENT_TLS_DOMAIN`] and config-refresh expects that name),
//! written to Parameter Store under one path:
//!
//! - `{path}/ca`: String, the CA bundle config-refresh reads
//!   (`REFRESH_TLS_CA_PARAMETER`);
//! - `{path}/certificate`: String, the agents' certificate
//!   (`AGENT_TLS_CERT_PEM`, handed over by ECS);
//! - `{path}/private-key`: SecureString, its key (`AGENT_TLS_KEY_PEM`).
//!
//! The CA's own key is never stored: nothing else is ever signed with it, and
//! a rotation makes a new CA. A rotation keeps the previous CA in the bundle,
//! so config-refresh trusts agents still on the old certificate while they
//! roll.
//!
//! [`DEFAULT_AGENT_TLS_DOMAIN`]: tenant_config_shared::settings::DEFAULT_AGENT_TLS_DOMAIN

use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tenant_config_shared::refresh::agent_tls::parse_ca_bundle;

/// How long a new certificate is valid unless `--valid-days` says otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 825;

/// The three parameters under one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTlsParameters {
    pub ca: String,
    pub certificate: String,
    pub private_key: String,
}

impl AgentTlsParameters {
    /// The parameters under `path` (stack output `AgentTlsParameterPath`).
    pub fn under(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        Self {
            ca: format!("{path}/ca"),
            certificate: format!("{path}/certificate"),
            private_key: format!("{path}/private-key"),
        }
    }
}

/// A new CA and the agents' certificate and key it signed (PEM).
pub struct AgentTlsMaterial {
    pub ca_pem: String,
    pub certificate_pem: String,
    pub key_pem: String,
}

/// Makes a CA and a server certificate for `domain`, valid from an hour ago
/// (clock skew) for `valid_days`.
pub fn generate(domain: &str, valid_days: u32) -> Result<AgentTlsMaterial, String> {
    if valid_days == 0 {
        return Err("--valid-days must be at least 1".to_owned());
    }
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = (
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(valid_days)),
    );
    let error = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    ca.distinguished_name = name("tenant-config agents' Refresh CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let ca = ca.self_signed(&ca_key).map_err(error)?;

    let key = KeyPair::generate().map_err(error)?;
    let mut agent = CertificateParams::new(vec![domain.to_owned()]).map_err(error)?;
    agent.distinguished_name = name(domain);
    agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (agent.not_before, agent.not_after) = (not_before, not_after);
    let agent = agent.signed_by(&key, &ca, &ca_key).map_err(error)?;
    Ok(AgentTlsMaterial {
        ca_pem: ca.pem(),
        certificate_pem: agent.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Generates the material and writes it under `path`. Material already
/// there is replaced only with `overwrite` (a rotation), and then the
/// previous CA stays in the bundle beside the new one.
pub async fn put(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
    domain: &str,
    valid_days: u32,
    overwrite: bool,
) -> Result<AgentTlsParameters, String> {
    let parameters = AgentTlsParameters::under(path);
    let previous = match ssm.get_parameter().name(&parameters.ca).send().await {
        Ok(found) => found.parameter.and_then(|p| p.value),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            None
        }
        Err(e) => return Err(DisplayErrorContext(e).to_string()),
    };
    let previous_ca = previous.as_deref().and_then(first_certificate);
    if previous_ca.is_some() && !overwrite {
        return Err(format!(
            "{} already holds the agents' CA: agents present a certificate it signed. Pass \
             --overwrite to rotate (the old CA stays trusted beside the new one; then restart \
             config-refresh and roll the agents, docs/operations.md)",
            parameters.ca
        ));
    }
    let material = generate(domain, valid_days)?;
    let bundle = match previous_ca {
        Some(old) => format!("{}{old}", material.ca_pem),
        None => material.ca_pem.clone(),
    };
    let writes = [
        (&parameters.ca, bundle, ParameterType::String),
        (
            &parameters.certificate,
            material.certificate_pem,
            ParameterType::String,
        ),
        (
            &parameters.private_key,
            material.key_pem,
            ParameterType::SecureString,
        ),
    ];
    for (name, value, kind) in writes {
        ssm.put_parameter()
            .name(name)
            .value(value)
            .r#type(kind)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| format!("{name}: {}", DisplayErrorContext(e)))?;
    }
    Ok(parameters)
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
    /// Replace material already there (a rotation; the old CA stays trusted).
    #[arg(long)]
    overwrite: bool,
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
        let domain = self.domain.clone().unwrap_or_else(|| {
            stack
                .and_then(|s| s.parameter(crate::stack::parameter::AGENT_TLS_DOMAIN))
                .unwrap_or(tenant_config_shared::settings::DEFAULT_AGENT_TLS_DOMAIN)
                .to_owned()
        });
        let parameters = put(
            &aws_sdk_ssm::Client::new(aws),
            &path,
            &domain,
            self.valid_days,
            self.overwrite,
        )
        .await?;
        println!("{}", parameters.ca);
        println!("{}", parameters.certificate);
        println!("{}", parameters.private_key);
        eprintln!(
            "agents' Refresh TLS for {domain}, valid {} days: config-refresh reads the CA at its \
             next start; agents read the certificate and key at theirs",
            self.valid_days
        );
        Ok(())
    }
}

/// The agents' certificate and private key (PEM) as ECS hands them to the
/// agent (`AGENT_TLS_CERT_PEM`, `AGENT_TLS_KEY_PEM`): the local stack reads
/// them the same way.
pub async fn read_agent_identity(
    ssm: &aws_sdk_ssm::Client,
    parameters: &AgentTlsParameters,
) -> Result<(String, String), String> {
    let mut values = Vec::with_capacity(2);
    for name in [&parameters.certificate, &parameters.private_key] {
        let found = ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| format!("{name}: {}", DisplayErrorContext(e)))?;
        values.push(
            found
                .parameter
                .and_then(|p| p.value)
                .ok_or_else(|| format!("{name} is empty"))?,
        );
    }
    let key = values.pop().unwrap_or_default();
    let certificate = values.pop().unwrap_or_default();
    Ok((certificate, key))
}

/// The first certificate of a bundle, as PEM (a rotation keeps one old CA,
/// so the bundle never grows past two).
fn first_certificate(bundle: &str) -> Option<String> {
    parse_ca_bundle(bundle).ok()?;
    let end = "-----END CERTIFICATE-----";
    let start = bundle.find("-----BEGIN CERTIFICATE-----")?;
    let stop = bundle[start..].find(end)? + start + end.len();
    Some(format!("{}\n", &bundle[start..stop]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_material_is_a_ca_bundle_a_certificate_for_the_domain_and_its_key() {
        let material = generate("config-agent.tenant-config.internal", 30).unwrap();
        assert_eq!(parse_ca_bundle(&material.ca_pem).unwrap().len(), 1);
        assert_eq!(parse_ca_bundle(&material.certificate_pem).unwrap().len(), 1);
        assert!(material.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(material.ca_pem, material.certificate_pem);
        assert!(generate("d", 0).is_err());
    }

    #[test]
    fn a_rotation_keeps_one_old_ca_so_the_bundle_never_grows_past_two() {
        let one = generate("d", 1).unwrap().ca_pem;
        let two = generate("d", 1).unwrap().ca_pem;
        let bundle = format!("{two}{one}");
        assert_eq!(first_certificate(&bundle).unwrap(), two);
        assert_eq!(first_certificate("not pem"), None);
        assert_eq!(
            AgentTlsParameters::under("/tenant-config/s/agents/tls/").private_key,
            "/tenant-config/s/agents/tls/private-key"
        );
    }
}
