//! Settings of the config agent on top of the reader's [`Settings`]: its two
//! listeners, the keys it trusts, and how it is registered in Cloud Map.
//!
//! [`Settings`]: super::Settings

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::env::{Env, SettingsError};
use crate::refresh::signing::TrustedKeys;
use crate::warm_start::WarmStartSettings;

/// How an agent registers itself in Cloud Map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSettings {
    pub service_id: String,
    pub instance_id: String,
    /// The address other hosts reach this agent on.
    pub address: SocketAddr,
}

/// Settings of the config agent (on top of [`Settings`](super::Settings)).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Where callers reach ConfigReader (`AGENT_LISTEN_ADDR`, default
    /// loopback: the agent runs beside its service).
    pub listen: SocketAddr,
    /// Where config-refresh reaches ConfigRefresh (`AGENT_REFRESH_LISTEN_ADDR`,
    /// default all interfaces, port 50052); the address registered.
    pub refresh_listen: SocketAddr,
    /// The public keys Refresh signatures are accepted from
    /// (`REFRESH_PUBLIC_KEYS`); the agent never holds a signing key.
    pub refresh_public_keys: TrustedKeys,
    /// How the Refresh listener is served: TLS unless plaintext is chosen
    /// explicitly (see [`RefreshListenerTls`]).
    pub refresh_tls: RefreshListenerTls,
    /// `None` when the platform registers the agent (ECS service discovery).
    pub registration: Option<RegistrationSettings>,
    /// How long in-flight calls may finish after a stop signal.
    pub shutdown_grace: Duration,
    /// How often a registered agent re-reports HEALTHY
    /// (`AGENT_HEALTH_REPORT_SECS`, 30; at least 1).
    pub health_report_interval: Duration,
    /// Whether `GetSecret` answers (`AGENT_SERVE_SECRETS`, default false):
    /// opt in where nothing on the agent's host forwards other hosts'
    /// traffic to its readers' port (see `shared::secret_reads`).
    pub serve_secrets: bool,
    /// The encrypted last-known-good snapshot (`AGENT_SNAPSHOT_FILE`;
    /// absent: none, an agent starts cold).
    pub warm_start: Option<WarmStartSettings>,
    /// The change feed the agent follows (`CHANGE_FEED_URL`…; unset: it
    /// polls the journal every 2 s), and its journal read interval while
    /// subscribed (`CHANGE_FEED_SAFETY_SECS`, 3600).
    pub change_feed: Option<(crate::notices::feed::FeedSettings, Duration)>,
}

/// How the agent serves its Refresh listener, the one port reachable from
/// the network. TLS is required: an agent without a certificate and key
/// refuses to start unless plaintext is chosen explicitly for local use
/// (`REFRESH_PLAINTEXT=allow`), which config-refresh must choose too.
#[derive(Clone, PartialEq, Eq)]
pub enum RefreshListenerTls {
    /// PEM files (`AGENT_TLS_CERT_FILE`, `AGENT_TLS_KEY_FILE`).
    Files {
        certificate: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    /// The identity in the environment (`AGENT_TLS_PEM`: the certificate
    /// chain, then its private key), how ECS hands over the one SecureString
    /// `agent-tls` writes (one value, so certificate and key never mismatch).
    Pem { identity: String },
    /// Plaintext (`REFRESH_PLAINTEXT=allow`): local stacks and tests only.
    Plaintext,
}

/// Never prints the private key (settings are logged at start).
impl std::fmt::Debug for RefreshListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files { certificate, key } => f
                .debug_struct("Files")
                .field("certificate", certificate)
                .field("key", key)
                .finish(),
            Self::Pem { identity } => f
                .debug_struct("Pem")
                .field("identity_bytes", &identity.len())
                .field("key", &"<redacted>")
                .finish(),
            Self::Plaintext => f.write_str("Plaintext"),
        }
    }
}

fn refresh_listener_tls(env: &Env<'_>) -> Result<RefreshListenerTls, SettingsError> {
    let files = match (
        env.optional("AGENT_TLS_CERT_FILE"),
        env.optional("AGENT_TLS_KEY_FILE"),
    ) {
        (Some(certificate), Some(key)) => Some((certificate, key)),
        (None, None) => None,
        _ => {
            return Err(SettingsError {
                variable: "AGENT_TLS_CERT_FILE",
                reason: "set both AGENT_TLS_CERT_FILE and AGENT_TLS_KEY_FILE, or neither"
                    .to_owned(),
            });
        }
    };
    let pem = env.optional("AGENT_TLS_PEM");
    let plaintext = env.refresh_plaintext()?;
    match (files, pem, plaintext) {
        (Some((certificate, key)), None, false) => Ok(RefreshListenerTls::Files {
            certificate: certificate.into(),
            key: key.into(),
        }),
        (None, Some(identity), false) => Ok(RefreshListenerTls::Pem { identity }),
        (None, None, true) => Ok(RefreshListenerTls::Plaintext),
        (None, None, false) => Err(SettingsError {
            variable: "AGENT_TLS_CERT_FILE",
            reason:
                "the Refresh listener needs TLS: set AGENT_TLS_PEM (the identity \
                     tenant-config-admin agent-tls writes), or AGENT_TLS_CERT_FILE and \
                     AGENT_TLS_KEY_FILE; REFRESH_PLAINTEXT=allow serves plaintext, for local use only"
                .to_owned(),
        }),
        _ => Err(SettingsError {
            variable: "AGENT_TLS_CERT_FILE",
            reason: "give one of AGENT_TLS_PEM, AGENT_TLS_CERT_FILE/KEY_FILE or \
                     REFRESH_PLAINTEXT=allow, not several"
                .to_owned(),
        }),
    }
}

