//! The layered configuration the local stack starts with: a global default
//! for everyone, two tiers that override it, one tenant in a tier and one
//! tenant's own exception, in both stores. Written through the same
//! writers and registry as the API, so the stream delivers them to
//! config-refresh like any change. Each key has a JSON Schema of its own
//! (the walk-through later sets one for the whole service). The override
//! index is marked here, as `tenant-config-admin overrides rebuild` would
//! for values that predate it.

use std::sync::Arc;

use aws_config::SdkConfig;
use serde_json::json;
use tenant_config_shared::layers::overrides::{DynamoDbOverrides, OverrideIndex};
use tenant_config_shared::layers::registry::{DynamoDbRegistry, TenantRecord, TenantRegistry};
use tenant_config_shared::layers::{EntryKey, Layer};
use tenant_config_shared::schema::DynamoDbSchemas;
use tenant_config_shared::write::{
    Actor, ConfigWriter, DynamoDbWriter, Expected, NewValue, ParameterWriter, ValueKind, now_ms,
};
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName, TenantId, TierName};

use crate::stack::{PARAMETER_ROOT, SERVICE, TABLE};

/// The key whose value is merged from every layer.
pub const FEATURES: &str = "tenant_config_features";
/// A Parameter Store key with a global default only.
pub const LOG_LEVEL: &str = "param_config_log_level";
/// Tenant A's tier.
pub const TENANT_A_TIER: &str = "enterprise";
/// The tiers with values of their own.
pub const TIERS: [&str; 2] = ["enterprise", "free"];

/// What each layer holds of [`FEATURES`], bottom to top.
pub fn features_global() -> serde_json::Value {
    json!({"beta_ui": false, "max_projects": 5, "support": "community"})
}

pub fn features_of_tier(tier: &str) -> serde_json::Value {
    match tier {
        "enterprise" => json!({"max_projects": 100, "support": "dedicated"}),
        _ => json!({"max_projects": 2}),
    }
}

/// Tenant A's own exception.
pub fn features_of_tenant_a() -> serde_json::Value {
    json!({"beta_ui": true})
}

fn entry(layer: Layer, key: &str) -> Result<EntryKey, String> {
    Ok(EntryKey::new(
        layer,
        ServiceName::parse(SERVICE).map_err(|e| e.to_string())?,
        ConfigKey::parse(key).map_err(|e| e.to_string())?,
    ))
}

fn tier(name: &str) -> Result<TierName, String> {
    TierName::parse(name).map_err(|e| e.to_string())
}

pub async fn seed_layers(aws: &SdkConfig) -> Result<(), String> {
    let actor = Actor("tenant-config-local-stack".to_owned());
    let dynamodb = DynamoDbWriter::new(aws_sdk_dynamodb::Client::new(aws), TABLE);
    let parameters = ParameterWriter::new(aws_sdk_ssm::Client::new(aws), PARAMETER_ROOT);
    let json = |value: serde_json::Value| {
        NewValue::json(&value, ValueKind::Plain).map_err(|e| e.to_string())
    };
    let mut values = vec![(entry(Layer::Global, FEATURES)?, features_global())];
    for name in TIERS {
        values.push((
            entry(Layer::Tier(tier(name)?), FEATURES)?,
            features_of_tier(name),
        ));
    }
    let tenant_a = TenantId::parse("tenant-a").map_err(|e| e.to_string())?;
    values.push((
        entry(Layer::Tenant(tenant_a.clone()), FEATURES)?,
        features_of_tenant_a(),
    ));
    for (entry, value) in values {
        dynamodb
            .put(&entry, &json(value)?, Expected::Absent, &actor)
            .await
            .map_err(|e| format!("seed {entry}: {e}"))?;
    }
    let client = aws_sdk_dynamodb::Client::new(aws);
    DynamoDbOverrides::new(client.clone(), TABLE)
        .mark(
            &ItemKey::new(
                tenant_a.clone(),
                ServiceName::parse(SERVICE).map_err(|e| e.to_string())?,
                ConfigKey::parse(FEATURES).map_err(|e| e.to_string())?,
            ),
            true,
            now_ms(),
        )
        .await
        .map_err(|e| format!("seed the override index: {e}"))?;
    let schemas = DynamoDbSchemas::new(client, TABLE);
    for (key, schema) in [
        (
            FEATURES,
            json!({"type": "object", "properties": {
                "beta_ui": {"type": "boolean"},
                "max_projects": {"type": "integer", "minimum": 0},
                "support": {"enum": ["community", "priority", "dedicated"]}}}),
        ),
        (
            LOG_LEVEL,
            json!({"enum": ["debug", "info", "warn", "error"]}),
        ),
    ] {
        let key = ConfigKey::parse(key).map_err(|e| e.to_string())?;
        schemas
            .put(
                &ServiceName::parse(SERVICE).map_err(|e| e.to_string())?,
                Some(&key),
                &schema,
            )
            .await
            .map_err(|e| format!("seed {key}'s schema: {e}"))?;
    }
    let log_level = entry(Layer::Global, LOG_LEVEL)?;
    parameters
        .put(
            &log_level,
            &NewValue::text("info".to_owned(), ValueKind::Plain),
            Expected::Absent,
            &actor,
        )
        .await
        .map_err(|e| format!("seed {log_level}: {e}"))?;
    let registry: Arc<dyn TenantRegistry> = Arc::new(DynamoDbRegistry::new(
        aws_sdk_dynamodb::Client::new(aws),
        TABLE,
    ));
    registry
        .put(
            &tenant_a,
            &TenantRecord {
                tier: Some(tier(TENANT_A_TIER)?),
                active: true,
            },
            None,
            &actor.0,
            now_ms(),
        )
        .await
        .map_err(|e| format!("seed tenant-a's registration: {e}"))?
        .ok_or("tenant-a was registered already")?;
    Ok(())
}
