//! Cloud Map: finding healthy agents, and agents registering themselves.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::error::DisplayErrorContext;
use aws_sdk_servicediscovery::types::HealthStatusFilter;
use thiserror::Error;

pub const IPV4_ATTRIBUTE: &str = "AWS_INSTANCE_IPV4";
pub const IPV6_ATTRIBUTE: &str = "AWS_INSTANCE_IPV6";
pub const PORT_ATTRIBUTE: &str = "AWS_INSTANCE_PORT";
/// DiscoverInstances answers at most this many instances per call.
pub const MAX_DISCOVERED: i32 = 1000;

#[derive(Debug, Error)]
#[error("Cloud Map {operation} failed: {detail}")]
pub struct DiscoveryError {
    pub operation: &'static str,
    pub detail: String,
}

/// One agent that can receive Refresh calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Instance {
    pub id: String,
    pub address: SocketAddr,
}

/// Where the refresh function finds agents.
#[async_trait]
pub trait InstanceSource: Send + Sync {
    async fn healthy_instances(&self) -> Result<Vec<Instance>, DiscoveryError>;
}

/// Healthy instances of one Cloud Map service.
pub struct CloudMapInstances {
    client: Client,
    namespace: String,
    service: String,
}

impl CloudMapInstances {
    pub fn new(client: Client, namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            service: service.into(),
        }
    }
}

/// The address an instance registered, from its standard attributes.
pub fn instance_address(
    attributes: &std::collections::HashMap<String, String>,
) -> Option<SocketAddr> {
    let ip: IpAddr = attributes
        .get(IPV4_ATTRIBUTE)
        .or_else(|| attributes.get(IPV6_ATTRIBUTE))?
        .parse()
        .ok()?;
    let port: u16 = attributes.get(PORT_ATTRIBUTE)?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

#[async_trait]
impl InstanceSource for CloudMapInstances {
    async fn healthy_instances(&self) -> Result<Vec<Instance>, DiscoveryError> {
        let output = self
            .client
            .discover_instances()
            .namespace_name(&self.namespace)
            .service_name(&self.service)
            .health_status(HealthStatusFilter::Healthy)
            .max_results(MAX_DISCOVERED)
            .send()
            .await
            .map_err(|e| DiscoveryError {
                operation: "DiscoverInstances",
                detail: DisplayErrorContext(e).to_string(),
            })?;
        let mut instances = Vec::new();
        for summary in output.instances() {
            let id = summary.instance_id().unwrap_or_default().to_owned();
            match summary.attributes().and_then(instance_address) {
                Some(address) => instances.push(Instance { id, address }),
                None => {
                    tracing::warn!(instance = %id, "skipping instance without a usable IP/port attribute")
                }
            }
        }
        Ok(instances)
    }
}

/// What an agent leaves when it stops: its entry in the registry that
/// config-refresh discovers agents in.
#[async_trait]
pub trait AgentRegistration: Send + Sync {
    fn instance_id(&self) -> &str;
    /// Says this instance is alive (again); best effort.
    async fn report_healthy(&self);
    async fn deregister(&self) -> Result<(), DiscoveryError>;
}

/// Where config-refresh takes an agent that keeps failing out of rotation.
#[async_trait]
pub trait InstanceHealth: Send + Sync {
    async fn mark_unhealthy(&self, instance_id: &str) -> Result<(), DiscoveryError>;
}

/// Custom health status of the agents' Cloud Map service.
pub struct CloudMapHealth {
    client: Client,
    service_id: String,
}

impl CloudMapHealth {
    pub fn new(client: Client, service_id: impl Into<String>) -> Self {
        Self {
            client,
            service_id: service_id.into(),
        }
    }
}

#[async_trait]
impl InstanceHealth for CloudMapHealth {
    async fn mark_unhealthy(&self, instance_id: &str) -> Result<(), DiscoveryError> {
        self.client
            .update_instance_custom_health_status()
            .service_id(&self.service_id)
            .instance_id(instance_id)
            .status(aws_sdk_servicediscovery::types::CustomHealthStatus::Unhealthy)
            .send()
            .await
            .map_err(|e| DiscoveryError {
                operation: "UpdateInstanceCustomHealthStatus",
                detail: DisplayErrorContext(e).to_string(),
            })?;
        Ok(())
    }
}

/// An agent's own registration in a Cloud Map service.
pub struct Registration {
    client: Client,
    service_id: String,
    instance_id: String,
}

impl Registration {
    /// RegisterInstance with the standard IP and port attributes (an upsert,
    /// so a restarted agent replaces its old entry).
    pub async fn register(
        client: Client,
        service_id: &str,
        instance_id: &str,
        address: SocketAddr,
    ) -> Result<Self, DiscoveryError> {
        let ip_attribute = if address.is_ipv4() {
            IPV4_ATTRIBUTE
        } else {
            IPV6_ATTRIBUTE
        };
        client
            .register_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .attributes(ip_attribute, address.ip().to_string())
            .attributes(PORT_ATTRIBUTE, address.port().to_string())
            .send()
            .await
            .map_err(|e| DiscoveryError {
                operation: "RegisterInstance",
                detail: DisplayErrorContext(e).to_string(),
            })?;
        let registration = Self {
            client,
            service_id: service_id.to_owned(),
            instance_id: instance_id.to_owned(),
        };
        tracing::info!(instance = instance_id, %address, "registered in Cloud Map");
        registration.report_healthy().await;
        Ok(registration)
    }
}

#[async_trait]
impl AgentRegistration for Registration {
    fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// For a service with a custom health check, marks this instance HEALTHY.
    /// Best effort: a service without one answers CustomHealthNotFound, and
    /// its instances count as healthy anyway.
    async fn report_healthy(&self) {
        let result = self
            .client
            .update_instance_custom_health_status()
            .service_id(&self.service_id)
            .instance_id(&self.instance_id)
            .status(aws_sdk_servicediscovery::types::CustomHealthStatus::Healthy)
            .send()
            .await;
        match result {
            Ok(_) => tracing::info!(instance = %self.instance_id, "reported healthy to Cloud Map"),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_custom_health_not_found()) => {}
            Err(err) => {
                tracing::warn!(error = %DisplayErrorContext(err), "could not report healthy to Cloud Map")
            }
        }
    }

    async fn deregister(&self) -> Result<(), DiscoveryError> {
        self.client
            .deregister_instance()
            .service_id(&self.service_id)
            .instance_id(&self.instance_id)
            .send()
            .await
            .map_err(|e| DiscoveryError {
                operation: "DeregisterInstance",
                detail: DisplayErrorContext(e).to_string(),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn addresses_come_from_the_standard_attributes() {
        let attrs = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            instance_address(&attrs(&[
                (IPV4_ATTRIBUTE, "10.0.1.7"),
                (PORT_ATTRIBUTE, "50051")
            ])),
            Some("10.0.1.7:50051".parse().unwrap())
        );
        assert_eq!(
            instance_address(&attrs(&[(IPV6_ATTRIBUTE, "::1"), (PORT_ATTRIBUTE, "7")])),
            Some("[::1]:7".parse().unwrap())
        );
        assert_eq!(
            instance_address(&attrs(&[(IPV4_ATTRIBUTE, "10.0.1.7")])),
            None
        );
        assert_eq!(
            instance_address(&attrs(&[(IPV4_ATTRIBUTE, "host"), (PORT_ATTRIBUTE, "1")])),
            None
        );
    }
}
