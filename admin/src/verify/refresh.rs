//! The refresh path's checks: the signing key, the agents' TLS material, the
//! agents registered in Cloud Map, and whether those agents accept a Refresh
//! signed with that key over that TLS.

use aws_sdk_servicediscovery::error::DisplayErrorContext;
use aws_sdk_servicediscovery::types::{HealthStatus, HealthStatusFilter};
use tenant_config_shared::StoreKind;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::refresh::agent_tls::{
    self, AgentTransport, TlsCaSource, check_identity, parse_ca_bundle,
};
use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::refresh::change::{ChangeAudit, ChangeRecord};
use tenant_config_shared::refresh::discovery::{
    IPV4_ATTRIBUTE, Instance, MAX_DISCOVERED, PORT_ATTRIBUTE, instance_address,
};
use tenant_config_shared::refresh::fanout::{Fanout, FanoutReport, FanoutSettings, RefreshTls};
use tenant_config_shared::refresh::key::load_refresh_key;
use tenant_config_shared::refresh::networks::AgentNetworks;
use tenant_config_shared::refresh::proto::Operation;
use tenant_config_shared::refresh::signing::{RefreshKey, unix_ms_now};
use tenant_config_shared::settings::DEFAULT_AGENT_TLS_DOMAIN;

use super::{Outcome, VerifyOptions};
use crate::stack::{StackOutputs, output, parameter};

pub const SIGNING_KEY: &str = "signing-key";
pub const AGENTS_REGISTERED: &str = "agents-registered";
pub const AGENTS_TRUST_KEY: &str = "agents-trust-key";
pub const AGENT_TLS: &str = "agent-tls";

/// How long before its end a certificate fails verify: time to rotate.
pub const CERTIFICATE_RENEWAL_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(30 * 86_400);

