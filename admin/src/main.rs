//! `tenant-config-admin`: put, get and delete a tenant's configuration in
//! either store (validated and routed exactly like the API), mint an ID token
//! for a local user, read through an agent, and tell config-refresh that a key
//! changed. Settings come from the same environment variables the functions
//! read; after `bash tests/demo.sh`, `set -a; . target/local-stack.env; set +a`
//! points everything at the local stack.

use clap::Parser;
use tenant_config_admin::cli::{Cli, run};

#[tokio::main]
async fn main() {
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
