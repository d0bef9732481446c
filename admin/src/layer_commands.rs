//! `tenant-config-admin layer ...` and `tenant ...`: the shared layers
//! (global, tiers), their guardrails and the tenant registry, written with
//! the operator's credentials by the API's own use cases
//! ([`PlatformWrites`]): no SecureString in a shared layer, every change
//! weighed against every tenant first (`--dry-run` shows the blast radius;
//! a change that breaks tenants needs `--force`, recorded as forced),
//! versions expected where given.

use aws_config::SdkConfig;
use clap::{Args, Subcommand, ValueEnum};
use tenant_config_shared::aws::Aws;
use tenant_config_shared::layers::blast::BlastReport;
use tenant_config_shared::layers::guardrails::{DynamoDbGuardrails, Guardrail, GuardrailStore};
use tenant_config_shared::layers::overrides::DynamoDbOverrides;
use tenant_config_shared::layers::platform::{Landing, PlatformWrites, Weighed};
use tenant_config_shared::layers::registry::{DynamoDbRegistry, TenantRecord, TenantRegistry};
use tenant_config_shared::layers::reindex::reindex_overrides;
use tenant_config_shared::layers::{EntryKey, Layer};
use tenant_config_shared::write::{Actor, Expected, NewValue, ValueKind, now_ms};
use tenant_config_shared::{ConfigKey, ServiceName, TenantId, TierName};

use crate::values::{Target, default_actor};

/// `global` or `tier:{name}`.
fn parse_layer(text: &str) -> Result<Layer, String> {
    match text.split_once(':') {
        None if text == "global" => Ok(Layer::Global),
        Some(("tier", tier)) => TierName::parse(tier)
            .map(Layer::Tier)
            .map_err(|e| e.to_string()),
        _ => Err(format!("'{text}' is no shared layer: global or tier:NAME")),
    }
}

#[derive(Args)]
pub struct Precondition {
    /// Fail unless the entry is at this version.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..i64::MAX))]
    expect_version: Option<i64>,
    /// Create only: fail if it exists.
    #[arg(long, conflicts_with = "expect_version")]
    create: bool,
    /// Who the change is recorded as (default `cli:$USER`).
    #[arg(long)]
    actor: Option<String>,
}

impl Precondition {
    fn expected(&self) -> Expected {
        match (self.expect_version, self.create) {
            (Some(v), _) => Expected::Version(v),
            (None, true) => Expected::Absent,
            (None, false) => Expected::Any,
        }
    }

    fn actor(&self) -> Actor {
        self.actor.clone().map(Actor).unwrap_or_else(default_actor)
    }
}

#[derive(Args)]
pub struct Weighing {
    /// Show the blast radius (tenants whose value changes, keep their own,
    /// or would fail a schema or guardrail) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Land a change that breaks tenants anyway (recorded as forced).
    #[arg(long, conflicts_with = "dry_run")]
    force: bool,
}

impl Weighing {
    fn landing(&self) -> Landing {
        match (self.dry_run, self.force) {
            (true, _) => Landing::DryRun,
            (false, true) => Landing::Force,
            (false, false) => Landing::Land,
        }
    }
}

/// The types a shared layer may hold (never a SecureString).
#[derive(Clone, Copy, ValueEnum)]
pub enum SharedKind {
    String,
    StringList,
}

