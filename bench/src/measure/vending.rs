//! (10) What token vending costs: store reads through the real DynamoDB
//! adapter against moto, signed with the process's credentials beside the
//! same reads signed with credentials vended per tenant (moto's STS
//! AssumeRole, tagged with the tenant). Cold: a tenant's first read, which
//! assumes the role; warm: later reads with the credentials cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tenant_config_local_stack::stack::{LocalStack, SERVICE, TABLE, TENANT_ROLE_ARN};
use tenant_config_shared::ItemKey;
use tenant_config_shared::credentials::{StsTenantRole, TenantClient, TenantCredentials};
use tenant_config_shared::domain::ReadMode;
use tenant_config_shared::store::{ConfigStore, DynamoDbStore};

use crate::chart::Comparison;
use crate::report::{Report, Row};
use crate::stats::{Summary, human};

async fn timed_read(store: &DynamoDbStore, tenant: &str) -> Result<Duration, String> {
    let item =
        ItemKey::parse(tenant, SERVICE, "tenant_config_limits").map_err(|e| e.to_string())?;
    let started = Instant::now();
    store
        .get(&item, ReadMode::Plain)
        .await
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

impl Report {
    /// (10) Cold and warm store reads with and without vended credentials.
    pub async fn vending(&mut self, stack: &LocalStack) -> Result<(), String> {
        let n = self.sizes.vending_tenants;
        let own = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&stack.aws), TABLE);
        let credentials = Arc::new(TenantCredentials::new(
            stack.aws.clone(),
            Arc::new(StsTenantRole::new(
                aws_sdk_sts::Client::new(&stack.aws),
                TENANT_ROLE_ARN,
                Duration::from_secs(900),
            )),
            (n as u64) * 2,
        ));
        let vended = DynamoDbStore::new(
            TenantClient::vended(credentials, aws_sdk_dynamodb::Client::new),
            TABLE,
        );
        // Warm both connection pools first, so "cold" means a new tenant only.
        timed_read(&own, "bench-warm-up").await?;
        timed_read(&vended, "bench-warm-up").await?;
        let tenants: Vec<String> = (0..n).map(|i| format!("bench-tenant-{i}")).collect();
        let (mut cold_own, mut cold_vended) = (Vec::new(), Vec::new());
        for tenant in &tenants {
            cold_own.push(timed_read(&own, tenant).await?);
            cold_vended.push(timed_read(&vended, tenant).await?);
        }
        let (mut warm_own, mut warm_vended) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            for tenant in &tenants {
                warm_own.push(timed_read(&own, tenant).await?);
                warm_vended.push(timed_read(&vended, tenant).await?);
            }
        }
        let (cold_own, cold_vended) = (Summary::of(cold_own), Summary::of(cold_vended));
        let (warm_own, warm_vended) = (Summary::of(warm_own), Summary::of(warm_vended));
        // Warm vended reads may cost at most 20 % (or 0.5 ms) more.
        let warm_bound = warm_own
            .p50
            .mul_f64(1.2)
            .max(warm_own.p50 + Duration::from_micros(500));
        self.compare(Comparison {
            title: "store read, credentials cached (warm)".into(),
            ours: warm_vended.p50.as_secs_f64() * 1000.0,
            ours_label: format!("vended {}", human(warm_vended.p50)),
            baseline_name: "process role".into(),
            baseline: warm_own.p50.as_secs_f64() * 1000.0,
            baseline_label: human(warm_own.p50),
        });
        let pair = |s: Summary| format!("p50 {} / p99 {}", human(s.p50), human(s.p99));
        self.section(
            "10. Token vending: store reads with credentials vended per tenant",
            vec![
                Row {
                    figure: "a tenant's first read (AssumeRole tagged with the tenant + GetItem)".into(),
                    ours: pair(cold_vended),
                    baseline: format!("process role: {}", pair(cold_own)),
                    target: "".into(),
                    met: None,
                },
                Row {
                    figure: "later reads (credentials cached per tenant)".into(),
                    ours: pair(warm_vended),
                    baseline: format!("process role: {}", pair(warm_own)),
                    target: format!("p50 ≤ {}", human(warm_bound)),
                    met: Some(warm_vended.p50 <= warm_bound),
                },
            ],
            vec![
                format!("{n} tenants, each read first (cold) then three more times (warm), alternating the two stores; the real DynamoDB adapter against moto; vended credentials from moto's STS (AssumeRole answered locally, so the cold figure is a floor: in AWS, STS adds its own latency once per tenant per session)."),
                "Reads that hit the in-memory cache (the common case, figure 1) sign nothing and cost the same either way.".into(),
            ],
        );
        Ok(())
    }
}
