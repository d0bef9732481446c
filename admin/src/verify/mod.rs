//! `tenant-config-admin verify`: what a deploy can get wrong, checked against
//! the running stack, each failure printed with its fix. Every check makes
//! bounded calls (the SDK's operation timeout, explicit HTTP and gRPC
//! deadlines), so a stack that does not answer fails the check in seconds
//! instead of hanging the command.
//!
//! The checks (names are stable; `docs/operations.md` describes each):
//! `stack-status`, `signing-key`, `agent-tls`, `agents-registered`, `agents-trust-key`,
//! `stage-settings`, `read-through-api`, `change-journaled`, `dlq-empty`,
//! `alarms-notify`.

mod api;
mod operations;
mod refresh;

pub use operations::TEMPLATE_ALARMS;
pub use refresh::probe_change;

use std::fmt;
use std::time::Duration;

use tenant_config_shared::aws::Aws;

use crate::stack::StackOutputs;
use crate::values::Target;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
    /// Could not be checked from here (said why); not a failure.
    Skip,
}

/// One check's result: what was seen, and for a failure what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Outcome {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skip(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Skip,
            detail: detail.into(),
            fix: None,
        }
    }
}

impl fmt::Display for Outcome {
    /// `ok    signing-key  ...` and, for a failure, an indented `fix:` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        write!(f, "{status:<5} {:<18} {}", self.check, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

/// Every check's outcome, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// True when no check failed (skips are not failures).
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.status != Status::Fail)
    }

    pub fn outcome(&self, check: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.check == check)
    }
}

/// What `verify` needs besides the stack.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// How long a probe write may take to reach the change journal.
    pub journal_timeout: Duration,
    /// Deadline of each probe Refresh call to an agent.
    pub agent_deadline: Duration,
    /// No agents are deployed (yet): zero registered agents is then fine.
    pub no_agents: bool,
    /// Every HTTP call's timeout (the API read).
    pub http_timeout: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            journal_timeout: Duration::from_secs(30),
            agent_deadline: Duration::from_secs(3),
            no_agents: false,
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// Runs every check against `stack`, in an order where later checks use what
/// earlier ones found (the signing key, the registered agents).
pub async fn verify(
    aws: &Aws,
    stack: &StackOutputs,
    target: &Target,
    options: &VerifyOptions,
) -> Report {
    let mut report = Report::default();
    report.outcomes.push(stack_status(stack));
    let (key_outcome, key) = refresh::signing_key(aws, stack, &target.parameter_root).await;
    report.outcomes.push(key_outcome);
    let (tls_outcome, tls) = refresh::agent_tls_material(aws, stack).await;
    report.outcomes.push(tls_outcome);
    let (registered, instances) = refresh::agents_registered(aws, stack, options).await;
    report.outcomes.push(registered);
    report
        .outcomes
        .push(refresh::agents_trust_key(key, tls.as_ref(), &instances, options).await);
    report.outcomes.push(api::stage_settings(aws, stack).await);
    report
        .outcomes
        .extend(api::read_and_journal(aws, stack, target, options).await);
    report
        .outcomes
        .push(operations::dlq_empty(aws, stack).await);
    report
        .outcomes
        .push(operations::alarms_notify(aws, stack).await);
    report
}

pub const STACK_STATUS: &str = "stack-status";

/// The stack's last deploy completed: after a failed update CloudFormation
/// rolls back, and everything else would be checked against the old version.
pub fn stack_status(stack: &StackOutputs) -> Outcome {
    let status = stack.status.as_str();
    let settled = status == "CREATE_COMPLETE" || status == "UPDATE_COMPLETE";
    if settled {
        Outcome::ok(STACK_STATUS, format!("{} is {status}", stack.name))
    } else {
        Outcome::fail(
            STACK_STATUS,
            format!("{} is {status}", stack.name),
            "wait for a deploy in progress, or read the stack's events for why the last one failed \
             (aws cloudformation describe-stack-events), fix it and deploy again",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_back_or_unfinished_deploy_fails_the_stack_status() {
        let stack = |status: &str| StackOutputs {
            name: "tenant-config".into(),
            status: status.into(),
            ..StackOutputs::default()
        };
        assert_eq!(stack_status(&stack("UPDATE_COMPLETE")).status, Status::Ok);
        assert_eq!(stack_status(&stack("CREATE_COMPLETE")).status, Status::Ok);
        for status in [
            "UPDATE_ROLLBACK_COMPLETE",
            "UPDATE_IN_PROGRESS",
            "ROLLBACK_COMPLETE",
        ] {
            assert_eq!(
                stack_status(&stack(status)).status,
                Status::Fail,
                "{status}"
            );
        }
    }

    #[test]
    fn a_failure_prints_its_fix_and_fails_the_report_while_a_skip_does_not() {
        let mut report = Report::default();
        report
            .outcomes
            .push(Outcome::ok("signing-key", "ed25519 key k1"));
        report
            .outcomes
            .push(Outcome::skip("agents-trust-key", "none reachable"));
        assert!(report.passed());
        report.outcomes.push(Outcome::fail(
            "dlq-empty",
            "3 messages in DlqUrl",
            "see docs/operations.md",
        ));
        assert!(!report.passed());
        let printed = report.outcomes[2].to_string();
        assert!(printed.starts_with("FAIL  dlq-empty"), "{printed}");
        assert!(
            printed.contains("\n      fix: see docs/operations.md"),
            "{printed}"
        );
    }
}
