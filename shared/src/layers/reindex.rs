//! Rebuilding the override index from the stores: every tenant value that
//! exists now is marked as held. For a stack that held tenant values before
//! the index existed, or whose config-refresh ran without
//! `CONFIG_TABLE_NAME`: until then a blast radius does not see those
//! tenants' own values.
//!
//! It reads keys and metadata only, never a value: a keys-only Scan of the
//! table's tenant entries and DescribeParameters under the root. Each mark
//! carries the entry's own last write time (`updated_at`, the parameter's
//! last modification; the rebuild's start where an item has none), so the
//! mark of a change made after that write is never undone. A value deleted
//! while the rebuild runs may stay marked as held (the stores' change times
//! are whole seconds): a blast radius then reads it, finds nothing and
//! counts nothing, the safe side (missing a value would let a change land
//! unweighed).

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ssm::types::ParameterStringFilter;
use futures::{StreamExt, TryStreamExt, stream};

use super::overrides::OverrideIndex;
use crate::domain::ItemKey;
use crate::error::StoreError;
use crate::kinds::StoreKind;
use crate::refresh::change::Subject;
use crate::refresh::event::parse_layer_parameter_name;
use crate::store::dynamodb::{
    self, CONFIG_SORT_PREFIX, PARTITION_KEY, SORT_KEY, UPDATED_AT_ATTRIBUTE, parse_key,
};
use crate::store::ssm;

/// Marks written at once.
const MARKS_IN_FLIGHT: usize = 16;

/// What a rebuild found and marked (where the change feed had not marked
/// a later change already), and what it passed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reindexed {
    /// Tenant entries of the config table.
    pub items: usize,
    /// Tenant parameters.
    pub parameters: usize,
    /// Parameters under the root that name no tenant entry (the shared
    /// layers' are expected; anything else is logged).
    pub skipped: usize,
}

/// Marks every tenant entry of the config table and every tenant parameter
/// under `root` as held by its tenant, as of its last write (`started_ms`
/// where a store keeps none).
pub async fn reindex_overrides(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    ssm: &aws_sdk_ssm::Client,
    root: &str,
    index: &dyn OverrideIndex,
    started_ms: i64,
) -> Result<Reindexed, StoreError> {
    let mut reindexed = Reindexed::default();
    let mut start = None;
    loop {
        // Keys only: the values are not the index's business.
        let page = dynamodb
            .scan()
            .table_name(table)
            .filter_expression("begins_with(#pk, :tenant) AND begins_with(#sk, :config)")
            .projection_expression("#pk, #sk, #at")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#at", UPDATED_AT_ATTRIBUTE)
            .expression_attribute_values(":tenant", AttributeValue::S("TENANT#".to_owned()))
            .expression_attribute_values(
                ":config",
                AttributeValue::S(CONFIG_SORT_PREFIX.to_owned()),
            )
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(dynamodb::sdk_error)?;
        let items: Vec<(ItemKey, i64)> = page
            .items()
            .iter()
            .filter_map(|item| match (item.get(PARTITION_KEY), item.get(SORT_KEY)) {
                (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => {
                    match parse_key(pk, sk) {
                        Ok(key) => {
                            let written = match item.get(UPDATED_AT_ATTRIBUTE) {
                                Some(AttributeValue::N(at)) => at.parse().ok(),
                                _ => None,
                            };
                            Some((key, written.unwrap_or(started_ms)))
                        }
                        Err(err) => {
                            tracing::warn!(%pk, %sk, error = %err, "not a tenant entry; not indexed");
                            None
                        }
                    }
                }
                _ => None,
            })
            .collect();
        reindexed.items += mark_held(index, &items).await?;
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let mut token = None;
    loop {
        let page = ssm
            .describe_parameters()
            .parameter_filters(
                ParameterStringFilter::builder()
                    .key("Path")
                    .option("Recursive")
                    .values(root)
                    .build()
                    .map_err(|e| StoreError::Unavailable {
                        store: StoreKind::ParameterStore,
                        detail: e.to_string(),
                    })?,
            )
            .max_results(50)
            .set_next_token(token)
            .send()
            .await
            .map_err(ssm::sdk_error)?;
        let mut items = Vec::new();
        for parameter in page.parameters() {
            let Some(name) = parameter.name() else {
                continue;
            };
            match parse_layer_parameter_name(name, root) {
                Ok(Subject::Entry(item)) => {
                    let written = parameter
                        .last_modified_date()
                        .and_then(|at| at.to_millis().ok())
                        .unwrap_or(started_ms);
                    items.push((item, written));
                }
                // The shared layers' own parameters.
                Ok(_) => reindexed.skipped += 1,
                Err(err) => {
                    tracing::warn!(%name, error = %err, "not a tenant parameter; not indexed");
                    reindexed.skipped += 1;
                }
            }
        }
        reindexed.parameters += mark_held(index, &items).await?;
        token = page.next_token;
        if token.is_none() {
            return Ok(reindexed);
        }
    }
}

/// Marks `items` as held as of their times, a few at once; how many.
async fn mark_held(
    index: &dyn OverrideIndex,
    items: &[(ItemKey, i64)],
) -> Result<usize, StoreError> {
    stream::iter(items)
        .map(|(item, at_ms)| index.mark(item, true, *at_ms))
        .buffer_unordered(MARKS_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(items.len())
}
