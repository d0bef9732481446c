//! Settings of the readers, config-api and the agent: where configuration is,
//! whose tokens are accepted, how long answers are cached and how caches
//! converge.

use std::time::Duration;

use super::env::{Env, SettingsError};
use crate::auth::AuthSettings;
use crate::cache::{CacheSettings, StaleIfError};
use crate::catch_up::CatchUpSettings;
use crate::routing::KeyRouter;

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
    /// config-api only: the user pool group whose members write the shared
    /// layers and the tenant registry (`PLATFORM_ADMIN_GROUP`); unset, the
    /// platform routes are off.
    pub platform_admin_group: Option<String>,
    /// config-api only: the role the platform routes assume after the
    /// platform administrator check (`PLATFORM_WRITE_ROLE_ARN`); required
    /// with tenant credentials (the process's own role then writes nothing).
    pub platform_write_role_arn: Option<String>,
    /// config-api only: how long the user pool's answer to "is this user
    /// still an administrator" is remembered (`ADMIN_MEMBERSHIP_TTL_SECS`,
    /// 0..=60; 0 asks at every write).
    pub admin_membership_ttl: Duration,
    /// config-api only: the KMS key every SecureString write is encrypted
    /// with (`SECURESTRING_KMS_KEY_ID`: key id, ARN or alias); unset,
    /// Parameter Store's default key for the account (`aws/ssm`).
    pub secure_string_key: Option<String>,
    /// Tenant-scoped credentials for every store call (`TENANT_ROLE_ARN`,
    /// and `TENANT_WRITE_ROLE_ARN` for writes); `None`: the process's own
    /// role reads (and writes) every tenant.
    pub tenant_role: Option<TenantRoleSettings>,
    /// `TENANT_WRITE_ROLE_ARN` was set without `TENANT_ROLE_ARN` (see
    /// [`Settings::check_write_credentials`]).
    pub stray_write_role: bool,
    pub fairness: FairnessSettings,
    /// Service-level isolation (`SERVICE_GRANTS=enforce`): each app client
    /// reads only the services granted to it; `Some(how long a grant is
    /// remembered)` (`GRANT_CACHE_TTL_SECS`). `None` (`off`, the default):
    /// every caller reads every service of its tenant.
    pub service_grants: Option<Duration>,
}

/// Each tenant's share, so one tenant cannot spend what the others need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairnessSettings {
    /// Keys a tenant may load from the stores per second in one process
    /// (`TENANT_STORE_READS_PER_SEC`; cache hits are free; 0: no limit).
    pub store_reads_per_sec: u32,
    /// How many of those at once (`TENANT_STORE_READS_BURST`, at least a
    /// full batch of 50).
    pub store_reads_burst: u32,
    /// config-api only: writes (put, delete, rollback) per tenant per
    /// minute, all containers together (`TENANT_WRITES_PER_MINUTE`; 0: none).
    pub writes_per_minute: u32,
    /// config-api only: keys a tenant may store, both stores together
    /// (`TENANT_MAX_KEYS`; 0: no quota).
    pub max_keys: u32,
}

