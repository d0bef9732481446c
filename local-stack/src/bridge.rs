//! What `sam local`'s containers reach the local stack through.
//!
//! SAM runs each function in a container on docker's default bridge, where
//! 127.0.0.1 is the container itself: moto, the API Gateway stand-in and the
//! agents, all on the host's loopback, are out of its reach. A stack started
//! with [`crate::stack::StackOptions::containers`] also listens on the
//! bridge's gateway address (the host, as a container sees it): a
//! [`Forwarder`] per loopback endpoint the functions call, which serves only
//! peers on the bridge's subnet, and the agents take Refresh on that address
//! and register it in Cloud Map, where the host's functions reach it as well.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use tenant_config_shared::refresh::networks::Cidr;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Docker's default bridge network, as `sam local` uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerBridge {
    /// The host's address on the bridge.
    pub gateway: Ipv4Addr,
    /// The containers' addresses.
    pub subnet: Cidr,
}

impl DockerBridge {
    /// The default bridge of the docker daemon that answers, or `None` when
    /// none does (no docker: the stack serves the host only).
    pub fn detect() -> Option<Self> {
        let out = Command::new("docker")
            .args([
                "network",
                "inspect",
                "bridge",
                "--format",
                "{{range .IPAM.Config}}{{.Gateway}} {{end}}|{{index .Options \"com.docker.network.bridge.name\"}}|{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Self::from_inspect(&String::from_utf8_lossy(&out.stdout), interface_ipv4)
    }

    /// The gateway `docker network inspect` printed, else (older daemons
    /// leave it out of the default bridge's IPAM) the address of the bridge's
    /// interface, which is the gateway.
    fn from_inspect(printed: &str, address_of: impl Fn(&str) -> Option<Ipv4Addr>) -> Option<Self> {
        let mut fields = printed.trim().split('|');
        let (gateways, interface, subnets) = (fields.next()?, fields.next()?, fields.next()?);
        let gateway = gateways
            .split_whitespace()
            .find_map(|word| word.parse::<Ipv4Addr>().ok())
            .or_else(|| address_of(interface.trim()))?;
        let subnet = subnets
            .split_whitespace()
            .filter_map(|word| word.parse::<Cidr>().ok())
            .find(|subnet| subnet.contains(IpAddr::V4(gateway)))?;
        Some(Self { gateway, subnet })
    }

    /// The `AGENT_NETWORKS` entry that lets config-refresh push to agents
    /// registered on the gateway.
    pub fn agent_network(&self) -> String {
        format!("{}/32", self.gateway)
    }
}

/// The IPv4 address of the network interface `name`, if it has one.
fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    if name.is_empty() {
        return None;
    }
    let mut addresses: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut addresses) != 0 {
            return None;
        }
        let mut found = None;
        let mut entry = addresses;
        while !entry.is_null() {
            let ifaddr = &*entry;
            entry = ifaddr.ifa_next;
            if ifaddr.ifa_addr.is_null()
                || i32::from((*ifaddr.ifa_addr).sa_family) != libc::AF_INET
                || std::ffi::CStr::from_ptr(ifaddr.ifa_name).to_str() != Ok(name)
            {
                continue;
            }
            let inet = &*(ifaddr.ifa_addr as *const libc::sockaddr_in);
            found = Some(Ipv4Addr::from(u32::from_be(inet.sin_addr.s_addr)));
            break;
        }
        libc::freeifaddrs(addresses);
        found
    }
}

