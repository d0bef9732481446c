//! The local stack's MQTT broker (rumqttd) for the change feed:
//! `tenant-config-broker {listen address} {max connections}`. Started and
//! stopped by the local stack (`tenant_config_local_stack::broker`).

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().and_then(|a| a.parse().ok());
    let max_connections = args.next().and_then(|a| a.parse().ok());
    let (Some(listen), Some(max_connections)) = (listen, max_connections) else {
        eprintln!("usage: tenant-config-broker LISTEN_ADDRESS MAX_CONNECTIONS");
        std::process::exit(2);
    };
    if let Err(error) = tenant_config_local_stack::broker::serve(listen, max_connections) {
        eprintln!("{error}");
        std::process::exit(1);
    }
}
