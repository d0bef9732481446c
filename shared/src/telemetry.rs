//! JSON logs via `tracing`, filtered by `RUST_LOG` (default `info`).
//!
//! Whatever `RUST_LOG` says, a few dependencies never log at TRACE: at that
//! level they write whole payloads and signing material, which here means
//! callers' ID tokens (`lambda_runtime` logs every raw event) and, in Lambda,
//! the execution role's session token (`aws_sigv4` logs the canonical request
//! with its `x-amz-security-token` header). The secrets-in-logs end-to-end
//! test runs everything at `RUST_LOG=trace` to keep this true.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::prelude::*;

/// The target of audit lines, always on at INFO.
const AUDIT: &str = "audit=info";

/// Crates whose TRACE events carry payloads or credentials.
const PAYLOAD_TRACERS: &[&str] = &["lambda_runtime", "lambda_http", "aws_sigv4"];

fn may_carry_secrets(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::TRACE
        && PAYLOAD_TRACERS
            .iter()
            .any(|krate| metadata.target().starts_with(krate))
}

/// Installs the JSON subscriber once; later calls are ignored.
pub fn init() {
    // Audit lines (target `audit`) are written whatever RUST_LOG says.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(AUDIT.parse().expect("a valid directive"));
    let never_payloads = filter_fn(|metadata| !may_carry_secrets(metadata));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_target(false)
                .with_ansi(false)
                .with_filter(filter.and(never_payloads)),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing::metadata::Kind;

    struct Callsite;
    impl tracing::callsite::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not registered")
        }
    }
    static CALLSITE: Callsite = Callsite;

    fn metadata(target: &'static str, level: Level) -> Metadata<'static> {
        Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            Kind::EVENT,
        )
    }

    #[test]
    fn payload_tracers_are_silenced_at_trace_only() {
        assert!(may_carry_secrets(&metadata(
            "lambda_runtime::layers::api_response",
            Level::TRACE
        )));
        assert!(may_carry_secrets(&metadata(
            "aws_sigv4::http_request::sign",
            Level::TRACE
        )));
        assert!(!may_carry_secrets(&metadata(
            "lambda_runtime",
            Level::DEBUG
        )));
        assert!(!may_carry_secrets(&metadata(
            "tenant_config_shared::cache",
            Level::TRACE
        )));
    }
}