impl AgentSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = Env { lookup };
        let listen: SocketAddr = env.parsed("AGENT_LISTEN_ADDR", "127.0.0.1:50051")?;
        let refresh_listen: SocketAddr =
            env.parsed("AGENT_REFRESH_LISTEN_ADDR", "0.0.0.0:50052")?;
        if refresh_listen == listen {
            return Err(SettingsError {
                variable: "AGENT_REFRESH_LISTEN_ADDR",
                reason: format!("must differ from AGENT_LISTEN_ADDR ({listen})"),
            });
        }
        let registration = if env.flag("CLOUD_MAP_REGISTER", true)? {
            let ip: IpAddr = match env.optional("AGENT_ADVERTISE_IP") {
                Some(raw) => raw.parse().map_err(|e| SettingsError {
                    variable: "AGENT_ADVERTISE_IP",
                    reason: format!("'{raw}': {e}"),
                })?,
                None if !refresh_listen.ip().is_unspecified() => refresh_listen.ip(),
                None => {
                    return Err(SettingsError {
                        variable: "AGENT_ADVERTISE_IP",
                        reason: format!(
                            "must be set when registering and listening on {refresh_listen}: \
                             name the IP other hosts reach this agent on"
                        ),
                    });
                }
            };
            let address = SocketAddr::new(ip, refresh_listen.port());
            let default_id = format!(
                "agent-{}-{}",
                ip.to_string().replace([':', '.'], "-"),
                refresh_listen.port()
            );
            Some(RegistrationSettings {
                service_id: env.required("CLOUD_MAP_SERVICE_ID")?,
                instance_id: env.or("AGENT_INSTANCE_ID", &default_id),
                address,
            })
        } else {
            None
        };
        Ok(Self {
            listen,
            refresh_listen,
            refresh_tls: refresh_listener_tls(&env)?,
            refresh_public_keys: TrustedKeys::parse(&env.required("REFRESH_PUBLIC_KEYS")?)
                .map_err(|e| SettingsError {
                    variable: "REFRESH_PUBLIC_KEYS",
                    reason: e.to_string(),
                })?,
            registration,
            shutdown_grace: Duration::from_secs(env.number("AGENT_SHUTDOWN_GRACE_SECS", 10)?),
            health_report_interval: Duration::from_secs(
                env.positive("AGENT_HEALTH_REPORT_SECS", 30)?,
            ),
            serve_secrets: env.flag("AGENT_SERVE_SECRETS", false)?,
            warm_start: match env.optional("AGENT_SNAPSHOT_FILE") {
                None => None,
                Some(path) => Some(WarmStartSettings {
                    path: path.into(),
                    kms_key_id: env.required("AGENT_SNAPSHOT_KMS_KEY_ID")?,
                    max_bytes: env.positive("AGENT_SNAPSHOT_MAX_BYTES", 8 * 1024 * 1024)?,
                    interval: Duration::from_secs(
                        env.positive("AGENT_SNAPSHOT_INTERVAL_SECS", 10)?,
                    ),
                }),
            },
            change_feed: {
                let safety = Duration::from_secs(env.positive("CHANGE_FEED_SAFETY_SECS", 3600)?);
                env.change_feed()?.map(|feed| (feed, safety))
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::lookup;
    use super::*;

    const PUBLIC_KEYS: &str = "k1:d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";

    #[test]
    fn agents_take_public_keys_only_and_refuse_malformed_ones() {
        let parsed = AgentSettings::from_lookup(&lookup(&[
            ("REFRESH_PUBLIC_KEYS", PUBLIC_KEYS),
            ("CLOUD_MAP_REGISTER", "false"),
            ("REFRESH_PLAINTEXT", "allow"),
        ]))
        .unwrap();
        assert_eq!(parsed.refresh_public_keys.ids(), vec!["k1"]);
        for bad in ["", "k1:abcd", "ed25519:k1:00"] {
            let err = AgentSettings::from_lookup(&lookup(&[
                ("REFRESH_PUBLIC_KEYS", bad),
                ("CLOUD_MAP_REGISTER", "false"),
                ("REFRESH_PLAINTEXT", "allow"),
            ]))
            .unwrap_err();
            assert_eq!(err.variable, "REFRESH_PUBLIC_KEYS", "{bad}");
        }
    }

    #[test]
    fn agent_registration_needs_an_address_others_can_reach() {
        let base = [
            ("REFRESH_PUBLIC_KEYS", PUBLIC_KEYS),
            ("CLOUD_MAP_SERVICE_ID", "srv-123"),
            ("REFRESH_PLAINTEXT", "allow"),
        ];
        let err = AgentSettings::from_lookup(&lookup(&base)).unwrap_err();
        assert_eq!(err.variable, "AGENT_ADVERTISE_IP");

        let mut vars = base.to_vec();
        vars.push(("AGENT_ADVERTISE_IP", "10.0.3.7"));
        let s = AgentSettings::from_lookup(&lookup(&vars)).unwrap();
        let registration = s.registration.unwrap();
        // Readers on loopback; the Refresh port is what is registered.
        assert_eq!(s.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(registration.address, "10.0.3.7:50052".parse().unwrap());
        assert_eq!(registration.instance_id, "agent-10-0-3-7-50052");

        let off = AgentSettings::from_lookup(&lookup(&[
            ("REFRESH_PUBLIC_KEYS", PUBLIC_KEYS),
            ("CLOUD_MAP_REGISTER", "false"),
            ("REFRESH_PLAINTEXT", "allow"),
        ]))
        .unwrap();
        assert!(off.registration.is_none());
    }

    #[test]
    fn health_reports_every_zero_seconds_are_refused() {
        let err = AgentSettings::from_lookup(&lookup(&[
            ("REFRESH_PUBLIC_KEYS", PUBLIC_KEYS),
            ("CLOUD_MAP_REGISTER", "false"),
            ("REFRESH_PLAINTEXT", "allow"),
            ("AGENT_HEALTH_REPORT_SECS", "0"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "AGENT_HEALTH_REPORT_SECS");
    }

    #[test]
    fn the_settings_print_the_same_whatever_order_the_keys_come_in() {
        const OTHER: &str = "k2:3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
        let parse = |keys: String| {
            AgentSettings::from_lookup(&lookup(&[
                ("REFRESH_PUBLIC_KEYS", &keys),
                ("CLOUD_MAP_REGISTER", "false"),
                ("REFRESH_PLAINTEXT", "allow"),
            ]))
            .unwrap()
        };
        let one = format!("{:?}", parse(format!("{PUBLIC_KEYS},{OTHER}")));
        let other = format!("{:?}", parse(format!("{OTHER},{PUBLIC_KEYS}")));
        assert_eq!(one, other);
        assert!(one.contains(r#""k1": "d04ab232"#), "{one}");
    }

    #[test]
    fn the_refresh_listener_needs_tls_unless_plaintext_is_chosen_explicitly() {
        let with = |extra: &[(&str, &str)]| {
            let mut vars = vec![
                ("REFRESH_PUBLIC_KEYS", PUBLIC_KEYS),
                ("CLOUD_MAP_REGISTER", "false"),
            ];
            vars.extend_from_slice(extra);
            AgentSettings::from_lookup(&lookup(&vars))
        };
        // GIVEN no certificate: the agent refuses to start, saying how to fix it
        let err = with(&[]).unwrap_err();
        assert_eq!(err.variable, "AGENT_TLS_CERT_FILE");
        assert!(
            err.reason.contains("REFRESH_PLAINTEXT=allow"),
            "{}",
            err.reason
        );
        // a half pair, a misspelt opt-out or two sources are refused too
        assert!(with(&[("AGENT_TLS_CERT_FILE", "c")]).is_err());
        assert_eq!(
            with(&[("REFRESH_PLAINTEXT", "yes")]).unwrap_err().variable,
            "REFRESH_PLAINTEXT"
        );
        assert!(with(&[("AGENT_TLS_PEM", "c"), ("REFRESH_PLAINTEXT", "allow")]).is_err());
        // WHEN each source is given alone THEN it is taken
        assert_eq!(
            with(&[("REFRESH_PLAINTEXT", "allow")]).unwrap().refresh_tls,
            RefreshListenerTls::Plaintext
        );
        let files = with(&[
            ("AGENT_TLS_CERT_FILE", "/etc/agent/cert.pem"),
            ("AGENT_TLS_KEY_FILE", "/etc/agent/key.pem"),
        ])
        .unwrap();
        assert!(matches!(
            files.refresh_tls,
            RefreshListenerTls::Files { .. }
        ));
        // AND a private key in the environment never reaches a log line
        let pem = with(&[(
            "AGENT_TLS_PEM",
            "-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----k3y-mat3rial",
        )])
        .unwrap();
        assert!(matches!(pem.refresh_tls, RefreshListenerTls::Pem { .. }));
        assert!(!format!("{pem:?}").contains("k3y-mat3rial"));
    }
}
