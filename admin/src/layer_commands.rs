//! `tenant-config-admin layer ...` and `tenant ...`: the shared layers
//! (global, tiers) and the tenant registry, written straight through the
//! writer port with the operator's credentials, by the API's rules: no
//! SecureString in a shared layer, values checked against their schema,
//! versions expected where given.

use aws_config::SdkConfig;
use clap::{Args, Subcommand, ValueEnum};
use tenant_config_shared::layers::registry::{DynamoDbRegistry, TenantRecord, TenantRegistry};
use tenant_config_shared::layers::{EntryKey, Layer};
use tenant_config_shared::write::{Actor, Expected, NewValue, ValueKind, WriteError, now_ms};
use tenant_config_shared::writes::{checked_put, checked_rollback};
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
    },
    /// Delete a value of a shared layer.
    Delete {
        layer: String,
        service: String,
        key: String,
        #[command(flatten)]
        when: Precondition,
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
    },
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Show a tenant's tier and whether it is active.
    Get { tenant: String },
    /// Register a tenant: its tier (none without --tier), active unless
    /// --inactive (an inactive tenant's reads are refused; writes not yet).
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

pub async fn run_layer(
    target: &Target,
    aws: &SdkConfig,
    command: LayerCommand,
) -> Result<(), String> {
    match command {
        LayerCommand::Put {
            layer,
            service,
            key,
            value,
            kind,
            when,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let kind = match kind {
                SharedKind::String => ValueKind::Plain,
                SharedKind::StringList => ValueKind::StringList,
            };
            let writer = target.writer_for_key(aws, &entry.key)?;
            let written = checked_put(
                writer.as_ref(),
                Some(&target.schemas(aws)),
                &entry,
                &NewValue::text(value, kind),
                when.expected(),
                &when.actor(),
            )
            .await
            .map_err(|e| e.to_string())?;
            eprintln!("wrote {entry} as version {}", written.version);
        }
        LayerCommand::Delete {
            layer,
            service,
            key,
            when,
        } => {
            let entry = entry(&layer, &service, &key)?;
            let writer = target.writer_for_key(aws, &entry.key)?;
            match writer.delete(&entry, when.expected(), &when.actor()).await {
                Ok(version) => eprintln!("deleted {entry} (version {version})"),
                Err(WriteError::NotFound) => return Err(format!("{entry} not found")),
                Err(e) => return Err(e.to_string()),
            }
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
        } => {
            let entry = entry(&layer, &service, &key)?;
            let writer = target.writer_for_key(aws, &entry.key)?;
            let written = checked_rollback(
                writer.as_ref(),
                Some(&target.schemas(aws)),
                &entry,
                to,
                when.expected(),
                &when.actor(),
            )
            .await
            .map_err(|e| e.to_string())?;
            eprintln!(
                "restored version {to} of {entry} as version {}",
                written.version
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