/// Forwards every TCP connection a peer of the bridge's subnet makes to the
/// gateway address to a loopback endpoint, bytes unchanged, until dropped.
pub struct Forwarder {
    address: SocketAddr,
    upstream: SocketAddr,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on a free port of `listen` for `upstream`, serving peers in
    /// `peers` only: the gateway's address is answered on every interface of
    /// the host, and only containers are meant to use it.
    pub async fn start(
        listen: Ipv4Addr,
        peers: Cidr,
        upstream: SocketAddr,
    ) -> Result<Self, String> {
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(listen), 0))
            .await
            .map_err(|e| format!("listening on {listen} for {upstream}: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            // Connections live in the set, so they end with the forwarder.
            let mut connections = JoinSet::new();
            loop {
                let (mut inbound, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    // Out of descriptors, say: the next accept may succeed.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                if !peers.contains(peer.ip()) {
                    continue;
                }
                connections.spawn(async move {
                    // A refused upstream closes the inbound connection: the
                    // caller sees what it would see on loopback.
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self {
            address,
            upstream,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` of the upstream, as the host's processes call it.
    pub fn upstream_url(&self) -> String {
        format!("http://{}", self.upstream)
    }

    /// `http://GATEWAY:PORT`, the same endpoint as a container calls it.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The functions' settings as a container needs them: every URL of a
/// forwarded endpoint rewritten to its forwarder. Names and other values
/// (the token issuer among them, which is not an address) stay as they are.
/// A loopback URL left over (an endpoint with no forwarder) is an error: a
/// container would call itself.
pub fn container_env(
    env: &[(String, String)],
    forwarders: &[Forwarder],
) -> Result<Vec<(String, String)>, String> {
    env.iter()
        .map(|(name, value)| {
            let unserved = loopback_authorities(value)
                .find(|address| !forwarders.iter().any(|f| f.upstream == *address));
            if let Some(address) = unserved {
                return Err(format!(
                    "{name}={value}: no forwarder serves the loopback endpoint {address}"
                ));
            }
            let value = forwarders.iter().fold(value.clone(), |value, forwarder| {
                replace_url(&value, &forwarder.upstream_url(), &forwarder.url())
            });
            Ok((name.clone(), value))
        })
        .collect()
}

/// The loopback `host:port` of every `http://` URL in `text`.
fn loopback_authorities(text: &str) -> impl Iterator<Item = SocketAddr> + '_ {
    text.split("http://").skip(1).filter_map(|rest| {
        let authority = rest
            .split(|c: char| c == '/' || c == ',' || c.is_whitespace())
            .next()?;
        authority
            .parse::<SocketAddr>()
            .ok()
            .filter(|address| address.ip().is_loopback())
    })
}

/// `text` with every occurrence of the URL `from` (where it ends: not
/// followed by another digit of a longer port) replaced by `to`.
fn replace_url(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let after = &rest[at + from.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The loopback address of an `http://127.0.0.1:PORT[/...]` endpoint.
pub fn loopback_endpoint(url: &str) -> Result<SocketAddr, String> {
    let authority = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("'{url}' is not an http:// endpoint"))?;
    let address: SocketAddr = authority.parse().map_err(|e| format!("'{url}': {e}"))?;
    if !address.ip().is_loopback() {
        return Err(format!("'{url}' is not on loopback"));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_the_first_ipv4_address_docker_prints_else_its_interfaces() {
        let bridge = |a, b, c, d, subnet: &str| {
            Some(DockerBridge {
                gateway: Ipv4Addr::new(a, b, c, d),
                subnet: subnet.parse().unwrap(),
            })
        };
        let docker0 = |name: &str| (name == "docker0").then_some(Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(
            DockerBridge::from_inspect("10.9.0.1 |docker0|10.9.0.0/16 \n", docker0),
            bridge(10, 9, 0, 1, "10.9.0.0/16")
        );
        assert_eq!(
            DockerBridge::from_inspect("fd00::1 10.0.0.1 |docker0|fd00::/64 10.0.0.0/24 ", docker0),
            bridge(10, 0, 0, 1, "10.0.0.0/24")
        );
        // Docker 20.10 prints no gateway for the default bridge.
        assert_eq!(
            DockerBridge::from_inspect(" |docker0|172.17.0.0/16 \n", docker0),
            bridge(172, 17, 0, 1, "172.17.0.0/16")
        );
        // No interface address, or a subnet without the gateway: no bridge.
        assert_eq!(
            DockerBridge::from_inspect(" ||172.17.0.0/16\n", docker0),
            None
        );
        assert_eq!(
            DockerBridge::from_inspect("10.9.0.1 |docker0|10.8.0.0/16", docker0),
            None
        );
        assert_eq!(DockerBridge::from_inspect("\n", docker0), None);
    }

    #[test]
    fn the_loopback_interface_has_its_address() {
        assert_eq!(interface_ipv4("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(interface_ipv4("no-such-interface"), None);
    }

    fn loopback_peers() -> Cidr {
        "127.0.0.0/8".parse().unwrap()
    }

    #[tokio::test]
    async fn a_container_gets_the_forwarders_urls_and_the_same_issuer() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_address = upstream.local_addr().unwrap();
        let forwarder = Forwarder::start(Ipv4Addr::LOCALHOST, loopback_peers(), upstream_address)
            .await
            .unwrap();
        let moto = format!("http://{upstream_address}");
        let env = vec![
            ("AWS_ENDPOINT_URL".to_owned(), moto.clone()),
            (
                "COGNITO_JWKS_URL".to_owned(),
                format!("{moto}/pool/.well-known/jwks.json"),
            ),
            (
                "COGNITO_ISSUER".to_owned(),
                "https://cognito-idp.us-east-1.amazonaws.com/pool".to_owned(),
            ),
        ];
        let inside = container_env(&env, std::slice::from_ref(&forwarder)).unwrap();
        assert_eq!(inside[0].1, forwarder.url());
        assert_eq!(
            inside[1].1,
            format!("{}/pool/.well-known/jwks.json", forwarder.url())
        );
        assert_eq!(inside[2].1, env[2].1);
        // Another loopback endpoint, which no forwarder serves, is refused.
        let port = upstream_address.port();
        let other_port = if port == u16::MAX { port - 1 } else { port + 1 };
        let other = vec![(
            "AWS_ENDPOINT_URL_SSM".to_owned(),
            format!("http://127.0.0.1:{other_port}"),
        )];
        let refused = container_env(&other, std::slice::from_ref(&forwarder)).unwrap_err();
        assert!(refused.contains("AWS_ENDPOINT_URL_SSM"), "{refused}");
    }

    #[tokio::test]
    async fn bytes_cross_the_forwarder_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let forwarder = Forwarder::start(
            Ipv4Addr::LOCALHOST,
            loopback_peers(),
            upstream.local_addr().unwrap(),
        )
        .await
        .unwrap();
        let echo = tokio::spawn(async move {
            let (mut socket, _) = upstream.accept().await.unwrap();
            let mut asked = [0u8; 4];
            socket.read_exact(&mut asked).await.unwrap();
            socket.write_all(b"pong").await.unwrap();
            asked
        });
        let mut client = TcpStream::connect(forwarder.address).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
        assert_eq!(&echo.await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn a_peer_outside_the_subnet_is_not_served() {
        use tokio::io::AsyncReadExt;
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let forwarder = Forwarder::start(
            Ipv4Addr::LOCALHOST,
            "172.17.0.0/16".parse().unwrap(),
            upstream.local_addr().unwrap(),
        )
        .await
        .unwrap();
        let mut client = TcpStream::connect(forwarder.address).await.unwrap();
        let mut byte = [0u8; 1];
        // Closed at once, and nothing reached the upstream.
        assert_eq!(client.read(&mut byte).await.unwrap(), 0);
        let reached = tokio::time::timeout(Duration::from_millis(200), upstream.accept()).await;
        assert!(reached.is_err(), "the upstream was reached");
    }

    #[test]
    fn a_url_is_replaced_only_where_it_ends() {
        assert_eq!(
            replace_url(
                "http://127.0.0.1:4566 http://127.0.0.1:45667/x http://127.0.0.1:4566/123/q",
                "http://127.0.0.1:4566",
                "http://172.17.0.1:5000"
            ),
            "http://172.17.0.1:5000 http://127.0.0.1:45667/x http://172.17.0.1:5000/123/q"
        );
    }

    #[test]
    fn only_loopback_http_endpoints_are_forwarded() {
        assert_eq!(
            loopback_endpoint("http://127.0.0.1:4566/123/queue").unwrap(),
            "127.0.0.1:4566".parse().unwrap()
        );
        assert!(loopback_endpoint("https://127.0.0.1:4566").is_err());
        assert!(loopback_endpoint("http://10.0.0.1:4566").is_err());
    }
}