impl Settings {
    /// config-api's own check, after parsing: writes with tenant credentials
    /// need the write role (the read role cannot write), and a write role
    /// without tenant credentials is a mistake, not ignored. (The agent
    /// parses the same variables and writes nothing, so it does not check.)
    pub fn check_write_credentials(&self) -> Result<(), SettingsError> {
        match (&self.tenant_role, &self.admin_group) {
            (Some(role), Some(_)) if role.write_role_arn.is_none() => Err(SettingsError {
                variable: "TENANT_WRITE_ROLE_ARN",
                reason: "must be set when TENANT_ROLE_ARN and ADMIN_GROUP are: writes assume the write role, and the read role cannot write".to_owned(),
            }),
            _ if self.admin_group.is_some()
                && crate::membership::pool_id_of_issuer(&self.auth.issuer).is_none() =>
            {
                Err(SettingsError {
                    variable: "COGNITO_ISSUER",
                    reason: "writes (ADMIN_GROUP) need the user pool's issuer, https://cognito-idp.{region}.amazonaws.com/{pool id}: each write asks that pool whether its administrator still is one".to_owned(),
                })
            }
            _ if self.tenant_role.is_some()
                && self.platform_admin_group.is_some()
                && self.platform_write_role_arn.is_none() =>
            {
                Err(SettingsError {
                    variable: "PLATFORM_WRITE_ROLE_ARN",
                    reason: "must be set when TENANT_ROLE_ARN and PLATFORM_ADMIN_GROUP are: the shared layers are written with the platform write role, which config-api's own role is not".to_owned(),
                })
            }
            _ if self.platform_admin_group.is_some()
                && crate::membership::pool_id_of_issuer(&self.auth.issuer).is_none() =>
            {
                Err(SettingsError {
                    variable: "COGNITO_ISSUER",
                    reason: "platform writes (PLATFORM_ADMIN_GROUP) need the user pool's issuer: each asks that pool whether its administrator still is one".to_owned(),
                })
            }
            _ if self.tenant_role.is_none() && self.stray_write_role => Err(SettingsError {
                variable: "TENANT_WRITE_ROLE_ARN",
                reason: "is used only with TENANT_ROLE_ARN (tenant credentials); without it the process's own role writes".to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// The role assumed per tenant (see [`crate::credentials`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoleSettings {
    /// The role reads assume (`TENANT_ROLE_ARN`): it can only read.
    pub role_arn: String,
    /// config-api only: the role the write routes assume, after the
    /// administrator check (`TENANT_WRITE_ROLE_ARN`). Required when writes
    /// are on (`ADMIN_GROUP`): the read role cannot write.
    pub write_role_arn: Option<String>,
    /// Session length asked of STS (`TENANT_SESSION_SECS`, 900..=3600).
    pub session: Duration,
    /// Tenants whose credentials a process keeps (`TENANT_CREDENTIALS_MAX_TENANTS`).
    pub max_tenants: u64,
}

/// What `TENANT_SESSION_SECS` may be: AssumeRole refuses less than 900 s, and
/// the template's tenant roles have a MaxSessionDuration of 3600 s, above
/// which every AssumeRole, so every read and write of a tenant, fails.
pub const TENANT_SESSION_SECS_RANGE: std::ops::RangeInclusive<u64> = 900..=3600;

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
                jwks_max_age: Duration::from_secs(env.positive("JWKS_MAX_AGE_SECS", 3600)?),
            },
            dynamodb_cache: cache(
                &env,
                "DYNAMODB_CACHE_TTL_SECS",
                defaults.dynamodb_ttl_secs,
                "DYNAMODB_CACHE_MAX_ENTRIES",
                defaults,
            )?,
            parameter_cache: cache(
                &env,
                "PARAMETER_CACHE_TTL_SECS",
                defaults.parameter_ttl_secs,
                "PARAMETER_CACHE_MAX_ENTRIES",
                defaults,
            )?,
            journal_table: env.optional("JOURNAL_TABLE_NAME"),
            admin_group: env.optional("ADMIN_GROUP"),
            platform_admin_group: env.optional("PLATFORM_ADMIN_GROUP"),
            platform_write_role_arn: env.optional("PLATFORM_WRITE_ROLE_ARN"),
            admin_membership_ttl: Duration::from_secs(env.within(
                "ADMIN_MEMBERSHIP_TTL_SECS",
                30,
                0..=60,
                "a user removed from the administrators' group may write for at most this long",
            )?),
            secure_string_key: env.optional("SECURESTRING_KMS_KEY_ID"),
            stray_write_role: env.optional("TENANT_ROLE_ARN").is_none()
                && env.optional("TENANT_WRITE_ROLE_ARN").is_some(),
            tenant_role: match env.optional("TENANT_ROLE_ARN") {
                None => None,
                Some(role_arn) => Some(TenantRoleSettings {
                    role_arn,
                    write_role_arn: env.optional("TENANT_WRITE_ROLE_ARN"),
                    session: Duration::from_secs(env.within(
                        "TENANT_SESSION_SECS",
                        900,
                        TENANT_SESSION_SECS_RANGE,
                        "AssumeRole's minimum, and the tenant roles' MaxSessionDuration",
                    )?),
                    max_tenants: env.positive("TENANT_CREDENTIALS_MAX_TENANTS", 1000)?,
                }),
            },
            service_grants: match env.optional("SERVICE_GRANTS").as_deref() {
                None | Some("off") => None,
                Some("enforce") => Some(Duration::from_secs(env.within(
                    "GRANT_CACHE_TTL_SECS",
                    10,
                    1..=300,
                    "a revoked grant keeps working for at most this long",
                )?)),
                Some(other) => {
                    return Err(SettingsError {
                        variable: "SERVICE_GRANTS",
                        reason: format!("'{other}' is neither 'enforce' nor 'off'"),
                    });
                }
            },
            fairness: FairnessSettings {
                store_reads_per_sec: env.number("TENANT_STORE_READS_PER_SEC", 20)?,
                store_reads_burst: env.within(
                    "TENANT_STORE_READS_BURST",
                    100,
                    crate::reads::MAX_BATCH_KEYS as u32..=u32::MAX,
                    "a tenant must be able to read one full batch",
                )?,
                writes_per_minute: env.number("TENANT_WRITES_PER_MINUTE", 120)?,
                max_keys: env.number("TENANT_MAX_KEYS", 10_000)?,
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
            catch_up: CatchUpSettings {
                interval: Duration::from_millis(env.positive(
                    "CATCH_UP_INTERVAL_MS",
                    defaults.catch_up.interval.as_millis() as u64,
                )?),
                ..defaults.catch_up
            },
        })
    }
}

