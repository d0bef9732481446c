//! Bounds on every AWS SDK call, for every process (the functions, the agent,
//! the CLI).

use std::time::Duration;

use super::env::{Env, SettingsError};

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
            Ok(Duration::from_millis(env.positive(variable, default)?))
        };
        let settings = Self {
            connect: ms("AWS_CONNECT_TIMEOUT_MS", 1000)?,
            attempt: ms("AWS_ATTEMPT_TIMEOUT_MS", 2000)?,
            operation: ms("AWS_OPERATION_TIMEOUT_MS", 5000)?,
            max_attempts: env.positive("AWS_MAX_ATTEMPTS", 3)?,
        };
        if settings.attempt > settings.operation {
            return Err(SettingsError {
                variable: "AWS_ATTEMPT_TIMEOUT_MS",
                reason: "must not exceed AWS_OPERATION_TIMEOUT_MS".to_owned(),
            });
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::lookup;
    use super::*;

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
}
