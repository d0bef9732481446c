//! `tenant-config-admin rollout ...`: start, read, pause, resume and abort
//! rollouts of a shared-layer change with the operator's credentials, by the
//! API's own use cases ([`RolloutControl`]), and run one driver tick by
//! hand (what the stack's schedule does every minute).

use aws_config::SdkConfig;
use clap::Subcommand;
use serde_json::{Value, json};
use tenant_config_shared::aws::Aws;
use tenant_config_shared::rollouts::control::{Action, RolloutControl};
use tenant_config_shared::rollouts::record::{Rollout, RolloutRequest};
use tenant_config_shared::write::now_ms;

use crate::values::{Target, default_actor};

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Stage a new value of a shared entry (LAYER: global or tier:NAME) for
    /// the tenants of each step in turn; prints the rollout (its id).
    Start {
        layer: String,
        service: String,
        key: String,
        /// The value, as JSON (`'{"max": 10}'`, `'"text"'`, `true`).
        value: String,
        /// The steps, as JSON: `'[{"canary": ["tenant-a"]}, {"percent": 10},
        /// {"tier": "gold"}, "everyone"]'` (the last one `"everyone"`).
        #[arg(long)]
        steps: String,
        /// How long each step bakes with its gates watched.
        #[arg(long, default_value_t = 600)]
        bake_seconds: u64,
        /// A CloudWatch alarm to watch during every bake (repeat for more).
        #[arg(long = "alarm")]
        alarms: Vec<String>,
        /// Who it is recorded as started by (default `cli:$USER`).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Show a rollout: its state, step, and the tenants on each version.
    Get { id: String },
    /// Hold a rollout at its step (its gates are still watched).
    Pause {
        id: String,
        #[arg(long)]
        actor: Option<String>,
    },
    /// Go on from the step it was held at (it converges and bakes again).
    Resume {
        id: String,
        #[arg(long)]
        actor: Option<String>,
    },
    /// Roll every tenant back to the previous value.
    Abort {
        id: String,
        #[arg(long)]
        actor: Option<String>,
    },
    /// One driver tick now: every live rollout's gates read and moved on.
    Tick,
}

fn control(target: &Target, aws: &SdkConfig) -> RolloutControl {
    Aws::from_config(aws.clone()).operator_rollouts(
        &target.table,
        &target.parameter_root,
        &target.router,
    )
}

fn actor(given: Option<String>) -> String {
    given.unwrap_or_else(|| default_actor().0)
}

fn print(rollout: &Rollout, extra: Option<(&str, Value)>) {
    let mut body = rollout.to_json();
    if let Some((name, value)) = extra {
        body[name] = value;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
}

pub async fn run_rollout(
    target: &Target,
    aws: &SdkConfig,
    command: RolloutCommand,
) -> Result<(), String> {
    let control = control(target, aws);
    let failed = |e: tenant_config_shared::ConfigError| e.public_message();
    match command {
        RolloutCommand::Start {
            layer,
            service,
            key,
            value,
            steps,
            bake_seconds,
            alarms,
            actor: who,
        } => {
            let value: Value = serde_json::from_str(&value)
                .map_err(|e| format!("the value is JSON ('\"text\"' for a string): {e}"))?;
            let steps: Value = serde_json::from_str(&steps)
                .map_err(|e| format!("--steps is a JSON array: {e}"))?;
            let request = RolloutRequest::parse(&json!({
                "layer": layer, "service": service, "key": key, "value": value,
                "steps": steps, "bake_seconds": bake_seconds, "alarms": alarms,
            }))
            .map_err(failed)?;
            let rollout = control
                .start_as(&actor(who), request, now_ms())
                .await
                .map_err(failed)?;
            print(&rollout, None);
            eprintln!(
                "rollout {} started: step 1 of {} reached",
                rollout.id,
                rollout.steps.len()
            );
        }
        RolloutCommand::Get { id } => {
            let rollout = control.get_as(&id).await.map_err(failed)?;
            let tenants = control.tenants(&rollout).await.map_err(failed)?;
            let counted = json!({
                "new": tenants.new, "previous": tenants.previous, "partial": tenants.partial,
            });
            print(&rollout, Some(("tenants", counted)));
        }
        RolloutCommand::Pause { id, actor: who } => {
            act(&control, &id, Action::Pause, who).await?;
        }
        RolloutCommand::Resume { id, actor: who } => {
            act(&control, &id, Action::Resume, who).await?;
        }
        RolloutCommand::Abort { id, actor: who } => {
            act(&control, &id, Action::Abort, who).await?;
        }
        RolloutCommand::Tick => {
            let gates = Aws::from_config(aws.clone()).rollout_gates();
            let moved = control.tick(&gates, now_ms()).await.map_err(failed)?;
            for m in &moved {
                eprintln!(
                    "{}: {} -> {} (step {}){}",
                    m.id,
                    m.from.as_str(),
                    m.to.as_str(),
                    m.step + 1,
                    m.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            if moved.is_empty() {
                eprintln!("no live rollout moved");
            }
        }
    }
    Ok(())
}

async fn act(
    control: &RolloutControl,
    id: &str,
    action: Action,
    who: Option<String>,
) -> Result<(), String> {
    let rollout = control
        .act_as(&actor(who), id, action, now_ms())
        .await
        .map_err(|e| e.public_message())?;
    print(&rollout, None);
    Ok(())
}