/// One store's cache: its TTL and bound, with the settings both stores share.
fn cache(
    env: &Env<'_>,
    ttl_var: &'static str,
    default_ttl_secs: u64,
    max_var: &'static str,
    defaults: CacheDefaults,
) -> Result<CacheSettings, SettingsError> {
    Ok(CacheSettings {
        ttl: Duration::from_secs(env.number(ttl_var, default_ttl_secs)?),
        not_found_ttl: Duration::from_secs(
            env.number("NOT_FOUND_CACHE_TTL_SECS", defaults.not_found_ttl_secs)?,
        ),
        max_entries: env.number(max_var, defaults.max_entries)?,
        stale: stale_if_error(env)?,
    })
}

/// What a cache serves while its store fails.
fn stale_if_error(env: &Env<'_>) -> Result<StaleIfError, SettingsError> {
    let defaults = StaleIfError::DEFAULT;
    let retry_ms: u64 = env.positive(
        "STORE_RETRY_INTERVAL_MS",
        defaults.retry_interval.as_millis() as u64,
    )?;
    let probe_ms: u64 = env.positive(
        "STALE_PROBE_TIMEOUT_MS",
        defaults.probe_timeout.as_millis() as u64,
    )?;
    Ok(StaleIfError {
        max_stale: Duration::from_secs(env.number("MAX_STALE_SECS", defaults.max_stale.as_secs())?),
        retry_interval: Duration::from_millis(retry_ms),
        probe_timeout: Duration::from_millis(probe_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::super::env::lookup;
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_lookup(&lookup(vars), LAMBDA_CACHE_DEFAULTS)
    }

    const REQUIRED: [(&str, &str); 3] = [
        ("CONFIG_TABLE_NAME", "tenant-config"),
        (
            "COGNITO_ISSUER",
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool/",
        ),
        ("COGNITO_CLIENT_IDS", "a, b ,"),
    ];

    #[test]
    fn defaults_apply_when_only_required_variables_are_set() {
        let s = settings(&REQUIRED).unwrap();
        assert_eq!(s.parameter_root, "/config-service");
        assert_eq!(
            s.auth.issuer,
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool"
        );
        assert_eq!(
            s.auth.jwks_url,
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool/.well-known/jwks.json"
        );
        assert_eq!(s.auth.client_ids, vec!["a", "b"]);
        assert_eq!(s.dynamodb_cache.ttl, Duration::from_secs(60));
        assert_eq!(s.parameter_cache.not_found_ttl, Duration::from_secs(5));
    }

    #[test]
    fn agent_caches_both_stores_for_an_hour_and_catches_up_every_two_seconds() {
        let s = Settings::from_lookup(&lookup(&REQUIRED), AGENT_CACHE_DEFAULTS).unwrap();
        assert_eq!(s.parameter_cache.ttl, Duration::from_secs(3600));
        assert_eq!(s.dynamodb_cache.ttl, Duration::from_secs(3600));
        assert_eq!(s.catch_up.interval, Duration::from_secs(2));
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

    #[test]
    fn writes_with_tenant_credentials_need_the_write_role_and_reads_never_get_it() {
        const READ: (&str, &str) = ("TENANT_ROLE_ARN", "arn:aws:iam::123456789012:role/read");
        const WRITE: (&str, &str) = (
            "TENANT_WRITE_ROLE_ARN",
            "arn:aws:iam::123456789012:role/write",
        );
        const ADMINS: (&str, &str) = ("ADMIN_GROUP", "config-admins");
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = REQUIRED.to_vec();
            vars.extend_from_slice(extra);
            settings(&vars)
        };
        // GIVEN writes on with tenant credentials WHEN no write role is named
        // THEN config-api refuses to start (the read role cannot write)
        let checked =
            |vars: &[(&'static str, &'static str)]| with(vars).unwrap().check_write_credentials();
        let err = checked(&[READ, ADMINS]).unwrap_err();
        assert_eq!(err.variable, "TENANT_WRITE_ROLE_ARN");
        // AND a write role without tenant credentials is a mistake, not ignored
        let err = checked(&[WRITE, ADMINS]).unwrap_err();
        assert_eq!(err.variable, "TENANT_WRITE_ROLE_ARN");
        // AND an agent given config-api's environment still starts (it does
        // not check: it writes nothing)
        assert!(with(&[READ, ADMINS]).is_ok());
        // AND with both, reads keep the read role and writes get the write role
        let role = with(&[READ, WRITE, ADMINS]).unwrap().tenant_role.unwrap();
        assert_eq!(role.role_arn, READ.1);
        assert_eq!(role.write_role_arn.as_deref(), Some(WRITE.1));
        assert!(checked(&[READ, WRITE, ADMINS]).is_ok());
        // AND a reader without writes (an agent) needs no write role
        let role = with(&[READ]).unwrap().tenant_role.unwrap();
        assert_eq!(role.write_role_arn, None);
    }

    #[test]
    fn tenant_sessions_are_refused_outside_what_assume_role_and_the_role_allow() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = REQUIRED.to_vec();
            vars.push(("TENANT_ROLE_ARN", "arn:aws:iam::123456789012:role/tenant"));
            vars.extend_from_slice(extra);
            settings(&vars)
        };
        let session = |s: Settings| s.tenant_role.unwrap().session;
        assert_eq!(session(with(&[]).unwrap()), Duration::from_secs(900));
        for ok in ["900", "3600"] {
            let parsed = with(&[("TENANT_SESSION_SECS", ok)]).unwrap();
            assert_eq!(session(parsed).as_secs().to_string(), ok);
        }
        // Below AssumeRole's minimum, or above the role's MaxSessionDuration
        // (every AssumeRole would fail): refused, never adjusted.
        for bad in ["0", "899", "3601", "43200"] {
            let err = with(&[("TENANT_SESSION_SECS", bad)]).unwrap_err();
            assert_eq!(err.variable, "TENANT_SESSION_SECS", "{bad}");
            assert!(err.reason.contains("900..=3600"), "{err}");
        }
        let err = with(&[("TENANT_CREDENTIALS_MAX_TENANTS", "0")]).unwrap_err();
        assert_eq!(err.variable, "TENANT_CREDENTIALS_MAX_TENANTS");
    }

    #[test]
    fn zero_is_refused_where_it_would_switch_something_off() {
        for variable in [
            "JWKS_MAX_AGE_SECS",
            "CATCH_UP_INTERVAL_MS",
            "STORE_RETRY_INTERVAL_MS",
            "STALE_PROBE_TIMEOUT_MS",
        ] {
            let mut vars = REQUIRED.to_vec();
            vars.push((variable, "0"));
            let err = settings(&vars).unwrap_err();
            assert_eq!(err.variable, variable);
            assert_eq!(err.reason, "must be at least 1");
        }
    }

    #[test]
    fn documented_defaults_given_explicitly_print_the_same() {
        let implicit = settings(&REQUIRED).unwrap();
        let mut vars = REQUIRED.to_vec();
        vars.extend([
            ("JWKS_MAX_AGE_SECS", "3600"),
            ("DYNAMODB_CACHE_TTL_SECS", "60"),
            ("PARAMETER_ROOT", "/config-service"),
        ]);
        let explicit = settings(&vars).unwrap();
        assert_eq!(format!("{implicit:?}"), format!("{explicit:?}"));
    }
}
