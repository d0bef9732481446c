//! Addresses that fail the way real networks do.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One of this host's own addresses that is not loopback (the one its
/// default route leaves from): a connection to it from this host arrives
/// from a routable address, as a caller on another host's would. A UDP
/// `connect` only consults the routing table; nothing is sent.
pub fn routable_local_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
    socket
        .connect("192.0.2.1:9")
        .expect("this host has a route off loopback");
    let ip = socket
        .local_addr()
        .expect("the route's source address")
        .ip();
    assert!(!ip.is_loopback(), "{ip} is loopback");
    ip
}

/// An address nothing listens on: connections are refused at once.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    listener.local_addr().expect("bound address")
}

/// Accepts TCP connections and never answers, so only a deadline ends a call
/// (a hung host, a paused process). Stops listening when dropped.
pub struct SilentListener {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentListener {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { address, task }
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
