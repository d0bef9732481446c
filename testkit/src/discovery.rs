//! A fixed list of agents in place of Cloud Map.

use std::net::SocketAddr;

use async_trait::async_trait;
use tenant_config_shared::refresh::discovery::{DiscoveryError, Instance, InstanceSource};

/// Always answers the same instances.
pub struct StaticInstances(pub Vec<Instance>);

#[async_trait]
impl InstanceSource for StaticInstances {
    async fn healthy_instances(&self) -> Result<Vec<Instance>, DiscoveryError> {
        Ok(self.0.clone())
    }
}

/// Instances `agent-0`, `agent-1`, … at `addresses`, in order.
pub fn instances(addresses: &[SocketAddr]) -> Vec<Instance> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, address)| Instance {
            id: format!("agent-{i}"),
            address: *address,
        })
        .collect()
}