/// The agents' TLS material is in place and consistent, as config-refresh's
/// TLS client will judge it: the CA bundle parses as usable CAs, and the
/// agents' identity (a SecureString) chains to it, names the stack's
/// `AgentTlsDomain`, and stays valid for [`CERTIFICATE_RENEWAL_WINDOW`].
/// Returns the TLS settings the probe Refresh uses.
pub async fn agent_tls_material(aws: &Aws, stack: &StackOutputs) -> (Outcome, Option<RefreshTls>) {
    let fix = format!(
        "tenant-config-admin --stack {} agent-tls (add --overwrite to replace material that is \
         there), then update the agents' stack so new tasks start with it",
        stack.name
    );
    let path = match stack.output(output::AGENT_TLS_PARAMETER_PATH) {
        Ok(path) => path,
        Err(e) => {
            return (
                Outcome::fail(AGENT_TLS, e, "deploy the current template.yaml"),
                None,
            );
        }
    };
    let parameters = crate::agent_tls::AgentTlsParameters::under(path);
    let transport = AgentTransport::Tls {
        ca: TlsCaSource::Parameter(parameters.ca.clone()),
        domain: stack
            .parameter(parameter::AGENT_TLS_DOMAIN)
            .unwrap_or(DEFAULT_AGENT_TLS_DOMAIN)
            .to_owned(),
    };
    let ssm = aws.ssm();
    let tls = match agent_tls::resolve(&transport, &ssm).await {
        Ok(Some(tls)) => tls,
        Ok(None) => return (Outcome::fail(AGENT_TLS, "plaintext", fix), None),
        Err(e) => return (Outcome::fail(AGENT_TLS, e.to_string(), fix), None),
    };
    let identity = match ssm
        .get_parameter()
        .name(&parameters.identity)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(found) => found.parameter,
        Err(e) => {
            let detail = format!("{}: {}", parameters.identity, DisplayErrorContext(e));
            return (Outcome::fail(AGENT_TLS, detail, fix), Some(tls));
        }
    };
    let secure = identity.as_ref().and_then(|p| p.r#type().cloned())
        == Some(aws_sdk_ssm::types::ParameterType::SecureString);
    let identity = identity.and_then(|p| p.value).unwrap_or_default();
    let now = std::time::SystemTime::now();
    let problem = if !secure {
        Some(format!("{} must be a SecureString", parameters.identity))
    } else if let Err(e) = check_identity(&tls.ca_pem, &identity, &tls.domain, now) {
        Some(format!("{}: {e}", parameters.identity))
    } else if check_identity(
        &tls.ca_pem,
        &identity,
        &tls.domain,
        now + CERTIFICATE_RENEWAL_WINDOW,
    )
    .is_err()
    {
        Some(format!(
            "the agents' certificate expires within {} days: rotate it (agent-tls --overwrite)",
            CERTIFICATE_RENEWAL_WINDOW.as_secs() / 86_400
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        return (Outcome::fail(AGENT_TLS, problem, fix), Some(tls));
    }
    let count = parse_ca_bundle(&tls.ca_pem).map(|c| c.len()).unwrap_or(0);
    (
        Outcome::ok(
            AGENT_TLS,
            format!(
                "{} holds {count} CA certificate(s); the agents' identity chains to it for {}",
                parameters.ca, tls.domain
            ),
        ),
        Some(tls),
    )
}

/// The refresh key parameter parses as config-refresh's Ed25519 key.
pub async fn signing_key(
    aws: &Aws,
    stack: &StackOutputs,
    parameter_root: &str,
) -> (Outcome, Option<RefreshKey>) {
    let name = match stack.output(output::REFRESH_KEY_PARAMETER_NAME) {
        Ok(name) => name,
        Err(e) => {
            return (
                Outcome::fail(SIGNING_KEY, e, "deploy the current template.yaml"),
                None,
            );
        }
    };
    match load_refresh_key(&aws.ssm(), name, parameter_root).await {
        Ok(key) => (
            Outcome::ok(
                SIGNING_KEY,
                format!(
                    "{name} holds Ed25519 key {}; agents must trust {}",
                    key.id(),
                    key.public_entry()
                ),
            ),
            Some(key),
        ),
        Err(e) => (
            Outcome::fail(
                SIGNING_KEY,
                format!("{name}: {e}"),
                format!(
                    "tenant-config-admin --stack {} refresh-key --id k1 (only ed25519:{{id}}:{{hex seed}} is accepted), \
                     give the printed entry to every agent's REFRESH_PUBLIC_KEYS, then update the stack so config-refresh restarts",
                    stack.name
                ),
            ),
            None,
        ),
    }
}

/// One registered instance as Cloud Map reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    pub healthy: bool,
    pub attributes: std::collections::HashMap<String, String>,
}

/// The networks config-refresh pushes to: the stack's `AgentNetworks`, or
/// the default private address space.
fn agent_networks(stack: &StackOutputs) -> Result<AgentNetworks, String> {
    match stack.parameter(parameter::AGENT_NETWORKS) {
        Some(list) => AgentNetworks::parse(list).map_err(|e| format!("AgentNetworks: {e}")),
        None => Ok(AgentNetworks::private()),
    }
}

/// Judges the registrations: every instance must name an address
/// config-refresh can call (IPv4 and port, inside its networks), and at least
/// one must be healthy unless no agents are expected. Returns the outcome and
/// the healthy, callable instances.
pub fn judge_registrations(
    registered: &[Registered],
    networks: &AgentNetworks,
    no_agents: bool,
) -> (Outcome, Vec<Instance>) {
    let mut problems = Vec::new();
    let mut callable = Vec::new();
    for instance in registered {
        let Some(address) = instance_address(&instance.attributes) else {
            let missing: Vec<&str> = [IPV4_ATTRIBUTE, PORT_ATTRIBUTE]
                .into_iter()
                .filter(|a| !instance.attributes.contains_key(*a))
                .collect();
            problems.push(format!(
                "{} has no usable {} (config-refresh skips it)",
                instance.id,
                missing.join(" / ")
            ));
            continue;
        };
        if !networks.allows(address.ip()) {
            problems.push(format!(
                "{} at {} is outside AgentNetworks (config-refresh never calls it)",
                instance.id,
                address.ip()
            ));
            continue;
        }
        if instance.healthy {
            callable.push(Instance {
                id: instance.id.clone(),
                address,
            });
        }
    }
    let unhealthy = registered.iter().filter(|i| !i.healthy).count();
    let summary = format!(
        "{} registered, {} healthy and callable{}",
        registered.len(),
        callable.len(),
        if unhealthy > 0 {
            format!(", {unhealthy} unhealthy (no pushes; they catch up from the journal)")
        } else {
            String::new()
        }
    );
    let outcome = if !problems.is_empty() {
        Outcome::fail(
            AGENTS_REGISTERED,
            format!("{summary}; {}", problems.join("; ")),
            "the ECS service's serviceRegistries must name the Refresh port (containerPort 50052), \
             tasks must run in subnets inside AgentNetworks; see docs/deploy.md (agents on ECS)",
        )
    } else if callable.is_empty() && !no_agents {
        Outcome::fail(
            AGENTS_REGISTERED,
            summary,
            "deploy agents (agent-service.yaml) or pass --no-agents if none should run yet",
        )
    } else {
        Outcome::ok(AGENTS_REGISTERED, summary)
    };
    (outcome, callable)
}

/// Every instance of the agents' Cloud Map service, healthy or not.
pub async fn agents_registered(
    aws: &Aws,
    stack: &StackOutputs,
    options: &VerifyOptions,
) -> (Outcome, Vec<Instance>) {
    let names = stack
        .output(output::AGENT_NAMESPACE_NAME)
        .and_then(|ns| Ok((ns, stack.output(output::AGENT_SERVICE_NAME)?)));
    let ((namespace, service), networks) = match names.and_then(|n| Ok((n, agent_networks(stack)?)))
    {
        Ok(found) => found,
        Err(e) => {
            return (
                Outcome::fail(AGENTS_REGISTERED, e, "deploy the current template.yaml"),
                Vec::new(),
            );
        }
    };
    let answer = aws
        .cloud_map()
        .discover_instances()
        .namespace_name(namespace)
        .service_name(service)
        .health_status(HealthStatusFilter::All)
        .max_results(MAX_DISCOVERED)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            return (
                Outcome::fail(
                    AGENTS_REGISTERED,
                    format!(
                        "DiscoverInstances {namespace}/{service}: {}",
                        DisplayErrorContext(e)
                    ),
                    "check the namespace and service exist (stack outputs AgentNamespaceName, AgentServiceName) and the credentials may discover them",
                ),
                Vec::new(),
            );
        }
    };
    let registered: Vec<Registered> = answer
        .instances()
        .iter()
        .map(|i| Registered {
            id: i.instance_id().unwrap_or_default().to_owned(),
            // As config-refresh discovers them: HEALTHY only (UNKNOWN is not).
            healthy: matches!(i.health_status(), Some(HealthStatus::Healthy)),
            attributes: i.attributes().cloned().unwrap_or_default(),
        })
        .collect();
    judge_registrations(&registered, &networks, options.no_agents)
}

