//! Settings of config-refresh: where changes are journaled, which agents are
//! pushed to and how, and which stage cache is flushed.

use std::time::Duration;

use super::env::{Env, SettingsError};
use crate::refresh::agent_tls::{AgentTransport, TlsCaSource};
use crate::refresh::fanout::FanoutSettings;
use crate::refresh::networks::AgentNetworks;
use crate::refresh::stale::StaleSettings;
use crate::routing::KeyRouter;

/// The name agents' Refresh certificates carry unless `REFRESH_TLS_DOMAIN` says otherwise.
pub const DEFAULT_AGENT_TLS_DOMAIN: &str = "config-agent.tenant-config.internal";

/// Settings of the config-refresh function.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    pub parameter_root: String,
    pub router: KeyRouter,
    /// SecureString parameter holding config-refresh's private Ed25519
    /// signing key (`ed25519:{key id}:{hex seed}`).
    pub refresh_key_parameter: String,
    pub cloud_map_namespace: String,
    pub cloud_map_service: String,
    pub fanout: FanoutSettings,
    /// Every change is journaled here before it is pushed.
    pub journal_table: String,
    /// The config table whose override index (which tenants hold their own
    /// value of a key, for blast radii) config-refresh keeps
    /// (`CONFIG_TABLE_NAME`; unset: not kept).
    pub override_table: Option<String>,
    /// The agents' Cloud Map service id (`CLOUD_MAP_SERVICE_ID`): with it,
    /// agents that keep failing are marked UNHEALTHY.
    pub cloud_map_service_id: Option<String>,
    pub stale: StaleSettings,
    /// The API Gateway stage cache flushed after changes, if there is one.
    pub stage_cache: Option<StageCacheSettings>,
    /// Where agents may be (`AGENT_NETWORKS`, CIDRs; default private
    /// address space): discovered addresses elsewhere get no Refresh.
    pub agent_networks: AgentNetworks,
    /// How agents are called: TLS (`REFRESH_TLS_CA_PARAMETER` or
    /// `REFRESH_TLS_CA_PEM`, `REFRESH_TLS_DOMAIN`) unless `REFRESH_PLAINTEXT=allow`.
    pub agent_transport: AgentTransport,
    /// Where journaled changes are announced (`CHANGE_FEED_URL`…; unset:
    /// no feed, readers poll the journal).
    pub change_feed: Option<crate::notices::feed::FeedSettings>,
}

/// Which stage cache config-refresh flushes after changes, and through which
/// queue the flush requests wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCacheSettings {
    pub rest_api_id: String,
    pub stage: String,
    pub flush_queue_url: String,
    /// Delivery delay of a flush request: longer than config-api's catch-up
    /// interval, so a flush never precedes config-api serving the change.
    pub flush_delay: Duration,
}

impl RefreshSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = Env { lookup };
        let (parameter_root, router) = env.root_and_router()?;
        let defaults = FanoutSettings::default();
        let concurrency: usize = env.positive("REFRESH_CONCURRENCY", defaults.concurrency)?;
        Ok(Self {
            parameter_root,
            router,
            refresh_key_parameter: env.required("REFRESH_KEY_PARAMETER")?,
            cloud_map_namespace: env.required("CLOUD_MAP_NAMESPACE")?,
            cloud_map_service: env.required("CLOUD_MAP_SERVICE")?,
            journal_table: env.required("JOURNAL_TABLE_NAME")?,
            override_table: env.optional("CONFIG_TABLE_NAME"),
            stage_cache: stage_cache(&env)?,
            cloud_map_service_id: env.optional("CLOUD_MAP_SERVICE_ID"),
            agent_transport: agent_transport(&env)?,
            change_feed: env.change_feed()?,
            agent_networks: match env.optional("AGENT_NETWORKS") {
                Some(list) => AgentNetworks::parse(&list).map_err(|reason| SettingsError {
                    variable: "AGENT_NETWORKS",
                    reason,
                })?,
                None => AgentNetworks::private(),
            },
            stale: StaleSettings {
                failures: env.number("STALE_AFTER_FAILURES", StaleSettings::default().failures)?,
                min_age: Duration::from_secs(env.number(
                    "STALE_MIN_AGE_SECS",
                    StaleSettings::default().min_age.as_secs(),
                )?),
            },
            fanout: FanoutSettings {
                concurrency,
                deadline: Duration::from_millis(
                    env.number("REFRESH_DEADLINE_MS", defaults.deadline.as_millis() as u64)?,
                ),
            },
        })
    }
}

