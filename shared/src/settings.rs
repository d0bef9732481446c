//! Settings from environment variables, checked once at start-up.
//!
//! Every variable, its default and its meaning is listed in the README. A bad
//! value stops the process at init with a message naming the variable, rather
//! than failing requests later.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::auth::AuthSettings;
use crate::cache::{CacheSettings, StaleIfError};
use crate::catch_up::CatchUpSettings;
use crate::refresh::fanout::{FanoutSettings, RefreshTls};

/// The name agents' Refresh certificates carry unless `REFRESH_TLS_DOMAIN` says otherwise.
pub const DEFAULT_AGENT_TLS_DOMAIN: &str = "config-agent.tenant-config.internal";
use crate::refresh::networks::AgentNetworks;
use crate::refresh::signing::TrustedKeys;
use crate::refresh::stale::StaleSettings;
use crate::routing::{DEFAULT_DYNAMODB_PREFIX, DEFAULT_PARAMETER_PREFIX, KeyRouter};
use crate::store::ssm::{DEFAULT_PARAMETER_ROOT, validate_root};

#[derive(Debug, Error)]
#[error("{variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub table_name: String,
    pub parameter_root: String,
    pub router: KeyRouter,
    pub auth: AuthSettings,
    pub dynamodb_cache: CacheSettings,
    pub parameter_cache: CacheSettings,
    /// The change journal readers catch up from (`JOURNAL_TABLE_NAME`);
    /// without one a reader converges by TTL and pushes only.
    pub journal_table: Option<String>,
    pub catch_up: CatchUpSettings,
    /// config-api only: the stage cache flush queue (`FLUSH_QUEUE_URL`), so
    /// a degraded answer (stale or 5xx) the stage cache may have stored is
    /// flushed soon instead of replayed for its whole TTL.
    pub degraded_flush: Option<DegradedFlushSettings>,
    /// config-api only: the user pool group whose members may write their
    /// tenant's configuration (`ADMIN_GROUP`); unset, the write routes are off.
    pub admin_group: Option<String>,
    /// Tenant-scoped credentials for every store call (`TENANT_ROLE_ARN`);
    /// `None`: the process's own role reads every tenant.
    pub tenant_role: Option<TenantRoleSettings>,
}

/// The role assumed per tenant (see [`crate::credentials`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoleSettings {
    pub role_arn: String,
    /// Session length asked of STS (`TENANT_SESSION_SECS`, 900..=43200).
    pub session: Duration,
    /// Tenants whose credentials a process keeps (`TENANT_CREDENTIALS_MAX_TENANTS`).
    pub max_tenants: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedFlushSettings {
    pub flush_queue_url: String,
    /// At most one flush request per this interval per container
    /// (`DEGRADED_FLUSH_INTERVAL_SECS`).
    pub min_interval: Duration,
}

/// Defaults that differ between the request/response Lambda and the
/// push-invalidated agent.
#[derive(Debug, Clone, Copy)]
pub struct CacheDefaults {
    pub dynamodb_ttl_secs: u64,
    pub parameter_ttl_secs: u64,
    pub not_found_ttl_secs: u64,
    pub max_entries: u64,
    pub catch_up: CatchUpSettings,
}

/// Defaults for config-api: nothing can push to it; it catches up from the
/// change journal every second, and its TTLs bound what the journal misses.
pub const LAMBDA_CACHE_DEFAULTS: CacheDefaults = CacheDefaults {
    dynamodb_ttl_secs: 60,
    parameter_ttl_secs: 60,
    not_found_ttl_secs: 5,
    max_entries: 10_000,
    catch_up: CatchUpSettings::LAMBDA,
};