/// The change a probe Refresh names: a key of verify's own tenant, so an
/// agent that accepts it drops nothing anyone reads.
pub fn probe_change(nonce: &str) -> Result<ChangeRecord, String> {
    Ok(ChangeRecord {
        subject: Subject::Entry(super::api::probe_item(nonce)?),
        store: StoreKind::DynamoDb,
        operation: Operation::Update,
        change_id: format!("verify-{nonce}"),
        time_unix_ms: unix_ms_now(),
        audit: ChangeAudit {
            actor: Some("tenant-config-admin verify".to_owned()),
            ..ChangeAudit::default()
        },
        value_type: None,
    })
}

/// Silence (a deadline, no route) is all that says "not reachable from
/// here". A refused connection or a failed TLS handshake means the host
/// answered but no Refresh listener config-refresh can use did: a wrong
/// registered port, or TLS settings that do not match the agent's.
fn silent(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    [
        "deadline",
        "timed out",
        "timeout",
        "no route",
        "unreachable",
    ]
    .iter()
    .any(|word| reason.contains(word))
        && !reason.contains("refused")
}

/// Judges a probe fan-out: a refused signature, or a registered address that
/// answers no Refresh, fails; agents that cannot be reached from here are
/// not judged.
pub fn judge_probe(report: &FanoutReport, key: &RefreshKey) -> Outcome {
    let (refused, others): (Vec<_>, Vec<_>) = report.failed.iter().partition(|(_, reason)| {
        reason.starts_with("Unauthenticated") || reason.starts_with("PermissionDenied")
    });
    let (unreachable, broken): (Vec<_>, Vec<_>) =
        others.into_iter().partition(|(_, reason)| silent(reason));
    let names = |list: &[&(String, String)]| {
        list.iter()
            .map(|(id, reason)| format!("{id} ({reason})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !refused.is_empty() {
        return Outcome::fail(
            AGENTS_TRUST_KEY,
            format!(
                "{} of {} agents refused a Refresh signed with key {}: {}",
                refused.len(),
                report.instances,
                key.id(),
                names(&refused)
            ),
            format!(
                "add {} to those agents' REFRESH_PUBLIC_KEYS (keep the old entry while rotating) and restart them; \
                 until then every push to them fails and they converge only by catching up",
                key.public_entry()
            ),
        );
    }
    if !broken.is_empty() {
        return Outcome::fail(
            AGENTS_TRUST_KEY,
            format!(
                "{} of {} registered addresses answer no Refresh: {}",
                broken.len(),
                report.instances,
                names(&broken)
            ),
            "register the agents' Refresh port (AGENT_REFRESH_LISTEN_ADDR, 50052; in ECS the port \
             serviceRegistries names), and give the agents the certificate and key agent-tls wrote \
             (AGENT_TLS_CERT_PEM, AGENT_TLS_KEY_PEM; agent-service.yaml does) for AgentTlsDomain",
        );
    }
    if report.ok == 0 {
        return Outcome::skip(
            AGENTS_TRUST_KEY,
            format!(
                "no agent reachable from here ({} tried: {}); run verify inside the agents' VPC, \
                 or watch the agents' RefusedRefreshes metric",
                report.instances,
                names(&unreachable)
            ),
        );
    }
    let mut detail = format!(
        "{} of {} agents accepted a Refresh signed with key {}",
        report.ok,
        report.instances,
        key.id()
    );
    if !unreachable.is_empty() {
        detail.push_str(&format!(
            "; not reachable from here: {}",
            names(&unreachable)
        ));
    }
    Outcome::ok(AGENTS_TRUST_KEY, detail)
}

/// Sends a probe Refresh, signed with the stack's key, to every healthy
/// registered agent.
pub async fn agents_trust_key(
    key: Option<RefreshKey>,
    tls: Option<&RefreshTls>,
    instances: &[Instance],
    options: &VerifyOptions,
) -> Outcome {
    let Some(key) = key else {
        return Outcome::skip(AGENTS_TRUST_KEY, "no usable signing key (see signing-key)");
    };
    if instances.is_empty() {
        return Outcome::skip(AGENTS_TRUST_KEY, "no healthy agent registered");
    }
    let nonce = format!("{:x}", unix_ms_now());
    let change = match probe_change(&nonce) {
        Ok(change) => change,
        Err(e) => return Outcome::fail(AGENTS_TRUST_KEY, e, "report this as a bug"),
    };
    let mut fanout = Fanout::new(
        key.clone(),
        FanoutSettings {
            concurrency: 16,
            deadline: options.agent_deadline,
        },
    );
    match tls {
        Some(tls) => fanout = fanout.with_tls(tls),
        None => {
            return Outcome::skip(
                AGENTS_TRUST_KEY,
                "no usable TLS material for the agents (see agent-tls)",
            );
        }
    }
    judge_probe(&fanout.send(instances, &change).await, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Status;

    fn registered(id: &str, ip: Option<&str>, port: Option<&str>, healthy: bool) -> Registered {
        let mut attributes = std::collections::HashMap::new();
        if let Some(ip) = ip {
            attributes.insert(IPV4_ATTRIBUTE.to_owned(), ip.to_owned());
        }
        if let Some(port) = port {
            attributes.insert(PORT_ATTRIBUTE.to_owned(), port.to_owned());
        }
        Registered {
            id: id.to_owned(),
            healthy,
            attributes,
        }
    }

    #[test]
    fn an_instance_registered_without_its_port_fails_naming_service_registries() {
        // GIVEN an ECS service whose serviceRegistries named no port
        let instances = [
            registered("task-1", Some("10.0.1.5"), Some("50052"), true),
            registered("task-2", Some("10.0.1.6"), None, true),
        ];
        // WHEN the registrations are judged
        let (outcome, callable) = judge_registrations(&instances, &AgentNetworks::private(), false);
        // THEN the check fails naming the instance and the fix
        assert_eq!(outcome.status, Status::Fail, "{outcome}");
        assert!(outcome.detail.contains("task-2"), "{outcome}");
        assert!(outcome.fix.unwrap().contains("serviceRegistries"));
        assert_eq!(callable.len(), 1);
    }

    #[test]
    fn zero_agents_fail_unless_none_are_expected_and_public_addresses_fail() {
        let networks = AgentNetworks::private();
        assert_eq!(
            judge_registrations(&[], &networks, false).0.status,
            Status::Fail
        );
        assert_eq!(
            judge_registrations(&[], &networks, true).0.status,
            Status::Ok
        );
        let public = [registered("x", Some("203.0.113.7"), Some("50052"), true)];
        let (outcome, callable) = judge_registrations(&public, &networks, true);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.detail.contains("outside AgentNetworks"),
            "{outcome}"
        );
        assert!(callable.is_empty());
    }

    #[test]
    fn unhealthy_agents_are_reported_but_not_called() {
        let instances = [
            registered("a", Some("10.0.0.1"), Some("50052"), true),
            registered("b", Some("10.0.0.2"), Some("50052"), false),
        ];
        let (outcome, callable) = judge_registrations(&instances, &AgentNetworks::private(), false);
        assert_eq!(outcome.status, Status::Ok, "{outcome}");
        assert!(outcome.detail.contains("1 unhealthy"), "{outcome}");
        assert_eq!(
            callable.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn a_refused_signature_fails_while_unreachable_agents_are_only_skipped() {
        let (key, _) = RefreshKey::generate("k2").unwrap();
        let report = |failed: Vec<(&str, &str)>, ok: usize| FanoutReport {
            instances: failed.len() + ok,
            ok,
            failed: failed
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            ..FanoutReport::default()
        };
        let refused = judge_probe(
            &report(vec![("a", "Unauthenticated: unknown key")], 1),
            &key,
        );
        assert_eq!(refused.status, Status::Fail, "{refused}");
        assert!(refused.fix.unwrap().contains(&key.public_entry()));
        let unreachable = judge_probe(
            &report(vec![("a", "Unavailable: tcp connect error: timed out")], 0),
            &key,
        );
        assert_eq!(unreachable.status, Status::Skip, "{unreachable}");
        let some = judge_probe(&report(vec![("a", "deadline of 3s exceeded")], 2), &key);
        assert_eq!(some.status, Status::Ok, "{some}");
        assert!(some.detail.contains("not reachable from here: a"), "{some}");
        // A host that answers, but not with a Refresh listener, is broken
        let wrong_port = judge_probe(
            &report(
                vec![(
                    "b",
                    "Unavailable: tcp connect error: Connection refused (os error 111)",
                )],
                1,
            ),
            &key,
        );
        assert_eq!(wrong_port.status, Status::Fail, "{wrong_port}");
        assert!(wrong_port.fix.unwrap().contains("50052"));
    }
}
