//! Where agents may be: config-refresh pushes only to discovered addresses
//! inside the configured networks. Agents register themselves, so a host
//! with an agent's role could register any address; an address outside the
//! agents' subnets is ignored (and counted, and alarmed on) instead of being
//! sent a signed Refresh.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;

use super::discovery::{DiscoveryError, Instance, InstanceSource};
use crate::metrics::{Counter, metrics};

/// One network, `address/prefix` (IPv4 or IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not address/prefix"))?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("'{address}' is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("'{prefix}' is not a prefix length of 0..={max}"))?;
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The networks agents may be in (`AGENT_NETWORKS`, comma-separated CIDRs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentNetworks(Vec<Cidr>);

/// Private address space: RFC 1918, RFC 4193 (unique local IPv6). The
/// default when `AGENT_NETWORKS` is not set: never a public address.
pub const PRIVATE_NETWORKS: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

impl AgentNetworks {
    pub fn parse(list: &str) -> Result<Self, String> {
        let networks = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, String>>()?;
        if networks.is_empty() {
            return Err("name at least one network".to_owned());
        }
        Ok(Self(networks))
    }

    pub fn private() -> Self {
        Self::parse(PRIVATE_NETWORKS).unwrap_or(Self(Vec::new()))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(ip))
    }
}

/// An instance source that keeps only instances inside the agents'
/// networks, counting what it saw (`DiscoveredInstances`) and ignored
/// (`IgnoredInstances`) for the alarms.
pub struct InAgentNetworks {
    source: Arc<dyn InstanceSource>,
    networks: AgentNetworks,
}

impl InAgentNetworks {
    pub fn new(source: Arc<dyn InstanceSource>, networks: AgentNetworks) -> Self {
        Self { source, networks }
    }
}

/// At most this many ignored instances are named in one log line.
const NAMED_IN_LOG: usize = 5;

#[async_trait]
impl InstanceSource for InAgentNetworks {
    async fn healthy_instances(&self) -> Result<Vec<Instance>, DiscoveryError> {
        let discovered = self.source.healthy_instances().await?;
        metrics().add(Counter::DiscoveredInstances, discovered.len() as u64);
        let (inside, outside): (Vec<Instance>, Vec<Instance>) = discovered
            .into_iter()
            .partition(|instance| self.networks.allows(instance.address.ip()));
        if !outside.is_empty() {
            metrics().add(Counter::IgnoredInstances, outside.len() as u64);
            let named: Vec<String> = outside
                .iter()
                .take(NAMED_IN_LOG)
                .map(|i| format!("{} at {}", i.id, i.address))
                .collect();
            tracing::warn!(
                ignored = outside.len(),
                first = ?named,
                "discovered agents outside AGENT_NETWORKS are not sent a Refresh"
            );
        }
        Ok(inside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_exactly_their_addresses() {
        let networks = AgentNetworks::parse("10.1.0.0/16, fd00::/8,127.0.0.1/32").unwrap();
        for inside in [
            "10.1.0.1",
            "10.1.255.255",
            "fd12::1",
            "127.0.0.1",
            "::ffff:10.1.2.3",
        ] {
            assert!(networks.allows(ip(inside)), "{inside}");
        }
        for outside in [
            "10.2.0.1",
            "11.1.0.1",
            "fe80::1",
            "127.0.0.2",
            "8.8.8.8",
            "::1",
        ] {
            assert!(!networks.allows(ip(outside)), "{outside}");
        }
        assert!(
            AgentNetworks::parse("0.0.0.0/0")
                .unwrap()
                .allows(ip("8.8.8.8"))
        );
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "ten/8",
            "10.0.0.0/x",
        ] {
            assert!(AgentNetworks::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_is_private_address_space_only() {
        let private = AgentNetworks::private();
        for inside in ["10.0.0.1", "172.31.255.1", "192.168.1.1", "fd00::1"] {
            assert!(private.allows(ip(inside)), "{inside}");
        }
        for outside in ["172.32.0.1", "52.1.2.3", "2600::1", "127.0.0.1"] {
            assert!(!private.allows(ip(outside)), "{outside}");
        }
    }

    struct Registered(Vec<Instance>);

    #[async_trait]
    impl InstanceSource for Registered {
        async fn healthy_instances(&self) -> Result<Vec<Instance>, DiscoveryError> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn registrations_outside_the_agents_networks_are_never_pushed_to() {
        // GIVEN two real agents and two addresses a compromised host registered
        let instance = |id: &str, address: &str| Instance {
            id: id.into(),
            address: address.parse::<SocketAddr>().unwrap(),
        };
        let source = Registered(vec![
            instance("agent-1", "10.0.1.5:50052"),
            instance("evil-1", "203.0.113.9:443"),
            instance("agent-2", "10.0.2.7:50052"),
            instance("evil-2", "[2001:db8::1]:50052"),
        ]);
        let filtered = InAgentNetworks::new(
            Arc::new(source),
            AgentNetworks::parse("10.0.0.0/16").unwrap(),
        );
        // WHEN config-refresh discovers agents THEN only the real ones remain
        let ids: Vec<String> = filtered
            .healthy_instances()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, vec!["agent-1", "agent-2"]);
    }
}