#[derive(Subcommand)]
pub enum LayerCommand {
    /// Write a value of a shared layer (LAYER: global or tier:NAME).
    Put {
        layer: String,
        service: String,
        key: String,
        value: String,
        #[arg(long = "type", value_enum, default_value = "string")]
        kind: SharedKind,
        #[command(flatten)]
        when: Precondition,
        #[command(flatten)]
        weighing: Weighing,
    },
    /// Delete a value of a shared layer.
    Delete {
        layer: String,
        service: String,
        key: String,
        #[command(flatten)]
        when: Precondition,
        #[command(flatten)]
        weighing: Weighing,
    },
    /// List a shared value's versions, newest first.
    History {
        layer: String,
        service: String,
        key: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Store an earlier version of a shared value again.
    Rollback {
        layer: String,
        service: String,
        key: String,
        #[arg(long)]
        to: i64,
        #[command(flatten)]
        when: Precondition,
        #[command(flatten)]
        weighing: Weighing,
    },
    /// Show a shared layer's guardrail of a key.
    GuardrailGet {
        layer: String,
        service: String,
        key: String,
    },
    /// Set a shared layer's guardrail of a key: --lock (no tenant it
    /// reaches may hold its own value) and/or --schema (a JSON Schema every
    /// effective value it reaches must satisfy).
    GuardrailSet {
        layer: String,
        service: String,
        key: String,
        #[arg(long)]
        lock: bool,
        #[arg(long)]
        schema: Option<String>,
        #[command(flatten)]
        when: Precondition,
        #[command(flatten)]
        weighing: Weighing,
    },
    /// Remove a shared layer's guardrail of a key.
    GuardrailDelete {
        layer: String,
        service: String,
        key: String,
        #[command(flatten)]
        when: Precondition,
        #[command(flatten)]
        weighing: Weighing,
    },
    /// Mark every tenant value that exists in either store in the override
    /// index, which blast radii read: once after upgrading a stack that held
    /// tenant values before the index existed (config-refresh keeps it
    /// from then on).
    ReindexOverrides,
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Show a tenant's tier and whether it is active.
    Get { tenant: String },
    /// Register a tenant: its tier (none without --tier), active unless
    /// --inactive (an inactive tenant's reads and writes are refused).
    Set {
        tenant: String,
        #[arg(long)]
        tier: Option<String>,
        #[arg(long)]
        inactive: bool,
        #[command(flatten)]
        when: Precondition,
    },
}

fn entry(layer: &str, service: &str, key: &str) -> Result<EntryKey, String> {
    Ok(EntryKey::new(
        parse_layer(layer)?,
        ServiceName::parse(service).map_err(|e| e.to_string())?,
        ConfigKey::parse(key).map_err(|e| e.to_string())?,
    ))
}

/// The API's platform use cases over the operator's credentials: the same
/// version locks as config-api's writes (so --expect-version and If-Match
/// exclude each other), the same blast radius, guardrails and refusal while
/// a rollout of the entry is live.
fn platform(target: &Target, aws: &SdkConfig) -> PlatformWrites {
    Aws::from_config(aws.clone()).operator_platform_writes(
        &target.table,
        &target.parameter_root,
        &target.router,
    )
}

fn report_json(report: &BlastReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// Prints a dry run's report (stdout) or what landed (stderr, with the
/// report on stdout); a refusal prints its report too.
fn answer<T>(
    weighed: Result<Weighed<T>, tenant_config_shared::ConfigError>,
    landed: impl FnOnce(T) -> String,
) -> Result<(), String> {
    match weighed {
        Ok(Weighed::DryRun(report)) => {
            println!("{}", report_json(&report));
            eprintln!("dry run: nothing changed");
            Ok(())
        }
        Ok(Weighed::Landed { outcome, report }) => {
            if let Some(report) = report {
                println!("{}", report_json(&report));
            }
            eprintln!("{}", landed(outcome));
            Ok(())
        }
        Err(tenant_config_shared::ConfigError::BreaksTenants { report }) => {
            println!("{}", report_json(&report));
            Err(format!(
                "refused: {} tenant(s) would fail their schema or a guardrail, {} hold their own value of a key it locks (see the report); fix them, or pass --force",
                report.failing, report.locked_overrides
            ))
        }
        Err(e) => Err(e.public_message()),
    }
}

fn guardrail_json(
    layer: &Layer,
    service: &ServiceName,
    key: &ConfigKey,
    stored: Option<tenant_config_shared::layers::guardrails::StoredGuardrail>,
) -> serde_json::Value {
    match stored {
        Some(g) => serde_json::json!({
            "layer": layer.to_string(), "service": service.as_str(), "key": key.as_str(),
            "locked": g.guardrail.locked, "schema": g.guardrail.schema,
            "version": g.version, "updated_by": g.updated_by, "updated_at_ms": g.updated_at_ms,
        }),
        None => serde_json::json!({
            "layer": layer.to_string(), "service": service.as_str(), "key": key.as_str(),
            "locked": false, "schema": null, "set": false,
        }),
    }
}

pub async fn run_layer(
    target: &Target,
    aws: &SdkConfig,
    command: LayerCommand,
) -> Result<(), String> {
    let platform = platform(target, aws);
    match command {
        LayerCommand::Put {
            layer,
            service,
            key,
            value,
            kind,
            when,
            weighing,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let kind = match kind {
                SharedKind::String => ValueKind::Plain,
                SharedKind::StringList => ValueKind::StringList,
            };
            let weighed = platform
                .put_as(
                    &when.actor().0,
                    &entry.layer,
                    &entry.service,
                    &entry.key,
                    &NewValue::text(value, kind),
                    when.expected(),
                    weighing.landing(),
                )
                .await;
            answer(weighed, |o| {
                format!("wrote {entry} as version {}", o.written.version)
            })?;
        }
        LayerCommand::Delete {
            layer,
            service,
            key,
            when,
            weighing,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let weighed = platform
                .delete_as(
                    &when.actor().0,
                    &entry.layer,
                    &entry.service,
                    &entry.key,
                    when.expected(),
                    weighing.landing(),
                )
                .await;
            answer(weighed, |version| {
                format!("deleted {entry} (version {version})")
            })?;
        }
        LayerCommand::History {
            layer,
            service,
            key,
            limit,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let versions = target
                .writer_for_key(aws, &entry.key)?
                .history(&entry, limit)
                .await
                .map_err(|e| e.to_string())?;
            if versions.is_empty() {
                return Err(format!("{entry} has no history"));
            }
            for version in &versions {
                println!("{}", crate::changes::version_line(version));
            }
        }
        LayerCommand::Rollback {
            layer,
            service,
            key,
            to,
            when,
            weighing,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let weighed = platform
                .rollback_as(
                    &when.actor().0,
                    &entry.layer,
                    &entry.service,
                    &entry.key,
                    to,
                    when.expected(),
                    weighing.landing(),
                )
                .await;
            answer(weighed, |o| {
                format!(
                    "restored version {to} of {entry} as version {}",
                    o.written.version
                )
            })?;
        }
        LayerCommand::GuardrailGet {
            layer,
            service,
            key,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let stored =
                DynamoDbGuardrails::new(aws_sdk_dynamodb::Client::new(aws), target.table.as_str())
                    .get(&entry)
                    .await
                    .map_err(|e| e.to_string())?;
            println!(
                "{}",
                guardrail_json(&entry.layer, &entry.service, &entry.key, stored)
            );
        }
        LayerCommand::GuardrailSet {
            layer,
            service,
            key,
            lock,
            schema,
            when,
            weighing,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let schema = schema
                .map(|text| {
                    serde_json::from_str(&text).map_err(|e| format!("--schema is not JSON: {e}"))
                })
                .transpose()?;
            let guardrail = Guardrail {
                locked: lock,
                schema,
            };
            let weighed = platform
                .set_guardrail_as(
                    &when.actor().0,
                    &entry.layer,
                    &entry.service,
                    &entry.key,
                    Some(&guardrail),
                    when.expected(),
                    weighing.landing(),
                )
                .await;
            answer(weighed, |version| {
                format!("set the guardrail of {entry} as version {version}")
            })?;
        }
        LayerCommand::GuardrailDelete {
            layer,
            service,
            key,
            when,
            weighing,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let weighed = platform
                .set_guardrail_as(
                    &when.actor().0,
                    &entry.layer,
                    &entry.service,
                    &entry.key,
                    None,
                    when.expected(),
                    weighing.landing(),
                )
                .await;
            answer(weighed, |_| format!("removed the guardrail of {entry}"))?;
        }
        LayerCommand::ReindexOverrides => {
            let dynamodb = aws_sdk_dynamodb::Client::new(aws);
            let index = DynamoDbOverrides::new(dynamodb.clone(), target.table.as_str());
            let reindexed = reindex_overrides(
                &dynamodb,
                &target.table,
                &aws_sdk_ssm::Client::new(aws),
                &target.parameter_root,
                &index,
                now_ms(),
            )
            .await
            .map_err(|e| e.to_string())?;
            println!(
                "marked {} DynamoDB entries and {} parameters as tenants' own values in the override index, as of their last writes (a later change's mark is kept); {} other parameters under {} passed over",
                reindexed.items, reindexed.parameters, reindexed.skipped, target.parameter_root
            );
        }
    }
    Ok(())
}

pub async fn run_tenant(
    target: &Target,
    aws: &SdkConfig,
    command: TenantCommand,
) -> Result<(), String> {
    let registry = DynamoDbRegistry::new(aws_sdk_dynamodb::Client::new(aws), target.table.as_str());
    match command {
        TenantCommand::Get { tenant } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| e.to_string())?;
            let registered = registry.get(&tenant).await.map_err(|e| e.to_string())?;
            let json = match registered {
                Some(r) => serde_json::json!({
                    "tenant": tenant.as_str(),
                    "tier": r.record.tier.map(|t| t.to_string()),
                    "active": r.record.active,
                    "version": r.version,
                    "updated_by": r.updated_by,
                    "updated_at_ms": r.updated_at_ms,
                }),
                None => serde_json::json!({
                    "tenant": tenant.as_str(), "tier": null, "active": true, "registered": false
                }),
            };
            println!("{json}");
        }
        TenantCommand::Set {
            tenant,
            tier,
            inactive,
            when,
        } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| e.to_string())?;
            let record = TenantRecord {
                tier: tier
                    .as_deref()
                    .map(TierName::parse)
                    .transpose()
                    .map_err(|e| e.to_string())?,
                active: !inactive,
            };
            let current = registry
                .get(&tenant)
                .await
                .map_err(|e| e.to_string())?
                .map(|r| r.version);
            let from = match (when.expected(), current) {
                (Expected::Any, current) => current,
                (Expected::Absent, None) => None,
                (Expected::Version(v), Some(c)) if v == c => Some(v),
                (_, current) => {
                    return Err(format!(
                        "{tenant} is at version {}",
                        current.map_or("none (not registered)".to_owned(), |v| v.to_string())
                    ));
                }
            };
            let version = registry
                .put(&tenant, &record, from, &when.actor().0, now_ms())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{tenant} changed meanwhile: read it again"))?;
            eprintln!("registered {tenant} as version {version}");
        }
    }
    Ok(())
}
