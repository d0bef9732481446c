//! Fairness between tenants: each tenant's share of store calls in a process
//! ([`TenantLoadLimiter`]) and its write quotas across processes
//! ([`WriteQuotas`], counted in the configuration table by
//! [`DynamoDbWriteQuotas`]).

mod loads;
mod refusals;
mod table;
mod writes;

pub use loads::TenantLoadLimiter;
pub use refusals::RememberedRefusals;
pub use table::{DynamoDbWriteQuotas, QUOTA_SORT_PREFIX};
pub use writes::{
    MemoryWriteQuotas, QuotaError, QuotaLimits, WriteQuotas, current_second, per_second, refusal,
};