/// Defaults for the agent: changes to either store are pushed (Refresh) and
/// journaled (catch-up every 2 s), so entries (and their absence) live an hour;
/// the TTL only bounds what neither reaches.
pub const AGENT_CACHE_DEFAULTS: CacheDefaults = CacheDefaults {
    dynamodb_ttl_secs: 3600,
    parameter_ttl_secs: 3600,
    not_found_ttl_secs: 3600,
    max_entries: 100_000,
    catch_up: CatchUpSettings::AGENT,
};

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn optional(&self, variable: &'static str) -> Option<String> {
        (self.lookup)(variable)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, variable: &'static str) -> Result<String, SettingsError> {
        self.optional(variable).ok_or_else(|| SettingsError {
            variable,
            reason: "must be set".to_owned(),
        })
    }

    fn or(&self, variable: &'static str, default: &str) -> String {
        self.optional(variable)
            .unwrap_or_else(|| default.to_owned())
    }

    fn number<T: FromStr>(&self, variable: &'static str, default: T) -> Result<T, SettingsError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(variable) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| SettingsError {
                variable,
                reason: format!("'{raw}' is not a valid number: {e}"),
            }),
        }
    }

    fn cache(
        &self,
        ttl_var: &'static str,
        default_ttl_secs: u64,
        max_var: &'static str,
        defaults: CacheDefaults,
    ) -> Result<CacheSettings, SettingsError> {
        Ok(CacheSettings {
            ttl: Duration::from_secs(self.number(ttl_var, default_ttl_secs)?),
            not_found_ttl: Duration::from_secs(
                self.number("NOT_FOUND_CACHE_TTL_SECS", defaults.not_found_ttl_secs)?,
            ),
            max_entries: self.number(max_var, defaults.max_entries)?,
            stale: self.stale_if_error()?,
        })
    }

    fn stale_if_error(&self) -> Result<StaleIfError, SettingsError> {
        let defaults = StaleIfError::DEFAULT;
        let retry_ms: u64 = self.number(
            "STORE_RETRY_INTERVAL_MS",
            defaults.retry_interval.as_millis() as u64,
        )?;
        let probe_ms: u64 = self.number(
            "STALE_PROBE_TIMEOUT_MS",
            defaults.probe_timeout.as_millis() as u64,
        )?;
        for (variable, value) in [
            ("STORE_RETRY_INTERVAL_MS", retry_ms),
            ("STALE_PROBE_TIMEOUT_MS", probe_ms),
        ] {
            if value == 0 {
                return Err(SettingsError {
                    variable,
                    reason: "must be at least 1".to_owned(),
                });
            }
        }
        Ok(StaleIfError {
            max_stale: Duration::from_secs(
                self.number("MAX_STALE_SECS", defaults.max_stale.as_secs())?,
            ),
            retry_interval: Duration::from_millis(retry_ms),
            probe_timeout: Duration::from_millis(probe_ms),
        })
    }
}

impl Env<'_> {
    fn stage_cache(&self) -> Result<Option<StageCacheSettings>, SettingsError> {
        let api = self.optional("STAGE_CACHE_REST_API_ID");
        let stage = self.optional("STAGE_CACHE_STAGE");
        let queue = self.optional("FLUSH_QUEUE_URL");
        let flush_delay = Duration::from_secs(self.number("STAGE_CACHE_FLUSH_DELAY_SECS", 2)?);
        if flush_delay > Duration::from_secs(900) {
            return Err(SettingsError {
                variable: "STAGE_CACHE_FLUSH_DELAY_SECS",
                reason: "at most 900 (SQS delivery delay)".to_owned(),
            });
        }
        match (api, stage, queue) {
            (None, None, None) => Ok(None),
            (Some(rest_api_id), Some(stage), Some(flush_queue_url)) => {
                Ok(Some(StageCacheSettings {
                    rest_api_id,
                    stage,
                    flush_queue_url,
                    flush_delay,
                }))
            }
            _ => Err(SettingsError {
                variable: "STAGE_CACHE_REST_API_ID/STAGE_CACHE_STAGE/FLUSH_QUEUE_URL",
                reason: "set all three to flush a stage cache after changes, or none".to_owned(),
            }),
        }
    }

    fn root_and_router(&self) -> Result<(String, KeyRouter), SettingsError> {
        let parameter_root = self.or("PARAMETER_ROOT", DEFAULT_PARAMETER_ROOT);
        validate_root(&parameter_root).map_err(|reason| SettingsError {
            variable: "PARAMETER_ROOT",
            reason: reason.to_string(),
        })?;
        let router = KeyRouter::new(
            &self.or("DYNAMODB_KEY_PREFIX", DEFAULT_DYNAMODB_PREFIX),
            &self.or("PARAMETER_KEY_PREFIX", DEFAULT_PARAMETER_PREFIX),
        )
        .map_err(|reason| SettingsError {
            variable: "DYNAMODB_KEY_PREFIX/PARAMETER_KEY_PREFIX",
            reason: reason.to_string(),
        })?;
        Ok((parameter_root, router))
    }

    fn flag(&self, variable: &'static str, default: bool) -> Result<bool, SettingsError> {
        match self.optional(variable).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(SettingsError {
                variable,
                reason: format!("'{v}' is not true/false"),
            }),
        }
    }

    fn parsed<T: FromStr>(&self, variable: &'static str, default: &str) -> Result<T, SettingsError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.or(variable, default);
        raw.parse().map_err(|e| SettingsError {
            variable,
            reason: format!("'{raw}': {e}"),
        })
    }
}

