//! Who may read what, and how much: app clients' service grants, and
//! recounting a tenant's stored keys for its key quota.

use std::collections::BTreeSet;

use aws_config::SdkConfig;
use clap::Subcommand;
use tenant_config_shared::StoreKind;
use tenant_config_shared::grants::{ALL_SERVICES, DynamoDbGrants, GRANT_CACHE_TTL, Grant};
use tenant_config_shared::quota::DynamoDbWriteQuotas;
use tenant_config_shared::refresh::stage_cache::{ApiGatewayStageCache, StageCache};
use tenant_config_shared::store::dynamodb::{CONFIG_SORT_PREFIX, partition_key};
use tenant_config_shared::{ConfigKey, ServiceName, TenantId};

use crate::values::Target;

#[derive(Debug, Subcommand)]
pub enum QuotaAction {
    /// Count the keys the tenant stores in both stores and set its key
    /// quota's counter to that (after keys were written outside the API,
    /// or a write stopped between the key and the count).
    Recount { tenant: String },
}

/// The grant `grant --services … --secure …` asks for: `None` (remove) when
/// it names no service. Every name is a valid service name or `*`, and a
/// secure service must be granted too.
pub fn grant(services: &[String], secure: &[String]) -> Result<Option<Grant>, String> {
    let names = |list: &[String]| -> Result<BTreeSet<String>, String> {
        list.iter()
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
            .map(|name| {
                if name == ALL_SERVICES {
                    Ok(name.to_owned())
                } else {
                    ServiceName::parse(name)
                        .map(|s| s.to_string())
                        .map_err(|e| e.to_string())
                }
            })
            .collect()
    };
    let (services, secure_services) = (names(services)?, names(secure)?);
    if services.is_empty() {
        return if secure_services.is_empty() {
            Ok(None)
        } else {
            Err("--secure names services --services does not grant".to_owned())
        };
    }
    if !services.contains(ALL_SERVICES)
        && let Some(stray) = secure_services
            .iter()
            .find(|s| *s != ALL_SERVICES && !services.contains(*s))
    {
        return Err(format!(
            "--secure names {stray}, which --services does not grant"
        ));
    }
    Ok(Some(Grant {
        services,
        secure_services,
    }))
}

/// Stores (or, when it grants nothing, removes) an app client's grant;
/// returns what the readers will do, for the operator.
pub async fn put_grant(
    aws: &SdkConfig,
    target: &Target,
    client_id: &str,
    grant: Option<Grant>,
) -> Result<String, String> {
    if client_id.is_empty()
        || client_id.len() > 128
        || !client_id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err("an app client id is 1 to 128 letters and digits".to_owned());
    }
    let grants = DynamoDbGrants::new(aws_sdk_dynamodb::Client::new(aws), target.table.as_str());
    let within = GRANT_CACHE_TTL.as_secs();
    match grant {
        Some(grant) => {
            grants
                .put(client_id, &grant)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "client {client_id} may read {:?} (SecureStrings of {:?}); readers apply it within {within} s",
                grant.services, grant.secure_services
            ))
        }
        None => {
            grants.delete(client_id).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "client {client_id} reads nothing; readers apply it within {within} s"
            ))
        }
    }
}

/// `grant`: stores the grant, then flushes the stage `(api id, stage)`'s
/// cache when given; tells the operator what happened.
pub async fn run_grant(
    aws: &SdkConfig,
    target: &Target,
    client_id: &str,
    grant: Option<Grant>,
    stage: Option<(String, String)>,
) -> Result<(), String> {
    eprintln!("{}", put_grant(aws, target, client_id, grant).await?);
    if let Some((api_id, stage)) = stage {
        flush_stage_cache(aws, &api_id, &stage).await?;
        eprintln!("stage cache of {api_id}/{stage} flushed");
    }
    Ok(())
}

/// Flushes a stage's cache, so answers it holds for a client's tokens (a
/// 403 before a grant, a 200 after a revoke) go at once.
pub async fn flush_stage_cache(aws: &SdkConfig, api_id: &str, stage: &str) -> Result<(), String> {
    ApiGatewayStageCache::new(aws_sdk_apigateway::Client::new(aws), api_id, stage)
        .flush()
        .await
        .map_err(|e| e.to_string())
}

/// Counts the keys a tenant stores in both stores (each where its prefix
/// routes it) and sets its key quota's counter to that; returns the count.
pub async fn recount_keys(
    aws: &SdkConfig,
    target: &Target,
    tenant: &TenantId,
) -> Result<u32, String> {
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let routed_to = |key: &str, store: StoreKind| {
        ConfigKey::parse(key)
            .ok()
            .is_some_and(|key| target.router.route(&key).ok() == Some(store))
    };
    let mut count = 0u32;
    let mut items = dynamodb
        .query()
        .table_name(&target.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :config)")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(partition_key(tenant)),
        )
        .expression_attribute_values(
            ":config",
            aws_sdk_dynamodb::types::AttributeValue::S(CONFIG_SORT_PREFIX.to_owned()),
        )
        .projection_expression("sk")
        .into_paginator()
        .items()
        .send();
    while let Some(item) = items.next().await {
        let item = item
            .map_err(|e| format!("Query: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let key = item
            .get("sk")
            .and_then(|sk| sk.as_s().ok())
            .and_then(|sk| sk.rsplit('#').next())
            .unwrap_or_default();
        count += u32::from(routed_to(key, StoreKind::DynamoDb));
    }
    let ssm = aws_sdk_ssm::Client::new(aws);
    let mut pages = ssm
        .get_parameters_by_path()
        .path(format!("{}/{tenant}", target.parameter_root))
        .recursive(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            format!(
                "GetParametersByPath: {}",
                aws_sdk_ssm::error::DisplayErrorContext(e)
            )
        })?;
        for parameter in page.parameters() {
            let key = parameter
                .name()
                .and_then(|n| n.rsplit('/').next())
                .unwrap_or_default();
            count += u32::from(routed_to(key, StoreKind::ParameterStore));
        }
    }
    DynamoDbWriteQuotas::set_stored_keys(&dynamodb, &target.table, tenant, count)
        .await
        .map_err(|e| e.to_string())?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_grant_names_valid_services_and_secure_ones_among_them() {
        let orders = grant(&names(&["orders", "billing"]), &names(&["orders"]))
            .unwrap()
            .unwrap();
        assert!(orders.services.contains("billing") && orders.secure_services.contains("orders"));
        assert!(grant(&names(&["orders"]), &names(&["billing"])).is_err());
        assert!(grant(&names(&["../x"]), &[]).is_err());
        assert_eq!(grant(&[], &[]).unwrap(), None);
        assert!(grant(&names(&["*"]), &names(&["*"])).unwrap().is_some());
    }
}