/// TLS to the agents from one CA source, or plaintext chosen explicitly;
/// neither leaves pushes off (journal and flushes go on) rather than
/// failing the function's start.
fn agent_transport(env: &Env<'_>) -> Result<AgentTransport, SettingsError> {
    let ca = match (
        env.optional("REFRESH_TLS_CA_PARAMETER"),
        env.optional("REFRESH_TLS_CA_PEM"),
    ) {
        (Some(name), None) => {
            // Under the watched root it would sit among tenant data, within
            // the reach of the tenant roles' policies.
            let root = env.or("PARAMETER_ROOT", crate::store::ssm::DEFAULT_PARAMETER_ROOT);
            if name.starts_with(&format!("{}/", root.trim_end_matches('/'))) {
                return Err(SettingsError {
                    variable: "REFRESH_TLS_CA_PARAMETER",
                    reason: format!("'{name}' must be outside PARAMETER_ROOT '{root}'"),
                });
            }
            Some(TlsCaSource::Parameter(name))
        }
        (None, Some(pem)) => Some(TlsCaSource::Pem(pem)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(SettingsError {
                variable: "REFRESH_TLS_CA_PARAMETER",
                reason: "set REFRESH_TLS_CA_PARAMETER or REFRESH_TLS_CA_PEM, not both".to_owned(),
            });
        }
    };
    match (ca, env.refresh_plaintext()?) {
        (Some(ca), false) => Ok(AgentTransport::Tls {
            ca,
            domain: env.or("REFRESH_TLS_DOMAIN", DEFAULT_AGENT_TLS_DOMAIN),
        }),
        (None, true) => Ok(AgentTransport::Plaintext),
        (None, false) => Ok(AgentTransport::Unconfigured),
        (Some(_), true) => Err(SettingsError {
            variable: "REFRESH_PLAINTEXT",
            reason: "a TLS CA is set too: choose TLS or plaintext".to_owned(),
        }),
    }
}

/// The stage cache to flush after changes: all three variables or none.
fn stage_cache(env: &Env<'_>) -> Result<Option<StageCacheSettings>, SettingsError> {
    let api = env.optional("STAGE_CACHE_REST_API_ID");
    let stage = env.optional("STAGE_CACHE_STAGE");
    let queue = env.optional("FLUSH_QUEUE_URL");
    let flush_delay = Duration::from_secs(env.number("STAGE_CACHE_FLUSH_DELAY_SECS", 2)?);
    if flush_delay > Duration::from_secs(900) {
        return Err(SettingsError {
            variable: "STAGE_CACHE_FLUSH_DELAY_SECS",
            reason: "at most 900 (SQS delivery delay)".to_owned(),
        });
    }
    match (api, stage, queue) {
        (None, None, None) => Ok(None),
        (Some(rest_api_id), Some(stage), Some(flush_queue_url)) => Ok(Some(StageCacheSettings {
            rest_api_id,
            stage,
            flush_queue_url,
            flush_delay,
        })),
        _ => Err(SettingsError {
            variable: "STAGE_CACHE_REST_API_ID/STAGE_CACHE_STAGE/FLUSH_QUEUE_URL",
            reason: "set all three to flush a stage cache after changes, or none".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::lookup;
    use super::*;

    #[test]
    fn refresh_settings_have_documented_defaults() {
        let s = RefreshSettings::from_lookup(&lookup(&[
            ("REFRESH_KEY_PARAMETER", "/tenant-config/refresh-key"),
            ("CLOUD_MAP_NAMESPACE", "tenant-config.local"),
            ("CLOUD_MAP_SERVICE", "config-agent"),
            ("JOURNAL_TABLE_NAME", "tenant-config-changes"),
        ]))
        .unwrap();
        assert_eq!(s.fanout.concurrency, 64);
        assert_eq!(s.fanout.deadline, Duration::from_secs(2));
        let zero = RefreshSettings::from_lookup(&lookup(&[
            ("REFRESH_KEY_PARAMETER", "/k"),
            ("CLOUD_MAP_NAMESPACE", "n"),
            ("CLOUD_MAP_SERVICE", "s"),
            ("JOURNAL_TABLE_NAME", "j"),
            ("REFRESH_CONCURRENCY", "0"),
        ]));
        assert_eq!(zero.unwrap_err().variable, "REFRESH_CONCURRENCY");
    }

    #[test]
    fn agents_are_called_over_tls_unless_plaintext_is_chosen_and_neither_leaves_pushes_off() {
        let with = |extra: &[(&str, &str)]| {
            let mut vars = vec![
                ("REFRESH_KEY_PARAMETER", "/k"),
                ("CLOUD_MAP_NAMESPACE", "n"),
                ("CLOUD_MAP_SERVICE", "s"),
                ("JOURNAL_TABLE_NAME", "j"),
            ];
            vars.extend_from_slice(extra);
            RefreshSettings::from_lookup(&lookup(&vars))
        };
        assert_eq!(
            with(&[]).unwrap().agent_transport,
            AgentTransport::Unconfigured
        );
        assert_eq!(
            with(&[("REFRESH_PLAINTEXT", "allow")])
                .unwrap()
                .agent_transport,
            AgentTransport::Plaintext
        );
        assert_eq!(
            with(&[("REFRESH_TLS_CA_PARAMETER", "/tenant-config/s/agents/tls/ca")])
                .unwrap()
                .agent_transport,
            AgentTransport::Tls {
                ca: TlsCaSource::Parameter("/tenant-config/s/agents/tls/ca".to_owned()),
                domain: DEFAULT_AGENT_TLS_DOMAIN.to_owned(),
            }
        );
        for conflicting in [
            &[
                ("REFRESH_TLS_CA_PARAMETER", "/p"),
                ("REFRESH_TLS_CA_PEM", "x"),
            ][..],
            &[("REFRESH_TLS_CA_PEM", "x"), ("REFRESH_PLAINTEXT", "allow")][..],
            &[("REFRESH_PLAINTEXT", "true")][..],
            &[("REFRESH_TLS_CA_PARAMETER", "/config-service/agents/tls/ca")][..],
        ] {
            assert!(with(conflicting).is_err(), "{conflicting:?}");
        }
    }
}