/// Settings of the config-refresh function.
/// Bounds on every AWS SDK call, sized for a Lambda behind API Gateway: an
/// answer well inside the function timeout (10 s in the template) and API
/// Gateway's 29 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsCallSettings {
    /// Establishing a connection (`AWS_CONNECT_TIMEOUT_MS`, default 1000).
    pub connect: Duration,
    /// One attempt, connection included (`AWS_ATTEMPT_TIMEOUT_MS`, 2000).
    pub attempt: Duration,
    /// The whole call, retries included (`AWS_OPERATION_TIMEOUT_MS`, 5000).
    pub operation: Duration,
    /// Attempts in the SDK's standard retry mode (`AWS_MAX_ATTEMPTS`, 3).
    pub max_attempts: u32,
}

impl AwsCallSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = Env { lookup };
        let ms = |variable: &'static str, default: u64| -> Result<Duration, SettingsError> {
            let value: u64 = env.number(variable, default)?;
            if value == 0 {
                return Err(SettingsError {
                    variable,
                    reason: "must be at least 1".to_owned(),
                });
            }
            Ok(Duration::from_millis(value))
        };
        let settings = Self {
            connect: ms("AWS_CONNECT_TIMEOUT_MS", 1000)?,
            attempt: ms("AWS_ATTEMPT_TIMEOUT_MS", 2000)?,
            operation: ms("AWS_OPERATION_TIMEOUT_MS", 5000)?,
            max_attempts: env.number("AWS_MAX_ATTEMPTS", 3)?,
        };
        if settings.max_attempts == 0 {
            return Err(SettingsError {
                variable: "AWS_MAX_ATTEMPTS",
                reason: "must be at least 1".to_owned(),
            });
        }
        if settings.attempt > settings.operation {
            return Err(SettingsError {
                variable: "AWS_ATTEMPT_TIMEOUT_MS",
                reason: "must not exceed AWS_OPERATION_TIMEOUT_MS".to_owned(),
            });
        }
        Ok(settings)
    }
}

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
    /// The agents' Cloud Map service id (`CLOUD_MAP_SERVICE_ID`): with it,
    /// agents that keep failing are marked UNHEALTHY.
    pub cloud_map_service_id: Option<String>,
    pub stale: StaleSettings,
    /// The API Gateway stage cache flushed after changes, if there is one.
    pub stage_cache: Option<StageCacheSettings>,
    /// Where agents may be (`AGENT_NETWORKS`, CIDRs; default private
    /// address space): discovered addresses elsewhere get no Refresh.
    pub agent_networks: AgentNetworks,
    /// TLS to the agents (`REFRESH_TLS_CA_PEM`, `REFRESH_TLS_DOMAIN`).
    pub tls: Option<RefreshTls>,
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
        let concurrency: usize = env.number("REFRESH_CONCURRENCY", defaults.concurrency)?;
        if concurrency == 0 {
            return Err(SettingsError {
                variable: "REFRESH_CONCURRENCY",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(Self {
            parameter_root,
            router,
            refresh_key_parameter: env.required("REFRESH_KEY_PARAMETER")?,
            cloud_map_namespace: env.required("CLOUD_MAP_NAMESPACE")?,
            cloud_map_service: env.required("CLOUD_MAP_SERVICE")?,
            journal_table: env.required("JOURNAL_TABLE_NAME")?,
            stage_cache: env.stage_cache()?,
            cloud_map_service_id: env.optional("CLOUD_MAP_SERVICE_ID"),
            tls: env
                .optional("REFRESH_TLS_CA_PEM")
                .filter(|pem| !pem.trim().is_empty())
                .map(|ca_pem| RefreshTls {
                    ca_pem,
                    domain: env.or("REFRESH_TLS_DOMAIN", DEFAULT_AGENT_TLS_DOMAIN),
                }),
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

/// How an agent registers itself in Cloud Map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSettings {
    pub service_id: String,
    pub instance_id: String,
    /// The address other hosts reach this agent on.
    pub address: SocketAddr,
}

/// Settings of the config agent (on top of [`Settings`]).
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
    /// PEM files of the Refresh listener's certificate chain and key
    /// (`AGENT_TLS_CERT_FILE`, `AGENT_TLS_KEY_FILE`): with them it serves TLS.
    pub refresh_tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// `None` when the platform registers the agent (ECS service discovery).
    pub registration: Option<RegistrationSettings>,
    /// How long in-flight calls may finish after a stop signal.
    pub shutdown_grace: Duration,
    /// How often a registered agent re-reports HEALTHY.
    pub health_report_interval: Duration,
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
            refresh_tls: match (
                env.optional("AGENT_TLS_CERT_FILE"),
                env.optional("AGENT_TLS_KEY_FILE"),
            ) {
                (Some(cert), Some(key)) => Some((cert.into(), key.into())),
                (None, None) => None,
                _ => {
                    return Err(SettingsError {
                        variable: "AGENT_TLS_CERT_FILE",
                        reason: "set both AGENT_TLS_CERT_FILE and AGENT_TLS_KEY_FILE, or neither"
                            .to_owned(),
                    });
                }
            },
            refresh_public_keys: TrustedKeys::parse(&env.required("REFRESH_PUBLIC_KEYS")?)
                .map_err(|e| SettingsError {
                    variable: "REFRESH_PUBLIC_KEYS",
                    reason: e.to_string(),
                })?,
            registration,
            shutdown_grace: Duration::from_secs(env.number("AGENT_SHUTDOWN_GRACE_SECS", 10)?),
            health_report_interval: Duration::from_secs(
                env.number::<u64>("AGENT_HEALTH_REPORT_SECS", 30)?.max(1),
            ),
        })
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env(defaults: CacheDefaults) -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok(), defaults)
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        defaults: CacheDefaults,
    ) -> Result<Self, SettingsError> {
        let env = Env { lookup };
        let (parameter_root, router) = env.root_and_router()?;
        let issuer = env
            .required("COGNITO_ISSUER")?
            .trim_end_matches('/')
            .to_owned();
        let jwks_url = env.or(
            "COGNITO_JWKS_URL",
            &format!("{issuer}/.well-known/jwks.json"),
        );
        let client_ids: Vec<String> = env
            .required("COGNITO_CLIENT_IDS")?
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect();
        if client_ids.is_empty() {
            return Err(SettingsError {
                variable: "COGNITO_CLIENT_IDS",
                reason: "must name at least one app client id".to_owned(),
            });
        }
        Ok(Self {
            table_name: env.required("CONFIG_TABLE_NAME")?,
            parameter_root,
            router,
            auth: AuthSettings {
                issuer,
                jwks_url,
                client_ids,
                leeway: Duration::from_secs(env.number("TOKEN_LEEWAY_SECS", 10)?),
                token_cache_max_entries: env.number("TOKEN_CACHE_MAX_ENTRIES", 10_000)?,
                jwks_refresh_interval: Duration::from_secs(
                    env.number("JWKS_REFRESH_INTERVAL_SECS", 60)?,
                ),
                jwks_max_age: Duration::from_secs(env.number("JWKS_MAX_AGE_SECS", 3600)?.max(1)),
            },
            dynamodb_cache: env.cache(
                "DYNAMODB_CACHE_TTL_SECS",
                defaults.dynamodb_ttl_secs,
                "DYNAMODB_CACHE_MAX_ENTRIES",
                defaults,
            )?,
            parameter_cache: env.cache(
                "PARAMETER_CACHE_TTL_SECS",
                defaults.parameter_ttl_secs,
                "PARAMETER_CACHE_MAX_ENTRIES",
                defaults,
            )?,
            journal_table: env.optional("JOURNAL_TABLE_NAME"),
            admin_group: env.optional("ADMIN_GROUP").filter(|g| !g.trim().is_empty()),
            tenant_role: match env
                .optional("TENANT_ROLE_ARN")
                .filter(|r| !r.trim().is_empty())
            {
                None => None,
                Some(role_arn) => Some(TenantRoleSettings {
                    role_arn,
                    session: Duration::from_secs(
                        env.number::<u64>("TENANT_SESSION_SECS", 900)?
                            .clamp(900, 43_200),
                    ),
                    max_tenants: env.number("TENANT_CREDENTIALS_MAX_TENANTS", 1000)?,
                }),
            },
            degraded_flush: match env.optional("FLUSH_QUEUE_URL") {
                None => None,
                Some(flush_queue_url) => Some(DegradedFlushSettings {
                    flush_queue_url,
                    min_interval: Duration::from_secs(
                        env.number("DEGRADED_FLUSH_INTERVAL_SECS", 5)?,
                    ),
                }),
            },
            catch_up: {
                let interval_ms: u64 = env.number(
                    "CATCH_UP_INTERVAL_MS",
                    defaults.catch_up.interval.as_millis() as u64,
                )?;
                if interval_ms == 0 {
                    return Err(SettingsError {
                        variable: "CATCH_UP_INTERVAL_MS",
                        reason: "must be at least 1".to_owned(),
                    });
                }
                CatchUpSettings {
                    interval: Duration::from_millis(interval_ms),
                    ..defaults.catch_up
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&|name| map.get(name).cloned(), LAMBDA_CACHE_DEFAULTS)
    }

    const REQUIRED: [(&str, &str); 3] = [
        ("CONFIG_TABLE_NAME", "tenant-config"),
        (
            "COGNITO_ISSUER",
            "https://cognito-idp.us-east-1.amazonaws.com/pool/",
        ),
        ("COGNITO_CLIENT_IDS", "a, b ,"),
    ];

    #[test]
    fn defaults_apply_when_only_required_variables_are_set() {
        let s = settings(&REQUIRED).unwrap();
        assert_eq!(s.parameter_root, "/config-service");
        assert_eq!(
            s.auth.issuer,
            "https://cognito-idp.us-east-1.amazonaws.com/pool"
        );
        assert_eq!(
            s.auth.jwks_url,
            "https://cognito-idp.us-east-1.amazonaws.com/pool/.well-known/jwks.json"
        );
        assert_eq!(s.auth.client_ids, vec!["a", "b"]);
        assert_eq!(s.dynamodb_cache.ttl, Duration::from_secs(60));
        assert_eq!(s.parameter_cache.not_found_ttl, Duration::from_secs(5));
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn agent_caches_both_stores_for_an_hour_and_catches_up_every_two_seconds() {
        let map: HashMap<String, String> = REQUIRED
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s =
            Settings::from_lookup(&|name| map.get(name).cloned(), AGENT_CACHE_DEFAULTS).unwrap();
        assert_eq!(s.parameter_cache.ttl, Duration::from_secs(3600));
        assert_eq!(s.dynamodb_cache.ttl, Duration::from_secs(3600));
        assert_eq!(s.catch_up.interval, Duration::from_secs(2));
    }

    #[test]
    fn aws_calls_are_bounded_by_default_and_refuse_nonsense() {
        let defaults = AwsCallSettings::from_lookup(&|_| None).unwrap();
        assert_eq!(defaults.connect, Duration::from_secs(1));
        assert_eq!(defaults.attempt, Duration::from_secs(2));
        assert_eq!(defaults.operation, Duration::from_secs(5));
        assert_eq!(defaults.max_attempts, 3);
        for bad in [
            ("AWS_OPERATION_TIMEOUT_MS", "0"),
            ("AWS_ATTEMPT_TIMEOUT_MS", "9000"),
            ("AWS_MAX_ATTEMPTS", "0"),
            ("AWS_CONNECT_TIMEOUT_MS", "soon"),
        ] {
            let err = AwsCallSettings::from_lookup(&lookup(&[bad])).unwrap_err();
            assert!(
                bad.0 == err.variable || err.variable == "AWS_ATTEMPT_TIMEOUT_MS",
                "{bad:?}: {err}"
            );
        }
    }

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

    const PUBLIC_KEYS: &str = "k1:d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";

    #[test]
    fn agents_take_public_keys_only_and_refuse_malformed_ones() {
        let parsed = AgentSettings::from_lookup(&lookup(&[
            ("REFRESH_PUBLIC_KEYS", PUBLIC_KEYS),
            ("CLOUD_MAP_REGISTER", "false"),
        ]))
        .unwrap();
        assert_eq!(parsed.refresh_public_keys.ids(), vec!["k1"]);
        for bad in ["", "k1:abcd", "ed25519:k1:00"] {
            let err = AgentSettings::from_lookup(&lookup(&[
                ("REFRESH_PUBLIC_KEYS", bad),
                ("CLOUD_MAP_REGISTER", "false"),
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
        ]))
        .unwrap();
        assert!(off.registration.is_none());
    }

    #[test]
    fn missing_or_malformed_variables_name_the_variable() {
        let err = settings(&REQUIRED[1..]).unwrap_err();
        assert_eq!(err.variable, "CONFIG_TABLE_NAME");
        let mut vars = REQUIRED.to_vec();
        vars.push(("DYNAMODB_CACHE_TTL_SECS", "soon"));
        assert_eq!(
            settings(&vars).unwrap_err().variable,
            "DYNAMODB_CACHE_TTL_SECS"
        );
        let mut vars = REQUIRED.to_vec();
        vars.push(("PARAMETER_ROOT", "/config-service/"));
        assert_eq!(settings(&vars).unwrap_err().variable, "PARAMETER_ROOT");
    }
}
