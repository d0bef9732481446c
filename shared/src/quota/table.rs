//! Quota counters in the configuration table, in the tenant's partition
//! (the write role's leading key is the tenant's, and no reader, listing or
//! stream filter looks under `QUOTA#`): `QUOTA#writes#{minute}` counts a
//! minute's writes and expires after it; `QUOTA#keys` counts stored keys.
//! Every step is one `UpdateItem` with `ADD`, conditional on the limit, so
//! DynamoDB decides between containers.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::writes::{QuotaError, QuotaLimits, WriteQuotas, per_second};
use crate::credentials::TenantClient;
use crate::error::{StoreError, WriteQuota};
use crate::store::dynamodb::{
    PARTITION_KEY, SORT_KEY, conditional_write, partition_key, sdk_error,
};
use crate::validate::TenantId;

/// Sort keys of quota counters start with this.
pub const QUOTA_SORT_PREFIX: &str = "QUOTA#";
const COUNT: &str = "count";
const EXPIRES_AT: &str = "expires_at";
/// A minute's counter outlives its minute by this much (TTL deletes lazily).
const WRITE_COUNTER_GRACE_SECS: i64 = 120;

pub struct DynamoDbWriteQuotas {
    /// The process's client, or one per tenant with vended credentials.
    clients: TenantClient<Client>,
    table: String,
    limits: QuotaLimits,
}

impl DynamoDbWriteQuotas {
    pub fn new(
        client: impl Into<TenantClient<Client>>,
        table: impl Into<String>,
        limits: QuotaLimits,
    ) -> Self {
        Self {
            clients: client.into(),
            table: table.into(),
            limits,
        }
    }

    /// One conditional `ADD` of `delta` to a counter; `Ok(false)` when the
    /// condition held it back.
    async fn add(
        &self,
        tenant: &TenantId,
        sort_key: String,
        delta: i64,
        condition: &str,
        bound: u32,
        expires_at: Option<i64>,
    ) -> Result<bool, QuotaError> {
        let key = HashMap::from([
            (
                PARTITION_KEY.to_owned(),
                AttributeValue::S(partition_key(tenant)),
            ),
            (SORT_KEY.to_owned(), AttributeValue::S(sort_key)),
        ]);
        let mut names = HashMap::from([("#n".to_owned(), COUNT.to_owned())]);
        let mut values = HashMap::from([
            (":delta".to_owned(), AttributeValue::N(delta.to_string())),
            (":bound".to_owned(), AttributeValue::N(bound.to_string())),
        ]);
        let mut update = "ADD #n :delta".to_owned();
        if let Some(at) = expires_at {
            names.insert("#exp".to_owned(), EXPIRES_AT.to_owned());
            values.insert(":exp".to_owned(), AttributeValue::N(at.to_string()));
            update.push_str(" SET #exp = :exp");
        }
        let result = self
            .clients
            .for_tenant(tenant)
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        Ok(conditional_write(result)?)
    }
}

impl DynamoDbWriteQuotas {
    /// Sets a tenant's stored-keys counter (an operator's recount of what
    /// the stores hold).
    pub async fn set_stored_keys(
        client: &Client,
        table: &str,
        tenant: &TenantId,
        count: u32,
    ) -> Result<(), StoreError> {
        client
            .put_item()
            .table_name(table)
            .item(PARTITION_KEY, AttributeValue::S(partition_key(tenant)))
            .item(
                SORT_KEY,
                AttributeValue::S(format!("{QUOTA_SORT_PREFIX}keys")),
            )
            .item(COUNT, AttributeValue::N(count.to_string()))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}

const BELOW_BOUND: &str = "attribute_not_exists(#n) OR #n < :bound";

#[async_trait]
impl WriteQuotas for DynamoDbWriteQuotas {
    fn limits(&self) -> QuotaLimits {
        self.limits
    }

    async fn count_write(&self, tenant: &TenantId, second: i64) -> Result<(), QuotaError> {
        let limit = self.limits.writes_per_minute;
        // The second first: a burst is refused without touching the minute.
        let in_a_second = per_second(limit);
        let sort_key = format!("{QUOTA_SORT_PREFIX}writes#s{second}");
        if !self
            .add(
                tenant,
                sort_key,
                1,
                BELOW_BOUND,
                in_a_second,
                Some(second + WRITE_COUNTER_GRACE_SECS),
            )
            .await?
        {
            return Err(QuotaError::Exceeded(WriteQuota::WritesPerSecond(
                in_a_second,
            )));
        }
        let minute = second / 60;
        let expires_at = (minute + 1) * 60 + WRITE_COUNTER_GRACE_SECS;
        let sort_key = format!("{QUOTA_SORT_PREFIX}writes#{minute}");
        match self
            .add(tenant, sort_key, 1, BELOW_BOUND, limit, Some(expires_at))
            .await?
        {
            true => Ok(()),
            false => Err(QuotaError::Exceeded(WriteQuota::WritesPerMinute(limit))),
        }
    }

    async fn reserve_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
        let limit = self.limits.max_keys;
        let sort_key = format!("{QUOTA_SORT_PREFIX}keys");
        match self
            .add(tenant, sort_key, 1, BELOW_BOUND, limit, None)
            .await?
        {
            true => Ok(()),
            false => Err(QuotaError::Exceeded(WriteQuota::StoredKeys(limit))),
        }
    }

    async fn release_key(&self, tenant: &TenantId) -> Result<(), QuotaError> {
        // Never below zero: keys stored before quotas existed were never
        // counted, so their deletes find nothing to give back.
        let sort_key = format!("{QUOTA_SORT_PREFIX}keys");
        self.add(tenant, sort_key, -1, "#n > :bound", 0, None)
            .await?;
        Ok(())
    }
}
